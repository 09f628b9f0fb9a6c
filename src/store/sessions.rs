//! WebRTC sessions (consultations), their participants, and server-wide secrets.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::identity;
use super::{Store, StoreError, StoreResult};
use crate::clock::Millis;
use crate::ids::{ConversationId, Identity, SessionId};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionType {
    AudioVideo,
    AudioOnly,
}

impl SessionType {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::AudioVideo => "audio_video",
            SessionType::AudioOnly => "audio_only",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "audio_video" => Ok(Self::AudioVideo),
            "audio_only" => Ok(Self::AudioOnly),
            _ => Err(StoreError::Corrupt("unknown session type".into())),
        }
    }

    pub fn has_video(self) -> bool {
        self == SessionType::AudioVideo
    }
}

/// `statut`: initiating → active (first media) → ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Initiating,
    Active,
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Initiating => "initiating",
            SessionStatus::Active => "active",
            SessionStatus::Ended => "ended",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "initiating" => Ok(Self::Initiating),
            "active" => Ok(Self::Active),
            "ended" => Ok(Self::Ended),
            _ => Err(StoreError::Corrupt("unknown session status".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub conversation_id: ConversationId,
    pub session_type: SessionType,
    pub statut: SessionStatus,
    pub created_by: Identity,
    pub code_hash: String,
    pub code_expires_at: Millis,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub end_reason: Option<String>,
    /// The node serving its media (several nodes); `None` on a single node.
    pub node_id: Option<String>,
    /// The last node lost with this session on it, and when the session moved.
    pub moved_from: Option<String>,
    pub moved_at: Option<Millis>,
    /// Newcomers wait for the doctor's admission.
    pub waiting_room: bool,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub conversation_id: ConversationId,
    pub session_type: SessionType,
    pub created_by: Identity,
    pub code_hash: String,
    pub code_expires_at: Millis,
    pub created_at: Millis,
    /// Where it is placed (several nodes).
    pub node_id: Option<String>,
    pub waiting_room: bool,
}

/// A guest link: someone without an account invited into one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRecord {
    pub id: i64,
    pub session_id: SessionId,
    pub display_name: String,
    pub code_hash: String,
    pub created_by: Identity,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// When the code was exchanged for a token (it is used once).
    pub used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct NewGuest {
    pub session_id: SessionId,
    pub display_name: String,
    pub code_hash: String,
    pub created_by: Identity,
    pub created_at: Millis,
    pub expires_at: Millis,
}

const GUEST_COLUMNS: &str = "id, session_id, display_name, code_hash, created_by_role, \
    created_by_id, created_at, expires_at, used_at, revoked_at";

fn guest_from_row(row: &AnyRow) -> StoreResult<GuestRecord> {
    Ok(GuestRecord {
        id: row.try_get("id")?,
        session_id: SessionId(row.try_get("session_id")?),
        display_name: row.try_get("display_name")?,
        code_hash: row.try_get("code_hash")?,
        created_by: identity(row, "created_by_role", "created_by_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A session that is not over, and the node it is placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedSession {
    pub id: SessionId,
    pub node_id: String,
    pub statut: SessionStatus,
    pub code_expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParticipant {
    pub who: Identity,
    pub joined_at: Millis,
    pub left_at: Option<Millis>,
}

const COLUMNS: &str = "id, conversation_id, session_type, statut, created_by_role, created_by_id, \
    code_hash, code_expires_at, created_at, started_at, ended_at, end_reason, node_id, moved_from, \
    moved_at, waiting_room";

fn session_from_row(row: &AnyRow) -> StoreResult<SessionRecord> {
    let session_type: String = row.try_get("session_type")?;
    let statut: String = row.try_get("statut")?;
    Ok(SessionRecord {
        id: SessionId(row.try_get("id")?),
        conversation_id: ConversationId(row.try_get("conversation_id")?),
        session_type: SessionType::parse(&session_type)?,
        statut: SessionStatus::parse(&statut)?,
        created_by: identity(row, "created_by_role", "created_by_id")?,
        code_hash: row.try_get("code_hash")?,
        code_expires_at: row.try_get("code_expires_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
        node_id: row.try_get("node_id")?,
        moved_from: row.try_get("moved_from")?,
        moved_at: row.try_get("moved_at")?,
        waiting_room: row.try_get::<i64, _>("waiting_room")? != 0,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    /// Stores a new session. `Ok(None)` when its code hash is already held by a live session.
    pub async fn create_session(&self, new: &NewSession) -> StoreResult<Option<SessionRecord>> {
        let result: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO webrtc_sessions (conversation_id, session_type, statut, created_by_role, \
                 created_by_id, code_hash, code_expires_at, created_at, node_id, waiting_room) \
             VALUES ($1, $2, 'initiating', $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(new.conversation_id.0)
        .bind(new.session_type.as_str())
        .bind(new.created_by.role.as_str())
        .bind(new.created_by.id.0)
        .bind(new.code_hash.clone())
        .bind(new.code_expires_at)
        .bind(new.created_at)
        .bind(new.node_id.clone())
        .bind(i64::from(new.waiting_room))
        .fetch_one(self.writer())
        .await;
        match result {
            Ok(id) => Ok(Some(SessionRecord {
                id: SessionId(id),
                conversation_id: new.conversation_id,
                session_type: new.session_type,
                statut: SessionStatus::Initiating,
                created_by: new.created_by,
                code_hash: new.code_hash.clone(),
                code_expires_at: new.code_expires_at,
                created_at: new.created_at,
                started_at: None,
                ended_at: None,
                end_reason: None,
                node_id: new.node_id.clone(),
                moved_from: None,
                moved_at: None,
                waiting_room: new.waiting_room,
            })),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webrtc_sessions WHERE id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(id.0)
            .fetch_optional(self.writer())
            .await?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    /// The live session with this code hash among those of `member`'s conversations: a code
    /// is never looked for in sessions the caller has no part in.
    pub async fn live_session_by_code_for(
        &self,
        code_hash: &str,
        member: Identity,
    ) -> StoreResult<Option<SessionRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webrtc_sessions WHERE code_hash = $1 AND statut <> 'ended' \
             AND conversation_id IN (SELECT conversation_id FROM conversation_participants \
             WHERE role = $2 AND user_id = $3)"
        ));
        let row = sqlx::query(sql)
            .bind(code_hash.to_string())
            .bind(member.role.as_str())
            .bind(member.id.0)
            .fetch_optional(self.writer())
            .await?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    /// Turns the waiting room on or off; false when there is no such session.
    pub async fn set_waiting_room(&self, id: SessionId, on: bool) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE webrtc_sessions SET waiting_room = $1 WHERE id = $2")
            .bind(i64::from(on))
            .bind(id.0)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn create_guest(&self, new: &NewGuest) -> StoreResult<GuestRecord> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webrtc_guests (session_id, display_name, code_hash, created_by_role, \
                 created_by_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(new.session_id.0)
        .bind(new.display_name.clone())
        .bind(new.code_hash.clone())
        .bind(new.created_by.role.as_str())
        .bind(new.created_by.id.0)
        .bind(new.created_at)
        .bind(new.expires_at)
        .fetch_one(self.writer())
        .await?;
        Ok(GuestRecord {
            id,
            session_id: new.session_id,
            display_name: new.display_name.clone(),
            code_hash: new.code_hash.clone(),
            created_by: new.created_by,
            created_at: new.created_at,
            expires_at: new.expires_at,
            used_at: None,
            revoked_at: None,
        })
    }

    pub async fn guest(&self, id: i64) -> StoreResult<Option<GuestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {GUEST_COLUMNS} FROM webrtc_guests WHERE id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(self.writer())
            .await?;
        row.map(|r| guest_from_row(&r)).transpose()
    }

    /// The guest of `session` whose code hashes to `code_hash`.
    pub async fn guest_by_code(
        &self,
        session: SessionId,
        code_hash: &str,
    ) -> StoreResult<Option<GuestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {GUEST_COLUMNS} FROM webrtc_guests WHERE session_id = $1 AND code_hash = $2"
        ));
        let row = sqlx::query(sql)
            .bind(session.0)
            .bind(code_hash.to_string())
            .fetch_optional(self.writer())
            .await?;
        row.map(|r| guest_from_row(&r)).transpose()
    }

    pub async fn guests_of(&self, session: SessionId) -> StoreResult<Vec<GuestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {GUEST_COLUMNS} FROM webrtc_guests WHERE session_id = $1 ORDER BY id"
        ));
        let rows = sqlx::query(sql)
            .bind(session.0)
            .fetch_all(self.writer())
            .await?;
        rows.iter().map(guest_from_row).collect()
    }

    /// Marks the guest's code used, once: true for the one call that did (two exchanges at
    /// once cannot both win), false when it was used or revoked already.
    pub async fn claim_guest(&self, id: i64, now: Millis) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE webrtc_guests SET used_at = $1 \
             WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Revokes a guest link; false when it was revoked already.
    pub async fn revoke_guest(&self, id: i64, now: Millis) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE webrtc_guests SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records that `who` was declined or removed (`kind`): refused for the rest of the session.
    pub async fn refuse_participant(
        &self,
        id: SessionId,
        who: Identity,
        kind: &str,
        now: Millis,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webrtc_session_refusals (session_id, role, user_id, kind, at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (session_id, role, user_id) DO UPDATE SET kind = $4, at = $5",
        )
        .bind(id.0)
        .bind(who.role.as_str())
        .bind(who.id.0)
        .bind(kind.to_string())
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// `declined` or `removed` when `who` was refused in this session.
    pub async fn refusal(&self, id: SessionId, who: Identity) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT kind FROM webrtc_session_refusals \
             WHERE session_id = $1 AND role = $2 AND user_id = $3",
        )
        .bind(id.0)
        .bind(who.role.as_str())
        .bind(who.id.0)
        .fetch_optional(self.writer())
        .await?)
    }

    /// initiating → active; false when it was not initiating.
    pub async fn mark_session_active(&self, id: SessionId, now: Millis) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE webrtc_sessions SET statut = 'active', started_at = $1 \
             WHERE id = $2 AND statut = 'initiating'",
        )
        .bind(now)
        .bind(id.0)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// → ended; false when it already was.
    pub async fn end_session(&self, id: SessionId, now: Millis, reason: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE webrtc_sessions SET statut = 'ended', ended_at = $1, end_reason = $2 \
             WHERE id = $3 AND statut <> 'ended'",
        )
        .bind(now)
        .bind(reason.to_string())
        .bind(id.0)
        .execute(self.writer())
        .await?;
        sqlx::query(
            "UPDATE webrtc_session_participants SET left_at = $1 WHERE session_id = $2 AND left_at IS NULL",
        )
        .bind(now)
        .bind(id.0)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records that `who` joined (again).
    pub async fn session_participant_joined(
        &self,
        id: SessionId,
        who: Identity,
        now: Millis,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webrtc_session_participants (session_id, role, user_id, joined_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id, role, user_id) DO UPDATE SET left_at = NULL",
        )
        .bind(id.0)
        .bind(who.role.as_str())
        .bind(who.id.0)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn session_participant_left(
        &self,
        id: SessionId,
        who: Identity,
        now: Millis,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webrtc_session_participants SET left_at = $1 \
             WHERE session_id = $2 AND role = $3 AND user_id = $4 AND left_at IS NULL",
        )
        .bind(now)
        .bind(id.0)
        .bind(who.role.as_str())
        .bind(who.id.0)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn session_participants(
        &self,
        id: SessionId,
    ) -> StoreResult<Vec<SessionParticipant>> {
        let rows = sqlx::query(
            "SELECT role, user_id, joined_at, left_at FROM webrtc_session_participants \
             WHERE session_id = $1 ORDER BY joined_at",
        )
        .bind(id.0)
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionParticipant {
                    who: identity(r, "role", "user_id")?,
                    joined_at: r.try_get("joined_at")?,
                    left_at: r.try_get("left_at")?,
                })
            })
            .collect()
    }

    /// Sessions not ended that `who` joined and did not leave.
    pub async fn open_participations(&self, who: Identity) -> StoreResult<Vec<SessionId>> {
        let rows = sqlx::query(
            "SELECT p.session_id FROM webrtc_session_participants p \
             JOIN webrtc_sessions s ON s.id = p.session_id \
             WHERE p.role = $1 AND p.user_id = $2 AND p.left_at IS NULL AND s.statut <> 'ended' \
             ORDER BY p.session_id",
        )
        .bind(who.role.as_str())
        .bind(who.id.0)
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|r| Ok(SessionId(r.try_get("session_id")?)))
            .collect()
    }

    /// The node a session is placed on: `None` when there is no such session, `Some(None)`
    /// when it is not placed (single node).
    pub async fn session_node(&self, id: SessionId) -> StoreResult<Option<Option<String>>> {
        let row = sqlx::query("SELECT node_id FROM webrtc_sessions WHERE id = $1")
            .bind(id.0)
            .fetch_optional(self.writer())
            .await?;
        row.map(|r| r.try_get::<Option<String>, _>("node_id"))
            .transpose()
            .map_err(Into::into)
    }

    /// Every session not over that is placed on a node.
    pub async fn placed_sessions(&self) -> StoreResult<Vec<PlacedSession>> {
        let rows = sqlx::query(
            "SELECT id, node_id, statut, code_expires_at FROM webrtc_sessions \
             WHERE statut <> 'ended' AND node_id IS NOT NULL",
        )
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|r| {
                let statut: String = r.try_get("statut")?;
                Ok(PlacedSession {
                    id: SessionId(r.try_get("id")?),
                    node_id: r.try_get("node_id")?,
                    statut: SessionStatus::parse(&statut)?,
                    code_expires_at: r.try_get("code_expires_at")?,
                })
            })
            .collect()
    }

    /// Sessions still waiting for media (initiating) created since `since`, per node: the
    /// load a node is about to take.
    pub async fn pending_sessions_by_node(
        &self,
        since: Millis,
    ) -> StoreResult<std::collections::HashMap<String, u32>> {
        let rows = sqlx::query(
            "SELECT node_id, COUNT(*) AS n FROM webrtc_sessions \
             WHERE statut = 'initiating' AND node_id IS NOT NULL AND created_at >= $1 \
             GROUP BY node_id",
        )
        .bind(since)
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("node_id")?, u32::try_from(n).unwrap_or(u32::MAX)))
            })
            .collect()
    }

    /// Moves a session from the lost node `from` to `to`. False when it is not on `from` any
    /// more (another node moved it first) or is over: exactly one caller wins.
    pub async fn move_session(
        &self,
        id: SessionId,
        from: &str,
        to: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE webrtc_sessions SET node_id = $1, moved_from = $2, moved_at = $3 \
             WHERE id = $4 AND node_id = $5 AND statut <> 'ended'",
        )
        .bind(to.to_string())
        .bind(from.to_string())
        .bind(now)
        .bind(id.0)
        .bind(from.to_string())
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A named server secret, created with `generate` the first time (all nodes share it).
    pub async fn server_secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name.to_string())
        .bind(generate())
        .execute(self.writer())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name.to_string())
                .fetch_one(self.writer())
                .await?,
        )
    }
}
