//! A room's recording, the IO half: while the session's doctor has it on, every participant
//! who publishes is recorded into a file of their own, and each further stream of theirs (a
//! shared screen) into one more ([`crate::recording::Recordings`]). Which files open and close,
//! and which tracks feed them, is decided in [`super::state`] (its invariants say how); this
//! module carries out its [`RecordingAction`]s: files opened and finished, publishers told to
//! tap their tracks and to stop.
//!
//! Invariants:
//! - a recorder exists here exactly while the state counts its stream as recorded (one that
//!   could not open is given back to the state, [`super::state::RoomState::recording_not_opened`]);
//! - a finished recorder's publishers are told to stop tapping, and its file is finished; a
//!   recorder still open when the room goes is finished by its drop.

use tokio::sync::mpsc;

use super::Room;
use super::state::RecordingAction;
use crate::clock::Millis;
use crate::codec::Codec;
use crate::ids::Identity;
use crate::messaging::DomainResult;
use crate::recording::worker::TrackSpec;
use crate::recording::{ActiveRecording, Closing};
use crate::sfu::types::{PeerCommand, TrackId};

/// One open recording (a participant's stream).
pub(in crate::sfu) struct Recorded {
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

impl Room {
    pub(super) async fn start_recording(
        &mut self,
        by: Identity,
        at: Millis,
    ) -> DomainResult<RecordingStarted> {
        let actions = self.state.start_recording(by, at)?;
        self.run_actions(actions).await;
        tracing::info!(session = %self.session, "recording on");
        Ok(RecordingStarted {
            started_at: at,
            started_by: by,
            recordings: self
                .recorders
                .values()
                .map(|r| r.active.id().to_string())
                .collect(),
        })
    }

    /// Stops recording: every file is finished; the returned closings resolve when their
    /// rows are final.
    pub(super) async fn stop_recording(&mut self) -> DomainResult<Vec<(String, Closing)>> {
        let reason = "stopped_by_doctor";
        let actions = self
            .state
            .stop_recording(reason, self.shared.recordings.now())?;
        let closings = self.execute(actions).await.unwrap_or_default();
        tracing::info!(session = %self.session, reason, "recording off");
        Ok(closings)
    }

    /// Carries out one [`RecordingAction`]; a finished file's closing goes to `closings`.
    pub(super) async fn recording_action(
        &mut self,
        action: RecordingAction,
        closings: &mut Vec<(String, Closing)>,
    ) {
        match action {
            RecordingAction::Open {
                who,
                stream,
                consent,
                codecs,
            } => {
                match self
                    .shared
                    .recordings
                    .start(self.session, who, &stream, consent, &codecs)
                    .await
                {
                    Ok(active) => {
                        let recorded = Recorded {
                            active,
                            sources: Vec::new(),
                        };
                        self.recorders.insert((who, stream), recorded);
                    }
                    Err(e) => {
                        let session = self.session;
                        tracing::error!(%session, error = %e, "cannot start a recording");
                        self.state.recording_not_opened(who, &stream);
                    }
                }
            }
            RecordingAction::AddTrack { who, stream, track } => {
                // None when its file could not open.
                let Some(recorded) = self.recorders.get_mut(&(who, stream)) else {
                    return;
                };
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
            RecordingAction::RemoveTrack { who, stream, track } => {
                if let Some(recorded) = self.recorders.get_mut(&(who, stream))
                    && let Some(i) = recorded.sources.iter().position(|(s, _)| *s == track)
                {
                    recorded.sources.swap_remove(i);
                    recorded.active.remove_track(track.0);
                }
            }
            RecordingAction::Close {
                who,
                stream,
                reason,
            } => {
                if let Some(recorded) = self.recorders.remove(&(who, stream)) {
                    closings.push((recorded.active.id().to_string(), recorded.stop(reason)));
                }
            }
        }
    }
}
