//! The bare-relay baseline: the same sessions and packet pattern as the relais run, as plain
//! RTP over UDP through [`super::relay`] running as a child process (`relais-load relay`), so
//! its CPU per forwarded packet is read from `/proc` exactly as the server's is.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::engine::plain_leg::PlainLeg;
use super::engine::{self, ShardHandle};
use super::failures::Failures;
use super::measure::measure;
use super::media::{MediaLoad, report_of};
use super::probe::Probe;
use super::progress::ProgressBar;
use super::report::MediaReport;

/// The relay child; killed when dropped.
pub struct RelayProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl RelayProcess {
    /// Starts `exe relay --bind <ip>:0` and reads the address it prints (bounded: 5 s).
    pub fn start(exe: &Path, bind: std::net::IpAddr) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(["relay", "--bind", &SocketAddr::new(bind, 0).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start the relay ({}): {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Self { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the relay did not say where it listens (got {line:?})")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the pattern of `cfg` through a bare relay started from `exe`.
pub async fn run(cfg: &MediaLoad, exe: &Path) -> anyhow::Result<MediaReport> {
    let relay = RelayProcess::start(exe, cfg.bind)?;
    let probe = Probe::Relay {
        addr: relay.addr,
        pid: Some(relay.pid()),
    };
    let first = probe.sample().await;
    anyhow::ensure!(first.reachable, "the relay does not answer");
    let bar = ProgressBar::new(cfg.progress);
    let pattern = Arc::new(cfg.pattern.clone());
    let shards: Vec<ShardHandle<PlainLeg>> =
        (0..cfg.shards.max(1)).map(|_| engine::spawn()).collect();
    let failures = Failures::default();
    let gap = Duration::from_secs_f64(1.0 / cfg.ramp_per_s.max(0.1));
    for s in 0..cfg.sessions {
        for k in 0..cfg.participants {
            let i = s * cfg.participants + k;
            match PlainLeg::new(
                cfg.bind,
                relay.addr,
                s as u32,
                pattern.clone(),
                (i as u32) << 4,
            )
            .await
            {
                Ok(leg) => {
                    if let Err(e) = shards[i % shards.len()].add(leg).await {
                        failures.add(&format!("shard: {e}"));
                    }
                }
                Err(e) => failures.add(&format!("socket: {e}")),
            }
        }
        bar.update(
            "ramp",
            (s + 1) as f64,
            cfg.sessions as f64,
            &format!("bare relay sessions {}/{}", s + 1, cfg.sessions),
        );
        tokio::time::sleep(gap).await;
    }
    bar.finish();
    let mut measured = measure(&shards, &probe, cfg.warmup, cfg.duration, &bar, cfg.peers()).await;
    measured.initial = Some(first);
    drop(shards);
    drop(relay);
    let mut r = report_of(cfg, "bare-relay", measured, 0, &failures);
    r.transport = "plain-udp".into();
    // Nothing is set up per peer: a per-PeerConnection memory figure means nothing here.
    r.server_rss_kib_per_peer = None;
    Ok(r)
}
