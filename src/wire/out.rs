//! Every event the server sends clients, as one type: each variant is an event name tied to
//! its payload type, so nothing can emit `webrtc_offer` with the wrong shape.
//!
//! `Outgoing` serializes as its payload alone (what Socket.IO puts after the event name);
//! [`Outgoing::name`] is the event name.

use serde::{Serialize, Serializer};

use super::{
    Answer, AudioOnly, Candidates, ConnectionQuality, MessageReadRelay, MessageView,
    MessagingError, Offer, ParticipantEvent, ParticipantWaiting, RecordingStarted,
    RecordingStopped, SessionEnded, SessionMoved, SessionUser, TurnedAway, TypingRelay, Waiting,
    WebrtcError, outgoing,
};

macro_rules! outgoing_events {
    ($($(#[$doc:meta])* $variant:ident($payload:ty) = $name:path,)*) => {
        /// A server → client event and its payload.
        #[derive(Debug, Clone)]
        pub enum Outgoing {
            $($(#[$doc])* $variant($payload),)*
        }

        impl Outgoing {
            /// The Socket.IO event name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Outgoing::$variant(_) => $name,)*
                }
            }
        }

        impl Serialize for Outgoing {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Outgoing::$variant(p) => p.serialize(s),)*
                }
            }
        }
    };
}

outgoing_events! {
    /// A message was stored in a conversation the socket joined.
    NewMessage(MessageView) = outgoing::NEW_MESSAGE,
    MessageRead(MessageReadRelay) = outgoing::MESSAGE_READ,
    Typing(TypingRelay) = outgoing::TYPING,
    /// A messaging event failed and its client asked for no acknowledgement.
    MessagingError(MessagingError) = outgoing::MESSAGING_ERROR,
    WebrtcOffer(Offer) = outgoing::WEBRTC_OFFER,
    WebrtcAnswer(Answer) = outgoing::WEBRTC_ANSWER,
    WebrtcIceCandidates(Candidates) = outgoing::WEBRTC_ICE_CANDIDATES,
    ParticipantJoined(ParticipantEvent) = outgoing::PARTICIPANT_JOINED,
    ParticipantLeft(ParticipantEvent) = outgoing::PARTICIPANT_LEFT,
    SessionEnded(SessionEnded) = outgoing::SESSION_ENDED,
    SessionMoved(SessionMoved) = outgoing::SESSION_MOVED,
    WebrtcError(WebrtcError) = outgoing::WEBRTC_ERROR,
    RecordingStarted(RecordingStarted) = outgoing::RECORDING_STARTED,
    RecordingStopped(RecordingStopped) = outgoing::RECORDING_STOPPED,
    Waiting(Waiting) = outgoing::WAITING,
    ParticipantWaiting(ParticipantWaiting) = outgoing::PARTICIPANT_WAITING,
    ParticipantWaitingLeft(SessionUser) = outgoing::PARTICIPANT_WAITING_LEFT,
    Admitted(SessionUser) = outgoing::ADMITTED,
    Declined(TurnedAway) = outgoing::DECLINED,
    Removed(TurnedAway) = outgoing::REMOVED,
    AudioOnly(AudioOnly) = outgoing::AUDIO_ONLY,
    ConnectionQuality(ConnectionQuality) = outgoing::CONNECTION_QUALITY,
}

impl Outgoing {
    /// The payload as JSON (for a transport that carries it further, such as the bus between
    /// nodes). Every payload is a plain struct of strings, numbers and lists: this cannot fail
    /// for want of a map key type, and a failure is an `Err` the caller logs.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Identity, Role, SessionId};

    #[test]
    fn an_event_serializes_as_its_payload_under_its_name() {
        let ev = Outgoing::SessionEnded(SessionEnded {
            session_id: SessionId(7),
            reason: "ended_by_doctor",
        });
        assert_eq!(ev.name(), "session_ended");
        assert_eq!(
            ev.to_value().unwrap(),
            serde_json::json!({"sessionId": 7, "reason": "ended_by_doctor"})
        );
        let who = Identity::new(Role::Patient, 11);
        let ev = Outgoing::ParticipantLeft(ParticipantEvent {
            session_id: SessionId(7),
            participant: who.into(),
            reason: Some("left"),
            participants: vec![],
        });
        assert_eq!(ev.name(), "participant_left");
        assert_eq!(ev.to_value().unwrap()["participant"]["userId"], 11);
    }
}
