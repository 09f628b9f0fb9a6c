-- Consultation recordings: one row (and one file) per recorded participant and recording run.
-- The file lives at <media_dir>/recordings/<file_path>; file_path is relative
-- ("<session>/<role>-<id>-<recording id>.webm"), so the media directory can move.

CREATE TABLE recordings (
    -- Random, unguessable (UUID v4).
    id TEXT PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES webrtc_sessions (id) ON DELETE CASCADE,
    participant_role TEXT NOT NULL,
    participant_id BIGINT NOT NULL,
    -- Who confirmed the participants' consent (the session's doctor), and when.
    consent_by_role TEXT NOT NULL,
    consent_by_id BIGINT NOT NULL,
    consent_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    duration_ms BIGINT,
    size_bytes BIGINT,
    content_type TEXT NOT NULL,
    file_path TEXT NOT NULL,
    -- recording: being written; finished: closed by the server; interrupted: the process
    -- stopped while writing (repaired at the next start from the file); failed: nothing usable.
    status TEXT NOT NULL CHECK (status IN ('recording', 'finished', 'interrupted', 'failed')),
    end_reason TEXT
);

CREATE INDEX recordings_by_session ON recordings (session_id, started_at);
CREATE INDEX recordings_by_status ON recordings (status);
CREATE INDEX recordings_by_start ON recordings (started_at);
