//! The ClickHouse store against a real ClickHouse server (started by the
//! test kit; the tools must be installed with `scripts/services.sh
//! install`, and these tests fail, never skip, without them): the
//! conformance suite every store passes, and what is particular to this
//! one (migrations, the late-fragment guard, reading without migrating).
//!
//! One server serves every test of this module; each test gets a database of
//! its own, so they run in parallel without seeing each other's data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use exim_pilot_testkit::Server;

use crate::conformance::{fixtures, Backend};
use crate::{Batch, ClickHouseStore, Result, Store, StoreError};

/// The server shared by the tests of this file.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Stops the shared server when the test process exits (statics are
/// never dropped, and the server would outlive the tests).
extern "C" fn stop_server() {
    if let Ok(mut server) = SERVER.lock() {
        server.take();
    }
}

/// The shared server's address, starting it on first use.
pub(super) fn url() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        let server = Server::clickhouse();
        let address = server.address().to_string();
        *SERVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
        // SAFETY: registers a plain function with no arguments, once.
        unsafe { libc::atexit(stop_server) };
        address
    })
}

/// A database name no other test (of this run or an earlier one) uses.
pub(super) fn fresh_database() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "conformance_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stores in fresh databases of the shared server.
struct FreshDatabases;

#[async_trait]
impl Backend for FreshDatabases {
    async fn create(&self) -> Result<(Arc<dyn Store>, String)> {
        let database = fresh_database();
        let store = ClickHouseStore::connect(url(), &database).await?;
        Ok((Arc::new(store), database))
    }

    async fn reopen(&self, name: &str) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(ClickHouseStore::open(url(), name).await?))
    }
}

crate::store_conformance_tests!(FreshDatabases);

#[tokio::test]
async fn migrating_twice_is_harmless_and_readers_need_a_migrated_database() {
    let url = url();
    let database = fresh_database();
    let fresh = ClickHouseStore::open(url, &database).await;
    assert!(
        matches!(fresh, Err(StoreError::NotMigrated { found: 0, .. })),
        "{fresh:?}"
    );
    let version = crate::clickhouse::migrate(url, &database)
        .await
        .expect("migrate");
    assert_eq!(
        crate::clickhouse::migrate(url, &database)
            .await
            .expect("migrate again"),
        version
    );
    ClickHouseStore::open(url, &database)
        .await
        .expect("open after migrating");
    assert!(ClickHouseStore::connect(url, "no-such name").await.is_err());
}

#[tokio::test]
async fn a_late_fragment_does_not_replace_a_whole_lifecycle() {
    use exim_pilot_schema::report::ReportOptions;

    let store = ClickHouseStore::connect(url(), &fresh_database())
        .await
        .expect("connect");
    let whole = fixtures::delivered("mx1", 7, fixtures::at(0), "bob@example.com");
    let mut fragment = whole.clone();
    fragment.incomplete_start = true;
    fragment.sender = None;
    fragment.received_at = None;
    fragment.recipients.clear();

    for lifecycles in [vec![whole.clone()], vec![fragment]] {
        store
            .commit_batch(Batch {
                lifecycles,
                ..Batch::default()
            })
            .await
            .expect("commit");
    }
    let stored = store.lifecycle("mx1", whole.id).await.unwrap().unwrap();
    assert_eq!(stored, whole);
    let report = store.report(&ReportOptions::default()).await.unwrap();
    assert_eq!(report.totals.delivered, 1);
}

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let err = ClickHouseStore::connect(&format!("http://127.0.0.1:{port}"), "x")
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(text.contains("ClickHouse could not"), "{text}");
    assert!(text.contains("running and reachable"), "{text}");
}

/// The Python with PyPI's `chdb` (a current ClickHouse in-process):
/// `$EXIM_PILOT_CHDB_PYTHON`, else the one `scripts/services.sh install`
/// sets up.
fn chdb_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("EXIM_PILOT_CHDB_PYTHON") {
        return p.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    std::path::Path::new(&home).join(".cache/exim-pilot/tools/venv/bin/python3")
}

/// Stores that record every statement they send, in databases whose
/// names are collected so the statements can be replayed elsewhere.
struct Recording {
    journal: crate::clickhouse::Journal,
    databases: Mutex<Vec<String>>,
}

#[async_trait]
impl Backend for Recording {
    async fn create(&self) -> Result<(Arc<dyn Store>, String)> {
        let database = fresh_database();
        self.databases
            .lock()
            .expect("databases")
            .push(database.clone());
        let store =
            ClickHouseStore::connect_recording(url(), &database, Arc::clone(&self.journal)).await?;
        Ok((Arc::new(store), database))
    }

    async fn reopen(&self, name: &str) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(
            ClickHouseStore::connect_recording(url(), name, Arc::clone(&self.journal)).await?,
        ))
    }
}

/// Every statement the store sends while it passes the conformance suite
/// on ClickHouse 18.16 (its schema, and every kind of read, write and
/// retention) must also run on a current ClickHouse: they are replayed,
/// in order and against the same schema, on chdb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_also_runs_on_a_current_clickhouse() {
    let python = chdb_python();
    assert!(
        python.exists(),
        "{} is missing: run `scripts/services.sh install` (or set \
         EXIM_PILOT_CHDB_PYTHON to a Python with chdb)",
        python.display()
    );

    let backend = Recording {
        journal: Arc::default(),
        databases: Mutex::default(),
    };
    crate::conformance::run_all(&backend).await;

    // Every database of the run becomes the session's default one; each
    // distinct statement is replayed once.
    let mut databases = backend.databases.lock().expect("databases").clone();
    // Longest first: `conformance_1_10` before `conformance_1_1`.
    databases.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let mut seen = std::collections::HashSet::new();
    let mut statements = Vec::new();
    for sql in backend.journal.lock().expect("journal").iter() {
        let mut sql = sql.clone();
        for db in &databases {
            sql = sql.replace(&format!("'{db}'"), "'default'");
            sql = sql.replace(db.as_str(), "default");
        }
        if seen.insert(sql.clone()) {
            statements.push(sql);
        }
    }
    assert!(statements.len() > 50, "too few statements recorded");

    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("statements.json");
    std::fs::write(&file, serde_json::to_vec(&statements).expect("json")).expect("write");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/replay_on_chdb.py");
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(&file)
        .arg(dir.path().join("session"))
        .output()
        .expect("running the chdb replay");
    assert!(
        output.status.success(),
        "statements that fail on a current ClickHouse:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
