//! Where the relay may send: relais's own media addresses, plus configured extra peers.
//!
//! The embedded TURN server exists so that clinics behind strict firewalls reach *this*
//! server's media port; it is not an open relay. A peer address is allowed when it is one of
//! the media host candidates (IP and UDP port), or its IP is in `turn.extra_peer_ips`.
//!
//! Traffic for the server's own media address is sent to the media socket's local address
//! (loopback when it listens on every interface) rather than to the advertised address: behind
//! a NAT 1:1 the advertised public IP is not on this host and hairpinning is not guaranteed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// The media socket's advertised addresses (host candidates).
    media: Vec<SocketAddr>,
    /// The media socket's bound address.
    media_bound: SocketAddr,
    extra_ips: Vec<IpAddr>,
}

impl PeerPolicy {
    pub fn new(media: Vec<SocketAddr>, media_bound: SocketAddr, extra_ips: Vec<IpAddr>) -> Self {
        Self {
            media,
            media_bound,
            extra_ips,
        }
    }

    /// May a permission be installed for `ip`?
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.media.iter().any(|m| m.ip() == ip) || self.extra_ips.contains(&ip)
    }

    /// Where to send a datagram the client addressed to `peer`; `None` when `peer` is not
    /// allowed.
    pub fn route(&self, peer: SocketAddr) -> Option<SocketAddr> {
        if self.media.contains(&peer) {
            return Some(self.media_local(peer.ip()));
        }
        self.extra_ips.contains(&peer.ip()).then_some(peer)
    }

    /// relais's media socket as the relay reaches it for peers of `peer_ip`'s family: where
    /// [`route`](Self::route) sends what the client addresses to a media host candidate. The
    /// IO shell hands what is sent there to the media plane in-process.
    pub fn media_local(&self, peer_ip: IpAddr) -> SocketAddr {
        let ip = match (self.media_bound.ip(), peer_ip) {
            (IpAddr::V4(v4), _) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (IpAddr::V6(v6), IpAddr::V4(_)) if v6.is_unspecified() => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            (IpAddr::V6(v6), _) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            (bound, _) => bound,
        };
        SocketAddr::new(ip, self.media_bound.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_own_media_and_extra_peers() {
        let p = PeerPolicy::new(
            vec![a("203.0.113.5:3479")],
            a("0.0.0.0:3479"),
            vec!["10.0.0.2".parse().unwrap()],
        );
        assert!(p.ip_allowed("203.0.113.5".parse().unwrap()));
        assert!(p.ip_allowed("10.0.0.2".parse().unwrap()));
        assert!(!p.ip_allowed("203.0.113.6".parse().unwrap()));
        assert!(!p.ip_allowed("127.0.0.1".parse().unwrap()));
        // Own media: delivered to the local socket, not hairpinned through the NAT.
        assert_eq!(p.route(a("203.0.113.5:3479")), Some(a("127.0.0.1:3479")));
        // Same IP, another port: refused (the HTTP port, SSH…).
        assert_eq!(p.route(a("203.0.113.5:22")), None);
        assert_eq!(p.route(a("10.0.0.2:5000")), Some(a("10.0.0.2:5000")));
        assert_eq!(p.route(a("198.51.100.1:3479")), None);
    }

    #[test]
    fn bound_media_address_is_used_as_is() {
        let p = PeerPolicy::new(vec![a("10.1.0.1:3479")], a("10.1.0.1:3479"), vec![]);
        assert_eq!(p.route(a("10.1.0.1:3479")), Some(a("10.1.0.1:3479")));
    }

    #[test]
    fn media_local_is_where_own_media_is_routed() {
        let p = PeerPolicy::new(vec![a("203.0.113.5:3479")], a("0.0.0.0:3479"), vec![]);
        let v4 = "203.0.113.5".parse().unwrap();
        assert_eq!(p.route(a("203.0.113.5:3479")), Some(p.media_local(v4)));
        let p6 = PeerPolicy::new(vec![a("[2001:db8::5]:3479")], a("[::]:3479"), vec![]);
        assert_eq!(
            p6.media_local("2001:db8::5".parse().unwrap()),
            a("[::1]:3479")
        );
        assert_eq!(p6.media_local(v4), a("127.0.0.1:3479"));
    }
}
