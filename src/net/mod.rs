//! Network plumbing shared by the transports: who a client is on the network.
//!
//! - [`client_addr`]: the client address behind trusted proxies (`http.trusted_proxies`);
//! - [`fd_limit`]: the process's open-file limit, raised at start.

pub mod client_addr;
pub mod fd_limit;

pub use client_addr::{Cidr, ClientAddr, TrustedProxies};
