//! The TURN server's IO: it reads the clock, binds the relayed sockets, runs one task per
//! allocation and one timer, and carries out what the pure [`Server`] decides.
//!
//! Per datagram from a client, the shell asks [`Server::handle_client_input`] under a read
//! lock (relays from different connections do not wait for each other) and sends the payload
//! from the allocation's relayed socket after letting go of the lock. Per datagram from a
//! peer, the allocation's task asks its [`Relay`] directly, without the server's lock. Only
//! authenticated Allocate and Refresh, expiries and closing connections take the write lock.
//!
//! relais's own media plane is not reached through the relayed socket but in-process
//! ([`super::local`]): a datagram for it is handed to [`MediaPlane::deliver_relayed`], and
//! the plane hands what it sends to the relayed address to the allocation's [`MediaLink`].
//! The relayed sockets, their tasks and the listeners run on the media runtime, so a relayed
//! packet crosses no runtime.
//!
//! Invariants:
//! - the server, the table of relayed sockets and the media plane's links change under the
//!   same write lock, and every [`Command`] is carried out before it is released: a `ToPeer`
//!   always finds the socket of its allocation, and a freed allocation's socket is closed and
//!   its link detached at once;
//! - the clients are written to without blocking: a full TCP/TLS queue or a full UDP socket
//!   buffer drops the datagram, as any UDP hop would;
//! - the timer sleeps until [`Server::poll_timeout`] and is woken after every request, which
//!   may have moved it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::allocation::{AllocationId, FiveTuple, Relay};
use super::core::{ClientInput, Command, Now, RelayBinder, Server};
use super::local::LocalLink;
use crate::metrics::Metrics;
use crate::sfu::media_plane::{MediaPlane, RelayedClient};
use crate::sfu::types::FastMap;

/// Largest datagram relayed; larger ones are truncated by the kernel and dropped.
const MAX_DATAGRAM: usize = 4096;

/// How to reach a client.
#[derive(Clone)]
pub enum ClientSink {
    Udp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
    },
    /// The writer queue of a TCP or TLS connection.
    Stream(mpsc::Sender<Bytes>),
}

impl ClientSink {
    /// Streams carry padded ChannelData (RFC 8656 §12.5).
    pub fn is_stream(&self) -> bool {
        matches!(self, ClientSink::Stream(_))
    }

    /// Sends without waiting; `false` when the message was dropped.
    pub fn send(&self, data: Vec<u8>) -> bool {
        match self {
            ClientSink::Udp { socket, to } => socket.try_send_to(&data, *to).is_ok(),
            ClientSink::Stream(tx) => tx.try_send(Bytes::from(data)).is_ok(),
        }
    }
}

/// An allocation as relais's media plane reaches it: what the plane sends to the relayed
/// address goes to the client, as the allocation's relay decides.
pub struct MediaLink {
    link: LocalLink,
    sink: ClientSink,
    metrics: Arc<Metrics>,
}

impl RelayedClient for MediaLink {
    fn send_from_media(&self, data: &[u8], at: Instant) {
        let turn = &self.metrics.turn;
        match self.link.from_media(data, at) {
            Ok(message) => {
                if self.sink.send(message) {
                    turn.packets_to_client.inc();
                    turn.packets_in_process.inc();
                    turn.bytes_relayed.inc_by(data.len() as u64);
                } else {
                    turn.drop("client_queue_full");
                }
            }
            Err(reason) => turn.drop(reason),
        }
    }
}

/// One allocation's relayed socket, the task reading it, and its link to the media plane.
struct RelaySocket {
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
    link: LocalLink,
}

struct Inner {
    server: Server,
    relays: FastMap<AllocationId, RelaySocket>,
}

pub struct Shell {
    inner: RwLock<Inner>,
    /// Wakes the timer: the next expiry may have moved.
    timer: Notify,
    pub metrics: Arc<Metrics>,
    /// relais's media plane; its runtime runs the relayed sockets' tasks.
    media: Arc<MediaPlane>,
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Binds relayed sockets for the Allocate being handled, for the client of `sink`, on the
/// media runtime.
struct SocketBinder<'a> {
    sink: &'a ClientSink,
    runtime: &'a Handle,
    bound: Option<(AllocationId, UdpSocket)>,
}

impl RelayBinder for SocketBinder<'_> {
    fn bind(&mut self, id: AllocationId, v6: bool) -> std::io::Result<u16> {
        let addr: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        // Registered with the media runtime, whose task reads it.
        let socket = {
            let _media = self.runtime.enter();
            UdpSocket::from_std(socket)?
        };
        let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        self.bound = Some((id, socket));
        Ok(port)
    }
}

impl Inner {
    /// Carries out every queued command; `binder` holds what an Allocate bound.
    fn run_commands(
        &mut self,
        mut binder: Option<&mut SocketBinder<'_>>,
        metrics: &Arc<Metrics>,
        media: &MediaPlane,
    ) {
        while let Some(command) = self.server.next_command() {
            match command {
                // Only `handle_request` starts relays, with the binder that bound the socket.
                Command::StartRelay {
                    id,
                    relay,
                    relayed,
                    own_media,
                    ..
                } => {
                    let Some(binder) = binder.as_deref_mut() else {
                        continue;
                    };
                    let Some((_, socket)) = binder.bound.take_if(|(bound, _)| *bound == id) else {
                        continue;
                    };
                    let socket = Arc::new(socket);
                    let link =
                        LocalLink::new(relay.clone(), relayed, own_media, binder.sink.is_stream());
                    media.attach_relayed(
                        relayed,
                        Arc::new(MediaLink {
                            link: link.clone(),
                            sink: binder.sink.clone(),
                            metrics: metrics.clone(),
                        }),
                    );
                    let task = media.runtime().spawn(run_relay(
                        socket.clone(),
                        binder.sink.clone(),
                        relay,
                        metrics.clone(),
                    ));
                    self.relays.insert(id, RelaySocket { socket, task, link });
                }
                Command::FreeRelay { id } => {
                    if let Some(r) = self.relays.remove(&id) {
                        r.task.abort();
                        media.detach_relayed(r.link.relayed());
                    }
                }
            }
        }
    }
}

impl Shell {
    pub fn new(server: Server, metrics: Arc<Metrics>, media: Arc<MediaPlane>) -> Arc<Self> {
        Arc::new(Self {
            inner: RwLock::new(Inner {
                server,
                relays: FastMap::default(),
            }),
            timer: Notify::new(),
            metrics,
            media,
        })
    }

    /// The runtime the TURN server's tasks run on: the media runtime.
    pub fn runtime(&self) -> &Handle {
        self.media.runtime()
    }

    pub fn allocation_count(&self) -> usize {
        self.inner.read().server.allocation_count()
    }

    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.inner.read().server.has_allocation(tuple)
    }

    /// Handles one message from a client; returns the answer to send back, if any.
    pub fn handle(&self, tuple: FiveTuple, sink: &ClientSink, data: &[u8]) -> Option<Vec<u8>> {
        let now = now();
        let request = {
            let inner = self.inner.read();
            match inner.server.handle_client_input(data, tuple, now) {
                ClientInput::ToPeer { id, to, payload } => {
                    let Some(r) = inner.relays.get(&id) else {
                        self.metrics.turn.drop("no_allocation");
                        return None;
                    };
                    let turn = &self.metrics.turn;
                    if r.link.is_for_media(to) {
                        let relayed = r.link.relayed();
                        drop(inner);
                        self.media.deliver_relayed(
                            BytesMut::from(&payload[..]),
                            relayed,
                            now.instant,
                        );
                        turn.packets_to_peer.inc();
                        turn.packets_in_process.inc();
                        turn.bytes_relayed.inc_by(payload.len() as u64);
                        return None;
                    }
                    let socket = r.socket.clone();
                    drop(inner);
                    match socket.try_send_to(&payload, to) {
                        Ok(_) => {
                            turn.packets_to_peer.inc();
                            turn.bytes_relayed.inc_by(payload.len() as u64);
                        }
                        Err(_) => turn.drop("send_failed"),
                    }
                    return None;
                }
                ClientInput::Reply(answer) => return Some(answer),
                ClientInput::Dropped => return None,
                ClientInput::Request(request) => request,
            }
        };
        let answer = {
            let mut inner = self.inner.write();
            let mut binder = SocketBinder {
                sink,
                runtime: self.media.runtime(),
                bound: None,
            };
            let answer = inner
                .server
                .handle_request(request, tuple, &mut binder, Instant::now());
            inner.run_commands(Some(&mut binder), &self.metrics, &self.media);
            answer
        };
        self.timer.notify_one();
        answer
    }

    /// The client's connection closed: its allocation goes.
    pub fn client_closed(&self, tuple: &FiveTuple) {
        let mut inner = self.inner.write();
        inner.server.handle_client_closed(tuple);
        inner.run_commands(None, &self.metrics, &self.media);
    }

    /// Every allocation (shutdown).
    pub fn release_all(&self) {
        let mut inner = self.inner.write();
        inner.server.release_all();
        inner.run_commands(None, &self.metrics, &self.media);
    }

    /// Releases allocations as they expire.
    pub async fn run_timer(self: Arc<Self>) {
        loop {
            let next = self.inner.read().server.poll_timeout();
            let Some(at) = next else {
                self.timer.notified().await;
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {
                    // The timer's own clock: the one the sleep just ended on.
                    let now = tokio::time::Instant::now().into_std();
                    let mut inner = self.inner.write();
                    inner.server.handle_timeout(now);
                    inner.run_commands(None, &self.metrics, &self.media);
                }
                _ = self.timer.notified() => {}
            }
        }
    }
}

/// Relays peer → client for one allocation until its task is aborted ([`Command::FreeRelay`]).
async fn run_relay(socket: Arc<UdpSocket>, sink: ClientSink, relay: Relay, metrics: Arc<Metrics>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let stream = sink.is_stream();
    let turn = &metrics.turn;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let data = &buf[..n];
                match relay.handle_peer_traffic(from, n, Instant::now()) {
                    Ok(to) => match to.encode(data, stream) {
                        Some(message) => {
                            if sink.send(message) {
                                turn.packets_to_client.inc();
                                turn.bytes_relayed.inc_by(n as u64);
                            } else {
                                turn.drop("client_queue_full");
                            }
                        }
                        None => turn.drop("encode"),
                    },
                    Err(reason) => turn.drop(reason),
                }
            }
            // ICMP errors surface here on some systems; the socket stays usable.
            Err(_) => turn.drop("recv_error"),
        }
    }
}
