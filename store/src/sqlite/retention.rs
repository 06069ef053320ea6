//! Retention: deleting data older than the policy allows.
//!
//! Every kind of data is deleted by an indexed time column (raw records by
//! day number, the rest by milliseconds or bucket), a chunk of rows per
//! transaction. The writer is released between chunks, so ingestion goes on
//! while a large backlog of old data is dropped.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, TransactionBehavior};

use exim_pilot_schema::report::Dimension;

use super::codec::{ms, DAY_MS, HOUR_MS};
use super::SqliteStore;
use crate::error::Result;
use crate::types::{Retention, RetentionSummary};

/// Rows deleted per transaction.
const CHUNK: i64 = 5_000;

/// Applies the policy as of `now`.
pub async fn apply(
    store: &SqliteStore,
    policy: &Retention,
    now: DateTime<Utc>,
) -> Result<RetentionSummary> {
    let cut = |days: u32| ms(Retention::cutoff(now, days));
    let mut summary = RetentionSummary::default();

    let day = cut(policy.raw_records).div_euclid(DAY_MS);
    summary.raw_records = until_done(store, move |c| delete_raw(c, day)).await?;

    let t = cut(policy.attempts);
    summary.attempts = until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM attempts WHERE (lc, rcpt, n) IN
                 (SELECT lc, rcpt, n FROM attempts WHERE at_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;

    let t = cut(policy.lifecycles);
    summary.lifecycles = until_done(store, move |c| delete_lifecycles(c, t)).await?;

    let t = cut(policy.rejects);
    summary.rejects = until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM rejects WHERE rowid IN
                 (SELECT rowid FROM rejects WHERE at_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;

    let t = cut(policy.audit);
    summary.audit = until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM audit WHERE rowid IN
                 (SELECT rowid FROM audit WHERE at_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;

    let hour = cut(policy.rollup_hours).div_euclid(HOUR_MS);
    let day = cut(policy.rollup_days).div_euclid(DAY_MS);
    for (table, bucket) in [("rollup_hour", hour), ("rollup_day", day)] {
        // One dimension at a time: the cells are keyed by dimension first.
        for dim in Dimension::ALL {
            let sql = format!(
                "DELETE FROM {table} WHERE (dim, bucket, host, key) IN
                     (SELECT dim, bucket, host, key FROM {table}
                      WHERE dim = {} AND bucket < ?1 LIMIT ?2)",
                dim.code()
            );
            summary.rollup_cells += until_done(store, move |c| chunk(c, &sql, bucket)).await?;
        }
    }

    let t = cut(policy.queue_snapshots);
    summary.queue_snapshots = until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM queue_snapshots WHERE (host, taken_ms) IN
                 (SELECT host, taken_ms FROM queue_snapshots WHERE taken_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;
    store.write(move |c| delete_stale_queues(c, t)).await?;

    let t = cut(policy.queue_jobs);
    summary.queue_jobs = until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM queue_jobs WHERE job_id IN
                 (SELECT job_id FROM queue_jobs WHERE requested_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;
    until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM queue_results WHERE (job_id, id) IN
                 (SELECT job_id, id FROM queue_results WHERE finished_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;

    // The login throttle's marks, after a fixed time.
    let t = cut(crate::login::LOGIN_MARK_DAYS);
    until_done(store, move |c| {
        chunk(
            c,
            "DELETE FROM login_marks WHERE rowid IN
                 (SELECT rowid FROM login_marks WHERE at_ms < ?1 LIMIT ?2)",
            t,
        )
    })
    .await?;

    if summary != RetentionSummary::default() {
        tracing::info!(
            raw_records = summary.raw_records,
            attempts = summary.attempts,
            lifecycles = summary.lifecycles,
            rejects = summary.rejects,
            audit = summary.audit,
            rollup_cells = summary.rollup_cells,
            queue_snapshots = summary.queue_snapshots,
            queue_jobs = summary.queue_jobs,
            "Retention deleted old data"
        );
    }
    Ok(summary)
}

/// Runs `step` (one chunk, returning rows deleted) until it deletes none.
async fn until_done<F>(store: &SqliteStore, step: F) -> Result<u64>
where
    F: Fn(&mut Connection) -> Result<u64> + Send + Sync + Clone + 'static,
{
    let mut total = 0;
    loop {
        let step = step.clone();
        let n = store.write(move |c| step(c)).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// Runs one chunked DELETE taking (cutoff, chunk size) parameters.
fn chunk(conn: &mut Connection, sql: &str, cutoff: i64) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.prepare_cached(sql)?.execute(params![cutoff, CHUNK])?;
    tx.commit()?;
    Ok(n as u64)
}

fn delete_raw(conn: &mut Connection, before_day: i64) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rowids: Vec<i64> = {
        let mut stmt =
            tx.prepare_cached("SELECT rowid FROM raw_records WHERE day < ?1 LIMIT ?2")?;
        let rows = stmt.query_map(params![before_day, CHUNK], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in &rowids {
        tx.prepare_cached("DELETE FROM raw_fts WHERE rowid = ?1")?
            .execute([id])?;
        tx.prepare_cached("DELETE FROM raw_records WHERE rowid = ?1")?
            .execute([id])?;
    }
    tx.commit()?;
    Ok(rowids.len() as u64)
}

/// Forgets the current queue of every host whose latest snapshot is older
/// than the cutoff: its history is gone, so is its queue.
fn delete_stale_queues(conn: &mut Connection, before_ms: i64) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for sql in [
        "DELETE FROM queue_messages WHERE host IN
             (SELECT host FROM queue_current WHERE taken_ms < ?1)",
        "DELETE FROM queue_recipients WHERE host IN
             (SELECT host FROM queue_current WHERE taken_ms < ?1)",
        "DELETE FROM queue_current WHERE taken_ms < ?1",
    ] {
        tx.prepare_cached(sql)?.execute([before_ms])?;
    }
    tx.commit()?;
    Ok(())
}

fn delete_lifecycles(conn: &mut Connection, before_ms: i64) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rowids: Vec<i64> = {
        let mut stmt =
            tx.prepare_cached("SELECT rowid FROM lifecycles WHERE last_ms < ?1 LIMIT ?2")?;
        let rows = stmt.query_map(params![before_ms, CHUNK / 5], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in &rowids {
        for sql in [
            "DELETE FROM recipients WHERE lc = ?1",
            "DELETE FROM attempts WHERE lc = ?1",
            "DELETE FROM message_reasons WHERE lc = ?1",
            "DELETE FROM lifecycles WHERE rowid = ?1",
        ] {
            tx.prepare_cached(sql)?.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(rowids.len() as u64)
}
