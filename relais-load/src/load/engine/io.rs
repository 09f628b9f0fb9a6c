//! A leg's socket: plain UDP, ICE-TCP (RFC 4571 frames over a TCP connection the client opens
//! to the server's passive candidate), or UDP through a TURN allocation (rtc's sans-IO TURN
//! client: allocation, permissions and channel bindings are its business; we move its bytes)
//! reached over UDP, TCP or TLS.
//!
//! All reads and writes are non-blocking (`try_*`); a write that would block is dropped and
//! counted (a TCP connection keeps a bounded backlog instead, retried at each wake-up). TURN
//! over TCP or TLS runs its connection in a task of its own ([`StreamLink`]): bounded queues
//! both ways, full ones drop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use rtc::sansio::Protocol;
use rtc::shared::turn_framing::TurnStreamDecoder;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc};

/// Largest datagram we read.
const MAX_DATAGRAM: usize = 2048;
/// Bytes a TCP connection may hold back before frames are dropped.
const TCP_BACKLOG: usize = 256 * 1024;
/// TURN messages a stream connection holds each way before dropping.
const STREAM_QUEUE: usize = 1024;
const STREAM_CONNECT: Duration = Duration::from_secs(5);

/// Which transport a scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    Udp,
    /// ICE-TCP to the server's passive candidate.
    Tcp,
    /// Relay candidates only, through the server's TURN over UDP.
    TurnUdp,
    /// Relay candidates only, through the server's TURN over TCP (`turn:…?transport=tcp`).
    TurnTcp,
    /// Relay candidates only, through the server's TURN over TLS (`turns:`).
    TurnTls,
}

impl TransportKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "udp" => Some(Self::Udp),
            "tcp" | "ice-tcp" => Some(Self::Tcp),
            "turn-udp" | "turn" => Some(Self::TurnUdp),
            "turn-tcp" => Some(Self::TurnTcp),
            "turn-tls" | "turns" => Some(Self::TurnTls),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::TurnUdp => "turn-udp",
            Self::TurnTcp => "turn-tcp",
            Self::TurnTls => "turn-tls",
        }
    }

    /// Through the server's TURN (relay candidates only).
    pub fn is_turn(self) -> bool {
        matches!(self, Self::TurnUdp | Self::TurnTcp | Self::TurnTls)
    }

    /// How the TURN server is reached; `None` when this is not TURN.
    pub fn turn_carrier(self) -> Option<TurnCarrier> {
        match self {
            Self::TurnUdp => Some(TurnCarrier::Udp),
            Self::TurnTcp => Some(TurnCarrier::Tcp),
            Self::TurnTls => Some(TurnCarrier::Tls),
            Self::Udp | Self::Tcp => None,
        }
    }
}

/// How the TURN server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnCarrier {
    Udp,
    Tcp,
    Tls,
}

impl TurnCarrier {
    /// Whether `url` (from `/webrtc/ice-servers`) is for this carrier.
    pub fn matches(self, url: &str) -> bool {
        match self {
            Self::Udp => url.starts_with("turn:") && url.ends_with("?transport=udp"),
            Self::Tcp => url.starts_with("turn:") && url.ends_with("?transport=tcp"),
            Self::Tls => url.starts_with("turns:"),
        }
    }
}

/// Where TURN is and how to authenticate (from `/webrtc/ice-servers`).
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    pub carrier: TurnCarrier,
    /// The host of the URL: the name the server's certificate is checked against (TLS).
    pub host: String,
    /// TLS: accept whatever certificate the server shows (a self-signed one).
    pub insecure: bool,
}

/// The host and port of a `turn:`/`turns:` URL.
pub fn turn_url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once(':')?.1;
    let hostport = rest.split('?').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// The reading and writing side of a TURN connection over TCP or TLS, run by a task: whole
/// TURN messages in, bytes out.
pub struct StreamLink {
    inbound: Arc<Mutex<VecDeque<Vec<u8>>>>,
    ready: Arc<Notify>,
    out: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StreamLink {
    fn start<S>(stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let inbound = Arc::new(Mutex::new(VecDeque::new()));
        let ready = Arc::new(Notify::new());
        let (out, out_rx) = mpsc::channel(STREAM_QUEUE);
        let task = tokio::spawn(run_stream(stream, inbound.clone(), ready.clone(), out_rx));
        Self {
            inbound,
            ready,
            out,
            task,
        }
    }
}

/// Moves a TURN connection's bytes until it closes: messages read are queued for the leg
/// (which is woken), what the leg queued is written, several messages per write.
async fn run_stream<S>(
    stream: S,
    inbound: Arc<Mutex<VecDeque<Vec<u8>>>>,
    ready: Arc<Notify>,
    mut out: mpsc::Receiver<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let read = async {
        let mut decoder = TurnStreamDecoder::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => decoder.extend_from_slice(&buf[..n]),
            }
            let mut any = false;
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => {
                        let mut q = inbound.lock();
                        if q.len() < STREAM_QUEUE {
                            q.push_back(m);
                        }
                        any = true;
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if any {
                ready.notify_one();
            }
        }
    };
    let write = async {
        let mut batch = Vec::new();
        while let Some(m) = out.recv().await {
            batch.clear();
            batch.extend_from_slice(&m);
            while batch.len() < 64 * 1024 {
                match out.try_recv() {
                    Ok(m) => batch.extend_from_slice(&m),
                    Err(_) => break,
                }
            }
            if writer.write_all(&batch).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    // The leg sees the silence (ICE consent) and its relay fail.
    ready.notify_one();
}

/// TLS without checking the server's certificate (`--insecure`: relais generates a
/// self-signed one), offering ALPN `stun.turn` (RFC 7443).
mod insecure {
    use std::sync::Arc;

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    struct AcceptAny(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"stun.turn".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// How a TURN client's messages reach the server.
pub enum TurnWire {
    Udp(Arc<UdpSocket>),
    Stream(StreamLink),
}

pub struct TurnState {
    client: rtc::turn::client::Client,
    /// The TURN server's address (what stream messages are tagged as coming from).
    server: SocketAddr,
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
        wire: TurnWire,
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
        let (wire, local, protocol) = match cfg.carrier {
            TurnCarrier::Udp => {
                let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
                let local = socket.local_addr()?;
                (
                    TurnWire::Udp(Arc::new(socket)),
                    local,
                    TransportProtocol::UDP,
                )
            }
            TurnCarrier::Tcp | TurnCarrier::Tls => {
                let socket = if cfg.server.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                if bind.is_ipv4() == cfg.server.is_ipv4() {
                    socket.bind(SocketAddr::new(bind, 0))?;
                }
                let stream = tokio::time::timeout(STREAM_CONNECT, socket.connect(cfg.server))
                    .await
                    .map_err(|_| anyhow::anyhow!("TURN connect {}: timeout", cfg.server))??;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr()?;
                let link = if cfg.carrier == TurnCarrier::Tls {
                    anyhow::ensure!(
                        cfg.insecure,
                        "TURN over TLS: the server's certificate is self-signed; pass --insecure"
                    );
                    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())?;
                    let tls = tokio::time::timeout(
                        STREAM_CONNECT,
                        insecure::connector()?.connect(name, stream),
                    )
                    .await
                    .map_err(|_| anyhow::anyhow!("TURN TLS handshake: timeout"))??;
                    StreamLink::start(tls)
                } else {
                    StreamLink::start(stream)
                };
                (TurnWire::Stream(link), local, TransportProtocol::TCP)
            }
        };
        let config = ClientConfig {
            stun_serv_addr: cfg.server.to_string(),
            turn_serv_addr: cfg.server.to_string(),
            local_addr: local,
            transport_protocol: protocol,
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
        let mut io = Io::Turn {
            wire,
            local,
            turn: Box::new(TurnState {
                client,
                server: cfg.server,
                relayed: None,
                failed: None,
                allocate_tid: Some(tid),
            }),
        };
        // The Allocate leaves now: over TCP no retransmission timer would send it.
        io.flush();
        Ok(io)
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

    /// TURN: the local address of our connection to the server (a relay candidate's base).
    pub fn turn_local(&self) -> Option<SocketAddr> {
        match self {
            Io::Turn { local, .. } => Some(*local),
            _ => None,
        }
    }

    pub fn readiness(&self) -> Option<BoxFuture<'static, ()>> {
        match self {
            Io::Udp { socket, .. }
            | Io::Turn {
                wire: TurnWire::Udp(socket),
                ..
            } => {
                let s = socket.clone();
                Some(Box::pin(async move {
                    let _ = s.readable().await;
                }))
            }
            Io::Turn {
                wire: TurnWire::Stream(link),
                ..
            } => {
                let ready = link.ready.clone();
                Some(Box::pin(async move { ready.notified().await }))
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
            Io::Turn { wire, local, turn } => {
                match wire {
                    TurnWire::Udp(socket) => loop {
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
                    },
                    TurnWire::Stream(link) => {
                        let messages = std::mem::take(&mut *link.inbound.lock());
                        let server = turn.server;
                        for m in messages {
                            let msg = tagged(
                                now,
                                *local,
                                server,
                                TransportProtocol::TCP,
                                BytesMut::from(&m[..]),
                            );
                            if let Err(e) = turn.client.handle_read(msg) {
                                tracing::debug!(error = %e, "TURN read refused");
                            }
                        }
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
            Io::Turn { wire, turn, .. } => {
                while let Some(t) = turn.client.poll_write() {
                    let sent = match wire {
                        TurnWire::Udp(socket) => socket
                            .try_send_to(&t.message, t.transport.peer_addr)
                            .is_ok(),
                        TurnWire::Stream(link) => link.out.try_send(t.message.to_vec()).is_ok(),
                    };
                    if !sent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_by_carrier() {
        let udp = "turn:127.0.0.1:3478?transport=udp";
        let tcp = "turn:127.0.0.1:3478?transport=tcp";
        let tls = "turns:relais.example:443?transport=tcp";
        assert!(TurnCarrier::Udp.matches(udp) && !TurnCarrier::Udp.matches(tcp));
        assert!(TurnCarrier::Tcp.matches(tcp) && !TurnCarrier::Tcp.matches(tls));
        assert!(TurnCarrier::Tls.matches(tls) && !TurnCarrier::Tls.matches(tcp));
        assert_eq!(
            turn_url_host_port(tls),
            Some(("relais.example".to_string(), 443))
        );
        assert_eq!(
            turn_url_host_port("turns:[::1]:5349?transport=tcp"),
            Some(("::1".to_string(), 5349))
        );
        assert_eq!(
            turn_url_host_port(udp),
            Some(("127.0.0.1".to_string(), 3478))
        );
    }
}
