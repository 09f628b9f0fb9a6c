//! A room's recording: while the session's doctor has it on, every participant who publishes
//! is recorded into a file of their own, and each further stream of theirs (a shared screen)
//! into one more ([`crate::recording::Recordings`]).
//!
//! Invariants:
//! - recording is on from `start` to `stop`, the end of the session or of the room; while on,
//!   each stream a participant publishes (`TrackInfo::stream`) has exactly one recorder, fed by
//!   that stream's tracks (a replaced connection's tracks continue the same file);
//! - a participant who leaves has their files finished; one who comes back gets new ones; a
//!   further stream whose tracks all stopped (the screen share ended) has its file finished;
//! - everyone in the session is told when it starts (and each newcomer on entering) and when
//!   it stops.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::Room;
use crate::clock::{Millis, to_rfc3339};
use crate::codec::Codec;
use crate::error::ErrorCode;
use crate::ids::{Identity, SocketId};
use crate::messaging::{DomainError, DomainResult};
use crate::recording::worker::TrackSpec;
use crate::recording::{ActiveRecording, Closing, Consent};
use crate::sfu::types::{PeerCommand, TrackId, TrackInfo};
use crate::wire::{self as events, Outgoing};

/// Recording as a room keeps it while it is on.
pub(in crate::sfu) struct RoomRecording {
    consent: Consent,
    /// By participant and stream.
    recorders: HashMap<(Identity, String), Recorded>,
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordingStarted {
    pub started_at: Millis,
    pub started_by: Identity,
    /// Recordings opened right away (participants already publishing).
    pub recordings: Vec<String>,
}

fn not_recording() -> DomainError {
    DomainError::conflict(
        ErrorCode::NotRecording,
        "this consultation is not being recorded",
    )
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
                ErrorCode::AlreadyRecording,
                "this consultation is already being recorded",
            ));
        }
        if !self.participants.values().any(|p| p.peer.is_some()) {
            return Err(DomainError::conflict(
                ErrorCode::SessionNotLive,
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
            self.emit_session(Outgoing::RecordingStarted(payload)).await;
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
        self.emit_session(Outgoing::RecordingStopped(payload)).await;
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
    pub(super) fn tell_recording(&self, sid: SocketId) {
        if let Some(payload) = self.recording_started_event() {
            self.emit_to(sid, Outgoing::RecordingStarted(payload));
        }
    }

    /// Records what `who` publishes now (opening a file per stream of theirs if needed). No-op
    /// when recording is off or they publish nothing.
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
        let mut streams: Vec<String> = Vec::new();
        for t in &tracks {
            if !streams.contains(&t.stream) {
                streams.push(t.stream.clone());
            }
        }
        for stream in streams {
            let of_stream: Vec<TrackInfo> = tracks
                .iter()
                .filter(|t| t.stream == stream)
                .cloned()
                .collect();
            self.record_stream(who, &stream, consent, of_stream).await;
        }
    }

    async fn record_stream(
        &mut self,
        who: Identity,
        stream: &str,
        consent: Consent,
        tracks: Vec<TrackInfo>,
    ) {
        let key = (who, stream.to_string());
        let open = self
            .recording
            .as_ref()
            .is_some_and(|r| r.recorders.contains_key(&key));
        if !open {
            let codecs: Vec<Codec> = tracks
                .iter()
                .map(|t| Codec::from_mime(&t.codec.mime_type))
                .collect();
            match self
                .shared
                .recordings
                .start(self.session.id, who, stream, consent, &codecs)
                .await
            {
                Ok(active) => {
                    if let Some(r) = &mut self.recording {
                        r.recorders.insert(
                            key.clone(),
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
            .and_then(|r| r.recorders.get_mut(&key))
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
                source: id.0,
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
                tracing::warn!(track = %id, error = %e, "cannot start recording a track");
            }
            recorded.sources.push((id, weak_publisher));
        }
    }

    /// Tracks that stopped (unpublished, or their connection went away). A further stream of
    /// `who`'s left with no track (the screen share ended) has its file finished.
    pub(super) fn unrecord_tracks(&mut self, who: Identity, tracks: &[TrackId]) {
        let main = format!("{}-{}", who.role, who.id);
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        let mut finished = Vec::new();
        for (key, recorded) in recording.recorders.iter_mut().filter(|(k, _)| k.0 == who) {
            for id in tracks {
                if let Some(i) = recorded.sources.iter().position(|(s, _)| s == id) {
                    recorded.sources.swap_remove(i);
                    recorded.active.remove_track(id.0);
                }
            }
            if recorded.sources.is_empty() && key.1 != main {
                finished.push(key.clone());
            }
        }
        for key in finished {
            if let Some(recorded) = recording.recorders.remove(&key) {
                drop(recorded.stop("stream_ended"));
            }
        }
    }

    /// `who` left: their files are finished (the rows close in the background).
    pub(super) fn stop_recording_participant(&mut self, who: Identity, reason: &'static str) {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        let keys: Vec<(Identity, String)> = recording
            .recorders
            .keys()
            .filter(|k| k.0 == who)
            .cloned()
            .collect();
        for key in keys {
            if let Some(recorded) = recording.recorders.remove(&key) {
                drop(recorded.stop(reason));
            }
        }
    }
}
