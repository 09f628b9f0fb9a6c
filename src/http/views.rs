//! The `data` of REST answers, as structs the OpenAPI document describes (views shared with
//! Socket.IO live below: [`crate::messaging::views`], [`crate::realtime::views`]).
//!
//! Invariant: each struct writes exactly the keys the seed's clients read, with the same
//! casing (mixed where the seed mixes it), `null` where a value is missing and no key where
//! the seed leaves it out (`skip_serializing_if` marks those); numbers stay numbers. Keys
//! leave sorted whatever the field order ([`super::envelope`]).

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::to_rfc3339;
use crate::cluster::NodeId;
use crate::cluster::directory::NodeInfo;
use crate::ids::Role;
use crate::messaging::views::{
    AttachmentView, ConversationSummaryView, ConversationView, MessageView,
};
use crate::realtime::views::RecordingView;
use crate::sfu::room::ParticipantStats;
use crate::store::{SessionParticipant, SessionRecord, SessionStatus, SessionType};
use crate::turn::IceServer;
use crate::wire::UserRef;

// ---- messaging ----

/// `{conversation}`: a conversation created, found or read.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationData {
    pub conversation: ConversationView,
}

/// `{conversations}`: mine, most recently active first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationsData {
    pub conversations: Vec<ConversationSummaryView>,
}

/// `{conversationId, messageId}`: where my read marker now stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadMarkerData {
    pub conversation_id: i64,
    pub message_id: i64,
}

/// `{messages, pagination}`: a page of history, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryData {
    pub messages: Vec<MessageView>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pagination {
    pub has_more: bool,
    /// `null` on an empty page.
    #[schema(required = true)]
    pub oldest_id: Option<i64>,
    #[schema(required = true)]
    pub newest_id: Option<i64>,
}

/// `{message}`: a message stored (or the one a retried send had stored).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageData {
    pub message: MessageView,
}

/// `{attachment}`: a file stored, to reference from a message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachmentData {
    pub attachment: AttachmentView,
}

// ---- WebRTC sessions ----

/// A consultation in short: `{id, conversation_id, session_type, statut}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    pub id: i64,
    pub conversation_id: i64,
    pub session_type: SessionType,
    pub statut: SessionStatus,
    /// Newcomers wait for the doctor's admission.
    pub waiting_room: bool,
}

impl From<&SessionRecord> for SessionView {
    fn from(s: &SessionRecord) -> Self {
        Self {
            id: s.id.0,
            conversation_id: s.conversation_id.0,
            session_type: s.session_type,
            statut: s.statut,
            waiting_room: s.waiting_room,
        }
    }
}

/// `{session}`: a consultation ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionData {
    pub session: SessionView,
}

/// A consultation in full (`GET …/sessions/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionDetailView {
    #[serde(flatten)]
    pub session: SessionView,
    pub created_by: UserRef,
    pub created_at: String,
    #[schema(required = true)]
    pub started_at: Option<String>,
    #[schema(required = true)]
    pub ended_at: Option<String>,
    #[schema(required = true)]
    pub end_reason: Option<String>,
    pub code_expires_at: String,
    /// The node serving its media (several nodes); `null` on a single node.
    #[schema(required = true)]
    pub node_id: Option<String>,
    /// The last node lost with this session on it, and when the session moved.
    #[schema(required = true)]
    pub moved_from: Option<String>,
    #[schema(required = true)]
    pub moved_at: Option<String>,
    pub participants: Vec<SessionParticipantView>,
}

impl SessionDetailView {
    pub fn new(s: &SessionRecord, participants: &[SessionParticipant]) -> Self {
        Self {
            session: s.into(),
            created_by: UserRef::from(s.created_by),
            created_at: to_rfc3339(s.created_at),
            started_at: s.started_at.map(to_rfc3339),
            ended_at: s.ended_at.map(to_rfc3339),
            end_reason: s.end_reason.clone(),
            code_expires_at: to_rfc3339(s.code_expires_at),
            node_id: s.node_id.clone(),
            moved_from: s.moved_from.clone(),
            moved_at: s.moved_at.map(to_rfc3339),
            participants: participants
                .iter()
                .map(SessionParticipantView::from)
                .collect(),
        }
    }
}

/// Someone who joined the consultation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionParticipantView {
    #[serde(rename = "userId")]
    pub user_id: i64,
    #[serde(rename = "userType")]
    pub user_type: Role,
    pub joined_at: String,
    #[schema(required = true)]
    pub left_at: Option<String>,
}

impl From<&SessionParticipant> for SessionParticipantView {
    fn from(p: &SessionParticipant) -> Self {
        Self {
            user_id: p.who.id.0,
            user_type: p.who.role,
            joined_at: to_rfc3339(p.joined_at),
            left_at: p.left_at.map(to_rfc3339),
        }
    }
}

/// `{session}` in full.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionDetailData {
    pub session: SessionDetailView,
}

/// The link a patient opens, with its join code.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceLinkView {
    pub session_id: i64,
    /// `{base}/conference/{id}`.
    pub conference_url: String,
    pub join_code: String,
    /// `{conferenceUrl}?code={joinCode}`.
    pub full_link: String,
}

impl ConferenceLinkView {
    pub fn new(base: &url::Url, id: i64, code: &str) -> Self {
        let root = base.as_str().trim_end_matches('/');
        let url = format!("{root}/conference/{id}");
        Self {
            session_id: id,
            full_link: format!("{url}?code={code}"),
            conference_url: url,
            join_code: code.to_string(),
        }
    }
}

/// The node a new session was placed on (several nodes).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacedNodeView {
    #[schema(value_type = String)]
    pub id: NodeId,
    pub public_base_url: String,
}

/// A consultation created: `{session, conferenceLink?, node?, expiresAt, iceServers}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSessionData {
    pub session: SessionView,
    /// Absent with `generate_conference_link=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conference_link: Option<ConferenceLinkView>,
    /// Present with several nodes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<PlacedNodeView>,
    /// When the join code expires.
    pub expires_at: String,
    /// Empty when the embedded TURN server is off.
    pub ice_servers: Vec<IceServer>,
}

/// Live statistics of a session: `{sessionId, statut, participants}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsData {
    pub session_id: i64,
    pub statut: SessionStatus,
    /// Wherever the room is (the owner node's answer arrives typed, through the router).
    pub participants: Vec<ParticipantStats>,
}

/// The seed's join-code validation object.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeCheckData {
    pub conference_code: String,
    /// `null` when the code belongs to no session.
    #[schema(required = true)]
    pub session_id: Option<i64>,
    pub is_valid: bool,
    #[schema(required = true)]
    pub expires_at: Option<String>,
    #[schema(required = true)]
    pub created_by: Option<UserRef>,
    /// Present when the code is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice_servers: Option<Vec<IceServer>>,
    /// Present when the code is not valid: `invalid_code`, `expired_code` or `session_ended`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<crate::error::ErrorCode>,
}

/// `{iceServers, ttl, expiresAt}`: TURN credentials for the caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServersData {
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid (0 when TURN is off).
    pub ttl: u64,
    /// Unix time at which they expire; `null` when TURN is off.
    #[schema(required = true)]
    pub expires_at: Option<u64>,
}

impl IceServersData {
    /// No TURN server: no server, no credentials.
    pub fn none() -> Self {
        Self {
            ice_servers: Vec::new(),
            ttl: 0,
            expires_at: None,
        }
    }
}

impl From<crate::turn::IceServers> for IceServersData {
    fn from(s: crate::turn::IceServers) -> Self {
        Self {
            ice_servers: s.ice_servers,
            ttl: s.ttl,
            expires_at: Some(s.expires_at),
        }
    }
}

/// `{recordings}`: a consultation's recordings, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingsData {
    pub recordings: Vec<RecordingView>,
}

// ---- operations ----

/// `{mode, self, nodes}`: the nodes alive now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodesData {
    pub mode: NodesMode,
    /// This node's id (`local` on a single node).
    #[serde(rename = "self")]
    #[schema(value_type = String)]
    pub self_id: NodeId,
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodesMode {
    /// No `redis_url`: this node alone.
    Single,
    Cluster,
}

/// `GET /healthz`: `{"status": "ok"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// `GET /readyz`: `{"status": "ready", "database": "ok"}`, or with 503
/// `{"status": "not_ready", "database": "unreachable"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub database: DatabaseStatus,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseStatus {
    Ok,
    Unreachable,
}

// ---- development sign-in ----

/// `{developmentMode: true, signInHere}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevModeData {
    pub development_mode: bool,
    /// Whether this client may get a token (`auth.dev_sign_in`).
    pub sign_in_here: bool,
}

/// `{token, user}`: a development token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DevTokenData {
    pub token: String,
    pub user: DevUser,
}

/// `{userId, userType, role}` (`role` repeats `userType`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevUser {
    pub user_id: i64,
    pub user_type: Role,
    pub role: Role,
}

// ---- files ----

/// A file's bytes (attachments, recordings), with its own `Content-Type`.
pub struct FileBytes;

impl utoipa::PartialSchema for FileBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for FileBytes {}

#[cfg(test)]
mod tests {
    //! Each view against the `json!` object it replaced (kept here as the reference): equal
    //! `Value`s, hence equal bytes (both leave as a `Value`, keys sorted).

    use serde_json::{Value, json};

    use super::*;
    use crate::ids::{ConversationId, Identity, SessionId};

    fn session(ended: bool, node: Option<&str>) -> SessionRecord {
        SessionRecord {
            id: SessionId(5),
            conversation_id: ConversationId(9),
            session_type: SessionType::AudioOnly,
            statut: if ended {
                SessionStatus::Ended
            } else {
                SessionStatus::Initiating
            },
            created_by: Identity::new(Role::Medecin, 79),
            code_hash: "h".into(),
            code_expires_at: 1_700_000_900_000,
            created_at: 1_700_000_000_000,
            started_at: ended.then_some(1_700_000_100_000),
            ended_at: ended.then_some(1_700_000_200_000),
            end_reason: ended.then(|| "ended_by_doctor".to_string()),
            node_id: node.map(str::to_string),
            moved_from: node.map(|_| "old".to_string()),
            moved_at: node.map(|_| 1_700_000_150_000),
            waiting_room: true,
        }
    }

    fn old_session_view(s: &SessionRecord) -> Value {
        json!({
            "id": s.id.0,
            "conversation_id": s.conversation_id.0,
            "session_type": s.session_type,
            "statut": s.statut,
            "waiting_room": s.waiting_room,
        })
    }

    #[test]
    fn session_views_write_what_the_json_objects_wrote() {
        let participants = [
            SessionParticipant {
                who: Identity::new(Role::Patient, 11),
                joined_at: 1_700_000_100_000,
                left_at: None,
            },
            SessionParticipant {
                who: Identity::new(Role::Medecin, 79),
                joined_at: 1_700_000_100_000,
                left_at: Some(1_700_000_200_000),
            },
        ];
        for s in [session(false, None), session(true, Some("node-b"))] {
            assert_eq!(json!(SessionView::from(&s)), old_session_view(&s));
            let mut view = old_session_view(&s);
            view["created_by"] = json!(UserRef::from(s.created_by));
            view["created_at"] = json!(to_rfc3339(s.created_at));
            view["started_at"] = json!(s.started_at.map(to_rfc3339));
            view["ended_at"] = json!(s.ended_at.map(to_rfc3339));
            view["end_reason"] = json!(s.end_reason);
            view["code_expires_at"] = json!(to_rfc3339(s.code_expires_at));
            view["node_id"] = json!(s.node_id);
            view["moved_from"] = json!(s.moved_from);
            view["moved_at"] = json!(s.moved_at.map(to_rfc3339));
            view["participants"] = json!(
                participants
                    .iter()
                    .map(|p| json!({
                        "userId": p.who.id.0,
                        "userType": p.who.role,
                        "joined_at": to_rfc3339(p.joined_at),
                        "left_at": p.left_at.map(to_rfc3339),
                    }))
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                json!(SessionDetailData {
                    session: SessionDetailView::new(&s, &participants)
                }),
                json!({ "session": view })
            );
        }
    }

    #[test]
    fn created_session_and_code_check_write_what_the_json_objects_wrote() {
        let s = session(false, None);
        let base = url::Url::parse("https://relais.example/").unwrap();
        let ice = vec![IceServer {
            urls: vec!["turn:1.2.3.4:3478?transport=udp".into()],
            username: "u".into(),
            credential: "c".into(),
        }];
        for (link, node) in [(true, true), (false, false)] {
            let mut old = json!({ "session": old_session_view(&s) });
            if link {
                old["conferenceLink"] = json!({
                    "sessionId": 5,
                    "conferenceUrl": "https://relais.example/conference/5",
                    "joinCode": "123456",
                    "fullLink": "https://relais.example/conference/5?code=123456",
                });
            }
            if node {
                old["node"] = json!({ "id": "node-b", "publicBaseUrl": "https://b.example" });
            }
            old["expiresAt"] = json!(to_rfc3339(s.code_expires_at));
            old["iceServers"] = json!(ice);
            let new = CreatedSessionData {
                session: SessionView::from(&s),
                conference_link: link.then(|| ConferenceLinkView::new(&base, 5, "123456")),
                node: node.then(|| PlacedNodeView {
                    id: NodeId::from("node-b"),
                    public_base_url: "https://b.example".into(),
                }),
                expires_at: to_rfc3339(s.code_expires_at),
                ice_servers: ice.clone(),
            };
            assert_eq!(json!(new), old);
        }
        for valid in [true, false] {
            let session = valid.then_some(&s);
            let mut old = json!({
                "conferenceCode": "123456",
                "sessionId": session.map(|s| s.id.0),
                "isValid": valid,
                "expiresAt": session.map(|s| to_rfc3339(s.code_expires_at)),
                "createdBy": session.map(|s| UserRef::from(s.created_by)),
            });
            if valid {
                old["iceServers"] = json!(ice);
            } else {
                old["reason"] = json!("invalid_code");
            }
            let new = CodeCheckData {
                conference_code: "123456".into(),
                session_id: session.map(|s| s.id.0),
                is_valid: valid,
                expires_at: session.map(|s| to_rfc3339(s.code_expires_at)),
                created_by: session.map(|s| UserRef::from(s.created_by)),
                ice_servers: valid.then(|| ice.clone()),
                reason: (!valid).then_some(crate::error::ErrorCode::InvalidCode),
            };
            assert_eq!(json!(new), old);
        }
        assert_eq!(
            json!(IceServersData::none()),
            json!({ "iceServers": [], "ttl": 0, "expiresAt": null })
        );
        let turn = crate::turn::IceServers {
            ice_servers: ice.clone(),
            ttl: 3600,
            expires_at: 1_700_003_600,
        };
        assert_eq!(json!(IceServersData::from(turn.clone())), json!(turn));
    }

    #[test]
    fn the_other_views_write_what_the_json_objects_wrote() {
        assert_eq!(
            json!(ReadMarkerData {
                conversation_id: 3,
                message_id: 4
            }),
            json!({ "conversationId": 3, "messageId": 4 })
        );
        assert_eq!(
            json!(Pagination {
                has_more: false,
                oldest_id: None,
                newest_id: Some(7)
            }),
            json!({ "has_more": false, "oldest_id": null, "newest_id": 7 })
        );
        assert_eq!(
            json!(StatsData {
                session_id: 5,
                statut: SessionStatus::Active,
                participants: Vec::new(),
            }),
            json!({ "sessionId": 5, "statut": "active", "participants": [] })
        );
        assert_eq!(
            json!(NodesData {
                mode: NodesMode::Single,
                self_id: NodeId::from("local"),
                nodes: Vec::new(),
            }),
            json!({ "mode": "single", "self": "local", "nodes": [] })
        );
        assert_eq!(
            json!(Health {
                status: HealthStatus::Ok
            }),
            json!({ "status": "ok" })
        );
        assert_eq!(
            json!(Readiness {
                status: ReadyStatus::NotReady,
                database: DatabaseStatus::Unreachable,
            }),
            json!({ "status": "not_ready", "database": "unreachable" })
        );
        assert_eq!(
            json!(super::super::ok(DevModeData {
                development_mode: true,
                sign_in_here: false
            })),
            json!({ "success": true, "data": { "developmentMode": true, "signInHere": false } })
        );
        let who = Identity::new(Role::Patient, 5);
        assert_eq!(
            json!(super::super::ok(DevTokenData {
                token: "t".into(),
                user: DevUser {
                    user_id: 5,
                    user_type: who.role,
                    role: who.role
                },
            })),
            json!({
                "success": true,
                "data": { "token": "t", "user": { "userId": 5, "userType": "patient", "role": "patient" } }
            })
        );
        assert_eq!(
            json!(super::super::webrtc(axum::http::StatusCode::OK, 1).1),
            json!({ "status": "success", "data": 1 })
        );
    }

    /// The bytes on the wire: keys sorted, as `json!` objects always wrote them.
    #[tokio::test]
    async fn bodies_leave_with_their_keys_sorted() {
        use axum::response::IntoResponse;
        let body = super::super::ok(ReadMarkerData {
            conversation_id: 3,
            message_id: 4,
        })
        .into_response()
        .into_body();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"data":{"conversationId":3,"messageId":4},"success":true}"#
        );
        let error = super::super::error::ApiError::new(
            crate::error::ErrorKind::NotFound,
            crate::error::ErrorCode::NotFound,
            "no such endpoint",
        )
        .into_response()
        .into_body();
        let bytes = axum::body::to_bytes(error, 1 << 16).await.unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"error":{"code":"not_found","message":"no such endpoint"},"status":"error","success":false}"#
        );
    }
}
