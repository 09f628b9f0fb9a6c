//! TEMPORARY stand-in for `crate::wire::Outgoing` (the lead's typed events, not on main yet):
//! the same variant names, so that switching is an import. Removed at the merge.

use serde::Serialize;

use crate::wire::{
    Answer, Candidates, Offer, ParticipantEvent, RecordingStarted, RecordingStopped, SessionEnded,
    WebrtcError, outgoing,
};

#[derive(Debug, Clone)]
pub enum Outgoing {
    WebrtcOffer(Offer),
    WebrtcAnswer(Answer),
    WebrtcIceCandidates(Candidates),
    ParticipantJoined(ParticipantEvent),
    ParticipantLeft(ParticipantEvent),
    SessionEnded(SessionEnded),
    WebrtcError(WebrtcError),
    RecordingStarted(RecordingStarted),
    RecordingStopped(RecordingStopped),
}

impl Outgoing {
    pub fn name(&self) -> &'static str {
        match self {
            Outgoing::WebrtcOffer(_) => outgoing::WEBRTC_OFFER,
            Outgoing::WebrtcAnswer(_) => outgoing::WEBRTC_ANSWER,
            Outgoing::WebrtcIceCandidates(_) => outgoing::WEBRTC_ICE_CANDIDATES,
            Outgoing::ParticipantJoined(_) => outgoing::PARTICIPANT_JOINED,
            Outgoing::ParticipantLeft(_) => outgoing::PARTICIPANT_LEFT,
            Outgoing::SessionEnded(_) => outgoing::SESSION_ENDED,
            Outgoing::WebrtcError(_) => outgoing::WEBRTC_ERROR,
            Outgoing::RecordingStarted(_) => outgoing::RECORDING_STARTED,
            Outgoing::RecordingStopped(_) => outgoing::RECORDING_STOPPED,
        }
    }

    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        fn v<T: Serialize>(p: &T) -> Result<serde_json::Value, serde_json::Error> {
            serde_json::to_value(p)
        }
        match self {
            Outgoing::WebrtcOffer(p) => v(p),
            Outgoing::WebrtcAnswer(p) => v(p),
            Outgoing::WebrtcIceCandidates(p) => v(p),
            Outgoing::ParticipantJoined(p) | Outgoing::ParticipantLeft(p) => v(p),
            Outgoing::SessionEnded(p) => v(p),
            Outgoing::WebrtcError(p) => v(p),
            Outgoing::RecordingStarted(p) => v(p),
            Outgoing::RecordingStopped(p) => v(p),
        }
    }
}
