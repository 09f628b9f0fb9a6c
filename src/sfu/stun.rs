//! Just enough STUN to route a datagram from an unknown address (is it STUN, and which local
//! ICE ufrag does its USERNAME name: RFC 8445 §7.2.2, `"<receiver ufrag>:<sender ufrag>"`), and
//! to see a client nominate a path (a binding request with USE-CANDIDATE, RFC 8445 §7.3.1.5).
//! Parsing is allocation-free and bounds-checked; anything malformed yields `None` or `false`.
//! Whether the message is authentic is the ICE agent's to check, not this module's.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const HEADER_LEN: usize = 20;

/// RFC 7983: first byte 0–3 and a STUN header with the magic cookie.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] < 4 && b[4..8] == MAGIC_COOKIE
}

/// The receiver's (our) ufrag from a STUN message's USERNAME attribute.
pub fn local_ufrag(b: &[u8]) -> Option<&str> {
    let value = attributes(b)?.find(|(typ, _)| *typ == ATTR_USERNAME)?.1;
    let ufrag = std::str::from_utf8(value).ok()?.split(':').next()?;
    (!ufrag.is_empty()).then_some(ufrag)
}

/// Whether this is a binding request that nominates its path (USE-CANDIDATE).
pub fn nominates(b: &[u8]) -> bool {
    b.starts_with(&BINDING_REQUEST)
        && attributes(b).is_some_and(|mut a| a.any(|(typ, _)| typ == ATTR_USE_CANDIDATE))
}

/// The (type, value) attributes of a STUN message, up to the first malformed one.
fn attributes(b: &[u8]) -> Option<impl Iterator<Item = (u16, &[u8])>> {
    if !is_stun(b) {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let body = b.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    let mut i = 0usize;
    Some(std::iter::from_fn(move || {
        let header = body.get(i..i + 4)?;
        let typ = u16::from_be_bytes([header[0], header[1]]);
        let alen = u16::from_be_bytes([header[2], header[3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        i += 4 + ((alen + 3) & !3);
        Some((typ, value))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        with_attributes(username, &[])
    }

    fn with_attributes(username: &str, extra: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // A second attribute after it (PRIORITY), as browsers send.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(extra);
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
    fn sees_a_nomination() {
        let use_candidate = [0x00, 0x25, 0x00, 0x00];
        assert!(nominates(&with_attributes("a:b", &use_candidate)));
        assert!(!nominates(&binding_request("a:b")));
        // A success response with the same attribute is not a nomination.
        let mut response = with_attributes("a:b", &use_candidate);
        response[..2].copy_from_slice(&[0x01, 0x01]);
        assert!(!nominates(&response));
        let mut truncated = with_attributes("a:b", &use_candidate);
        truncated[3] -= 4;
        assert!(!nominates(&truncated[..truncated.len() - 4]));
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
            let _ = nominates(&bytes);
        }
    }
}
