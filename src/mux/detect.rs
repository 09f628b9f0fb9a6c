//! What a connection to the shared port speaks, from its first bytes (pure).
//!
//! Every protocol served there has the client speak first, and their first bytes differ:
//! - TLS: a handshake record, `0x16 0x03 0x0X` (RFC 8446 §5.1);
//! - ICE-TCP (RFC 6544): RFC 4571 frames, a 16-bit length then a STUN binding request, whose
//!   magic cookie is therefore at bytes 6..10 and whose own length is the frame's minus 20;
//! - TURN over plain TCP (RFC 8656 §3.1): STUN messages back to back, unframed: the cookie is
//!   at bytes 4..8.
//!
//! The two STUN shapes cannot be confused: unframed, bytes 6..8 are the cookie's second half
//! (`0xA442`), never its first (`0x2112`).
//!
//! Inside TLS, ALPN decides (`h2`/`http/1.1` → HTTP, `stun.turn` → TURN, RFC 7443); a client
//! that offers none is TURN when its first record holds a STUN message, HTTP otherwise (HTTP
//! requests start with a method's letters, never with a STUN type's first byte, below `0x40`).

/// STUN's magic cookie (RFC 8489 §5).
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Bytes enough to decide on a plaintext connection.
pub const DECISIVE: usize = 10;

/// What a plaintext connection's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    /// Not enough bytes yet to tell.
    NeedMore,
    Tls,
    IceTcp,
    /// A TURN client over plain TCP.
    Turn,
    /// Nothing served here (plain HTTP, garbage): close.
    Unknown,
}

/// What a TLS connection carries, once the handshake is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    /// No ALPN was agreed and the client has sent nothing decrypted yet.
    NeedMore,
    Http,
    Turn,
    Unknown,
}

fn is_stun_header(b: &[u8]) -> bool {
    // The two top bits of a STUN type are zero; requests (class 00) only at first.
    b.len() >= 8 && b[0] & 0xC0 == 0 && b[4..8] == COOKIE
}

/// Classifies a plaintext connection from the bytes it sent so far.
pub fn classify(bytes: &[u8]) -> First {
    let Some(&b0) = bytes.first() else {
        return First::NeedMore;
    };
    if b0 == 0x16 {
        return match bytes.get(1..3) {
            None if bytes.get(1).is_none_or(|b| *b == 0x03) => First::NeedMore,
            Some([0x03, minor]) if *minor <= 0x04 => First::Tls,
            _ => First::Unknown,
        };
    }
    // A frame's high length byte (STUN binding requests are short) or a STUN type's.
    if b0 >= 0x40 {
        return First::Unknown;
    }
    if bytes.len() < DECISIVE {
        return First::NeedMore;
    }
    if is_stun_header(&bytes[2..]) {
        let frame = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let stun = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        return if frame == 20 + stun {
            First::IceTcp
        } else {
            First::Unknown
        };
    }
    if is_stun_header(bytes) {
        return First::Turn;
    }
    First::Unknown
}

/// Classifies a TLS connection from its agreed ALPN protocol and the first decrypted bytes.
pub fn classify_tls(alpn: Option<&[u8]>, bytes: &[u8]) -> Inner {
    match alpn {
        Some(b"h2" | b"http/1.1") => return Inner::Http,
        Some(b"stun.turn") => return Inner::Turn,
        Some(_) => return Inner::Unknown,
        None => {}
    }
    let Some(&b0) = bytes.first() else {
        return Inner::NeedMore;
    };
    if b0 >= 0x40 {
        return Inner::Http;
    }
    if bytes.len() < 8 {
        return Inner::NeedMore;
    }
    if is_stun_header(bytes) {
        Inner::Turn
    } else {
        Inner::Unknown
    }
}

/// Where a TLS connection is handshaken, from the ALPN protocols its ClientHello offers
/// (read from peeked bytes, before any handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// The ClientHello is not whole yet.
    NeedMore,
    /// It offers `h2` or `http/1.1`: an HTTPS client (the handshake will pick one of them, the
    /// shared port preferring HTTP's protocols).
    Http,
    /// It offers neither (no ALPN, as TURN clients and browsers' TURN/TLS do, or `stun.turn`):
    /// most likely TURN; the first decrypted bytes will tell ([`classify_tls`]).
    Other,
    /// Not a ClientHello rustls can read: the handshake would fail.
    Invalid,
}

/// Reads the ClientHello at the start of `bytes` (peeked, so nothing is consumed).
pub fn client_hello(bytes: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Hello::Invalid,
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let http = accepted
                    .client_hello()
                    .alpn()
                    .is_some_and(|mut offered| offered.any(|p| p == b"h2" || p == b"http/1.1"));
                return if http { Hello::Http } else { Hello::Other };
            }
            Err(_) => return Hello::Invalid,
        }
    }
    Hello::NeedMore
}

/// The ALPN protocols the shared port offers, most preferred first.
pub fn alpn_protocols() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"stun.turn".to_vec()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request header with `attrs` bytes of attributes (not filled in).
    fn stun(kind: u16, attrs: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&attrs.to_be_bytes());
        m.extend_from_slice(&COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend(std::iter::repeat_n(0, usize::from(attrs)));
        m
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut f = (message.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(message);
        f
    }

    #[test]
    fn tls_client_hello() {
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), First::Tls);
        assert_eq!(classify(&[0x16, 0x03, 0x03]), First::Tls);
        assert_eq!(classify(&[0x16]), First::NeedMore);
        assert_eq!(classify(&[0x16, 0x03]), First::NeedMore);
        assert_eq!(classify(&[0x16, 0x02, 0x00]), First::Unknown);
        assert_eq!(classify(&[0x16, 0x03, 0x09]), First::Unknown);
    }

    #[test]
    fn ice_tcp_is_framed_stun() {
        let binding = framed(&stun(0x0001, 80));
        assert_eq!(classify(&binding), First::IceTcp);
        assert_eq!(classify(&binding[..DECISIVE]), First::IceTcp);
        assert_eq!(classify(&binding[..9]), First::NeedMore);
        // A frame whose length disagrees with its STUN header is not ICE-TCP.
        let mut bad = binding.clone();
        bad[1] ^= 1;
        assert_eq!(classify(&bad), First::Unknown);
    }

    #[test]
    fn turn_over_tcp_is_unframed_stun() {
        let allocate = stun(0x0003, 8);
        assert_eq!(classify(&allocate), First::Turn);
        assert_eq!(classify(&allocate[..DECISIVE]), First::Turn);
        // Never read as ICE-TCP, whatever the transaction id.
        let mut any = stun(0x0001, 0);
        any[8..20].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(classify(&any), First::Turn);
    }

    #[test]
    fn the_rest_is_closed() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), First::Unknown);
        assert_eq!(classify(b"PRI * HTTP/2.0"), First::Unknown);
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), First::Unknown);
        assert_eq!(classify(&[0; 10]), First::Unknown);
        assert_eq!(classify(&[0x40, 0, 0, 4, 1, 2, 3, 4]), First::Unknown);
        assert_eq!(classify(&[]), First::NeedMore);
        assert_eq!(classify(&[0, 0, 0]), First::NeedMore);
    }

    #[test]
    fn inside_tls_alpn_decides_then_the_first_bytes() {
        assert_eq!(classify_tls(Some(b"h2"), &[]), Inner::Http);
        assert_eq!(classify_tls(Some(b"http/1.1"), &[]), Inner::Http);
        assert_eq!(classify_tls(Some(b"stun.turn"), &[]), Inner::Turn);
        assert_eq!(classify_tls(Some(b"spdy/3"), &[]), Inner::Unknown);
        assert_eq!(classify_tls(None, &[]), Inner::NeedMore);
        assert_eq!(classify_tls(None, b"GET / HTTP/1.1\r\n"), Inner::Http);
        assert_eq!(classify_tls(None, &stun(0x0003, 0)), Inner::Turn);
        assert_eq!(classify_tls(None, &stun(0x0003, 0)[..7]), Inner::NeedMore);
        assert_eq!(classify_tls(None, &[0; 20]), Inner::Unknown);
    }

    /// A real ClientHello offering `alpn`, as rustls's client writes it.
    fn client_hello_bytes(alpn: &[&str]) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("relais.example").unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn the_client_hello_says_where_to_handshake() {
        let http = client_hello_bytes(&["h2", "http/1.1"]);
        assert_eq!(classify(&http), First::Tls);
        assert_eq!(client_hello(&http), Hello::Http);
        assert_eq!(
            client_hello(&client_hello_bytes(&["http/1.1"])),
            Hello::Http
        );
        assert_eq!(client_hello(&client_hello_bytes(&[])), Hello::Other);
        assert_eq!(
            client_hello(&client_hello_bytes(&["stun.turn"])),
            Hello::Other
        );
        // Offering both: the shared port prefers HTTP's protocols.
        assert_eq!(
            client_hello(&client_hello_bytes(&["stun.turn", "http/1.1"])),
            Hello::Http
        );
        // Cut anywhere, it waits for the rest.
        for cut in [1, 5, 6, http.len() / 2, http.len() - 1] {
            assert_eq!(client_hello(&http[..cut]), Hello::NeedMore, "{cut}");
        }
        let mut garbage = http.clone();
        garbage[5] = 0x02; // a ServerHello where a ClientHello must be
        assert_eq!(client_hello(&garbage), Hello::Invalid);
    }

    #[test]
    fn the_shared_port_offers_turn_after_http() {
        let offered = alpn_protocols();
        assert_eq!(offered[0], b"h2");
        assert!(offered.iter().any(|p| p == b"stun.turn"));
    }
}
