//! A bare TURN client for protocol tests: builds requests with `rtc::stun`, speaks UDP, TCP or
//! TLS, and lets a test send exactly what it wants (wrong credentials, garbage, floods).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::shared::turn_framing::TurnStreamDecoder;
use rtc::stun::attributes::*;
use rtc::stun::error_code::ErrorCodeAttribute;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use rtc::turn::proto::lifetime::Lifetime;
use rtc::turn::proto::reqtrans::RequestedTransport;
use rtc::turn::proto::{PROTO_TCP, PROTO_UDP};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const REALM: &str = "relais";

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Link {
    Udp(UdpSocket, SocketAddr),
    Stream(Box<dyn Stream>, TurnStreamDecoder),
}

pub struct TurnClient {
    link: Link,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
}

/// A decoded answer.
pub struct Answer {
    pub m: Message,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.m.typ.class == CLASS_SUCCESS_RESPONSE
    }

    pub fn code(&self) -> Option<u16> {
        let mut e = ErrorCodeAttribute::default();
        e.get_from(&self.m).ok().map(|()| e.code.0)
    }

    pub fn text(&self, attr: AttrType) -> Option<String> {
        TextAttribute::get_from_as(&self.m, attr)
            .ok()
            .map(|t| t.text)
    }

    pub fn xor_addr(&self, attr: AttrType) -> Option<SocketAddr> {
        let mut a = XorMappedAddress::default();
        a.get_from_as(&self.m, attr).ok()?;
        Some(SocketAddr::new(a.ip, a.port))
    }

    pub fn lifetime(&self) -> Option<Duration> {
        let mut l = Lifetime::default();
        l.get_from(&self.m).ok().map(|()| l.0)
    }
}

pub fn decode(bytes: &[u8]) -> Option<Message> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).ok()?;
    Some(m)
}

impl TurnClient {
    pub async fn udp(server: SocketAddr, username: &str, password: &str) -> Self {
        Self::udp_from("127.0.0.1:0".parse().unwrap(), server, username, password).await
    }

    /// Over UDP from `bind` (an address of a test namespace's veth).
    pub async fn udp_from(
        bind: SocketAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        let socket = UdpSocket::bind(bind).await.unwrap();
        Self::new(Link::Udp(socket, server), username, password)
    }

    pub async fn tcp(server: SocketAddr, username: &str, password: &str) -> Self {
        let s = TcpStream::connect(server).await.unwrap();
        Self::new(
            Link::Stream(Box::new(s), TurnStreamDecoder::new()),
            username,
            password,
        )
    }

    /// TLS trusting exactly the server's certificate (`cert_pem`).
    pub async fn tls(
        server: SocketAddr,
        cert_pem: &std::path::Path,
        username: &str,
        password: &str,
    ) -> Self {
        Self::tls_with_alpn(server, cert_pem, None, username, password).await
    }

    /// The same, offering ALPN `alpn` (`stun.turn`, RFC 7443) when given.
    pub async fn tls_with_alpn(
        server: SocketAddr,
        cert_pem: &std::path::Path,
        alpn: Option<&str>,
        username: &str,
        password: &str,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(cert_pem).unwrap();
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.into_iter().map(|p| p.as_bytes().to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(server).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        Self::new(
            Link::Stream(Box::new(tls), TurnStreamDecoder::new()),
            username,
            password,
        )
    }

    fn new(link: Link, username: &str, password: &str) -> Self {
        Self {
            link,
            username: username.into(),
            password: password.into(),
            nonce: None,
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.link {
            Link::Udp(s, _) => s.local_addr().ok(),
            Link::Stream(..) => None,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::Udp(s, to) => {
                s.send_to(bytes, *to).await.unwrap();
            }
            Link::Stream(s, _) => {
                let _ = s.write_all(bytes).await;
            }
        }
    }

    /// The next message from the server, or `None` after `wait` (or when the stream closed).
    pub async fn recv_raw(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match &mut self.link {
            Link::Udp(s, _) => {
                let mut buf = vec![0u8; 65_536];
                let (n, _) = tokio::time::timeout(wait, s.recv_from(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Link::Stream(s, decoder) => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    if let Some(m) = decoder.next_message().ok()? {
                        return Some(m);
                    }
                    let mut buf = [0u8; 4096];
                    let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                    decoder.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// True when the server closed a stream connection within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let Link::Stream(s, _) = &mut self.link else {
            return false;
        };
        let mut buf = [0u8; 512];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// A request of `method` with `attrs`, authenticated when a nonce is known.
    pub fn build(
        &self,
        method: Method,
        attrs: Vec<Box<dyn Setter>>,
        authenticate: bool,
    ) -> Message {
        let mut m = Message::new();
        m.set_type(MessageType::new(method, CLASS_REQUEST));
        m.new_transaction_id().unwrap();
        m.write_header();
        for a in &attrs {
            a.add_to(&mut m).unwrap();
        }
        if authenticate && let Some(nonce) = &self.nonce {
            TextAttribute::new(ATTR_USERNAME, self.username.clone())
                .add_to(&mut m)
                .unwrap();
            TextAttribute::new(ATTR_REALM, REALM.into())
                .add_to(&mut m)
                .unwrap();
            TextAttribute::new(ATTR_NONCE, nonce.clone())
                .add_to(&mut m)
                .unwrap();
            let provider = rtc::crypto::default_provider().unwrap();
            MessageIntegrity::new_long_term_integrity_with_provider(
                self.username.clone(),
                REALM.into(),
                self.password.clone(),
                provider.crypto(),
            )
            .unwrap()
            .add_to(&mut m)
            .unwrap();
        }
        FINGERPRINT.add_to(&mut m).unwrap();
        m
    }

    /// Sends `m` and waits for the answer with its transaction id.
    pub async fn transact(&mut self, m: &Message) -> Answer {
        self.send_raw(&m.raw).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let bytes = self.recv_raw(left).await.expect("an answer");
            if let Some(a) = decode(&bytes)
                && a.transaction_id == m.transaction_id
            {
                return Answer { m: a };
            }
        }
    }

    /// Sends a request, answering a 401/438 challenge once; returns the final answer.
    pub async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn() -> Vec<Box<dyn Setter>>,
    ) -> Answer {
        let first = self.build(method, attrs(), true);
        let answer = self.transact(&first).await;
        if matches!(answer.code(), Some(401 | 438)) && self.nonce.is_none()
            || answer.code() == Some(438)
        {
            self.nonce = answer.text(ATTR_NONCE);
            let again = self.build(method, attrs(), true);
            return self.transact(&again).await;
        }
        answer
    }

    pub async fn allocate(&mut self) -> Answer {
        self.request(METHOD_ALLOCATE, || {
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })]
        })
        .await
    }

    pub async fn allocate_tcp_relay(&mut self) -> Answer {
        self.request(METHOD_ALLOCATE, || {
            vec![Box::new(RequestedTransport {
                protocol: PROTO_TCP,
            })]
        })
        .await
    }

    pub async fn create_permission(&mut self, peer: SocketAddr) -> Answer {
        self.request(METHOD_CREATE_PERMISSION, move || {
            vec![Box::new(PeerAttr(peer))]
        })
        .await
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Answer {
        self.request(METHOD_CHANNEL_BIND, move || {
            vec![
                Box::new(rtc::turn::proto::channum::ChannelNumber(channel)),
                Box::new(PeerAttr(peer)),
            ]
        })
        .await
    }

    pub async fn refresh(&mut self, lifetime: Duration) -> Answer {
        self.request(METHOD_REFRESH, move || vec![Box::new(Lifetime(lifetime))])
            .await
    }

    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut m = Message::new();
        m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
        m.new_transaction_id().unwrap();
        m.write_header();
        PeerAttr(peer).add_to(&mut m).unwrap();
        rtc::turn::proto::data::Data(data.to_vec())
            .add_to(&mut m)
            .unwrap();
        self.send_raw(&m.raw).await;
    }

    pub async fn send_channel_data(&mut self, channel: u16, data: &[u8]) {
        let stream = matches!(self.link, Link::Stream(..));
        let mut out = Vec::new();
        relais::turn::wire::write_channel_data(channel, data, stream, &mut out);
        self.send_raw(&out).await;
    }
}

/// XOR-PEER-ADDRESS.
pub struct PeerAttr(pub SocketAddr);

impl Setter for PeerAttr {
    fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
        XorMappedAddress {
            ip: self.0.ip(),
            port: self.0.port(),
        }
        .add_to_as(m, ATTR_XOR_PEER_ADDRESS)
    }
}
