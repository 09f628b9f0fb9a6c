-- A socket that connects asks for the live sessions its person joined and did not leave (a
-- restart lost their media): by person, among the rows still open.
CREATE INDEX webrtc_session_participants_open
    ON webrtc_session_participants (role, user_id)
    WHERE left_at IS NULL;
