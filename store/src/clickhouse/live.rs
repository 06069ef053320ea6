//! The live feed of the fleet store: what the processors insert, followed
//! by the time the server stored it.
//!
//! Two materialized views note every row inserted into `events` and
//! `lifecycles`, as it is inserted: its identity (the record's origin;
//! the lifecycle's host, id and version) and the server's clock at the
//! insert (`stored_at`, in seconds), in `live_events` and
//! `live_lifecycles`, sorted by that time. The write path is unchanged,
//! and a poll reads a few seconds of these small tables by their sort key,
//! then the rows it has not seen from `events` and `lifecycles` by theirs:
//! it costs what it returns, whatever the size of the store.
//!
//! # Why a window, and why counts
//!
//! ClickHouse has no sequence a reader could follow: inserts of several
//! processors run at once, and one that the server began (and stamped)
//! first may become visible after one stamped later. A feed that only
//! moved past the latest time it saw would skip the slower insert. So the
//! feed keeps looking at the last [`LOOKBACK_SECONDS`] before the latest
//! stamp it saw, and remembers how many rows it read of each second of
//! that window and every identity it read there: each poll first counts
//! the rows of every second of the window (one small grouped query),
//! reads again only the seconds whose count changed, and returns only the
//! identities it had not seen in the window. Nothing is returned twice,
//! and nothing is skipped unless an insert became visible more than
//! [`LOOKBACK_SECONDS`] after the server stamped it (an insert of a
//! processor's batch takes well under a second) or the server's clock
//! went back by more than that.
//!
//! # Known limits
//!
//! A row written again by a retried batch (a processor that failed after
//! some of its inserts) is noted again, and returned again if the first
//! copy has left the window. The view notes what reached `events`: an
//! insert that failed after its rows were in (the view's own insert
//! failing) leaves them unnoted, and the retry finds them stored and does
//! not write them again, so the feed never returns them. `live_events`
//! and `live_lifecycles` are dropped by retention after a day.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;

use async_trait::async_trait;
use clickhouse::query::Query;
use serde::Deserialize;

use exim_pilot_schema::Lifecycle;

use super::rows::{decode_lifecycle, EventRow, StoredLifecycle};
use super::{rows, Db};
use crate::error::Result;
use crate::live::{page_size, LiveFeed, LivePage};
use crate::types::StoredRecord;

/// How far back, before the latest stamp seen, a feed looks for rows that
/// became visible late.
pub const LOOKBACK_SECONDS: i64 = 10;

/// Groups asked for in one query of `events`.
const GROUPS_PER_QUERY: usize = 100;

/// Lifecycle ids asked for in one `IN (...)` list.
const IDS_PER_QUERY: usize = 500;

/// The identity of a row noted by a view, as it is sorted there.
trait LiveKey: Clone + Eq + Hash + Send + Sync + clickhouse::RowOwned + clickhouse::RowRead {
    /// The table of the view.
    const TABLE: &'static str;
    /// The identity's columns, in sort order.
    const COLUMNS: &'static str;
    /// A condition true for identities sorted after `self` (its `?` marks
    /// bound by [`LiveKey::bind_after`]).
    const AFTER: &'static str;
    /// Binds the values of [`LiveKey::AFTER`].
    fn bind_after(&self, q: Query) -> Query;
}

/// A raw record's origin.
#[derive(clickhouse::Row, Deserialize, Clone, PartialEq, Eq, Hash, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct RecordKey {
    host: String,
    file_id: u64,
    offset: u64,
}

impl LiveKey for RecordKey {
    const TABLE: &'static str = "live_events";
    const COLUMNS: &'static str = "host, file_id, offset";
    const AFTER: &'static str =
        "(host > ? OR (host = ? AND (file_id > ? OR (file_id = ? AND offset > ?))))";
    fn bind_after(&self, q: Query) -> Query {
        let h = self.host.as_str();
        q.bind(h)
            .bind(h)
            .bind(self.file_id)
            .bind(self.file_id)
            .bind(self.offset)
    }
}

/// One version of a lifecycle.
#[derive(clickhouse::Row, Deserialize, Clone, PartialEq, Eq, Hash, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct ChangeKey {
    host: String,
    id: String,
    version: u64,
}

impl LiveKey for ChangeKey {
    const TABLE: &'static str = "live_lifecycles";
    const COLUMNS: &'static str = "host, id, version";
    const AFTER: &'static str = "(host > ? OR (host = ? AND (id > ? OR (id = ? AND version > ?))))";
    fn bind_after(&self, q: Query) -> Query {
        let (h, id) = (self.host.as_str(), self.id.as_str());
        q.bind(h).bind(h).bind(id).bind(id).bind(self.version)
    }
}

/// The window over one view, and the identities found but not returned
/// yet.
struct Window<K> {
    /// Rows stamped before this second are passed.
    floor: i64,
    /// The rows read of each second from `floor` on, duplicates included.
    seconds: BTreeMap<i64, u64>,
    /// Every identity read in the window, with the latest second it was
    /// noted in: an identity noted again in another second (a retried
    /// insert) is not new.
    seen: HashMap<K, i64>,
    /// Found, in the order found, not returned yet.
    pending: VecDeque<K>,
}

impl<K: LiveKey> Window<K> {
    fn new(now: i64) -> Window<K> {
        Window {
            floor: now - LOOKBACK_SECONDS,
            seconds: BTreeMap::new(),
            seen: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// Reads the seconds of the window whose count grew and returns the
    /// identities not seen before, in order of time then identity; moves
    /// the window up to the latest stamp seen.
    async fn scan(&mut self, db: &Db, limit: usize) -> Result<Vec<K>> {
        let sql = format!(
            "SELECT toInt64(stored_at) AS s, count() AS n FROM {}
             WHERE stored_at >= toDateTime(?) GROUP BY s ORDER BY s",
            K::TABLE
        );
        let q = db.query(&sql).bind(self.floor.max(0));
        let counts: Vec<(i64, u64)> = db.fetch(q, "count the rows of the live window").await?;

        let mut found = Vec::new();
        for &(second, count) in &counts {
            let known = self.seconds.get(&second).copied().unwrap_or(0);
            if count != known {
                self.read_second(db, second, limit, &mut found).await?;
            }
        }

        if let Some(&(latest, _)) = counts.last() {
            self.floor = self.floor.max(latest - LOOKBACK_SECONDS);
        }
        let floor = self.floor;
        self.seconds.retain(|&s, _| s >= floor);
        self.seen.retain(|_, s| *s >= floor);
        Ok(found)
    }

    /// Reads every identity of one second, a page at a time, adding the
    /// new ones to `found`.
    async fn read_second(
        &mut self,
        db: &Db,
        second: i64,
        limit: usize,
        found: &mut Vec<K>,
    ) -> Result<()> {
        let mut after: Option<K> = None;
        let mut rows = 0;
        loop {
            let condition = if after.is_some() {
                format!(" AND {}", K::AFTER)
            } else {
                String::new()
            };
            let sql = format!(
                "SELECT {cols} FROM {table} WHERE stored_at = toDateTime(?){condition}
                 ORDER BY {cols} LIMIT {limit}",
                cols = K::COLUMNS,
                table = K::TABLE,
            );
            let mut q = db.query(&sql).bind(second);
            if let Some(k) = &after {
                q = k.bind_after(q);
            }
            let page: Vec<K> = db.fetch(q, "read the live window").await?;
            rows += page.len() as u64;
            let full = page.len() == limit;
            after = page.last().cloned();
            for key in page {
                match self.seen.get_mut(&key) {
                    Some(latest) => *latest = (*latest).max(second),
                    None => {
                        self.seen.insert(key.clone(), second);
                        found.push(key);
                    }
                }
            }
            if !full {
                break;
            }
        }
        self.seconds.insert(second, rows);
        Ok(())
    }

    /// Up to `limit` pending identities, after a scan when none are
    /// pending.
    async fn take(&mut self, db: &Db, limit: usize) -> Result<Vec<K>> {
        if self.pending.is_empty() {
            let found = self.scan(db, limit).await?;
            self.pending.extend(found);
        }
        let n = self.pending.len().min(limit);
        Ok(self.pending.drain(..n).collect())
    }

    /// Marks everything in the window as seen without returning it.
    async fn skip(&mut self, db: &Db) -> Result<()> {
        self.scan(db, crate::live::MAX_LIVE_PAGE).await?;
        self.pending.clear();
        Ok(())
    }
}

/// The live feed over a ClickHouse database.
pub(super) struct ClickHouseFeed {
    db: Db,
    records: Window<RecordKey>,
    changes: Window<ChangeKey>,
}

impl ClickHouseFeed {
    /// A feed at the server's current time, past every row visible now.
    pub(super) async fn open(db: Db) -> Result<ClickHouseFeed> {
        let now: Vec<i64> = db
            .fetch(db.query("SELECT toInt64(now())"), "read the server's clock")
            .await?;
        let now = now.first().copied().unwrap_or(0);
        let mut feed = ClickHouseFeed {
            db,
            records: Window::new(now),
            changes: Window::new(now),
        };
        feed.skip().await?;
        Ok(feed)
    }
}

#[async_trait]
impl LiveFeed for ClickHouseFeed {
    async fn next(&mut self, limit: usize) -> Result<LivePage> {
        let limit = page_size(limit);
        let (records, changes) = tokio::try_join!(
            self.records.take(&self.db, limit),
            self.changes.take(&self.db, limit),
        )?;
        let (records, lifecycles) = tokio::try_join!(
            fetch_records(&self.db, &records),
            fetch_changes(&self.db, &changes),
        )?;
        Ok(LivePage {
            records,
            lifecycles,
            more: !self.records.pending.is_empty() || !self.changes.pending.is_empty(),
        })
    }

    async fn skip(&mut self) -> Result<()> {
        tokio::try_join!(self.records.skip(&self.db), self.changes.skip(&self.db))?;
        Ok(())
    }
}

/// The records of `keys` from `events`, in the order of `keys`; those no
/// longer stored (dropped by retention since) are left out. Each (host,
/// file) is one range of the table's sort key.
async fn fetch_records(db: &Db, keys: &[RecordKey]) -> Result<Vec<StoredRecord>> {
    let mut ranges: BTreeMap<(&str, u64), (u64, u64)> = BTreeMap::new();
    for k in keys {
        let r = ranges
            .entry((k.host.as_str(), k.file_id))
            .or_insert((k.offset, k.offset));
        r.0 = r.0.min(k.offset);
        r.1 = r.1.max(k.offset);
    }
    let ranges: Vec<_> = ranges.into_iter().collect();
    let wanted: HashSet<&RecordKey> = keys.iter().collect();
    let mut found: HashMap<RecordKey, StoredRecord> = HashMap::new();
    for chunk in ranges.chunks(GROUPS_PER_QUERY) {
        let conditions =
            vec!["(host = ? AND file_id = ? AND offset >= ? AND offset <= ?)"; chunk.len()];
        let sql = format!(
            "SELECT {} FROM events WHERE {}",
            rows::columns::<EventRow>(),
            conditions.join(" OR ")
        );
        let mut q = db.query(&sql);
        for ((host, file), (lo, hi)) in chunk {
            q = q.bind(*host).bind(*file).bind(*lo).bind(*hi);
        }
        let rows: Vec<EventRow> = db.fetch(q, "read live records").await?;
        for row in rows {
            let key = RecordKey {
                host: row.host.clone(),
                file_id: row.file_id,
                offset: row.offset,
            };
            if wanted.contains(&key) && !found.contains_key(&key) {
                match row.into_record() {
                    Ok(record) => {
                        found.insert(key, record);
                    }
                    Err(e) => tracing::warn!(error = %e, "Live feed passed over a record"),
                }
            }
        }
    }
    Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
}

/// The lifecycle versions of `keys`, in the order of `keys`. A version
/// that merging has replaced by a newer one is left out: the newer one
/// has a key of its own.
async fn fetch_changes(db: &Db, keys: &[ChangeKey]) -> Result<Vec<Lifecycle>> {
    let mut by_host: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in keys {
        by_host
            .entry(k.host.as_str())
            .or_default()
            .push(k.id.as_str());
    }
    let wanted: HashSet<&ChangeKey> = keys.iter().collect();
    let mut found: HashMap<ChangeKey, String> = HashMap::new();
    for (host, mut ids) in by_host {
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT host, id, version, day, body FROM lifecycles
                 WHERE host = ? AND id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = db.query(&sql).bind(host);
            for id in chunk {
                q = q.bind(*id);
            }
            let rows: Vec<StoredLifecycle> = db.fetch(q, "read live lifecycles").await?;
            for row in rows {
                let key = ChangeKey {
                    host: row.host,
                    id: row.id,
                    version: row.version,
                };
                if wanted.contains(&key) {
                    found.insert(key, row.body);
                }
            }
        }
    }
    let mut out = Vec::new();
    for k in keys {
        if let Some(body) = found.remove(k) {
            match decode_lifecycle(&body) {
                Ok(lc) => out.push(lc),
                Err(e) => tracing::warn!(host = %k.host, id = %k.id, error = %e,
                    "Live feed passed over a lifecycle"),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::clickhouse::tests::{fresh_database, url};
    use crate::conformance::fixtures;
    use crate::types::Batch;
    use crate::{ClickHouseStore, Store};

    /// A note written by hand, with the stamp a test chooses.
    #[derive(clickhouse::Row, Serialize)]
    #[clickhouse(crate = "::clickhouse")]
    struct NoteRow {
        stored_at: u32,
        day: u16,
        host: String,
        file_id: u64,
        offset: u64,
    }

    /// Stores records at `offsets` (unnoted: the view is gone) and notes
    /// them as stamped at `second`.
    async fn store_and_note(store: &ClickHouseStore, offsets: &[u64], second: i64) {
        let records: Vec<StoredRecord> = offsets
            .iter()
            .map(|&o| fixtures::record("mx1", o, fixtures::at(0), None, "note"))
            .collect();
        store
            .commit_batch(Batch {
                records,
                ..Batch::default()
            })
            .await
            .expect("commit");
        note(store, offsets, second).await;
    }

    async fn note(store: &ClickHouseStore, offsets: &[u64], second: i64) {
        let notes: Vec<NoteRow> = offsets
            .iter()
            .map(|&offset| NoteRow {
                stored_at: second as u32,
                day: (second / 86_400) as u16,
                host: "mx1".into(),
                file_id: 4242,
                offset,
            })
            .collect();
        store
            .db
            .insert("live_events", &notes, "note by hand")
            .await
            .expect("notes");
    }

    fn offsets(page: &LivePage) -> Vec<u64> {
        page.records.iter().map(|r| r.origin.offset).collect()
    }

    /// Processors' inserts become visible out of order: one stamped
    /// before rows the feed has already returned is still returned, once;
    /// a row noted twice is returned once; a second holding more rows
    /// than a page is read a page at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_visible_late_within_the_window_are_returned_once() {
        let store = ClickHouseStore::connect(url(), &fresh_database())
            .await
            .expect("connect");
        let db = store.db.clone();
        db.execute(db.query("DROP TABLE live_events_mv"), "drop the view")
            .await
            .expect("drop the view");
        let mut feed = ClickHouseFeed::open(db.clone()).await.expect("feed");
        let now = feed.records.floor + LOOKBACK_SECONDS;

        store_and_note(&store, &[1, 2], now + 2).await;
        assert_eq!(offsets(&feed.next(100).await.expect("next")), [1, 2]);

        // Stamped before what was returned, visible after it.
        store_and_note(&store, &[3], now - 3).await;
        let page = feed.next(100).await.expect("next");
        assert_eq!(offsets(&page), [3]);
        assert!(!page.more);

        // Noted again, by a retried insert.
        note(&store, &[1, 3], now + 2).await;
        assert_eq!(
            offsets(&feed.next(100).await.expect("next")),
            [] as [u64; 0]
        );

        // Many rows in one second, read ten at a time.
        let many: Vec<u64> = (100..125).collect();
        store_and_note(&store, &many, now + 4).await;
        let mut got = Vec::new();
        loop {
            let page = feed.next(10).await.expect("next");
            assert!(page.records.len() <= 10);
            got.extend(offsets(&page));
            if !page.more {
                break;
            }
        }
        assert_eq!(got, many);

        // Past the window, the feed has moved on: a row stamped that far
        // back is not looked for (the documented limit).
        store_and_note(&store, &[7], now + 4 - LOOKBACK_SECONDS - 5).await;
        assert!(feed.next(100).await.expect("next").records.is_empty());
    }
}
