//! A room's recording: while the session's doctor has it on, every participant who publishes
//! is recorded into a file of their own ([`crate::recording::Recordings`]).
//!
//! Invariants:
//! - recording is on from `start` to `stop`, the end of the session or of the room; while on,
//!   a participant with published tracks has exactly one recorder, fed by every track they
//!   publish (a replaced connection's tracks continue the same file);
//! - a participant who leaves has their file finished; one who comes back gets a new one;
//! - everyone in the session is told when it starts (and each newcomer on entering) and when
//!   it stops.

use std::collections::HashMap;

use socketioxide::socket::Sid;
use tokio::sync::mpsc;

use super::Room;
use crate::clock::{Millis, to_rfc3339};
use crate::ids::Identity;
use crate::messaging::{DomainError, DomainResult};
use crate::realtime::events::{self, outgoing};
use crate::recording::worker::TrackSpec;
use crate::recording::{ActiveRecording, Closing, Consent};
use crate::sfu::codec::Codec;
use crate::sfu::types::{PeerCommand, TrackId, TrackInfo};

/// Recording as a room keeps it while it is on.
pub(in crate::sfu) struct RoomRecording {
    consent: Consent,
    recorders: HashMap<Identity, Recorded>,
}

struct Recorded {
    active: ActiveRecording,
    /// Tracks feeding it now, and their publisher's queue (to take the tap back).
    sources: Vec<(TrackId, mpsc::WeakSender<PeerCommand>)>,
}

impl Recorded {
    /// Publishers stop copying packets; the recorder finishes its file.
    fn stop(self, reason: &'static str) -> Closing {
        for (track, publisher) in &self.sources {
            untap(*track, publisher);
        }
        self.active.stop(reason)
    }
}

fn untap(track: TrackId, publisher: &mpsc::WeakSender<PeerCommand>) {
    if let Some(p) = publisher.upgrade() {
        let _ = p.try_send(PeerCommand::RecordTrack { track, tap: None });
    }
}

/// What a start tells its caller.
#[derive(Debug, Clone)]
pub struct RecordingStarted {
    pub started_at: Millis,
    pub started_by: Identity,
    /// Recordings opened right away (participants already publishing).
    pub recordings: Vec<String>,
}

fn not_recording() -> DomainError {
    DomainError::conflict("not_recording", "this consultation is not being recorded")
}

impl Room {
    pub(super) fn recording_on(&self) -> bool {
        self.recording.is_some()
    }

    pub(super) async fn start_recording(
        &mut self,
        by: Identity,
        at: Millis,
    ) -> DomainResult<RecordingStarted> {
        if self.recording.is_some() {
            return Err(DomainError::conflict(
                "already_recording",
                "this consultation is already being recorded",
            ));
        }
        if !self.participants.values().any(|p| p.peer.is_some()) {
            return Err(DomainError::conflict(
                "session_not_live",
                "nobody is connected to this consultation yet",
            ));
        }
        self.recording = Some(RoomRecording {
            consent: Consent { by, at },
            recorders: HashMap::new(),
        });
        let everyone: Vec<Identity> = self.participants.keys().copied().collect();
        for who in everyone {
            self.record_participant(who).await;
        }
        let payload = self.recording_started_event();
        if let Some(payload) = payload {
            self.emit_session(outgoing::RECORDING_STARTED, &payload)
                .await;
        }
        let recordings = self
            .recording
            .as_ref()
            .map(|r| {
                r.recorders
                    .values()
                    .map(|x| x.active.id().to_string())
                    .collect()
            })
            .unwrap_or_default();
        tracing::info!(session = %self.session.id, "recording on");
        Ok(RecordingStarted {
            started_at: at,
            started_by: by,
            recordings,
        })
    }

    /// Stops recording: every file is finished; the returned closings resolve when their
    /// rows are final.
    pub(super) async fn stop_recording(
        &mut self,
        reason: &'static str,
    ) -> DomainResult<Vec<(String, Closing)>> {
        let Some(recording) = self.recording.take() else {
            return Err(not_recording());
        };
        let closings = recording
            .recorders
            .into_values()
            .map(|r| (r.active.id().to_string(), r.stop(reason)))
            .collect();
        let payload = events::RecordingStopped {
            session_id: self.session.id.0,
            reason,
            stopped_at: to_rfc3339(self.shared.recordings.now()),
        };
        self.emit_session(outgoing::RECORDING_STOPPED, &payload)
            .await;
        tracing::info!(session = %self.session.id, reason, "recording off");
        Ok(closings)
    }

    fn recording_started_event(&self) -> Option<events::RecordingStarted> {
        let r = self.recording.as_ref()?;
        Some(events::RecordingStarted {
            session_id: self.session.id.0,
            started_at: to_rfc3339(r.consent.at),
            started_by: r.consent.by.into(),
            consent: events::RecordingConsent {
                confirmed_by: r.consent.by.into(),
                confirmed_at: to_rfc3339(r.consent.at),
            },
        })
    }

    /// Tells one socket (a newcomer, a reconnection) that the consultation is recorded.
    pub(super) async fn tell_recording(&self, sid: Sid) {
        if let Some(payload) = self.recording_started_event() {
            self.emit_to(sid, outgoing::RECORDING_STARTED, &payload)
                .await;
        }
    }

    /// Records what `who` publishes now (opening their file if needed). No-op when recording
    /// is off or they publish nothing.
    pub(super) async fn record_participant(&mut self, who: Identity) {
        let Some(recording) = &self.recording else {
            return;
        };
        let consent = recording.consent;
        let tracks: Vec<TrackInfo> = self
            .participants
            .get(&who)
            .and_then(|p| p.peer.as_ref())
            .map(|p| p.published.clone())
            .unwrap_or_default();
        if tracks.is_empty() {
            return;
        }
        if !recording.recorders.contains_key(&who) {
            let codecs: Vec<Codec> = tracks
                .iter()
                .map(|t| Codec::from_mime(&t.codec.mime_type))
                .collect();
            match self
                .shared
                .recordings
                .start(self.session.id, who, consent, &codecs)
                .await
            {
                Ok(active) => {
                    if let Some(r) = &mut self.recording {
                        r.recorders.insert(
                            who,
                            Recorded {
                                active,
                                sources: Vec::new(),
                            },
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(session = %self.session.id, error = %e, "cannot start a recording");
                    return;
                }
            }
        }
        let Some(recorded) = self
            .recording
            .as_mut()
            .and_then(|r| r.recorders.get_mut(&who))
        else {
            return;
        };
        for track in tracks {
            if recorded.sources.iter().any(|(s, _)| *s == track.id) {
                continue;
            }
            let weak = track.publisher.downgrade();
            let weak_publisher = weak.clone();
            let id = track.id;
            recorded.active.add_track(TrackSpec {
                source: id,
                codec: Codec::from_mime(&track.codec.mime_type),
                clock_rate: track.codec.clock_rate,
                channels: track.codec.channels,
                request_keyframe: Box::new(move || match weak.upgrade() {
                    Some(publisher) => {
                        let _ = publisher.try_send(PeerCommand::RequestKeyframe { track: id });
                        true
                    }
                    None => false,
                }),
            });
            // After the track is announced: the recorder knows it before its first packet.
            if let Err(e) = track.publisher.try_send(PeerCommand::RecordTrack {
                track: id,
                tap: Some(recorded.active.tap()),
            }) {
                tracing::warn!(track = id, error = %e, "cannot start recording a track");
            }
            recorded.sources.push((id, weak_publisher));
        }
    }

    /// Tracks that stopped (unpublished, or their connection went away).
    pub(super) fn unrecord_tracks(&mut self, who: Identity, tracks: &[TrackId]) {
        let Some(recorded) = self
            .recording
            .as_mut()
            .and_then(|r| r.recorders.get_mut(&who))
        else {
            return;
        };
        for id in tracks {
            if let Some(i) = recorded.sources.iter().position(|(s, _)| s == id) {
                recorded.sources.swap_remove(i);
                recorded.active.remove_track(*id);
            }
        }
    }

    /// `who` left: their file is finished (the row closes in the background).
    pub(super) fn stop_recording_participant(&mut self, who: Identity, reason: &'static str) {
        if let Some(recorded) = self
            .recording
            .as_mut()
            .and_then(|r| r.recorders.remove(&who))
        {
            drop(recorded.stop(reason));
        }
    }
}
