//! One Redis connection for everything a node does there: the Socket.IO adapter's pub/sub
//! (as a `socketioxide_redis` [`Driver`]), relais's own node-to-node bus, and the directory's
//! keys.
//!
//! Why not the adapter's stock `RedisDriver`: it holds a plain multiplexed connection, which
//! stays dead after Redis restarts (every cross-node event lost until the node restarts).
//! This one sits on redis-rs's `ConnectionManager`, which reconnects with backoff and
//! subscribes again to every channel it had, so a node degrades while Redis is away and
//! recovers when it is back.
//!
//! Invariants:
//! - messages are handed out per channel through bounded queues; a full queue drops (and
//!   counts) rather than blocking the connection's reader;
//! - channels subscribed together with [`ManagedDriver::subscribe_ordered`] share one queue,
//!   so their messages come out in the order Redis delivered them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A Redis connection that survives Redis restarts. Cheap to clone (clones share it).
#[derive(Clone)]
pub struct ManagedDriver {
    conn: ConnectionManager,
    handlers: Handlers,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for ManagedDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedDriver").finish_non_exhaustive()
    }
}

fn message_of(push: PushInfo) -> Option<ChanItem> {
    if push.kind != PushKind::Message {
        return None;
    }
    let mut data = push.data.into_iter();
    let channel = String::from_redis_value(data.next()?).ok()?;
    let payload = Vec::<u8>::from_redis_value(data.next()?).ok()?;
    Some((channel, payload))
}

impl ManagedDriver {
    /// Connects (RESP3 whatever the URL says: pub/sub messages arrive as pushes on the same
    /// connection). Fails when Redis does not answer within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let info = url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let handlers: Handlers = Arc::new(RwLock::new(HashMap::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        let (push_handlers, push_dropped) = (handlers.clone(), dropped.clone());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3)
            .set_automatic_resubscription()
            .set_push_sender(move |push: PushInfo| {
                if let Some((channel, payload)) = message_of(push) {
                    let handlers = push_handlers.read();
                    if let Some(tx) = handlers.get(&channel)
                        && tx.try_send((channel, payload)).is_err()
                    {
                        push_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let conn =
            tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
                })??;
        Ok(Self {
            conn,
            handlers,
            dropped,
        })
    }

    /// The connection, for plain commands (`SET`, `MGET`, …).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Messages dropped because a subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subscribes to `channels`, all delivered through one queue of `size` in arrival order.
    pub async fn subscribe_ordered(
        &self,
        channels: &[String],
        size: usize,
    ) -> redis::RedisResult<mpsc::Receiver<ChanItem>> {
        let (tx, rx) = mpsc::channel(size.max(1));
        {
            let mut handlers = self.handlers.write();
            for c in channels {
                handlers.insert(c.clone(), tx.clone());
            }
        }
        let mut conn = self.conn.clone();
        for c in channels {
            conn.subscribe(c.as_str()).await?;
        }
        Ok(rx)
    }
}

impl Driver for ManagedDriver {
    type Error = redis::RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        redis::cmd("PUBLISH")
            .arg(chan)
            .arg(val)
            .exec_async(&mut self.conn.clone())
            .await
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let rx = self
            .subscribe_ordered(std::slice::from_ref(&chan), size)
            .await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers.write().remove(&chan);
        self.conn.clone().unsubscribe(chan.as_str()).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn only_messages_are_read() {
        let push = |kind, data| PushInfo { kind, data };
        let msg = push(
            PushKind::Message,
            vec![
                Value::BulkString(b"chan".to_vec()),
                Value::BulkString(b"payload".to_vec()),
            ],
        );
        assert_eq!(
            message_of(msg),
            Some(("chan".to_string(), b"payload".to_vec()))
        );
        assert_eq!(message_of(push(PushKind::Disconnection, vec![])), None);
        assert_eq!(message_of(push(PushKind::Message, vec![])), None);
        assert_eq!(
            message_of(push(PushKind::Message, vec![Value::Nil, Value::Nil])),
            None
        );
    }
}
