//! Writing: batches compared with what is stored, then written table by
//! table in an order that makes a retry safe (see the module above). Day
//! cells change by the difference each new version of a source makes,
//! summed per batch and marked (see `day_change_rows`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::future::Future;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use exim_pilot_schema::report::{
    cohort_hour, contribution, hour_of, reject_contribution, CellKey, ReportCells,
};
use exim_pilot_schema::{Lifecycle, LogFile, MessageId, RecordOrigin, RejectRecord};

use super::migrations::MARK_DIM;
use super::rows::*;
use super::{ClickHouseStore, Db, UnparsedRecord};
use crate::error::{Result, StoreError};
use crate::types::{AuditEntry, Batch, BatchSummary, StoredRecord};

/// Keys asked for in one `IN (...)` list.
const LOOKUP_CHUNK: usize = 500;

/// Lookups of one kind in flight at once. Each is a round trip that
/// mostly waits for the server, which reads the chunks of a batch on
/// its own threads; one after another they took close to half of a
/// commit.
const LOOKUPS_AT_ONCE: usize = 4;

/// Runs `asks`, [`LOOKUPS_AT_ONCE`] at a time, and gathers their answers
/// in any order; the first error stops it.
async fn lookups<T, Fut>(asks: Vec<Fut>) -> Result<Vec<T>>
where
    Fut: Future<Output = Result<Vec<T>>>,
{
    let answers: Vec<Vec<T>> = stream::iter(asks)
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(answers.into_iter().flatten().collect())
}

/// What a batch adds to one server's summary.
#[derive(Default)]
struct HostDelta {
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    last_read_ms: Option<i64>,
    records: i64,
    messages: i64,
    rejects: i64,
}

impl HostDelta {
    fn saw(&mut self, at_ms: Option<i64>) {
        if let Some(t) = at_ms {
            self.first_ms = Some(self.first_ms.map_or(t, |f| f.min(t)));
            self.last_ms = Some(self.last_ms.map_or(t, |l| l.max(t)));
        }
    }
}

/// The rows a batch writes, gathered before any is sent, and what it
/// adds to the counts.
#[derive(Default)]
struct Rows {
    summary: BatchSummary,
    hosts: HashMap<String, HostDelta>,
    rejects: Vec<RejectRow>,
    lifecycles: Vec<LifecycleRow>,
    attempts: Vec<AttemptRow>,
    day_changes: Vec<DayChange>,
    /// The sample texts of the batch's hour cells, which their day cells
    /// get too.
    samples: ReportCells,
}

/// Writes a batch; see the module documentation for the order.
pub async fn commit_batch(store: &ClickHouseStore, batch: Batch) -> Result<BatchSummary> {
    let db = &store.db;
    let mut rows = Rows::default();
    let mut timer = StepTimer::new();

    // What is stored already: records and rejections first.
    let (unseen, unseen_rej) = tokio::try_join!(
        unseen(db, "events", &batch.records, |r| &r.origin),
        unseen(db, "rejects", &batch.rejects, |r| &r.origin),
    )?;
    timer.lap("read_records");

    // Raw records go in first: a source whose records are not stored has
    // nothing stored (see `Fresh`). They are sent by a task of their own
    // while the rest is looked up and built, and waited for before
    // anything else is sent, or returned: an insert of a failed attempt
    // must not land after the next attempt has looked at what is stored.
    let fresh = Fresh::of(&batch, &unseen);
    let mut events = Vec::with_capacity(unseen.len());
    for record in unseen {
        rows.summary.records_added += 1;
        let h = rows.hosts.entry(record.origin.host.clone()).or_default();
        h.records += 1;
        h.saw(record.at.map(ms));
        h.last_read_ms = Some(h.last_read_ms.unwrap_or(i64::MIN).max(record.read_at_ms));
        events.push(EventRow::new(record));
    }
    let writer = db.clone();
    let records =
        tokio::spawn(async move { writer.insert("events", &events, "store raw records").await });
    let built = build_rows(db, &batch, &fresh, unseen_rej, &mut rows, &mut timer).await;
    let stored = records
        .await
        .map_err(|e| StoreError::Task(format!("storing raw records: {e}")));
    let (sums, samples) = built?;
    stored??;
    timer.lap("insert_records");

    // Then summed cells with their marks and samples, and attempts; then
    // rejections and lifecycles. An attempt row is named by its source
    // and version, so writing it again on a retry replaces it, and a
    // change to the sums is marked with what it applied; while
    // rejections and lifecycles, once stored, are taken as done by the
    // next attempt (`unseen`, an unchanged lifecycle): written
    // before their cells and attempts, those of a batch that failed in
    // between would never be written. Inserts of one step do not depend
    // on each other and go together.
    let (a, b, c) = tokio::join!(
        db.insert("cells_day_sums", &sums, "store report cells"),
        db.insert("cells_day_samples", &samples, "store report samples"),
        db.insert("attempts", &rows.attempts, "store delivery attempts"),
    );
    all_done([a, b, c])?;
    timer.lap("insert_cells_attempts");
    let (a, b) = tokio::join!(
        db.insert("rejects", &rows.rejects, "store rejections"),
        db.insert("lifecycles", &rows.lifecycles, "store lifecycles"),
    );
    all_done([a, b])?;
    timer.lap("insert_rejects_lifecycles");

    // A retry after a failure past the first step finds every record
    // stored, so its counts are zero: counts may be lost on such a
    // failure, never doubled. Blobs (the processors' state) come with
    // them: state saved before the rows it describes would skip those
    // rows after a restart.
    let mut summary = rows.summary;
    let deltas: Vec<HostDeltaRow> = rows
        .hosts
        .into_iter()
        .map(|(host, d)| HostDeltaRow {
            host,
            first_ms: d.first_ms.unwrap_or(i64::MAX),
            last_ms: d.last_ms.unwrap_or(i64::MIN),
            last_read_ms: d.last_read_ms.unwrap_or(i64::MIN),
            records: d.records,
            messages: d.messages,
            rejects: d.rejects,
        })
        .collect();
    let blobs: Vec<BlobRow> = batch
        .blobs
        .iter()
        .map(|b| BlobRow {
            name: b.name.clone(),
            data: b.data.clone(),
            updated_ns: store.next_version(),
        })
        .collect();
    let (a, b) = tokio::join!(
        db.insert("host_deltas", &deltas, "count per server"),
        db.insert("blobs", &blobs, "save state blobs"),
    );
    all_done([a, b])?;
    timer.lap("insert_counts_blobs");
    timer.report(batch.records.len());
    summary.blobs_saved = blobs.len() as u64;
    Ok(summary)
}

/// The rows of a batch but its raw records: looks up the stored versions
/// of its lifecycles and the marks of the changes it may make, of the
/// sources that may have any (see [`Fresh`]), and builds the rows of the
/// rejections not stored yet (`unseen_rej`) and of the lifecycles that
/// changed, each with the next version, into `rows`, with what they add
/// to the counts; returns the rows of the summed cells and of their
/// samples.
async fn build_rows(
    db: &Db,
    batch: &Batch,
    fresh: &Fresh<'_>,
    unseen_rej: Vec<&RejectRecord>,
    rows: &mut Rows,
    timer: &mut StepTimer,
) -> Result<(Vec<DaySumRow>, Vec<DaySampleRow>)> {
    let expected = expected_changes(batch, fresh);
    let asked: Vec<ChangeKey> = expected
        .iter()
        .filter(|(.., marked)| *marked)
        .map(|(h, d, s, _)| (*h, *d, s.as_str()))
        .collect();
    let lookup: Vec<&Lifecycle> = batch
        .lifecycles
        .iter()
        .filter(|lc| !fresh.lifecycle(lc))
        .collect();
    let (current, mut applied) =
        tokio::try_join!(stored_lifecycles(db, &lookup), applied_changes(db, &asked),)?;
    timer.lap("read");

    // Rejections not stored yet.
    for reject in unseen_rej {
        rows.summary.rejects_added += 1;
        let h = rows.hosts.entry(reject.origin.host.clone()).or_default();
        h.rejects += 1;
        h.saw(Some(ms(reject.at)));
        let source = reject_source(reject);
        push_cells(rows, reject_contribution(reject), None, &source, 1);
        rows.rejects.push(RejectRow::new(reject));
    }

    // Lifecycles that changed, each with the next version. A lifecycle
    // the batch holds twice compares with the row built for the first.
    let mut built: HashMap<(String, String), usize> = HashMap::new();
    for lc in &batch.lifecycles {
        let body = serde_json::to_string(lc).map_err(|e| StoreError::corrupt("lifecycle", e))?;
        let key = (lc.host.clone(), lc.id.to_string());
        let stored = match built.get(&key) {
            Some(&i) => rows.lifecycles.get(i).map(|r| (r.version, r.day, &r.body)),
            None => current.get(&key).map(|s| (s.version, s.day, &s.body)),
        };
        let (version, day, old) = match stored {
            Some((_, _, stored)) if *stored == body => continue,
            Some((version, day, stored)) => {
                let old = decode_lifecycle(stored)?;
                if lc.incomplete_start && !old.incomplete_start {
                    // A line that came after the processor let the finished
                    // message go starts a fragment without the arrival; the
                    // stored lifecycle is the whole story and stays. The
                    // line itself is kept with the raw records.
                    tracing::debug!(host = %lc.host, id = %lc.id, "Late fragment of a stored message kept out");
                    continue;
                }
                rows.summary.lifecycles_updated += 1;
                (version + 1, day, Some(contribution(&old)))
            }
            None => {
                rows.summary.lifecycles_added += 1;
                let h = rows.hosts.entry(lc.host.clone()).or_default();
                h.messages += 1;
                h.saw(lc.last_seen.map(ms));
                let cohort = exim_pilot_schema::report::cohort_time(lc).map_or(0, ms);
                (1, day_of_ms(cohort), None)
            }
        };
        let source = message_source(lc);
        let new = contribution(lc);
        push_cells(rows, new, old.as_ref(), &source, version);
        rows.attempts.extend(attempt_rows(lc, version));
        built.insert(key, rows.lifecycles.len());
        rows.lifecycles
            .push(LifecycleRow::new(lc, body, version, day));
    }

    // Day cells change by what each change wants less what the marks of
    // a batch sent before, that failed after its day sums, applied.
    // Marks of changes in other days than expected (a stored version
    // whose cells lie in another day) are looked up now.
    timer.lap("build_rows");
    let expected: HashSet<ChangeKey> = expected
        .iter()
        .map(|(h, d, s, _)| (*h, *d, s.as_str()))
        .collect();
    let missed: Vec<ChangeKey> = rows
        .day_changes
        .iter()
        .map(|c| (c.host.as_str(), c.day, c.source.as_str()))
        .filter(|key| !expected.contains(key))
        .collect();
    if !missed.is_empty() {
        applied.extend(applied_changes(db, &missed).await?);
    }
    timer.lap("read_marks");
    let sums = day_change_rows(&rows.day_changes, &applied);
    let samples = sample_rows(&rows.samples);
    timer.lap("day_rows");

    Ok((sums, samples))
}

/// The first error of inserts sent together, taken once every one of
/// them has finished. Giving up on the others at the first error would
/// leave them to land on the server later, after the retry of the batch
/// has looked up what is stored: a day change marked by then would be
/// stored twice.
fn all_done<const N: usize>(results: [Result<()>; N]) -> Result<()> {
    results.into_iter().collect()
}

/// How long each step of a commit took, logged at debug level: where a
/// slow commit spends its time.
struct StepTimer {
    last: std::time::Instant,
    steps: Vec<(&'static str, u128)>,
}

impl StepTimer {
    fn new() -> StepTimer {
        StepTimer {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((step, (now - self.last).as_millis()));
        self.last = now;
    }

    fn report(&self, records: usize) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|(s, ms)| format!("{s}={ms}"))
                .collect();
            tracing::debug!(records, steps = %steps.join(" "), "Batch committed to ClickHouse");
        }
    }
}

/// Adds the samples of a source's new contribution and its changes to
/// the summed cells.
fn push_cells(
    rows: &mut Rows,
    mut new: ReportCells,
    old: Option<&ReportCells>,
    source: &str,
    version: u64,
) {
    for (key, cell) in &mut new.cells {
        if !cell.samples.0.is_empty() {
            let samples = std::mem::take(&mut cell.samples);
            let kept = &mut rows.samples.cells.entry(key.clone()).or_default().samples;
            kept.add(&samples);
        }
    }
    rows.day_changes
        .extend(DayChange::of(new, old, source, version));
}

/// The `cells_day_samples` rows of the batch's hour cell `samples`: one
/// per hour cell and one per day cell. A sample is only ever added, so a
/// row written twice changes nothing.
fn sample_rows(samples: &ReportCells) -> Vec<DaySampleRow> {
    let mut days = ReportCells::new();
    let mut out = Vec::new();
    for (key, cell) in &samples.cells {
        out.extend(DaySampleRow::of(key, cell, Span::Hour));
        let day = CellKey {
            hour: key.hour.div_euclid(24),
            ..key.clone()
        };
        days.cells
            .entry(day)
            .or_default()
            .samples
            .add(&cell.samples);
    }
    for (key, cell) in &days.cells {
        out.extend(DaySampleRow::of(key, cell, Span::Day));
    }
    out
}

/// What one version of a source (a lifecycle or a rejection) changes in
/// the report cells of one day: its new hour cells less its old ones,
/// counters and histograms only (samples are only added, as SQLite's
/// rollups keep them).
struct DayChange {
    source: String,
    host: String,
    day: i64,
    version: u64,
    /// The change, per hour cell; empty when the day's cells stay as they
    /// were (a failed attempt may still have changed them: see
    /// `day_change_rows`).
    cells: ReportCells,
}

impl DayChange {
    /// The changes of a source from `old` to `new` (without samples),
    /// one per day either has cells in (a lifecycle's cells share one
    /// hour, so usually one).
    fn of(new: ReportCells, old: Option<&ReportCells>, source: &str, version: u64) -> Vec<Self> {
        let change = |host: &str, day: i64, mut cells: ReportCells| {
            cells.prune();
            DayChange {
                source: source.to_string(),
                host: host.to_string(),
                day,
                version,
                cells,
            }
        };
        fn day_of(key: &CellKey) -> (&str, i64) {
            (key.host.as_str(), key.hour.div_euclid(24))
        }
        // A first version in one day, the usual case, is its own change.
        let mut days = new.cells.keys().map(day_of);
        let first = days.next();
        if old.is_none() && days.all(|d| Some(d) == first) {
            return match first.map(|(host, day)| (host.to_string(), day)) {
                Some((host, day)) => vec![change(&host, day, new)],
                None => Vec::new(),
            };
        }
        let mut by_day: HashMap<(&str, i64), ReportCells> = HashMap::new();
        for (cells, add) in [(Some(&new), true), (old, false)] {
            for (key, cell) in cells.iter().flat_map(|c| &c.cells) {
                let day = by_day.entry(day_of(key)).or_default();
                let sum = day.cells.entry(key.clone()).or_default();
                if add {
                    sum.counters.add(&cell.counters);
                    sum.delay.add(&cell.delay);
                } else {
                    sum.subtract(cell);
                }
            }
        }
        by_day
            .into_iter()
            .map(|((host, day), cells)| change(host, day, cells))
            .collect()
    }

    /// The change's identity: (host, source, day, version).
    fn mark(&self) -> Mark {
        (
            self.host.clone(),
            self.source.clone(),
            self.day,
            self.version,
        )
    }
}

/// What the marks of one change say was applied to the day sums.
enum Applied {
    /// Hour cells, the sum of what its marks applied, and how many
    /// marks there are.
    Cells { cells: ReportCells, marks: i64 },
    /// A mark written by an older build, which named no content: the
    /// change was applied as it was then wanted.
    Unnamed,
}

/// A change as its marks are looked up: (host, day, source).
type ChangeKey<'a> = (&'a str, i64, &'a str);

/// The changes a batch may make, looked up before it is compared with
/// what is stored: each lifecycle's and rejection's, in the day of its
/// cells (a lifecycle's cells all lie in its cohort hour), and whether
/// it may have marks (its source is not [`Fresh`]).
fn expected_changes<'a>(batch: &'a Batch, fresh: &Fresh) -> Vec<(&'a str, i64, String, bool)> {
    let lifecycles = batch.lifecycles.iter().map(|lc| {
        let day = cohort_hour(lc).div_euclid(24);
        let marked = !fresh.lifecycle(lc);
        (lc.host.as_str(), day, message_source(lc), marked)
    });
    let rejects = batch.rejects.iter().map(|r| {
        let day = hour_of(r.at).div_euclid(24);
        let marked = !fresh.reject(r);
        (r.origin.host.as_str(), day, reject_source(r), marked)
    });
    lifecycles.chain(rejects).collect()
}

/// The sources of a batch of which nothing can be stored yet, so that
/// neither their stored version nor the marks of their changes need to be
/// looked up: a lifecycle whose every record is a main log record of
/// this batch not stored yet (its arrival among them, since it is not
/// missing its start), and a rejection whose record is such a record.
///
/// Raw records are written before anything else of a batch (see
/// `commit_batch`), so anything an earlier attempt wrote about such a
/// source would have had the source's records in first: an attempt that
/// failed, a processor that stopped half-way, or a processor restarted
/// from an earlier state that reads the same records again. A lifecycle
/// with records in an earlier batch counts more records than this batch
/// holds. (A message id that a server gives to a second message while the
/// first is stored, which Exim does not do, would make the second a new
/// lifecycle of version 1 rather than the next version of the first.)
struct Fresh<'a> {
    lifecycles: HashSet<(&'a str, MessageId)>,
    records: HashSet<(&'a str, u64, u64)>,
}

impl<'a> Fresh<'a> {
    fn of(batch: &'a Batch, unseen: &[&'a StoredRecord]) -> Self {
        // Main log records per message: those not stored, and whether
        // any of the batch's is stored already.
        let mut new: HashMap<(&str, MessageId), u32> = HashMap::new();
        let mut records = HashSet::new();
        for r in unseen {
            let o = &r.origin;
            records.insert((o.host.as_str(), o.file_id, o.offset));
            if let (LogFile::Main, Some(id)) = (o.log, r.message_id) {
                *new.entry((o.host.as_str(), id)).or_default() += 1;
            }
        }
        let mut stored: HashSet<(&str, MessageId)> = HashSet::new();
        for r in &batch.records {
            let o = &r.origin;
            if let (LogFile::Main, Some(id)) = (o.log, r.message_id) {
                if !records.contains(&(o.host.as_str(), o.file_id, o.offset)) {
                    stored.insert((o.host.as_str(), id));
                }
            }
        }
        let lifecycles = batch
            .lifecycles
            .iter()
            .filter(|lc| !lc.incomplete_start)
            .map(|lc| ((lc.host.as_str(), lc.id), lc.records))
            .filter(|(key, records)| !stored.contains(key) && new.get(key) == Some(records))
            .map(|(key, _)| key)
            .collect();
        Fresh {
            lifecycles,
            records,
        }
    }

    /// Whether lifecycle `lc` is fresh.
    fn lifecycle(&self, lc: &Lifecycle) -> bool {
        self.lifecycles.contains(&(lc.host.as_str(), lc.id))
    }

    /// Whether rejection `r` is fresh.
    fn reject(&self, r: &RejectRecord) -> bool {
        let o = &r.origin;
        self.records
            .contains(&(o.host.as_str(), o.file_id, o.offset))
    }
}

/// The source of a lifecycle's cells.
fn message_source(lc: &Lifecycle) -> String {
    format!("message {} {}", lc.host, lc.id)
}

/// The source of a rejection's cells.
fn reject_source(reject: &RejectRecord) -> String {
    let o = &reject.origin;
    format!("reject {} {} {}", o.host, o.file_id, o.offset)
}

/// What the stored marks of `changes` applied: changes a batch sent
/// before made before it failed. Each (host, day) asks for its sources'
/// marks, in that day's partition only.
async fn applied_changes(db: &Db, changes: &[ChangeKey<'_>]) -> Result<HashMap<Mark, Applied>> {
    let mut wanted: HashMap<(&str, i64), Vec<&str>> = HashMap::new();
    for &(host, day, source) in changes {
        wanted.entry((host, day)).or_default().push(source);
    }
    let mut asks = Vec::new();
    for ((host, day), mut sources) in wanted {
        sources.sort_unstable();
        sources.dedup();
        for chunk in sources.chunks(LOOKUP_CHUNK) {
            asks.push((host, day, chunk.to_vec()));
        }
    }
    let found = lookups(
        asks.into_iter()
            .map(|(host, day, sources)| marks_of_day(db, host, day, sources))
            .collect(),
    )
    .await?;
    let mut applied: HashMap<Mark, Applied> = HashMap::new();
    for (mark, row) in found {
        let entry = applied.entry(mark.clone()).or_insert(Applied::Cells {
            cells: ReportCells::new(),
            marks: 0,
        });
        let Applied::Cells { cells, marks } = entry else {
            continue;
        };
        if row.applied.is_empty() {
            *entry = Applied::Unnamed;
            continue;
        }
        let Some(these) = decode_applied(&mark.0, &row.applied) else {
            return Err(StoreError::corrupt(
                "day cell mark",
                format!("{} {} cannot be read", mark.1, row.bucket),
            ));
        };
        cells.add(&these);
        *marks += 1;
    }
    Ok(applied)
}

/// The marks stored for `sources` in one day of one server.
async fn marks_of_day(
    db: &Db,
    host: &str,
    day: i64,
    sources: Vec<&str>,
) -> Result<Vec<(Mark, MarkRead)>> {
    let sql = format!(
        "SELECT key, version, bucket, applied FROM cells_day_sums
         WHERE dim = {MARK_DIM} AND day = toDate(?) AND host = ? AND key IN ({})",
        marks(sources.len())
    );
    let mut q = db.query(&sql).bind(day_string(day)).bind(host);
    for source in sources {
        q = q.bind(source);
    }
    let found: Vec<MarkRead> = db.fetch(q, "look for day cells changed").await?;
    Ok(found
        .into_iter()
        .map(|row| ((host.to_string(), row.key.clone(), day, row.version), row))
        .collect())
}

/// The rows of `cells_day_sums` for `changes`: what each wants less what
/// its marks already `applied`, summed per hour cell and per day cell,
/// and a mark for each change that adds something, naming it.
///
/// A first attempt finds no mark and adds its whole change. A batch sent
/// again after a failure past the sums finds the marks of the first and
/// adds only the difference: nothing when it is cut as before, and when
/// it is cut otherwise (a processor restarted from an earlier state)
/// what makes the sums equal to this attempt's content, the other
/// content taken back, hour by hour. The marks go in the same insert as
/// the sums, and each day's rows of one insert make one part of that
/// day's partition (an insert is cut into blocks of a million rows, far
/// above a batch's), which ClickHouse stores whole or not at all: a
/// change is marked exactly when it is summed, in its hours and its day.
fn day_change_rows(changes: &[DayChange], applied: &HashMap<Mark, Applied>) -> Vec<DaySumRow> {
    let mut hours = ReportCells::new();
    let mut out = Vec::new();
    for change in changes {
        let mark = change.mark();
        let (add, seq) = match applied.get(&mark) {
            None => (Cow::Borrowed(&change.cells), 0),
            Some(Applied::Unnamed) => continue,
            Some(Applied::Cells { cells, marks }) => {
                let mut rest = change.cells.clone();
                rest.subtract(cells);
                rest.prune();
                (Cow::Owned(rest), *marks)
            }
        };
        if add.is_empty() {
            continue;
        }
        hours.add(&add);
        out.push(DaySumRow::mark(mark, seq, encode_applied(&add)));
    }
    hours.prune();
    let mut days = hours.by_day();
    days.prune();
    for (cells, span) in [(&hours, Span::Hour), (&days, Span::Day)] {
        out.extend(
            cells
                .cells
                .iter()
                .map(|(key, cell)| DaySumRow::new(key, cell, span)),
        );
    }
    out
}

/// `?, ?, ?` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The items of a batch (raw records in `events`, rejections in
/// `rejects`) whose origin is not stored in `table` yet, nor that of an
/// item before them. Each (host, file) asks for the stored offsets in the
/// range of the batch's: one small query, whatever the batch's size.
async fn unseen<'a, T>(
    db: &Db,
    table: &str,
    items: &'a [T],
    origin: impl Fn(&T) -> &RecordOrigin,
) -> Result<Vec<&'a T>> {
    let stored = stored_offsets(db, table, items.iter().map(&origin)).await?;
    let mut seen: HashSet<Origin, foldhash::fast::RandomState> = HashSet::default();
    seen.reserve(items.len());
    Ok(items
        .iter()
        .filter(|item| {
            let o = origin(item);
            let key = (o.host.as_str(), o.file_id, o.offset);
            !stored.contains(&key) && seen.insert(key)
        })
        .collect())
}

/// A record's origin: (host, file identity, offset).
type Origin<'a> = (&'a str, u64, u64);

async fn stored_offsets<'a>(
    db: &Db,
    table: &str,
    origins: impl Iterator<Item = &'a RecordOrigin>,
) -> Result<HashSet<Origin<'a>>> {
    let mut ranges: HashMap<(&str, u64), (u64, u64)> = HashMap::new();
    for o in origins {
        let r = ranges
            .entry((o.host.as_str(), o.file_id))
            .or_insert((o.offset, o.offset));
        r.0 = r.0.min(o.offset);
        r.1 = r.1.max(o.offset);
    }
    let mut out = HashSet::new();
    for ((host, file), (lo, hi)) in ranges {
        let q = db
            .query(&format!(
                "SELECT offset FROM {table}
                 WHERE host = ? AND file_id = ? AND offset >= ? AND offset <= ?"
            ))
            .bind(host)
            .bind(file)
            .bind(lo)
            .bind(hi);
        let offsets: Vec<u64> = db.fetch(q, "look for records already stored").await?;
        out.extend(offsets.into_iter().map(|o| (host, file, o)));
    }
    Ok(out)
}

/// The stored versions of the batch's lifecycles, by (host, id).
async fn stored_lifecycles(
    db: &Db,
    lifecycles: &[&Lifecycle],
) -> Result<HashMap<(String, String), StoredLifecycle>> {
    let mut by_host: HashMap<&str, Vec<String>> = HashMap::new();
    for lc in lifecycles {
        by_host.entry(&lc.host).or_default().push(lc.id.to_string());
    }
    let mut asks = Vec::new();
    for (host, mut ids) in by_host {
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            asks.push((host, chunk.to_vec()));
        }
    }
    let found = lookups(
        asks.into_iter()
            .map(|(host, ids)| lifecycles_of(db, host, ids))
            .collect(),
    )
    .await?;
    Ok(found
        .into_iter()
        .map(|s| ((s.host.clone(), s.id.clone()), s))
        .collect())
}

/// The stored versions of some lifecycles of one server. As
/// `read::lifecycle` reads one: by key, in the partitions
/// `lifecycle_days` names.
async fn lifecycles_of(db: &Db, host: &str, ids: Vec<String>) -> Result<Vec<StoredLifecycle>> {
    let sql = format!(
        "SELECT host, id, version, day, body FROM lifecycles FINAL
         PREWHERE host = ? AND id IN ({ids})
         WHERE day IN (SELECT day FROM lifecycle_days WHERE host = ? AND id IN ({ids}))",
        ids = marks(ids.len())
    );
    let mut q = db.query(&sql);
    for _ in 0..2 {
        q = q.bind(host);
        for id in &ids {
            q = q.bind(id.as_str());
        }
    }
    db.fetch(q, "read stored lifecycles").await
}

/// Appends one audit entry.
pub async fn append_audit(db: &Db, e: &AuditEntry, seq: u64) -> Result<()> {
    db.insert(
        "audit",
        &[AuditRow::new(e, seq)],
        "append to the audit trail",
    )
    .await
}

/// Keeps undecodable records of the raw topic.
pub async fn store_unparsed(db: &Db, records: &[UnparsedRecord]) -> Result<()> {
    let rows: Vec<UnparsedRow> = records
        .iter()
        .map(|r| UnparsedRow {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            read_at_ms: r.read_at_ms,
            day: day_of_ms(r.read_at_ms),
            problem: r.problem.clone(),
            bytes: r.bytes.clone(),
        })
        .collect();
    db.insert("unparsed", &rows, "store unparsed records").await
}
