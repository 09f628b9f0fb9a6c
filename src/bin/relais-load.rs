//! `relais-load`: drives synthetic doctors and patients against a running relais and reports
//! what it measured.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// One synthetic participant in a session, until `--duration` passes or it is killed
    /// (prints `connected` once its media is up, then a JSON summary at the end).
    Peer(PeerArgs),
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
            let mut peer = ClientPeer::start(cfg).await?;
            peer.wait_connected(Duration::from_secs(15)).await?;
            println!("connected");
            tokio::time::sleep(a.duration).await;
            let streams = peer.received.snapshot();
            let summary = serde_json::json!({
                "streams": streams.len(),
                "packets": streams.values().map(|s| s.packets).sum::<u64>(),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
