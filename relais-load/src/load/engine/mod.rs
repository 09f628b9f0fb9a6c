//! The load tool's media engine: a few *shards*, each one tokio task that owns many legs
//! (one leg = one synthetic participant's connection: a sans-IO WebRTC PeerConnection, or a
//! plain RTP socket for the bare-relay baseline) and drives them all: socket readiness, timers
//! and media pacing, commands from signaling tasks.
//!
//! Why: one async `webrtc` PeerConnection runs a dozen tasks, locks and channels per packet;
//! on a 2-core machine 200 of them cost most of a core and distort the server's measurements.
//! A shard wakes once for everything that is due (timers are coalesced within
//! [`TIMER_SLACK`]) and touches each leg's sockets only when they are readable.
//!
//! Invariants:
//! - only the shard task touches a leg; other tasks reach it through [`ShardHandle::call`]
//!   (a closure run on the leg, answered on a oneshot, bounded in time);
//! - a leg's timer entry is re-armed after every touch; stale heap entries are skipped;
//! - a leg's socket readiness future is re-armed after each drain, and when its I/O
//!   generation changes (a TCP connection attached later, a leg rebuilt after a loss);
//! - nothing here blocks: sends that would block are dropped and counted.

pub mod io;
pub mod plain_leg;
pub mod rtc_leg;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::{AbortHandle, BoxFuture, abortable};
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::recv::RecvTotals;
use super::stats::Histogram;

/// Timers due within this much of the earliest are served in the same wake-up.
pub const TIMER_SLACK: Duration = Duration::from_micros(500);
/// Longest a signaling task waits for its shard to run a command.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const COMMANDS: usize = 1024;

pub type LegId = usize;

/// What a shard needs from a leg.
pub trait Leg: Send + 'static {
    /// Drains the leg's socket (non-blocking) and processes what arrived.
    fn on_readable(&mut self, now: Instant, ctx: &mut ShardCtx);
    /// Runs timers and sends due media.
    fn on_timeout(&mut self, now: Instant, ctx: &mut ShardCtx);
    /// The next instant the leg needs [`on_timeout`](Self::on_timeout).
    fn next_deadline(&mut self) -> Option<Instant>;
    /// Resolves when the leg's socket may be readable; `None` while it has none.
    fn readiness(&self) -> Option<BoxFuture<'static, ()>>;
    /// Changes when the leg's socket changes (its readiness must be re-armed).
    fn io_generation(&self) -> u64;
    /// Adds this leg's figures.
    fn add_stats(&self, s: &mut LegStats);
    /// Closes the connection (a goodbye where the protocol has one).
    fn close(&mut self, now: Instant, ctx: &mut ShardCtx);
}

/// Shared scratch state of one shard, lent to the leg being driven.
#[derive(Default)]
pub struct ShardCtx {
    /// Latency of every packet received since the last snapshot.
    pub latency: Histogram,
    /// Sends that failed or would have blocked.
    pub send_drops: u64,
}

/// Figures of legs (summed over a shard, then over shards).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LegStats {
    pub legs: u64,
    pub connected: u64,
    pub failed: u64,
    pub sent_packets: u64,
    pub plis_received: u64,
    pub recv: RecvTotals,
    /// Join times (start of signaling → connected), ms, one per connected leg.
    pub join_ms: Vec<f64>,
    /// Connected → first media packet received, ms.
    pub first_packet_ms: Vec<f64>,
    /// Connections rebuilt after a loss (see [`crate::load::rejoin`]).
    pub rejoin_attempts: u64,
    /// Outages that ended with media back.
    pub rejoins: u64,
    /// Legs that came back at least once.
    pub participants_rejoined: u64,
    /// Legs whose media is lost and not back (yet).
    pub outages_open: u64,
    /// Loss → first media packet after the rejoin, ms, one per ended outage.
    pub media_back_ms: Vec<f64>,
}

impl LegStats {
    pub fn add(&mut self, o: &LegStats) {
        self.legs += o.legs;
        self.connected += o.connected;
        self.failed += o.failed;
        self.sent_packets += o.sent_packets;
        self.plis_received += o.plis_received;
        self.recv.add(&o.recv);
        self.join_ms.extend_from_slice(&o.join_ms);
        self.first_packet_ms.extend_from_slice(&o.first_packet_ms);
        self.rejoin_attempts += o.rejoin_attempts;
        self.rejoins += o.rejoins;
        self.participants_rejoined += o.participants_rejoined;
        self.outages_open += o.outages_open;
        self.media_back_ms.extend_from_slice(&o.media_back_ms);
    }
}

/// One shard's answer to a snapshot request.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub stats: LegStats,
    /// Latency since the previous snapshot (the shard starts a new interval).
    pub latency: Histogram,
    pub send_drops: u64,
}

type LegFn<L> = Box<dyn FnOnce(&mut L, Instant, &mut ShardCtx) + Send>;

enum Command<L> {
    Add(L, oneshot::Sender<LegId>),
    Run(LegId, LegFn<L>),
    Remove(LegId),
    Snapshot(oneshot::Sender<ShardSnapshot>),
}

/// How other tasks reach a shard.
pub struct ShardHandle<L> {
    tx: mpsc::Sender<Command<L>>,
}

impl<L> Clone for ShardHandle<L> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("the shard stopped")]
    Stopped,
    #[error("the shard did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no such leg")]
    NoLeg,
}

impl<L: Leg> ShardHandle<L> {
    pub async fn add(&self, leg: L) -> Result<LegId, ShardError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Add(leg, tx)).await?;
        self.wait(rx).await
    }

    /// Runs `f` on leg `id` inside the shard and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        id: LegId,
        f: impl FnOnce(&mut L, Instant, &mut ShardCtx) -> R + Send + 'static,
    ) -> Result<R, ShardError> {
        let (tx, rx) = oneshot::channel();
        let run: LegFn<L> = Box::new(move |leg, now, ctx| {
            let _ = tx.send(f(leg, now, ctx));
        });
        self.send(Command::Run(id, run)).await?;
        self.wait(rx).await.map_err(|e| match e {
            // The closure was dropped unrun: the leg is gone.
            ShardError::Stopped => ShardError::NoLeg,
            e => e,
        })
    }

    pub async fn remove(&self, id: LegId) {
        let _ = self.send(Command::Remove(id)).await;
    }

    pub async fn snapshot(&self) -> Result<ShardSnapshot, ShardError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Snapshot(tx)).await?;
        self.wait(rx).await
    }

    async fn send(&self, c: Command<L>) -> Result<(), ShardError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.tx.send(c)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ShardError::Stopped),
            Err(_) => Err(ShardError::Timeout(CALL_TIMEOUT)),
        }
    }

    async fn wait<R>(&self, rx: oneshot::Receiver<R>) -> Result<R, ShardError> {
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ShardError::Stopped),
            Err(_) => Err(ShardError::Timeout(CALL_TIMEOUT)),
        }
    }
}

struct Slot<L> {
    leg: L,
    /// The deadline of this leg's live heap entry.
    scheduled: Option<Instant>,
    /// I/O generation of the armed readiness future (`None`: not armed).
    armed: Option<u64>,
    /// Cancels the armed future: a replaced socket's future holds that socket open.
    disarm: Option<AbortHandle>,
}

struct Shard<L> {
    legs: Vec<Option<Slot<L>>>,
    heap: BinaryHeap<Reverse<(Instant, LegId)>>,
    ready: FuturesUnordered<BoxFuture<'static, (LegId, u64)>>,
    ctx: ShardCtx,
}

/// Starts a shard task; it stops when every handle is dropped.
pub fn spawn<L: Leg>() -> ShardHandle<L> {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let shard = Shard {
        legs: Vec::new(),
        heap: BinaryHeap::new(),
        ready: FuturesUnordered::new(),
        ctx: ShardCtx::default(),
    };
    tokio::spawn(shard.run(rx));
    ShardHandle { tx }
}

impl<L: Leg> Shard<L> {
    async fn run(mut self, mut rx: mpsc::Receiver<Command<L>>) {
        loop {
            let deadline = self.heap.peek().map(|Reverse((d, _))| *d);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                Some((id, generation)) = self.ready.next(), if !self.ready.is_empty() => {
                    self.on_ready(id, generation);
                    // Serve every other socket that is ready now, in this wake-up.
                    while let Some(Some((id, generation))) =
                        futures_util::FutureExt::now_or_never(self.ready.next())
                    {
                        self.on_ready(id, generation);
                    }
                }
                _ = sleep => self.on_timers(),
            }
        }
        let now = Instant::now();
        for slot in self.legs.iter_mut().flatten() {
            slot.leg.close(now, &mut self.ctx);
        }
    }

    fn on_command(&mut self, c: Command<L>) {
        match c {
            Command::Add(leg, reply) => {
                let id = self.legs.len();
                self.legs.push(Some(Slot {
                    leg,
                    scheduled: None,
                    armed: None,
                    disarm: None,
                }));
                self.touched(id);
                let _ = reply.send(id);
            }
            Command::Run(id, f) => {
                if let Some(slot) = self.legs.get_mut(id).and_then(Option::as_mut) {
                    f(&mut slot.leg, Instant::now(), &mut self.ctx);
                    self.touched(id);
                }
            }
            Command::Remove(id) => {
                if let Some(mut slot) = self.legs.get_mut(id).and_then(Option::take) {
                    slot.leg.close(Instant::now(), &mut self.ctx);
                    if let Some(h) = slot.disarm.take() {
                        h.abort();
                    }
                }
            }
            Command::Snapshot(reply) => {
                let mut stats = LegStats::default();
                for slot in self.legs.iter().flatten() {
                    slot.leg.add_stats(&mut stats);
                }
                let _ = reply.send(ShardSnapshot {
                    stats,
                    latency: std::mem::take(&mut self.ctx.latency),
                    send_drops: self.ctx.send_drops,
                });
            }
        }
    }

    fn on_ready(&mut self, id: LegId, generation: u64) {
        let Some(slot) = self.legs.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if slot.armed != Some(generation) {
            return; // a future of a replaced socket
        }
        slot.armed = None;
        slot.disarm = None;
        slot.leg.on_readable(Instant::now(), &mut self.ctx);
        self.touched(id);
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let horizon = now + TIMER_SLACK;
        // Collect first: each due leg runs once per wake-up, whatever it asks for next.
        let mut due = Vec::new();
        while let Some(Reverse((d, id))) = self.heap.peek().copied() {
            if d > horizon {
                break;
            }
            self.heap.pop();
            if let Some(slot) = self.legs.get_mut(id).and_then(Option::as_mut)
                && slot.scheduled == Some(d)
            {
                slot.scheduled = None;
                due.push(id);
            }
        }
        for id in due {
            if let Some(slot) = self.legs.get_mut(id).and_then(Option::as_mut) {
                // The leg's clock is the horizon: what is due within the slack runs now.
                slot.leg.on_timeout(horizon, &mut self.ctx);
            }
            self.touched_at(id, Some(horizon + TIMER_SLACK));
        }
    }

    fn touched(&mut self, id: LegId) {
        self.touched_at(id, None);
    }

    /// Re-arms the leg's timer and readiness after it was driven. After a timeout, the next
    /// deadline is at least `not_before`, so that a leg that does not advance its own timers
    /// cannot spin the shard.
    fn touched_at(&mut self, id: LegId, not_before: Option<Instant>) {
        let Some(slot) = self.legs.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if let Some(d) = slot
            .leg
            .next_deadline()
            .map(|d| not_before.map_or(d, |n| d.max(n)))
            && slot.scheduled != Some(d)
        {
            slot.scheduled = Some(d);
            self.heap.push(Reverse((d, id)));
        }
        let generation = slot.leg.io_generation();
        if slot.armed != Some(generation)
            && let Some(fut) = slot.leg.readiness()
        {
            if let Some(old) = slot.disarm.take() {
                old.abort();
            }
            let (fut, disarm) = abortable(fut);
            slot.armed = Some(generation);
            slot.disarm = Some(disarm);
            self.ready.push(Box::pin(async move {
                // An aborted future (its socket was replaced) reports a generation that
                // no longer matches: `on_ready` ignores it.
                let _ = fut.await;
                (id, generation)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A leg whose "socket" is `socket`; its readiness never resolves and holds the socket.
    struct FakeLeg {
        socket: Arc<()>,
        generation: u64,
    }

    impl Leg for FakeLeg {
        fn on_readable(&mut self, _: Instant, _: &mut ShardCtx) {}
        fn on_timeout(&mut self, _: Instant, _: &mut ShardCtx) {}
        fn next_deadline(&mut self) -> Option<Instant> {
            None
        }
        fn readiness(&self) -> Option<BoxFuture<'static, ()>> {
            let s = self.socket.clone();
            Some(Box::pin(async move {
                std::future::pending::<()>().await;
                drop(s);
            }))
        }
        fn io_generation(&self) -> u64 {
            self.generation
        }
        fn add_stats(&self, _: &mut LegStats) {}
        fn close(&mut self, _: Instant, _: &mut ShardCtx) {}
    }

    async fn released(socket: &Arc<()>) -> bool {
        for _ in 0..100 {
            if Arc::strong_count(socket) == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_replaced_or_removed_socket_is_not_held_by_its_readiness() {
        let shard = spawn::<FakeLeg>();
        let first = Arc::new(());
        let id = shard
            .add(FakeLeg {
                socket: first.clone(),
                generation: 0,
            })
            .await
            .unwrap();
        // The leg and its armed readiness hold it.
        assert_eq!(Arc::strong_count(&first), 3);
        // The leg is rebuilt on a new socket: the old one's future lets it go.
        let second = Arc::new(());
        let s = second.clone();
        shard
            .call(id, move |l, _, _| {
                l.socket = s;
                l.generation += 1;
            })
            .await
            .unwrap();
        assert!(released(&first).await);
        assert_eq!(Arc::strong_count(&second), 3);
        shard.remove(id).await;
        assert!(released(&second).await);
    }
}
