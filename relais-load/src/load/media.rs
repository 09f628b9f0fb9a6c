//! Media load against relais: N consultations driven as browsers drive them (REST as the
//! doctor, Socket.IO signaling, the patient joining by code, one PeerConnection per
//! participant), every participant publishing the synthetic [`Pattern`] through sans-IO
//! PeerConnections that a few shards drive (see [`super::engine`]).
//!
//! The run: sessions start at the ramp rate (each one: conversation, session, then its
//! participants one after the other); warm-up; the measured window, sampled every second
//! (server counters, peers' counters and latency); then everything is closed. Every wait is
//! bounded; what fails is counted in the report and the run goes on with the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::TokenMinter;
use super::engine::io::{TransportKind, TurnConfig, turn_url_host_port};
use super::engine::rtc_leg::{RtcFactory, RtcLeg};
use super::engine::{self, ShardHandle};
use super::failures::Failures;
use super::measure::{Measured, measure};
use super::probe::Probe;
use super::progress::ProgressBar;
use super::report::MediaReport;
use super::signaling::{self, Entry, Joined, Participant};
use crate::client::api::ApiClient;
use crate::synthetic::Pattern;
use relais::ids::{Identity, Role};

#[derive(Clone)]
pub struct MediaLoad {
    pub base: String,
    /// Other nodes of the same cluster (several nodes): sessions are created through each
    /// node in turn and a session's participants connect their sockets to different nodes
    /// (the cluster places each session and routes its signaling to it).
    pub nodes: Vec<String>,
    pub sessions: usize,
    /// Participants per session: 2 for a 1:1 consultation, more for a group.
    pub participants: usize,
    /// Sessions started per second.
    pub ramp_per_s: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub pattern: Pattern,
    pub first_id: i64,
    pub server_pid: Option<u32>,
    pub transport: TransportKind,
    /// Tasks driving the peers (default: one per core).
    pub shards: usize,
    /// Local address of the peers' sockets.
    pub bind: std::net::IpAddr,
    /// Longest a participant may take to connect.
    pub join_timeout: Duration,
    /// After losing its signaling or its media (the server restarted), how long a
    /// participant keeps trying to rejoin (zero: it does not).
    pub rejoin_within: Duration,
    pub progress: bool,
    /// The doctor records each consultation once everyone has joined (with consent).
    pub record: bool,
    /// TURN: the URL of this port among those the server offers for the transport (the
    /// first one otherwise), e.g. TURN/TLS on the shared HTTPS port.
    pub turn_port: Option<u16>,
    /// ICE-TCP: only the server's passive candidate on this port (all of them otherwise).
    pub tcp_port: Option<u16>,
    /// TURN over TLS: accept the server's certificate unchecked (relais's self-signed one).
    pub insecure: bool,
}

impl MediaLoad {
    pub fn peers(&self) -> usize {
        self.sessions * self.participants
    }

    /// The node the `i`-th connection goes through (`base` on a single node).
    pub fn node(&self, i: usize) -> &str {
        match i % (self.nodes.len() + 1) {
            0 => &self.base,
            n => &self.nodes[n - 1],
        }
    }
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .build()?)
}

/// The server's TURN for `cfg.transport` with fresh credentials (`/webrtc/ice-servers`): the
/// first URL of that kind, or the one on `cfg.turn_port`.
pub async fn turn_config(api: &ApiClient, cfg: &MediaLoad) -> anyhow::Result<TurnConfig> {
    let carrier = cfg
        .transport
        .turn_carrier()
        .ok_or_else(|| anyhow::anyhow!("{} is not a TURN transport", cfg.transport.name()))?;
    let (status, v) = api
        .call(
            reqwest::Method::GET,
            "/api/messaging/webrtc/ice-servers",
            None,
        )
        .await?;
    anyhow::ensure!(status.is_success(), "ice-servers: {status} {v}");
    let server = &v["data"]["iceServers"][0];
    let (host, port) = server["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str())
        .filter(|u| carrier.matches(u))
        .filter_map(turn_url_host_port)
        .find(|(_, port)| cfg.turn_port.is_none_or(|p| p == *port))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the server offers no {} URL{}",
                cfg.transport.name(),
                cfg.turn_port
                    .map(|p| format!(" on port {p}"))
                    .unwrap_or_default()
            )
        })?;
    let server_addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("TURN address {host}:{port} does not resolve"))?;
    Ok(TurnConfig {
        carrier,
        host,
        insecure: cfg.insecure,
        server: server_addr,
        username: server["username"].as_str().unwrap_or_default().to_string(),
        password: server["credential"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Runs the scenario against relais and reports (an `Err` only when nothing could start).
pub async fn run(cfg: &MediaLoad, minter: &TokenMinter) -> anyhow::Result<MediaReport> {
    let http = http()?;
    let probe = Probe::Relais {
        http: http.clone(),
        base: cfg.base.clone(),
        pid: cfg.server_pid,
    };
    let first = probe.sample().await;
    anyhow::ensure!(
        first.reachable,
        "the server at {} does not answer (GET /metrics failed): is it running?",
        cfg.base
    );
    let failures = Failures::default();
    let bar = ProgressBar::new(cfg.progress);
    let turn = if cfg.transport.is_turn() {
        let who = Identity::new(Role::Medecin, cfg.first_id);
        let api = ApiClient::new(http.clone(), &cfg.base, &minter.token(who));
        Some(turn_config(&api, cfg).await?)
    } else {
        None
    };
    let pattern = Arc::new(cfg.pattern.clone());
    let factory = Arc::new(RtcFactory::new(pattern.clone())?);
    let shards: Vec<ShardHandle<RtcLeg>> =
        (0..cfg.shards.max(1)).map(|_| engine::spawn()).collect();
    let (stop_tx, stop_rx) = watch::channel(false);

    // Sessions at the ramp rate.
    let gap = Duration::from_secs_f64(1.0 / cfg.ramp_per_s.max(0.1));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..cfg.sessions {
        tokio::time::sleep_until((t0 + gap * s as u32).into()).await;
        let ctx = SessionCtx {
            cfg: cfg.clone(),
            http: http.clone(),
            factory: factory.clone(),
            shards: shards.clone(),
            failures: failures.clone(),
            stop: stop_rx.clone(),
            turn: turn.clone(),
        };
        let tokens: Vec<String> = (0..cfg.participants)
            .map(|k| minter.token(identity(cfg, s, k)))
            .collect();
        tasks.push(tokio::spawn(
            async move { start_session(ctx, s, tokens).await },
        ));
        bar.update(
            "ramp",
            (s + 1) as f64,
            cfg.sessions as f64,
            &format!("sessions started {}/{}", s + 1, cfg.sessions),
        );
    }
    let mut joined: Vec<Joined> = Vec::new();
    let mut sessions_failed = 0;
    // Each session task is bounded by its participants' join timeouts.
    for t in tasks {
        match t.await {
            Ok((list, ok)) => {
                joined.extend(list);
                sessions_failed += usize::from(!ok);
            }
            Err(e) => {
                failures.add(&format!("session task: {e}"));
                sessions_failed += 1;
            }
        }
    }
    bar.finish();
    bar.say(&format!(
        "{} of {} peers connected; warming up for {:?}",
        joined.len(),
        cfg.peers(),
        cfg.warmup
    ));

    let mut measured = measure(&shards, &probe, cfg.warmup, cfg.duration, &bar, cfg.peers()).await;
    measured.initial = Some(first);
    let _ = stop_tx.send(true);
    close_all(&joined).await;
    Ok(report_of(
        cfg,
        "relais",
        measured,
        sessions_failed,
        &failures,
    ))
}

pub(super) fn report_of(
    cfg: &MediaLoad,
    target: &str,
    m: Measured,
    sessions_failed: usize,
    failures: &Failures,
) -> MediaReport {
    let mut r = m.into_report(
        target,
        cfg.transport.name(),
        cfg.sessions,
        cfg.participants,
        cfg.peers(),
    );
    r.sessions_failed = sessions_failed;
    r.failures = failures.list();
    r
}

/// Closes every leg (a DTLS goodbye) and waits, bounded, for the signaling tasks to leave.
async fn close_all(joined: &[Joined]) {
    for j in joined {
        j.shard.remove(j.leg).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for j in joined {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, async {
            while !j.signaling.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        j.signaling.abort();
    }
}

fn identity(cfg: &MediaLoad, session: usize, k: usize) -> Identity {
    if k == 0 {
        Identity::new(Role::Medecin, cfg.first_id + session as i64)
    } else {
        Identity::new(
            Role::Patient,
            cfg.first_id + (session * cfg.participants + k) as i64,
        )
    }
}

struct SessionCtx {
    cfg: MediaLoad,
    http: reqwest::Client,
    factory: Arc<RtcFactory>,
    shards: Vec<ShardHandle<RtcLeg>>,
    failures: Failures,
    stop: watch::Receiver<bool>,
    turn: Option<TurnConfig>,
}

/// One consultation: REST as the doctor, then each participant joins. Returns the joined
/// participants and whether all of them did.
async fn start_session(ctx: SessionCtx, s: usize, tokens: Vec<String>) -> (Vec<Joined>, bool) {
    let cfg = &ctx.cfg;
    let api = ApiClient::new(ctx.http.clone(), cfg.node(s), &tokens[0]);
    let (session, conversation, code) = match create_session(cfg, &api, s).await {
        Ok(x) => x,
        Err(e) => {
            ctx.failures.add(&e.to_string());
            return (Vec::new(), false);
        }
    };
    let mut out = Vec::new();
    let mut all = true;
    for (k, token) in tokens.into_iter().enumerate() {
        // Each participant gets TURN credentials of its own, as a browser does (the server
        // limits allocations per user).
        let turn = match &ctx.turn {
            Some(_) => {
                let own = ApiClient::new(ctx.http.clone(), &cfg.base, &token);
                match turn_config(&own, cfg).await {
                    Ok(t) => Some(t),
                    Err(e) => {
                        ctx.failures.add(&format!("TURN credentials: {e}"));
                        all = false;
                        if k == 0 {
                            break; // no session without its doctor
                        }
                        continue;
                    }
                }
            }
            None => None,
        };
        let p = Participant {
            base: cfg.node(s + k).to_string(),
            token,
            who: identity(cfg, s, k),
            session,
            conversation,
            entry: if k == 0 {
                Entry::Publish
            } else {
                Entry::Code(code.clone())
            },
            video: cfg.pattern.video,
            transport: cfg.transport,
            turn,
            tcp_port: cfg.tcp_port,
            bind: cfg.bind,
            tag_base: ((s * cfg.participants + k) as u32) << 4,
            rejoin_within: cfg.rejoin_within,
        };
        let shard = ctx.shards[(s * cfg.participants + k) % ctx.shards.len()].clone();
        match signaling::join(
            p,
            shard,
            ctx.factory.clone(),
            ctx.failures.clone(),
            ctx.stop.clone(),
            cfg.join_timeout,
        )
        .await
        {
            Ok(j) => out.push(j),
            Err(e) => {
                let role = if k == 0 { "doctor" } else { "patient" };
                ctx.failures.add(&format!("{role} join: {e}"));
                all = false;
                if k == 0 {
                    break; // nobody can join a session whose doctor is not there
                }
            }
        }
    }
    if cfg.record && all {
        let path = format!("/api/messaging/webrtc/sessions/{session}/recording");
        if let Err(e) = api
            .call_ok(
                reqwest::Method::POST,
                &path,
                Some(&json!({"consent": true})),
            )
            .await
        {
            ctx.failures.add(&format!("start recording: {e}"));
        }
    }
    (out, all)
}

/// Conversation and session as the doctor: `(session id, conversation id, join code)`.
async fn create_session(
    cfg: &MediaLoad,
    api: &ApiClient,
    s: usize,
) -> anyhow::Result<(i64, i64, String)> {
    let parts: Vec<(&str, i64)> = (1..cfg.participants)
        .map(|k| ("patient", identity(cfg, s, k).id.0))
        .collect();
    let kind = if cfg.participants == 2 {
        "private"
    } else {
        "group"
    };
    let conv = api
        .create_conversation(kind, &parts)
        .await
        .map_err(|e| anyhow::anyhow!("create conversation: {e}"))?;
    let v = api
        .call_ok(
            reqwest::Method::POST,
            "/api/messaging/webrtc/sessions?generate_conference_link=true",
            Some(&json!({"conversation_id": conv, "session_type": if cfg.pattern.video { "audio_video" } else { "audio_only" },
                // Synthetic peers: nobody in the waiting room to admit them.
                "waiting_room": false})),
        )
        .await
        .map_err(|e| anyhow::anyhow!("create session: {e}"))?;
    let session = v["data"]["session"]["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("create session: no id in {v}"))?;
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((session, conv, code))
}
