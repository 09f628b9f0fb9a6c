//! Kernel buffers of the UDP sockets that carry many flows at once (the media port, the TURN
//! port): one socket receives every PeerConnection's packets, so the kernel's default
//! receive buffer (about 208 KiB: a few milliseconds of 100 consultations) overflows as soon
//! as the reading task is descheduled for a moment on a busy machine, and those packets are
//! lost before relais ever sees them (`RcvbufErrors` in `/proc/net/snmp`).

use socket2::SockRef;

/// What relais asks for, each way. The kernel caps it at `net.core.rmem_max` /
/// `net.core.wmem_max` (README, "Deployment").
pub const WANTED: usize = 4 << 20;

/// Sets both buffers to [`WANTED`] (or as close as the kernel allows) and returns what the
/// socket got (receive, send), as the kernel reports it (Linux doubles the request for its
/// bookkeeping). Never fails the caller: a socket keeps its defaults when the kernel refuses.
pub fn enlarge<'s>(socket: impl Into<SockRef<'s>>, what: &'static str) -> (usize, usize) {
    let socket = socket.into();
    let _ = socket.set_recv_buffer_size(WANTED);
    let _ = socket.set_send_buffer_size(WANTED);
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    if recv < WANTED {
        tracing::warn!(
            socket = what,
            recv_buffer = recv,
            wanted = WANTED,
            "UDP receive buffer smaller than wanted: packets may be dropped under load \
             (raise net.core.rmem_max)"
        );
    }
    (recv, send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_beyond_the_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = SockRef::from(&socket).recv_buffer_size().unwrap();
        let (recv, send) = enlarge(&socket, "test");
        // The kernel may cap the request (net.core.rmem_max), never shrink the buffer.
        assert!(recv >= before, "{recv} < {before}");
        assert!(send > 0);
    }
}
