//! TURN on the wire: ChannelData framing (RFC 8656 §12.4) and the STUN pieces the server
//! builds by hand. STUN messages themselves are parsed and built with `rtc::stun`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rtc::stun::message::{MAGIC_COOKIE, Message};

/// Channel numbers clients may bind (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
pub const MAX_CHANNEL: u16 = 0x4FFF;

/// First two bits `01`: a ChannelData message (RFC 7983 demultiplexing).
pub fn is_channel_data(b: &[u8]) -> bool {
    b.len() >= 4 && (b[0] >> 6) == 0b01
}

/// The channel and payload of a ChannelData message; `None` if it is cut short. Trailing
/// bytes (padding over streams) are ignored.
pub fn parse_channel_data(b: &[u8]) -> Option<(u16, &[u8])> {
    if !is_channel_data(b) {
        return None;
    }
    let channel = u16::from_be_bytes([b[0], b[1]]);
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    Some((channel, b.get(4..4 + len)?))
}

/// Appends a ChannelData message to `out`; `pad` rounds it up to a multiple of four, which
/// streams (TCP, TLS) require.
pub fn write_channel_data(channel: u16, payload: &[u8], pad: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    if pad {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
}

/// Decodes one XOR-*-ADDRESS attribute value (RFC 8489 §14.2). Used for requests that may
/// carry several (CreatePermission), which `rtc::stun`'s getters do not iterate.
pub fn xor_address(value: &[u8], m: &Message) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&m.transaction_id.0);
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ key[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_XOR_PEER_ADDRESS;
    use rtc::stun::message::BINDING_REQUEST;
    use rtc::stun::xoraddr::XorMappedAddress;

    #[test]
    fn channel_data_round_trip() {
        let mut out = Vec::new();
        write_channel_data(0x4001, b"abcde", true, &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(parse_channel_data(&out), Some((0x4001, &b"abcde"[..])));
        out.clear();
        write_channel_data(0x4001, b"abcde", false, &mut out);
        assert_eq!(out.len(), 9);
        assert_eq!(parse_channel_data(&out[..8]), None);
        assert_eq!(parse_channel_data(&[0x00, 0x01, 0, 0]), None);
    }

    #[test]
    fn xor_addresses_decode_like_rtc_encodes_them() {
        for addr in ["192.0.2.7:3479", "[2001:db8::9]:40000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut m = Message::new();
            m.set_type(BINDING_REQUEST);
            m.new_transaction_id().unwrap();
            XorMappedAddress {
                ip: addr.ip(),
                port: addr.port(),
            }
            .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
            .unwrap();
            let value = m.get(ATTR_XOR_PEER_ADDRESS).unwrap();
            assert_eq!(xor_address(&value, &m), Some(addr));
            assert_eq!(xor_address(&value[..5], &m), None);
        }
    }
}
