//! The threads the media path runs on: a tokio runtime of its own, apart from HTTP, Socket.IO
//! and storage. With one worker (the default up to seven cores) it is a current-thread runtime
//! on one dedicated thread: the socket reader, every peer task and the socket sender hand
//! packets to each other without waking another thread. One such thread forwards about
//! 60,000 packets/s on the 2-core machine of the README's benchmark (some 170 consultations);
//! more workers make a multi-thread runtime, which scales past one core at a higher cost per
//! packet.
//!
//! Why: with everything on the process's multi-thread runtime, a forwarded packet crossed
//! three tasks that the scheduler spread over both cores, and each hand-over woke a parked
//! thread (futex, context switch: a fifth of the server's CPU time in `perf` at 50
//! consultations). Measured in the README's media benchmark.
//!
//! Invariants:
//! - sockets the media tasks use are registered with this runtime's I/O driver (create them
//!   under [`MediaRuntime::enter`]), so that their readiness wakes this runtime's threads;
//! - dropping the runtime stops its threads; their tasks are dropped with it.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, EnterGuard, Handle};
use tokio::sync::oneshot;

pub struct MediaRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MediaRuntime {
    /// Starts the runtime on `workers` threads (one: a current-thread runtime).
    pub fn start(workers: usize) -> std::io::Result<Self> {
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("relais-media".into())
            .spawn(move || {
                let runtime = if workers <= 1 {
                    Builder::new_current_thread().enable_all().build()
                } else {
                    Builder::new_multi_thread()
                        .worker_threads(workers)
                        .thread_name("relais-media")
                        .enable_all()
                        .build()
                };
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                // Drives the spawned tasks (current-thread) until the runtime is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("the media thread ended before starting"))??;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Makes this runtime current, so that sockets created meanwhile register with it.
    pub fn enter(&self) -> EnterGuard<'_> {
        self.handle.enter()
    }
}

impl Drop for MediaRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not joined: drop may run on an async worker, which must not block. The thread ends
        // as soon as it sees the signal.
        drop(self.thread.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Sends on drop: tells when the runtime let go of a task.
    struct Dropped(std_mpsc::Sender<&'static str>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send("dropped");
        }
    }

    #[test]
    fn runs_tasks_on_its_thread_and_drops_them_when_dropped() {
        for workers in [1, 2] {
            let rt = MediaRuntime::start(workers).unwrap();
            let (tx, rx) = std_mpsc::channel();
            let guard = Dropped(tx.clone());
            rt.handle().spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let name = std::thread::current().name().map(str::to_string);
                tx.send(if name.as_deref() == Some("relais-media") {
                    "on the media thread"
                } else {
                    "elsewhere"
                })
                .unwrap();
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            let wait = Duration::from_secs(5);
            assert_eq!(rx.recv_timeout(wait).unwrap(), "on the media thread");
            drop(rt);
            assert_eq!(rx.recv_timeout(wait).unwrap(), "dropped");
        }
    }

    #[test]
    fn sockets_created_under_enter_belong_to_it() {
        let rt = MediaRuntime::start(1).unwrap();
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_socket.set_nonblocking(true).unwrap();
        let addr = std_socket.local_addr().unwrap();
        let socket = {
            let _guard = rt.enter();
            tokio::net::UdpSocket::from_std(std_socket).unwrap()
        };
        let (tx, rx) = std_mpsc::channel();
        rt.handle().spawn(async move {
            let mut buf = [0u8; 8];
            let n = socket.recv(&mut buf).await.unwrap();
            tx.send(buf[..n].to_vec()).unwrap();
        });
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"ping", addr).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"ping");
    }
}
