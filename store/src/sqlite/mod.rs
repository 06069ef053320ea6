//! The embedded store: SQLite in one file, for standalone mode.
//!
//! One writer connection and a few reader connections share the database
//! in WAL mode, so reads never wait for writes and see every committed
//! batch. SQLite calls block, so every operation runs on Tokio's blocking
//! thread pool and async callers are never stalled. `synchronous=NORMAL`
//! in WAL mode keeps every committed transaction across a process crash;
//! only an operating-system crash or power loss can lose the last few,
//! and then the store still holds whole batches with their checkpoints, so
//! reading resumes where the data stops.
//!
//! - [`migrations`]: the schema and its versions.
//! - `write`: batches, lifecycle upserts and rollup maintenance.
//! - `read`: lookups, searches, reports.
//! - `retention`: deleting old data in small chunks.
//! - `users`: the API's users and their sessions.
//! - `queue`: queue snapshots, current queues, queue history and jobs.
//! - `live`: the sequences that number what is written, and the live
//!   feed that follows them; `login`: the login throttle's ledger.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use exim_pilot_schema::queue::{QueueActionResult, QueueJob, QueueSnapshot};
use exim_pilot_schema::report::{ReportCells, ReportOptions};
use exim_pilot_schema::{Lifecycle, MessageId, RejectRecord, Report};

use crate::error::{Result, StoreError};
use crate::live::LiveFeed;
use crate::login::LoginMark;
use crate::queue::*;
use crate::types::*;
use crate::Store;

mod codec;
mod functions;
mod live;
mod login;
pub mod migrations;
mod queue;
mod read;
mod retention;
mod users;
mod write;

/// The database file's name inside a data directory.
pub const DATABASE_FILE: &str = "exim-pilot.sqlite";

/// How many read connections a store keeps.
const READERS: usize = 4;

/// The embedded SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for SqliteStore {
    /// Moves the write-ahead log into the database file, so that a closed
    /// store is one self-contained file (a copy of `exim-pilot.sqlite`
    /// alone is a complete backup). Skipped without waiting when another
    /// process is using the store; it then does this itself.
    fn drop(&mut self) {
        let conn = lock(&self.writer);
        let _ = conn.busy_timeout(std::time::Duration::ZERO);
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!(error = %e, "Write-ahead log left for later");
        }
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection usable: SQLite
    // rolls back the open transaction when its guard is dropped.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The query a read is running, for its caller to interrupt.
#[derive(Default)]
struct Running {
    /// The connection's handle while the read runs.
    handle: Option<rusqlite::InterruptHandle>,
    /// The caller stopped waiting.
    cancelled: bool,
}

impl Running {
    /// Notes that a read starts on `conn`, until the guard returned is
    /// dropped; refused when its caller already stopped waiting.
    fn start<'a>(slot: &'a Mutex<Running>, conn: &Connection) -> Result<RunningGuard<'a>> {
        let mut running = slot.lock().unwrap_or_else(|p| p.into_inner());
        if running.cancelled {
            return Err(StoreError::Task("the read was cancelled".into()));
        }
        running.handle = Some(conn.get_interrupt_handle());
        Ok(RunningGuard(slot))
    }
}

/// Notes, when dropped, that a read is over: from then on an interrupt
/// would hit whatever its connection runs next, so none is sent.
struct RunningGuard<'a>(&'a Mutex<Running>);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).handle = None;
    }
}

/// Interrupts a read's query, if it is still running, when dropped: by
/// the read once it has its answer (nothing is running then) or with the
/// read's future, when its caller stopped waiting.
#[derive(Default)]
struct CancelOnDrop(Arc<Mutex<Running>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let mut running = self.0.lock().unwrap_or_else(|p| p.into_inner());
        running.cancelled = true;
        if let Some(handle) = &running.handle {
            handle.interrupt();
        }
    }
}

fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};
         PRAGMA foreign_keys = OFF;"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in a data directory, in the
    /// file [`DATABASE_FILE`]. Blocks: call it before starting work, or
    /// from a blocking task.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<SqliteStore> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        SqliteStore::open(dir.join(DATABASE_FILE))
    }

    /// Opens (creating if needed) the store in one database file and
    /// brings its schema up to date. Blocks.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };

        let mut writer = Connection::open(&path).map_err(open_err)?;
        writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(open_err)?;
        configure(&writer, 65_536).map_err(open_err)?;
        functions::register(&writer).map_err(open_err)?;
        migrations::migrate(&mut writer)?;

        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
            configure(&conn, 16_384).map_err(open_err)?;
            readers.push(Mutex::new(conn));
        }
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer connection on a blocking thread.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || f(&mut lock(&writer)))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` on a free reader connection on a blocking thread. A caller
    /// that stops waiting (a request that ran out of time drops its
    /// future) interrupts the query, so that it does not keep a reader
    /// and a core busy for nobody.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let cancel = CancelOnDrop::default();
        let running = Arc::clone(&cancel.0);
        let out = tokio::task::spawn_blocking(move || {
            // Take the first idle connection, else wait for the next in turn.
            let n = readers.len();
            let conn = (0..n)
                .find_map(|i| readers[(start + i) % n].try_lock().ok())
                .unwrap_or_else(|| lock(&readers[start % n]));
            let _running = Running::start(&running, &conn)?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        drop(cancel);
        out
    }

    /// Recomputes every rollup cell from the stored lifecycles and
    /// rejections. Needed only when the way lifecycles are counted changes
    /// between versions; cells of lifecycles already dropped by retention
    /// are lost by a rebuild.
    pub async fn rebuild_rollups(&self) -> Result<()> {
        self.write(write::rebuild_rollups).await
    }

    /// Folds the write-ahead log into the database file (done by SQLite on
    /// its own as the log grows; useful before copying the file).
    pub async fn checkpoint(&self) -> Result<()> {
        self.write(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit_batch(&self, batch: Batch) -> Result<BatchSummary> {
        if batch.is_empty() {
            return Ok(BatchSummary::default());
        }
        self.write(move |conn| write::commit_batch(conn, batch))
            .await
    }

    async fn load_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_string();
        self.read(move |conn| read::load_blob(conn, &name)).await
    }

    async fn lifecycle(&self, host: &str, id: MessageId) -> Result<Option<Lifecycle>> {
        let host = host.to_string();
        self.read(move |conn| read::lifecycle(conn, &host, id))
            .await
    }

    async fn lifecycles_by_id(&self, id: MessageId) -> Result<Vec<Lifecycle>> {
        self.read(move |conn| read::lifecycles_by_id(conn, id))
            .await
    }

    async fn message_records(&self, host: &str, id: MessageId) -> Result<Vec<StoredRecord>> {
        let host = host.to_string();
        self.read(move |conn| read::message_records(conn, &host, id))
            .await
    }

    async fn search(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Lifecycle>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| read::search(conn, &filter, &page))
            .await
    }

    async fn rejects(
        &self,
        filter: &RejectFilter,
        page: &PageRequest,
    ) -> Result<Page<RejectRecord>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| read::rejects(conn, &filter, &page))
            .await
    }

    async fn report(&self, options: &ReportOptions) -> Result<Report> {
        let options = options.clone();
        self.read(move |conn| read::report(conn, &options)).await
    }

    async fn cells(&self, query: &CellQuery) -> Result<ReportCells> {
        let query = query.clone();
        self.read(move |conn| read::cells(conn, &query)).await
    }

    async fn top_recipients(&self, query: &RecipientQuery) -> Result<Vec<RecipientCount>> {
        let query = query.clone();
        self.read(move |conn| read::top_recipients(conn, &query))
            .await
    }

    async fn search_lines(&self, query: &LineQuery) -> Result<Vec<StoredRecord>> {
        let query = query.clone();
        self.read(move |conn| read::search_lines(conn, &query))
            .await
    }

    async fn hosts(&self) -> Result<Vec<HostSummary>> {
        self.read(read::hosts).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let entry = entry.clone();
        self.write(move |conn| write::append_audit(conn, &entry))
            .await
    }

    async fn audit_log(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| read::audit_log(conn, &filter, &page))
            .await
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        self.write(move |conn| users::create_user(conn, &user))
            .await
    }

    async fn update_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        self.write(move |conn| users::update_user(conn, &user))
            .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>> {
        let name = name.to_string();
        self.read(move |conn| users::user(conn, &name)).await
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.read(users::users).await
    }

    async fn save_session(&self, session: &Session) -> Result<()> {
        let session = session.clone();
        self.write(move |conn| users::save_session(conn, &session))
            .await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_string();
        self.read(move |conn| users::session(conn, &id)).await
    }

    async fn revoke_sessions(&self, user: &str, at: DateTime<Utc>) -> Result<u64> {
        let user = user.to_string();
        let at_ms = at.timestamp_millis();
        self.write(move |conn| users::revoke_sessions(conn, &user, at_ms))
            .await
    }

    async fn save_queue_snapshot(&self, snapshot: &QueueSnapshot) -> Result<()> {
        let snapshot = snapshot.clone();
        self.write(move |conn| queue::save_snapshot(conn, &snapshot))
            .await
    }

    async fn queue_messages(
        &self,
        filter: &QueueFilter,
        page: &PageRequest,
    ) -> Result<Page<QueueEntry>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| queue::messages(conn, &filter, &page))
            .await
    }

    async fn queue_health(&self, host: Option<&str>) -> Result<Vec<QueueHealth>> {
        let host = host.map(str::to_string);
        self.read(move |conn| queue::health(conn, host.as_deref()))
            .await
    }

    async fn queue_history(&self, query: &QueueHistoryQuery) -> Result<Vec<QueuePoint>> {
        let query = query.clone();
        self.read(move |conn| queue::history(conn, &query)).await
    }

    async fn save_queue_job(&self, job: &QueueJob) -> Result<()> {
        let job = job.clone();
        self.write(move |conn| queue::save_job(conn, &job)).await
    }

    async fn save_queue_results(&self, results: &[QueueActionResult]) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let results = results.to_vec();
        self.write(move |conn| queue::save_results(conn, &results))
            .await
    }

    async fn queue_job(&self, job_id: &str) -> Result<Option<(QueueJob, Vec<QueueActionResult>)>> {
        let job_id = job_id.to_string();
        self.read(move |conn| queue::job(conn, &job_id)).await
    }

    async fn queue_jobs(
        &self,
        filter: &QueueJobFilter,
        page: &PageRequest,
    ) -> Result<Page<QueueJobSummary>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| queue::jobs(conn, &filter, &page))
            .await
    }

    async fn apply_retention(
        &self,
        policy: &Retention,
        now: DateTime<Utc>,
    ) -> Result<RetentionSummary> {
        retention::apply(self, policy, now).await
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        let path = self.path.clone();
        let feed = tokio::task::spawn_blocking(move || live::SqliteFeed::open(&path))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Box::new(feed))
    }

    async fn append_login_marks(&self, marks: &[LoginMark]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let marks = marks.to_vec();
        self.write(move |conn| login::append(conn, &marks)).await
    }

    async fn login_marks(
        &self,
        keys: &[String],
        since: DateTime<Utc>,
        per_key: usize,
    ) -> Result<Vec<LoginMark>> {
        let keys = keys.to_vec();
        let since_ms = since.timestamp_millis();
        let per_key = per_key.min(crate::MAX_MARKS_PER_KEY);
        self.read(move |conn| login::marks(conn, &keys, since_ms, per_key))
            .await
    }
}

#[cfg(test)]
mod tests;
