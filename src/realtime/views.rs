//! Recordings as clients see them, the same over REST and Socket.IO (the acks of
//! `start_recording` / `stop_recording`, and `GET …/recordings`).

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::events::UserRef;
use crate::clock::to_rfc3339;
use crate::ids::Role;
use crate::store::{RecordingRecord, RecordingStatus};

/// A recording as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingView {
    /// UUID v4.
    pub id: String,
    #[serde(rename = "sessionId")]
    pub session_id: i64,
    pub participant: RecordedPerson,
    /// The participant's camera and microphone (`medecin-79`), or another stream of theirs
    /// (a shared screen, `medecin-79.2`), as subscribers name it.
    pub stream: String,
    pub consent: ConsentView,
    pub status: RecordingStatus,
    pub started_at: String,
    #[schema(required = true)]
    pub ended_at: Option<String>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    #[schema(required = true)]
    pub size_bytes: Option<i64>,
    pub content_type: String,
    #[schema(required = true)]
    pub end_reason: Option<String>,
    /// Download URL (relative to the API origin); the session's doctor only.
    pub url: String,
}

/// `{role, id}`: whose recording it is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct RecordedPerson {
    pub role: Role,
    pub id: i64,
}

/// Who confirmed the participants' consent, and when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsentView {
    pub confirmed_by: UserRef,
    pub confirmed_at: String,
}

impl From<&RecordingRecord> for RecordingView {
    fn from(r: &RecordingRecord) -> Self {
        Self {
            id: r.id.clone(),
            session_id: r.session_id.0,
            participant: RecordedPerson {
                role: r.participant.role,
                id: r.participant.id.0,
            },
            stream: r
                .stream
                .clone()
                .unwrap_or_else(|| format!("{}-{}", r.participant.role, r.participant.id.0)),
            consent: ConsentView {
                confirmed_by: UserRef::from(r.consent_by),
                confirmed_at: to_rfc3339(r.consent_at),
            },
            status: r.status,
            started_at: to_rfc3339(r.started_at),
            ended_at: r.ended_at.map(to_rfc3339),
            duration_ms: r.duration_ms,
            size_bytes: r.size_bytes,
            content_type: r.content_type.clone(),
            end_reason: r.end_reason.clone(),
            url: format!("/api/messaging/webrtc/recordings/{}", r.id),
        }
    }
}

/// A recording as the API shows it.
pub fn recording_view(r: &RecordingRecord) -> RecordingView {
    r.into()
}

/// The answer to a recording start: `{recording: {…, active: true}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingStartedView {
    pub recording: RecordingOn,
}

/// A recording that just started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingOn {
    #[serde(rename = "sessionId")]
    pub session_id: i64,
    /// Always `true` here.
    pub active: bool,
    pub started_at: String,
    pub started_by: UserRef,
    pub consent: ConsentView,
    /// The recordings opened right away (participants already publishing).
    pub recordings: Vec<String>,
}

impl RecordingStartedView {
    pub fn new(id: i64, started: &crate::sfu::room::recording::RecordingStarted) -> Self {
        let by = UserRef::from(started.started_by);
        let at = to_rfc3339(started.started_at);
        Self {
            recording: RecordingOn {
                session_id: id,
                active: true,
                started_at: at.clone(),
                started_by: by,
                consent: ConsentView {
                    confirmed_by: by,
                    confirmed_at: at,
                },
                recordings: started.recordings.clone(),
            },
        }
    }
}

/// The answer to a recording stop: `{recording: {sessionId, active: false}, recordings}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingStoppedView {
    pub recording: RecordingOff,
    /// The recordings the stop closed.
    pub recordings: Vec<RecordingView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingOff {
    #[serde(rename = "sessionId")]
    pub session_id: i64,
    /// Always `false` here.
    pub active: bool,
}

impl RecordingStoppedView {
    pub fn new(id: i64, closed: &[RecordingRecord]) -> Self {
        Self {
            recording: RecordingOff {
                session_id: id,
                active: false,
            },
            recordings: closed.iter().map(RecordingView::from).collect(),
        }
    }
}

/// [`RecordingStartedView`] as JSON, for the answer another node forwards.
pub fn started_view(id: i64, started: &crate::sfu::room::recording::RecordingStarted) -> Value {
    json!(RecordingStartedView::new(id, started))
}

/// [`RecordingStoppedView`] as JSON, for the answer another node forwards.
pub fn stopped_view(id: i64, closed: &[RecordingRecord]) -> Value {
    json!(RecordingStoppedView::new(id, closed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Identity, SessionId};
    use crate::sfu::room::recording::RecordingStarted;

    fn record(stream: Option<&str>, ended: bool) -> RecordingRecord {
        RecordingRecord {
            id: "3f0c7d1e-0000-4000-8000-000000000001".into(),
            session_id: SessionId(7),
            participant: Identity::new(Role::Patient, 11),
            consent_by: Identity::new(Role::Medecin, 79),
            consent_at: 1_700_000_000_000,
            started_at: 1_700_000_000_500,
            ended_at: ended.then_some(1_700_000_060_500),
            duration_ms: ended.then_some(60_000),
            size_bytes: ended.then_some(123_456),
            content_type: "video/webm".into(),
            file_path: "7/x.webm".into(),
            status: if ended {
                RecordingStatus::Finished
            } else {
                RecordingStatus::Recording
            },
            end_reason: ended.then(|| "stopped".to_string()),
            stream: stream.map(str::to_string),
        }
    }

    /// The `json!` object this view replaced, kept to prove the bytes did not change.
    fn old_recording_view(r: &RecordingRecord) -> Value {
        json!({
            "id": r.id,
            "sessionId": r.session_id.0,
            "participant": { "role": r.participant.role, "id": r.participant.id.0 },
            "stream": r.stream.clone().unwrap_or_else(|| format!("{}-{}", r.participant.role, r.participant.id.0)),
            "consent": {
                "confirmed_by": UserRef::from(r.consent_by),
                "confirmed_at": to_rfc3339(r.consent_at),
            },
            "status": r.status,
            "started_at": to_rfc3339(r.started_at),
            "ended_at": r.ended_at.map(to_rfc3339),
            "duration_ms": r.duration_ms,
            "size_bytes": r.size_bytes,
            "content_type": r.content_type,
            "end_reason": r.end_reason,
            "url": format!("/api/messaging/webrtc/recordings/{}", r.id),
        })
    }

    #[test]
    fn recording_views_write_what_the_json_objects_wrote() {
        for r in [record(None, false), record(Some("patient-11.2"), true)] {
            assert_eq!(json!(recording_view(&r)), old_recording_view(&r));
        }
        let started = RecordingStarted {
            started_at: 1_700_000_000_000,
            started_by: Identity::new(Role::Medecin, 79),
            recordings: vec!["a".into(), "b".into()],
        };
        let by = UserRef::from(started.started_by);
        assert_eq!(
            started_view(7, &started),
            json!({
                "recording": {
                    "sessionId": 7,
                    "active": true,
                    "started_at": to_rfc3339(started.started_at),
                    "started_by": by,
                    "consent": {
                        "confirmed_by": by,
                        "confirmed_at": to_rfc3339(started.started_at),
                    },
                    "recordings": started.recordings,
                }
            })
        );
        let closed = [record(None, true), record(Some("patient-11.2"), true)];
        assert_eq!(
            stopped_view(7, &closed),
            json!({
                "recording": { "sessionId": 7, "active": false },
                "recordings": closed.iter().map(old_recording_view).collect::<Vec<_>>(),
            })
        );
    }
}
