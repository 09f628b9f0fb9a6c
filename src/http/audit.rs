//! `GET /api/messaging/audit` (administrators, `auth.admins`): the audit trail, newest first,
//! with filters and a cursor. Reading it is itself recorded (`admin_call`), before the answer
//! leaves: when that record cannot be written the read is refused.

use std::str::FromStr;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::envelope::{Success, ok};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiQuery, Caller, ClientIp};
use crate::audit::{Action, Entry, TARGET_KINDS, Target};
use crate::clock::{parse_rfc3339, to_rfc3339};
use crate::error::ErrorCode;
use crate::ids::Role;
use crate::messaging::DomainError;
use crate::state::AppState;
use crate::store::{AuditQuery, AuditRow};

/// Default page size.
const DEFAULT_LIMIT: i64 = 50;
/// Largest page.
const MAX_LIMIT: i64 = 500;
/// Longest `target_id` asked for.
const MAX_TARGET_ID: usize = 128;
/// This endpoint, as the audit trail names it.
const ROUTE: &str = "GET /api/messaging/audit";

/// Filters (every one given narrows; an empty value is the same as none) and the cursor.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// An action name: `session_created`, `code_refused`, `recording_downloaded`, …
    pub action: Option<String>,
    /// `medecin`, `patient`, …, or `system` for what the server did by itself (retention).
    pub actor_role: Option<String>,
    /// The actor's id (with or without `actor_role`).
    #[param(value_type = Option<i64>)]
    pub actor_id: Option<String>,
    /// Records about this session: the session, its participants, guests and recordings.
    #[param(value_type = Option<i64>)]
    pub session_id: Option<String>,
    /// Records about this conversation and its attachments and messages.
    #[param(value_type = Option<i64>)]
    pub conversation_id: Option<String>,
    /// `session`, `sessions`, `participant`, `guest`, `recording`, `conversation`,
    /// `attachment`, `message`, `messages` or `api`.
    pub target_kind: Option<String>,
    /// The target's id as shown in `target.id` (`5`, `medecin:1`, a recording's UUID).
    pub target_id: Option<String>,
    /// Records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Records at or before this time (RFC 3339).
    pub until: Option<String>,
    /// Records older than this sequence number: `next_before` of the previous page.
    #[param(value_type = Option<i64>)]
    pub before: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// Who acted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditActorView {
    pub role: String,
    pub id: i64,
}

/// What an act was about.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditTargetView {
    /// `session`, `participant`, `recording`, `attachment`, `api`, …
    pub kind: String,
    /// Its id (text: recordings and attachments have UUIDs, participants `role:id`).
    pub id: Option<String>,
    /// The session it belongs to, when it belongs to one.
    pub session_id: Option<i64>,
    /// The conversation it belongs to, when it belongs to one.
    pub conversation_id: Option<i64>,
}

/// One record of the trail, with the hashes that chain it to the one before.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecordView {
    /// Sequence number: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `null` for the server itself.
    pub actor: Option<AuditActorView>,
    /// The client's address.
    pub ip: Option<String>,
    pub action: String,
    pub target: AuditTargetView,
    /// Counts, ids, reasons, outcomes: never content, tokens or codes.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The hash of the record before (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 of this record's fields and `prev_hash` (`relais audit verify` recomputes it).
    pub hash: String,
}

/// `{records, next_before}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditPageData {
    /// Newest first.
    pub records: Vec<AuditRecordView>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<i64>,
}

impl From<&AuditRow> for AuditRecordView {
    fn from(r: &AuditRow) -> Self {
        Self {
            seq: r.seq,
            at: to_rfc3339(r.at),
            actor: match (&r.actor_role, r.actor_id) {
                (Some(role), Some(id)) => Some(AuditActorView {
                    role: role.clone(),
                    id,
                }),
                _ => None,
            },
            ip: r.ip.clone(),
            action: r.action.clone(),
            target: AuditTargetView {
                kind: r.target_kind.clone(),
                id: r.target_id.clone(),
                session_id: r.session_id,
                conversation_id: r.conversation_id,
            },
            detail: serde_json::from_str(&r.detail)
                .unwrap_or_else(|_| serde_json::Value::String(r.detail.clone())),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

fn bad(message: String) -> DomainError {
    DomainError::bad_request(ErrorCode::InvalidQuery, message)
}

/// A non-empty value, trimmed.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn positive(name: &str, v: &Option<String>) -> Result<Option<i64>, DomainError> {
    given(v)
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("{name} must be a positive whole number, not `{s}`")))
        })
        .transpose()
}

fn time(name: &str, v: &Option<String>) -> Result<Option<i64>, DomainError> {
    given(v)
        .map(|s| {
            parse_rfc3339(s).ok_or_else(|| {
                bad(format!(
                    "{name} must be an RFC 3339 time like 2026-01-15T10:30:00Z, not `{s}`"
                ))
            })
        })
        .transpose()
}

/// The store's query for these parameters, or a 400 naming the parameter at fault.
pub fn parse_params(p: &AuditParams) -> Result<AuditQuery, DomainError> {
    let action = given(&p.action)
        .map(|s| {
            Action::parse(s).ok_or_else(|| {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                bad(format!(
                    "action `{s}` is unknown; one of: {}",
                    names.join(", ")
                ))
            })
        })
        .transpose()?;
    let actor_role = given(&p.actor_role)
        .map(|s| {
            if s == "system" {
                return Ok(None);
            }
            Role::from_str(s)
                .map(|r| Some(r.as_str().to_string()))
                .map_err(|_| {
                    bad(format!(
                        "actor_role `{s}` is unknown; a role (medecin, patient, …) or system"
                    ))
                })
        })
        .transpose()?;
    let actor_id = positive("actor_id", &p.actor_id)?;
    if actor_role == Some(None) && actor_id.is_some() {
        return Err(bad(
            "actor_id cannot go with actor_role=system (the server has no id)".into(),
        ));
    }
    let target_kind = given(&p.target_kind)
        .map(|s| {
            TARGET_KINDS
                .iter()
                .find(|k| **k == s)
                .map(|k| k.to_string())
                .ok_or_else(|| {
                    bad(format!(
                        "target_kind `{s}` is unknown; one of: {}",
                        TARGET_KINDS.join(", ")
                    ))
                })
        })
        .transpose()?;
    let target_id = given(&p.target_id)
        .map(|s| {
            if s.chars().count() > MAX_TARGET_ID {
                Err(bad(format!(
                    "target_id is longer than {MAX_TARGET_ID} characters"
                )))
            } else {
                Ok(s.to_string())
            }
        })
        .transpose()?;
    let since = time("since", &p.since)?;
    let until = time("until", &p.until)?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(bad("since is after until".into()));
    }
    let limit = positive("limit", &p.limit)?.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(bad(format!(
            "limit must be between 1 and {MAX_LIMIT}, not {limit}"
        )));
    }
    Ok(AuditQuery {
        action: action.map(|a| a.as_str().to_string()),
        actor_role,
        actor_id,
        session_id: positive("session_id", &p.session_id)?,
        conversation_id: positive("conversation_id", &p.conversation_id)?,
        target_kind,
        target_id,
        since,
        until,
        before: positive("before", &p.before)?,
        limit,
    })
}

/// The audit trail, newest first (administrators only). Filters narrow; `before` (the
/// previous page's `next_before`) pages back. This read is recorded too.
#[utoipa::path(get, path = "/api/messaging/audit", tag = "operations",
    params(AuditParams),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "`records`, newest first, and `next_before`", body = Success<AuditPageData>),
              (status = 400, description = "a filter value is not valid (the message names it)", body = ErrorBody),
              (status = 403, description = "not an administrator (auth.admins)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> ApiResult<Success<AuditPageData>> {
    if !state.config.is_admin(caller.identity) {
        return Err(DomainError::forbidden(
            ErrorCode::AdminOnly,
            "only administrators (auth.admins) may read the audit trail",
        )
        .into());
    }
    let mut query = parse_params(&params)?;
    let limit = query.limit;
    query.limit = limit + 1;
    let mut rows = state.audit.page(&query).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_before = if more {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    let filters: serde_json::Map<String, serde_json::Value> = [
        ("action", &params.action),
        ("actor_role", &params.actor_role),
        ("actor_id", &params.actor_id),
        ("session_id", &params.session_id),
        ("conversation_id", &params.conversation_id),
        ("target_kind", &params.target_kind),
        ("target_id", &params.target_id),
        ("since", &params.since),
        ("until", &params.until),
        ("before", &params.before),
    ]
    .into_iter()
    .filter_map(|(k, v)| given(v).map(|v| (k.to_string(), v.into())))
    .collect();
    let entry = Entry::new(Action::AdminCall, Target::Api(ROUTE))
        .by(caller.identity)
        .ip(ip)
        .detail(serde_json::json!({ "filters": filters, "records": rows.len() }));
    state.audit.record(entry).await?;
    Ok(ok(AuditPageData {
        records: rows.iter().map(AuditRecordView::from).collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> AuditParams {
        let mut p = AuditParams::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "action" => p.action = v,
                "actor_role" => p.actor_role = v,
                "actor_id" => p.actor_id = v,
                "session_id" => p.session_id = v,
                "conversation_id" => p.conversation_id = v,
                "target_kind" => p.target_kind = v,
                "target_id" => p.target_id = v,
                "since" => p.since = v,
                "until" => p.until = v,
                "before" => p.before = v,
                "limit" => p.limit = v,
                other => panic!("unknown parameter {other}"),
            }
        }
        p
    }

    #[test]
    fn parameters_parse() {
        let q = parse_params(&params(&[])).unwrap();
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert!(q.action.is_none() && q.actor_role.is_none() && q.before.is_none());
        let q = parse_params(&params(&[
            ("action", "code_refused"),
            ("actor_role", "patient"),
            ("actor_id", "11"),
            ("session_id", "5"),
            ("target_kind", "session"),
            ("target_id", "5"),
            ("since", "2026-01-01T00:00:00Z"),
            ("until", "2026-01-02T00:00:00Z"),
            ("before", "40"),
            ("limit", "500"),
        ]))
        .unwrap();
        assert_eq!(q.action.as_deref(), Some("code_refused"));
        assert_eq!(q.actor_role, Some(Some("patient".into())));
        assert_eq!(
            (q.actor_id, q.session_id, q.before),
            (Some(11), Some(5), Some(40))
        );
        assert_eq!(q.since, Some(1_767_225_600_000));
        assert_eq!(q.until, Some(1_767_312_000_000));
        assert_eq!(q.limit, 500);
        let q = parse_params(&params(&[("actor_role", "system"), ("action", "")])).unwrap();
        assert_eq!(q.actor_role, Some(None));
        assert_eq!(q.action, None, "empty is absent");
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (pairs, word) in [
            (vec![("action", "opened")], "action"),
            (vec![("actor_role", "admin")], "actor_role"),
            (vec![("actor_id", "x")], "actor_id"),
            (vec![("actor_id", "-1")], "actor_id"),
            (
                vec![("actor_role", "system"), ("actor_id", "1")],
                "actor_id",
            ),
            (vec![("session_id", "0")], "session_id"),
            (vec![("target_kind", "file")], "target_kind"),
            (vec![("since", "yesterday")], "since"),
            (vec![("until", "1700000000")], "until"),
            (
                vec![
                    ("since", "2026-01-02T00:00:00Z"),
                    ("until", "2026-01-01T00:00:00Z"),
                ],
                "since",
            ),
            (vec![("before", "1.5")], "before"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "501")], "limit"),
        ] {
            let e = parse_params(&params(&pairs)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{pairs:?}");
            assert!(e.message.contains(word), "{pairs:?}: {}", e.message);
        }
        let long = "x".repeat(MAX_TARGET_ID + 1);
        let e = parse_params(&params(&[("target_id", &long)])).unwrap_err();
        assert!(e.message.contains("target_id"), "{}", e.message);
    }
}
