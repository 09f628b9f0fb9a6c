//! Socket.IO event names and payloads: the one place they are spelled.
//!
//! Incoming payloads accept ids as numbers or numeric strings (browsers send both); outgoing
//! payloads use numbers.

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{ConversationId, Identity, MessageId, Role, SessionId};

mod messages;
mod out;

pub use messages::{AttachmentView, MessageView, SendMessageBody, SenderView, default_name};
pub use out::Outgoing;

/// Client → server.
pub mod incoming {
    pub const JOIN_CONVERSATION: &str = "join_conversation";
    pub const LEAVE_CONVERSATION: &str = "leave_conversation";
    pub const TYPING: &str = "typing";
    pub const MESSAGE_READ: &str = "message_read";
    pub const SEND_MESSAGE: &str = "send_message";
    pub const WEBRTC_OFFER: &str = "webrtc_offer";
    pub const REQUEST_WEBRTC_OFFER: &str = "request_webrtc_offer";
    pub const WEBRTC_ANSWER: &str = "webrtc_answer";
    pub const WEBRTC_ICE_CANDIDATES: &str = "webrtc_ice_candidates";
    pub const LEAVE_SESSION: &str = "leave_session";
    pub const END_SESSION: &str = "end_session";
    /// The session's doctor starts recording (`{sessionId, consent: true}`).
    pub const START_RECORDING: &str = "start_recording";
    pub const STOP_RECORDING: &str = "stop_recording";
    /// The session's doctor lets a waiting person in (`{sessionId, user}`).
    pub const ADMIT_PARTICIPANT: &str = "admit_participant";
    /// The session's doctor turns a waiting person away (`{sessionId, user, reason?}`).
    pub const DECLINE_PARTICIPANT: &str = "decline_participant";
    /// The session's doctor takes someone out of the call (`{sessionId, user}`).
    pub const REMOVE_PARTICIPANT: &str = "remove_participant";
    /// A participant switches to audio only, or back (`{sessionId, audioOnly, reason?}`).
    pub const SET_AUDIO_ONLY: &str = "set_audio_only";
}

/// Server → client.
pub mod outgoing {
    pub const NEW_MESSAGE: &str = "new_message";
    pub const TYPING: &str = "typing";
    pub const MESSAGE_READ: &str = "message_read";
    /// A messaging event failed and the client asked for no acknowledgement.
    pub const MESSAGING_ERROR: &str = "messaging_error";
    pub const WEBRTC_OFFER: &str = "webrtc_offer";
    pub const WEBRTC_ANSWER: &str = "webrtc_answer";
    pub const WEBRTC_ICE_CANDIDATES: &str = "webrtc_ice_candidates";
    pub const PARTICIPANT_JOINED: &str = "participant_joined";
    pub const PARTICIPANT_LEFT: &str = "participant_left";
    pub const SESSION_ENDED: &str = "session_ended";
    /// The node serving a session was lost: reconnect its media (same events) on `node`.
    pub const SESSION_MOVED: &str = "session_moved";
    pub const WEBRTC_ERROR: &str = "webrtc_error";
    /// The consultation is being recorded (to everyone in it, and to each who joins later).
    pub const RECORDING_STARTED: &str = "recording_started";
    pub const RECORDING_STOPPED: &str = "recording_stopped";
    /// To a person who asked to join: they wait for the doctor to admit them.
    pub const WAITING: &str = "waiting";
    /// To the session's doctor: someone waits in the waiting room.
    pub const PARTICIPANT_WAITING: &str = "participant_waiting";
    /// To the session's doctor: someone stopped waiting (left, disconnected).
    pub const PARTICIPANT_WAITING_LEFT: &str = "participant_waiting_left";
    /// To the person admitted: the server's `webrtc_offer` follows.
    pub const ADMITTED: &str = "admitted";
    /// To the person turned away.
    pub const DECLINED: &str = "declined";
    /// To the person the doctor took out of the call.
    pub const REMOVED: &str = "removed";
    /// To everyone in the session: a participant is (or no longer is) audio only.
    pub const AUDIO_ONLY: &str = "audio_only";
    /// To everyone in the session: a participant's link became weak (relais sends them less),
    /// or good again.
    pub const CONNECTION_QUALITY: &str = "connection_quality";
}

/// Reads an id given as a number or as a string of digits, into `i64` or a typed id
/// ([`SessionId`], [`ConversationId`], [`MessageId`], …).
pub fn flexible_id<'de, D: Deserializer<'de>, T: From<i64>>(d: D) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(i64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Num(n) => Ok(T::from(n)),
        Raw::Str(s) => s
            .trim()
            .parse::<i64>()
            .map(T::from)
            .map_err(|_| serde::de::Error::custom("expected a numeric id")),
    }
}

/// `{userId, userType}` as the seed writes a person in events.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    #[serde(deserialize_with = "flexible_id")]
    pub user_id: i64,
    pub user_type: Role,
}

impl From<Identity> for UserRef {
    fn from(i: Identity) -> Self {
        Self {
            user_id: i.id.0,
            user_type: i.role,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinConversation {
    #[serde(deserialize_with = "flexible_id")]
    pub conversation_id: ConversationId,
    /// Sent by the seed's clients; identity comes from the token, not from here.
    #[serde(default)]
    pub user: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveConversation {
    #[serde(deserialize_with = "flexible_id")]
    pub conversation_id: ConversationId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    #[serde(deserialize_with = "flexible_id")]
    pub conversation_id: ConversationId,
    pub is_typing: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingRelay {
    pub conversation_id: ConversationId,
    pub is_typing: bool,
    pub user: UserRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRead {
    #[serde(deserialize_with = "flexible_id")]
    pub conversation_id: ConversationId,
    #[serde(deserialize_with = "flexible_id")]
    pub message_id: MessageId,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReadRelay {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub user: UserRef,
    pub read_at: String,
}

/// `send_message`: the REST body plus the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct SendMessage {
    #[serde(
        rename = "conversationId",
        alias = "conversation_id",
        deserialize_with = "flexible_id"
    )]
    pub conversation_id: ConversationId,
    #[serde(flatten)]
    pub body: SendMessageBody,
}

/// Acknowledgement of a client event: `{success, data}` or `{success, error}`.
#[derive(Debug, Clone, Serialize)]
pub struct Ack<T: Serialize> {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AckError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AckError {
    pub code: crate::error::ErrorCode,
    pub message: String,
}

/// `messaging_error`: a failed event that asked for no acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct MessagingError {
    pub event: &'static str,
    pub code: crate::error::ErrorCode,
    pub message: String,
}

// ---- WebRTC signaling -------------------------------------------------------------------

/// `from` of server-originated signaling: `{userType: "server", userId: null}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRef {
    pub user_type: &'static str,
    pub user_id: Option<i64>,
}

impl Default for ServerRef {
    fn default() -> Self {
        Self {
            user_type: "server",
            user_id: None,
        }
    }
}

/// Client → server `webrtc_offer`: a participant publishes (or renegotiates).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientOffer {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    #[serde(default)]
    pub conversation_id: Option<serde_json::Value>,
    pub sdp_offer: String,
    #[serde(default)]
    pub session_type: Option<String>,
}

/// Client → server `request_webrtc_offer`: join with the code (a guest's token is its proof:
/// guests may leave `code` out).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestOffer {
    #[serde(default)]
    pub code: String,
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    #[serde(default)]
    pub user: Option<serde_json::Value>,
    #[serde(default)]
    pub action: Option<String>,
}

/// Client → server `webrtc_answer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientAnswer {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    pub sdp_answer: String,
}

/// Client → server `webrtc_ice_candidates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCandidates {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    pub candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
}

/// `leave_session` / `end_session`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
}

/// Server → client `webrtc_offer`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub session_id: SessionId,
    pub conversation_id: ConversationId,
    pub sdp_offer: String,
    pub session_type: crate::store::SessionType,
    pub from: ServerRef,
}

/// Server → client `webrtc_answer`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub session_id: SessionId,
    pub sdp_answer: String,
    pub from: ServerRef,
}

/// Server → client `webrtc_ice_candidates`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidates {
    pub session_id: SessionId,
    pub candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    pub from: ServerRef,
}

/// `participant_joined` / `participant_left`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantEvent {
    pub session_id: SessionId,
    pub participant: UserRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Everyone in the session after this change.
    pub participants: Vec<UserRef>,
}

/// Client → server `admit_participant`, `decline_participant`, `remove_participant`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRequest {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    pub user: UserRef,
    /// Why (declines): shown to the person, kept to 200 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Client → server `set_audio_only`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetAudioOnly {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    pub audio_only: bool,
    /// Why the call falls back to audio (recorded in the audit trail), kept to 200 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `waiting`: the person waits for the doctor to admit them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub session_id: SessionId,
    /// RFC 3339.
    pub since: String,
}

/// `participant_waiting` (to the doctor).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantWaiting {
    pub session_id: SessionId,
    pub user: UserRef,
    pub name: Option<String>,
    /// RFC 3339.
    pub since: String,
}

/// `participant_waiting_left` (to the doctor), `admitted` (to the person; `user` is them).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionUser {
    pub session_id: SessionId,
    pub user: UserRef,
}

/// `declined`, `removed`: to the person concerned.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnedAway {
    pub session_id: SessionId,
    pub message: String,
    /// The doctor's words, when they gave a reason.
    pub reason: Option<String>,
}

/// `audio_only`: to everyone in the session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioOnly {
    pub session_id: SessionId,
    pub user: UserRef,
    pub audio_only: bool,
    pub reason: Option<String>,
}

/// `connection_quality`: to everyone in the session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionQuality {
    pub session_id: SessionId,
    pub user: UserRef,
    /// `weak` or `good`.
    pub quality: &'static str,
    /// What the participant's link takes for each video it receives (bits per second), when
    /// limited.
    pub available_bps: Option<u64>,
}

/// `session_ended`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnded {
    pub session_id: SessionId,
    pub reason: &'static str,
}

/// A relais node, as clients are told about it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRef {
    pub id: String,
    pub public_base_url: String,
}

/// `session_moved`: the session now lives on `node`; the client sends its `webrtc_offer`
/// (or `request_webrtc_offer` with its code) again, on the same socket.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionMoved {
    pub session_id: SessionId,
    /// `node_lost`, `node_shutdown` or `node_restarted`.
    pub reason: &'static str,
    /// The node the session was on.
    pub from: String,
    pub node: NodeRef,
    pub conference_url: String,
}

/// `webrtc_error`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebrtcError {
    pub session_id: Option<SessionId>,
    pub code: crate::error::ErrorCode,
    pub message: String,
}

/// Client → server `start_recording`: the consent flag is required (and must be true).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRecording {
    #[serde(deserialize_with = "flexible_id")]
    pub session_id: SessionId,
    #[serde(default)]
    pub consent: Option<bool>,
}

/// The consent a recording carries: confirmed by the session's doctor, at a time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingConsent {
    pub confirmed_by: UserRef,
    pub confirmed_at: String,
}

/// `recording_started`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStarted {
    pub session_id: SessionId,
    pub started_at: String,
    pub started_by: UserRef,
    pub consent: RecordingConsent,
}

/// `recording_stopped`: `reason` is `stopped_by_doctor`, `session_ended` or `server_shutdown`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStopped {
    pub session_id: SessionId,
    pub reason: &'static str,
    pub stopped_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_ids_read_numbers_and_numeric_strings_and_refuse_garbage() {
        let n: SessionRef = serde_json::from_str(r#"{"sessionId": 42}"#).unwrap();
        assert_eq!(n.session_id, SessionId(42));
        let s: SessionRef = serde_json::from_str(r#"{"sessionId": " 42 "}"#).unwrap();
        assert_eq!(s.session_id, SessionId(42));
        let m: MessageRead =
            serde_json::from_str(r#"{"conversationId": "7", "messageId": 9}"#).unwrap();
        assert_eq!(
            (m.conversation_id, m.message_id),
            (ConversationId(7), MessageId(9))
        );
        for bad in [
            r#"{"sessionId": "abc"}"#,
            r#"{"sessionId": "4x2"}"#,
            r#"{"sessionId": 4.5}"#,
            r#"{"sessionId": null}"#,
            r#"{"sessionId": true}"#,
        ] {
            assert!(serde_json::from_str::<SessionRef>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typed_ids_go_out_as_bare_numbers() {
        let ended = SessionEnded {
            session_id: SessionId(42),
            reason: "ended",
        };
        assert_eq!(
            serde_json::to_string(&ended).unwrap(),
            r#"{"sessionId":42,"reason":"ended"}"#
        );
        let err = WebrtcError {
            session_id: None,
            code: crate::error::ErrorCode::InvalidBody,
            message: String::new(),
        };
        assert!(
            serde_json::to_string(&err)
                .unwrap()
                .starts_with(r#"{"sessionId":null,"#)
        );
        let relay = MessageReadRelay {
            conversation_id: ConversationId(7),
            message_id: MessageId(9),
            user: UserRef {
                user_id: 1,
                user_type: Role::Patient,
            },
            read_at: "t".into(),
        };
        assert_eq!(
            serde_json::to_string(&relay).unwrap(),
            r#"{"conversationId":7,"messageId":9,"user":{"userId":1,"userType":"patient"},"readAt":"t"}"#
        );
    }
}
