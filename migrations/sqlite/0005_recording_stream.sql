-- Which of the participant's streams a recording holds: the stream name subscribers see
-- ("medecin-79" for the camera and microphone, "medecin-79.2" for a second stream such as a
-- shared screen). NULL in rows written before: the participant's main stream.
ALTER TABLE recordings ADD COLUMN stream TEXT;
