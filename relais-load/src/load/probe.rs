//! What the media server did, seen from outside: its counters (relais's `/metrics`, the bare
//! relay's stats datagram) and its process's CPU time and resident memory (`/proc`).

use std::net::SocketAddr;
use std::time::Duration;

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

/// Bytes a process has caused to be written to storage (`write_bytes` of `/proc/<pid>/io`:
/// recordings, the database, logs).
pub fn process_disk_write_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// One reading of the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    /// False when the server could not be read (down, refusing, timing out).
    pub reachable: bool,
    /// Packets the server says it forwarded; `None` when it does not say.
    pub forwarded: Option<f64>,
    pub nacks: f64,
    pub plis: f64,
    pub dropped: f64,
    pub cpu_ns: Option<u64>,
    pub rss_kib: Option<u64>,
    pub disk_write_bytes: Option<u64>,
}

/// Where the figures come from.
#[derive(Clone)]
pub enum Probe {
    /// relais: `/metrics` over HTTP.
    Relais {
        http: reqwest::Client,
        base: String,
        pid: Option<u32>,
    },
    /// The bare relay: its stats datagram.
    Relay { addr: SocketAddr, pid: Option<u32> },
    /// A server with no counters of its own (Janus): process figures only.
    Process { pid: Option<u32> },
}

impl Probe {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Probe::Relais { pid, .. } | Probe::Relay { pid, .. } | Probe::Process { pid } => *pid,
        }
    }

    pub async fn sample(&self) -> ServerSample {
        let pid = self.pid();
        let mut s = ServerSample {
            cpu_ns: pid.and_then(process_cpu_ns),
            rss_kib: pid.and_then(process_rss_kib),
            disk_write_bytes: pid.and_then(process_disk_write_bytes),
            ..Default::default()
        };
        match self {
            Probe::Relais { http, base, .. } => {
                let text = async {
                    let r = http
                        .get(format!("{base}/metrics"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .ok()?;
                    if !r.status().is_success() {
                        return None;
                    }
                    r.text().await.ok()
                }
                .await;
                let Some(text) = text else { return s };
                let value = |name: &str| -> f64 {
                    text.lines()
                        .filter(|l| l.starts_with(name))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .sum()
                };
                s.reachable = true;
                s.forwarded = Some(value("relais_rtp_packets_forwarded_total"));
                s.nacks = value("relais_nacks_received_total");
                s.plis = value("relais_plis_sent_total");
                s.dropped = value("relais_rtp_packets_dropped_total");
            }
            Probe::Relay { addr, .. } => {
                let n = super::relay::forwarded(*addr).await;
                s.reachable = n.is_some();
                s.forwarded = n.map(|n| n as f64);
            }
            Probe::Process { pid } => {
                s.reachable = pid.is_none_or(|p| process_cpu_ns(p).is_some());
            }
        }
        s
    }
}
