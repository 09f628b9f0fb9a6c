-- Video consultations: sessions with their join code, and who took part.

CREATE TABLE webrtc_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    session_type TEXT NOT NULL CHECK (session_type IN ('audio_video', 'audio_only')),
    statut TEXT NOT NULL CHECK (statut IN ('initiating', 'active', 'ended')),
    created_by_role TEXT NOT NULL,
    created_by_id BIGINT NOT NULL,
    -- HMAC-SHA256 of the join code under the server's join-code key; the code itself is
    -- never stored.
    code_hash TEXT NOT NULL,
    code_expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    end_reason TEXT
);

-- Codes are unique among sessions that are not over.
CREATE UNIQUE INDEX webrtc_sessions_live_code ON webrtc_sessions (code_hash) WHERE statut <> 'ended';
CREATE INDEX webrtc_sessions_by_conversation ON webrtc_sessions (conversation_id);

CREATE TABLE webrtc_session_participants (
    session_id BIGINT NOT NULL REFERENCES webrtc_sessions (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    left_at BIGINT,
    PRIMARY KEY (session_id, role, user_id)
);

-- Server-wide secrets shared by every node (the join-code key).
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
