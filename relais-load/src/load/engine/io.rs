//! A leg's socket: plain UDP, ICE-TCP (RFC 4571 frames over a TCP connection the client opens
//! to the server's passive candidate), or UDP through a TURN allocation (rtc's sans-IO TURN
//! client: allocation, permissions and channel bindings are its business; we move its bytes).
//!
//! All reads and writes are non-blocking (`try_*`); a write that would block is dropped and
//! counted (a TCP connection keeps a bounded backlog instead, retried at each wake-up).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use futures_util::future::BoxFuture;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::{TcpStream, UdpSocket};

/// Largest datagram we read.
const MAX_DATAGRAM: usize = 2048;
/// Bytes a TCP connection may hold back before frames are dropped.
const TCP_BACKLOG: usize = 256 * 1024;

/// Which transport a scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    Udp,
    /// ICE-TCP to the server's passive candidate.
    Tcp,
    /// Relay candidates only, through the server's TURN over UDP.
    TurnUdp,
}

impl TransportKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "udp" => Some(Self::Udp),
            "tcp" | "ice-tcp" => Some(Self::Tcp),
            "turn-udp" | "turn" => Some(Self::TurnUdp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::TurnUdp => "turn-udp",
        }
    }
}

/// Where TURN is and how to authenticate (from `/webrtc/ice-servers`).
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
}

pub struct TurnState {
    client: rtc::turn::client::Client,
    /// The relayed address, once the allocation succeeded.
    pub relayed: Option<SocketAddr>,
    pub failed: Option<String>,
    allocate_tid: Option<rtc::stun::message::TransactionId>,
}

pub enum Io {
    Udp {
        socket: Arc<UdpSocket>,
        local: SocketAddr,
    },
    /// ICE-TCP: no connection until the server's passive candidate is known.
    Tcp {
        stream: Option<Arc<TcpStream>>,
        local: SocketAddr,
        peer: SocketAddr,
        inbuf: BytesMut,
        backlog: BytesMut,
    },
    Turn {
        socket: Arc<UdpSocket>,
        local: SocketAddr,
        turn: Box<TurnState>,
    },
}

impl Io {
    pub async fn udp(bind: std::net::IpAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
        let local = socket.local_addr()?;
        Ok(Io::Udp {
            socket: Arc::new(socket),
            local,
        })
    }

    pub fn tcp_unconnected(bind: std::net::IpAddr) -> Self {
        Io::Tcp {
            stream: None,
            // Active ICE-TCP candidates advertise the discard port (RFC 6544 §4.5).
            local: SocketAddr::new(bind, 9),
            peer: SocketAddr::new(bind, 0),
            inbuf: BytesMut::new(),
            backlog: BytesMut::new(),
        }
    }

    pub async fn turn(
        bind: std::net::IpAddr,
        cfg: &TurnConfig,
        now: Instant,
    ) -> anyhow::Result<Self> {
        use rtc::turn::client::{Client, ClientConfig};
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
        let local = socket.local_addr()?;
        let config = ClientConfig {
            stun_serv_addr: cfg.server.to_string(),
            turn_serv_addr: cfg.server.to_string(),
            local_addr: local,
            transport_protocol: TransportProtocol::UDP,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            allocation_refresh_interval_cap: None,
        };
        let provider =
            rtc::crypto::default_provider().map_err(|e| anyhow::anyhow!("crypto provider: {e}"))?;
        let mut client =
            Client::new(config, provider).map_err(|e| anyhow::anyhow!("TURN client: {e}"))?;
        let tid = client
            .allocate(now)
            .map_err(|e| anyhow::anyhow!("TURN allocate: {e}"))?;
        Ok(Io::Turn {
            socket: Arc::new(socket),
            local,
            turn: Box::new(TurnState {
                client,
                relayed: None,
                failed: None,
                allocate_tid: Some(tid),
            }),
        })
    }

    /// Attaches the ICE-TCP connection.
    pub fn attach_tcp(&mut self, s: TcpStream) -> std::io::Result<()> {
        if let Io::Tcp {
            stream,
            local,
            peer,
            ..
        } = self
        {
            *local = s.local_addr()?;
            *peer = s.peer_addr()?;
            let _ = s.set_nodelay(true);
            *stream = Some(Arc::new(s));
        }
        Ok(())
    }

    pub fn is_tcp_connected(&self) -> bool {
        matches!(
            self,
            Io::Tcp {
                stream: Some(_),
                ..
            }
        )
    }

    pub fn turn_state(&self) -> Option<&TurnState> {
        match self {
            Io::Turn { turn, .. } => Some(turn),
            _ => None,
        }
    }

    pub fn readiness(&self) -> Option<BoxFuture<'static, ()>> {
        match self {
            Io::Udp { socket, .. } | Io::Turn { socket, .. } => {
                let s = socket.clone();
                Some(Box::pin(async move {
                    let _ = s.readable().await;
                }))
            }
            Io::Tcp {
                stream: Some(s), ..
            } => {
                let s = s.clone();
                Some(Box::pin(async move {
                    let _ = s.readable().await;
                }))
            }
            Io::Tcp { stream: None, .. } => None,
        }
    }

    /// Reads everything available; `deliver` gets each datagram (or frame, or relayed
    /// payload) tagged as the PeerConnection must see it.
    pub fn read_all(&mut self, now: Instant, mut deliver: impl FnMut(TaggedBytesMut)) {
        match self {
            Io::Udp { socket, local } => loop {
                let mut buf = BytesMut::with_capacity(MAX_DATAGRAM);
                match socket.try_recv_buf_from(&mut buf) {
                    Ok((_, from)) => {
                        deliver(tagged(now, *local, from, TransportProtocol::UDP, buf))
                    }
                    Err(_) => break,
                }
            },
            Io::Tcp {
                stream: Some(stream),
                local,
                peer,
                inbuf,
                ..
            } => {
                loop {
                    inbuf.reserve(8192);
                    match stream.try_read_buf(inbuf) {
                        Ok(0) => break, // closed: ICE will notice the silence
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                while inbuf.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([inbuf[0], inbuf[1]]));
                    if inbuf.len() < 2 + len {
                        break;
                    }
                    inbuf.advance(2);
                    let frame = inbuf.split_to(len);
                    deliver(tagged(now, *local, *peer, TransportProtocol::TCP, frame));
                }
            }
            Io::Tcp { stream: None, .. } => {}
            Io::Turn {
                socket,
                local,
                turn,
            } => {
                loop {
                    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM);
                    match socket.try_recv_buf_from(&mut buf) {
                        Ok((_, from)) => {
                            let msg = tagged(now, *local, from, TransportProtocol::UDP, buf);
                            if let Err(e) = turn.client.handle_read(msg) {
                                tracing::debug!(error = %e, "TURN read refused");
                            }
                        }
                        Err(_) => break,
                    }
                }
                turn.events(deliver);
            }
        }
    }

    /// Sends one datagram from the PeerConnection to `to`. Returns false when dropped.
    pub fn send(&mut self, now: Instant, data: &[u8], to: SocketAddr) -> bool {
        match self {
            Io::Udp { socket, .. } => socket.try_send_to(data, to).is_ok(),
            Io::Tcp {
                stream, backlog, ..
            } => {
                let Some(stream) = stream else { return false };
                let Ok(len) = u16::try_from(data.len()) else {
                    return false;
                };
                if backlog.len() + data.len() + 2 > TCP_BACKLOG {
                    return false;
                }
                backlog.put_u16(len);
                backlog.put_slice(data);
                flush_tcp(stream, backlog);
                true
            }
            Io::Turn { turn, .. } => {
                let Some(relayed) = turn.relayed else {
                    return false;
                };
                let Ok(mut relay) = turn.client.relay(relayed) else {
                    return false;
                };
                // Permissions are asked for when remote candidates are learnt; until granted
                // the client refuses (the ICE checks will be retried).
                if let Err(e) = relay.send_to(now, data, to) {
                    tracing::trace!(error = %e, "TURN send refused");
                    return false;
                }
                true
            }
        }
    }

    /// Moves bytes the TURN client or a TCP backlog holds onto the wire.
    pub fn flush(&mut self) -> u64 {
        let mut dropped = 0;
        match self {
            Io::Turn { socket, turn, .. } => {
                while let Some(t) = turn.client.poll_write() {
                    if socket
                        .try_send_to(&t.message, t.transport.peer_addr)
                        .is_err()
                    {
                        dropped += 1;
                    }
                }
            }
            Io::Tcp {
                stream: Some(stream),
                backlog,
                ..
            } => flush_tcp(stream, backlog),
            _ => {}
        }
        dropped
    }

    /// Asks the TURN server to let `peer` talk to our allocation (no-op elsewhere).
    pub fn permit(&mut self, now: Instant, peer: SocketAddr) {
        if let Io::Turn { turn, .. } = self
            && let Some(relayed) = turn.relayed
            && let Ok(mut relay) = turn.client.relay(relayed)
            && let Err(e) = relay.create_permission(now, peer)
        {
            tracing::debug!(error = %e, %peer, "TURN permission refused");
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match self {
            Io::Turn { turn, .. } => turn.client.poll_timeout(),
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Io::Turn { turn, .. } = self {
            let _ = turn.client.handle_timeout(now);
            turn.events(|_| {});
        }
    }

    pub fn close(&mut self, now: Instant) {
        if let Io::Turn { turn, .. } = self
            && let Some(relayed) = turn.relayed
            && let Ok(mut relay) = turn.client.relay(relayed)
        {
            let _ = relay.close(now);
        }
        self.flush();
    }
}

impl TurnState {
    fn events(&mut self, mut deliver: impl FnMut(TaggedBytesMut)) {
        use rtc::turn::client::Event;
        while let Some(ev) = self.client.poll_event() {
            match ev {
                Event::AllocateResponse(tid, addr) if Some(tid) == self.allocate_tid => {
                    self.relayed = Some(addr);
                    self.allocate_tid = None;
                }
                Event::AllocateError(_, e) => self.failed = Some(format!("TURN allocate: {e}")),
                Event::TransactionTimeout(tid) if Some(tid) == self.allocate_tid => {
                    self.failed = Some("TURN allocate: no answer".into());
                }
                Event::DataIndicationOrChannelData(_, from, data) => {
                    if let Some(relayed) = self.relayed {
                        deliver(tagged(
                            Instant::now(),
                            relayed,
                            from,
                            TransportProtocol::UDP,
                            BytesMut::from(&data[..]),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
}

fn flush_tcp(stream: &TcpStream, backlog: &mut BytesMut) {
    while !backlog.is_empty() {
        match stream.try_write(backlog) {
            Ok(0) | Err(_) => break,
            Ok(n) => backlog.advance(n),
        }
    }
}

fn tagged(
    now: Instant,
    local: SocketAddr,
    peer: SocketAddr,
    proto: TransportProtocol,
    message: BytesMut,
) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            transport_protocol: proto,
            ecn: None,
        },
        message,
    }
}
