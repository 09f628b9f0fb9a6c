//! One synthetic participant's signaling with relais, as the browser client does it: a
//! Socket.IO connection with its token; the doctor publishes (`webrtc_offer`), a patient asks
//! for the server's offer with the join code (`request_webrtc_offer`) and answers it; later
//! offers (someone joined or left) are answered; candidates are added as they come. For
//! ICE-TCP, the connection to the server's passive candidate is opened here and handed to the
//! leg.
//!
//! After a loss (the signaling connection closed, or the PeerConnection failed after it had
//! been up) and unless the run is stopping, the participant rejoins: a new Socket.IO
//! connection on the [`RetrySchedule`], its leg rebuilt in place in its shard (same leg, so
//! its figures continue), then it enters again as the first time. The server may have
//! restarted: it keeps sessions and codes in its database, not rooms.
//!
//! Everything is bounded in time: connecting, each shard call, waiting to be connected, the
//! whole rejoin (`rejoin_within` after the loss).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::engine::io::{Io, TransportKind, TurnConfig};
use super::engine::rtc_leg::{RtcFactory, RtcLeg, passive_tcp_candidates};
use super::engine::{LegId, ShardError, ShardHandle};
use super::failures::Failures;
use super::rejoin::RetrySchedule;
use crate::client::socketio::{ConnectOptions, SioClient};
use relais::ids::Identity;

/// How a participant enters its session.
#[derive(Debug, Clone)]
pub enum Entry {
    Publish,
    Code(String),
}

#[derive(Clone)]
pub struct Participant {
    pub base: String,
    pub token: String,
    pub who: Identity,
    pub session: i64,
    pub conversation: i64,
    pub entry: Entry,
    pub video: bool,
    pub transport: TransportKind,
    pub turn: Option<TurnConfig>,
    /// ICE-TCP: connect only to the server's passive candidate on this port.
    pub tcp_port: Option<u16>,
    pub bind: std::net::IpAddr,
    pub tag_base: u32,
    /// After a loss (signaling, or media once connected), how long the participant keeps
    /// trying to come back; zero: it does not.
    pub rejoin_within: Duration,
}

/// A participant whose leg lives in a shard.
pub struct Joined {
    pub shard: ShardHandle<RtcLeg>,
    pub leg: LegId,
    pub signaling: tokio::task::JoinHandle<()>,
}

const TCP_CONNECT: Duration = Duration::from_secs(5);

/// Connects the participant and returns once its PeerConnection is connected (or failed, or
/// `join_timeout` passed; the leg stays in its shard either way, to be counted). Its signaling
/// task then lives until `stop`, rejoining after a loss (see [`Participant::rejoin_within`]).
pub async fn join(
    p: Participant,
    shard: ShardHandle<RtcLeg>,
    factory: Arc<RtcFactory>,
    failures: Failures,
    stop: watch::Receiver<bool>,
    join_timeout: Duration,
) -> anyhow::Result<Joined> {
    let started = Instant::now();
    let sio = connect_sio(&p, SIO_CONNECT).await?;
    let io = new_io(&p).await?;
    let leg = factory.leg(io, p.transport, started, p.tag_base, true)?;
    let id = shard.add(leg).await?;
    let deadline = started + join_timeout;
    enter(&p, &sio, &shard, id, deadline).await?;
    let task = Task {
        p,
        shard: shard.clone(),
        id,
        factory,
        failures,
        stop,
        join_timeout,
        rejoin: None,
        ended: false,
    };
    let task = tokio::spawn(task.run(sio));
    let joined = Joined {
        shard: shard.clone(),
        leg: id,
        signaling: task,
    };
    loop {
        let (connected, failure) = shard
            .call(id, |l, _, _| {
                (l.connected(), l.failure().map(str::to_string))
            })
            .await?;
        if connected {
            return Ok(joined);
        }
        if let Some(f) = failure {
            joined.signaling.abort();
            anyhow::bail!("{f}");
        }
        if Instant::now() >= deadline {
            joined.signaling.abort();
            anyhow::bail!("not connected within {join_timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SIO_CONNECT: Duration = Duration::from_secs(10);
/// Longest one rejoin attempt waits for its Socket.IO connection.
const SIO_RECONNECT: Duration = Duration::from_secs(5);
/// How often the signaling task looks at its leg (media lost, connected again).
const LEG_CHECK: Duration = Duration::from_millis(250);
/// Leaving politely over a connection that may be dying.
const GOODBYE: Duration = Duration::from_secs(2);

async fn connect_sio(p: &Participant, timeout: Duration) -> anyhow::Result<SioClient> {
    let auth =
        json!({"token": p.token, "userType": p.who.role, "userId": p.who.id.0, "role": p.who.role});
    let opts = ConnectOptions {
        timeout: Some(timeout),
        ..Default::default()
    };
    let connect = SioClient::connect_with(&p.base, auth, opts);
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("socket.io connect: {e}")),
        Err(_) => anyhow::bail!("socket.io connect: no answer within {timeout:?}"),
    }
}

async fn new_io(p: &Participant) -> anyhow::Result<Io> {
    Ok(match p.transport {
        TransportKind::Udp => Io::udp(p.bind).await?,
        TransportKind::Tcp => Io::tcp_unconnected(p.bind),
        TransportKind::TurnUdp | TransportKind::TurnTcp | TransportKind::TurnTls => {
            let turn = p
                .turn
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("TURN without TURN settings"))?;
            Io::turn(p.bind, turn, Instant::now()).await?
        }
    })
}

/// Enters the session over `sio` the way a browser does: the doctor publishes, a patient asks
/// for the server's offer with the join code.
async fn enter(
    p: &Participant,
    sio: &SioClient,
    shard: &ShardHandle<RtcLeg>,
    id: LegId,
    deadline: Instant,
) -> anyhow::Result<()> {
    // TURN: our relay candidate must exist before any description is made.
    while !shard.call(id, |l, _, _| l.relay_ready()).await?? {
        anyhow::ensure!(Instant::now() < deadline, "no TURN allocation in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match &p.entry {
        Entry::Publish => {
            let sdp = shard.call(id, |l, now, _| l.publish_offer(now)).await??;
            let data = json!({
                "sessionId": p.session,
                "conversationId": p.conversation,
                "sdpOffer": sdp,
                "sessionType": if p.video { "audio_video" } else { "audio_only" },
            });
            sio.emit("webrtc_offer", &data).await?;
        }
        Entry::Code(code) => {
            let data = json!({
                "code": code,
                "sessionId": p.session,
                "user": {"userId": p.who.id.0, "userType": p.who.role},
                "action": "join_conference",
            });
            sio.emit("request_webrtc_offer", &data).await?;
        }
    }
    Ok(())
}

/// Why the signaling loop returned.
enum End {
    /// The run is stopping.
    Stop,
    /// The leg was removed.
    Gone,
    /// Signaling or media was lost; `signaling_up` when the connection itself still works.
    Lost { why: String, signaling_up: bool },
}

/// A rejoin under way.
struct Rejoin {
    lost_at: Instant,
    last_attempt: Option<Instant>,
    last_error: String,
    /// The rebuilt connection must be up by then, else the next attempt.
    connect_by: Option<Instant>,
}

/// The participant's signaling task, after it first entered.
struct Task {
    p: Participant,
    shard: ShardHandle<RtcLeg>,
    id: LegId,
    factory: Arc<RtcFactory>,
    failures: Failures,
    stop: watch::Receiver<bool>,
    join_timeout: Duration,
    rejoin: Option<Rejoin>,
    /// The server said the session ended: nothing to rejoin.
    ended: bool,
}

impl Task {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self, mut sio: SioClient) {
        loop {
            let (why, signaling_up) = match self.events(&mut sio).await {
                End::Stop | End::Gone => break,
                End::Lost { why, signaling_up } => (why, signaling_up),
            };
            if self.stopping() {
                return;
            }
            if self.ended {
                break;
            }
            if self.rejoin.is_none() {
                // Once per outage; the attempts' own errors are in the give-up message.
                self.failures.add(&why);
                let now = Instant::now();
                if self
                    .shard
                    .call(self.id, move |l, _, _| l.signaling_lost(now))
                    .await
                    .is_err()
                {
                    return;
                }
                self.rejoin = Some(Rejoin {
                    lost_at: now,
                    last_attempt: None,
                    last_error: why,
                    connect_by: None,
                });
            } else if let Some(r) = &mut self.rejoin {
                r.last_error = why;
            }
            if self.p.rejoin_within.is_zero() {
                break;
            }
            if signaling_up {
                goodbye(&self.p, sio).await;
            } else {
                drop(sio);
            }
            match self.reconnect().await {
                Ok(Some(new)) => sio = new,
                Ok(None) => return,
                Err(e) => {
                    self.failures.add(&e);
                    return;
                }
            }
        }
        goodbye(&self.p, sio).await;
    }

    /// Retries on the schedule until a new Socket.IO connection is up and the leg, rebuilt,
    /// entered the session again. `Ok(None)`: the run is stopping (or the leg is gone).
    async fn reconnect(&mut self) -> Result<Option<SioClient>, String> {
        let schedule = RetrySchedule::new(self.p.rejoin_within);
        let mut stop = self.stop.clone();
        loop {
            let r = self.rejoin.as_mut().expect("reconnect during a rejoin");
            let Some(at) = schedule.next_attempt(r.lost_at, r.last_attempt, Instant::now()) else {
                return Err(format!(
                    "rejoin: not back within {:?} (last: {})",
                    schedule.within, r.last_error
                ));
            };
            r.last_attempt = Some(at);
            let deadline = schedule.deadline(r.lost_at);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.wait_for(|s| *s) => return Ok(None),
            }
            let attempt = self.attempt(deadline);
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.wait_for(|s| *s) => return Ok(None),
            };
            match result {
                Ok(sio) => {
                    let r = self.rejoin.as_mut().expect("reconnect during a rejoin");
                    r.connect_by = Some((Instant::now() + self.join_timeout).min(deadline));
                    return Ok(Some(sio));
                }
                Err(e) if matches!(e.downcast_ref::<ShardError>(), Some(ShardError::NoLeg)) => {
                    return Ok(None);
                }
                Err(e) => {
                    if let Some(r) = self.rejoin.as_mut() {
                        r.last_error = e.to_string();
                    }
                }
            }
        }
    }

    /// One attempt: a new Socket.IO connection, then the leg rebuilt in place, then entering.
    async fn attempt(&self, deadline: Instant) -> anyhow::Result<SioClient> {
        let left = deadline.saturating_duration_since(Instant::now());
        let sio = connect_sio(
            &self.p,
            SIO_RECONNECT.min(left).max(Duration::from_millis(100)),
        )
        .await?;
        let io = new_io(&self.p).await?;
        let factory = self.factory.clone();
        self.shard
            .call(self.id, move |l, now, ctx| {
                l.rebuild(&factory, io, now, ctx)
            })
            .await??;
        enter(&self.p, &sio, &self.shard, self.id, deadline).await?;
        Ok(sio)
    }

    /// Serves the server's events until the run stops or the participant loses its session.
    async fn events(&mut self, sio: &mut SioClient) -> End {
        let mut stop = self.stop.clone();
        let mut check = tokio::time::interval(LEG_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = sio.next_event() => Some(ev),
                _ = stop.wait_for(|s| *s) => return End::Stop,
                _ = check.tick() => None,
            };
            let Some(ev) = ev else {
                match self.check_leg().await {
                    Ok(Some(why)) => {
                        return End::Lost {
                            why,
                            signaling_up: true,
                        };
                    }
                    Err(ShardError::NoLeg) => return End::Gone,
                    Ok(None) | Err(_) => continue,
                }
            };
            let Some(ev) = ev else {
                if self.stopping() {
                    return End::Stop;
                }
                return End::Lost {
                    why: "signaling connection lost".into(),
                    signaling_up: false,
                };
            };
            self.ended |= ev.name == "session_ended";
            if let Err(e) = on_event(&self.p, sio, &self.shard, self.id, &ev.name, ev.data).await {
                // The leg was removed (the run is ending, or the leg failed and said so): what the
                // server still sends it is not a failure of its own.
                if matches!(e.downcast_ref::<ShardError>(), Some(ShardError::NoLeg)) {
                    return End::Gone;
                }
                let why = format!("{}: {e}", ev.name);
                if self.rejoin.is_some() {
                    // The server refused this attempt: the next one may fare better.
                    return End::Lost {
                        why,
                        signaling_up: true,
                    };
                }
                self.failures.add(&why);
            }
        }
    }

    /// `Some(why)` when the participant must rejoin: its media was lost after it had been up,
    /// or a rejoin attempt did not connect in time. Ends a rejoin once connected again.
    async fn check_leg(&mut self) -> Result<Option<String>, ShardError> {
        let (connected, lost, failure) = self
            .shard
            .call(self.id, |l, _, _| {
                (
                    l.connected(),
                    l.media_lost(),
                    l.failure().map(str::to_string),
                )
            })
            .await?;
        if lost {
            return Ok(Some(format!("media lost: {}", failure.unwrap_or_default())));
        }
        if let Some(r) = &self.rejoin {
            if connected {
                self.rejoin = None;
            } else if r.connect_by.is_some_and(|t| Instant::now() >= t) {
                return Ok(Some(format!(
                    "not connected again within {:?}",
                    self.join_timeout
                )));
            }
        }
        Ok(None)
    }
}

/// Leaves the session and closes the connection, bounded.
async fn goodbye(p: &Participant, sio: SioClient) {
    let _ = tokio::time::timeout(
        GOODBYE,
        sio.emit("leave_session", &json!({"sessionId": p.session})),
    )
    .await;
    let _ = tokio::time::timeout(GOODBYE, sio.close()).await;
}

async fn on_event(
    p: &Participant,
    sio: &SioClient,
    shard: &ShardHandle<RtcLeg>,
    id: LegId,
    name: &str,
    data: Value,
) -> anyhow::Result<()> {
    match name {
        "webrtc_answer" => {
            let sdp = data["sdpAnswer"].as_str().unwrap_or_default().to_string();
            tracing::debug!(%sdp, "server answer");
            let s = sdp.clone();
            shard
                .call(id, move |l, now, _| l.apply_answer(now, &s))
                .await??;
            connect_tcp(p, shard, id, &sdp).await?;
        }
        "webrtc_offer" => {
            let sdp = data["sdpOffer"].as_str().unwrap_or_default().to_string();
            let s = sdp.clone();
            let answer = shard
                .call(id, move |l, now, _| l.answer_offer(now, &s))
                .await??;
            sio.emit(
                "webrtc_answer",
                &json!({"sessionId": p.session, "sdpAnswer": answer}),
            )
            .await?;
            connect_tcp(p, shard, id, &sdp).await?;
        }
        "webrtc_ice_candidates" => {
            let list = serde_json::from_value(data["candidates"].clone()).unwrap_or_default();
            shard
                .call(id, move |l, now, _| l.add_remote_candidates(now, list))
                .await?;
        }
        "webrtc_error" => anyhow::bail!(
            "{}: {}",
            data["code"].as_str().unwrap_or("?"),
            data["message"].as_str().unwrap_or("")
        ),
        "session_ended" => anyhow::bail!("the session ended"),
        _ => {}
    }
    Ok(())
}

/// ICE-TCP: opens the connection to the server's passive candidate once, and hands it over.
async fn connect_tcp(
    p: &Participant,
    shard: &ShardHandle<RtcLeg>,
    id: LegId,
    sdp: &str,
) -> anyhow::Result<()> {
    if p.transport != TransportKind::Tcp || shard.call(id, |l, _, _| l.is_tcp_connected()).await? {
        return Ok(());
    }
    let mut last_error = None;
    let candidates = passive_tcp_candidates(sdp)
        .into_iter()
        .filter(|a| p.tcp_port.is_none_or(|port| a.port() == port));
    for addr in candidates {
        match tokio::time::timeout(TCP_CONNECT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                shard
                    .call(id, move |l, _, _| l.attach_tcp(stream))
                    .await??;
                return Ok(());
            }
            Ok(Err(e)) => last_error = Some(format!("ICE-TCP connect {addr}: {e}")),
            Err(_) => last_error = Some(format!("ICE-TCP connect {addr}: timeout")),
        }
    }
    anyhow::bail!(
        last_error.unwrap_or_else(|| "the server offers no passive ICE-TCP candidate".into())
    )
}
