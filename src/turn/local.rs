//! The short-circuit between an allocation and relais's own media plane: what a client relays
//! to relais's media address never goes through the kernel, and what the media plane sends to
//! the allocation's relayed address goes straight to the client. Pure: no socket, no clock.
//!
//! Without it, a relayed datagram crossed loopback twice (relayed socket → media socket and
//! back), two system calls and a hop between runtimes per packet each way.
//!
//! The media plane sees exactly what it would have seen over UDP: datagrams from the
//! allocation's relayed address, and it answers to that address. The relay's decisions stay
//! those of the [`Relay`] the core installed permissions, channels and the budget in.
//!
//! Invariants:
//! - only datagrams the core routes to [`PeerPolicy::media_local`](super::policy::PeerPolicy)
//!   (relais's own media socket) take the short-circuit; every other peer is reached through
//!   the allocation's relayed socket;
//! - media → client goes through [`Relay::handle_peer_traffic`] as if the datagram had
//!   arrived on the relayed socket from the media socket: no permission, no relay; over the
//!   budget, no relay; a bound channel is used when there is one;
//! - a link lives exactly as long as its allocation: the shell removes it from the media plane
//!   with the [`Command::FreeRelay`](super::core::Command) that closes the relayed socket.

use std::net::SocketAddr;
use std::time::Instant;

use super::allocation::{DropReason, Relay};

/// One allocation as the media plane reaches it in-process.
#[derive(Clone)]
pub struct LocalLink {
    relay: Relay,
    relayed: SocketAddr,
    own_media: SocketAddr,
    /// The client is on a stream (TCP, TLS): padded ChannelData.
    stream: bool,
}

impl LocalLink {
    /// From the [`Command::StartRelay`](super::core::Command) of the allocation.
    pub fn new(relay: Relay, relayed: SocketAddr, own_media: SocketAddr, stream: bool) -> Self {
        Self {
            relay,
            relayed,
            own_media,
            stream,
        }
    }

    /// The allocation's relayed address: where the media plane sees the client's datagrams
    /// come from, and sends its own.
    pub fn relayed(&self) -> SocketAddr {
        self.relayed
    }

    /// Whether a datagram the core sends to `to` is for relais's own media socket.
    pub fn is_for_media(&self, to: SocketAddr) -> bool {
        to == self.own_media
    }

    /// Media plane → client: the message that carries `data` to the client, or why not.
    pub fn from_media(&self, data: &[u8], now: Instant) -> Result<Vec<u8>, DropReason> {
        let to = self
            .relay
            .handle_peer_traffic(self.own_media, data.len(), now)?;
        to.encode(data, self.stream).ok_or("encode")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::turn::allocation::PERMISSION_LIFETIME;
    use crate::turn::policy::PeerPolicy;
    use crate::turn::wire;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const MEDIA: &str = "203.0.113.5:3479";
    const RELAYED: &str = "203.0.113.5:50000";

    fn setup(bytes_per_sec: u64, stream: bool, now: Instant) -> (PeerPolicy, Relay, LocalLink) {
        let policy = PeerPolicy::new(vec![a(MEDIA)], a("0.0.0.0:3479"), vec![]);
        let relay = Relay::new(bytes_per_sec, now);
        let own_media = policy.media_local(a(MEDIA).ip());
        let link = LocalLink::new(relay.clone(), a(RELAYED), own_media, stream);
        (policy, relay, link)
    }

    #[test]
    fn what_the_core_routes_to_own_media_takes_the_short_circuit() {
        let now = Instant::now();
        let (policy, relay, link) = setup(1_000_000, false, now);
        relay.permit(a(MEDIA).ip(), now).unwrap();
        let to = relay.send_to_peer(a(MEDIA), 100, &policy, now).unwrap();
        assert!(link.is_for_media(to));
        assert!(!link.is_for_media(a("10.0.0.2:5000")));
        assert!(
            !link.is_for_media(a(MEDIA)),
            "the advertised address is not the socket's"
        );
    }

    #[test]
    fn media_to_client_needs_a_permission() {
        let now = Instant::now();
        let (policy, relay, link) = setup(1_000_000, false, now);
        assert_eq!(link.from_media(b"rtp", now), Err("no_permission"));
        relay.permit(a(MEDIA).ip(), now).unwrap();
        // As over the kernel, the way back to the address the client named is learnt from
        // the client's first datagram to it (relais, ICE-lite, never speaks first).
        assert_eq!(link.from_media(b"rtp", now), Err("no_permission"));
        let _ = relay.send_to_peer(a(MEDIA), 3, &policy, now).unwrap();
        let message = link.from_media(b"rtp", now).unwrap();
        // No channel: a Data indication naming the peer as the client knows it.
        assert!(!wire::is_channel_data(&message));
        assert!(message.windows(3).any(|w| w == b"rtp"));
        let later = now + PERMISSION_LIFETIME + Duration::from_secs(1);
        assert_eq!(link.from_media(b"rtp", later), Err("no_permission"));
    }

    #[test]
    fn media_to_client_uses_the_bound_channel_padded_on_streams() {
        let now = Instant::now();
        for stream in [false, true] {
            let (policy, relay, link) = setup(1_000_000, stream, now);
            relay.bind_channel(0x4001, a(MEDIA), now).unwrap();
            let _ = relay.channel_to_peer(0x4001, 3, &policy, now).unwrap();
            let message = link.from_media(b"rtp", now).unwrap();
            assert_eq!(
                wire::parse_channel_data(&message),
                Some((0x4001, &b"rtp"[..]))
            );
            assert_eq!(message.len(), if stream { 8 } else { 7 });
        }
    }

    #[test]
    fn media_to_client_counts_against_the_budget() {
        let now = Instant::now();
        let (policy, relay, link) = setup(1000, false, now);
        relay.bind_channel(0x4001, a(MEDIA), now).unwrap();
        let _ = relay.channel_to_peer(0x4001, 500, &policy, now).unwrap();
        assert!(link.from_media(&[0u8; 400], now).is_ok());
        assert_eq!(link.from_media(&[0u8; 400], now), Err("bandwidth"));
        assert!(
            link.from_media(&[0u8; 400], now + Duration::from_secs(1))
                .is_ok()
        );
    }
}
