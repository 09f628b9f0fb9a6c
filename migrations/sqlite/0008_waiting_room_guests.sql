-- Waiting room (issue 21): whether newcomers wait for the doctor's admission. Sessions made
-- before this migration keep their old behaviour (0); new ones are created with the setting.
ALTER TABLE webrtc_sessions ADD COLUMN waiting_room INTEGER NOT NULL DEFAULT 0;

-- Guest links: a third participant (interpreter, family member) invited into one session.
-- The code is stored only as an HMAC under the join-code key, and is exchanged once
-- (`used_at`) for a guest token valid until `expires_at`.
CREATE TABLE webrtc_guests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id BIGINT NOT NULL REFERENCES webrtc_sessions (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    created_by_role TEXT NOT NULL,
    created_by_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX webrtc_guests_by_session ON webrtc_guests (session_id);

-- People the doctor declined or removed: refused for the rest of the session, on every node.
CREATE TABLE webrtc_session_refusals (
    session_id BIGINT NOT NULL REFERENCES webrtc_sessions (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('declined', 'removed')),
    at BIGINT NOT NULL,
    PRIMARY KEY (session_id, role, user_id)
);
