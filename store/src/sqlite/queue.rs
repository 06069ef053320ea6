//! Queues: snapshots, the current queue of each host, queue history and
//! operators' queue jobs (see [`crate::queue`] for what is kept).
//!
//! A snapshot is one transaction: its totals go into `queue_snapshots`,
//! and when it is not older than the host's current one its messages
//! replace the host's rows of `queue_messages` and `queue_recipients`.
//!
//! Measured with `benches/queue.rs` on the project's 2-core machine, a
//! queue of 10,000 messages with two recipients each: saving a snapshot
//! takes about 75 ms (all its rows are rewritten, so a node should not
//! send one more often than every few seconds), the first page of the
//! queue 0.3 ms, a page of a recipient search 15 ms (a scan of the
//! recipients), the queue's health 5 ms.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use exim_pilot_schema::queue::{
    QueueActionResult, QueueJob, QueueSnapshot, QueueTotals, QueuedMessage,
};
use exim_pilot_schema::MessageId;

use super::codec::{from_ms, ms, parse_enum};
use super::read::{self, text, Conditions};
use crate::cursor::{cursor_number, decode_cursor, encode_cursor};
use crate::error::{Result, StoreError};
use crate::queue::{
    age_key, growth, Count, LastDeferral, QueueEntry, QueueFilter, QueueHealth, QueueHistoryQuery,
    QueueJobCounts, QueueJobFilter, QueueJobSummary, QueuePoint, RecipientScope, HOUR,
};
use crate::types::{Page, PageRequest, MAX_PAGE};

fn int(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

fn json<T: serde::Serialize>(what: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::corrupt(what, e))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(what, e))
}

/// Keeps a snapshot's totals, and its messages when it is the host's
/// newest.
pub fn save_snapshot(conn: &mut Connection, snapshot: &QueueSnapshot) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (host, taken) = (&snapshot.host, ms(snapshot.taken_at));
    let t = snapshot.totals();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO queue_snapshots (host, taken_ms, messages, frozen, bounces,
             spool_errors, undelivered, bytes, oldest_age)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        host,
        taken,
        int(t.messages),
        int(t.frozen),
        int(t.bounces),
        int(t.spool_errors),
        int(t.undelivered_recipients),
        int(t.bytes),
        t.oldest_age_secs.map(int)
    ])?;

    // A snapshot that arrived after a newer one is history only.
    let current: Option<i64> = tx
        .prepare_cached("SELECT taken_ms FROM queue_current WHERE host = ?1")?
        .query_row([host], |r| r.get(0))
        .optional()?;
    if current.is_some_and(|c| c > taken) {
        tx.commit()?;
        return Ok(());
    }

    for sql in [
        "DELETE FROM queue_messages WHERE host = ?1",
        "DELETE FROM queue_recipients WHERE host = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([host])?;
    }
    for message in &snapshot.messages {
        insert_message(&tx, host, message)?;
    }
    tx.prepare_cached("INSERT OR REPLACE INTO queue_current (host, taken_ms) VALUES (?1, ?2)")?
        .execute(params![host, taken])?;
    tx.commit()?;
    Ok(())
}

fn insert_message(conn: &Connection, host: &str, m: &QueuedMessage) -> Result<()> {
    let id = m.id.to_string();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO queue_messages (host, id, age_key, age, size, sender, frozen, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        host,
        id,
        age_key(m),
        m.age_secs.map(int),
        m.size.map(int),
        m.sender,
        m.frozen,
        json("queued message", m)?
    ])?;
    for (i, r) in m.recipients.iter().enumerate() {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO queue_recipients (host, id, idx, address, delivered)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            host,
            id,
            i as i64,
            r.address.to_ascii_lowercase(),
            r.delivered
        ])?;
    }
    Ok(())
}

/// The conditions of a queue filter on `queue_messages q`.
fn conditions(f: &QueueFilter) -> Conditions {
    let mut c = Conditions::default();
    if let Some(h) = &f.host {
        c.push("q.host = ?", [text(h)]);
    }
    if let Some(s) = f.sender_needle() {
        c.push("instr(lower(q.sender), ?) > 0", [Value::Text(s)]);
    }
    if let Some(r) = f.recipient_needle() {
        let scope = match f.recipient_scope {
            RecipientScope::Undelivered => " AND r.delivered = 0",
            RecipientScope::Delivered => " AND r.delivered = 1",
            RecipientScope::Any => "",
        };
        c.push(
            &format!(
                "EXISTS (SELECT 1 FROM queue_recipients r WHERE r.host = q.host
                     AND r.id = q.id{scope} AND instr(r.address, ?) > 0)"
            ),
            [Value::Text(r)],
        );
    }
    if !f.ids.is_empty() {
        let marks = vec!["?"; f.ids.len()].join(", ");
        c.push(
            &format!("q.id IN ({marks})"),
            f.ids.iter().map(|id| Value::Text(id.to_string())),
        );
    }
    for (bound, sql) in [
        (f.min_age_secs, "q.age >= ?"),
        (f.max_age_secs, "q.age <= ?"),
        (f.min_size, "q.size >= ?"),
        (f.max_size, "q.size <= ?"),
    ] {
        if let Some(n) = bound {
            c.push(sql, [Value::Integer(int(n))]);
        }
    }
    if let Some(frozen) = f.frozen {
        c.push("q.frozen = ?", [Value::Integer(i64::from(frozen))]);
    }
    match f.bounce {
        Some(true) => c.push("q.sender = ''", []),
        Some(false) => c.push("q.sender <> ''", []),
        None => {}
    }
    c
}

/// Messages of the current queues matching a filter, a page at a time.
pub fn messages(
    conn: &Connection,
    f: &QueueFilter,
    page: &PageRequest,
) -> Result<Page<QueueEntry>> {
    let mut c = conditions(f);
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 3)?;
        let age = cursor_number(cursor, &parts[0])?;
        c.push(
            "(q.age_key < ? OR (q.age_key = ? AND (q.host, q.id) > (?, ?)))",
            [
                Value::Integer(age),
                Value::Integer(age),
                text(&parts[1]),
                text(&parts[2]),
            ],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT q.host, q.id, q.age_key, c.taken_ms, q.body
         FROM queue_messages q JOIN queue_current c ON c.host = q.host {}
         ORDER BY q.age_key DESC, q.host, q.id LIMIT {}",
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
        let (host, id, age): (String, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let message: QueuedMessage = from_json("queued message", &row.get::<_, String>(4)?)?;
        let last_deferral = read::lifecycle(conn, &host, message.id)?
            .as_ref()
            .and_then(LastDeferral::of);
        items.push(QueueEntry {
            host: host.clone(),
            snapshot_at: from_ms(row.get(3)?),
            message,
            last_deferral,
        });
        last = Some((age, host, id));
    }
    Ok(Page {
        items,
        end_cursor: last.map(|(age, h, id)| encode_cursor(&[&age.to_string(), &h, &id])),
        has_next_page,
    })
}

/// The columns [`totals_from_row`] reads, from the column named `first`.
const TOTALS: &str = "messages, frozen, bounces, spool_errors, undelivered, bytes, oldest_age";

fn totals_from_row(row: &rusqlite::Row<'_>, first: usize) -> Result<QueueTotals> {
    let n = |i: usize| -> Result<u64> { Ok(row.get::<_, i64>(first + i)?.max(0) as u64) };
    Ok(QueueTotals {
        messages: n(0)?,
        frozen: n(1)?,
        bounces: n(2)?,
        spool_errors: n(3)?,
        undelivered_recipients: n(4)?,
        bytes: n(5)?,
        oldest_age_secs: row
            .get::<_, Option<i64>>(first + 6)?
            .map(|a| a.max(0) as u64),
    })
}

/// Each host's queue health, from its current snapshot.
pub fn health(conn: &Connection, host: Option<&str>) -> Result<Vec<QueueHealth>> {
    let sql = format!(
        "SELECT c.host, c.taken_ms, {TOTALS} FROM queue_current c
         JOIN queue_snapshots s ON s.host = c.host AND s.taken_ms = c.taken_ms
         WHERE ?1 IS NULL OR c.host = ?1 ORDER BY c.host"
    );
    let mut latest = Vec::new();
    {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([host])?;
        while let Some(row) = rows.next()? {
            let (host, taken): (String, i64) = (row.get(0)?, row.get(1)?);
            latest.push((host, taken, totals_from_row(row, 2)?));
        }
    }
    latest
        .into_iter()
        .map(|(host, taken, totals)| {
            let now = Count {
                taken_ms: taken,
                messages: totals.messages,
            };
            let (before, after) = around_an_hour_before(conn, &host, taken)?;
            Ok(QueueHealth {
                deferred: deferred(conn, &host)?,
                growth_last_hour: growth(now, before, after),
                snapshot_at: from_ms(taken),
                host,
                totals,
            })
        })
        .collect()
}

/// The snapshots of `host` on either side of an hour before `taken`.
fn around_an_hour_before(
    conn: &Connection,
    host: &str,
    taken: i64,
) -> Result<(Option<Count>, Option<Count>)> {
    let mark = taken - HOUR.num_milliseconds();
    let count = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Count> {
        Ok(Count {
            taken_ms: r.get(0)?,
            messages: r.get::<_, i64>(1)?.max(0) as u64,
        })
    };
    let before = conn
        .prepare_cached(
            "SELECT taken_ms, messages FROM queue_snapshots WHERE host = ?1 AND taken_ms <= ?2
             ORDER BY taken_ms DESC LIMIT 1",
        )?
        .query_row(params![host, mark], count)
        .optional()?;
    let after = conn
        .prepare_cached(
            "SELECT taken_ms, messages FROM queue_snapshots WHERE host = ?1 AND taken_ms > ?2
             AND taken_ms < ?3 ORDER BY taken_ms LIMIT 1",
        )?
        .query_row(params![host, mark, taken], count)
        .optional()?;
    Ok((before, after))
}

/// Messages of `host`'s current queue whose lifecycle has a deferral.
fn deferred(conn: &Connection, host: &str) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM queue_messages q WHERE q.host = ?1 AND EXISTS
                 (SELECT 1 FROM lifecycles l JOIN attempts a ON a.lc = l.rowid
                  WHERE l.host = q.host AND l.id = q.id AND a.result = 'defer')",
        )?
        .query_row([host], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Queue totals over a range, oldest first.
pub fn history(conn: &Connection, q: &QueueHistoryQuery) -> Result<Vec<QueuePoint>> {
    let mut c = Conditions::default();
    if let Some(h) = &q.host {
        c.push("host = ?", [text(h)]);
    }
    if let Some(t) = q.since {
        c.push("taken_ms >= ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = q.until {
        c.push("taken_ms < ?", [Value::Integer(ms(t))]);
    }
    let b = q.bucket_ms();
    let sql = format!(
        "SELECT host, taken_ms - taken_ms % {b} AS t, max(messages), max(frozen), max(bounces),
             max(spool_errors), max(undelivered), max(bytes), max(oldest_age)
         FROM queue_snapshots {} GROUP BY host, t ORDER BY t DESC, host DESC LIMIT {}",
        c.where_clause(),
        q.points()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(c.params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(QueuePoint {
            host: row.get(0)?,
            at: from_ms(row.get(1)?),
            totals: totals_from_row(row, 2)?,
        });
    }
    out.reverse();
    Ok(out)
}

/// Saves a job; saving it again replaces it with itself.
pub fn save_job(conn: &Connection, job: &QueueJob) -> Result<()> {
    let ids: Vec<String> = job.ids.iter().map(MessageId::to_string).collect();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO queue_jobs (job_id, host, action, ids, actor, reason,
             requested_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        job.job_id,
        job.host,
        job.action.as_str(),
        json("queue job", &ids)?,
        job.actor,
        job.reason,
        ms(job.requested_at),
        ms(job.expires_at)
    ])?;
    Ok(())
}

/// Saves results; one already stored is replaced only by a later one.
pub fn save_results(conn: &mut Connection, results: &[QueueActionResult]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for r in results {
        tx.prepare_cached(
            "INSERT INTO queue_results (job_id, id, host, action, status, exit_code, output,
                 finished_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (job_id, id) DO UPDATE SET host = excluded.host,
                 action = excluded.action, status = excluded.status,
                 exit_code = excluded.exit_code, output = excluded.output,
                 finished_ms = excluded.finished_ms
             WHERE excluded.finished_ms > queue_results.finished_ms",
        )?
        .execute(params![
            r.job_id,
            r.id.to_string(),
            r.host,
            r.action.as_str(),
            r.status.as_str(),
            r.exit_code,
            r.output,
            ms(r.finished_at)
        ])?;
    }
    tx.commit()?;
    Ok(())
}

const JOB_COLUMNS: &str =
    "SELECT job_id, host, action, ids, actor, reason, requested_ms, expires_ms FROM queue_jobs";

fn job_from_row(row: &rusqlite::Row<'_>) -> Result<QueueJob> {
    let ids: Vec<String> = from_json("queue job", &row.get::<_, String>(3)?)?;
    Ok(QueueJob {
        job_id: row.get(0)?,
        host: row.get(1)?,
        action: parse_enum("queue action", &row.get::<_, String>(2)?)?,
        ids: ids
            .iter()
            .map(|s| s.parse::<MessageId>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| StoreError::corrupt("queue job", e))?,
        actor: row.get(4)?,
        reason: row.get(5)?,
        requested_at: from_ms(row.get(6)?),
        expires_at: from_ms(row.get(7)?),
    })
}

/// One job and its results.
pub fn job(conn: &Connection, job_id: &str) -> Result<Option<(QueueJob, Vec<QueueActionResult>)>> {
    let job = conn
        .prepare_cached(&format!("{JOB_COLUMNS} WHERE job_id = ?1"))?
        .query_and_then([job_id], job_from_row)?
        .next()
        .transpose()?;
    let Some(job) = job else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT job_id, host, id, action, status, exit_code, output, finished_ms
         FROM queue_results WHERE job_id = ?1 ORDER BY finished_ms, id",
    )?;
    let results = stmt
        .query_and_then([job_id], |row| -> Result<QueueActionResult> {
            Ok(QueueActionResult {
                job_id: row.get(0)?,
                host: row.get(1)?,
                id: row
                    .get::<_, String>(2)?
                    .parse()
                    .map_err(|e| StoreError::corrupt("queue result", e))?,
                action: parse_enum("queue action", &row.get::<_, String>(3)?)?,
                status: parse_enum("queue result status", &row.get::<_, String>(4)?)?,
                exit_code: row.get(5)?,
                output: row.get(6)?,
                finished_at: from_ms(row.get(7)?),
            })
        })?
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((job, results)))
}

/// Jobs matching a filter, newest first, with their result counts.
pub fn jobs(
    conn: &Connection,
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
        c.push("requested_ms >= ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = f.until {
        c.push("requested_ms < ?", [Value::Integer(ms(t))]);
    }
    if let Some(cursor) = &page.after {
        let parts = decode_cursor(cursor, 2)?;
        let t = cursor_number(cursor, &parts[0])?;
        c.push(
            "(requested_ms, job_id) < (?, ?)",
            [Value::Integer(t), text(&parts[1])],
        );
    }
    let first = page.first.clamp(1, MAX_PAGE);
    let sql = format!(
        "{JOB_COLUMNS} {} ORDER BY requested_ms DESC, job_id DESC LIMIT {}",
        c.where_clause(),
        first + 1
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut jobs = stmt
        .query_and_then(params_from_iter(c.params.iter()), job_from_row)?
        .collect::<Result<Vec<_>>>()?;
    let has_next_page = jobs.len() > first;
    jobs.truncate(first);
    let end_cursor = jobs
        .last()
        .map(|j| encode_cursor(&[&ms(j.requested_at).to_string(), &j.job_id]));
    let items = jobs
        .into_iter()
        .map(|job| {
            Ok(QueueJobSummary {
                counts: counts(conn, &job.job_id)?,
                job,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Page {
        items,
        end_cursor,
        has_next_page,
    })
}

fn counts(conn: &Connection, job_id: &str) -> Result<QueueJobCounts> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, count(*) FROM queue_results WHERE job_id = ?1 GROUP BY status",
    )?;
    let mut rows = stmt.query([job_id])?;
    let mut counts = QueueJobCounts::default();
    while let Some(row) = rows.next()? {
        counts.add(
            &row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?.max(0) as u64,
        );
    }
    Ok(counts)
}
