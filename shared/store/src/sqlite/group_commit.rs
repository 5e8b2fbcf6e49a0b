//! Group commit for the SQLite writer.
//!
//! Under `synchronous=FULL` every commit syncs the log to disk, and a process's writes take
//! turns on one connection: at a few hundred concurrent writes per second the queue for that
//! sync, not the work, is the latency. So writers that arrive while others are queued share
//! one transaction and one sync:
//!
//! - A writer takes the group's lock (a fair queue), and runs its statements inside the open
//!   group transaction (the first writer opens it with `BEGIN IMMEDIATE`; later ones work
//!   inside a savepoint of their own, so a writer that fails or is dropped rolls back only its
//!   own changes).
//! - On its commit, a writer that sees nobody queued behind it commits the group at once (at
//!   low load, a group of one: no added latency). Otherwise it releases its savepoint, hands
//!   the lock to the next writer, and waits for the group's outcome; the last writer of the
//!   queue (or, failing one, a sweep queued behind it) commits for all.
//! - A writer answers only after the transaction holding its changes committed, and a failed
//!   group commit fails every member: no write that did not take effect answers success.
//! - The steps that move the group's transaction (settling an abandoned writer, opening a
//!   turn, ending one, committing) run in tasks of their own: a caller that gives up (a client
//!   gone, a timeout) cannot leave the group half-moved, with members told nothing or told the
//!   next group's outcome.
//!
//! Writers are serialised exactly as before (one at a time, in queue order), so what a writer
//! reads is what the writers before it left, committed or about to be in the same transaction.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::StoreError;

/// A group commits once it holds this many writers even if more are queued, so that a steady
/// stream of writers cannot hold a transaction (and its followers' answers) open for long.
const MAX_GROUP: usize = 64;

/// The savepoint a writer that joins an open group works in: opened, kept, undone.
const SAVEPOINT_OPEN: &str = "SAVEPOINT converge_member";
const SAVEPOINT_KEEP: &str = "RELEASE converge_member";
const SAVEPOINT_UNDO: &str = "ROLLBACK TO converge_member; RELEASE converge_member";

/// How a group ended, as its waiting members learn it: `None` while it is open.
type Outcome = Option<Result<(), Arc<str>>>;

/// The writer connection's queue and its open group transaction.
#[derive(Clone)]
pub(super) struct GroupWriter {
    pool: SqlitePool,
    group: Arc<Mutex<Group>>,
    /// Writers waiting for the lock: a writer committing with none behind it commits the group.
    queued: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Group {
    /// The open transaction; `None` between groups (the connection is back in its pool).
    tx: Option<Transaction<'static, Sqlite>>,
    /// Writers whose changes the open transaction holds. While a writer has its turn, none
    /// means it opened the group (the whole transaction is its own), some that it joined it in
    /// a savepoint.
    members: usize,
    /// Where the members waiting for the commit learn its outcome.
    outcome: Option<watch::Sender<Outcome>>,
    /// A writer left without committing; the next holder of the lock undoes its changes
    /// before anything else (a `Drop` cannot run SQL).
    abandoned: bool,
    /// A sweep is queued on the lock to commit the group if no writer does.
    sweep_queued: bool,
}

/// One writer's turn: its statements run on the group's connection (`&mut *tx` is an
/// executor); [`WriteTx::commit`] returns once they are durable. Dropped without a commit, its
/// changes are rolled back.
pub struct WriteTx {
    group: Option<OwnedMutexGuard<Group>>,
    writer: GroupWriter,
}

impl GroupWriter {
    pub(super) fn new(pool: SqlitePool) -> GroupWriter {
        GroupWriter {
            pool,
            group: Arc::new(Mutex::new(Group::default())),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The writer connection's pool (single statements use it directly, between groups).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Waits for this writer's turn and starts its work in the group.
    pub(super) async fn begin(&self) -> Result<WriteTx, StoreError> {
        let group = {
            let _queued = QueuedWriter::new(&self.queued);
            self.group.clone().lock_owned().await
        };
        // In a task of its own, so that a caller giving up cannot interrupt it half-way (with
        // the transaction taken out of the group); a turn opened for a caller that gave up is
        // dropped, and so rolled back, with the task's output.
        run_to_completion(open_turn(group, self.clone())).await?
    }
}

/// Settles what an earlier writer abandoned, then opens this writer's part of the group.
async fn open_turn(
    mut group: OwnedMutexGuard<Group>,
    writer: GroupWriter,
) -> Result<WriteTx, StoreError> {
    settle_abandoned(&mut group).await;
    // An open group has members (one whose opener left was closed just above).
    match group.tx.as_mut() {
        Some(tx) => {
            if let Err(error) = sqlx::raw_sql(SAVEPOINT_OPEN).execute(&mut **tx).await {
                // The transaction is unusable: its members learn that it failed.
                fail_group(&mut group, &error.to_string()).await;
                return Err(error.into());
            }
        }
        None => group.tx = Some(writer.pool.begin_with("BEGIN IMMEDIATE").await?),
    }
    Ok(WriteTx {
        group: Some(group),
        writer,
    })
}

/// Runs a step that moves the group's transaction in a task of its own: the caller may stop
/// waiting, the step still completes (and its output, a lock guard or a turn, is then dropped).
async fn run_to_completion<T: Send + 'static>(
    step: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(step)
        .await
        .map_err(|e| StoreError::Unavailable(format!("a write step did not complete: {e}")))
}

impl WriteTx {
    /// Makes this writer's changes durable: now, or with the group it joined, after the last
    /// writer queued behind it commits for all.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let Some(group) = self.group.take() else {
            return Err(StoreError::Unavailable(
                "the write was already finished".into(),
            ));
        };
        // The turn ends in a task of its own (see `begin`); what is left here is waiting for a
        // group commit, which happens whether or not this caller still waits.
        let wait = run_to_completion(close_turn(group, self.writer.clone())).await??;
        let Some(mut outcome) = wait else {
            return Ok(());
        };
        let ended = outcome.wait_for(Option::is_some).await;
        match ended.as_deref() {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(reason))) => Err(StoreError::Unavailable(format!(
                "the group commit failed: {reason}"
            ))),
            Ok(None) | Err(_) => Err(StoreError::Unavailable(
                "the group commit ended without an outcome".into(),
            )),
        }
    }
}

/// Ends a writer's turn: its changes become part of the group, which it commits at once if
/// nobody is queued behind it (`None`: committed); otherwise it hands the lock on and
/// returns where the group's outcome will be told.
async fn close_turn(
    mut group: OwnedMutexGuard<Group>,
    writer: GroupWriter,
) -> Result<Option<watch::Receiver<Outcome>>, StoreError> {
    if group.members > 0 {
        let released = match group.tx.as_mut() {
            Some(tx) => sqlx::raw_sql(SAVEPOINT_KEEP)
                .execute(&mut **tx)
                .await
                .map(drop),
            None => Ok(()),
        };
        if let Err(error) = released {
            group.abandoned = true;
            settle_abandoned(&mut group).await;
            // Members before this one may be waiting with nobody queued to commit them.
            queue_sweep(&mut group, &writer);
            return Err(error.into());
        }
    }
    group.members += 1;
    if group.members >= MAX_GROUP || writer.queued.load(Ordering::Acquire) == 0 {
        return commit_group(&mut group).await.map(|()| None);
    }
    // Others are queued: one of them (or the sweep) commits for this writer too.
    let outcome = group
        .outcome
        .get_or_insert_with(|| watch::channel(None).0)
        .subscribe();
    queue_sweep(&mut group, &writer);
    Ok(Some(outcome))
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self.group.as_ref().and_then(|g| g.tx.as_ref()) {
            Some(tx) => tx,
            // `begin` opens the transaction before a `WriteTx` exists, and only `commit`
            // (which consumes it) or a failure path that returns it as an error closes it.
            None => unreachable!("a WriteTx always holds an open group transaction"),
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self.group.as_mut().and_then(|g| g.tx.as_mut()) {
            Some(tx) => tx,
            None => unreachable!("a WriteTx always holds an open group transaction"),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut group) = self.group.take() else {
            return; // committed
        };
        group.abandoned = true;
        // The transaction holds the database's write lock, and members may be waiting on it
        // with nobody queued to commit it: a sweep settles it if no writer comes first.
        queue_sweep(&mut group, &self.writer);
    }
}

/// Counts a writer as queued while it waits for the lock, cancellation included.
struct QueuedWriter<'a>(&'a AtomicUsize);

impl<'a> QueuedWriter<'a> {
    fn new(queued: &'a AtomicUsize) -> QueuedWriter<'a> {
        queued.fetch_add(1, Ordering::AcqRel);
        QueuedWriter(queued)
    }
}

impl Drop for QueuedWriter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Queues a sweep behind the writers waiting now, unless one is queued already (or there is no
/// runtime to run it: then the next writer settles the group).
fn queue_sweep(group: &mut Group, writer: &GroupWriter) {
    if group.tx.is_some()
        && !group.sweep_queued
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        group.sweep_queued = true;
        runtime.spawn(sweep(writer.clone()));
    }
}

/// Commits the open group, if any, once the writers queued before it had their turn.
async fn sweep(writer: GroupWriter) {
    let mut group = writer.group.lock_owned().await;
    group.sweep_queued = false;
    settle_abandoned(&mut group).await;
    if group.tx.is_some() {
        // Members' errors reach them through the outcome; the sweep has nobody to tell.
        let _ = commit_group(&mut group).await;
    }
}

/// Undoes what a writer that left without committing had done.
async fn settle_abandoned(group: &mut Group) {
    if !std::mem::take(&mut group.abandoned) {
        return;
    }
    let Some(mut tx) = group.tx.take() else {
        return;
    };
    if group.members == 0 {
        // It opened the group: nobody else's changes are in it. A failed rollback leaves the
        // connection inside the transaction; the pool closes it instead of reusing it.
        if let Err(error) = tx.rollback().await {
            tracing::warn!(%error, "rolling back an abandoned write failed");
        }
        finish(group, Ok(()));
        return;
    }
    let undone = sqlx::raw_sql(SAVEPOINT_UNDO).execute(&mut *tx).await;
    group.tx = Some(tx);
    if let Err(error) = undone {
        // SQLite rolled the whole transaction back (a full disk, an I/O error): the members
        // before lost their changes too, and must not answer success.
        fail_group(group, &error.to_string()).await;
    }
}

/// Commits the open transaction and tells its waiting members the outcome.
async fn commit_group(group: &mut Group) -> Result<(), StoreError> {
    let Some(tx) = group.tx.take() else {
        return Ok(());
    };
    match tx.commit().await {
        Ok(()) => {
            finish(group, Ok(()));
            Ok(())
        }
        Err(error) => {
            finish(group, Err(error.to_string().into()));
            Err(error.into())
        }
    }
}

/// Rolls back the open transaction after a failure that lost its members' changes.
async fn fail_group(group: &mut Group, reason: &str) {
    if let Some(tx) = group.tx.take()
        && let Err(error) = tx.rollback().await
    {
        tracing::warn!(%error, "rolling back a failed group commit failed");
    }
    finish(group, Err(reason.into()));
}

/// Closes the group: its waiting members learn the outcome, and the next writer opens a new one.
fn finish(group: &mut Group, outcome: Result<(), Arc<str>>) {
    if let Some(sender) = group.outcome.take() {
        sender.send_replace(Some(outcome));
    }
    group.members = 0;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use std::time::Duration;

    async fn writer_on_a_fresh_file(dir: &tempfile::TempDir) -> (GroupWriter, SqlitePool) {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("group.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        (GroupWriter::new(pool.clone()), pool)
    }

    async fn insert(tx: &mut WriteTx, x: i64) {
        sqlx::query("INSERT INTO t (x) VALUES ($1)")
            .bind(x)
            .execute(&mut **tx)
            .await
            .unwrap();
    }

    /// A waits on a group commit; B, after it, abandons its turn; C takes the lock to undo B
    /// and gives up at that very moment. A's change must still commit, and be answered, and
    /// B's must not (a caller giving up mid-step once rolled the whole group back, and left A
    /// waiting for whichever group committed next). Repeated: whether C's step is still under
    /// way when its caller gives up depends on the SQLite thread's speed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_giving_up_while_an_abandoned_turn_is_undone_loses_no_other_change() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer_on_a_fresh_file(&dir).await;
        let pause = Duration::from_millis(10);
        let mut given_up_mid_step = 0;
        for round in 0..30 {
            let (kept, undone) = (round * 2, round * 2 + 1);
            let mut a = writer.begin().await.unwrap();
            insert(&mut a, kept).await;
            // B, then C, queue for the lock while A holds it.
            let b_turn = tokio::spawn({
                let writer = writer.clone();
                async move { writer.begin().await }
            });
            tokio::time::sleep(pause).await;
            let mut c = Box::pin(writer.begin());
            assert!(tokio::time::timeout(Duration::ZERO, &mut c).await.is_err());
            // A sees writers queued behind it: it hands the commit on (a sweep queues after C).
            let a_commit = tokio::spawn(a.commit());
            tokio::time::sleep(pause).await;
            let mut b = b_turn.await.unwrap().unwrap();
            insert(&mut b, undone).await;
            drop(b);
            // C now holds the lock and starts undoing B's turn; its caller stops waiting.
            if tokio::time::timeout(Duration::ZERO, &mut c).await.is_err() {
                given_up_mid_step += 1;
            }
            drop(c);

            let answered = tokio::time::timeout(Duration::from_secs(10), a_commit).await;
            assert!(
                matches!(answered, Ok(Ok(Ok(())))),
                "round {round}: A's commit: {answered:?}"
            );
        }
        assert!(
            given_up_mid_step > 0,
            "C's caller never gave up while its step was under way: the case was not tested"
        );
        let rows: Vec<i64> = sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(&pool)
            .await
            .unwrap();
        let kept: Vec<i64> = (0..30).map(|round| round * 2).collect();
        assert_eq!(rows, kept, "every A's row, and no B's");
    }
}
