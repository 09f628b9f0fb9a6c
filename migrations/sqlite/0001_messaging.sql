-- Messaging: conversations, participants, messages, attachments.
-- Timestamps are milliseconds since the Unix epoch.

CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('private', 'group')),
    -- For private conversations: both identities, sorted ("medecin:79|patient:11"); unique.
    private_key TEXT UNIQUE,
    created_by_role TEXT NOT NULL,
    created_by_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE conversation_participants (
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('patient', 'medecin')),
    user_id BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    last_read_message_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, role, user_id)
);

CREATE INDEX participants_by_user ON conversation_participants (role, user_id);

CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_role TEXT NOT NULL,
    uploader_id BIGINT NOT NULL,
    file_name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    storage_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX attachments_by_conversation ON attachments (conversation_id);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sender_role TEXT NOT NULL,
    sender_id BIGINT NOT NULL,
    sender_name TEXT,
    contenu TEXT NOT NULL,
    type_message TEXT NOT NULL CHECK (type_message IN ('texte', 'image', 'file', 'audio')),
    metadata TEXT,
    client_message_id TEXT,
    attachment_id TEXT REFERENCES attachments (id),
    created_at BIGINT NOT NULL
);

CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

-- A retried send with the same client message id finds the first one.
CREATE UNIQUE INDEX messages_idempotency
    ON messages (conversation_id, sender_role, sender_id, client_message_id);
