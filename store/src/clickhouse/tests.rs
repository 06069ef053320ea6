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

use exim_pilot_schema::report::{ReportCells, ReportOptions};
use exim_pilot_schema::{Lifecycle, Outcome, ReasonClass};

use super::migrations;
use super::rows::*;
use super::Db;
use crate::conformance::{fixtures, Backend};
use crate::{Batch, Bucket, CellQuery, ClickHouseStore, Result, Store, StoreError};

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

/// The trace indexes, partitioned by month, lose a month with the last
/// day of it that the table they index drops, and keep the rest.
#[tokio::test]
async fn retention_drops_the_old_months_of_the_trace_indexes() {
    let database = fresh_database();
    let store = ClickHouseStore::connect(url(), &database)
        .await
        .expect("connect");
    let now = fixtures::at(0);
    let old = fixtures::delivered("mx1", 1, now - chrono::Duration::days(200), "a@example.net");
    let new = fixtures::delivered("mx1", 2, now - chrono::Duration::days(1), "b@example.net");
    let mut records = fixtures::records_of(&old, 0);
    records.extend(fixtures::records_of(&new, 10_000));
    store
        .commit_batch(Batch {
            records,
            lifecycles: vec![old.clone(), new.clone()],
            ..Batch::default()
        })
        .await
        .expect("commit");
    store
        .apply_retention(&crate::Retention::default(), now)
        .await
        .expect("retention");

    let db = Db::new(url(), Some(&database), None);
    for table in ["events_by_message", "lifecycle_days"] {
        for (lc, expected) in [(&old, false), (&new, true)] {
            let sql = format!("SELECT toUInt64(count()) FROM {table} WHERE id = ?");
            let q = db.query(&sql).bind(lc.id.to_string());
            let rows: Vec<u64> = db.fetch(q, "count index rows").await.expect("count");
            assert_eq!(rows[0] > 0, expected, "{table}, message {}", lc.id);
        }
    }
    let trace = store.message_records("mx1", new.id).await.expect("trace");
    assert_eq!(trace.len(), fixtures::records_of(&new, 0).len());
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

#[tokio::test]
async fn a_read_past_its_limit_is_stopped_by_the_server() {
    // Minutes of work without the limit; the server gives up after a second.
    let db = Db::new(url(), None, None).with_read_limit(std::time::Duration::from_secs(1));
    let q = db.query("SELECT sum(cityHash64(number)) FROM numbers(20000000000)");
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        db.fetch::<u64>(q, "hash many numbers"),
    )
    .await
    .expect("the server stops the query long before a minute");
    let text = read.expect_err("the limit is exceeded").to_string();
    assert!(text.to_lowercase().contains("timeout"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
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

/// What a build of schema version 4 wrote for a batch of lifecycles and
/// rejections (records aside): per-source hour and day cells, versioned
/// lifecycles and attempts, and no trace indexes.
#[derive(Default)]
struct Version4Rows {
    stored: std::collections::HashMap<(String, String), (u64, u16, Lifecycle)>,
}

impl Version4Rows {
    async fn write(&mut self, db: &Db, batch: &Batch) {
        use exim_pilot_schema::report::{cohort_time, contribution, reject_contribution, Cell};

        let mut lifecycles = Vec::new();
        let mut attempts = Vec::new();
        let mut hour = Vec::new();
        let mut day = Vec::new();
        let mut cells = |new: &ReportCells, old: Option<&ReportCells>, source: &str, v: u64| {
            for (out, day_cells) in [(&mut hour, false), (&mut day, true)] {
                let (new, old) = if day_cells {
                    (new.by_day(), old.map(ReportCells::by_day))
                } else {
                    (new.clone(), old.cloned())
                };
                for (key, cell) in &new.cells {
                    out.push(CellRow::new(key, cell, source, v, day_cells));
                }
                for key in old.iter().flat_map(|o| o.cells.keys()) {
                    if !new.cells.contains_key(key) {
                        out.push(CellRow::new(key, &Cell::default(), source, v, day_cells));
                    }
                }
            }
        };
        for lc in &batch.lifecycles {
            let key = (lc.host.clone(), lc.id.to_string());
            let (version, at_day, old) = match self.stored.get(&key) {
                Some((v, d, old)) => (v + 1, *d, Some(contribution(old))),
                None => (1, day_of_ms(cohort_time(lc).map_or(0, ms)), None),
            };
            let source = format!("message {} {}", lc.host, lc.id);
            cells(&contribution(lc), old.as_ref(), &source, version);
            let body = serde_json::to_string(lc).expect("a lifecycle as JSON");
            lifecycles.push(LifecycleRow::new(lc, body, version, at_day));
            attempts.extend(attempt_rows(lc, version));
            self.stored.insert(key, (version, at_day, lc.clone()));
        }
        for r in &batch.rejects {
            let o = &r.origin;
            let source = format!("reject {} {} {}", o.host, o.file_id, o.offset);
            cells(&reject_contribution(r), None, &source, 1);
        }
        let events: Vec<EventRow> = batch.records.iter().map(EventRow::new).collect();
        let rejects: Vec<RejectRow> = batch.rejects.iter().map(RejectRow::new).collect();
        db.insert("cells_hour", &hour, "test")
            .await
            .expect("hour cells");
        db.insert("cells_day", &day, "test")
            .await
            .expect("day cells");
        db.insert("events", &events, "test").await.expect("events");
        db.insert("rejects", &rejects, "test")
            .await
            .expect("rejects");
        db.insert("attempts", &attempts, "test")
            .await
            .expect("attempts");
        db.insert("lifecycles", &lifecycles, "test")
            .await
            .expect("lifecycles");
    }
}

/// Two batches: varied messages with rejections, then some of them
/// changed; one message is seen twice within the first.
fn upgrade_batches() -> Vec<Batch> {
    let lcs = fixtures::varied();
    let mut first = Batch::default();
    for (i, lc) in lcs.iter().enumerate() {
        first
            .records
            .extend(fixtures::records_of(lc, i as u64 * 1000));
    }
    first.lifecycles = lcs.clone();
    let twice = fixtures::deferred("mx2.example.org", 900, fixtures::at(70), "z@example.com");
    first.records.extend(fixtures::records_of(&twice, 900_000));
    first.lifecycles.push(twice.clone());
    first
        .lifecycles
        .push(fixtures::now_delivered(&twice, fixtures::at(95)));
    first.rejects = vec![
        fixtures::reject(
            "mx1.example.org",
            10,
            fixtures::at(5),
            "203.0.113.9",
            ReasonClass::Other,
        ),
        fixtures::reject(
            "mx2.example.org",
            30,
            fixtures::at(24 * 60 + 7),
            "203.0.113.7",
            ReasonClass::Greylisting,
        ),
    ];
    let later = fixtures::at(5 * 24 * 60);
    let second = Batch {
        lifecycles: lcs
            .iter()
            .filter(|lc| lc.recipients.iter().any(|r| r.outcome == Outcome::Deferred))
            .map(|lc| fixtures::now_delivered(lc, later))
            .collect(),
        ..Batch::default()
    };
    vec![first, second]
}

/// Asserts that two stores answer alike: reports (whole and over a range
/// with partial days), hour and day cells, lifecycles and raw records.
async fn assert_same_answers(got: &dyn Store, expected: &dyn Store, batches: &[Batch]) {
    let ranges = [
        ReportOptions::default(),
        ReportOptions {
            since: Some(fixtures::at(-90)),
            until: Some(fixtures::at(3 * 24 * 60 + 30)),
            ..ReportOptions::default()
        },
    ];
    for options in &ranges {
        assert_eq!(
            got.report(options).await.expect("report"),
            expected.report(options).await.expect("report"),
            "{options:?}"
        );
    }
    for bucket in [Bucket::Hour, Bucket::Day] {
        let query = CellQuery {
            bucket,
            ..CellQuery::default()
        };
        assert_eq!(
            got.cells(&query).await.expect("cells"),
            expected.cells(&query).await.expect("cells"),
            "{bucket:?} cells"
        );
    }
    for lc in batches.iter().flat_map(|b| &b.lifecycles) {
        assert_eq!(
            got.lifecycle(&lc.host, lc.id).await.expect("lifecycle"),
            expected
                .lifecycle(&lc.host, lc.id)
                .await
                .expect("lifecycle"),
        );
        assert_eq!(
            got.lifecycles_by_id(lc.id).await.expect("by id"),
            expected.lifecycles_by_id(lc.id).await.expect("by id"),
        );
        let records = got.message_records(&lc.host, lc.id).await.expect("records");
        assert!(!records.is_empty(), "no records for {}", lc.id);
        assert_eq!(
            records,
            expected
                .message_records(&lc.host, lc.id)
                .await
                .expect("records")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_from_version_4_keeps_traces_and_reports() {
    let batches = upgrade_batches();
    let expected = ClickHouseStore::connect(url(), &fresh_database())
        .await
        .expect("connect");

    // A database a build of schema version 4 wrote.
    let database = fresh_database();
    let server = Db::new(url(), None, None);
    let create = format!("CREATE DATABASE {database}");
    server
        .execute(server.query(&create), "create a database")
        .await
        .expect("create");
    let old = Db::new(url(), Some(&database), None);
    migrations::migrate_to(&old, &database, 4)
        .await
        .expect("migrate to version 4");
    let mut version_4 = Version4Rows::default();
    for batch in &batches {
        version_4.write(&old, batch).await;
        expected.commit_batch(batch.clone()).await.expect("commit");
    }

    // Upgraded by two migrations at once (processors starting together),
    // then once more, it answers as a database this build wrote.
    let (a, b) = tokio::join!(
        crate::clickhouse::migrate(url(), &database),
        crate::clickhouse::migrate(url(), &database),
    );
    a.expect("migrate");
    b.expect("migrate at the same time");
    for again in [false, true] {
        if again {
            crate::clickhouse::migrate(url(), &database)
                .await
                .expect("migrate again");
        }
        let store = ClickHouseStore::open(url(), &database).await.expect("open");
        assert_same_answers(&store, &expected, &batches).await;
    }

    // And goes on from there: a change of a lifecycle stored before the
    // upgrade replaces what it counted.
    let store = ClickHouseStore::open(url(), &database).await.expect("open");
    let lc = &batches[0].lifecycles[3];
    let changed = Batch {
        lifecycles: vec![fixtures::deferred(
            &lc.host,
            3,
            fixtures::at(2),
            "new@example.net",
        )],
        ..Batch::default()
    };
    for s in [&store, &expected] {
        s.commit_batch(changed.clone()).await.expect("commit");
    }
    assert_same_answers(&store, &expected, &batches).await;
}

/// A store on a database of its own.
async fn fresh_store() -> ClickHouseStore {
    ClickHouseStore::connect(url(), &fresh_database())
        .await
        .expect("connect")
}

/// Renames a table, or fails the test.
async fn rename(db: &Db, from: &str, to: &str) {
    let sql = format!("RENAME TABLE {from} TO {to}");
    db.execute(db.query(&sql), "rename a table")
        .await
        .expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_after_failing_past_its_cells_counts_once() {
    let batches = upgrade_batches();
    let (store, expected) = (fresh_store().await, fresh_store().await);
    for batch in &batches {
        expected.commit_batch(batch.clone()).await.expect("commit");

        // A first attempt fails on the delivery attempts, which go in
        // with the raw records (whether those are in then is up to the
        // server; the cells and the lifecycles come after them); then the
        // same batch is sent again, as a processor does.
        rename(&store.db, "attempts", "attempts_away").await;
        let failed = store.commit_batch(batch.clone()).await;
        assert!(failed.is_err(), "{failed:?}");
        rename(&store.db, "attempts_away", "attempts").await;
        store
            .commit_batch(batch.clone())
            .await
            .expect("commit again");
    }
    assert_same_answers(&store, &expected, &batches).await;
}

/// [`upgrade_batches`] with each lifecycle counting the records its batch
/// holds for it, as a processor's batches do when a message's records
/// all came in one batch: the store takes such a lifecycle as new
/// without looking it up, unless its records are stored already.
fn batches_of_whole_messages() -> Vec<Batch> {
    let mut batches = upgrade_batches();
    for batch in &mut batches {
        let mut counts = std::collections::HashMap::new();
        for r in &batch.records {
            if let Some(id) = r.message_id {
                *counts.entry((r.origin.host.clone(), id)).or_insert(0) += 1;
            }
        }
        for lc in &mut batch.lifecycles {
            if let Some(n) = counts.get(&(lc.host.clone(), lc.id)) {
                lc.records = *n;
            }
        }
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_messages_sent_again_after_a_failure_count_once() {
    let batches = batches_of_whole_messages();
    let expected = fresh_store().await;
    // One store sees an attempt fail on inserting the raw records, which
    // go in first (when the batch has any: their text column cannot take
    // them for a while, so the records can still be looked up); the other
    // on the lifecycles, which go in after the sums. Each then gets the
    // batch again, and once more, as a processor restarted from an
    // earlier state reads the same records again, and answers as if each
    // batch came once.
    let stores = [
        (fresh_store().await, "events"),
        (fresh_store().await, "lifecycles"),
    ];
    for (i, batch) in batches.iter().enumerate() {
        expected.commit_batch(batch.clone()).await.expect("commit");
        for (store, table) in &stores {
            let failed = match *table {
                "events" if batch.records.is_empty() => None,
                "events" => {
                    let bytes = |to: &str| format!("ALTER TABLE events MODIFY COLUMN bytes {to}");
                    let db = &store.db;
                    db.execute(db.query(&bytes("UInt8")), "test")
                        .await
                        .expect("alter");
                    let failed = store.commit_batch(batch.clone()).await;
                    db.execute(db.query(&bytes("String")), "test")
                        .await
                        .expect("alter");
                    Some(failed)
                }
                _ => {
                    let away = format!("{table}_away");
                    rename(&store.db, table, &away).await;
                    let failed = store.commit_batch(batch.clone()).await;
                    rename(&store.db, &away, table).await;
                    Some(failed)
                }
            };
            if let Some(failed) = failed {
                assert!(failed.is_err(), "{table}: {failed:?}");
            }
            for _ in 0..2 {
                store.commit_batch(batch.clone()).await.expect("commit");
                assert_same_answers(store, &expected, &batches[..=i]).await;
            }
        }
    }
}

/// The deferred lifecycles of `batch` changed by `change`, as a batch of
/// their own.
fn changed(batch: &Batch, change: impl Fn(&Lifecycle) -> Lifecycle) -> Batch {
    Batch {
        lifecycles: batch
            .lifecycles
            .iter()
            .filter(|lc| lc.recipients.iter().any(|r| r.outcome == Outcome::Deferred))
            .map(change)
            .collect(),
        ..Batch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_with_other_content_counts_what_it_sent_last() {
    let batches = upgrade_batches();
    let first = &batches[0];
    let (store, expected) = (fresh_store().await, fresh_store().await);
    for s in [&store, &expected] {
        s.commit_batch(first.clone()).await.expect("commit");
    }

    // A processor restarted from an earlier state cuts its batches
    // otherwise: the same version of a lifecycle comes again with other
    // content. The first two attempts fail on the lifecycles, which go
    // in after the sums, the first with another delay, the second under
    // other cell keys (a domain of its own); the third goes through.
    let later = fixtures::at(5 * 24 * 60);
    let moved = changed(first, |lc| {
        let mut lc = lc.clone();
        for r in &mut lc.recipients {
            r.address = format!("moved{}@elsewhere.example", lc.id);
        }
        lc.last_seen = Some(later);
        lc
    });
    let delayed = changed(first, |lc| {
        fixtures::now_delivered(lc, later + chrono::Duration::hours(7))
    });
    let last = changed(first, |lc| fixtures::now_delivered(lc, later));
    for batch in [&delayed, &moved] {
        rename(&store.db, "lifecycles", "lifecycles_away").await;
        let failed = store.commit_batch(batch.clone()).await;
        assert!(failed.is_err(), "{failed:?}");
        rename(&store.db, "lifecycles_away", "lifecycles").await;
    }
    store.commit_batch(last.clone()).await.expect("commit");
    expected.commit_batch(last.clone()).await.expect("commit");
    assert_same_answers(&store, &expected, &batches).await;
    let whole = CellQuery {
        bucket: Bucket::Range,
        ..CellQuery::default()
    };
    assert_eq!(
        store.cells(&whole).await.expect("cells"),
        expected.cells(&whole).await.expect("cells"),
    );

    // And the next version of those lifecycles replaces what the last
    // one counted, not what the failed ones did.
    let next = changed(first, |lc| {
        let mut lc = fixtures::now_delivered(lc, later);
        lc.recipients[0].address = format!("next{}@example.com", lc.id);
        lc
    });
    for s in [&store, &expected] {
        s.commit_batch(next.clone()).await.expect("commit");
    }
    assert_same_answers(&store, &expected, &batches).await;
}

#[test]
fn a_marks_applied_cells_read_back_as_written() {
    for lc in fixtures::varied() {
        let mut cells = exim_pilot_schema::report::contribution(&lc);
        for cell in cells.cells.values_mut() {
            cell.samples = Default::default();
        }
        let text = encode_applied(&cells);
        assert_eq!(decode_applied(&lc.host, &text), Some(cells), "{text}");
    }
    let mut less = exim_pilot_schema::report::contribution(&fixtures::varied()[3]);
    less.subtract(&exim_pilot_schema::report::contribution(
        &fixtures::varied()[5],
    ));
    less.prune();
    for cell in less.cells.values_mut() {
        cell.samples = Default::default();
    }
    let host = &fixtures::varied()[3].host;
    assert_eq!(decode_applied(host, &encode_applied(&less)), Some(less));
    assert_eq!(decode_applied(host, "not a mark"), None);
}

#[test]
fn marks_of_earlier_builds_read_back_as_they_were_written() {
    // Builds before the grouped form wrote each hour cell on its own, as
    // `serde_json` writes these tuples.
    type Written<'a> = (i64, u8, &'a str, Vec<(u8, i64)>, Vec<(u16, i64)>);
    let mut all = fixtures::varied();
    let mut odd = all[0].clone();
    odd.sender = Some("odd\"quote\\back\u{1}slash@example.com".into());
    all.push(odd);
    for lc in all {
        let mut cells = exim_pilot_schema::report::contribution(&lc);
        for cell in cells.cells.values_mut() {
            cell.samples = Default::default();
        }
        let written: Vec<Written> = cells
            .cells
            .iter()
            .map(|(key, cell)| {
                let counters = cell.counters.to_array();
                let counters = (0..counters.len())
                    .filter(|&i| counters[i] != 0)
                    .map(|i| (i as u8, counters[i]))
                    .collect();
                let delay = cell.delay.buckets.iter().map(|(b, n)| (*b, *n)).collect();
                let dim = key.dim.code() as u8;
                (key.hour, dim, key.key.as_str(), counters, delay)
            })
            .collect();
        let old = serde_json::to_string(&written).expect("json");
        assert_eq!(decode_applied(&lc.host, &old), Some(cells.clone()), "{old}");
        // The grouped form holds the same cells in fewer bytes.
        let new = encode_applied(&cells);
        assert_eq!(decode_applied(&lc.host, &new), Some(cells), "{new}");
        assert!(new.len() * 2 < old.len(), "{new} against {old}");
    }
}

#[test]
fn the_same_change_is_the_same_mark_text() {
    let mut odd = fixtures::varied()[0].clone();
    odd.sender = Some("odd\"quote\\back\u{1}slash@example.com".into());
    for lc in fixtures::varied().into_iter().chain([odd]) {
        let cells = exim_pilot_schema::report::contribution(&lc);
        // The same cells put in in the reverse order.
        let mut entries: Vec<_> = cells.cells.clone().into_iter().collect();
        entries.sort_by(|a, b| (b.0.dim.code(), &b.0.key).cmp(&(a.0.dim.code(), &a.0.key)));
        let mut reversed = ReportCells::new();
        for (key, cell) in entries {
            reversed.add_cell(key, &cell);
        }
        let text = encode_applied(&cells);
        assert_eq!(encode_applied(&reversed), text);
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON");
    }
    assert_eq!(encode_applied(&ReportCells::new()), r#"{"groups":[]}"#);
    assert!(decode_applied("mx1", r#"{"groups":[]}"#).is_some_and(|c| c.is_empty()));
}
