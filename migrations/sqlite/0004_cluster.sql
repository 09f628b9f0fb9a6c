-- Several nodes: which node serves a consultation's media, and moves after a node was lost.

-- The node the session was placed on (its media and signaling owner); NULL on a single node.
ALTER TABLE webrtc_sessions ADD COLUMN node_id TEXT;
-- The last node lost with this session on it, and when the session moved away from it.
ALTER TABLE webrtc_sessions ADD COLUMN moved_from TEXT;
ALTER TABLE webrtc_sessions ADD COLUMN moved_at BIGINT;

CREATE INDEX webrtc_sessions_open_by_node ON webrtc_sessions (node_id) WHERE statut <> 'ended';
