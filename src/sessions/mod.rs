//! Consultation sessions: creation by a doctor, join codes, access rules, lifecycle in the
//! store. The media of a session lives in [`crate::sfu`]; this module knows nothing of it.
//!
//! Invariants:
//! - only doctors create sessions, always for a conversation they take part in;
//! - a join code admits only the people it was made for: the members of the session's
//!   conversation (its patient, its doctors); anyone else is answered as for a wrong code,
//!   and a code is never looked for in sessions the caller has no part in;
//! - wrong codes are limited per person, per client address (IPv6 per /64) and on the whole
//!   server, but a person with no wrong code of their own this minute always has theirs
//!   checked: limits stop guessers, never the invited ([`CodeLimits`]);
//! - `statut` only moves forward: initiating → active → ended;
//! - a guest (`invite`) touches only the session its guest link was made for, while the link
//!   is neither expired nor revoked; a guest code is exchanged for a token once.

pub mod codes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Action, Audit, Entry, Target};
use crate::clock::{Millis, SharedClock};
use crate::error::ErrorCode;
use crate::ids::{ConversationId, Identity, Role, SessionId};
use crate::limits::{AddrKey, FailureWindows};
use crate::messaging::{DomainError, DomainResult, ErrorKind, Messaging};
use crate::store::{
    GuestRecord, NewGuest, NewSession, SessionRecord, SessionStatus, SessionType, Store,
};

/// Wrong codes allowed per minute, per person, per client address and on the whole server
/// (`limits.code_failures_*`).
#[derive(Debug, Clone, Copy)]
pub struct CodeLimits {
    pub per_person: u32,
    pub per_address: u32,
    pub global: u32,
}

impl Default for CodeLimits {
    fn default() -> Self {
        Self {
            per_person: 10,
            per_address: 20,
            global: 300,
        }
    }
}

/// How a session creation names its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationRef {
    Id(ConversationId),
    /// `temp_conv_{patientId}_{doctorId}`: the private conversation between them.
    Temp {
        patient: i64,
        doctor: i64,
    },
}

impl ConversationRef {
    /// Parses a number, a numeric string, or `temp_conv_{patient}_{doctor}`.
    pub fn parse(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Number(n) => n
                .as_i64()
                .filter(|i| *i > 0)
                .map(|i| Self::Id(ConversationId(i))),
            serde_json::Value::String(s) => {
                if let Ok(i) = s.trim().parse::<i64>() {
                    return (i > 0).then_some(Self::Id(ConversationId(i)));
                }
                let rest = s.trim().strip_prefix("temp_conv_")?;
                let (p, d) = rest.split_once('_')?;
                let (patient, doctor) = (p.parse().ok()?, d.parse().ok()?);
                (patient > 0 && doctor > 0).then_some(Self::Temp { patient, doctor })
            }
            _ => None,
        }
    }
}

/// The outcome of checking a join code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeVerdict {
    Valid,
    Invalid,
    Expired,
    Ended,
}

impl CodeVerdict {
    /// Why a code was refused; `None` for a valid one.
    pub fn error_code(self) -> Option<ErrorCode> {
        Some(match self {
            CodeVerdict::Valid => return None,
            CodeVerdict::Invalid => ErrorCode::InvalidCode,
            CodeVerdict::Expired => ErrorCode::ExpiredCode,
            CodeVerdict::Ended => ErrorCode::SessionEnded,
        })
    }
}

#[derive(Debug, Clone)]
pub struct CodeCheck {
    pub code: String,
    pub verdict: CodeVerdict,
    /// The session the code belongs to, when it belongs to one.
    pub session: Option<SessionRecord>,
}

#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    messaging: Messaging,
    audit: Audit,
    code_key: Vec<u8>,
    code_ttl: Duration,
    wrong_by_person: FailureWindows<Identity>,
    wrong_by_address: FailureWindows<AddrKey>,
    wrong_overall: FailureWindows<()>,
}

impl Sessions {
    pub async fn new(
        store: Store,
        clock: SharedClock,
        messaging: Messaging,
        audit: Audit,
        code_ttl: Duration,
        limits: CodeLimits,
    ) -> DomainResult<Self> {
        let key = store.server_secret("join_code_key", codes::new_key).await?;
        let code_key = hex::decode(key.trim()).map_err(|_| {
            DomainError::internal(anyhow::anyhow!("server secret join_code_key is not hex"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                wrong_by_person: FailureWindows::per_minute(limits.per_person, clock.clone()),
                wrong_by_address: FailureWindows::per_minute(limits.per_address, clock.clone()),
                wrong_overall: FailureWindows::per_minute(limits.global, clock.clone()),
                store,
                clock,
                messaging,
                audit,
                code_key,
                code_ttl,
            }),
        })
    }

    /// The audit trail, for the SFU and recordings (which reach the server through here).
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    fn now(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Creates a session (doctors only) and returns it with its join code in clear: the only
    /// time the code exists outside the doctor's hands.
    pub async fn create(
        &self,
        caller: Identity,
        conversation: ConversationRef,
        session_type: SessionType,
        waiting_room: bool,
    ) -> DomainResult<(SessionRecord, String)> {
        self.create_on(caller, None, conversation, session_type, None, waiting_room)
            .await
    }

    /// [`create`](Self::create), from `ip`, placed on `node` (several nodes).
    pub async fn create_on(
        &self,
        caller: Identity,
        ip: Option<IpAddr>,
        conversation: ConversationRef,
        session_type: SessionType,
        node: Option<String>,
        waiting_room: bool,
    ) -> DomainResult<(SessionRecord, String)> {
        if caller.role != Role::Medecin {
            return Err(DomainError::forbidden(
                ErrorCode::DoctorOnly,
                "only a doctor (medecin) creates video consultations",
            ));
        }
        let conversation_id = match conversation {
            ConversationRef::Id(id) => {
                self.inner.messaging.ensure_participant(caller, id).await?;
                id
            }
            ConversationRef::Temp { patient, doctor } => {
                if doctor != caller.id.0 {
                    return Err(DomainError::forbidden(
                        ErrorCode::Forbidden,
                        "temp_conv_{patient}_{doctor} must name you as the doctor",
                    ));
                }
                self.inner
                    .messaging
                    .private_between(caller, Identity::new(Role::Patient, patient))
                    .await?
                    .id
            }
        };
        let now = self.now();
        for _ in 0..8 {
            let code = codes::generate();
            let new = NewSession {
                conversation_id,
                session_type,
                created_by: caller,
                code_hash: codes::hash(&self.inner.code_key, &code),
                code_expires_at: now + self.inner.code_ttl.as_millis() as Millis,
                created_at: now,
                node_id: node.clone(),
                waiting_room,
            };
            if let Some(session) = self.inner.store.create_session(&new).await? {
                self.inner
                    .store
                    .session_participant_joined(session.id, caller, now)
                    .await?;
                let entry = Entry::new(Action::SessionCreated, Target::Session(session.id))
                    .by(caller)
                    .ip(ip)
                    .detail(serde_json::json!({
                        "conversation_id": conversation_id.0,
                        "session_type": session_type,
                        "node": node,
                    }));
                self.inner.audit.note(entry).await;
                return Ok((session, code));
            }
        }
        Err(DomainError::internal(anyhow::anyhow!(
            "no free join code after 8 draws"
        )))
    }

    /// A session the caller may see: a member of its conversation or someone who joined it.
    pub async fn get_for(&self, caller: Identity, id: SessionId) -> DomainResult<SessionRecord> {
        let session = self.load(id).await?;
        if self.may_see(caller, &session).await? {
            Ok(session)
        } else {
            Err(session_not_found())
        }
    }

    async fn may_see(&self, caller: Identity, session: &SessionRecord) -> DomainResult<bool> {
        if session.created_by == caller {
            return Ok(true);
        }
        if caller.role == Role::Invite {
            return self.guest_of(caller, session.id).await.map(|g| g.is_some());
        }
        if self
            .inner
            .messaging
            .ensure_participant(caller, session.conversation_id)
            .await
            .is_ok()
        {
            return Ok(true);
        }
        let joined = self.inner.store.session_participants(session.id).await?;
        Ok(joined.iter().any(|p| p.who == caller))
    }

    pub async fn load(&self, id: SessionId) -> DomainResult<SessionRecord> {
        self.inner
            .store
            .session(id)
            .await?
            .ok_or_else(session_not_found)
    }

    /// The session's doctor only: anyone else who may see it gets 403, others 404.
    pub async fn require_owner(
        &self,
        caller: Identity,
        id: SessionId,
    ) -> DomainResult<SessionRecord> {
        let session = self.get_for(caller, id).await?;
        if session.created_by != caller {
            return Err(DomainError::forbidden(
                ErrorCode::Forbidden,
                "only the doctor who created this consultation may do this",
            ));
        }
        Ok(session)
    }

    /// Marks the session ended in the store. True when this call ended it.
    pub async fn mark_ended(&self, id: SessionId, reason: &str) -> DomainResult<bool> {
        Ok(self.inner.store.end_session(id, self.now(), reason).await?)
    }

    /// initiating → active, once, at first media.
    pub async fn mark_active(&self, id: SessionId) -> DomainResult<bool> {
        Ok(self.inner.store.mark_session_active(id, self.now()).await?)
    }

    pub async fn participant_joined(&self, id: SessionId, who: Identity) -> DomainResult<()> {
        Ok(self
            .inner
            .store
            .session_participant_joined(id, who, self.now())
            .await?)
    }

    pub async fn participant_left(&self, id: SessionId, who: Identity) -> DomainResult<()> {
        Ok(self
            .inner
            .store
            .session_participant_left(id, who, self.now())
            .await?)
    }

    fn too_many_guesses() -> DomainError {
        DomainError::new(
            ErrorKind::TooManyRequests,
            ErrorCode::TooManyAttempts,
            "too many wrong codes, retry in a minute",
        )
    }

    /// A person with no wrong code this minute is always checked; one with wrong codes is
    /// stopped when they, their address or the whole server used up the minute's allowance.
    fn refuse_guesser(&self, caller: Identity, address: Option<AddrKey>) -> bool {
        let i = &self.inner;
        i.wrong_by_person.failures(&caller) > 0
            && (i.wrong_by_person.is_over(&caller)
                || address.is_some_and(|a| i.wrong_by_address.is_over(&a))
                || i.wrong_overall.is_over(&()))
    }

    fn record_wrong_code(&self, caller: Identity, address: Option<AddrKey>) -> CodeVerdict {
        let i = &self.inner;
        i.wrong_by_person.record(caller);
        if let Some(a) = address {
            i.wrong_by_address.record(a);
        }
        i.wrong_overall.record(());
        CodeVerdict::Invalid
    }

    /// Whom a session's code admits: its doctor and the members of its conversation.
    async fn invited(&self, caller: Identity, session: &SessionRecord) -> DomainResult<bool> {
        if caller.role == Role::Invite {
            return Ok(false);
        }
        Ok(session.created_by == caller
            || self
                .inner
                .messaging
                .ensure_participant(caller, session.conversation_id)
                .await
                .is_ok())
    }

    /// Checks `caller`'s join code, for a given session or among the live sessions of the
    /// caller's conversations. Someone the session's code is not for gets `Invalid` whatever
    /// the code (the code is not even compared), like a wrong code. Past the limits
    /// ([`CodeLimits`]) the answer is 429. Every answer but the 429 (where no code is looked
    /// at) is recorded in the audit trail, without the code.
    pub async fn check_code(
        &self,
        caller: Identity,
        ip: Option<IpAddr>,
        input: &str,
        session_id: Option<SessionId>,
    ) -> DomainResult<CodeCheck> {
        let check = self.verdict(caller, ip, input, session_id).await?;
        let (action, outcome) = match check.verdict {
            CodeVerdict::Valid => (Action::CodeValidated, "valid"),
            CodeVerdict::Invalid => (Action::CodeRefused, "invalid"),
            CodeVerdict::Expired => (Action::CodeRefused, "expired"),
            CodeVerdict::Ended => (Action::CodeRefused, "ended"),
        };
        // The session asked for, else the one the code named; neither: "one of theirs".
        let target = match check.session.as_ref().map(|s| s.id).or(session_id) {
            Some(id) => Target::Session(id),
            None => Target::Sessions,
        };
        let entry = Entry::new(action, target)
            .by(caller)
            .ip(ip)
            .detail(serde_json::json!({ "outcome": outcome }));
        self.inner.audit.note(entry).await;
        Ok(check)
    }

    async fn verdict(
        &self,
        caller: Identity,
        ip: Option<IpAddr>,
        input: &str,
        session_id: Option<SessionId>,
    ) -> DomainResult<CodeCheck> {
        let address = ip.map(AddrKey::of);
        if self.refuse_guesser(caller, address) {
            return Err(Self::too_many_guesses());
        }
        let invalid = |code: String| CodeCheck {
            code,
            verdict: CodeVerdict::Invalid,
            session: None,
        };
        let Some(code) = codes::normalize(input) else {
            self.record_wrong_code(caller, address);
            return Ok(invalid(input.chars().take(16).collect()));
        };
        let hash = codes::hash(&self.inner.code_key, &code);
        let session = match session_id {
            Some(id) => {
                let found = self.inner.store.session(id).await?;
                let session = match found {
                    Some(s) if self.invited(caller, &s).await? => s,
                    _ => {
                        self.record_wrong_code(caller, address);
                        return Ok(invalid(code));
                    }
                };
                if !codes::same_hash(&session.code_hash, &hash) {
                    self.record_wrong_code(caller, address);
                    return Ok(invalid(code));
                }
                if session.statut == SessionStatus::Ended {
                    return Ok(CodeCheck {
                        code,
                        verdict: CodeVerdict::Ended,
                        session: Some(session),
                    });
                }
                session
            }
            None => match self
                .inner
                .store
                .live_session_by_code_for(&hash, caller)
                .await?
            {
                Some(s) => s,
                None => {
                    self.record_wrong_code(caller, address);
                    return Ok(invalid(code));
                }
            },
        };
        let verdict = if session.code_expires_at <= self.now() {
            CodeVerdict::Expired
        } else {
            CodeVerdict::Valid
        };
        Ok(CodeCheck {
            code,
            verdict,
            session: Some(session),
        })
    }

    /// Admits `caller` into a session with a code: the session's record when the code is
    /// valid for it, an error named after the reason otherwise.
    pub async fn admit(
        &self,
        caller: Identity,
        ip: Option<IpAddr>,
        session_id: SessionId,
        code: &str,
    ) -> DomainResult<SessionRecord> {
        if caller.role == Role::Invite {
            // A guest's token is its proof; its link must still be good for this session.
            let session = self.load(session_id).await?;
            if self.guest_of(caller, session_id).await?.is_none() {
                return Err(session_not_found());
            }
            if session.statut == SessionStatus::Ended {
                return Err(DomainError::new(
                    ErrorKind::Conflict,
                    ErrorCode::SessionEnded,
                    "this consultation is over",
                ));
            }
            return Ok(session);
        }
        let check = self.check_code(caller, ip, code, Some(session_id)).await?;
        match (check.verdict, check.session) {
            // The room records the participant when they enter (after the waiting room).
            (CodeVerdict::Valid, Some(session)) => Ok(session),
            (CodeVerdict::Expired, _) => Err(DomainError::new(
                ErrorKind::Forbidden,
                ErrorCode::ExpiredCode,
                "this consultation code has expired; ask the doctor for a new link",
            )),
            (CodeVerdict::Ended, _) => Err(DomainError::new(
                ErrorKind::Conflict,
                ErrorCode::SessionEnded,
                "this consultation is over",
            )),
            _ => Err(DomainError::new(
                ErrorKind::Forbidden,
                ErrorCode::InvalidCode,
                "this consultation code is not valid (a code admits the people of the \
                 consultation's conversation; ask the doctor to add you)",
            )),
        }
    }
}

impl Sessions {
    /// Whether `who` entered this session before (admitted once: a rejoin after a restart or
    /// a node handover does not wait again).
    pub async fn took_part(&self, id: SessionId, who: Identity) -> DomainResult<bool> {
        let joined = self.inner.store.session_participants(id).await?;
        Ok(joined.iter().any(|p| p.who == who))
    }

    /// Records that the doctor declined or removed `who`: refused for the rest of the session.
    pub async fn refuse(&self, id: SessionId, who: Identity, removed: bool) -> DomainResult<()> {
        let kind = if removed { "removed" } else { "declined" };
        Ok(self
            .inner
            .store
            .refuse_participant(id, who, kind, self.now())
            .await?)
    }

    /// Refuses `who` if the doctor declined or removed them from this session (their retries
    /// count as wrong codes, so that retrying is limited like guessing).
    pub async fn check_not_refused(
        &self,
        id: SessionId,
        who: Identity,
        ip: Option<IpAddr>,
    ) -> DomainResult<()> {
        let Some(kind) = self.inner.store.refusal(id, who).await? else {
            return Ok(());
        };
        self.record_wrong_code(who, ip.map(AddrKey::of));
        Err(if kind == "removed" {
            DomainError::forbidden(
                ErrorCode::Removed,
                "the doctor removed you from this consultation",
            )
        } else {
            DomainError::forbidden(
                ErrorCode::Declined,
                "the doctor declined to admit you to this consultation",
            )
        })
    }

    /// Turns the session's waiting room on or off (its doctor only).
    pub async fn set_waiting_room(
        &self,
        caller: Identity,
        id: SessionId,
        on: bool,
    ) -> DomainResult<SessionRecord> {
        let mut session = self.require_owner(caller, id).await?;
        self.inner.store.set_waiting_room(id, on).await?;
        session.waiting_room = on;
        Ok(session)
    }

    /// `caller`'s guest link when it is a guest of `session` whose link is still good
    /// (neither revoked nor expired).
    pub async fn guest_of(
        &self,
        caller: Identity,
        session: SessionId,
    ) -> DomainResult<Option<GuestRecord>> {
        if caller.role != Role::Invite {
            return Ok(None);
        }
        let now = self.now();
        Ok(self
            .inner
            .store
            .guest(caller.id.0)
            .await?
            .filter(|g| g.session_id == session && g.revoked_at.is_none() && g.expires_at > now))
    }

    /// The doctor invites a guest into a live session: the link's record and its code in
    /// clear (the only time it exists outside the doctor's hands).
    pub async fn invite_guest(
        &self,
        caller: Identity,
        id: SessionId,
        display_name: &str,
        ttl: Duration,
    ) -> DomainResult<(GuestRecord, String)> {
        let session = self.require_owner(caller, id).await?;
        if session.statut == SessionStatus::Ended {
            return Err(DomainError::conflict(
                ErrorCode::SessionEnded,
                "this consultation is over",
            ));
        }
        let name: String = display_name.trim().chars().take(80).collect();
        if name.is_empty() {
            return Err(DomainError::bad_request(
                ErrorCode::InvalidBody,
                "display_name must not be empty",
            ));
        }
        let code = codes::generate_guest();
        let now = self.now();
        let guest = self
            .inner
            .store
            .create_guest(&NewGuest {
                session_id: id,
                display_name: name,
                code_hash: codes::hash(&self.inner.code_key, &code),
                created_by: caller,
                created_at: now,
                expires_at: now + ttl.as_millis() as Millis,
            })
            .await?;
        Ok((guest, code))
    }

    /// The guest links of a session (its doctor only).
    pub async fn guests(&self, caller: Identity, id: SessionId) -> DomainResult<Vec<GuestRecord>> {
        self.require_owner(caller, id).await?;
        Ok(self.inner.store.guests_of(id).await?)
    }

    /// Revokes a guest link (its session's doctor only).
    pub async fn revoke_guest(
        &self,
        caller: Identity,
        id: SessionId,
        guest: i64,
    ) -> DomainResult<GuestRecord> {
        self.require_owner(caller, id).await?;
        let record = self
            .inner
            .store
            .guest(guest)
            .await?
            .filter(|g| g.session_id == id)
            .ok_or_else(|| DomainError::not_found(ErrorCode::NotFound, "no such guest link"))?;
        self.inner.store.revoke_guest(guest, self.now()).await?;
        Ok(record)
    }

    /// Exchanges a guest code (with no account: limited per address like join codes) for the
    /// guest's record, once. The caller mints the token.
    pub async fn exchange_guest_code(
        &self,
        ip: Option<IpAddr>,
        session: SessionId,
        input: &str,
    ) -> DomainResult<GuestRecord> {
        let address = ip.map(AddrKey::of);
        // Nobody to count per person: the address and the whole server bound the guessing.
        let i = &self.inner;
        if address.is_some_and(|a| i.wrong_by_address.is_over(&a)) || i.wrong_overall.is_over(&()) {
            return Err(Self::too_many_guesses());
        }
        let wrong = || {
            if let Some(a) = address {
                i.wrong_by_address.record(a);
            }
            i.wrong_overall.record(());
            DomainError::new(
                ErrorKind::Forbidden,
                ErrorCode::InvalidCode,
                "this guest link is not valid; ask the doctor for a new one",
            )
        };
        let Some(code) = codes::normalize_guest(input) else {
            return Err(wrong());
        };
        let hash = codes::hash(&i.code_key, &code);
        let Some(guest) = i.store.guest_by_code(session, &hash).await? else {
            return Err(wrong());
        };
        if guest.revoked_at.is_some() {
            return Err(wrong());
        }
        if guest.expires_at <= self.now() {
            return Err(DomainError::new(
                ErrorKind::Forbidden,
                ErrorCode::ExpiredCode,
                "this guest link has expired; ask the doctor for a new one",
            ));
        }
        let record = self.load(session).await?;
        if record.statut == SessionStatus::Ended {
            return Err(DomainError::conflict(
                ErrorCode::SessionEnded,
                "this consultation is over",
            ));
        }
        if !i.store.claim_guest(guest.id, self.now()).await? {
            return Err(DomainError::conflict(
                ErrorCode::GuestCodeUsed,
                "this guest link was already used; ask the doctor for a new one",
            ));
        }
        Ok(guest)
    }
}

pub fn session_not_found() -> DomainError {
    DomainError::not_found(ErrorCode::SessionNotFound, "consultation not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversation_refs() {
        assert_eq!(
            ConversationRef::parse(&json!(803921)),
            Some(ConversationRef::Id(ConversationId(803921)))
        );
        assert_eq!(
            ConversationRef::parse(&json!("42")),
            Some(ConversationRef::Id(ConversationId(42)))
        );
        assert_eq!(
            ConversationRef::parse(&json!("temp_conv_11_79")),
            Some(ConversationRef::Temp {
                patient: 11,
                doctor: 79
            })
        );
        for bad in [
            json!("temp_conv_11"),
            json!("temp_conv_a_b"),
            json!(-3),
            json!(null),
            json!("x"),
            json!(1.5),
        ] {
            assert_eq!(ConversationRef::parse(&bad), None, "{bad}");
        }
    }
}
