//! `relais-load`: drives synthetic doctors and patients against a running relais and reports
//! what it measured.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// mimalloc: fewer cycles per allocation on the media path and less fragmentation than the
// system allocator under many threads (measured with relais-load, see README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use relais::load::TokenMinter;

#[derive(Parser)]
#[command(name = "relais-load", version, about = "Load generator for relais")]
struct Cli {
    /// Server origin.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// The server's JWT secret (HS256).
    #[arg(long, global = true, env = "RELAIS_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// The server's data directory, to use its development secret instead.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Messaging: REST sends at stepped rates, delivery to the other participant's socket.
    Messaging(MessagingArgs),
    /// Media: N consultations of synthetic peers through the SFU, measured end to end.
    Media(MediaArgs),
    /// One synthetic participant in a session, until `--duration` passes or it is killed
    /// (prints `connected` once its media is up, then a JSON summary at the end).
    Peer(PeerArgs),
}

#[derive(Args)]
struct MediaArgs {
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Participants per session (2 = a 1:1 consultation).
    #[arg(long, default_value_t = 2)]
    participants: usize,
    /// Sessions started per second.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 1_000_000)]
    video_bitrate: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    keyframe_interval: Duration,
    #[arg(long)]
    audio_only: bool,
    #[arg(long, default_value_t = 500_000)]
    first_id: i64,
    /// The server's process id: adds its CPU per forwarded packet and RSS per PeerConnection.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct PeerArgs {
    #[arg(long)]
    session: i64,
    #[arg(long, default_value = "patient")]
    role: relais::ids::Role,
    #[arg(long)]
    id: i64,
    /// Join with this code; without it the participant publishes (`webrtc_offer`).
    #[arg(long)]
    code: Option<String>,
    #[arg(long, default_value_t = 0)]
    conversation: i64,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long)]
    audio_only: bool,
    /// Local address of the peer's sockets (its host candidates).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Host candidate transports to gather: `udp`, `tcp` (ICE-TCP, active) or both.
    #[arg(long, value_delimiter = ',', default_value = "udp")]
    transports: Vec<String>,
    /// Use the server's TURN over `udp` (credentials from `/webrtc/ice-servers`).
    #[arg(long)]
    turn: Option<String>,
    /// Relay candidates only (`iceTransportPolicy: "relay"`).
    #[arg(long)]
    relay: bool,
}

#[derive(Args)]
struct MessagingArgs {
    #[arg(long, default_value_t = 200)]
    conversations: usize,
    /// Offered rates in messages per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,3000,4000")]
    rates: Vec<u32>,
    /// Length of each step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step: Duration,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// First synthetic user id (use a fresh range per run to start from empty conversations).
    #[arg(long, default_value_t = 100_000)]
    first_id: i64,
}

/// The server's TURN URL for `transport` with fresh credentials, as an ICE server.
async fn turn_server(
    base: &str,
    token: &str,
    transport: &str,
) -> anyhow::Result<rtc::peer_connection::configuration::RTCIceServer> {
    let api = relais::client::api::ApiClient::new(reqwest::Client::new(), base, token);
    let (status, v) = api
        .call(
            reqwest::Method::GET,
            "/api/messaging/webrtc/ice-servers",
            None,
        )
        .await?;
    anyhow::ensure!(status.is_success(), "ice-servers: {status} {v}");
    let server = &v["data"]["iceServers"][0];
    let wanted = match transport {
        "udp" => "?transport=udp",
        "tcp" => "?transport=tcp",
        other => anyhow::bail!("--turn: `{other}` is not udp or tcp"),
    };
    let url = server["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str())
        .find(|u| u.starts_with("turn:") && u.ends_with(wanted))
        .ok_or_else(|| anyhow::anyhow!("the server offers no TURN over {transport}"))?;
    Ok(rtc::peer_connection::configuration::RTCIceServer {
        urls: vec![url.to_string()],
        username: server["username"].as_str().unwrap_or_default().to_string(),
        credential: server["credential"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

fn minter(cli: &Cli) -> anyhow::Result<TokenMinter> {
    match (&cli.jwt_secret, &cli.data_dir) {
        (Some(s), _) => Ok(TokenMinter::from_secret(s)),
        (None, Some(dir)) => TokenMinter::from_data_dir(dir),
        (None, None) => anyhow::bail!("give --jwt-secret (or RELAIS_JWT_SECRET) or --data-dir"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let minter = minter(&cli)?;
    match &cli.command {
        Command::Media(a) => {
            let cfg = relais::load::media::MediaLoad {
                base: cli.url.clone(),
                sessions: a.sessions,
                participants: a.participants.max(2),
                ramp_per_s: a.ramp,
                warmup: a.warmup,
                duration: a.duration,
                video: !a.audio_only,
                video_bitrate_bps: a.video_bitrate,
                fps: a.fps,
                keyframe_interval: a.keyframe_interval,
                first_id: a.first_id,
                server_pid: a.server_pid,
                progress: Some(std::sync::Arc::new(|line: &str| eprintln!("{line}"))),
            };
            eprintln!(
                "media load: {} sessions x {} participants, video {} ({} bit/s, {} fps)",
                cfg.sessions, cfg.participants, cfg.video, cfg.video_bitrate_bps, cfg.fps
            );
            let r = relais::load::media::run(&cfg, &minter).await?;
            print_media_report(&r);
            if let Some(path) = &cli.json {
                std::fs::write(path, serde_json::to_vec_pretty(&r)?)?;
            }
            anyhow::ensure!(
                r.peers_connected == r.peers,
                "{} of {} peers could not connect",
                r.peers - r.peers_connected,
                r.peers
            );
            Ok(())
        }
        Command::Peer(a) => {
            use relais::client::peer::{ClientPeer, Entry, PeerConfig};
            let who = relais::ids::Identity::new(a.role, a.id);
            let entry = match &a.code {
                Some(code) => Entry::Code(code.clone()),
                None => Entry::Publish,
            };
            let mut cfg = PeerConfig::new(&cli.url, &minter.token(who), who, a.session, entry);
            cfg.conversation_id = a.conversation;
            cfg.video = !a.audio_only;
            let bind = std::net::SocketAddr::new(a.bind, 0).to_string();
            cfg.udp_bind = Vec::new();
            cfg.tcp_bind = Vec::new();
            for t in &a.transports {
                match t.as_str() {
                    "udp" => cfg.udp_bind.push(bind.clone()),
                    "tcp" => cfg.tcp_bind.push(bind.clone()),
                    other => anyhow::bail!("--transports: `{other}` is neither udp nor tcp"),
                }
            }
            if let Some(transport) = &a.turn {
                cfg.ice_servers = vec![turn_server(&cli.url, &cfg.token, transport).await?];
            }
            cfg.relay_only = a.relay;
            let mut peer = ClientPeer::start(cfg).await?;
            peer.wait_connected(Duration::from_secs(15)).await?;
            println!("connected");
            tokio::time::sleep(a.duration).await;
            let streams = peer.received.snapshot();
            let (audio, video) = peer.received.streams_with(20);
            let pair = peer.selected_pair().await;
            let summary = serde_json::json!({
                "streams": streams.len(),
                "audio_streams": audio,
                "video_streams": video,
                "packets": streams.values().map(|s| s.packets).sum::<u64>(),
                "corrupt": streams.values().map(|s| s.corrupt).sum::<u64>(),
                "local_candidate": pair.as_ref().map(|p| p.local_type.clone()),
                "protocol": pair.as_ref().map(|p| p.protocol.clone()),
            });
            println!("{summary}");
            peer.close().await;
            Ok(())
        }
        Command::Messaging(a) => {
            let cfg = relais::load::messaging::MessagingLoad {
                base: cli.url.clone(),
                conversations: a.conversations,
                rates: a.rates.clone(),
                step: a.step,
                concurrency: a.concurrency,
                first_id: a.first_id,
            };
            eprintln!(
                "messaging load: {} conversations ({} sockets), steps {:?} msg/s of {:?}",
                cfg.conversations,
                cfg.conversations * 2,
                cfg.rates,
                cfg.step
            );
            let reports = relais::load::messaging::run(&cfg, &minter).await?;
            println!(
                "{:>8} {:>8} {:>8} {:>7} {:>10} {:>12} {:>9} {:>9} {:>9}",
                "offered",
                "sent",
                "stored",
                "failed",
                "stored/s",
                "delivered/s",
                "p50 ms",
                "p99 ms",
                "max ms"
            );
            for r in &reports {
                println!(
                    "{:>8} {:>8} {:>8} {:>7} {:>10.0} {:>12.0} {:>9.2} {:>9.2} {:>9.2}",
                    r.offered_per_s,
                    r.sent,
                    r.stored,
                    r.failed,
                    r.stored_per_s,
                    r.delivered_per_s,
                    r.latency_p50_ms,
                    r.latency_p99_ms,
                    r.latency_max_ms
                );
            }
            if let Some(path) = &cli.json {
                std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
            }
            let failed: u64 = reports.iter().map(|r| r.failed).sum();
            anyhow::ensure!(failed == 0, "{failed} sends failed");
            Ok(())
        }
    }
}

fn print_media_report(r: &relais::load::media::MediaReport) {
    let opt = |v: Option<f64>, unit: &str| {
        v.map_or("n/a (give --server-pid)".into(), |v| {
            format!("{v:.1} {unit}")
        })
    };
    let rows: Vec<(&str, String)> = vec![
        ("sessions", r.sessions.to_string()),
        (
            "peers connected",
            format!("{} / {}", r.peers_connected, r.peers),
        ),
        (
            "join time p50 / p99",
            format!("{:.0} / {:.0} ms", r.join_ms_p50, r.join_ms_p99),
        ),
        (
            "first packet p50 / p99",
            format!(
                "{:.0} / {:.0} ms",
                r.first_packet_ms_p50, r.first_packet_ms_p99
            ),
        ),
        ("packets/s sent by peers", format!("{:.0}", r.sent_pps)),
        (
            "packets/s forwarded (server)",
            format!("{:.0}", r.forwarded_pps),
        ),
        (
            "packets/s received by peers",
            format!("{:.0}", r.received_pps),
        ),
        ("loss", format!("{:.3} %", r.loss_pct)),
        (
            "duplicates / corrupt",
            format!("{} / {}", r.duplicates, r.corrupt),
        ),
        (
            "latency p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_max
            ),
        ),
        ("jitter", format!("{:.2} ms", r.jitter_ms)),
        ("NACKs / PLIs", format!("{:.0} / {:.0}", r.nacks, r.plis)),
        ("server drops (window)", format!("{:.0}", r.server_dropped)),
        (
            "server CPU per forwarded packet",
            opt(r.server_cpu_us_per_forwarded_packet, "µs"),
        ),
        (
            "server CPU",
            opt(r.server_cpu_cores.map(|c| c * 100.0), "% of a core"),
        ),
        (
            "server RSS per PeerConnection",
            opt(r.server_rss_kib_per_peer, "KiB"),
        ),
    ];
    println!("\n{:<34} value", "measure");
    for (k, v) in rows {
        println!("{k:<34} {v}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics on stderr (`RUST_LOG`, default: warnings of the WebRTC stack muted).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,rtc=error,rtc_dtls=error,webrtc=error")
            }),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
