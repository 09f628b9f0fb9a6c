//! A small Socket.IO v4 client (Engine.IO 4, WebSocket transport, default namespace).
//!
//! One task per connection reads frames: it answers pings, routes acknowledgements to their
//! waiters and queues events (bounded; when the application stops reading, further events are
//! counted and dropped rather than buffered without limit).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Events kept for the application before new ones are dropped.
const EVENT_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SioError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("connection refused by the server: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("connection closed")]
    Closed,
    #[error("tls: {0}")]
    Tls(String),
}

/// A server event: name and first argument.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct SioClient {
    out: Option<mpsc::Sender<String>>,
    events: mpsc::Receiver<Event>,
    pending: Pending,
    next_ack: AtomicU64,
    dropped: Arc<AtomicU64>,
    /// The server's socket id.
    pub sid: String,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SioClient {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Extra root certificate (PEM) to trust for `https` URLs, e.g. relais's self-signed one.
    pub root_cert_pem: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Extra headers of the WebSocket upgrade request (`X-Forwarded-For` behind a proxy).
    pub headers: Vec<(String, String)>,
}

fn ws_url(base: &str) -> Result<String, SioError> {
    let mut url = url::Url::parse(base).map_err(|e| SioError::Protocol(e.to_string()))?;
    let scheme = match url.scheme() {
        "https" | "wss" => "wss",
        _ => "ws",
    };
    url.set_scheme(scheme)
        .map_err(|_| SioError::Protocol("bad scheme".into()))?;
    url.set_path("/socket.io/");
    url.set_query(Some("EIO=4&transport=websocket"));
    Ok(url.to_string())
}

fn connector(opts: &ConnectOptions) -> Result<Option<tokio_tungstenite::Connector>, SioError> {
    let Some(pem) = &opts.root_cert_pem else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| SioError::Tls(e.to_string()))?;
        roots.add(cert).map_err(|e| SioError::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SioError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))))
}

impl SioClient {
    /// Connects to `base` (`http://host:port`) and joins the default namespace with `auth`.
    pub async fn connect(base: &str, auth: Value) -> Result<Self, SioError> {
        Self::connect_with(base, auth, ConnectOptions::default()).await
    }

    pub async fn connect_with(
        base: &str,
        auth: Value,
        opts: ConnectOptions,
    ) -> Result<Self, SioError> {
        let timeout = opts.timeout.unwrap_or(Duration::from_secs(10));
        let url = ws_url(base)?;
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
        for (k, v) in &opts.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| SioError::Protocol(format!("header {k}: {e}")))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|e| SioError::Protocol(format!("header {k}: {e}")))?;
            request.headers_mut().append(name, value);
        }
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            connector(&opts)?,
        );
        let (ws, _) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SioError::Timeout("websocket".into()))??;
        let (mut sink, mut stream) = ws.split();

        // Engine.IO open packet, then the namespace connect.
        let open = next_text(&mut stream, timeout).await?;
        if !open.starts_with('0') {
            return Err(SioError::Protocol(format!(
                "expected open packet, got {open:.40}"
            )));
        }
        sink.send(WsMessage::text(format!("40{auth}"))).await?;
        let sid = loop {
            let frame = next_text(&mut stream, timeout).await?;
            if frame == "2" {
                sink.send(WsMessage::text("3")).await?;
                continue;
            }
            if let Some(body) = frame.strip_prefix("40") {
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                break v["sid"].as_str().unwrap_or_default().to_string();
            }
            if let Some(body) = frame.strip_prefix("44") {
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let msg = v["message"].as_str().unwrap_or(body).to_string();
                return Err(SioError::Refused(msg));
            }
            return Err(SioError::Protocol(format!("unexpected frame {frame:.40}")));
        };

        let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
        let (ev_tx, ev_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
        let pending: Pending = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let reader = {
            let pending = pending.clone();
            let dropped = dropped.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        out = out_rx.recv() => match out {
                            Some(text) => {
                                if sink.send(WsMessage::text(text)).await.is_err() {
                                    break;
                                }
                            }
                            None => {
                                let _ = sink.send(WsMessage::text("41")).await;
                                let _ = sink.close().await;
                                break;
                            }
                        },
                        frame = stream.next() => {
                            let text = match frame {
                                Some(Ok(WsMessage::Text(t))) => t.to_string(),
                                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Binary(_) | WsMessage::Frame(_))) => continue,
                                _ => break,
                            };
                            if text == "2" {
                                if sink.send(WsMessage::text("3")).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            if text.starts_with("41") || text.starts_with('1') {
                                break;
                            }
                            dispatch(&text, &pending, &ev_tx, &dropped);
                        }
                    }
                }
                pending.lock().clear();
            })
        };
        Ok(Self {
            out: Some(out_tx),
            events: ev_rx,
            pending,
            next_ack: AtomicU64::new(1),
            dropped,
            sid,
            reader: Some(reader),
        })
    }

    /// Sends an event without acknowledgement.
    pub async fn emit(&self, event: &str, data: &Value) -> Result<(), SioError> {
        let frame = format!("42{}", serde_json::json!([event, data]));
        self.sender()?
            .send(frame)
            .await
            .map_err(|_| SioError::Closed)
    }

    /// Sends an event and waits for its acknowledgement's first argument.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<Value, SioError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let frame = format!("42{id}{}", serde_json::json!([event, data]));
        if self.sender()?.send(frame).await.is_err() {
            self.pending.lock().remove(&id);
            return Err(SioError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(SioError::Closed),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(SioError::Timeout(format!("ack of {event}")))
            }
        }
    }

    /// The next event, or `None` once the connection closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Waits for an event named `name`, skipping others (bounded by `timeout`).
    pub async fn wait_for(&mut self, name: &str, timeout: Duration) -> Result<Value, SioError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if e.name == name => return Ok(e.data),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(SioError::Closed),
                Err(_) => return Err(SioError::Timeout(name.to_string())),
            }
        }
    }

    /// Events dropped because the application did not read them in time.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Leaves the namespace and closes the WebSocket.
    pub async fn close(mut self) {
        self.out = None;
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
    }

    fn sender(&self) -> Result<&mpsc::Sender<String>, SioError> {
        self.out.as_ref().ok_or(SioError::Closed)
    }
}

async fn next_text<S>(stream: &mut S, timeout: Duration) -> Result<String, SioError>
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => return Err(SioError::Timeout("handshake".into())),
            Ok(None) => return Err(SioError::Closed),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(WsMessage::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(WsMessage::Close(_)))) => return Err(SioError::Closed),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Handles one Engine.IO message packet (`4…`) carrying a Socket.IO packet.
fn dispatch(text: &str, pending: &Pending, events: &mpsc::Sender<Event>, dropped: &AtomicU64) {
    let Some(packet) = text.strip_prefix('4') else {
        return;
    };
    let kind = packet.as_bytes().first().copied();
    let rest = &packet[1.min(packet.len())..];
    // Skip an ack id (digits) before the JSON array.
    let json_start = rest.find(['[', '{']).unwrap_or(rest.len());
    let id: Option<u64> = rest[..json_start].parse().ok();
    let body: Value = serde_json::from_str(&rest[json_start..]).unwrap_or(Value::Null);
    match kind {
        Some(b'2') => {
            let Some(arr) = body.as_array() else { return };
            let Some(name) = arr.first().and_then(Value::as_str) else {
                return;
            };
            let event = Event {
                name: name.to_string(),
                data: arr.get(1).cloned().unwrap_or(Value::Null),
            };
            if events.try_send(event).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(b'3') => {
            if let Some(id) = id
                && let Some(tx) = pending.lock().remove(&id)
            {
                let first = body
                    .as_array()
                    .and_then(|a| a.first().cloned())
                    .unwrap_or(Value::Null);
                let _ = tx.send(first);
            }
        }
        _ => {}
    }
}
