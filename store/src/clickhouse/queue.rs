//! Queues in ClickHouse: snapshots, current queues, history and jobs (see
//! [`crate::queue`] for what is kept).
//!
//! # Current queues without deletes
//!
//! ClickHouse cannot cheaply delete the rows of a host's previous queue,
//! so every snapshot writes a row per message into `queue_messages`,
//! keyed by (host, message id) with the snapshot's time as version: merges
//! keep one row per message and day. The snapshot's totals row goes to
//! `queue_snapshots` after its messages, and marks it complete. A host's
//! current queue is, for each message, its newest row taken at or after
//! the host's latest complete snapshot: a message that left the queue
//! keeps only older rows and drops out; a snapshot that arrived late
//! writes older rows that lose to the newer ones. While a newer snapshot
//! is half written, a read sees the union of both queues, never less.
//!
//! Results are kept by (job, message) with their finishing time as
//! version and read newest first, one per key (`LIMIT 1 BY`), since a
//! result saved again on another day lands in another partition, where
//! `FINAL` does not look.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use exim_pilot_schema::queue::{
    QueueActionResult, QueueJob, QueueSnapshot, QueueTotals, QueuedMessage,
};
use exim_pilot_schema::MessageId;

use super::read::{text, Conditions, Value};
use super::rows::{columns, day_of_ms, decode_lifecycle, from_ms, ms};
use super::Db;
use crate::cursor::{cursor_number, decode_cursor, encode_cursor};
use crate::error::{Result, StoreError};
use crate::queue::{
    age_key, growth, Count, LastDeferral, QueueEntry, QueueFilter, QueueHealth, QueueHistoryQuery,
    QueueJobCounts, QueueJobFilter, QueueJobSummary, QueuePoint, RecipientScope, HOUR,
};
use crate::types::{Page, PageRequest, MAX_PAGE};

/// Keys asked for in one `IN (...)` list.
const LOOKUP_CHUNK: usize = 500;

/// The totals of one snapshot.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct SnapshotRow {
    host: String,
    taken_ms: i64,
    day: u16,
    messages: u64,
    frozen: u64,
    bounces: u64,
    spool_errors: u64,
    undelivered: u64,
    bytes: u64,
    oldest_age: Option<u64>,
}

impl SnapshotRow {
    fn totals(&self) -> QueueTotals {
        QueueTotals {
            messages: self.messages,
            frozen: self.frozen,
            bounces: self.bounces,
            spool_errors: self.spool_errors,
            undelivered_recipients: self.undelivered,
            bytes: self.bytes,
            oldest_age_secs: self.oldest_age,
        }
    }
}

/// One message of one snapshot.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct MessageRow {
    host: String,
    id: String,
    taken_ms: i64,
    version: u64,
    day: u16,
    age_key: i64,
    age: Option<u64>,
    size: Option<u64>,
    sender: String,
    frozen: u8,
    addresses: Vec<String>,
    delivered: Vec<u8>,
    body: String,
}

impl MessageRow {
    fn new(host: &str, taken_ms: i64, m: &QueuedMessage) -> Result<MessageRow> {
        Ok(MessageRow {
            host: host.to_string(),
            id: m.id.to_string(),
            taken_ms,
            version: taken_ms.max(0) as u64,
            day: day_of_ms(taken_ms),
            age_key: age_key(m),
            age: m.age_secs,
            size: m.size,
            sender: m.sender.clone(),
            frozen: u8::from(m.frozen),
            addresses: m
                .recipients
                .iter()
                .map(|r| r.address.to_ascii_lowercase())
                .collect(),
            delivered: m.recipients.iter().map(|r| u8::from(r.delivered)).collect(),
            body: serde_json::to_string(m).map_err(|e| StoreError::corrupt("queued message", e))?,
        })
    }
}

/// A job.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct JobRow {
    job_id: String,
    day: u16,
    host: String,
    action: String,
    ids: Vec<String>,
    actor: String,
    reason: Option<String>,
    requested_ms: i64,
    expires_ms: i64,
}

impl JobRow {
    fn new(job: &QueueJob) -> JobRow {
        JobRow {
            job_id: job.job_id.clone(),
            day: day_of_ms(ms(job.requested_at)),
            host: job.host.clone(),
            action: job.action.as_str().to_string(),
            ids: job.ids.iter().map(MessageId::to_string).collect(),
            actor: job.actor.clone(),
            reason: job.reason.clone(),
            requested_ms: ms(job.requested_at),
            expires_ms: ms(job.expires_at),
        }
    }

    fn into_job(self) -> Result<QueueJob> {
        Ok(QueueJob {
            action: self
                .action
                .parse()
                .map_err(|e| StoreError::corrupt("queue job", e))?,
            ids: self
                .ids
                .iter()
                .map(|s| s.parse::<MessageId>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| StoreError::corrupt("queue job", e))?,
            job_id: self.job_id,
            host: self.host,
            actor: self.actor,
            reason: self.reason,
            requested_at: from_ms(self.requested_ms),
            expires_at: from_ms(self.expires_ms),
        })
    }
}

/// The result of a job on one message.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct ResultRow {
    job_id: String,
    id: String,
    day: u16,
    version: u64,
    host: String,
    action: String,
    status: String,
    exit_code: Option<i32>,
    output: String,
    finished_ms: i64,
}

impl ResultRow {
    fn new(r: &QueueActionResult) -> ResultRow {
        let finished = ms(r.finished_at);
        ResultRow {
            job_id: r.job_id.clone(),
            id: r.id.to_string(),
            day: day_of_ms(finished),
            version: finished.max(0) as u64,
            host: r.host.clone(),
            action: r.action.as_str().to_string(),
            status: r.status.as_str().to_string(),
            exit_code: r.exit_code,
            output: r.output.clone(),
            finished_ms: finished,
        }
    }

    fn into_result(self) -> Result<QueueActionResult> {
        let status = serde_json::Value::String(self.status);
        Ok(QueueActionResult {
            job_id: self.job_id,
            host: self.host,
            id: self
                .id
                .parse()
                .map_err(|e| StoreError::corrupt("queue result", e))?,
            action: self
                .action
                .parse()
                .map_err(|e| StoreError::corrupt("queue result", e))?,
            status: serde_json::from_value(status)
                .map_err(|e| StoreError::corrupt("queue result", e))?,
            exit_code: self.exit_code,
            output: self.output,
            finished_at: from_ms(self.finished_ms),
        })
    }
}

/// Keeps a snapshot: its messages, then its totals (which mark it
/// complete).
pub async fn save_snapshot(db: &Db, snapshot: &QueueSnapshot) -> Result<()> {
    let taken = ms(snapshot.taken_at);
    let messages = snapshot
        .messages
        .iter()
        .map(|m| MessageRow::new(&snapshot.host, taken, m))
        .collect::<Result<Vec<_>>>()?;
    db.insert("queue_messages", &messages, "store a queue's messages")
        .await?;
    let t = snapshot.totals();
    let row = SnapshotRow {
        host: snapshot.host.clone(),
        taken_ms: taken,
        day: day_of_ms(taken),
        messages: t.messages,
        frozen: t.frozen,
        bounces: t.bounces,
        spool_errors: t.spool_errors,
        undelivered: t.undelivered_recipients,
        bytes: t.bytes,
        oldest_age: t.oldest_age_secs,
    };
    db.insert("queue_snapshots", &[row], "store a queue snapshot")
        .await
}

/// The time of each host's latest snapshot (only `host`'s when given).
async fn latest(db: &Db, host: Option<&str>) -> Result<Vec<(String, i64)>> {
    let mut c = Conditions::default();
    if let Some(h) = host {
        c.push("host = ?", [text(h)]);
    }
    let sql = format!(
        "SELECT host, max(taken_ms) FROM queue_snapshots {} GROUP BY host ORDER BY host",
        c.where_clause()
    );
    db.fetch(c.bind(db.query(&sql)), "read the latest queue snapshots")
        .await
}

/// The conditions of a queue filter on the current rows.
fn conditions(f: &QueueFilter, c: &mut Conditions) {
    if let Some(s) = f.sender_needle() {
        c.push("position(lower(sender), ?) > 0", [Value::Text(s)]);
    }
    if let Some(r) = f.recipient_needle() {
        let sql = match f.recipient_scope {
            RecipientScope::Undelivered => {
                "arrayExists((a, d) -> d = 0 AND position(a, ?) > 0, addresses, delivered)"
            }
            RecipientScope::Delivered => {
                "arrayExists((a, d) -> d = 1 AND position(a, ?) > 0, addresses, delivered)"
            }
            RecipientScope::Any => "arrayExists(a -> position(a, ?) > 0, addresses)",
        };
        c.push(sql, [Value::Text(r)]);
    }
    if !f.ids.is_empty() {
        let marks = vec!["?"; f.ids.len()].join(", ");
        c.push(
            &format!("id IN ({marks})"),
            f.ids.iter().map(|id| Value::Text(id.to_string())),
        );
    }
    for (bound, sql) in [
        (f.min_age_secs, "ifNull(age >= ?, 0)"),
        (f.max_age_secs, "ifNull(age <= ?, 0)"),
        (f.min_size, "ifNull(size >= ?, 0)"),
        (f.max_size, "ifNull(size <= ?, 0)"),
    ] {
        if let Some(n) = bound {
            c.push(sql, [Value::Int(n.min(i64::MAX as u64) as i64)]);
        }
    }
    if let Some(frozen) = f.frozen {
        c.push("frozen = ?", [Value::Int(i64::from(frozen))]);
    }
    match f.bounce {
        Some(true) => c.push("sender = ''", []),
        Some(false) => c.push("sender != ''", []),
        None => {}
    }
}

/// The current rows of the hosts in `latest`: a subquery, and its values.
fn current_rows(latest: &[(String, i64)], c: &mut Conditions) -> String {
    let hosts = vec!["(host = ? AND taken_ms >= ?)"; latest.len()].join(" OR ");
    for (host, taken) in latest {
        c.values.push(text(host));
        c.values.push(Value::Int(*taken));
    }
    format!(
        "SELECT host, id, taken_ms, age_key, age, size, sender, frozen, addresses,
             delivered, body
         FROM queue_messages FINAL WHERE {hosts}
         ORDER BY taken_ms DESC LIMIT 1 BY host, id"
    )
}

/// Messages of the current queues matching a filter, a page at a time.
pub async fn messages(db: &Db, f: &QueueFilter, page: &PageRequest) -> Result<Page<QueueEntry>> {
    let latest = latest(db, f.host.as_deref()).await?;
    if latest.is_empty() {
        return Ok(Page {
            items: Vec::new(),
            end_cursor: None,
            has_next_page: false,
        });
    }
    let mut c = Conditions::default();
    let rows = current_rows(&latest, &mut c);
    conditions(f, &mut c);
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 3)?;
        let age = cursor_number(cursor, &parts[0])?;
        c.push(
            "(age_key < ? OR (age_key = ? AND (host, id) > (?, ?)))",
            [
                Value::Int(age),
                Value::Int(age),
                text(&parts[1]),
                text(&parts[2]),
            ],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT host, id, taken_ms, age_key, body FROM ({rows}) {}
         ORDER BY age_key DESC, host, id LIMIT {}",
        c.where_clause(),
        first + 1
    );
    let found: Vec<(String, String, i64, i64, String)> = db
        .fetch(c.bind(db.query(&sql)), "search the current queues")
        .await?;
    let has_next_page = found.len() > first;
    let mut items = Vec::with_capacity(first);
    let mut last = None;
    for (host, id, taken, age, body) in found.into_iter().take(first) {
        let message: QueuedMessage =
            serde_json::from_str(&body).map_err(|e| StoreError::corrupt("queued message", e))?;
        items.push(QueueEntry {
            host: host.clone(),
            snapshot_at: from_ms(taken),
            message,
            last_deferral: None,
        });
        last = Some((age, host, id));
    }
    add_last_deferrals(db, &mut items).await?;
    Ok(Page {
        items,
        end_cursor: last.map(|(age, h, id)| encode_cursor(&[&age.to_string(), &h, &id])),
        has_next_page,
    })
}

/// Fills in each entry's latest deferral from its lifecycle.
async fn add_last_deferrals(db: &Db, items: &mut [QueueEntry]) -> Result<()> {
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in items.iter() {
        by_host
            .entry(e.host.clone())
            .or_default()
            .push(e.message.id.to_string());
    }
    let mut found: HashMap<(String, String), LastDeferral> = HashMap::new();
    for (host, ids) in by_host {
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT body FROM lifecycles FINAL WHERE host = ? AND id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = db.query(&sql).bind(host.as_str());
            for id in chunk {
                q = q.bind(id.as_str());
            }
            let bodies: Vec<String> = db.fetch(q, "read queued messages' lifecycles").await?;
            for body in bodies {
                let lc = decode_lifecycle(&body)?;
                if let Some(d) = LastDeferral::of(&lc) {
                    found.insert((lc.host.clone(), lc.id.to_string()), d);
                }
            }
        }
    }
    for e in items {
        e.last_deferral = found.remove(&(e.host.clone(), e.message.id.to_string()));
    }
    Ok(())
}

const SNAPSHOT_COLUMNS: &str =
    "host, taken_ms, day, messages, frozen, bounces, spool_errors, undelivered, bytes, oldest_age";

/// Each host's queue health, from its latest snapshot.
pub async fn health(db: &Db, host: Option<&str>) -> Result<Vec<QueueHealth>> {
    let mut c = Conditions::default();
    if let Some(h) = host {
        c.push("host = ?", [text(h)]);
    }
    let sql = format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM queue_snapshots FINAL {}
         ORDER BY host, taken_ms DESC LIMIT 1 BY host",
        c.where_clause()
    );
    let rows: Vec<SnapshotRow> = db
        .fetch(c.bind(db.query(&sql)), "read the latest queue snapshots")
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let now = Count {
            taken_ms: row.taken_ms,
            messages: row.messages,
        };
        let (before, after) = around_an_hour_before(db, &row.host, row.taken_ms).await?;
        out.push(QueueHealth {
            deferred: deferred(db, &row.host, row.taken_ms).await?,
            growth_last_hour: growth(now, before, after),
            snapshot_at: from_ms(row.taken_ms),
            totals: row.totals(),
            host: row.host,
        });
    }
    Ok(out)
}

/// The snapshots of `host` on either side of an hour before `taken`.
async fn around_an_hour_before(
    db: &Db,
    host: &str,
    taken: i64,
) -> Result<(Option<Count>, Option<Count>)> {
    let mark = taken - HOUR.num_milliseconds();
    let q = db
        .query(
            "SELECT taken_ms, messages FROM queue_snapshots
             WHERE host = ? AND taken_ms <= ? ORDER BY taken_ms DESC LIMIT 1",
        )
        .bind(host)
        .bind(mark);
    let before: Vec<(i64, u64)> = db.fetch(q, "read the queue an hour before").await?;
    let q = db
        .query(
            "SELECT taken_ms, messages FROM queue_snapshots
             WHERE host = ? AND taken_ms > ? AND taken_ms < ? ORDER BY taken_ms LIMIT 1",
        )
        .bind(host)
        .bind(mark)
        .bind(taken);
    let after: Vec<(i64, u64)> = db.fetch(q, "read the queue an hour before").await?;
    let count = |(taken_ms, messages): (i64, u64)| Count { taken_ms, messages };
    Ok((
        before.into_iter().next().map(count),
        after.into_iter().next().map(count),
    ))
}

/// Messages of `host`'s current queue whose lifecycle has a deferral.
/// Attempts are read without `FINAL`: a deferral, once logged, stays in
/// every later version of its lifecycle, so any version showing one
/// tells the truth.
async fn deferred(db: &Db, host: &str, taken: i64) -> Result<u64> {
    let q = db
        .query(
            "SELECT toUInt64(uniqExact(id)) FROM attempts
             WHERE host = ? AND result = 'defer' AND id IN
                 (SELECT id FROM queue_messages WHERE host = ? AND taken_ms >= ?)",
        )
        .bind(host)
        .bind(host)
        .bind(taken);
    let n: Vec<u64> = db.fetch(q, "count deferred queued messages").await?;
    Ok(n.first().copied().unwrap_or(0))
}

/// A point of the queue history as a query returns it.
#[derive(clickhouse::Row, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct PointRow {
    host: String,
    at_ms: i64,
    messages: u64,
    frozen: u64,
    bounces: u64,
    spool_errors: u64,
    undelivered: u64,
    bytes: u64,
    oldest_age: Option<u64>,
}

/// Queue totals over a range, oldest first.
pub async fn history(db: &Db, q: &QueueHistoryQuery) -> Result<Vec<QueuePoint>> {
    let mut c = Conditions::default();
    if let Some(h) = &q.host {
        c.push("host = ?", [text(h)]);
    }
    if let Some(t) = q.since {
        c.push("taken_ms >= ?", [Value::Int(ms(t))]);
    }
    if let Some(t) = q.until {
        c.push("taken_ms < ?", [Value::Int(ms(t))]);
    }
    let b = q.bucket_ms();
    let sql = format!(
        "SELECT host, intDiv(taken_ms, {b}) * {b} AS t, max(messages) AS m_messages,
             max(frozen) AS m_frozen, max(bounces) AS m_bounces,
             max(spool_errors) AS m_spool_errors, max(undelivered) AS m_undelivered,
             max(bytes) AS m_bytes, max(oldest_age) AS m_oldest_age
         FROM queue_snapshots FINAL {}
         GROUP BY host, t ORDER BY t DESC, host DESC LIMIT {}",
        c.where_clause(),
        q.points()
    );
    let rows: Vec<PointRow> = db
        .fetch(c.bind(db.query(&sql)), "read the queue history")
        .await?;
    let mut out: Vec<QueuePoint> = rows
        .into_iter()
        .map(|r| QueuePoint {
            at: from_ms(r.at_ms),
            totals: QueueTotals {
                messages: r.messages,
                frozen: r.frozen,
                bounces: r.bounces,
                spool_errors: r.spool_errors,
                undelivered_recipients: r.undelivered,
                bytes: r.bytes,
                oldest_age_secs: r.oldest_age,
            },
            host: r.host,
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Saves a job.
pub async fn save_job(db: &Db, job: &QueueJob) -> Result<()> {
    db.insert("queue_jobs", &[JobRow::new(job)], "save a queue job")
        .await
}

/// Saves results.
pub async fn save_results(db: &Db, results: &[QueueActionResult]) -> Result<()> {
    let rows: Vec<ResultRow> = results.iter().map(ResultRow::new).collect();
    db.insert("queue_results", &rows, "save queue job results")
        .await
}

/// The newest result of each (job, message) of these jobs.
fn newest_results(jobs: usize) -> String {
    format!(
        "SELECT {} FROM queue_results FINAL WHERE job_id IN ({})
         ORDER BY job_id, id, version DESC LIMIT 1 BY job_id, id",
        columns::<ResultRow>(),
        vec!["?"; jobs].join(", ")
    )
}

/// One job and its results.
pub async fn job(db: &Db, job_id: &str) -> Result<Option<(QueueJob, Vec<QueueActionResult>)>> {
    let sql = format!(
        "SELECT {} FROM queue_jobs FINAL WHERE job_id = ?",
        columns::<JobRow>()
    );
    let rows: Vec<JobRow> = db
        .fetch(db.query(&sql).bind(job_id), "read a queue job")
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let q = db.query(&newest_results(1)).bind(job_id);
    let rows: Vec<ResultRow> = db.fetch(q, "read a queue job's results").await?;
    let mut results = rows
        .into_iter()
        .map(ResultRow::into_result)
        .collect::<Result<Vec<_>>>()?;
    results.sort_by(|a, b| (a.finished_at, a.id.as_str()).cmp(&(b.finished_at, b.id.as_str())));
    Ok(Some((row.into_job()?, results)))
}

/// Jobs matching a filter, newest first, with their result counts.
pub async fn jobs(
    db: &Db,
    f: &QueueJobFilter,
    page: &PageRequest,
) -> Result<Page<QueueJobSummary>> {
    let mut c = Conditions::default();
    if let Some(h) = &f.host {
        c.push("host = ?", [text(h)]);
    }
    if let Some(a) = &f.actor {
        c.push("actor = ?", [text(a)]);
    }
    if let Some(a) = f.action {
        c.push("action = ?", [text(a.as_str())]);
    }
    if let Some(t) = f.since {
        c.push("requested_ms >= ?", [Value::Int(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("requested_ms < ?", [Value::Int(ms(t))]);
    }
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 2)?;
        let t = cursor_number(cursor, &parts[0])?;
        c.push(
            "(requested_ms, job_id) < (?, ?)",
            [Value::Int(t), text(&parts[1])],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT {} FROM queue_jobs FINAL {} ORDER BY requested_ms DESC, job_id DESC LIMIT {}",
        columns::<JobRow>(),
        c.where_clause(),
        first + 1
    );
    let rows: Vec<JobRow> = db.fetch(c.bind(db.query(&sql)), "list queue jobs").await?;
    let has_next_page = rows.len() > first;
    let jobs = rows
        .into_iter()
        .take(first)
        .map(JobRow::into_job)
        .collect::<Result<Vec<_>>>()?;
    let end_cursor = jobs
        .last()
        .map(|j| encode_cursor(&[&ms(j.requested_at).to_string(), &j.job_id]));
    let mut counts = counts(db, &jobs).await?;
    let items = jobs
        .into_iter()
        .map(|job| QueueJobSummary {
            counts: counts.remove(&job.job_id).unwrap_or_default(),
            job,
        })
        .collect();
    Ok(Page {
        items,
        end_cursor,
        has_next_page,
    })
}

/// The result counts of some jobs.
async fn counts(db: &Db, jobs: &[QueueJob]) -> Result<HashMap<String, QueueJobCounts>> {
    let mut out: HashMap<String, QueueJobCounts> = HashMap::new();
    for chunk in jobs.chunks(LOOKUP_CHUNK) {
        let sql = format!(
            "SELECT job_id, status, toUInt64(count()) FROM ({}) GROUP BY job_id, status",
            newest_results(chunk.len())
        );
        let mut q = db.query(&sql);
        for job in chunk {
            q = q.bind(job.job_id.as_str());
        }
        let rows: Vec<(String, String, u64)> = db.fetch(q, "count queue job results").await?;
        for (job_id, status, n) in rows {
            out.entry(job_id).or_default().add(&status, n);
        }
    }
    Ok(out)
}
