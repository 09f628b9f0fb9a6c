//! The browser's network for the interop matrix: a namespace whose only interfaces are `lo` and
//! one veth of this test, the other end in the test's namespace where the server listens.
//! Chromium gathers candidates on every interface it sees; here it sees only these.
//!
//! ```text
//!  test namespace (relais, aiortc, webrtc-rs)        relais-iop-PID (chromium)
//!  10.213.0.1 ─────────────── veth ─────────────── 10.213.0.2
//! ```
//!
//! Everything is removed on drop: the processes started in the namespace (by pid), then the
//! namespace (which takes the veth pair with it).

use std::process::{Command, Stdio};
use std::time::Duration;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct Lab {
    ns: String,
}

impl Lab {
    pub fn build() -> Result<Self, String> {
        let pid = std::process::id();
        let ns = format!("relais-iop-{pid}");
        let host = format!("ri{}", pid % 100_000);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &host])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &ns])?;
        let lab = Self { ns };
        ip(&["-n", &lab.ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "e0", "netns", &lab.ns,
        ])?;
        ip(&["addr", "add", "10.213.0.1/24", "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        ip(&["-n", &lab.ns, "addr", "add", "10.213.0.2/24", "dev", "e0"])?;
        ip(&["-n", &lab.ns, "link", "set", "e0", "up"])?;
        Ok(lab)
    }

    /// The server's address, as the namespace reaches it.
    pub fn host_ip(&self) -> String {
        "10.213.0.1".into()
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for signal in ["-TERM", "-KILL"] {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .args([signal, &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
