//! The measured window, the same for every target: after the warm-up, one sample per second
//! of the server (its counters and process) and of the shards (peers' counters, latency since
//! the previous sample), then the figures over the window.
//!
//! The server may restart during the window (a rejoin test): its counters then start again
//! from zero. Server figures are sums of sample-to-sample differences in which a counter that
//! went down counts from zero (see [`counter_delta`]), never a negative difference of the
//! first and last samples.

use std::time::{Duration, Instant};

use super::engine::{Leg, LegStats, ShardHandle};
use super::probe::{Probe, ServerSample, process_cpu_ns};
use super::progress::ProgressBar;
use super::report::{MediaReport, RejoinFigures, TimelinePoint};
use super::stats::{Histogram, Samples};

/// Raw figures of one window.
pub struct Measured {
    pub start: ServerSample,
    pub end: ServerSample,
    pub before: LegStats,
    pub after: LegStats,
    pub latency: Histogram,
    pub window_s: f64,
    pub timeline: Vec<TimelinePoint>,
    pub tool_cpu_ns: Option<u64>,
    pub send_drops: u64,
    pub unreachable: u64,
    /// Server counters at the very start (before any session), for NACK/PLI totals.
    pub initial: Option<ServerSample>,
    /// The server's counters summed over the window's samples.
    pub server: CounterTotals,
}

/// How much a server counter grew from `prev` to `cur`; one that went down was reset (the
/// server restarted) and counted `cur` since. (A restarted counter that overtook the old value
/// within one sample interval is undercounted: samples are a second apart, restarts are not
/// that busy.)
pub fn counter_delta(prev: f64, cur: f64) -> f64 {
    if cur >= prev { cur - prev } else { cur }
}

/// Server counters summed between consecutive reachable samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CounterTotals {
    /// `None` until two reachable samples both had the counter (a server that does not
    /// count what it forwards, or could not be read).
    pub forwarded: Option<f64>,
    pub dropped: f64,
}

impl CounterTotals {
    /// Adds what happened between two samples (nothing when either could not be read: the
    /// next reachable pair carries on from its own values).
    pub fn add(&mut self, prev: &ServerSample, cur: &ServerSample) {
        if !(prev.reachable && cur.reachable) {
            return;
        }
        if let (Some(a), Some(b)) = (prev.forwarded, cur.forwarded) {
            self.forwarded = Some(self.forwarded.unwrap_or(0.0) + counter_delta(a, b));
        }
        self.dropped += counter_delta(prev.dropped, cur.dropped);
    }
}

async fn snapshot<L: Leg>(shards: &[ShardHandle<L>]) -> (LegStats, Histogram, u64) {
    let mut stats = LegStats::default();
    let mut latency = Histogram::default();
    let mut drops = 0;
    for s in shards {
        if let Ok(snap) = s.snapshot().await {
            stats.add(&snap.stats);
            latency.merge(&snap.latency);
            drops += snap.send_drops;
        }
    }
    (stats, latency, drops)
}

fn own_cpu_ns() -> Option<u64> {
    process_cpu_ns(std::process::id())
}

/// Warm-up, then the window; `peers` is how many were meant to exist (for the status line).
pub async fn measure<L: Leg>(
    shards: &[ShardHandle<L>],
    probe: &Probe,
    warmup: Duration,
    duration: Duration,
    bar: &ProgressBar,
    peers: usize,
) -> Measured {
    let warm_end = Instant::now() + warmup;
    while Instant::now() < warm_end {
        tokio::time::sleep(Duration::from_secs(1).min(warm_end - Instant::now())).await;
        let (s, lat, _) = snapshot(shards).await;
        bar.update(
            "warm-up",
            warmup
                .saturating_sub(warm_end - Instant::now())
                .as_secs_f64(),
            warmup.as_secs_f64(),
            &format!(
                "peers {}/{}  received {}  p50 {:.1} ms",
                s.connected,
                peers,
                s.recv.packets,
                lat.percentile(50.0) as f64 / 1000.0
            ),
        );
    }
    let (before, _, _) = snapshot(shards).await; // also starts a new latency interval
    let start = probe.sample().await;
    let tool0 = own_cpu_ns();
    let t0 = Instant::now();
    let mut latency = Histogram::default();
    let mut timeline = Vec::new();
    let mut unreachable = u64::from(!start.reachable);
    let mut server_totals = CounterTotals::default();
    // The last sample the server answered (the next difference is taken from it).
    let mut last_read = start;
    let mut last = (t0, start, before.clone());
    let mut send_drops = 0;
    while t0.elapsed() < duration {
        let next = last.0 + Duration::from_secs(1);
        tokio::time::sleep_until(next.min(t0 + duration).into()).await;
        let (stats, lat, drops) = snapshot(shards).await;
        let server = probe.sample().await;
        unreachable += u64::from(!server.reachable);
        send_drops = drops;
        let dt = last.0.elapsed().as_secs_f64().max(1e-3);
        let received_pps = (stats.recv.packets - last.2.recv.packets) as f64 / dt;
        let forwarded_pps = match (server.forwarded, last.1.forwarded) {
            (Some(a), Some(b)) if server.reachable && last.1.reachable => counter_delta(b, a) / dt,
            _ => received_pps,
        };
        if server.reachable {
            server_totals.add(&last_read, &server);
            last_read = server;
        }
        let point = TimelinePoint {
            t_s: t0.elapsed().as_secs_f64(),
            forwarded_pps,
            received_pps,
            latency_ms_p50: lat.percentile(50.0) as f64 / 1000.0,
            latency_ms_p99: lat.percentile(99.0) as f64 / 1000.0,
        };
        let lost = (stats.recv.expected - before.recv.expected)
            .saturating_sub(stats.recv.unique - before.recv.unique);
        let expected = (stats.recv.expected - before.recv.expected).max(1);
        bar.update(
            "measure",
            point.t_s,
            duration.as_secs_f64(),
            &format!(
                "fwd {:>6.0} pkt/s  p50 {:>5.2} ms  p99 {:>6.2} ms  loss {:.2} %  peers {}/{}{}",
                point.forwarded_pps,
                point.latency_ms_p50,
                point.latency_ms_p99,
                lost as f64 * 100.0 / expected as f64,
                stats.connected,
                peers,
                if server.reachable {
                    ""
                } else {
                    "  SERVER UNREACHABLE"
                }
            ),
        );
        latency.merge(&lat);
        timeline.push(point);
        last = (Instant::now(), server, stats);
    }
    bar.finish();
    let window_s = t0.elapsed().as_secs_f64();
    let tool_cpu_ns = match (tool0, own_cpu_ns()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let end = last.1;
    Measured {
        start,
        end,
        before,
        after: last.2,
        latency,
        window_s,
        timeline,
        tool_cpu_ns,
        send_drops,
        unreachable,
        initial: None,
        server: server_totals,
    }
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut s = Samples::default();
    for v in samples {
        s.push((v * 1000.0) as u64);
    }
    s.percentile(p) as f64 / 1000.0
}

impl Measured {
    pub fn into_report(
        self,
        target: &str,
        transport: &str,
        sessions: usize,
        participants: usize,
        peers: usize,
    ) -> MediaReport {
        let w = self.window_s.max(1e-3);
        let received = self.after.recv.packets - self.before.recv.packets;
        let sent = self.after.sent_packets - self.before.sent_packets;
        let expected = self.after.recv.expected - self.before.recv.expected;
        let unique = self.after.recv.unique - self.before.recv.unique;
        let lost = expected.saturating_sub(unique);
        let forwarded = self.server.forwarded.unwrap_or(received as f64);
        let cpu_ns = match (self.start.cpu_ns, self.end.cpu_ns) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64),
            _ => None,
        };
        let connected = self.after.connected as usize;
        let initial = self.initial.unwrap_or(self.start);
        MediaReport {
            target: target.into(),
            transport: transport.into(),
            sessions,
            sessions_failed: 0,
            participants,
            peers,
            peers_connected: connected,
            join_ms_p50: pct(&self.after.join_ms, 50.0),
            join_ms_p99: pct(&self.after.join_ms, 99.0),
            first_packet_ms_p50: pct(&self.after.first_packet_ms, 50.0),
            first_packet_ms_p99: pct(&self.after.first_packet_ms, 99.0),
            window_s: w,
            sent_pps: sent as f64 / w,
            forwarded_pps: forwarded / w,
            received_pps: received as f64 / w,
            loss_pct: if expected == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / expected as f64
            },
            duplicates: self.after.recv.duplicates - self.before.recv.duplicates,
            reordered: self.after.recv.reordered - self.before.recv.reordered,
            corrupt: self.after.recv.corrupt - self.before.recv.corrupt,
            latency_ms_p50: self.latency.percentile(50.0) as f64 / 1000.0,
            latency_ms_p99: self.latency.percentile(99.0) as f64 / 1000.0,
            latency_ms_max: self.latency.max() as f64 / 1000.0,
            jitter_ms: if self.after.recv.streams == 0 {
                0.0
            } else {
                self.after.recv.jitter_us_sum / self.after.recv.streams as f64 / 1000.0
            },
            // After a restart: what the new process counted.
            nacks: counter_delta(initial.nacks, self.end.nacks),
            plis: counter_delta(initial.plis, self.end.plis),
            plis_received_by_peers: self.after.plis_received,
            server_dropped: self.server.dropped,
            server_cpu_us_per_forwarded_packet: cpu_ns
                .filter(|_| forwarded > 0.0)
                .map(|ns| ns / 1000.0 / forwarded),
            server_cpu_cores: cpu_ns.map(|ns| ns / 1e9 / w),
            server_rss_kib: self.end.rss_kib,
            server_disk_write_mb_s: match (self.start.disk_write_bytes, self.end.disk_write_bytes) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e6 / w),
                _ => None,
            },
            server_rss_kib_per_peer: match (initial.rss_kib, self.end.rss_kib) {
                (Some(a), Some(b)) if connected > 0 => {
                    Some(b.saturating_sub(a) as f64 / connected as f64)
                }
                _ => None,
            },
            tool_cpu_cores: self.tool_cpu_ns.map(|ns| ns as f64 / 1e9 / w),
            tool_send_drops: self.send_drops,
            failures: Vec::new(),
            server_unreachable_samples: self.unreachable,
            rejoin: RejoinFigures::new(
                self.after.rejoins,
                self.after.participants_rejoined,
                self.after.rejoin_attempts,
                self.after.outages_open,
                &self.after.media_back_ms,
            ),
            timeline: self.timeline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(reachable: bool, forwarded: f64, dropped: f64) -> ServerSample {
        ServerSample {
            reachable,
            forwarded: reachable.then_some(forwarded),
            dropped,
            ..Default::default()
        }
    }

    #[test]
    fn counters_survive_a_server_restart() {
        assert_eq!(counter_delta(100.0, 150.0), 50.0);
        // Restarted: the new process counted 30 since.
        assert_eq!(counter_delta(150.0, 30.0), 30.0);
        let samples = [
            sample(true, 1000.0, 2.0),
            sample(true, 1500.0, 3.0),
            sample(false, 0.0, 0.0),  // killed
            sample(true, 200.0, 0.0), // started again
            sample(true, 700.0, 1.0),
        ];
        let mut totals = CounterTotals::default();
        let mut last = samples[0];
        for s in &samples[1..] {
            if s.reachable {
                totals.add(&last, s);
                last = *s;
            }
        }
        assert_eq!(totals.forwarded, Some(500.0 + 200.0 + 500.0));
        assert_eq!(totals.dropped, 1.0 + 0.0 + 1.0);
        // A server never read twice: no forwarded figure (the peers' count stands in).
        let mut none = CounterTotals::default();
        none.add(&samples[1], &samples[2]);
        assert_eq!(none.forwarded, None);
    }
}
