//! Retention: dropping whole day partitions older than the policy allows.
//!
//! Every table but `blobs`, `users`, `sessions`, `host_stats` and the
//! trace indexes (by month, see below) is partitioned by UTC day, so
//! retention is one `ALTER TABLE ... DROP PARTITION` per old day:
//! instant, whatever the volume, and without rewriting anything. The
//! price is granularity: a day goes once all of it is older than the
//! cutoff, so up to a day more than the policy is kept.
//!
//! Lifecycles sit in the partition of the day they were first stored; a
//! day of them goes only when the last record of every one of them is
//! older than the cutoff, so a message still changing is never dropped.
//! The tables that index others for traces (`events_by_message`,
//! `lifecycle_days`) are partitioned by month: a month goes once all of
//! it is older than the cutoff and the table it indexes has none of its
//! days left.
//!
//! Summed hour cells share their day partitions with the day cells (see
//! `migrations`, version 8), which are kept longer: old hour cells are
//! deleted from them with `ALTER TABLE ... DELETE`, a mutation that
//! ClickHouse runs in the background, only when there are any.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::migrations::{HOUR_DIM, MARK_DIM};
use super::rows::{ms, DAY_MS, HOUR_MS};
use super::Db;
use crate::error::Result;
use crate::types::{Retention, RetentionSummary};

/// One table's retention: by its `day`, with rows counted with or
/// without `FINAL`, and the column whose maximum must also be past the
/// cutoff (`None`: the day alone decides).
struct Rule {
    table: &'static str,
    final_: bool,
    latest: Option<&'static str>,
}

const fn rule(table: &'static str, final_: bool) -> Rule {
    Rule {
        table,
        final_,
        latest: None,
    }
}

/// The day partitions `table` has, as `toYYYYMMDD` numbers.
async fn partitions(db: &Db, table: &str) -> Result<HashSet<u32>> {
    let q = db
        .query(
            "SELECT DISTINCT toUInt32(partition) FROM system.parts
             WHERE database = currentDatabase() AND table = ? AND active",
        )
        .bind(table);
    let found: Vec<u32> = db
        .fetch(q, &format!("list the partitions of {table}"))
        .await?;
    Ok(found.into_iter().collect())
}

/// Drops the partitions of `rule.table` before `cutoff_ms`' day; returns
/// the rows they held.
async fn drop_before(db: &Db, rule: &Rule, cutoff_ms: i64) -> Result<u64> {
    let day = ms_day_string(cutoff_ms);
    let latest = rule.latest.unwrap_or("0");
    let sql = format!(
        "SELECT toYYYYMMDD(day) AS p, count() AS n, toInt64(max({latest})) AS latest
         FROM {}{} WHERE day < toDate(?) GROUP BY p ORDER BY p",
        rule.table,
        if rule.final_ { " FINAL" } else { "" },
    );
    let q = db.query(&sql).bind(day);
    let parts: Vec<(u32, u64, i64)> = db
        .fetch(q, &format!("list old partitions of {}", rule.table))
        .await?;
    let mut dropped = 0;
    for (partition, rows, latest) in parts {
        if rule.latest.is_some() && latest >= cutoff_ms {
            continue;
        }
        let sql = format!("ALTER TABLE {} DROP PARTITION {partition}", rule.table);
        db.execute(
            db.query(&sql),
            &format!("drop partition {partition} of {}", rule.table),
        )
        .await?;
        dropped += rows;
    }
    Ok(dropped)
}

/// Deletes the summed hour cells of `table` of the days before
/// `cutoff_ms`' day (a mutation, run in the background), when it has
/// any and no deletion is still running on it; returns how many rows
/// they are.
async fn delete_hours_before(db: &Db, table: &str, cutoff_ms: i64) -> Result<u64> {
    let hours = format!("dim >= {HOUR_DIM} AND dim < {MARK_DIM} AND day < toDate(?)");
    let day = ms_day_string(cutoff_ms);
    let sql = format!("SELECT count() FROM {table} WHERE {hours}");
    let q = db.query(&sql).bind(day.as_str());
    let counted: Vec<u64> = db
        .fetch(q, &format!("count old hour cells of {table}"))
        .await?;
    let rows = counted.into_iter().sum();
    if rows == 0 {
        return Ok(0);
    }
    // The rows of a deletion still running are counted above: it is not
    // asked for again.
    let q = db
        .query(
            "SELECT count() FROM system.mutations
             WHERE database = currentDatabase() AND table = ? AND is_done = 0",
        )
        .bind(table);
    let running: Vec<u64> = db
        .fetch(q, &format!("look for deletions running on {table}"))
        .await?;
    if running.into_iter().sum::<u64>() > 0 {
        return Ok(rows);
    }
    let sql = format!("ALTER TABLE {table} DELETE WHERE {hours}");
    db.execute(
        db.query(&sql).bind(day.as_str()),
        &format!("delete old hour cells of {table}"),
    )
    .await?;
    Ok(rows)
}

/// Drops the month partitions of index table `index` whose days are all
/// before `cutoff_ms`' day and of which `table` has no day left, so that
/// the index never lacks what `table` holds.
async fn drop_index_before(db: &Db, index: &str, table: &str, cutoff_ms: i64) -> Result<()> {
    let sql = format!(
        "SELECT toUInt32(toYYYYMM(day)) AS p FROM {index}
         GROUP BY p HAVING max(day) < toDate(?) ORDER BY p"
    );
    let q = db.query(&sql).bind(ms_day_string(cutoff_ms));
    let months: Vec<u32> = db
        .fetch(q, &format!("list old partitions of {index}"))
        .await?;
    let kept: HashSet<u32> = partitions(db, table)
        .await?
        .into_iter()
        .map(|day| day / 100)
        .collect();
    for month in months.into_iter().filter(|m| !kept.contains(m)) {
        let sql = format!("ALTER TABLE {index} DROP PARTITION {month}");
        db.execute(
            db.query(&sql),
            &format!("drop partition {month} of {index}"),
        )
        .await?;
    }
    Ok(())
}

fn ms_day_string(t: i64) -> String {
    super::rows::from_ms(t.div_euclid(DAY_MS) * DAY_MS)
        .format("%Y-%m-%d")
        .to_string()
}

/// Applies the policy as of `now`.
pub async fn apply(db: &Db, policy: &Retention, now: DateTime<Utc>) -> Result<RetentionSummary> {
    let cut = |days: u32| ms(Retention::cutoff(now, days));
    let lifecycles = Rule {
        table: "lifecycles",
        final_: true,
        latest: Some("last_ms"),
    };
    let mut summary = RetentionSummary {
        raw_records: drop_before(db, &rule("events", true), cut(policy.raw_records)).await?,
        attempts: drop_before(db, &rule("attempts", true), cut(policy.attempts)).await?,
        lifecycles: drop_before(db, &lifecycles, cut(policy.lifecycles)).await?,
        rejects: drop_before(db, &rule("rejects", true), cut(policy.rejects)).await?,
        audit: drop_before(db, &rule("audit", false), cut(policy.audit)).await?,
        rollup_cells: 0,
        queue_snapshots: 0,
        queue_jobs: 0,
    };
    drop_before(db, &rule("unparsed", true), cut(policy.raw_records)).await?;

    // The indexes of traces go with the days of what they index.
    let t = cut(policy.raw_records);
    drop_index_before(db, "events_by_message", "events", t).await?;
    let t = cut(policy.lifecycles);
    drop_index_before(db, "lifecycle_days", "lifecycles", t).await?;

    // Hour cells by the hour, day cells (with their marks) by the day:
    // every cell table's `day` is the day of its bucket.
    let hour_cut = cut(policy.rollup_hours).div_euclid(HOUR_MS) * HOUR_MS;
    let by_source = rule("cells_hour_by_source", true);
    summary.rollup_cells += drop_before(db, &by_source, hour_cut).await?;
    summary.rollup_cells += delete_hours_before(db, "cells_day_sums", hour_cut).await?;
    delete_hours_before(db, "cells_day_samples", hour_cut).await?;
    let day_cut = cut(policy.rollup_days);
    summary.rollup_cells += drop_before(db, &rule("cells_day_sums", false), day_cut).await?;
    summary.rollup_cells += drop_before(db, &rule("cells_day_base", true), day_cut).await?;
    drop_before(db, &rule("cells_day_samples", false), day_cut).await?;
    drop_before(db, &rule("events_hourly", false), hour_cut).await?;
    drop_before(db, &rule("rejects_hourly", false), hour_cut).await?;

    // A host's current queue goes with the history of its snapshots; a
    // job's results with the job (by the day each finished).
    let t = cut(policy.queue_snapshots);
    summary.queue_snapshots = drop_before(db, &rule("queue_snapshots", true), t).await?;
    drop_before(db, &rule("queue_messages", false), t).await?;
    let t = cut(policy.queue_jobs);
    summary.queue_jobs = drop_before(db, &rule("queue_jobs", true), t).await?;
    drop_before(db, &rule("queue_results", false), t).await?;

    // The live feed's notes serve for seconds: a day is plenty. The login
    // throttle's marks go after a fixed time.
    drop_before(db, &rule("live_events", false), cut(1)).await?;
    drop_before(db, &rule("live_lifecycles", false), cut(1)).await?;
    let t = cut(crate::login::LOGIN_MARK_DAYS);
    drop_before(db, &rule("login_marks", false), t).await?;

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
            "Retention dropped old partitions"
        );
    }
    Ok(summary)
}
