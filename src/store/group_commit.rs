//! Group commit for message inserts on SQLite.
//!
//! SQLite has one writer. Committing each message on its own costs a WAL append and two thread
//! hand-offs (sqlx runs each connection on its own thread) per message. Here one task owns the
//! write connection: it takes every insert waiting (up to [`MAX_BATCH`]), runs them in one
//! transaction and answers each caller. Under load, batches grow and the per-message cost
//! falls; an idle server still commits a lone message immediately.
//!
//! Invariant: a caller is answered only after its transaction committed (or failed).

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::messages::{NewMessage, insert_statement};
use super::{StoreError, StoreResult};

const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<StoreResult<Option<i64>>>;

#[derive(Clone, Debug)]
pub struct GroupCommit {
    tx: mpsc::Sender<(NewMessage, Reply)>,
}

impl GroupCommit {
    pub fn start(pool: AnyPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Inserts one message; `Ok(None)` when its client message id was already used.
    pub async fn insert(&self, new: NewMessage) -> StoreResult<Option<i64>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((new, reply))
            .await
            .map_err(|_| StoreError::Corrupt("message writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("message writer stopped".into()))?
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::Receiver<(NewMessage, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut results = Vec::with_capacity(batch.len());
        let outcome: Result<(), sqlx::Error> = async {
            let mut tx = pool.begin().await?;
            for (new, _) in &batch {
                // A failing statement does not abort a SQLite transaction: its caller gets
                // the error, the others still commit.
                let r = insert_statement(new).fetch_optional(&mut *tx).await;
                results.push(r.map_err(StoreError::from));
            }
            tx.commit().await
        }
        .await;
        match outcome {
            Ok(()) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Corrupt(format!(
                        "commit failed: {message}"
                    ))));
                }
            }
        }
    }
}
