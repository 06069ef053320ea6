//! The live feed of the embedded store, and the sequences it follows.
//!
//! Every raw record gets the next number of the `records` sequence as its
//! rowid, and every change of a lifecycle the next number of the
//! `lifecycles` sequence as its `change_seq`, in the transaction that
//! writes it. The last numbers handed out are kept in the `sequences`
//! table, so a number is never handed out again, even after retention
//! deleted the rows that carried the highest ones (SQLite alone would
//! reuse the rowids above the highest one left).
//!
//! One writer commits at a time and a reader sees whole transactions, so
//! a reader always sees every number up to some point and none past it:
//! a feed that asks for what lies past the numbers it has seen, through
//! the rowid and the `lifecycles_change` index, misses and repeats
//! nothing, and costs what it returns.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, Transaction};

use super::codec;
use super::read::{record_from_row, RECORD_COLUMNS};
use crate::error::{Result, StoreError};
use crate::live::{page_size, LiveFeed, LivePage};

/// The last numbers handed out, loaded and saved by the writing
/// transaction.
pub(super) struct Sequences {
    /// The last raw record's number (rowid).
    pub(super) records: i64,
    /// The last lifecycle change's number.
    pub(super) lifecycles: i64,
}

impl Sequences {
    /// The numbers as stored.
    pub(super) fn load(conn: &Connection) -> Result<Sequences> {
        let mut stmt = conn.prepare_cached("SELECT name, last FROM sequences")?;
        let mut rows = stmt.query([])?;
        let mut seq = Sequences {
            records: 0,
            lifecycles: 0,
        };
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            match name.as_str() {
                "records" => seq.records = row.get(1)?,
                "lifecycles" => seq.lifecycles = row.get(1)?,
                _ => {}
            }
        }
        Ok(seq)
    }

    /// The number of the next lifecycle change.
    pub(super) fn next_change(&mut self) -> i64 {
        self.lifecycles += 1;
        self.lifecycles
    }

    /// Keeps the numbers handed out.
    pub(super) fn save(&self, tx: &Transaction<'_>) -> Result<()> {
        let mut stmt = tx.prepare_cached("UPDATE sequences SET last = ?2 WHERE name = ?1")?;
        stmt.execute(params!["records", self.records])?;
        stmt.execute(params!["lifecycles", self.lifecycles])?;
        Ok(())
    }
}

/// A live feed over its own read-only connection.
pub(super) struct SqliteFeed {
    conn: Arc<Mutex<Connection>>,
    seen: Arc<Mutex<Sequences>>,
}

impl SqliteFeed {
    /// A feed at the current end of the database at `path`.
    pub(super) fn open(path: &Path) -> Result<SqliteFeed> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        super::configure(&conn, 2_048).map_err(open_err)?;
        let seen = Sequences::load(&conn)?;
        Ok(SqliteFeed {
            conn: Arc::new(Mutex::new(conn)),
            seen: Arc::new(Mutex::new(seen)),
        })
    }

    /// Runs `f` on the connection and the position on a blocking thread.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &mut Sequences) -> Result<T> + Send + 'static,
    {
        let (conn, seen) = (Arc::clone(&self.conn), Arc::clone(&self.seen));
        tokio::task::spawn_blocking(move || {
            let mut conn = super::lock(&conn);
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn, &mut seen)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait]
impl LiveFeed for SqliteFeed {
    async fn next(&mut self, limit: usize) -> Result<LivePage> {
        let limit = page_size(limit);
        self.with(move |conn, seen| read_page(conn, seen, limit))
            .await
    }

    async fn skip(&mut self) -> Result<()> {
        self.with(|conn, seen| {
            *seen = Sequences::load(conn)?;
            Ok(())
        })
        .await
    }
}

/// The records and lifecycle changes past `seen`, read in one snapshot,
/// and `seen` moved past them once all is read. A row that cannot be
/// decoded is logged and passed over, so that it cannot stop the feed.
fn read_page(conn: &mut Connection, seen: &mut Sequences, limit: usize) -> Result<LivePage> {
    let tx = conn.transaction()?;
    let mut page = LivePage::default();
    let (mut records, mut lifecycles) = (seen.records, seen.lifecycles);

    let sql = format!(
        "{RECORD_COLUMNS}, r.rowid FROM raw_records r WHERE r.rowid > ?1 ORDER BY r.rowid LIMIT ?2"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![records, limit as i64])?;
    let mut read = 0;
    while let Some(row) = rows.next()? {
        read += 1;
        records = row.get(9)?;
        match record_from_row(row) {
            Ok(r) => page.records.push(r),
            Err(e) => tracing::warn!(rowid = records, error = %e, "Live feed passed over a record"),
        }
    }
    page.more = read == limit;
    drop(rows);
    drop(stmt);

    let mut stmt = tx.prepare_cached(
        "SELECT change_seq, body FROM lifecycles WHERE change_seq > ?1
         ORDER BY change_seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![lifecycles, limit as i64])?;
    let mut read = 0;
    while let Some(row) = rows.next()? {
        read += 1;
        lifecycles = row.get(0)?;
        let body: Vec<u8> = row.get(1)?;
        match codec::decode_lifecycle(&body) {
            Ok(lc) => page.lifecycles.push(lc),
            Err(e) => {
                tracing::warn!(change = lifecycles, error = %e, "Live feed passed over a lifecycle")
            }
        }
    }
    page.more |= read == limit;
    (seen.records, seen.lifecycles) = (records, lifecycles);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use crate::conformance::fixtures;
    use crate::types::{Batch, Retention};
    use crate::{SqliteStore, Store};

    fn batch(n: u32, received: chrono::DateTime<Utc>) -> Batch {
        let lc = fixtures::delivered("mx1", n, received, "bob@example.com");
        Batch {
            records: fixtures::records_of(&lc, n as u64 * 1000),
            lifecycles: vec![lc],
            ..Batch::default()
        }
    }

    /// Retention deleting the records with the highest rowids must not
    /// let new records take rowids a feed has passed.
    #[tokio::test]
    async fn records_after_retention_emptied_the_table_are_not_missed() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = SqliteStore::open_dir(dir.path()).unwrap();
        let old = Utc::now() - Duration::days(400);
        store.commit_batch(batch(1, old)).await.unwrap();
        let mut feed = store.live_feed().await.unwrap();
        let dropped = store
            .apply_retention(&Retention::default(), Utc::now())
            .await
            .unwrap();
        assert_eq!(dropped.raw_records, 2);

        let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let new = batch(2, now);
        store.commit_batch(new.clone()).await.unwrap();
        let page = feed.next(100).await.unwrap();
        assert_eq!(page.records, new.records);
        assert_eq!(page.lifecycles, new.lifecycles);
    }

    /// A database of the previous version keeps its records and numbers
    /// new ones after them.
    #[tokio::test]
    async fn an_upgraded_database_numbers_after_its_records() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &super::super::migrations::migrations_before(5) {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 4;
                 INSERT INTO raw_records (rowid, host, log, file_id, offset, read_at_ms, day,
                     event_kind, bytes) VALUES (41, 'mx1', 'main', 1, 0, 0, 0, 'note', x'41');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let seq = Sequences::load(&super::super::lock(&store.writer)).unwrap();
        assert_eq!((seq.records, seq.lifecycles), (41, 0));
        store.commit_batch(batch(3, Utc::now())).await.unwrap();
        let rowids: Vec<i64> = {
            let conn = super::super::lock(&store.writer);
            let mut stmt = conn
                .prepare("SELECT rowid FROM raw_records ORDER BY rowid")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<rusqlite::Result<_>>().unwrap()
        };
        assert_eq!(rowids, [41, 42, 43]);
    }
}
