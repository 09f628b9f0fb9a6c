//! Network plumbing shared by the transports: who a client is on the network.
//!
//! - [`client_addr`]: the client address behind trusted proxies (`http.trusted_proxies`);
//! - [`fd_limit`]: the process's open-file limit, raised at start;
//! - [`interfaces`]: this host's addresses, advertised when no public address is configured.

pub mod client_addr;
pub mod fd_limit;
pub mod interfaces;

pub use client_addr::{Cidr, ClientAddr, TrustedProxies, client_ip};
pub use interfaces::{interface_ips, private_for_browsers};
