//! Group commit on SQLite: writes of one kind (workflow starts, single jobs) made at the same
//! time by several callers share
//! a transaction, so they share its commit (the `fsync` of the log, which costs far more than
//! the rows).
//!
//! SQLite has one writer; while it commits, the callers that arrive queue up. Each caller puts
//! its write in a [`Group`] and then waits for the writer lock *or* its answer. Whoever gets
//! the lock takes every write queued so far and commits them together, then answers each of
//! their callers; a caller whose write went with someone else's batch returns as soon as that
//! batch commits. A lone caller makes a transaction of one, as before, so nothing waits for a
//! batch to fill.
//!
//! Each caller still gets its own result: when the shared transaction fails, its writes are
//! made again one transaction each, and the one that fails reports its own error. The batch
//! runs in a task of its own, so a caller that goes away (a closed HTTP request) cannot
//! interrupt the others' writes halfway.
//!
//! PostgreSQL needs none of this: concurrent commits are flushed together by the server.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use coachlibre_core::store::{StoreError, StoreResult};
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::oneshot;

use crate::db_err;

/// A write that can share a transaction with others.
#[async_trait]
pub(crate) trait GroupWrite: Send + Sync + 'static {
    /// What the caller learns once the write is committed.
    type Output: Send + 'static;
    /// Make the write on `conn`, inside a transaction the group opened.
    async fn write(&self, conn: &mut SqliteConnection) -> StoreResult<Self::Output>;

    /// Make every write of `batch`, outputs in order. By default one after the other; a kind
    /// whose rows fit in one statement does better (each statement is a hand-off to the
    /// connection's thread and back).
    async fn write_all(
        batch: &[&Self],
        conn: &mut SqliteConnection,
    ) -> StoreResult<Vec<Self::Output>>
    where
        Self: Sized,
    {
        let mut outputs = Vec::with_capacity(batch.len());
        for write in batch {
            outputs.push(write.write(conn).await?);
        }
        Ok(outputs)
    }
}

type Waiting<T> = (T, oneshot::Sender<StoreResult<<T as GroupWrite>::Output>>);

/// Writes of type `T` waiting for a commit.
pub(crate) struct Group<T: GroupWrite> {
    queue: Mutex<Vec<Waiting<T>>>,
}

impl<T: GroupWrite> Default for Group<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
        }
    }
}

impl<T: GroupWrite> std::fmt::Debug for Group<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl<T: GroupWrite> Group<T> {
    /// Commit `write`, with whatever other writes of this group are waiting. `writer` is the
    /// store's writer lock, `pool` its one-connection write pool.
    pub(crate) async fn commit(
        self: &Arc<Self>,
        writer: &Arc<tokio::sync::Mutex<()>>,
        pool: &SqlitePool,
        write: T,
    ) -> StoreResult<T::Output> {
        let (tx, mut rx) = oneshot::channel();
        self.lock().push((write, tx));
        let guard = tokio::select! {
            biased;
            done = &mut rx => return done.unwrap_or_else(|_| Err(interrupted())),
            guard = writer.clone().lock_owned() => guard,
        };
        // A batch that took this write may have committed while the lock was granted.
        match rx.try_recv() {
            Ok(done) => return done,
            Err(oneshot::error::TryRecvError::Closed) => return Err(interrupted()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // Every write waiting, this caller's among them: a batch answers its callers before
        // it lets go of the lock, so none took it. (No cap: each write has a caller waiting,
        // so the batch is as large as the concurrency, not larger.)
        let batch = std::mem::take(&mut *self.lock());
        let pool = pool.clone();
        tokio::spawn(async move {
            write_batch(&pool, batch).await;
            drop(guard);
        });
        rx.await.unwrap_or_else(|_| Err(interrupted()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting<T>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn interrupted() -> StoreError {
    StoreError::Backend("the write was interrupted: the writer stopped".into())
}

/// Write `batch` in one transaction; if that fails, one transaction per write, so that each
/// caller gets its own result.
async fn write_batch<T: GroupWrite>(pool: &SqlitePool, batch: Vec<Waiting<T>>) {
    if batch.len() > 1 {
        match together(pool, &batch).await {
            Ok(outputs) => {
                for ((_, done), output) in batch.into_iter().zip(outputs) {
                    let _ = done.send(Ok(output));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, n = batch.len(), "group commit failed, writing one by one")
            }
        }
    }
    for (write, done) in batch {
        let result = alone(pool, &write).await;
        let _ = done.send(result);
    }
}

/// The outputs are only handed out once the transaction is committed.
async fn together<T: GroupWrite>(
    pool: &SqlitePool,
    batch: &[Waiting<T>],
) -> StoreResult<Vec<T::Output>> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    let mut tx = conn.begin().await.map_err(db_err)?;
    let writes: Vec<&T> = batch.iter().map(|(write, _)| write).collect();
    let outputs = T::write_all(&writes, &mut tx).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(outputs)
}

async fn alone<T: GroupWrite>(pool: &SqlitePool, write: &T) -> StoreResult<T::Output> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    let mut tx = conn.begin().await.map_err(db_err)?;
    let output = write.write(&mut tx).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(output)
}
