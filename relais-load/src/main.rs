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
use relais_load::load::TokenMinter;

#[derive(Parser)]
#[command(name = "relais-load", version, about = "Load generator for relais")]
struct Cli {
    /// Server origin.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Another node of the same relais cluster (repeatable): connections spread over `--url`
    /// and these; in `messaging`, every message crosses nodes.
    #[arg(long = "node", global = true, value_name = "URL")]
    nodes: Vec<String>,
    /// The server's JWT secret (HS256).
    #[arg(long, global = true, env = "RELAIS_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// The server's data directory, to use its development secret instead.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// A certificate (PEM) to trust for an `https` `--url`, e.g. relais's self-signed one
    /// (`certs/relais-selfsigned.crt`); `peer` only.
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
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
    /// The bare UDP relay used as a baseline (started by `media --baseline`).
    #[command(hide = true)]
    Relay(RelayArgs),
}

#[derive(Args)]
struct MediaArgs {
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Participants per session (2 = a 1:1 consultation, more = a group).
    #[arg(long, default_value_t = 2)]
    participants: usize,
    /// Sessions started per second.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Video bitrate per publisher, bit/s.
    #[arg(long, default_value_t = 1_000_000)]
    video_bitrate: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    keyframe_interval: Duration,
    /// Video codec the synthetic frames claim: vp8, vp9 or h264.
    #[arg(long, default_value = "vp8")]
    codec: String,
    #[arg(long)]
    audio_only: bool,
    /// Media transport: `udp`, `tcp` (ICE-TCP), or relay candidates only through the
    /// server's TURN over UDP (`turn-udp`), TCP (`turn-tcp`) or TLS (`turn-tls`, with
    /// `--insecure`).
    #[arg(long, default_value = "udp")]
    transport: String,
    /// TURN: use the server's URL on this port for the transport (default: its first one),
    /// e.g. TURN/TLS on the shared HTTPS port.
    #[arg(long)]
    turn_port: Option<u16>,
    /// ICE-TCP: use only the server's passive candidate on this port.
    #[arg(long)]
    tcp_port: Option<u16>,
    /// TURN over TLS: accept the server's certificate without checking it (relais's
    /// self-signed one).
    #[arg(long)]
    insecure: bool,
    /// Tasks driving the synthetic peers (default: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Local address of the peers' sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    join_timeout: Duration,
    /// After losing its signaling or its media (e.g. the server restarted), how long a
    /// participant keeps trying to rejoin, every 500 ms (0s: it does not).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    rejoin_within: Duration,
    #[arg(long, default_value_t = 500_000)]
    first_id: i64,
    /// The server's process id: adds its CPU per forwarded packet and RSS per PeerConnection.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also run the same pattern through a bare UDP relay (the floor), after relais.
    #[arg(long)]
    baseline: bool,
    /// Also run the same scenario through Janus VideoRoom (started on loopback from Debian's
    /// `janus`), after relais.
    #[arg(long)]
    janus: bool,
    /// Run only this target: `relais` (default), `bare-relay` or `janus`.
    #[arg(long)]
    target: Option<String>,
    /// Janus binary to start.
    #[arg(long, default_value = "janus")]
    janus_bin: PathBuf,
    /// Write an SVG plot of throughput and latency over time here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// The doctor of each consultation records it (with consent) once everyone joined:
    /// compare a run with and without to see what recording costs (relais only).
    #[arg(long)]
    record: bool,
}

#[derive(Args)]
struct RelayArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
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
    http: reqwest::Client,
    base: &str,
    token: &str,
    transport: &str,
) -> anyhow::Result<rtc::peer_connection::configuration::RTCIceServer> {
    let api = relais_load::client::api::ApiClient::new(http, base, token);
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
        Command::Media(a) => media(&cli, a, &minter).await,
        Command::Relay(_) => unreachable!("handled before the runtime starts"),
        Command::Peer(a) => {
            use relais_load::client::peer::{ClientPeer, Entry, PeerConfig};
            let who = relais::ids::Identity::new(a.role, a.id);
            let entry = match &a.code {
                Some(code) => Entry::Code(code.clone()),
                None => Entry::Publish,
            };
            let mut cfg = PeerConfig::new(&cli.url, &minter.token(who), who, a.session, entry);
            let mut http = reqwest::Client::builder();
            if let Some(path) = &cli.ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
                http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
                cfg.socket.root_cert_pem = Some(pem);
            }
            let http = http.build()?;
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
                cfg.ice_servers = vec![turn_server(http, &cli.url, &cfg.token, transport).await?];
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
            let cfg = relais_load::load::messaging::MessagingLoad {
                base: cli.url.clone(),
                nodes: cli.nodes.clone(),
                conversations: a.conversations,
                rates: a.rates.clone(),
                step: a.step,
                concurrency: a.concurrency,
                first_id: a.first_id,
            };
            eprintln!(
                "messaging load: {} conversations ({} sockets) on {} node(s), steps {:?} msg/s of {:?}",
                cfg.conversations,
                cfg.conversations * 2,
                cfg.nodes.len() + 1,
                cfg.rates,
                cfg.step
            );
            let reports = relais_load::load::messaging::run(&cfg, &minter).await?;
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

async fn media(cli: &Cli, a: &MediaArgs, minter: &TokenMinter) -> anyhow::Result<()> {
    use relais_load::load::engine::io::TransportKind;
    use relais_load::load::report;
    use relais_load::synthetic::{Pattern, VideoCodec};
    let transport = TransportKind::parse(&a.transport).ok_or_else(|| {
        anyhow::anyhow!(
            "--transport: `{}` is not udp, tcp, turn-udp, turn-tcp or turn-tls",
            a.transport
        )
    })?;
    let codec = VideoCodec::parse(&a.codec)
        .ok_or_else(|| anyhow::anyhow!("--codec: `{}` is not vp8, vp9 or h264", a.codec))?;
    anyhow::ensure!(a.participants >= 2, "--participants: at least 2");
    let cfg = relais_load::load::media::MediaLoad {
        base: cli.url.clone(),
        nodes: cli.nodes.clone(),
        sessions: a.sessions,
        participants: a.participants,
        ramp_per_s: a.ramp,
        warmup: a.warmup,
        duration: a.duration,
        pattern: Pattern {
            audio: true,
            video: !a.audio_only,
            codec,
            video_bitrate_bps: a.video_bitrate,
            fps: a.fps.max(1),
            keyframe_interval: a.keyframe_interval,
        },
        first_id: a.first_id,
        server_pid: a.server_pid,
        transport,
        shards: a.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        }),
        bind: a.bind,
        join_timeout: a.join_timeout,
        rejoin_within: a.rejoin_within,
        progress: !a.quiet,
        record: a.record,
        turn_port: a.turn_port,
        tcp_port: a.tcp_port,
        insecure: a.insecure,
    };
    let targets: Vec<&str> = match a.target.as_deref() {
        Some(t @ ("relais" | "bare-relay" | "janus")) => vec![t],
        Some(other) => anyhow::bail!("--target: `{other}` is not relais, bare-relay or janus"),
        None => {
            let mut t = vec!["relais"];
            if a.baseline {
                t.push("bare-relay");
            }
            if a.janus {
                t.push("janus");
            }
            t
        }
    };
    eprintln!(
        "media load: {} sessions x {} participants over {}, {} ({} bit/s, {} fps) + audio, targets {}",
        cfg.sessions,
        cfg.participants,
        transport.name(),
        if cfg.pattern.video {
            a.codec.as_str()
        } else {
            "no video"
        },
        cfg.pattern.video_bitrate_bps,
        cfg.pattern.fps,
        targets.join(", ")
    );
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for t in &targets {
        let r = match *t {
            "relais" => relais_load::load::media::run(&cfg, minter).await,
            "bare-relay" => relais_load::load::baseline::run(&cfg, &std::env::current_exe()?).await,
            _ => relais_load::load::janus::run(&cfg, &a.janus_bin).await,
        };
        match r {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("{t}: {e:#}");
                errors.push(format!("{t}: {e:#}"));
            }
        }
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let comparison = report::Comparison::new(command, runs);
    println!("\n{}", report::table(&comparison.runs));
    print!("{}", report::notes(&comparison));
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&comparison)?)?;
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, report::svg(&comparison.runs))?;
    }
    // Exit status: every target ran, every peer connected, media flowed, the server answered.
    for r in &comparison.runs {
        if r.peers_connected < r.peers {
            errors.push(format!(
                "{}: {} of {} peers did not connect",
                r.target,
                r.peers - r.peers_connected,
                r.peers
            ));
        }
        if r.peers_connected > 0 && r.received_pps <= 0.0 {
            errors.push(format!("{}: no media was received", r.target));
        }
        if r.server_unreachable_samples > 0 {
            errors.push(format!(
                "{}: the server stopped answering during the run ({} samples)",
                r.target, r.server_unreachable_samples
            ));
        }
    }
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Relay(a) = &cli.command {
        // The bare relay: one thread, blocking I/O, no runtime (the floor it stands for).
        let socket = match std::net::UdpSocket::bind(a.bind).and_then(|s| Ok((s.local_addr()?, s)))
        {
            Ok((addr, s)) => {
                println!("listening {addr}");
                s
            }
            Err(e) => {
                eprintln!("relais-load relay: {e}");
                return ExitCode::FAILURE;
            }
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        return match relais_load::load::relay::run(socket, &stop) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relais-load relay: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
