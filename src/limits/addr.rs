//! The unit of "one client" on the network.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A client address as limits count it: an IPv4 address, or the /64 prefix of an IPv6 one (a
/// host usually holds a whole /64 and can rotate through it at will). IPv4-mapped IPv6
/// addresses count as their IPv4 address; `::1` stays itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None if v6.is_loopback() => Self(ip),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }

    /// The address (IPv4) or the first address of the /64 (IPv6).
    pub fn ip(self) -> IpAddr {
        self.0
    }

    pub fn is_loopback(self) -> bool {
        self.0.is_loopback()
    }
}

impl From<IpAddr> for AddrKey {
    fn from(ip: IpAddr) -> Self {
        Self::of(ip)
    }
}

impl fmt::Display for AddrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AddrKey {
        AddrKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_is_itself_mapped_or_not() {
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.7");
        assert!(key("::1").is_loopback());
        assert!(key("127.0.0.1").is_loopback());
    }
}
