//! The conformance suite and SQLite-specific tests on temporary databases.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tempfile::TempDir;

use super::SqliteStore;
use crate::conformance::Backend;
use crate::{Result, Store};

/// Stores in temporary directories, deleted when the backend is dropped.
#[derive(Default)]
struct TempSqlite {
    dirs: Mutex<Vec<TempDir>>,
}

#[async_trait]
impl Backend for TempSqlite {
    async fn create(&self) -> Result<(Arc<dyn Store>, String)> {
        let dir = TempDir::new().expect("temporary directory");
        let path = dir.path().to_string_lossy().into_owned();
        self.dirs.lock().expect("dirs").push(dir);
        let store = SqliteStore::open_dir(&path)?;
        Ok((Arc::new(store), path))
    }

    async fn reopen(&self, name: &str) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(SqliteStore::open_dir(name)?))
    }
}

crate::store_conformance_tests!(TempSqlite::default());

#[tokio::test]
async fn schema_is_migrated_once_and_reopened_without_change() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    assert_eq!(store.path(), dir.path().join(super::DATABASE_FILE));
    drop(store);
    let again = SqliteStore::open_dir(dir.path()).unwrap();
    let conn = again.readers[0].lock().unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, super::migrations::latest_version());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn rebuilt_rollups_equal_maintained_ones() {
    use crate::conformance::fixtures;
    use crate::types::Batch;
    use exim_pilot_schema::report::ReportOptions;

    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    let lcs = fixtures::varied();
    let updated: Vec<_> = lcs
        .iter()
        .map(|l| fixtures::now_delivered(l, fixtures::at(9000)))
        .collect();
    for batch in [lcs, updated] {
        store
            .commit_batch(Batch {
                lifecycles: batch,
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    let maintained = store.report(&ReportOptions::default()).await.unwrap();
    store.rebuild_rollups().await.unwrap();
    assert_eq!(
        store.report(&ReportOptions::default()).await.unwrap(),
        maintained
    );
}

#[tokio::test]
async fn a_late_fragment_does_not_replace_a_whole_lifecycle() {
    use crate::conformance::fixtures;
    use crate::types::Batch;
    use exim_pilot_schema::report::ReportOptions;

    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
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
            .unwrap();
    }
    let stored = store.lifecycle("mx1", whole.id).await.unwrap().unwrap();
    assert_eq!(stored, whole);
    let report = store.report(&ReportOptions::default()).await.unwrap();
    assert_eq!(report.totals.delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_caller_stops_waiting_is_interrupted() {
    use std::time::{Duration, Instant};

    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let slow = store.read(move |conn| {
        let started = Instant::now();
        let counted = conn.query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000)
             SELECT count(*) FROM c",
            [],
            |r| r.get::<_, i64>(0),
        );
        let _ = tx.send((counted.is_err(), started.elapsed()));
        Ok(())
    });
    assert!(tokio::time::timeout(Duration::from_millis(200), slow)
        .await
        .is_err());

    let (interrupted, took) =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the query ran on after its caller stopped waiting");
    assert!(interrupted);
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Every reader, the interrupted one among them, answers the next reads.
    for _ in 0..super::READERS * 2 {
        store.hosts().await.unwrap();
    }
}
