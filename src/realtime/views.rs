//! Recordings as clients see them, the same over REST and Socket.IO (the acks of
//! `start_recording` / `stop_recording`, and `GET …/recordings`).

use serde_json::{Value, json};

use super::events::UserRef;
use crate::clock::to_rfc3339;
use crate::store::RecordingRecord;

/// A recording as the API shows it.
pub fn recording_view(r: &RecordingRecord) -> Value {
    json!({
        "id": r.id,
        "sessionId": r.session_id.0,
        "participant": { "role": r.participant.role, "id": r.participant.id.0 },
        // The participant's camera and microphone, or another stream of theirs (a shared
        // screen), as subscribers name it.
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

/// The answer to a recording start (here or on the owner node).
pub fn started_view(
    id: i64,
    started: &crate::sfu::room::recording::RecordingStarted,
) -> serde_json::Value {
    json!({
            "recording": {
                "sessionId": id,
                "active": true,
                "started_at": to_rfc3339(started.started_at),
                "started_by": UserRef::from(started.started_by),
                "consent": {
                    "confirmed_by": UserRef::from(started.started_by),
                    "confirmed_at": to_rfc3339(started.started_at),
                },
                "recordings": started.recordings,
            }
    })
}

/// The answer to a recording stop (here or on the owner node).
pub fn stopped_view(id: i64, closed: &[crate::store::RecordingRecord]) -> serde_json::Value {
    json!({
        "recording": { "sessionId": id, "active": false },
        "recordings": closed.iter().map(recording_view).collect::<Vec<_>>(),
    })
}
