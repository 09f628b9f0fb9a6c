//! The pre-call check: a short-lived server PeerConnection that sends back to the client what
//! the client sends it (a loopback), on the same media sockets as every consultation.
//!
//! What it proves, and how the web client reads it (`web/src/services/precall.ts`):
//! - that the client reaches the media port over the transport it kept in our answer (the
//!   client removes the other transport's candidates, so UDP and ICE-TCP are tried one at a
//!   time) or through a TURN relay: the connection comes up or it does not;
//! - the round-trip time: the client's ICE consent checks, answered by this peer
//!   (`currentRoundTripTime` of the selected candidate pair);
//! - an upload estimate: what this peer received, [`Sfu::check_stats`] (`inbound` tracks);
//! - a download estimate: the echoed streams as the client receives them (bounded by the
//!   upload: the echo carries no more than what arrived).
//!
//! Signaling is two REST calls: the client offers (its camera and microphone, `sendrecv`) and
//! gets our answer *and* our next offer, which adds the echo of each of its tracks on the
//! m-line it publishes on; it answers that offer, and its media comes back.
//!
//! Invariants:
//! - a check lives at most [`CHECK_DURATION`] and ends as soon as its client's ICE or DTLS
//!   fails, or the client closes it; its peer is closed and its registry entry removed when
//!   its task ends, whatever the reason (the [`Reservation`] guard), so nothing stays behind;
//! - at most [`MAX_PER_PERSON`] checks at once per person, [`MAX_PER_ADDRESS`] per address,
//!   [`MAX_TOTAL`] in the process, and [`MAX_STARTS_PER_WINDOW`] starts per person per
//!   [`START_WINDOW`]: beyond, `too_many_checks` (429);
//! - a check's peer is reachable only through its check, by the person who started it; it
//!   joins no room and forwards to no one else.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::Sfu;
use super::peer::stats::TrackStatsView;
use super::peer::{self, PeerContext, PeerHandle};
use super::types::{LocalAnswer, PeerCommand, PeerEvent, SubscriberLink};
use crate::error::{ErrorCode, SignalError};
use crate::ids::Identity;
use crate::messaging::{DomainError, DomainResult, ErrorKind};

/// How long a check's PeerConnection lives at most.
pub const CHECK_DURATION: Duration = Duration::from_secs(20);
/// Checks one person may run at once (the page runs one transport after the other).
pub const MAX_PER_PERSON: usize = 2;
/// Checks one address may run at once (a clinic behind one NAT address).
pub const MAX_PER_ADDRESS: usize = 8;
/// Checks running at once in the process.
pub const MAX_TOTAL: usize = 64;
/// Checks one person may start per [`START_WINDOW`].
pub const MAX_STARTS_PER_WINDOW: usize = 20;
pub const START_WINDOW: Duration = Duration::from_secs(600);
/// Most tracks a check echoes (a camera and a microphone).
const MAX_TRACKS: usize = 2;
/// How long the peer may take to answer, and to make the offer that adds the echo.
const PEER_WAIT: Duration = Duration::from_secs(5);

/// A check's number, unique in the process.
pub type CheckId = u64;

/// What starting a check gives the client.
#[derive(Debug, Clone)]
pub struct CheckStarted {
    pub id: CheckId,
    /// Our answer to the client's offer.
    pub answer: String,
    /// Our offer adding the echo of the client's tracks: the client answers it.
    pub offer: String,
    pub expires_in: Duration,
}

/// What the server saw of a check (the client's upload is the `inbound` tracks).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStats {
    pub check_id: CheckId,
    /// DTLS is up: media flows.
    pub connected: bool,
    /// `udp` or `tcp` (ICE-TCP), how media reaches this peer (a TURN relay is `udp`: it is
    /// in between); null before ICE selected a path.
    #[schema(value_type = Option<String>)]
    pub transport: Option<&'static str>,
    /// The server port media arrives on.
    pub server_port: Option<u16>,
    /// `inbound`: what the client sent and the server received (its upload); `outbound`:
    /// the echo the server sent back.
    pub tracks: Vec<TrackStatsView>,
    /// Seconds before the check closes by itself.
    pub remaining_seconds: u64,
}

enum CheckCommand {
    Answer {
        sdp: String,
        reply: oneshot::Sender<Result<(), SignalError>>,
    },
    Stats {
        reply: oneshot::Sender<CheckStats>,
    },
    Close,
}

struct Entry {
    who: Identity,
    ip: Option<IpAddr>,
    tx: mpsc::Sender<CheckCommand>,
}

#[derive(Default)]
struct Registry {
    next: CheckId,
    live: HashMap<CheckId, Entry>,
    /// When each person last started checks, within [`START_WINDOW`].
    starts: HashMap<Identity, VecDeque<Instant>>,
}

/// The checks running on this node.
#[derive(Default)]
pub struct Checks {
    inner: Arc<Mutex<Registry>>,
}

/// A check's place in the registry, given back when its task ends (or when it never started).
struct Reservation {
    id: CheckId,
    registry: Arc<Mutex<Registry>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
    }
}

fn too_many(message: &str) -> DomainError {
    DomainError::new(
        ErrorKind::TooManyRequests,
        ErrorCode::TooManyChecks,
        message,
    )
}

fn not_found() -> DomainError {
    DomainError::not_found(
        ErrorCode::CheckNotFound,
        "no such check (it may have ended: a check lasts 20 seconds)",
    )
}

impl Checks {
    /// Checks running now.
    pub fn live(&self) -> usize {
        self.inner.lock().live.len()
    }

    fn reserve(
        &self,
        who: Identity,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> DomainResult<(Reservation, mpsc::Receiver<CheckCommand>)> {
        let mut r = self.inner.lock();
        if r.live.len() >= MAX_TOTAL {
            return Err(too_many(
                "the server runs too many checks now: retry in a minute",
            ));
        }
        if r.live.values().filter(|e| e.who == who).count() >= MAX_PER_PERSON {
            return Err(too_many(
                "you already run the most checks at once: close one or wait 20 seconds",
            ));
        }
        if ip.is_some() && r.live.values().filter(|e| e.ip == ip).count() >= MAX_PER_ADDRESS {
            return Err(too_many(
                "too many checks from your address at once: retry in a minute",
            ));
        }
        r.starts
            .retain(|_, t| t.back().is_some_and(|last| now - *last < START_WINDOW));
        let starts = r.starts.entry(who).or_default();
        while starts.front().is_some_and(|t| now - *t >= START_WINDOW) {
            starts.pop_front();
        }
        if starts.len() >= MAX_STARTS_PER_WINDOW {
            return Err(too_many(
                "you started too many checks in the last ten minutes: retry later",
            ));
        }
        starts.push_back(now);
        r.next += 1;
        let id = r.next;
        let (tx, rx) = mpsc::channel(8);
        r.live.insert(id, Entry { who, ip, tx });
        Ok((
            Reservation {
                id,
                registry: self.inner.clone(),
            },
            rx,
        ))
    }

    fn sender(&self, who: Identity, id: CheckId) -> DomainResult<mpsc::Sender<CheckCommand>> {
        let r = self.inner.lock();
        match r.live.get(&id) {
            // Someone else's check is not theirs to know of.
            Some(e) if e.who == who => Ok(e.tx.clone()),
            _ => Err(not_found()),
        }
    }
}

/// An error of the peer about the client's offer or answer: the client's to fix (400), except
/// when the server itself failed.
fn offer_error(e: SignalError) -> DomainError {
    let kind = match e.code {
        ErrorCode::InternalError => ErrorKind::Internal,
        ErrorCode::Timeout | ErrorCode::PeerGone => ErrorKind::Conflict,
        _ => ErrorKind::BadRequest,
    };
    DomainError::new(kind, e.code, e.message)
}

async fn reply_of<T>(rx: oneshot::Receiver<T>) -> Option<T> {
    tokio::time::timeout(PEER_WAIT, rx).await.ok()?.ok()
}

impl Sfu {
    /// The checks running here.
    pub fn checks(&self) -> &Checks {
        &self.shared.checks
    }

    /// Starts a check for `who` with the client's offer: our answer and our offer adding the
    /// echo. Bad SDP, or an offer that sends no media, is refused (400); past the limits, 429.
    pub async fn start_check(
        &self,
        who: Identity,
        ip: Option<IpAddr>,
        offer: String,
    ) -> DomainResult<CheckStarted> {
        // Cheap refusals first: no peer is built for text that is not an SDP offer.
        super::sdp::check(&offer).map_err(|p| offer_error(SignalError::bad_sdp(p.message())))?;
        let (reservation, commands) = self.shared.checks.reserve(who, ip, Instant::now())?;
        let id = reservation.id;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let ctx = PeerContext {
            id: self.shared.next_peer_id(),
            owner: who,
            allow_video: true,
            max_tracks: MAX_TRACKS,
            plane: self.shared.plane.clone(),
            factory: self.shared.factory.clone(),
            metrics: self.shared.metrics.clone(),
            events: events_tx,
            next_track_id: self.shared.next_track_id.clone(),
            echo: true,
        };
        let handle = peer::spawn(ctx, Instant::now()).map_err(DomainError::internal)?;
        // From here on, any early return closes the peer (and the reservation goes with it).
        let close = |handle: &PeerHandle| {
            let _ = handle.commands.try_send(PeerCommand::Close);
        };
        let (tx, rx) = oneshot::channel();
        let _ = handle
            .commands
            .send(PeerCommand::RemoteOffer {
                sdp: offer,
                reply: tx,
            })
            .await;
        let answer: LocalAnswer = match reply_of(rx).await {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                close(&handle);
                return Err(offer_error(e));
            }
            None => {
                close(&handle);
                return Err(offer_error(SignalError::new(
                    ErrorCode::Timeout,
                    "the media server did not answer in time",
                )));
            }
        };
        // The tracks the offer publishes were announced before the answer was sent back.
        let mut published = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if let PeerEvent::Published { tracks, .. } = ev {
                published.extend(tracks);
            }
        }
        if published.is_empty() {
            close(&handle);
            return Err(DomainError::bad_request(
                ErrorCode::BadSdp,
                "the offer sends no audio or video: the check echoes what you send",
            ));
        }
        for track in published {
            let id = track.id;
            let _ = handle.commands.try_send(PeerCommand::Subscribe(track));
            let _ = handle.commands.try_send(PeerCommand::AddSubscriber {
                track: id,
                link: SubscriberLink {
                    peer: handle.id,
                    outbound: handle.outbound.clone(),
                },
            });
        }
        let offer = tokio::time::timeout(PEER_WAIT, async {
            while let Some(ev) = events.recv().await {
                match ev {
                    PeerEvent::Offer { sdp, .. } => return Some(sdp),
                    PeerEvent::Failed { .. } | PeerEvent::Closed { .. } => return None,
                    _ => {}
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(offer) = offer else {
            close(&handle);
            return Err(DomainError::internal(anyhow::anyhow!(
                "check {id}: no echo offer"
            )));
        };
        let deadline = Instant::now() + CHECK_DURATION;
        tokio::spawn(run(id, handle, events, commands, deadline, reservation));
        Ok(CheckStarted {
            id,
            answer: answer.sdp,
            offer,
            expires_in: CHECK_DURATION,
        })
    }

    /// The client's answer to our echo offer.
    pub async fn check_answer(&self, who: Identity, id: CheckId, sdp: String) -> DomainResult<()> {
        let tx = self.shared.checks.sender(who, id)?;
        super::sdp::check(&sdp).map_err(|p| offer_error(SignalError::bad_sdp(p.message())))?;
        let (reply, rx) = oneshot::channel();
        tx.send(CheckCommand::Answer { sdp, reply })
            .await
            .map_err(|_| not_found())?;
        match reply_of(rx).await {
            Some(r) => r.map_err(offer_error),
            None => Err(not_found()),
        }
    }

    /// What the server saw of the check so far.
    pub async fn check_stats(&self, who: Identity, id: CheckId) -> DomainResult<CheckStats> {
        let tx = self.shared.checks.sender(who, id)?;
        let (reply, rx) = oneshot::channel();
        tx.send(CheckCommand::Stats { reply })
            .await
            .map_err(|_| not_found())?;
        reply_of(rx).await.ok_or_else(not_found)
    }

    /// Ends the check now.
    pub async fn close_check(&self, who: Identity, id: CheckId) -> DomainResult<()> {
        let tx = self.shared.checks.sender(who, id)?;
        tx.send(CheckCommand::Close).await.map_err(|_| not_found())
    }
}

/// A check's task: relays the client's answer and statistics requests to the peer, and closes
/// it at the deadline, when it fails, or when asked.
async fn run(
    id: CheckId,
    handle: PeerHandle,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
    mut commands: mpsc::Receiver<CheckCommand>,
    deadline: Instant,
    reservation: Reservation,
) {
    let mut connected = false;
    let why = loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(CheckCommand::Answer { sdp, reply }) => {
                    let (tx, rx) = oneshot::channel();
                    let _ = handle.commands.send(PeerCommand::RemoteAnswer { sdp, reply: tx }).await;
                    let r = reply_of(rx).await.unwrap_or_else(|| {
                        Err(SignalError::new(ErrorCode::PeerGone, "the check's connection closed"))
                    });
                    let _ = reply.send(r);
                }
                Some(CheckCommand::Stats { reply }) => {
                    let (tx, rx) = oneshot::channel();
                    let _ = handle.commands.send(PeerCommand::Stats { reply: tx }).await;
                    let (path, tracks) = reply_of(rx).await.unwrap_or_default();
                    let _ = reply.send(CheckStats {
                        check_id: id,
                        connected,
                        transport: path.map(|p| p.transport),
                        server_port: path.and_then(|p| p.server_port),
                        tracks,
                        remaining_seconds: deadline
                            .saturating_duration_since(Instant::now())
                            .as_secs(),
                    });
                }
                Some(CheckCommand::Close) | None => break "closed",
            },
            ev = events.recv() => match ev {
                Some(PeerEvent::Connected { .. }) => connected = true,
                Some(PeerEvent::Failed { .. }) => break "failed",
                Some(PeerEvent::Closed { .. }) | None => break "peer closed",
                // Nothing else is asked of the client: a later offer of ours stays unanswered.
                Some(_) => {}
            },
            _ = tokio::time::sleep_until(deadline.into()) => break "expired",
        }
    };
    tracing::debug!(check = id, why, "pre-call check over");
    let _ = handle.commands.try_send(PeerCommand::Close);
    // The peer's task stops when its events have no reader, even if the Close was lost.
    drop(events);
    drop(reservation);
}

/// The server's media ports as the check needs them (from its own configuration): the UDP
/// port and the ICE-TCP ports (its listener's, and the shared HTTPS port's when it carries
/// ICE-TCP) its host candidates advertise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaPorts {
    pub udp: Vec<u16>,
    pub tcp: Vec<u16>,
}

impl Sfu {
    pub fn media_ports(&self) -> MediaPorts {
        let ports = |addrs: &[std::net::SocketAddr]| {
            let mut p: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        MediaPorts {
            udp: ports(self.shared.factory.candidates()),
            tcp: ports(self.shared.factory.tcp_candidates()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ids::Role;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn two_at_once_per_person_and_a_place_comes_back_when_one_ends() {
        let checks = Checks::default();
        let t0 = Instant::now();
        let alice = Identity::new(Role::Patient, 1);
        let a = checks.reserve(alice, ip(1), t0).unwrap();
        let b = checks.reserve(alice, ip(1), t0).unwrap();
        let e = checks.reserve(alice, ip(1), t0).err().unwrap();
        assert_eq!(e.code, ErrorCode::TooManyChecks);
        assert_eq!(e.kind, ErrorKind::TooManyRequests);
        // Someone else, from the same address, may.
        let c = checks
            .reserve(Identity::new(Role::Medecin, 1), ip(1), t0)
            .unwrap();
        assert_eq!(checks.live(), 3);
        drop(a);
        assert_eq!(checks.live(), 2);
        let d = checks.reserve(alice, ip(1), t0).unwrap();
        assert_ne!(d.0.id, b.0.id);
        drop((b, c, d));
        assert_eq!(checks.live(), 0);
    }

    #[test]
    fn one_address_runs_at_most_eight() {
        let checks = Checks::default();
        let t0 = Instant::now();
        let held: Vec<_> = (0..MAX_PER_ADDRESS as i64)
            .map(|n| {
                checks
                    .reserve(Identity::new(Role::Patient, n), ip(7), t0)
                    .unwrap()
            })
            .collect();
        let e = checks
            .reserve(Identity::new(Role::Patient, 99), ip(7), t0)
            .err()
            .unwrap();
        assert_eq!(e.code, ErrorCode::TooManyChecks);
        assert!(
            checks
                .reserve(Identity::new(Role::Patient, 99), ip(8), t0)
                .is_ok()
        );
        drop(held);
    }

    #[test]
    fn twenty_starts_per_person_per_ten_minutes() {
        let checks = Checks::default();
        let t0 = Instant::now();
        let bob = Identity::new(Role::Patient, 2);
        for i in 0..MAX_STARTS_PER_WINDOW as u64 {
            // Each closed at once: only the number of starts counts.
            drop(
                checks
                    .reserve(bob, ip(2), t0 + Duration::from_secs(i))
                    .unwrap(),
            );
        }
        let e = checks
            .reserve(bob, ip(2), t0 + Duration::from_secs(30))
            .err()
            .unwrap();
        assert_eq!(e.code, ErrorCode::TooManyChecks);
        assert!(e.message.contains("ten minutes"), "{}", e.message);
        // The first start leaves the window ten minutes later: one more is allowed, not two.
        let later = t0 + START_WINDOW;
        assert!(checks.reserve(bob, ip(2), later).is_ok());
        assert!(checks.reserve(bob, ip(2), later).is_err());
    }
}
