//! A lossy UDP path between WebRTC clients and the server's media port: a proxy that the
//! server advertises as its media address (`media.public_ips`), which drops a share of the
//! datagrams in each direction and holds some back so that they arrive out of order.
//!
//! Why not `tc netem` in a network namespace: the kernels this suite runs on (CI's
//! Firecracker VMs included) are built without `sch_netem` ("Specified qdisc kind is
//! unknown"), so netem cannot be relied on; a proxy works anywhere, as any user. It behaves
//! like a NAT: one upstream socket per client address. Everything is on loopback.
//!
//! Only media (SRTP and SRTCP, first byte 128–191 per RFC 7983) is impaired: STUN and DTLS
//! pass untouched, so the connection comes up in bounded time (aiortc's DTLS retransmission
//! timers would otherwise make a lost handshake flight take many seconds).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UdpSocket;

use crate::common::{Backend, Options, TestApp, spawn_app_with};

/// A server whose clients reach its media port only through a [`LossyUdpProxy`] on `ip` (a
/// loopback address of its own), with 5 % loss and 15 % reordering each way.
pub async fn app_behind_lossy_proxy(ip: &str, seed: u64) -> (TestApp, LossyUdpProxy) {
    let ip: std::net::IpAddr = ip.parse().expect("an IP address");
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(move |c| {
        c.media.public_ips = vec![ip];
        c.media.ice_tcp = false;
        c.turn.enabled = false;
    }))
    .await;
    let media = app.state().sfu.media_addr();
    let listen = SocketAddr::new(ip, media.port());
    let proxy = LossyUdpProxy::start(listen, media, Impairment::five_percent(seed)).await;
    (app, proxy)
}

#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Share of datagrams dropped, each direction.
    pub loss: f64,
    /// Share of datagrams held back (the others pass at once)…
    pub reorder: f64,
    /// …by a delay drawn uniformly from this range (ms).
    pub delay_ms: (u64, u64),
    pub seed: u64,
}

impl Impairment {
    /// 5 % loss, and 15 % of datagrams late by 5 to 40 ms (so they arrive after later ones).
    pub fn five_percent(seed: u64) -> Self {
        Self {
            loss: 0.05,
            reorder: 0.15,
            delay_ms: (5, 40),
            seed,
        }
    }
}

/// What the proxy did, both directions together.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
}

struct Rng(Mutex<u64>);

impl Rng {
    fn next_f64(&self) -> f64 {
        let mut s = self.0.lock();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct LossyUdpProxy {
    pub stats: Arc<ProxyStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    upstreams: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for LossyUdpProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.upstreams.lock().iter() {
            t.abort();
        }
    }
}

/// Sends `data` from `socket` to `to` after the impairment decided (drop, now, or later).
fn impaired_send(
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
    imp: Impairment,
    rng: &Rng,
    stats: &Arc<ProxyStats>,
) {
    let media = matches!(data.first(), Some(128..=191));
    if !media {
        let _ = socket.try_send_to(&data, to);
        return;
    }
    if rng.next_f64() < imp.loss {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    if rng.next_f64() < imp.reorder {
        stats.delayed.fetch_add(1, Ordering::Relaxed);
        let (lo, hi) = imp.delay_ms;
        let ms = lo + ((hi - lo) as f64 * rng.next_f64()) as u64;
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = socket.send_to(&data, to).await;
        });
    } else {
        let _ = socket.try_send_to(&data, to);
    }
}

impl LossyUdpProxy {
    /// Listens on `listen` (the address the server advertises) and forwards to `upstream`
    /// (the server's real media socket).
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, imp: Impairment) -> Self {
        let front = Arc::new(UdpSocket::bind(listen).await.expect("bind the proxy"));
        let stats = Arc::new(ProxyStats::default());
        let rng = Arc::new(Rng(Mutex::new(imp.seed | 1)));
        let upstreams = Arc::new(Mutex::new(Vec::new()));
        let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let task = {
            let (front, stats, rng, upstreams) =
                (front.clone(), stats.clone(), rng.clone(), upstreams.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut buf).await else {
                        return;
                    };
                    let existing = clients.lock().get(&from).cloned();
                    let up = match existing {
                        Some(up) => up,
                        None => {
                            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
                            let Ok(sock) = UdpSocket::bind(any).await else {
                                continue;
                            };
                            let up = Arc::new(sock);
                            clients.lock().insert(from, up.clone());
                            // Replies from the server go back to this client.
                            let (up2, front2, stats2, rng2) =
                                (up.clone(), front.clone(), stats.clone(), rng.clone());
                            upstreams.lock().push(tokio::spawn(async move {
                                let mut buf = vec![0u8; 65_536];
                                while let Ok((n, _)) = up2.recv_from(&mut buf).await {
                                    impaired_send(
                                        &front2,
                                        from,
                                        buf[..n].to_vec(),
                                        imp,
                                        &rng2,
                                        &stats2,
                                    );
                                }
                            }));
                            up
                        }
                    };
                    impaired_send(&up, upstream, buf[..n].to_vec(), imp, &rng, &stats);
                }
            })
        };
        Self {
            stats,
            tasks: vec![task],
            upstreams,
        }
    }
}
