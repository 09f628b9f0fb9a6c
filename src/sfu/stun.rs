//! Just enough STUN to route a datagram from an unknown address: is it STUN, and which local
//! ICE ufrag does its USERNAME name (RFC 8445 §7.2.2: `"<receiver ufrag>:<sender ufrag>"`).
//! Parsing is allocation-free and bounds-checked; anything malformed yields `None`.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// RFC 7983: first byte 0–3 and a STUN header with the magic cookie.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] < 4 && b[4..8] == MAGIC_COOKIE
}

/// The receiver's (our) ufrag from a STUN message's USERNAME attribute.
pub fn local_ufrag(b: &[u8]) -> Option<&str> {
    if !is_stun(b) {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let body = b.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    let mut i = 0usize;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let text = std::str::from_utf8(value).ok()?;
            let ufrag = text.split(':').next()?;
            return (!ufrag.is_empty()).then_some(ufrag);
        }
        i += 4 + ((alen + 3) & !3);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // A second attribute after it (PRIORITY), as browsers send.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7u8; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_the_local_ufrag() {
        assert_eq!(
            local_ufrag(&binding_request("srvUfrag:browserUf")),
            Some("srvUfrag")
        );
        assert_eq!(local_ufrag(&binding_request("abc")), Some("abc"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(local_ufrag(&[]), None);
        assert_eq!(local_ufrag(&[0u8; 19]), None);
        let mut m = binding_request("a:b");
        m[4] = 0; // no cookie
        assert_eq!(local_ufrag(&m), None);
        let mut m = binding_request("a:b");
        m[3] = 0xff; // length beyond the datagram
        assert_eq!(local_ufrag(&m), None);
        let mut m = binding_request("a:b");
        m[23] = 0xff; // attribute length beyond the body
        assert_eq!(local_ufrag(&m), None);
        assert_eq!(local_ufrag(&binding_request(":b")), None);
        let rtp = [
            0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(!is_stun(&rtp));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = local_ufrag(&bytes);
        }
    }
}
