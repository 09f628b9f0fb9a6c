//! This host's interface addresses, for the candidates and URLs relais advertises.

use std::net::IpAddr;

/// Non-loopback addresses of this host's interfaces, IPv4 first.
pub fn interface_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            // Link-local IPv6 needs a scope id that candidates cannot carry.
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

/// Whether browsers treat `ip` as private: Chromium ignores remote ICE candidates on port 80
/// or 443 at such addresses (loopback, RFC 1918, link-local, CGNAT, unique-local IPv6), so
/// ICE-TCP on a shared 443 reaches them only from other clients.
pub fn private_for_browsers(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| private_for_browsers(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_as_browsers_see_them() {
        for ip in [
            "10.1.2.3",
            "192.168.4.81",
            "172.16.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(private_for_browsers(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.1", "203.0.113.10", "100.128.0.1", "2001:db8::1"] {
            assert!(!private_for_browsers(ip.parse().unwrap()), "{ip}");
        }
    }
}
