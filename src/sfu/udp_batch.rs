//! Batched datagram I/O for the media socket: `recvmmsg(2)` and `sendmmsg(2)` (Linux, the
//! platform relais runs on) move up to [`BATCH`] datagrams per system call.
//!
//! Why: on the media path every forwarded packet is one datagram in and one out; a system call
//! per datagram, and a wake-up of whoever waits on the other end per datagram, cost more CPU
//! than everything the SFU does with the packet (see the README's media benchmark).
//!
//! Invariants:
//! - both calls are non-blocking; run them inside tokio's `try_io` so that `WouldBlock` clears
//!   the socket's readiness;
//! - a datagram longer than [`SLOT`] is reported as truncated, never as whole;
//! - [`SendBatch::send`] reports how many datagrams left, from the start of the slice: the caller decides
//!   what to do with the first one that did not.

use std::io;
use std::net::SocketAddr;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Bytes per receive slot: larger than any datagram a WebRTC peer sends (MTU-sized).
pub const SLOT: usize = 2048;

/// One datagram a [`RecvBatch`] received.
pub struct Received<'a> {
    pub data: &'a [u8],
    pub from: SocketAddr,
    /// Longer than [`SLOT`]: `data` holds only its start.
    pub truncated: bool,
}

/// Receive slots, reused from one call to the next.
pub struct RecvBatch {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    names: Box<[libc::sockaddr_storage; BATCH]>,
    meta: [(usize, Option<SocketAddr>, bool); BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            bufs: Box::new([[0; SLOT]; BATCH]),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            names: Box::new(unsafe { std::mem::zeroed() }),
            meta: [(0, None, false); BATCH],
            count: 0,
        }
    }

    /// The datagrams the last [`recv`](Self::recv) read, in arrival order; those from an
    /// address family we do not speak are skipped.
    pub fn iter(&self) -> impl Iterator<Item = Received<'_>> {
        self.meta[..self.count]
            .iter()
            .zip(self.bufs.iter())
            .filter_map(|(&(len, from, truncated), buf)| {
                Some(Received {
                    data: &buf[..len],
                    from: from?,
                    truncated,
                })
            })
    }

    /// Reads up to [`BATCH`] datagrams without blocking; `WouldBlock` when there is none.
    pub fn recv(&mut self, socket: &impl std::os::fd::AsRawFd) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: iovec and mmsghdr are plain old data; all zeroes is a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            point(
                &mut hdrs[i],
                &mut iov[i],
                (self.bufs[i].as_mut_ptr().cast(), SLOT),
                (
                    (&mut self.names[i] as *mut libc::sockaddr_storage).cast(),
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                ),
            );
        }
        // SAFETY: every header points at a live buffer of the length it states and at a
        // sockaddr_storage for the sender's address; all outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().take(n).enumerate() {
            let len = (h.msg_len as usize).min(SLOT);
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.meta[i] = (len, socket_addr(&self.names[i]), truncated);
        }
        self.count = n;
        Ok(n)
    }
}

/// Destination addresses in the kernel's form, reused from one [`send`](Self::send) to the
/// next (the sender's hot path allocates nothing once it has seen a full batch).
#[derive(Default)]
pub struct SendBatch {
    names: Vec<socket2::SockAddr>,
}

impl SendBatch {
    /// Sends `datagrams` in order, up to [`BATCH`] per system call, without blocking. Returns
    /// how many were sent before the first that could not be (its error is the `Err` only when
    /// none was sent).
    pub fn send(
        &mut self,
        socket: &impl std::os::fd::AsRawFd,
        datagrams: &[(bytes::Bytes, SocketAddr)],
    ) -> io::Result<usize> {
        let count = datagrams.len().min(BATCH);
        self.names.clear();
        self.names.extend(
            datagrams[..count]
                .iter()
                .map(|(_, to)| socket2::SockAddr::from(*to)),
        );
        // SAFETY: iovec and mmsghdr are plain old data; all zeroes is a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((data, _), name)) in datagrams[..count].iter().zip(&self.names).enumerate() {
            point(
                &mut hdrs[i],
                &mut iov[i],
                (data.as_ptr() as *mut libc::c_void, data.len()),
                (name.as_ptr() as *mut libc::c_void, name.len()),
            );
        }
        // SAFETY: every header points at a live buffer of the length it states and at a live
        // address of the length it states; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Points one message header at one buffer `(start, length)` and one socket address
/// `(start, length)`, through `iov`.
fn point(
    hdr: &mut libc::mmsghdr,
    iov: &mut libc::iovec,
    (buf, len): (*mut libc::c_void, usize),
    (name, namelen): (*mut libc::c_void, libc::socklen_t),
) {
    iov.iov_base = buf;
    iov.iov_len = len;
    let h = &mut hdr.msg_hdr;
    h.msg_name = name;
    h.msg_namelen = namelen;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
}

/// The address the kernel wrote into `name`, if it is IPv4 or IPv6.
fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // enough and aligned for.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::UdpSocket;

    fn pair(addr: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind(addr).unwrap();
        let b = UdpSocket::bind(addr).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn wait_readable(s: &UdpSocket) {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut probe = [0u8; 1];
        s.peek_from(&mut probe).unwrap();
        s.set_nonblocking(true).unwrap();
    }

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_in_order() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let (a, b) = pair(addr);
            let to = b.local_addr().unwrap();
            let out: Vec<_> = (0..5u8)
                .map(|i| (Bytes::from(vec![i; 100 + usize::from(i)]), to))
                .collect();
            assert_eq!(SendBatch::default().send(&a, &out).unwrap(), 5);
            wait_readable(&b);
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            while got.len() < 5 {
                batch.recv(&b).unwrap();
                got.extend(batch.iter().map(|r| (r.data.to_vec(), r.from, r.truncated)));
            }
            for (i, (data, from, truncated)) in got.into_iter().enumerate() {
                assert_eq!(data, vec![i as u8; 100 + i]);
                assert_eq!(from, a.local_addr().unwrap());
                assert!(!truncated);
            }
        }
    }

    #[test]
    fn an_empty_socket_would_block_and_an_oversized_datagram_is_truncated() {
        let (a, b) = pair("127.0.0.1:0");
        let mut batch = RecvBatch::new();
        let e = batch.recv(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.send_to(&[7u8; SLOT + 100], b.local_addr().unwrap())
            .unwrap();
        wait_readable(&b);
        assert_eq!(batch.recv(&b).unwrap(), 1);
        let r = batch.iter().next().unwrap();
        assert!(r.truncated);
        assert_eq!(r.data.len(), SLOT);
    }

    #[test]
    fn more_than_a_batch_is_sent_a_batch_at_a_time() {
        let (a, b) = pair("127.0.0.1:0");
        let to = b.local_addr().unwrap();
        let out: Vec<_> = (0..BATCH + 3)
            .map(|_| (Bytes::from_static(b"x"), to))
            .collect();
        let mut batch = SendBatch::default();
        assert_eq!(batch.send(&a, &out).unwrap(), BATCH);
        assert_eq!(batch.send(&a, &out[BATCH..]).unwrap(), 3);
    }
}
