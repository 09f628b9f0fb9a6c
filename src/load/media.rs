//! Media load: N consultations driven exactly as browsers drive them (REST as the doctor,
//! Socket.IO signaling, the patient joining by code, one PeerConnection per participant), each
//! participant publishing synthetic video and audio whose payloads carry their send time.
//!
//! Measured: join time, time to first packet, packets forwarded per second (server counter),
//! loss, duplicates, latency and jitter (from the payloads), NACK/PLI counts, and — when the
//! server's process id is given — server CPU per forwarded packet and RSS per PeerConnection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::TokenMinter;
use super::stats::Samples;
use crate::client::api::ApiClient;
use crate::client::peer::{ClientPeer, Entry, PeerConfig};
use crate::ids::{Identity, Role};

/// Receives one status line about once a second.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct MediaLoad {
    pub base: String,
    pub sessions: usize,
    /// Participants per session: 2 for a 1:1 consultation, more for a group.
    pub participants: usize,
    /// Sessions started per second.
    pub ramp_per_s: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub video: bool,
    pub video_bitrate_bps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub first_id: i64,
    pub server_pid: Option<u32>,
    /// Called about once a second with a one-line status.
    pub progress: Option<Progress>,
}

/// Server-side figures read at the start and end of the measured window.
#[derive(Debug, Clone, Copy, Default)]
struct ServerSample {
    forwarded: f64,
    nacks: f64,
    plis: f64,
    dropped: f64,
    cpu_ns: Option<u64>,
    rss_kib: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MediaReport {
    pub sessions: usize,
    pub peers: usize,
    pub peers_connected: usize,
    pub join_ms_p50: f64,
    pub join_ms_p99: f64,
    pub first_packet_ms_p50: f64,
    pub first_packet_ms_p99: f64,
    pub window_s: f64,
    pub forwarded_pps: f64,
    pub received_pps: f64,
    pub sent_pps: f64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub corrupt: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub jitter_ms: f64,
    pub nacks: f64,
    pub plis: f64,
    pub server_dropped: f64,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_kib_per_peer: Option<f64>,
    /// Throughput and latency over time, one point per second of the window.
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub forwarded_pps: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
}

/// CPU time of a process in nanoseconds (utime + stime).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ).
    Some((utime + stime) * 10_000_000)
}

pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn sample_server(http: &reqwest::Client, base: &str, pid: Option<u32>) -> ServerSample {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    ServerSample {
        forwarded: value("relais_rtp_packets_forwarded_total"),
        nacks: value("relais_nacks_received_total"),
        plis: value("relais_plis_sent_total"),
        dropped: value("relais_rtp_packets_dropped_total"),
        cpu_ns: pid.and_then(process_cpu_ns),
        rss_kib: pid.and_then(process_rss_kib),
    }
}

struct Participant {
    peer: ClientPeer,
    join_ms: f64,
    connected_at: Instant,
}

fn total_received(peers: &[Participant]) -> u64 {
    peers
        .iter()
        .map(|p| {
            p.peer
                .received
                .snapshot()
                .values()
                .map(|s| s.packets)
                .sum::<u64>()
        })
        .sum()
}

fn total_sent(peers: &[Participant]) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    peers
        .iter()
        .map(|p| p.peer.sent.audio_packets.load(Relaxed) + p.peer.sent.video_packets.load(Relaxed))
        .sum()
}

/// Latency percentiles of the samples recorded since `skip` samples per stream.
fn latency_since(peers: &[Participant], marks: &[Vec<usize>]) -> Samples {
    let mut all = Samples::default();
    for (p, mark) in peers.iter().zip(marks) {
        let mut streams: Vec<_> = p.peer.received.snapshot().into_values().collect();
        streams.sort_by_key(|s| s.tags.first().copied());
        for (i, s) in streams.iter().enumerate() {
            let from = mark.get(i).copied().unwrap_or(0);
            all.extend(&s.latency.tail(from));
        }
    }
    all
}

fn latency_marks(peers: &[Participant]) -> Vec<Vec<usize>> {
    peers
        .iter()
        .map(|p| {
            let mut streams: Vec<_> = p.peer.received.snapshot().into_values().collect();
            streams.sort_by_key(|s| s.tags.first().copied());
            streams.iter().map(|s| s.latency.len()).collect()
        })
        .collect()
}

pub async fn run(cfg: &MediaLoad, minter: &TokenMinter) -> anyhow::Result<MediaReport> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let say = |s: &str| {
        if let Some(p) = &cfg.progress {
            p(s);
        }
    };
    let baseline = sample_server(&http, &cfg.base, cfg.server_pid).await;

    // Sessions, started at the ramp rate; each participant connects as a browser would.
    let mut peers: Vec<Participant> = Vec::new();
    let mut failures = 0usize;
    let ramp_gap = Duration::from_secs_f64(1.0 / cfg.ramp_per_s.max(0.1));
    let mut next_start = Instant::now();
    let mut pending = Vec::new();
    for s in 0..cfg.sessions {
        tokio::time::sleep_until(next_start.into()).await;
        next_start += ramp_gap;
        let doctor = Identity::new(Role::Medecin, cfg.first_id + s as i64);
        let patients: Vec<Identity> = (1..cfg.participants)
            .map(|k| {
                Identity::new(
                    Role::Patient,
                    cfg.first_id + (s * cfg.participants + k) as i64,
                )
            })
            .collect();
        let total = cfg.sessions;
        let cfg = cfg.clone();
        let api = ApiClient::new(http.clone(), &cfg.base, &minter.token(doctor));
        let tokens: Vec<(Identity, String)> = std::iter::once(doctor)
            .chain(patients.iter().copied())
            .map(|w| (w, minter.token(w)))
            .collect();
        pending.push(tokio::spawn(async move {
            start_session(&cfg, api, doctor, &patients, tokens).await
        }));
        say(&format!("starting sessions: {}/{total}", s + 1));
    }
    for p in pending {
        match p.await {
            Ok(Ok(mut list)) => peers.append(&mut list),
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(error = %e, "a session failed to start");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "a session task failed");
            }
        }
    }
    let expected_peers = cfg.sessions * cfg.participants;
    say(&format!(
        "{} of {} peers connected, warming up",
        peers.len(),
        expected_peers
    ));
    tokio::time::sleep(cfg.warmup).await;

    // Time to first packet (every participant receives something from each other one).
    let mut first_packet = Samples::default();
    for p in &peers {
        if let Some(first) = p
            .peer
            .received
            .snapshot()
            .values()
            .filter_map(|s| s.first_packet_us)
            .min()
        {
            let connected_us = p
                .connected_at
                .duration_since(crate::client::media::epoch())
                .as_micros() as u64;
            first_packet.push(first.saturating_sub(connected_us));
        }
    }

    // The measured window.
    let marks = latency_marks(&peers);
    let start = sample_server(&http, &cfg.base, cfg.server_pid).await;
    let received0 = total_received(&peers);
    let sent0 = total_sent(&peers);
    let t0 = Instant::now();
    let mut timeline = Vec::new();
    let mut last = (t0, start.forwarded, marks.clone());
    while t0.elapsed() < cfg.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample_server(&http, &cfg.base, None).await;
        let dt = last.0.elapsed().as_secs_f64();
        let mut lat = latency_since(&peers, &last.2);
        let point = TimelinePoint {
            t_s: t0.elapsed().as_secs_f64(),
            forwarded_pps: (now.forwarded - last.1) / dt,
            latency_ms_p50: lat.percentile(50.0) as f64 / 1000.0,
            latency_ms_p99: lat.percentile(99.0) as f64 / 1000.0,
        };
        say(&format!(
            "t={:>4.0}s  forwarded {:>7.0} pkt/s  latency p50 {:>5.1} ms  p99 {:>5.1} ms  peers {}",
            point.t_s,
            point.forwarded_pps,
            point.latency_ms_p50,
            point.latency_ms_p99,
            peers.len()
        ));
        timeline.push(point);
        last = (Instant::now(), now.forwarded, latency_marks(&peers));
    }
    let end = sample_server(&http, &cfg.base, cfg.server_pid).await;
    let window = t0.elapsed().as_secs_f64();
    let received = total_received(&peers) - received0;
    let sent = total_sent(&peers) - sent0;
    let mut latency = latency_since(&peers, &marks);

    // Loss over each stream's whole life, from the counters carried in the payloads.
    let (mut expected, mut lost, mut duplicates, mut corrupt, mut jitter_sum, mut jitter_n) =
        (0u64, 0u64, 0u64, 0u64, 0.0, 0u64);
    for p in &peers {
        for s in p.peer.received.snapshot().values() {
            let unique = s.packets - s.duplicates - s.corrupt;
            let l = s.loss_from_first();
            expected += unique + l;
            lost += l;
            duplicates += s.duplicates;
            corrupt += s.corrupt;
            if let Some(j) = s.latency.jitter_ms() {
                jitter_sum += j;
                jitter_n += 1;
            }
        }
    }
    let forwarded = end.forwarded - start.forwarded;
    let cpu = match (start.cpu_ns, end.cpu_ns) {
        (Some(a), Some(b)) => Some((b - a) as f64),
        _ => None,
    };
    let join: Vec<f64> = peers.iter().map(|p| p.join_ms).collect();
    let mut join_samples = Samples::default();
    for j in &join {
        join_samples.push((*j * 1000.0) as u64);
    }
    let report = MediaReport {
        sessions: cfg.sessions,
        peers: expected_peers,
        peers_connected: peers.len(),
        join_ms_p50: join_samples.percentile(50.0) as f64 / 1000.0,
        join_ms_p99: join_samples.percentile(99.0) as f64 / 1000.0,
        first_packet_ms_p50: first_packet.percentile(50.0) as f64 / 1000.0,
        first_packet_ms_p99: first_packet.percentile(99.0) as f64 / 1000.0,
        window_s: window,
        forwarded_pps: forwarded / window,
        received_pps: received as f64 / window,
        sent_pps: sent as f64 / window,
        loss_pct: if expected == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / expected as f64
        },
        duplicates,
        corrupt,
        latency_ms_p50: latency.percentile(50.0) as f64 / 1000.0,
        latency_ms_p99: latency.percentile(99.0) as f64 / 1000.0,
        latency_ms_max: latency.max() as f64 / 1000.0,
        jitter_ms: if jitter_n == 0 {
            0.0
        } else {
            jitter_sum / jitter_n as f64
        },
        nacks: end.nacks - baseline.nacks,
        plis: end.plis - baseline.plis,
        server_dropped: end.dropped - start.dropped,
        server_cpu_us_per_forwarded_packet: cpu
            .filter(|_| forwarded > 0.0)
            .map(|ns| ns / 1000.0 / forwarded),
        server_cpu_cores: cpu.map(|ns| ns / 1e9 / window),
        server_rss_kib_per_peer: match (baseline.rss_kib, end.rss_kib) {
            (Some(a), Some(b)) if !peers.is_empty() => {
                Some(b.saturating_sub(a) as f64 / peers.len() as f64)
            }
            _ => None,
        },
        timeline,
    };
    for p in peers {
        p.peer.close().await;
    }
    if failures > 0 {
        tracing::warn!(failures, "sessions failed to start");
    }
    Ok(report)
}

async fn start_session(
    cfg: &MediaLoad,
    api: ApiClient,
    doctor: Identity,
    patients: &[Identity],
    tokens: Vec<(Identity, String)>,
) -> anyhow::Result<Vec<Participant>> {
    let parts: Vec<(&str, i64)> = patients.iter().map(|p| ("patient", p.id.0)).collect();
    let kind = if patients.len() == 1 {
        "private"
    } else {
        "group"
    };
    let conv = api
        .create_conversation(kind, &parts)
        .await
        .map_err(|e| anyhow::anyhow!("conversation: {e}"))?;
    let v = api
        .call_ok(
            reqwest::Method::POST,
            "/api/messaging/webrtc/sessions?generate_conference_link=true",
            Some(&json!({"conversation_id": conv, "session_type": if cfg.video { "audio_video" } else { "audio_only" }})),
        )
        .await
        .map_err(|e| anyhow::anyhow!("session: {e}"))?;
    let session = v["data"]["session"]["id"].as_i64().unwrap_or_default();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut out = Vec::new();
    for (who, token) in tokens {
        let entry = if who == doctor {
            Entry::Publish
        } else {
            Entry::Code(code.clone())
        };
        let mut pc = PeerConfig::new(&cfg.base, &token, who, session, entry);
        pc.conversation_id = conv;
        pc.video = cfg.video;
        pc.video_bitrate_bps = cfg.video_bitrate_bps;
        pc.fps = cfg.fps;
        pc.keyframe_interval = cfg.keyframe_interval;
        let started = Instant::now();
        let mut peer = ClientPeer::start(pc).await?;
        peer.wait_connected(Duration::from_secs(20)).await?;
        out.push(Participant {
            peer,
            join_ms: started.elapsed().as_secs_f64() * 1000.0,
            connected_at: Instant::now(),
        });
    }
    Ok(out)
}
