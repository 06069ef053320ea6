//! Reading: lookups, searches, full-text search and reports.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use exim_pilot_schema::report::{
    CellKey, Dimension, ReportBuilder, ReportCells, ReportOptions, Rollup,
};
use exim_pilot_schema::{Lifecycle, LogFile, MessageId, RecordOrigin, RejectRecord, Report};

use super::codec::{self, counter_columns, from_ms, ms, parse_enum, HOUR_MS};
use crate::cursor::{cursor_number, decode_cursor, encode_cursor};
use crate::error::{Result, StoreError};
use crate::plan::{cell_query_range, hour_bounds, range_key, rollup_reads};
use crate::types::*;

/// The columns [`record_from_row`] reads.
pub(super) const RECORD_COLUMNS: &str = "SELECT r.host, r.log, r.file_id, r.offset, r.read_at_ms, \
     r.at_ms, r.message_id, r.event_kind, r.bytes";

pub(super) fn record_from_row(row: &rusqlite::Row<'_>) -> Result<StoredRecord> {
    let log: String = row.get(1)?;
    let id: Option<String> = row.get(6)?;
    Ok(StoredRecord {
        origin: RecordOrigin {
            host: row.get(0)?,
            log: log
                .parse::<LogFile>()
                .map_err(|e| StoreError::corrupt("record", e))?,
            file_id: row.get::<_, i64>(2)? as u64,
            offset: row.get::<_, i64>(3)? as u64,
        },
        read_at_ms: row.get(4)?,
        at: row.get::<_, Option<i64>>(5)?.map(from_ms),
        message_id: id
            .map(|s| s.parse::<MessageId>())
            .transpose()
            .map_err(|e| StoreError::corrupt("record", e))?,
        event_kind: row.get(7)?,
        bytes: row.get(8)?,
    })
}

/// The columns [`reject_from_row`] reads.
pub const REJECT_COLUMNS: &str = "SELECT host, log, file_id, offset, at_ms, stage, temporary, \
     client_ip, client_name, helo, sender, recipient, message_id, reason, class, rowid";

/// A rejection from a row of [`REJECT_COLUMNS`].
pub fn reject_from_row(row: &rusqlite::Row<'_>) -> Result<RejectRecord> {
    let log: String = row.get(1)?;
    let stage: String = row.get(5)?;
    let id: Option<String> = row.get(12)?;
    let class: String = row.get(14)?;
    Ok(RejectRecord {
        origin: RecordOrigin {
            host: row.get(0)?,
            log: log
                .parse::<LogFile>()
                .map_err(|e| StoreError::corrupt("reject", e))?,
            file_id: row.get::<_, i64>(2)? as u64,
            offset: row.get::<_, i64>(3)? as u64,
        },
        at: from_ms(row.get(4)?),
        stage: parse_enum("reject stage", &stage)?,
        temporary: row.get(6)?,
        client_ip: row.get(7)?,
        client_name: row.get(8)?,
        helo: row.get(9)?,
        sender: row.get(10)?,
        recipient: row.get(11)?,
        message_id: id
            .map(|s| s.parse::<MessageId>())
            .transpose()
            .map_err(|e| StoreError::corrupt("reject", e))?,
        reason: row.get(13)?,
        class: class
            .parse()
            .map_err(|e: String| StoreError::corrupt("reject", e))?,
    })
}

/// A saved blob.
pub fn load_blob(conn: &Connection, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT data FROM blobs WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// One lifecycle by (host, id).
pub fn lifecycle(conn: &Connection, host: &str, id: MessageId) -> Result<Option<Lifecycle>> {
    let body: Option<Vec<u8>> = conn
        .prepare_cached("SELECT body FROM lifecycles WHERE host = ?1 AND id = ?2")?
        .query_row(params![host, id.to_string()], |r| r.get(0))
        .optional()?;
    body.map(|b| codec::decode_lifecycle(&b)).transpose()
}

/// Every lifecycle with this id.
pub fn lifecycles_by_id(conn: &Connection, id: MessageId) -> Result<Vec<Lifecycle>> {
    let mut stmt =
        conn.prepare_cached("SELECT body FROM lifecycles WHERE id = ?1 ORDER BY host")?;
    let mut rows = stmt.query([id.to_string()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(codec::decode_lifecycle(&row.get::<_, Vec<u8>>(0)?)?);
    }
    Ok(out)
}

/// The raw records of one message, in log order.
pub fn message_records(conn: &Connection, host: &str, id: MessageId) -> Result<Vec<StoredRecord>> {
    let sql = format!(
        "{RECORD_COLUMNS} FROM raw_records r WHERE r.message_id = ?1 AND r.host = ?2
         ORDER BY coalesce(r.at_ms, r.read_at_ms), r.rowid"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id.to_string(), host])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(record_from_row(row)?);
    }
    Ok(out)
}

/// A WHERE clause under construction, with its parameters.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) sql: Vec<String>,
    pub(super) params: Vec<Value>,
}

impl Conditions {
    /// Adds a condition whose `?` placeholders take `values` in order; they
    /// are numbered after the parameters already added.
    pub(super) fn push(&mut self, sql: &str, values: impl IntoIterator<Item = Value>) {
        let mut numbered = String::with_capacity(sql.len() + 8);
        let mut n = self.params.len();
        for (i, part) in sql.split('?').enumerate() {
            if i > 0 {
                n += 1;
                numbered.push_str(&format!("?{n}"));
            }
            numbered.push_str(part);
        }
        self.sql.push(numbered);
        self.params.extend(values);
    }

    pub(super) fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }
}

pub(super) fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn lower(s: &str) -> Value {
    Value::Text(s.trim().to_ascii_lowercase())
}

/// Lifecycles matching a filter, newest first.
pub fn search(conn: &Connection, f: &MessageFilter, page: &PageRequest) -> Result<Page<Lifecycle>> {
    let mut c = Conditions::default();
    let since = f.since.map(ms);
    let until = f.until.map(ms);
    if let Some(t) = since {
        c.push("l.cohort_ms >= ?", [Value::Integer(t)]);
    }
    if let Some(t) = until {
        c.push("l.cohort_ms < ?", [Value::Integer(t)]);
    }

    // Sub-queries on the recipients table also bound the cohort time, so
    // that a busy domain's index range is read only for the range asked.
    let range = |c: &mut Conditions, col: &str| -> String {
        let mut s = String::new();
        if let Some(t) = since {
            c.params.push(Value::Integer(t));
            s.push_str(&format!(" AND {col} >= ?{}", c.params.len()));
        }
        if let Some(t) = until {
            c.params.push(Value::Integer(t));
            s.push_str(&format!(" AND {col} < ?{}", c.params.len()));
        }
        s
    };
    let rcpt_match = |c: &mut Conditions, address: &str| -> String {
        c.params.push(lower(address));
        let n = c.params.len();
        let r1 = range(c, "cohort_ms");
        let r2 = range(c, "cohort_ms");
        format!(
            "l.rowid IN (SELECT lc FROM recipients WHERE address = ?{n}{r1}
                 UNION SELECT lc FROM recipients WHERE original = ?{n}{r2})"
        )
    };

    if let Some(h) = &f.host {
        c.push("l.host = ?", [text(h)]);
    }
    if let Some(s) = &f.sender {
        c.push("l.sender = ?", [lower(s)]);
    }
    if let Some(s) = &f.sender_domain {
        c.push("l.sender_domain = ?", [lower(s)]);
    }
    if let Some(a) = &f.recipient {
        let sql = rcpt_match(&mut c, a);
        c.sql.push(sql);
    }
    if let Some(a) = &f.address {
        c.params.push(lower(a));
        let n = c.params.len();
        let sql = rcpt_match(&mut c, a);
        c.sql.push(format!("(l.sender = ?{n} OR {sql})"));
    }
    if let Some(d) = &f.domain {
        c.params.push(lower(d));
        let n = c.params.len();
        let r = range(&mut c, "cohort_ms");
        c.sql.push(format!(
            "l.rowid IN (SELECT lc FROM recipients WHERE domain = ?{n}{r})"
        ));
    }
    if let Some(s) = f.state {
        c.push("l.state = ?", [text(s.as_str())]);
    }
    if let Some(o) = f.outcome {
        c.params.push(text(o.as_str()));
        let n = c.params.len();
        let r = range(&mut c, "cohort_ms");
        c.sql.push(format!(
            "l.rowid IN (SELECT lc FROM recipients WHERE outcome = ?{n}{r})"
        ));
    }
    if let Some(class) = f.reason {
        c.params.push(text(class.as_str()));
        let n = c.params.len();
        let r = range(&mut c, "cohort_ms");
        c.sql.push(format!(
            "l.rowid IN (SELECT lc FROM message_reasons WHERE class = ?{n}{r})"
        ));
    }
    if let Some(s) = &f.subject {
        crate::check_search_text("the subject filter", s)?;
        c.push(
            "l.subject LIKE ? ESCAPE '\\'",
            [text(&format!("%{}%", codec::like_escape(s.trim())))],
        );
    }
    if let Some(m) = &f.message_id_header {
        c.push("l.msgid_header = ?", [text(&codec::normalize_msgid(m))]);
    }
    if let Some(ip) = &f.client_ip {
        c.push("l.client_ip = ?", [text(ip.trim())]);
    }
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 3)?;
        let t = cursor_number(cursor, &parts[0])?;
        c.push(
            "(l.cohort_ms, l.host, l.id) < (?, ?, ?)",
            [Value::Integer(t), text(&parts[1]), text(&parts[2])],
        );
    }

    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT l.cohort_ms, l.host, l.id, l.body FROM lifecycles l {}
         ORDER BY l.cohort_ms DESC, l.host DESC, l.id DESC LIMIT {}",
        c.where_clause(),
        first + 1
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(c.params.iter()))?;
    let mut items = Vec::new();
    let mut last_key = None;
    let mut has_next_page = false;
    while let Some(row) = rows.next()? {
        if items.len() == first {
            has_next_page = true;
            break;
        }
        let key: (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        items.push(codec::decode_lifecycle(&row.get::<_, Vec<u8>>(3)?)?);
        last_key = Some(key);
    }
    let end_cursor =
        last_key.map(|(t, h, id)| encode_cursor(&[&t.to_string(), h.as_str(), id.as_str()]));
    Ok(Page {
        items,
        end_cursor,
        has_next_page,
    })
}

/// Rejections matching a filter, newest first.
pub fn rejects(
    conn: &Connection,
    f: &RejectFilter,
    page: &PageRequest,
) -> Result<Page<RejectRecord>> {
    let mut c = Conditions::default();
    if let Some(t) = f.since {
        c.push("at_ms >= ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("at_ms < ?", [Value::Integer(ms(t))]);
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
    keyset_page(
        conn,
        REJECT_COLUMNS,
        "rejects",
        c,
        page,
        15,
        reject_from_row,
    )
}

/// A page of rows ordered by (at_ms, rowid) descending; `rowid_col` is the
/// index of the rowid column in `columns`.
fn keyset_page<T>(
    conn: &Connection,
    columns: &str,
    table: &str,
    mut c: Conditions,
    page: &PageRequest,
    rowid_col: usize,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Page<T>> {
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 2)?;
        let t = cursor_number(cursor, &parts[0])?;
        let id = cursor_number(cursor, &parts[1])?;
        c.push(
            "(at_ms, rowid) < (?, ?)",
            [Value::Integer(t), Value::Integer(id)],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "{columns}, at_ms FROM {table} {} ORDER BY at_ms DESC, rowid DESC LIMIT {}",
        c.where_clause(),
        first + 1
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(c.params.iter()))?;
    let mut items = Vec::new();
    let mut last = None;
    let mut has_next_page = false;
    while let Some(row) = rows.next()? {
        if items.len() == first {
            has_next_page = true;
            break;
        }
        let id: i64 = row.get(rowid_col)?;
        let at: i64 = row.get(rowid_col + 1)?;
        items.push(decode(row)?);
        last = Some((at, id));
    }
    Ok(Page {
        items,
        end_cursor: last.map(|(t, id)| encode_cursor(&[&t.to_string(), &id.to_string()])),
        has_next_page,
    })
}

const AUDIT_COLUMNS: &str =
    "SELECT at_ms, actor, role, client_ip, action, target, params, outcome, rowid";

/// Audit entries matching a filter, newest first.
pub fn audit_log(
    conn: &Connection,
    f: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditEntry>> {
    let mut c = Conditions::default();
    if let Some(t) = f.since {
        c.push("at_ms >= ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("at_ms < ?", [Value::Integer(ms(t))]);
    }
    if let Some(a) = &f.actor {
        c.push("actor = ?", [text(a)]);
    }
    if let Some(a) = &f.action {
        c.push("action = ?", [text(a)]);
    }
    keyset_page(conn, AUDIT_COLUMNS, "audit", c, page, 8, |row| {
        let params: Option<String> = row.get(6)?;
        Ok(AuditEntry {
            at: from_ms(row.get(0)?),
            actor: row.get(1)?,
            role: row.get(2)?,
            client_ip: row.get(3)?,
            action: row.get(4)?,
            target: row.get(5)?,
            params: params
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| StoreError::corrupt("audit entry", e))?,
            outcome: row.get(7)?,
        })
    })
}

/// Hour buckets covered by a report: `[first, end)`, open ends far away.
/// Adds the rollup rows of `table` with bucket in `[lo, hi)` to `rollup`.
/// Hour rows go to the hourly series too; day rows do not.
fn read_cells(
    conn: &Connection,
    table: &str,
    (lo, hi): (i64, i64),
    host: Option<&str>,
    dims: &[Dimension],
    mut sink: impl FnMut(i64, &str, Dimension, &str, &exim_pilot_schema::report::Cell),
) -> Result<()> {
    if lo >= hi {
        return Ok(());
    }
    let mut c = Conditions::default();
    c.push(
        "bucket >= ? AND bucket < ?",
        [Value::Integer(lo), Value::Integer(hi)],
    );
    if let Some(h) = host {
        c.push("host = ?", [text(h)]);
    }
    // Cells are keyed by dimension first: naming the dimensions lets
    // SQLite read one range of the key per dimension.
    let dims = if dims.is_empty() {
        &Dimension::ALL[..]
    } else {
        dims
    };
    let marks = vec!["?"; dims.len()].join(", ");
    c.push(
        &format!("dim IN ({marks})"),
        dims.iter().map(|d| Value::Integer(d.code())),
    );
    let sql = format!(
        "SELECT bucket, host, dim, key, {}, delay, samples FROM {table} {}",
        counter_columns(),
        c.where_clause()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(c.params.iter()))?;
    let mut cell = exim_pilot_schema::report::Cell::default();
    while let Some(row) = rows.next()? {
        let bucket = row.get_ref(0)?.as_i64().map_err(codec::bad_cell)?;
        let host = row.get_ref(1)?.as_str().map_err(codec::bad_cell)?;
        let code = row.get_ref(2)?.as_i64().map_err(codec::bad_cell)?;
        let key = row.get_ref(3)?.as_str().map_err(codec::bad_cell)?;
        let Some(dim) = Dimension::from_code(code) else {
            // A dimension from a newer version: not ours to count.
            continue;
        };
        codec::read_cell(row, 4, &mut cell)?;
        sink(bucket, host, dim, key, &cell);
    }
    Ok(())
}

/// Sums the rollup cells of a report's range: day cells for the whole
/// days inside it, hour cells for the hours at its edges, and hour cells of
/// the totals for the hourly series.
pub fn rollup(conn: &Connection, options: &ReportOptions) -> Result<Rollup> {
    let host = options.host.as_deref();
    let mut rollup = Rollup::new();
    for read in rollup_reads(options) {
        let table = rollup_table(read.bucket);
        read_cells(
            conn,
            table,
            read.range,
            host,
            read.dims(),
            |b, h, dim, k, cell| read.add_to(&mut rollup, b, h, dim, k, cell),
        )?;
    }
    Ok(rollup)
}

fn rollup_table(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Hour => "rollup_hour",
        Bucket::Day | Bucket::Range => "rollup_day",
    }
}

/// The report over a range. Without a domain filter it comes from the
/// rollup cells alone. With one it is built from the lifecycles with an
/// address in that domain (found through the recipients index) and the
/// rejections of recipients in it, so its cost grows with that domain's
/// traffic in the range.
pub fn report(conn: &Connection, options: &ReportOptions) -> Result<Report> {
    let Some(domain) = options.domain_filter() else {
        return Ok(Report::from_rollup(&rollup(conn, options)?, options));
    };
    let (h0, h1) = hour_bounds(options);
    let (lo, hi) = (h0.saturating_mul(HOUR_MS), h1.saturating_mul(HOUR_MS));
    let mut builder = ReportBuilder::new(options.clone());

    let mut stmt = conn.prepare_cached(
        "SELECT body FROM lifecycles WHERE rowid IN
             (SELECT lc FROM recipients WHERE domain = ?1 AND cohort_ms >= ?2
                  AND cohort_ms < ?3)",
    )?;
    let mut rows = stmt.query(params![domain, lo, hi])?;
    while let Some(row) = rows.next()? {
        builder.add_lifecycle(&codec::decode_lifecycle(&row.get::<_, Vec<u8>>(0)?)?);
    }
    let sql = format!(
        "{REJECT_COLUMNS} FROM rejects WHERE recipient_domain = ?1 AND at_ms >= ?2 AND at_ms < ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![domain, lo, hi])?;
    while let Some(row) = rows.next()? {
        builder.add_reject(&reject_from_row(row)?);
    }
    Ok(builder.finish())
}

/// Raw rollup cells.
pub fn cells(conn: &Connection, q: &CellQuery) -> Result<ReportCells> {
    let (table, bounds) = (rollup_table(q.bucket), cell_query_range(q));
    let whole = range_key(q, bounds);
    let mut out = ReportCells::new();
    read_cells(
        conn,
        table,
        bounds,
        q.host.as_deref(),
        &q.dims,
        |b, h, dim, k, cell| {
            let key = CellKey {
                hour: whole.unwrap_or(b),
                host: h.to_string(),
                dim,
                key: k.to_string(),
            };
            out.add_cell(key, cell);
        },
    )?;
    Ok(out)
}

/// The final addresses of a range's messages, most messages first.
///
/// The messages come from the cohort index of `lifecycles` (or, for one
/// domain, from the recipients' domain index), their addresses from
/// `recipients` by its key, and each address's attempts from `attempts`
/// by its key; so the cost grows with the messages in the range (or the
/// domain's), whatever the size of the store.
pub fn top_recipients(conn: &Connection, q: &RecipientQuery) -> Result<Vec<RecipientCount>> {
    let mut c = Conditions::default();
    if let Some(t) = q.since {
        c.push(
            "l.cohort_ms >= ? AND r.cohort_ms >= ?",
            [Value::Integer(ms(t)), Value::Integer(ms(t))],
        );
    }
    if let Some(t) = q.until {
        c.push(
            "l.cohort_ms < ? AND r.cohort_ms < ?",
            [Value::Integer(ms(t)), Value::Integer(ms(t))],
        );
    }
    if let Some(h) = &q.host {
        c.push("l.host = ?", [text(h)]);
    }
    if let Some(d) = q.domain_key() {
        c.push("r.domain = ?", [Value::Text(d)]);
    }
    let sql = format!(
        "SELECT r.address, count(DISTINCT r.lc),
             sum(r.outcome = 'delivered'),
             sum(r.outcome = 'deferred' OR EXISTS (SELECT 1 FROM attempts a
                 WHERE a.lc = r.lc AND a.rcpt = r.idx AND a.result = 'defer')),
             sum(r.outcome = 'deferred'),
             sum(r.outcome = 'bounced'),
             max((SELECT max(a.at_ms) FROM attempts a WHERE a.lc = r.lc AND a.rcpt = r.idx))
         FROM lifecycles l JOIN recipients r ON r.lc = l.rowid {}
         GROUP BY r.address
         ORDER BY 2 DESC, r.address
         LIMIT {}",
        c.where_clause(),
        q.limit()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(c.params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(RecipientCount {
            address: row.get(0)?,
            messages: row.get(1)?,
            delivered: row.get(2)?,
            deferred: row.get(3)?,
            still_deferred: row.get(4)?,
            bounced: row.get(5)?,
            last_attempt_at: row.get::<_, Option<i64>>(6)?.map(from_ms),
        });
    }
    Ok(out)
}

/// Full-text search over raw lines.
pub fn search_lines(conn: &Connection, q: &LineQuery) -> Result<Vec<StoredRecord>> {
    let mut c = Conditions::default();
    c.push("raw_fts MATCH ?", [text(&codec::fts_query(&q.text)?)]);
    if let Some(h) = &q.host {
        c.push("r.host = ?", [text(h)]);
    }
    if let Some(log) = q.log {
        c.push("r.log = ?", [text(log.as_str())]);
    }
    if let Some(t) = q.since {
        c.push("r.at_ms >= ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = q.until {
        c.push("r.at_ms < ?", [Value::Integer(ms(t))]);
    }
    let limit = match q.limit {
        0 => 100,
        n => n.min(MAX_PAGE),
    };
    let sql = format!(
        "{RECORD_COLUMNS} FROM raw_fts JOIN raw_records r ON r.rowid = raw_fts.rowid {}
         ORDER BY raw_fts.rowid DESC LIMIT {limit}",
        c.where_clause()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(c.params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(record_from_row(row)?);
    }
    Ok(out)
}

/// Every host, by name.
pub fn hosts(conn: &Connection) -> Result<Vec<HostSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT host, first_ms, last_ms, last_read_ms, records, messages, rejects
         FROM hosts ORDER BY host",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(HostSummary {
            host: row.get(0)?,
            first_seen: row.get::<_, Option<i64>>(1)?.map(from_ms),
            last_seen: row.get::<_, Option<i64>>(2)?.map(from_ms),
            last_read_at_ms: row.get(3)?,
            records: row.get(4)?,
            messages: row.get(5)?,
            rejects: row.get(6)?,
        });
    }
    Ok(out)
}
