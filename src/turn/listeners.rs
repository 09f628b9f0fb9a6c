//! The TURN server's sockets: one UDP socket, a TCP listener, and TLS listeners, all feeding
//! [`Shell::handle`].
//!
//! Invariants:
//! - a stream connection must send a whole TURN message within [`FIRST_MESSAGE_TIMEOUT`] (TLS
//!   handshake included) and, while it holds no allocation, is closed after
//!   [`IDLE_WITHOUT_ALLOCATION`] of silence; at most [`MAX_CONNECTIONS`] are open;
//! - a byte stream that is not TURN framing closes the connection;
//! - closing a connection releases its allocation (RFC 8656 §5);
//! - UDP datagrams longer than [`udp_batch::SLOT`](crate::sfu::udp_batch::SLOT) are dropped
//!   and counted (`oversized_datagram`): media datagrams are MTU-sized.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rtc::shared::turn_framing::TurnStreamDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::allocation::{FiveTuple, Transport};
use super::shell::{ClientSink, Shell};
use crate::metrics::TransportLabels;
use crate::sfu::udp_batch::RecvBatch;

pub const MAX_CONNECTIONS: usize = 4096;
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(30);
/// Messages waiting to be written to one connection.
const WRITE_QUEUE: usize = 512;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 16 * 1024;

/// Reads the UDP socket a batch of datagrams per system call, as the media socket is read.
pub async fn run_udp(shell: Arc<Shell>, socket: Arc<UdpSocket>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut batch = RecvBatch::new();
    loop {
        // Awaited before every batch: it is what yields to the runtime under constant load.
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_io(Interest::READABLE, || batch.recv(&*socket)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // ICMP errors from a vanished client, and the like: the socket stays usable.
            Err(_) => {
                shell.metrics.turn.drop("recv_error");
                continue;
            }
        }
        for r in batch.iter() {
            if r.truncated {
                shell.metrics.turn.drop("oversized_datagram");
                continue;
            }
            let tuple = FiveTuple {
                transport: Transport::Udp,
                client: r.from,
                server: local,
            };
            let sink = ClientSink::Udp {
                socket: socket.clone(),
                to: r.from,
            };
            if let Some(response) = shell.handle(tuple, &sink, r.data) {
                let _ = socket.try_send_to(&response, r.from);
            }
        }
    }
}

/// Accepts TCP connections, wrapped in TLS when `tls` is given.
pub async fn run_tcp(shell: Arc<Shell>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            shell.metrics.turn.drop("too_many_connections");
            continue;
        }
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shell = shell.clone();
        let tls = tls.clone();
        let open = open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            match tls {
                None => {
                    let tuple = FiveTuple {
                        transport: Transport::Tcp,
                        client,
                        server,
                    };
                    serve_stream(&shell, stream, tuple).await;
                }
                Some(acceptor) => {
                    let tuple = FiveTuple {
                        transport: Transport::Tls,
                        client,
                        server,
                    };
                    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_stream(&shell, stream, tuple).await,
                        _ => shell.metrics.turn.drop("tls_handshake"),
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One client connection: split TURN messages off the stream, answer them, and write what the
/// relay sends back through a bounded queue.
pub async fn serve_stream<S>(shell: &Shell, stream: S, tuple: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let gauge = shell
        .metrics
        .turn
        .connections
        .get_or_create(&TransportLabels {
            transport: tuple.transport.as_str(),
        })
        .clone();
    gauge.inc();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let mut write_task = tokio::spawn(async move {
        // What is queued when the writer wakes goes out in one write (one TLS record, one
        // system call) rather than one per message.
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while let Some(bytes) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&bytes);
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if writer.write_all(&batch).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let sink = ClientSink::Stream(tx.clone());
    let mut decoder = TurnStreamDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut timeout = FIRST_MESSAGE_TIMEOUT;
    'read: loop {
        let n = match tokio::time::timeout(timeout, reader.read(&mut buf)).await {
            Err(_) if shell.has_allocation(&tuple) => continue,
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        decoder.extend_from_slice(&buf[..n]);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    timeout = IDLE_WITHOUT_ALLOCATION;
                    if let Some(response) = shell.handle(tuple, &sink, &message)
                        && tx.send(Bytes::from(response)).await.is_err()
                    {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    shell.metrics.turn.drop("malformed_stream");
                    break 'read;
                }
            }
        }
    }
    shell.client_closed(&tuple);
    drop(sink);
    drop(tx);
    // The writer drains what is queued, unless the client stopped reading.
    if tokio::time::timeout(Duration::from_secs(2), &mut write_task)
        .await
        .is_err()
    {
        write_task.abort();
        shell.metrics.turn.drop("close_timeout");
    }
    gauge.dec();
}
