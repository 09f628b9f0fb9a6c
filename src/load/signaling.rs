//! One synthetic participant's signaling with relais, as the browser client does it: a
//! Socket.IO connection with its token; the doctor publishes (`webrtc_offer`), a patient asks
//! for the server's offer with the join code (`request_webrtc_offer`) and answers it; later
//! offers (someone joined or left) are answered; candidates are added as they come. For
//! ICE-TCP, the connection to the server's passive candidate is opened here and handed to the
//! leg.
//!
//! Everything is bounded in time: connecting, each shard call, waiting to be connected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::engine::io::{Io, TransportKind, TurnConfig};
use super::engine::rtc_leg::{RtcFactory, RtcLeg, passive_tcp_candidates};
use super::engine::{LegId, ShardError, ShardHandle};
use super::failures::Failures;
use crate::client::socketio::{ConnectOptions, SioClient};
use crate::ids::Identity;

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
    pub bind: std::net::IpAddr,
    pub tag_base: u32,
}

/// A participant whose leg lives in a shard.
pub struct Joined {
    pub shard: ShardHandle<RtcLeg>,
    pub leg: LegId,
    pub signaling: tokio::task::JoinHandle<()>,
}

const TCP_CONNECT: Duration = Duration::from_secs(5);

/// Connects the participant and returns once its PeerConnection is connected (or failed, or
/// `join_timeout` passed; the leg stays in its shard either way, to be counted).
pub async fn join(
    p: Participant,
    shard: ShardHandle<RtcLeg>,
    factory: Arc<RtcFactory>,
    failures: Failures,
    stop: watch::Receiver<bool>,
    join_timeout: Duration,
) -> anyhow::Result<Joined> {
    let started = Instant::now();
    let auth =
        json!({"token": p.token, "userType": p.who.role, "userId": p.who.id.0, "role": p.who.role});
    let opts = ConnectOptions {
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let sio = SioClient::connect_with(&p.base, auth, opts)
        .await
        .map_err(|e| anyhow::anyhow!("socket.io connect: {e}"))?;
    let io = match p.transport {
        TransportKind::Udp => Io::udp(p.bind).await?,
        TransportKind::Tcp => Io::tcp_unconnected(p.bind),
        TransportKind::TurnUdp => {
            let turn = p
                .turn
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("turn-udp without TURN settings"))?;
            Io::turn(p.bind, turn, Instant::now()).await?
        }
    };
    let leg = factory.leg(io, p.transport, started, p.tag_base, true)?;
    let id = shard.add(leg).await?;
    let deadline = started + join_timeout;
    // TURN: our relay candidate must exist before any description is made.
    while !shard.call(id, |l, _, _| l.relay_ready()).await?? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no TURN allocation within {join_timeout:?}"
        );
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
    let task = tokio::spawn(events(p.clone(), sio, shard.clone(), id, failures, stop));
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

/// The participant's signaling after it entered, until `stop`.
async fn events(
    p: Participant,
    mut sio: SioClient,
    shard: ShardHandle<RtcLeg>,
    id: LegId,
    failures: Failures,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let ev = tokio::select! {
            ev = sio.next_event() => ev,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(ev) = ev else {
            if !*stop.borrow() {
                failures.add("signaling connection lost");
            }
            break;
        };
        if let Err(e) = on_event(&p, &sio, &shard, id, &ev.name, ev.data).await {
            // The leg was removed (the run is ending, or the leg failed and said so): what the
            // server still sends it is not a failure of its own.
            if matches!(e.downcast_ref::<ShardError>(), Some(ShardError::NoLeg)) {
                break;
            }
            failures.add(&format!("{}: {e}", ev.name));
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sio.emit("leave_session", &json!({"sessionId": p.session})),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sio.close()).await;
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
    for addr in passive_tcp_candidates(sdp) {
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
