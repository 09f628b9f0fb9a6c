-- The audit trail: an append-only, hash-chained log of security-relevant acts (who, when, from
-- where, what, on which object). `seq` is given by the server (1, 2, 3, … without gaps) and
-- hashed with the rest: see src/audit/chain.rs. Timestamps are milliseconds since the epoch.
-- Appends from every node are serialized by a transaction-scoped advisory lock.

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    -- The person who acted; both NULL for the server itself (retention).
    actor_role TEXT,
    actor_id BIGINT,
    -- The client address (behind trusted proxies).
    ip TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT,
    -- The session or conversation the target belongs to, for filtering.
    session_id BIGINT,
    conversation_id BIGINT,
    -- A small JSON object, stored as text (not jsonb): the hash covers these exact bytes.
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE INDEX audit_log_by_action ON audit_log (action, seq);
CREATE INDEX audit_log_by_actor ON audit_log (actor_role, actor_id, seq);
CREATE INDEX audit_log_by_session ON audit_log (session_id, seq);
CREATE INDEX audit_log_by_conversation ON audit_log (conversation_id, seq);
CREATE INDEX audit_log_by_target ON audit_log (target_kind, target_id, seq);
CREATE INDEX audit_log_by_time ON audit_log (at);

-- Append-only: relais never changes or deletes a record. Someone with write access to the
-- database can drop this trigger; the hash chain (`relais audit verify`) still shows it.
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Retention (messaging.retention_days) looks for old messages and attachments by time.
CREATE INDEX messages_by_time ON messages (created_at);
CREATE INDEX attachments_by_time ON attachments (created_at);
