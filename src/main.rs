//! The `relais` command: `serve` (default), `migrate`, `token`, `audit verify`, `ready`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// mimalloc: fewer cycles per allocation on the media path and less fragmentation than the
// system allocator under many threads (measured with relais-load, see README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of the vendored mimalloc (`mimalloc.h`, `mi_option_e`, the same
/// index in its v2 and v3 headers), which the Rust bindings do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc settings that keep resident memory per PeerConnection and per recording low
/// (README, Benchmarks), with no measurable CPU cost. Variables already in the environment
/// win.
/// - `MIMALLOC_ARENA_EAGER_COMMIT=0`: arena memory is committed as it is used; eagerly
///   committed arenas made every allocating thread (each recording has one) ~8 MiB resident.
///   mimalloc reads it when it creates its first arena, before `main`: it must be in the
///   environment when the process starts, hence [`reexec_with_allocator_env`].
/// - purge delay 0: freed memory goes back to the OS at once instead of after 10 ms.
const ALLOCATOR_ENV: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option (first line of main, one thread).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Runs this same program again with [`ALLOCATOR_ENV`] set, unless it is set already
/// (then, or when the re-exec fails, it returns and the process goes on as it is).
fn reexec_with_allocator_env() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(ALLOCATOR_ENV).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ALLOCATOR_ENV, "0")
        .exec();
    eprintln!("relais: note: could not restart with {ALLOCATOR_ENV}=0 ({err}); going on");
}

use clap::{Parser, Subcommand};
use relais::config::{Config, Override};
use relais::ids::{Identity, Role};

#[derive(Parser)]
#[command(name = "relais", version, about = "Telemedicine consultation server")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "RELAIS_CONFIG")]
    config: Option<PathBuf>,
    /// Override any setting: `--set http.addr=127.0.0.1:3000` (repeatable; beats file and env).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Shorthand for `--set data_dir=…`.
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// Shorthand for `--set database_url=…`.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Shorthand for `--set http.addr=…`.
    #[arg(long, global = true)]
    http_addr: Option<String>,
    /// Shorthand for `--set https.addr=…`.
    #[arg(long, global = true)]
    https_addr: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print a signed development token.
    Token {
        /// `medecin` or `patient`.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        id: i64,
        /// Display name carried in the token (`nom`).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Health check: exit 0 when the server on this machine answers `/readyz` (its database
    /// answers), 1 otherwise. For container and service-manager health checks.
    Ready {
        /// The URL to ask; default `/readyz` on `http.addr` (loopback when it is 0.0.0.0).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the configured database's audit trail: print the number of
    /// records when every one checks (exit 0), or name the first broken record (exit 1).
    Verify,
}

fn overrides(cli: &Cli) -> Result<Vec<Override>, relais::config::ConfigError> {
    let mut out = Vec::new();
    for (key, value) in [
        ("data_dir", &cli.data_dir),
        ("database_url", &cli.database_url),
        ("http.addr", &cli.http_addr),
        ("https.addr", &cli.https_addr),
    ] {
        if let Some(v) = value {
            out.push(Override {
                key: key.into(),
                value: v.clone(),
                origin: format!("--{}", key.replace(['.', '_'], "-")),
            });
        }
    }
    for s in &cli.set {
        out.push(Override::parse_flag(s)?);
    }
    Ok(out)
}

fn main() -> ExitCode {
    reexec_with_allocator_env();
    tune_allocator();
    let cli = Cli::parse();
    let config = match overrides(&cli).and_then(|o| Config::from_process(cli.config.as_deref(), &o))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relais: {e}");
            return ExitCode::from(2);
        }
    };
    relais::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relais: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let app = relais::app::App::build(config).await?;
                app.run(relais::app::shutdown_signal()).await
            }
            Command::Migrate => {
                let store = relais::store::Store::connect(&config.database_url()).await?;
                store.migrate().await?;
                store.close().await;
                println!("migrations applied ({})", store.backend().as_str());
                Ok(())
            }
            Command::Token {
                role,
                id,
                name,
                ttl,
            } => {
                anyhow::ensure!(id > 0, "--id must be a positive number");
                let verifier =
                    relais::auth::TokenVerifier::from_config(&config.auth, &config.data_dir)?;
                println!(
                    "{}",
                    verifier.mint(Identity::new(role, id), name.as_deref(), ttl)?
                );
                Ok(())
            }
            Command::Audit {
                command: AuditCommand::Verify,
            } => {
                let store = relais::store::Store::connect(&config.database_url()).await?;
                let verdict = relais::audit::Audit::verify(&store).await;
                store.close().await;
                match verdict? {
                    relais::audit::Verdict::Intact { count, head } => {
                        match head {
                            Some(h) => println!(
                                "audit trail OK: {count} records, newest #{} ({})",
                                h.seq, h.hash
                            ),
                            None => println!("audit trail OK: 0 records"),
                        }
                        Ok(())
                    }
                    relais::audit::Verdict::Broken { checked, broken } => Err(anyhow::anyhow!(
                        "audit trail BROKEN: {broken} ({checked} records before it check)"
                    )),
                }
            }
            Command::Ready { url, timeout } => {
                let url =
                    url.unwrap_or_else(|| relais::http::ops::local_ready_url(config.http.addr));
                relais::http::ops::probe_ready(&url, timeout).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais: {e:#}");
            ExitCode::FAILURE
        }
    }
}
