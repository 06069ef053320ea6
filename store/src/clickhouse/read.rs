//! Reading: lookups, searches, full-text search and reports. Every read
//! of a versioned table uses `FINAL`, so it sees each row's latest
//! version once.

use std::collections::{BTreeSet, HashMap};

use clickhouse::query::Query;
use serde::Deserialize;

use exim_pilot_schema::report::{
    Cell, CellKey, Dimension, ReportBuilder, ReportCells, ReportOptions, Rollup, Samples,
};
use exim_pilot_schema::{Lifecycle, MessageId, RejectRecord, Report};

use super::migrations::HOUR_DIM;
use super::rows::*;
use super::Db;
use crate::cursor::{cursor_number, decode_cursor, encode_cursor};
use crate::error::Result;
use crate::plan::{cell_query_range, hour_bounds, range_key, rollup_reads};
use crate::types::*;

/// A value bound into a statement.
pub(super) enum Value {
    Int(i64),
    Text(String),
}

/// A WHERE clause under construction, with its values in order.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) sql: Vec<String>,
    pub(super) values: Vec<Value>,
}

impl Conditions {
    /// Adds a condition whose `?` marks take `values` in order.
    pub(super) fn push(&mut self, sql: &str, values: impl IntoIterator<Item = Value>) {
        self.sql.push(sql.to_string());
        self.values.extend(values);
    }

    pub(super) fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }

    /// Binds the values to a query of this clause.
    pub(super) fn bind(self, mut q: Query) -> Query {
        for v in self.values {
            q = match v {
                Value::Int(n) => q.bind(n),
                Value::Text(s) => q.bind(s),
            };
        }
        q
    }
}

pub(super) fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn lower(s: &str) -> Value {
    Value::Text(s.trim().to_ascii_lowercase())
}

#[derive(clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct BlobData {
    #[serde(with = "bytes")]
    data: Vec<u8>,
}

/// A saved blob.
pub async fn load_blob(db: &Db, name: &str) -> Result<Option<Vec<u8>>> {
    let q = db
        .query("SELECT data FROM blobs FINAL WHERE name = ?")
        .bind(name);
    let rows: Vec<BlobData> = db.fetch(q, "read a state blob").await?;
    Ok(rows.into_iter().next().map(|b| b.data))
}

/// One lifecycle by (host, id), from the one day partition
/// `lifecycle_days` names.
///
/// The filter on the key runs as `PREWHERE`, before `FINAL` merges the
/// versions: every version of a lifecycle has the same key, so it passes
/// or fails whole, and only the granules holding it are merged.
pub async fn lifecycle(db: &Db, host: &str, id: MessageId) -> Result<Option<Lifecycle>> {
    let id = id.to_string();
    let q = db
        .query(
            "SELECT body FROM lifecycles FINAL
             PREWHERE host = ? AND id = ?
             WHERE day IN (SELECT day FROM lifecycle_days WHERE host = ? AND id = ?)",
        )
        .bind(host)
        .bind(id.as_str())
        .bind(host)
        .bind(id.as_str());
    let bodies: Vec<String> = db.fetch(q, "read a lifecycle").await?;
    bodies.first().map(|b| decode_lifecycle(b)).transpose()
}

/// Every lifecycle with this id, by host; found as [`lifecycle`] finds
/// one.
pub async fn lifecycles_by_id(db: &Db, id: MessageId) -> Result<Vec<Lifecycle>> {
    let id = id.to_string();
    let q = db
        .query(
            "SELECT body FROM lifecycles FINAL
             PREWHERE id = ?
             WHERE day IN (SELECT day FROM lifecycle_days PREWHERE id = ?)
             ORDER BY host",
        )
        .bind(id.as_str())
        .bind(id.as_str());
    let bodies: Vec<String> = db.fetch(q, "read lifecycles by id").await?;
    bodies.iter().map(|b| decode_lifecycle(b)).collect()
}

fn record_select() -> String {
    format!("SELECT {} FROM events FINAL", columns::<EventRow>())
}

/// The raw records of one message, in log order.
///
/// Two reads by key: where its records are, from `events_by_message`,
/// then the records themselves from `events` by their origin (its key; a
/// `PREWHERE` before `FINAL`, as in [`lifecycle`]), in the partitions of
/// their days only. Two round trips cost less than one statement that
/// reads the index twice, once for the origins and once for the days.
pub async fn message_records(db: &Db, host: &str, id: MessageId) -> Result<Vec<StoredRecord>> {
    let q = db
        .query("SELECT day, file_id, offset FROM events_by_message WHERE host = ? AND id = ?")
        .bind(host)
        .bind(id.to_string());
    let found: Vec<(u16, u64, u64)> = db.fetch(q, "find a message's raw records").await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let days: BTreeSet<u16> = found.iter().map(|(day, _, _)| *day).collect();
    let origins: BTreeSet<(u64, u64)> = found.iter().map(|(_, f, o)| (*f, *o)).collect();

    let sql = format!(
        "{} PREWHERE host = ? AND (file_id, offset) IN ({}) WHERE day IN ({})
         ORDER BY ifNull(at_ms, read_at_ms), file_id, offset",
        record_select(),
        vec!["(?, ?)"; origins.len()].join(", "),
        vec!["toDate(?)"; days.len()].join(", "),
    );
    let mut q = db.query(&sql).bind(host);
    for (file, offset) in origins {
        q = q.bind(file).bind(offset);
    }
    for day in days {
        q = q.bind(day_string(i64::from(day)));
    }
    let rows: Vec<EventRow> = db.fetch(q, "read a message's raw records").await?;
    rows.into_iter().map(EventRow::into_record).collect()
}

/// Lifecycles matching a filter, newest first.
pub async fn search(db: &Db, f: &MessageFilter, page: &PageRequest) -> Result<Page<Lifecycle>> {
    let mut c = Conditions::default();
    if let Some(t) = f.since {
        c.push("cohort_ms >= ?", [Value::Int(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("cohort_ms < ?", [Value::Int(ms(t))]);
    }
    if let Some(h) = &f.host {
        c.push("host = ?", [text(h)]);
    }
    if let Some(s) = &f.sender {
        c.push("sender = ?", [lower(s)]);
    }
    if let Some(s) = &f.sender_domain {
        c.push("sender_domain = ?", [lower(s)]);
    }
    if let Some(a) = &f.recipient {
        c.push(
            "(has(addresses, ?) OR has(originals, ?))",
            [lower(a), lower(a)],
        );
    }
    if let Some(a) = &f.address {
        c.push(
            "(ifNull(sender = ?, 0) OR has(addresses, ?) OR has(originals, ?))",
            [lower(a), lower(a), lower(a)],
        );
    }
    if let Some(d) = &f.domain {
        c.push("has(domains, ?)", [lower(d)]);
    }
    if let Some(s) = f.state {
        c.push("state = ?", [text(s.as_str())]);
    }
    if let Some(o) = f.outcome {
        c.push("has(outcomes, ?)", [text(o.as_str())]);
    }
    if let Some(class) = f.reason {
        c.push("has(reasons, ?)", [text(class.as_str())]);
    }
    if let Some(s) = &f.subject {
        crate::check_search_text("the subject filter", s)?;
        // Like SQLite's LIKE: ASCII letters match either case.
        c.push(
            "positionCaseInsensitive(ifNull(subject, ''), ?) > 0 AND isNotNull(subject)",
            [text(s.trim())],
        );
    }
    if let Some(m) = &f.message_id_header {
        c.push("msgid_header = ?", [text(&normalize_msgid(m))]);
    }
    if let Some(ip) = &f.client_ip {
        c.push("client_ip = ?", [text(ip.trim())]);
    }
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 3)?;
        let t = cursor_number(cursor, &parts[0])?;
        c.push(
            "(cohort_ms, host, id) < (?, ?, ?)",
            [Value::Int(t), text(&parts[1]), text(&parts[2])],
        );
    }

    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT cohort_ms, host, id, body FROM lifecycles FINAL {}
         ORDER BY cohort_ms DESC, host DESC, id DESC LIMIT {}",
        c.where_clause(),
        first + 1
    );
    let q = c.bind(db.query(&sql));
    let rows: Vec<(i64, String, String, String)> = db.fetch(q, "search lifecycles").await?;
    let has_next_page = rows.len() > first;
    let mut items = Vec::with_capacity(first);
    let mut last = None;
    for (t, host, id, body) in rows.into_iter().take(first) {
        items.push(decode_lifecycle(&body)?);
        last = Some((t, host, id));
    }
    Ok(Page {
        items,
        end_cursor: last.map(|(t, h, id)| encode_cursor(&[&t.to_string(), &h, &id])),
        has_next_page,
    })
}

/// Rejections matching a filter, newest first.
pub async fn rejects(db: &Db, f: &RejectFilter, page: &PageRequest) -> Result<Page<RejectRecord>> {
    let mut c = Conditions::default();
    if let Some(t) = f.since {
        c.push("at_ms >= ?", [Value::Int(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("at_ms < ?", [Value::Int(ms(t))]);
    }
    if let Some(h) = &f.host {
        c.push("host = ?", [text(h)]);
    }
    if let Some(ip) = &f.client_ip {
        c.push("client_ip = ?", [text(ip.trim())]);
    }
    if let Some(class) = f.class {
        c.push("class = ?", [text(class.as_str())]);
    }
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 4)?;
        let t = cursor_number(cursor, &parts[0])?;
        let file = cursor_number(cursor, &parts[2])?;
        let offset = cursor_number(cursor, &parts[3])?;
        c.push(
            "(at_ms, host, file_id, offset) < (?, ?, toUInt64(?), toUInt64(?))",
            [
                Value::Int(t),
                text(&parts[1]),
                Value::Int(file),
                Value::Int(offset),
            ],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT {} FROM rejects FINAL {}
         ORDER BY at_ms DESC, host DESC, file_id DESC, offset DESC LIMIT {}",
        columns::<RejectRow>(),
        c.where_clause(),
        first + 1
    );
    let q = c.bind(db.query(&sql));
    let rows: Vec<RejectRow> = db.fetch(q, "read rejections").await?;
    let has_next_page = rows.len() > first;
    let mut items = Vec::with_capacity(first);
    let mut last = None;
    for row in rows.into_iter().take(first) {
        last = Some((row.at_ms, row.host.clone(), row.file_id, row.offset));
        items.push(row.into_reject()?);
    }
    Ok(Page {
        items,
        end_cursor: last.map(|(t, h, file, offset)| {
            encode_cursor(&[&t.to_string(), &h, &file.to_string(), &offset.to_string()])
        }),
        has_next_page,
    })
}

/// Audit entries matching a filter, newest first.
pub async fn audit_log(db: &Db, f: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>> {
    let mut c = Conditions::default();
    if let Some(t) = f.since {
        c.push("at_ms >= ?", [Value::Int(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("at_ms < ?", [Value::Int(ms(t))]);
    }
    if let Some(a) = &f.actor {
        c.push("actor = ?", [text(a)]);
    }
    if let Some(a) = &f.action {
        c.push("action = ?", [text(a)]);
    }
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 2)?;
        let t = cursor_number(cursor, &parts[0])?;
        let seq = cursor_number(cursor, &parts[1])?;
        c.push(
            "(at_ms, seq) < (?, toUInt64(?))",
            [Value::Int(t), Value::Int(seq)],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT {} FROM audit {} ORDER BY at_ms DESC, seq DESC LIMIT {}",
        columns::<AuditRow>(),
        c.where_clause(),
        first + 1
    );
    let q = c.bind(db.query(&sql));
    let rows: Vec<AuditRow> = db.fetch(q, "read the audit trail").await?;
    let has_next_page = rows.len() > first;
    let mut items = Vec::with_capacity(first);
    let mut last = None;
    for row in rows.into_iter().take(first) {
        last = Some((row.at_ms, row.seq));
        items.push(row.into_entry()?);
    }
    Ok(Page {
        items,
        end_cursor: last.map(|(t, seq)| encode_cursor(&[&t.to_string(), &seq.to_string()])),
        has_next_page,
    })
}

/// Sums the cells of `bucket` with bucket in `[lo, hi)` per (bucket,
/// host, dimension, key) and hands each non-zero cell to `sink`; for
/// `Bucket::Range`, summed over the whole range per (host, dimension,
/// key), each keyed by `whole_key`.
async fn read_cells(
    db: &Db,
    (bucket, whole_key): (Bucket, i64),
    range: (i64, i64),
    host: Option<&str>,
    dims: &[Dimension],
    mut sink: impl FnMut(i64, &str, Dimension, &str, &Cell),
) -> Result<()> {
    if range.0 >= range.1 {
        return Ok(());
    }
    let dims = if dims.is_empty() {
        &Dimension::ALL[..]
    } else {
        dims
    };
    let whole = match bucket {
        Bucket::Hour => return hour_cells(db, range, host, dims, sink).await,
        Bucket::Day => None,
        Bucket::Range => Some(whole_key),
    };
    for (key, cell) in day_cells(db, range, host, dims, whole).await? {
        sink(key.hour, &key.host, key.dim, &key.key, &cell);
    }
    Ok(())
}

/// The hour cells of hours `[lo, hi)`: the sums written since schema
/// version 8 (see `migrations`), with their samples, added to the hour
/// cells stored before it, one row per source and version, whose latest
/// versions ClickHouse sums (`FINAL`). The conditions on the old table
/// are all on its key and partition, so they run as `PREWHERE`, before
/// `FINAL` merges what is left: every version of a row passes or fails
/// them together. (A `PREWHERE` must leave columns to read after it:
/// ClickHouse 18.16 cannot merge the versions otherwise.) Cells that sum
/// to nothing are left out.
async fn hour_cells(
    db: &Db,
    range: (i64, i64),
    host: Option<&str>,
    dims: &[Dimension],
    mut sink: impl FnMut(i64, &str, Dimension, &str, &Cell),
) -> Result<()> {
    let by_source = {
        let c = cell_conditions(range, Span::Hour, host, dims, 0);
        let sql = format!(
            "SELECT bucket, host, dim, key, sumForEach(counters) AS counters,
                 sumMap(delay_buckets, delay_counts) AS delay,
                 groupUniqArrayArray(samples) AS samples
             FROM cells_hour_by_source FINAL PREWHERE {}
             GROUP BY bucket, host, dim, key",
            c.sql.join(" AND ")
        );
        c.bind(db.query(&sql))
    };
    let hour = HOUR_DIM;
    let sums = {
        let c = cell_conditions(range, Span::Hour, host, dims, hour);
        let sql = format!(
            "SELECT bucket, host, dim, key, countersMap.counter, countersMap.value,
                 delayMap.bucket, delayMap.count
             FROM cells_day_sums {}",
            c.where_clause()
        );
        c.bind(db.query(&sql))
    };
    let samples = {
        let c = cell_conditions(range, Span::Hour, host, dims, hour);
        let sql = format!(
            "SELECT bucket, host, dim, key, sample FROM cells_day_samples {}",
            c.where_clause()
        );
        c.bind(db.query(&sql))
    };
    let (old, sums, samples) = tokio::try_join!(
        db.fetch::<SummedCell>(by_source, "sum report cells"),
        db.fetch::<DaySumRead>(sums, "read hour cells"),
        db.fetch::<DaySampleRead>(samples, "read hour samples"),
    )?;

    let key = |bucket: i64, host: &str, dim: Option<Dimension>, key: &str| {
        dim.map(|dim| CellKey {
            hour: bucket,
            host: host.to_string(),
            dim,
            key: key.to_string(),
        })
    };
    let mut cells: HashMap<CellKey, Cell> = HashMap::new();
    for row in old {
        // A dimension from a newer version: not ours to count.
        let dim = Dimension::from_code(row.dim as i64);
        if let Some(k) = key(row.bucket, &row.host, dim, &row.key) {
            let (buckets, counts) = row.delay;
            let mut cell = Cell {
                counters: counters(row.counters.iter().copied().enumerate()),
                delay: histogram(&buckets, &counts),
                samples: Samples::default(),
            };
            for s in &row.samples {
                cell.samples.insert(s);
            }
            cells.insert(k, cell);
        }
    }
    add_sums(&mut cells, sums, samples, |bucket, host, dim, k| {
        key(bucket, host, Span::Hour.dimension(dim), k)
    });
    for (key, cell) in &cells {
        sink(key.hour, &key.host, key.dim, &key.key, cell);
    }
    Ok(())
}

/// Sums the cells of a report's range: day cells for the whole days
/// inside it, hour cells for the hours at its edges, and hour cells of
/// the totals for the hourly series.
async fn rollup(db: &Db, options: &ReportOptions) -> Result<Rollup> {
    let host = options.host.as_deref();
    let mut rollup = Rollup::new();
    for read in rollup_reads(options) {
        // Day cells are added up whatever their day: read them summed over
        // the range, but for the daily series.
        let bucket = match read.bucket {
            Bucket::Day if !read.totals_only => Bucket::Range,
            other => other,
        };
        read_cells(
            db,
            (bucket, 0),
            read.range,
            host,
            read.dims(),
            |b, h, dim, k, cell| read.add_to(&mut rollup, b, h, dim, k, cell),
        )
        .await?;
    }
    Ok(rollup)
}

/// The conditions on cells of buckets `[lo, hi)` (days or hours, as
/// `span` says), on `host` and of `dims`, their codes stored plus
/// `offset`; the range of their days too, which limits the read to those
/// days' partitions.
fn cell_conditions(
    (lo, hi): (i64, i64),
    span: Span,
    host: Option<&str>,
    dims: &[Dimension],
    offset: u8,
) -> Conditions {
    let per_day = span.per_day();
    let mut c = Conditions::default();
    let codes: Vec<String> = dims
        .iter()
        .map(|d| (d.code() + offset as i64).to_string())
        .collect();
    c.push(&format!("dim IN ({})", codes.join(", ")), []);
    c.push(
        "bucket >= ? AND bucket < ?",
        [Value::Int(lo), Value::Int(hi)],
    );
    if let Some(h) = host {
        c.push("host = ?", [text(h)]);
    }

    // Ranges open at either end reach far: only days `toDate` reads on
    // every version (1970 to 2105) bound the partitions.
    let (first, last) = (lo.div_euclid(per_day), (hi - 1).div_euclid(per_day));
    if (1..=LAST_DATE).contains(&first) {
        c.push("day >= toDate(?)", [text(&day_string(first))]);
    }
    if (0..LAST_DATE).contains(&last) {
        c.push("day <= toDate(?)", [text(&day_string(last))]);
    }
    c
}

/// The last day (2105-12-31) that `toDate` reads from text on ClickHouse
/// 18.16, in days since the epoch.
const LAST_DATE: i64 = 49_672;

/// The day cells of days `[lo, hi)`: the sums written since schema
/// version 6 (see `migrations`) added to those of the cells stored before
/// it, with their samples; cells that sum to nothing are left out.
///
/// The three tables are read at once, by their key and day partitions,
/// as they are: no `FINAL`, no `GROUP BY`. The sums' rows of one cell
/// (from parts not merged yet) are added here; a base cell the migration
/// wrote twice is the same row twice, taken once.
///
/// With `whole`, the cells of every day are summed by ClickHouse per
/// (host, dimension, key), each keyed by `whole`: a month by destination
/// domain is then a row per domain to send rather than one per domain and
/// day. The base cells are then read with `FINAL`, so that one written
/// twice counts once in the sum. Samples are read per day, and kept when
/// their cell sums to something over the whole range.
async fn day_cells(
    db: &Db,
    range: (i64, i64),
    host: Option<&str>,
    dims: &[Dimension],
    whole: Option<i64>,
) -> Result<HashMap<CellKey, Cell>> {
    let select = |columns: &str, summed: Option<&str>, table: &str| {
        let c = cell_conditions(range, Span::Day, host, dims, 0);
        let sql = match whole.and(summed) {
            None => format!(
                "SELECT bucket, host, dim, key, {columns} FROM {table} {}",
                c.where_clause()
            ),
            Some(summed) => format!(
                "SELECT toInt64(0) AS whole_range, host, dim, key, {summed} FROM {table} {}
                 GROUP BY host, dim, key",
                c.where_clause()
            ),
        };
        c.bind(db.query(&sql))
    };
    let base_table = match whole {
        None => "cells_day_base",
        Some(_) => "cells_day_base FINAL",
    };
    let (base, sums, samples) = tokio::try_join!(
        db.fetch::<DayBaseRead>(
            select(
                "counters, delay_buckets, delay_counts",
                Some("sumForEach(counters), sumMap(delay_buckets, delay_counts)"),
                base_table,
            ),
            "read day cells",
        ),
        db.fetch::<DaySumRead>(
            select(
                "countersMap.counter, countersMap.value, delayMap.bucket, delayMap.count",
                Some(
                    "sumMap(countersMap.counter, countersMap.value),
                     sumMap(delayMap.bucket, delayMap.count)",
                ),
                "cells_day_sums",
            ),
            "read day cells",
        ),
        db.fetch::<DaySampleRead>(
            select("sample", None, "cells_day_samples"),
            "read day samples",
        ),
    )?;

    let key = |bucket: i64, host: &str, dim: u8, key: &str| {
        Span::Day.dimension(dim).map(|dim| CellKey {
            hour: whole.unwrap_or(bucket),
            host: host.to_string(),
            dim,
            key: key.to_string(),
        })
    };
    let mut cells: HashMap<CellKey, Cell> = HashMap::new();
    for row in base {
        if let Some(k) = key(row.bucket, &row.host, row.dim, &row.key) {
            let cell = Cell {
                counters: counters(row.counters.into_iter().enumerate()),
                delay: histogram(&row.delay_buckets, &row.delay_counts),
                samples: Samples::default(),
            };
            cells.insert(k, cell);
        }
    }
    add_sums(&mut cells, sums, samples, key);
    Ok(cells)
}

/// Adds the rows of summed cells `sums` to `cells`, leaves out the cells
/// that sum to nothing, and gives the others their `samples`. `key` names
/// the cell of a stored (bucket, host, dimension code, key), or `None`
/// for one not to count (another span's, or a dimension this build does
/// not know).
fn add_sums(
    cells: &mut HashMap<CellKey, Cell>,
    sums: Vec<DaySumRead>,
    samples: Vec<DaySampleRead>,
    key: impl Fn(i64, &str, u8, &str) -> Option<CellKey>,
) {
    for row in sums {
        if let Some(k) = key(row.bucket, &row.host, row.dim, &row.key) {
            let ids = row.counter_ids.iter().map(|i| *i as usize);
            let change = Cell {
                counters: counters(ids.zip(row.counter_values)),
                delay: histogram(&row.delay_buckets, &row.delay_counts),
                samples: Samples::default(),
            };
            cells.entry(k).or_default().add(&change);
        }
    }
    cells.retain(|_, cell| !cell.is_zero());
    for row in samples {
        if let Some(k) = key(row.bucket, &row.host, row.dim, &row.key) {
            if let Some(cell) = cells.get_mut(&k) {
                cell.samples.insert(&row.sample);
            }
        }
    }
}

/// The report over a range. Without a domain filter it comes from the
/// cells alone. With one it is built from the lifecycles with an address
/// in that domain and the rejections of recipients in it, so its cost
/// grows with that domain's traffic in the range.
pub async fn report(db: &Db, options: &ReportOptions) -> Result<Report> {
    let Some(domain) = options.domain_filter() else {
        return Ok(Report::from_rollup(&rollup(db, options).await?, options));
    };
    let (h0, h1) = hour_bounds(options);
    let (lo, hi) = (h0.saturating_mul(HOUR_MS), h1.saturating_mul(HOUR_MS));
    let mut builder = ReportBuilder::new(options.clone());

    let q = db
        .query(
            "SELECT body FROM lifecycles FINAL
             WHERE has(domains, ?) AND cohort_ms >= ? AND cohort_ms < ?",
        )
        .bind(domain.as_str())
        .bind(lo)
        .bind(hi);
    let bodies: Vec<String> = db.fetch(q, "read a domain's lifecycles").await?;
    for body in &bodies {
        builder.add_lifecycle(&decode_lifecycle(body)?);
    }
    let sql = format!(
        "SELECT {} FROM rejects FINAL
         WHERE recipient_domain = ? AND at_ms >= ? AND at_ms < ?",
        columns::<RejectRow>()
    );
    let q = db.query(&sql).bind(domain.as_str()).bind(lo).bind(hi);
    let rows: Vec<RejectRow> = db.fetch(q, "read a domain's rejections").await?;
    for row in rows {
        builder.add_reject(&row.into_reject()?);
    }
    Ok(builder.finish())
}

/// Raw cells, per hour, per day or over the whole range.
pub async fn cells(db: &Db, q: &CellQuery) -> Result<ReportCells> {
    let mut out = ReportCells::new();
    let range = cell_query_range(q);
    read_cells(
        db,
        (q.bucket, range_key(q, range).unwrap_or(0)),
        range,
        q.host.as_deref(),
        &q.dims,
        |b, h, dim, k, cell| {
            let key = CellKey {
                hour: b,
                host: h.to_string(),
                dim,
                key: k.to_string(),
            };
            out.add_cell(key, cell);
        },
    )
    .await?;
    Ok(out)
}

/// Full-text search over raw lines: every word a case-insensitive
/// substring.
pub async fn search_lines(db: &Db, q: &LineQuery) -> Result<Vec<StoredRecord>> {
    let words = crate::search_words(&q.text)?;
    let mut c = Conditions::default();
    for w in words {
        c.push("positionCaseInsensitive(bytes, ?) > 0", [text(w)]);
    }
    if let Some(h) = &q.host {
        c.push("host = ?", [text(h)]);
    }
    if let Some(log) = q.log {
        c.push("log = ?", [text(log.as_str())]);
    }
    if let Some(t) = q.since {
        c.push("at_ms >= ?", [Value::Int(ms(t))]);
        c.push(
            "day >= toDate(?)",
            [text(&t.format("%Y-%m-%d").to_string())],
        );
    }
    if let Some(t) = q.until {
        c.push("at_ms < ?", [Value::Int(ms(t))]);
    }
    let limit = match q.limit {
        0 => 100,
        n => n.min(MAX_PAGE),
    };
    let sql = format!(
        "{} {} ORDER BY read_at_ms DESC, host DESC, file_id DESC, offset DESC LIMIT {limit}",
        record_select(),
        c.where_clause()
    );
    let query = c.bind(db.query(&sql));
    let rows: Vec<EventRow> = db.fetch(query, "search raw lines").await?;
    rows.into_iter().map(EventRow::into_record).collect()
}

/// One ranked address as [`top_recipients`] reads it.
#[derive(clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct RecipientRow {
    address: String,
    messages: i64,
    delivered: i64,
    deferred: i64,
    still_deferred: i64,
    bounced: i64,
    last_at: i64,
    attempted: u8,
}

/// The conditions on the messages of a [`RecipientQuery`].
fn recipient_messages(q: &RecipientQuery) -> Conditions {
    let mut c = Conditions::default();
    if let Some(t) = q.since {
        c.push("cohort_ms >= ?", [Value::Int(ms(t))]);
    }
    if let Some(t) = q.until {
        c.push("cohort_ms < ?", [Value::Int(ms(t))]);
    }
    if let Some(h) = &q.host {
        c.push("host = ?", [text(h)]);
    }
    c
}

/// The final addresses of a range's messages, most messages first.
///
/// The latest version of each lifecycle of the range is unrolled into
/// its addresses (`ARRAY JOIN` of the parallel address, outcome and
/// domain arrays) and joined, by (host, id, address number), with the
/// latest version of those messages' attempts, summed per address. The
/// attempts are read from the day before the range on (an attempt never
/// comes before its message) and only for the range's messages, found
/// by the `attempts` key; so the cost grows with the messages in the
/// range.
pub async fn top_recipients(db: &Db, q: &RecipientQuery) -> Result<Vec<RecipientCount>> {
    let mut messages = recipient_messages(q);
    if let Some(d) = q.domain_key() {
        messages.push("domain = ?", [Value::Text(d)]);
    }
    let mut attempts = recipient_messages(q);
    let mut attempt_days = Conditions::default();
    if let Some(t) = q.since {
        let day = (t - chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string();
        attempt_days.push("day >= toDate(?)", [text(&day)]);
    }
    let sql = format!(
        "SELECT address,
             toInt64(uniqExact(host, id)) AS messages,
             toInt64(sum(outcome = 'delivered')) AS delivered,
             toInt64(sum(outcome = 'deferred' OR deferred_once = 1)) AS deferred,
             toInt64(sum(outcome = 'deferred')) AS still_deferred,
             toInt64(sum(outcome = 'bounced')) AS bounced,
             max(last_at) AS last_at,
             max(attempted) AS attempted
         FROM (
             SELECT host, id, address, outcome, n
             FROM lifecycles FINAL
             ARRAY JOIN addresses AS address, outcomes AS outcome, domains AS domain,
                 arrayEnumerate(addresses) AS n
             {}
         ) AS m ANY LEFT JOIN (
             SELECT host, id, toUInt32(rcpt + 1) AS n, max(at_ms) AS last_at,
                 toUInt8(1) AS attempted, toUInt8(max(result = 'defer')) AS deferred_once
             FROM attempts FINAL
             WHERE (host, id) IN (SELECT host, id FROM lifecycles FINAL {}){}
             GROUP BY host, id, n
         ) AS a USING (host, id, n)
         GROUP BY address
         ORDER BY messages DESC, address
         LIMIT {}",
        messages.where_clause(),
        attempts.where_clause(),
        attempt_days
            .sql
            .iter()
            .map(|s| format!(" AND {s}"))
            .collect::<String>(),
        q.limit()
    );
    let mut values = messages.values;
    values.append(&mut attempts.values);
    values.append(&mut attempt_days.values);
    let all = Conditions {
        sql: Vec::new(),
        values,
    };
    let rows: Vec<RecipientRow> = db
        .fetch(all.bind(db.query(&sql)), "rank recipients")
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| RecipientCount {
            address: r.address,
            messages: r.messages,
            delivered: r.delivered,
            deferred: r.deferred,
            still_deferred: r.still_deferred,
            bounced: r.bounced,
            last_attempt_at: (r.attempted == 1).then(|| from_ms(r.last_at)),
        })
        .collect())
}

/// Every server, by name.
pub async fn hosts(db: &Db) -> Result<Vec<HostSummary>> {
    let q = db.query(
        "SELECT host, minMerge(first_ms), maxMerge(last_ms), maxMerge(last_read_ms),
             sumMerge(records), sumMerge(messages), sumMerge(rejects)
         FROM host_stats GROUP BY host ORDER BY host",
    );
    type HostRow = (String, i64, i64, i64, i64, i64, i64);
    let rows: Vec<HostRow> = db.fetch(q, "read the servers' summaries").await?;
    Ok(rows
        .into_iter()
        .map(
            |(host, first, last, read, records, messages, rejects)| HostSummary {
                host,
                first_seen: (first != i64::MAX).then(|| from_ms(first)),
                last_seen: (last != i64::MIN).then(|| from_ms(last)),
                last_read_at_ms: (read != i64::MIN).then_some(read),
                records,
                messages,
                rejects,
            },
        )
        .collect())
}
