//! The ClickHouse store against a real ClickHouse server: the
//! conformance suite every store passes, and what is particular to this
//! one (migrations, the late-fragment guard, reading without migrating).
//!
//! One server serves every test of this file; each test gets a database of
//! its own, so they run in parallel without seeing each other's data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use exim_pilot_store::conformance::{fixtures, Backend};
use exim_pilot_store::{Batch, ClickHouseStore, Result, Store, StoreError};
use exim_pilot_testkit::Server;

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
fn url() -> &'static str {
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
fn fresh_database() -> String {
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

exim_pilot_store::store_conformance_tests!(FreshDatabases);

#[tokio::test]
async fn migrating_twice_is_harmless_and_readers_need_a_migrated_database() {
    let url = url();
    let database = fresh_database();
    let fresh = ClickHouseStore::open(url, &database).await;
    assert!(
        matches!(fresh, Err(StoreError::NotMigrated { found: 0, .. })),
        "{fresh:?}"
    );
    let version = exim_pilot_store::clickhouse::migrate(url, &database)
        .await
        .expect("migrate");
    assert_eq!(
        exim_pilot_store::clickhouse::migrate(url, &database)
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
