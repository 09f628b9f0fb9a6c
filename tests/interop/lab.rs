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

pub use crate::netns_support::is_root;
use crate::netns_support::{Netns, ip};

/// The namespace, and the veth's end in the test's namespace (deleted with the namespace).
pub struct Lab {
    ns: Netns,
}

impl Lab {
    pub fn build() -> Result<Self, String> {
        remove_stale_labs();
        let pid = std::process::id();
        let host = format!("ri{}", pid % 100_000);
        let _ = Command::new("ip")
            .args(["link", "del", &host])
            .stderr(Stdio::null())
            .status();
        let lab = Self {
            ns: Netns::create(format!("relais-iop-{pid}"))?,
        };
        ip(&[
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            "e0",
            "netns",
            &lab.ns.name,
        ])?;
        ip(&["addr", "add", "10.213.0.1/24", "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        lab.ns.ip(&["addr", "add", "10.213.0.2/24", "dev", "e0"])?;
        lab.ns.ip(&["link", "set", "e0", "up"])?;
        Ok(lab)
    }

    /// The server's address, as the namespace reaches it.
    pub fn host_ip(&self) -> String {
        "10.213.0.1".into()
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = self.ns.tokio_command(program);
        c.kill_on_drop(false);
        c
    }
}

/// Labs of runs of this test that were killed before they could clean up (their process is
/// gone): their veth holds 10.213.0.1 too, and would take this lab's traffic.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("relais-iop-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}
