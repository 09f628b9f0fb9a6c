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
