//! The bare UDP relay: the physical floor a media server cannot beat on this machine. One
//! socket in; each datagram fanned out to the other members of its sender's session; no
//! crypto, no parsing beyond a lookup. Run as its own process (`relais-load relay`) so that
//! its CPU time can be read from `/proc` exactly as the server's is.
//!
//! Wire protocol (all on the relay's one socket):
//! - `RLYH` + session (u32 BE): the sender joins that session (repeat as keep-alive);
//! - `RLYS`: the relay answers `RLYS` + forwarded packets so far (u64 BE);
//! - anything else is media: forwarded to every other member of the sender's session.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};

const HELLO: &[u8; 4] = b"RLYH";
const STATS: &[u8; 4] = b"RLYS";

pub fn hello(session: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(HELLO);
    b[4..].copy_from_slice(&session.to_be_bytes());
    b
}

/// Runs the relay on `socket` until `stop` is set (checked at least every 200 ms).
pub fn run(socket: UdpSocket, stop: &AtomicBool) -> std::io::Result<()> {
    // The same kernel buffers as relais's media socket: a like-for-like floor.
    relais::udp_buffers::enlarge(&socket, "bare relay");
    socket.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
    let mut session_of: HashMap<SocketAddr, u32> = HashMap::new();
    let mut members: HashMap<u32, Vec<SocketAddr>> = HashMap::new();
    let mut forwarded: u64 = 0;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let data = &buf[..n];
        if n == 8 && &data[..4] == HELLO {
            let session = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
            if session_of.insert(from, session) != Some(session) {
                members.entry(session).or_default().push(from);
            }
            continue;
        }
        if n == 4 && data == STATS {
            let mut answer = [0u8; 12];
            answer[..4].copy_from_slice(STATS);
            answer[4..].copy_from_slice(&forwarded.to_be_bytes());
            let _ = socket.send_to(&answer, from);
            continue;
        }
        let Some(session) = session_of.get(&from) else {
            continue;
        };
        for to in &members[session] {
            if *to != from && socket.send_to(data, to).is_ok() {
                forwarded += 1;
            }
        }
    }
    Ok(())
}

/// Asks a relay how many packets it forwarded (bounded: 1 s).
pub async fn forwarded(relay: SocketAddr) -> Option<u64> {
    let s = tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await.ok()?;
    s.send_to(STATS, relay).await.ok()?;
    let mut buf = [0u8; 16];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(1), s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    if n != 12 || &buf[..4] != STATS {
        return None;
    }
    Some(u64::from_be_bytes(buf[4..12].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn fans_out_within_a_session_and_counts() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || run(socket, &s2));
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send_to(&hello(1), addr).await.unwrap();
        b.send_to(&hello(1), addr).await.unwrap();
        c.send_to(&hello(2), addr).await.unwrap();
        a.send_to(b"media", addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(2), b.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"media");
        assert_eq!(forwarded(addr).await, Some(1));
        assert!(c.try_recv_from(&mut buf).is_err());
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap().unwrap();
    }
}
