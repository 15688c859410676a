//! Group commit: writes of one kind (single jobs, workflow starts) made at the same time by
//! several callers share a transaction, so they share its commit (the `fsync` of the log,
//! which costs far more than the rows) and its statements.
//!
//! Each caller puts its write in a [`Group`] and then waits for the group's lock *or* its
//! answer. Whoever gets the lock takes every write queued so far and commits them together,
//! then answers each of their callers; a caller whose write went with someone else's batch
//! returns as soon as that batch commits. While a batch commits, the callers that arrive
//! queue up for the next one. A lone caller makes a transaction of one, so nothing waits for
//! a batch to fill.
//!
//! Each caller still gets its own result: when the shared transaction fails, its writes are
//! made again one transaction each, and the one that fails reports its own error. The batch
//! runs in a task of its own, so a caller that goes away (a closed HTTP request) cannot
//! interrupt the others' writes halfway. A caller that goes away while it waits for the lock
//! leaves its write queued: the next batch writes it (as a request whose client hung up after
//! sending it is still carried out).
//!
//! On SQLite the lock is the store's writer lock (SQLite has one writer anyway). On
//! PostgreSQL, which flushes concurrent commits together by itself, a kind opts in
//! ([`GroupWrite::ON_POSTGRES`]) when one statement can write a whole batch: the lock is then
//! the group's own, and the batch saves the server a statement and a commit per write.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use coachlibre_core::store::{StoreError, StoreResult};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::sync::oneshot;

use crate::{Pool, db_err};

/// A write that can share a transaction with others.
#[async_trait]
pub(crate) trait GroupWrite: Send + Sync + 'static {
    /// What the caller learns once the write is committed.
    type Output: Send + 'static;
    /// Whether PostgreSQL batches these writes too (see the module's docs). Only for a kind
    /// whose [`postgres`](Self::postgres) writes the whole batch in one statement: it runs
    /// outside a transaction, the statement being one.
    const ON_POSTGRES: bool;

    /// Make every write of `batch` on `conn`, inside a transaction the group opened; outputs
    /// in order.
    async fn sqlite(batch: &[&Self], conn: &mut SqliteConnection)
    -> StoreResult<Vec<Self::Output>>;

    /// The same on PostgreSQL.
    async fn postgres(batch: &[&Self], conn: &mut PgConnection) -> StoreResult<Vec<Self::Output>>;
}

type Waiting<T> = (T, oneshot::Sender<StoreResult<<T as GroupWrite>::Output>>);

/// Writes of type `T` waiting for a commit.
pub(crate) struct Group<T: GroupWrite> {
    queue: Mutex<Vec<Waiting<T>>>,
    /// The lock on PostgreSQL.
    own: Arc<tokio::sync::Mutex<()>>,
}

impl<T: GroupWrite> Default for Group<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            own: Arc::default(),
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
    /// store's writer lock (SQLite's).
    pub(crate) async fn commit(
        self: &Arc<Self>,
        pool: &Pool,
        writer: &Arc<tokio::sync::Mutex<()>>,
        write: T,
    ) -> StoreResult<T::Output> {
        let lock = match pool {
            Pool::Sqlite { .. } => writer,
            Pool::Postgres(_) if T::ON_POSTGRES => &self.own,
            Pool::Postgres(_) => return alone(pool, &write).await,
        };
        let (tx, mut rx) = oneshot::channel();
        self.lock().push((write, tx));
        let guard = tokio::select! {
            biased;
            done = &mut rx => return done.unwrap_or_else(|_| Err(interrupted())),
            guard = lock.clone().lock_owned() => guard,
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
async fn write_batch<T: GroupWrite>(pool: &Pool, batch: Vec<Waiting<T>>) {
    if batch.len() > 1 {
        let writes: Vec<&T> = batch.iter().map(|(write, _)| write).collect();
        match together(pool, &writes).await {
            Ok(outputs) => {
                for ((_, done), output) in batch.into_iter().zip(outputs) {
                    let _ = done.send(Ok(output));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, n = batch.len(), "group commit failed, writing one by one");
            }
        }
    }
    for (write, done) in batch {
        let result = alone(pool, &write).await;
        let _ = done.send(result);
    }
}

/// The outputs are only handed out once the transaction is committed.
async fn together<T: GroupWrite>(pool: &Pool, writes: &[&T]) -> StoreResult<Vec<T::Output>> {
    let outputs = match pool {
        Pool::Sqlite { write, .. } => {
            let mut conn = write.acquire().await.map_err(db_err)?;
            let mut tx = conn.begin().await.map_err(db_err)?;
            let outputs = T::sqlite(writes, &mut tx).await?;
            tx.commit().await.map_err(db_err)?;
            outputs
        }
        // One statement is its own transaction: no BEGIN and COMMIT round trips.
        Pool::Postgres(p) if T::ON_POSTGRES => {
            let mut conn = p.acquire().await.map_err(db_err)?;
            T::postgres(writes, &mut conn).await?
        }
        Pool::Postgres(p) => {
            let mut tx = p.begin().await.map_err(db_err)?;
            let outputs = T::postgres(writes, &mut tx).await?;
            tx.commit().await.map_err(db_err)?;
            outputs
        }
    };
    if outputs.len() == writes.len() {
        Ok(outputs)
    } else {
        Err(StoreError::Backend(format!(
            "a batch of {} writes gave {} answers",
            writes.len(),
            outputs.len()
        )))
    }
}

async fn alone<T: GroupWrite>(pool: &Pool, write: &T) -> StoreResult<T::Output> {
    together(pool, &[write])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Backend("a write gave no answer".into()))
}
