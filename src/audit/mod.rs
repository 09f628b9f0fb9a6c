//! The audit trail (HIPAA 164.312(b), GDPR art. 30/32, HDS): an append-only, hash-chained log
//! of every security-relevant act — who (role, id; none for the server itself), when, from
//! which address, what ([`Action`]), on which object ([`Target`]), with a small JSON detail.
//!
//! Invariants:
//! - nothing in a record is message content, a token, a join code or a guest code: callers put
//!   counts, ids, reasons and outcomes in `detail`, never what a person typed or a secret;
//! - records form one chain ([`chain`]) across every node sharing the database: the store
//!   serializes appends, and each record is sealed from the newest one inside that lock;
//! - a failed write is logged once (the action's name and the database error, no detail) and
//!   counted (`relais_audit_write_failures_total`). Whether the act goes on is the caller's
//!   choice, made per act: reads of health data and administrator calls fail closed (nothing
//!   is served that was not recorded: [`Audit::record`] and `?`); acts already done when they
//!   are recorded (a session created, a code checked, a recording started or stopped, a
//!   retention run) fail open ([`Audit::note`]): refusing them would not undo them.

pub mod chain;

use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::clock::{Millis, SharedClock};
use crate::error::{DomainError, DomainResult, ErrorCode, ErrorKind};
use crate::ids::{ConversationId, Identity, MessageId, SessionId};
use crate::metrics::Metrics;
use crate::store::{AuditHead, AuditQuery, AuditRow, Store, StoreResult};

macro_rules! actions {
    ($($variant:ident = $name:literal,)*) => {
        /// What was done. Stored and filtered by its snake_case name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
        pub enum Action {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Action {
            pub const ALL: &[Action] = &[$(Action::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(Action::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

actions! {
    SessionCreated = "session_created",
    CodeValidated = "code_validated",
    CodeRefused = "code_refused",
    ParticipantAdmitted = "participant_admitted",
    ParticipantDeclined = "participant_declined",
    ParticipantRemoved = "participant_removed",
    GuestInvited = "guest_invited",
    GuestTokenIssued = "guest_token_issued",
    GuestRevoked = "guest_revoked",
    AudioOnlyOn = "audio_only_on",
    AudioOnlyOff = "audio_only_off",
    ConsentGiven = "consent_given",
    RecordingStarted = "recording_started",
    RecordingStopped = "recording_stopped",
    RecordingDownloaded = "recording_downloaded",
    RecordingDeleted = "recording_deleted",
    AttachmentDownloaded = "attachment_downloaded",
    MessageDeleted = "message_deleted",
    MessagesExpired = "messages_expired",
    AdminCall = "admin_call",
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object an act is about. Stored as a kind, an id (text: some ids are UUIDs) and, where
/// there is one, the session or conversation it belongs to (so a filter on a session finds
/// its recordings and participants too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Session(SessionId),
    /// Any of the caller's sessions: a join code checked without a session number that
    /// matched none of them.
    Sessions,
    /// A person in a session (admitted, declined, removed, switched to audio only).
    Participant {
        session: SessionId,
        who: Identity,
    },
    /// A guest link of a session.
    Guest {
        session: SessionId,
        guest: i64,
    },
    Recording {
        session: SessionId,
        id: String,
    },
    Conversation(ConversationId),
    Attachment {
        conversation: ConversationId,
        id: String,
    },
    Message {
        conversation: ConversationId,
        id: MessageId,
    },
    /// Messages of every conversation (a retention run).
    Messages,
    /// An administrator endpoint, by method and route template (`GET /api/messaging/nodes`).
    Api(&'static str),
}

/// The target kinds, as stored and filtered (`target_kind=`).
pub const TARGET_KINDS: &[&str] = &[
    "session",
    "sessions",
    "participant",
    "guest",
    "recording",
    "conversation",
    "attachment",
    "message",
    "messages",
    "api",
];

/// A target as stored: kind, id, session, conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumns {
    pub kind: &'static str,
    pub id: Option<String>,
    pub session: Option<i64>,
    pub conversation: Option<i64>,
}

impl Target {
    pub fn kind(&self) -> &'static str {
        self.columns().kind
    }

    pub fn columns(&self) -> TargetColumns {
        let c = |kind, id: Option<String>, session: Option<i64>, conversation: Option<i64>| {
            TargetColumns {
                kind,
                id,
                session,
                conversation,
            }
        };
        match self {
            Target::Session(s) => c("session", Some(s.0.to_string()), Some(s.0), None),
            Target::Sessions => c("sessions", None, None, None),
            Target::Participant { session, who } => {
                c("participant", Some(who.to_string()), Some(session.0), None)
            }
            Target::Guest { session, guest } => {
                c("guest", Some(guest.to_string()), Some(session.0), None)
            }
            Target::Recording { session, id } => {
                c("recording", Some(id.clone()), Some(session.0), None)
            }
            Target::Conversation(conv) => {
                c("conversation", Some(conv.0.to_string()), None, Some(conv.0))
            }
            Target::Attachment { conversation, id } => {
                c("attachment", Some(id.clone()), None, Some(conversation.0))
            }
            Target::Message { conversation, id } => c(
                "message",
                Some(id.0.to_string()),
                None,
                Some(conversation.0),
            ),
            Target::Messages => c("messages", None, None, None),
            Target::Api(route) => c("api", Some((*route).to_string()), None, None),
        }
    }
}

/// One act to record.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Who did it; `None` for the server itself (retention).
    pub actor: Option<Identity>,
    /// From where (the client address behind trusted proxies).
    pub ip: Option<IpAddr>,
    pub action: Action,
    pub target: Target,
    /// A small JSON object: counts, ids, reasons. Never content, tokens or codes.
    pub detail: serde_json::Value,
}

impl Entry {
    /// `action` on `target` by nobody in particular, from nowhere, with no detail.
    pub fn new(action: Action, target: Target) -> Self {
        Self {
            actor: None,
            ip: None,
            action,
            target,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn by(mut self, actor: Identity) -> Self {
        self.actor = Some(actor);
        self
    }

    pub fn ip(mut self, ip: Option<IpAddr>) -> Self {
        self.ip = ip;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// The audit trail of the whole server. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    failures: Counter,
    written: Counter,
}

/// Records read back in one query.
const VERIFY_BATCH: i64 = 1000;

impl Audit {
    pub fn new(store: Store, clock: SharedClock, metrics: &Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                failures: metrics.audit_write_failures.clone(),
                written: metrics.audit_records.clone(),
            }),
        }
    }

    /// Appends one record. On failure the cause is logged here, once, and counted; the error
    /// returned (500 `audit_unavailable`) carries no cause, for callers that fail closed.
    pub async fn record(&self, entry: Entry) -> DomainResult<()> {
        let action = entry.action;
        match self.append(entry).await {
            Ok(_) => {
                self.inner.written.inc();
                Ok(())
            }
            Err(e) => {
                self.inner.failures.inc();
                tracing::error!(action = action.as_str(), error = %e, "audit record not written");
                Err(DomainError::new(
                    ErrorKind::Internal,
                    ErrorCode::AuditUnavailable,
                    "the audit trail cannot be written right now; nothing was done",
                ))
            }
        }
    }

    /// [`record`](Self::record) for an act that is already done: a failure is logged and
    /// counted, and the act goes on.
    pub async fn note(&self, entry: Entry) {
        let _ = self.record(entry).await;
    }

    async fn append(&self, entry: Entry) -> StoreResult<AuditRow> {
        let at = self.inner.clock.now_ms();
        let fields = fields_of(&entry, at);
        self.inner
            .store
            .append_audit(move |head: Option<AuditHead>| {
                let head = head.map(|h| chain::Head {
                    seq: h.seq,
                    hash: h.hash,
                });
                row_of(chain::seal(fields, head.as_ref()))
            })
            .await
    }

    /// A page of the trail, newest first.
    pub async fn page(&self, query: &AuditQuery) -> DomainResult<Vec<AuditRow>> {
        Ok(self.inner.store.audit_page(query).await?)
    }

    /// Recomputes the whole chain of `store`, oldest first.
    pub async fn verify(store: &Store) -> StoreResult<Verdict> {
        let mut v = chain::Verifier::new();
        let mut after = 0;
        loop {
            let rows = store.audit_after(after, VERIFY_BATCH).await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.seq;
            for row in &rows {
                if let Err(broken) = v.push(&record_of(row)) {
                    return Ok(Verdict::Broken {
                        checked: v.count(),
                        broken,
                    });
                }
            }
        }
        Ok(Verdict::Intact {
            count: v.count(),
            head: v.head().cloned(),
        })
    }
}

/// The outcome of [`Audit::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks; `head` is the newest (compare its number with an earlier run:
    /// the chain cannot show its newest records removed).
    Intact {
        count: u64,
        head: Option<chain::Head>,
    },
    /// `checked` records were fine before `broken`.
    Broken { checked: u64, broken: chain::Broken },
}

fn fields_of(e: &Entry, at: Millis) -> chain::Fields {
    let target = e.target.columns();
    let detail = match &e.detail {
        serde_json::Value::Null => "{}".to_string(),
        // serde_json without `preserve_order`: keys leave sorted, so equal details store alike.
        v => v.to_string(),
    };
    chain::Fields {
        seq: 0,
        at,
        actor_role: e.actor.map(|a| a.role.as_str().to_string()),
        actor_id: e.actor.map(|a| a.id.0),
        ip: e.ip.map(|ip| canonical_ip(ip).to_string()),
        action: e.action.as_str().to_string(),
        target_kind: target.kind.to_string(),
        target_id: target.id,
        session_id: target.session,
        conversation_id: target.conversation,
        detail,
    }
}

/// `::ffff:a.b.c.d` is written `a.b.c.d`, so one client has one address in the trail.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn row_of(r: chain::Record) -> AuditRow {
    let f = r.fields;
    AuditRow {
        seq: f.seq,
        at: f.at,
        actor_role: f.actor_role,
        actor_id: f.actor_id,
        ip: f.ip,
        action: f.action,
        target_kind: f.target_kind,
        target_id: f.target_id,
        session_id: f.session_id,
        conversation_id: f.conversation_id,
        detail: f.detail,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

fn record_of(r: &AuditRow) -> chain::Record {
    chain::Record {
        fields: chain::Fields {
            seq: r.seq,
            at: r.at,
            actor_role: r.actor_role.clone(),
            actor_id: r.actor_id,
            ip: r.ip.clone(),
            action: r.action.clone(),
            target_kind: r.target_kind.clone(),
            target_id: r.target_id.clone(),
            session_id: r.session_id,
            conversation_id: r.conversation_id,
            detail: r.detail.clone(),
        },
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;
    use serde_json::json;

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
            assert_eq!(json!(a), json!(a.as_str()));
        }
        assert_eq!(Action::ALL.len(), 20);
        assert_eq!(Action::parse("Session_Created"), None);
    }

    #[test]
    fn targets_map_to_columns() {
        let doctor = Identity::new(Role::Medecin, 1);
        let c = Target::Participant {
            session: SessionId(5),
            who: doctor,
        }
        .columns();
        assert_eq!(
            (c.kind, c.id.as_deref(), c.session, c.conversation),
            ("participant", Some("medecin:1"), Some(5), None)
        );
        let c = Target::Attachment {
            conversation: ConversationId(3),
            id: "a-b".into(),
        }
        .columns();
        assert_eq!(
            (c.kind, c.id.as_deref(), c.session, c.conversation),
            ("attachment", Some("a-b"), None, Some(3))
        );
        assert_eq!(Target::Messages.columns().id, None);
        for t in [
            Target::Session(SessionId(1)),
            Target::Sessions,
            Target::Guest {
                session: SessionId(1),
                guest: 2,
            },
            Target::Recording {
                session: SessionId(1),
                id: "x".into(),
            },
            Target::Conversation(ConversationId(1)),
            Target::Message {
                conversation: ConversationId(1),
                id: MessageId(2),
            },
            Target::Messages,
            Target::Api("GET /x"),
        ] {
            assert!(TARGET_KINDS.contains(&t.kind()), "{t:?}");
        }
    }

    #[test]
    fn entries_become_fields() {
        let e = Entry::new(Action::CodeRefused, Target::Session(SessionId(9)))
            .by(Identity::new(Role::Patient, 11))
            .ip(Some("::ffff:10.1.2.3".parse().unwrap()))
            .detail(json!({"reason": "invalid", "attempt": 1}));
        let f = fields_of(&e, 1234);
        assert_eq!(f.actor_role.as_deref(), Some("patient"));
        assert_eq!(f.actor_id, Some(11));
        assert_eq!(f.ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(f.action, "code_refused");
        assert_eq!(f.target_kind, "session");
        assert_eq!(f.target_id.as_deref(), Some("9"));
        assert_eq!(f.session_id, Some(9));
        assert_eq!(f.detail, r#"{"attempt":1,"reason":"invalid"}"#);
        let system = fields_of(&Entry::new(Action::MessagesExpired, Target::Messages), 1);
        assert_eq!(
            (system.actor_role, system.actor_id, system.ip),
            (None, None, None)
        );
        assert_eq!(system.detail, "{}");
        // A row round-trips into the record the chain checks.
        let sealed = chain::seal(f, None);
        assert_eq!(record_of(&row_of(sealed.clone())), sealed);
    }
}
