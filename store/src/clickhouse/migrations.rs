//! The ClickHouse schema and its versioned migrations.
//!
//! `schema_migrations` holds one row per migration applied. [`migrate`]
//! applies the missing ones in order; every statement is written to be
//! run again harmlessly (`IF NOT EXISTS`), so a migration interrupted
//! half-way is finished by the next run, and two processes migrating at
//! once end with the same tables. A database migrated by a newer build is
//! refused rather than misread.
//!
//! Every statement runs on ClickHouse 18.16 and on current releases, so
//! the schema uses neither `TTL`, `LowCardinality`, `Map`, `DateTime64`,
//! `IPv4`/`IPv6` nor codecs; a test replays all of it on a current engine.
//!
//! Tables, each partitioned by UTC day (`toYYYYMMDD(day)`) unless said
//! otherwise, so that retention drops whole partitions:
//! - `events`: every raw record of the three logs with its origin (host,
//!   log, file identity, offset), read time, log time, message id, the
//!   parser's event kind and its bytes. `ReplacingMergeTree` on the origin.
//! - `lifecycles`: one row per (host, message id) and `version`, with the
//!   searchable fields as columns (addresses, domains, outcomes and reason
//!   classes as arrays) and the whole lifecycle as JSON.
//!   `ReplacingMergeTree(version)`: reads take the highest version.
//! - `attempts`: the delivery attempts of every lifecycle, by (host, id,
//!   recipient, attempt number), versioned like their lifecycle.
//! - `rejects`: SMTP rejections, by record origin.
//! - `unparsed`: what came off the raw topic and could not be decoded,
//!   by (topic, partition, offset), with its bytes.
//! - `cells_hour`, `cells_day`: the report cells each lifecycle and each
//!   rejection contributes, one row per (dimension, bucket, host, key,
//!   source), versioned like their lifecycle; a report sums them. The
//!   counters are one array in the order of `Counters::NAMES`: a counter
//!   added later is appended, and `sumForEach` sums arrays of different
//!   lengths.
//! - `audit` (append-only), `users` (by name), `sessions` (by id),
//!   `blobs` (by name); the last three keep the latest version and are not
//!   partitioned. `schema_migrations`.
//! - `queue_snapshots`: the totals of every queue snapshot, by (host,
//!   time taken). `queue_messages`: the messages of every snapshot, by
//!   (host, message id), `ReplacingMergeTree(version)` with the snapshot
//!   time as version, so that each message keeps one row per day after
//!   merges: a host's current queue is the newest row of each message
//!   taken at or after the host's latest snapshot (see `queue`).
//! - `queue_jobs` (by job id) and `queue_results` (by job and message,
//!   the latest finished kept; partitioned by the day it finished).
//! - Dashboards: `host_stats` (per-server counts and times, fed by a
//!   materialized view from the `host_deltas` Null table),
//!   `events_hourly` and `rejects_hourly` (records and rejections per hour,
//!   fed by materialized views, counted with `uniqExact` over the row's
//!   origin so that a batch inserted twice counts once).
//! - `live_events`, `live_lifecycles`: the identity of every row inserted
//!   into `events` and `lifecycles` with the server's time of the insert,
//!   sorted by it, written by materialized views, for live feeds (see
//!   `live`); kept a day.
//! - `login_marks`: the login throttle's failures, resets and trusted
//!   addresses, by key and time (see `login`).

use super::Db;
use crate::error::{Result, StoreError};

/// Partitioning and engine clause shared by the day-partitioned tables.
fn by_day(engine: &str, order: &str) -> String {
    format!("ENGINE = {engine} PARTITION BY toYYYYMMDD(day) ORDER BY ({order})")
}

fn migration_1() -> Vec<String> {
    let cells = |name: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS {name} (
                dim UInt8,
                bucket Int64,
                day Date,
                host String,
                key String,
                source String,
                version UInt64,
                counters Array(Int64),
                delay_buckets Array(UInt16),
                delay_counts Array(Int64),
                samples Array(String)
            ) {}",
            by_day(
                "ReplacingMergeTree(version)",
                "dim, bucket, host, key, source"
            )
        )
    };
    let aggregate = |f: &str| format!("AggregateFunction({f}, Int64)");
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS events (
                host String,
                log String,
                file_id UInt64,
                offset UInt64,
                read_at_ms Int64,
                at_ms Nullable(Int64),
                day Date,
                message_id Nullable(String),
                event_kind String,
                bytes String
            ) {}",
            by_day("ReplacingMergeTree", "host, file_id, offset")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS lifecycles (
                host String,
                id String,
                version UInt64,
                day Date,
                cohort_ms Int64,
                last_ms Int64,
                state String,
                incomplete_start UInt8,
                sender Nullable(String),
                sender_domain Nullable(String),
                subject Nullable(String),
                msgid_header Nullable(String),
                client_ip Nullable(String),
                addresses Array(String),
                originals Array(String),
                domains Array(String),
                outcomes Array(String),
                reasons Array(String),
                body String
            ) {}",
            by_day("ReplacingMergeTree(version)", "host, id")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS attempts (
                host String,
                id String,
                rcpt UInt32,
                n UInt32,
                version UInt64,
                day Date,
                at_ms Int64,
                address String,
                result String,
                transport Nullable(String),
                remote_host Nullable(String),
                remote_ip Nullable(String),
                code Nullable(UInt16),
                enhanced Nullable(String),
                reason Nullable(String),
                text Nullable(String)
            ) {}",
            by_day("ReplacingMergeTree(version)", "host, id, rcpt, n")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS rejects (
                host String,
                log String,
                file_id UInt64,
                offset UInt64,
                at_ms Int64,
                day Date,
                stage String,
                temporary UInt8,
                client_ip Nullable(String),
                client_name Nullable(String),
                helo Nullable(String),
                sender Nullable(String),
                recipient Nullable(String),
                recipient_domain Nullable(String),
                message_id Nullable(String),
                reason String,
                class String
            ) {}",
            by_day("ReplacingMergeTree", "host, file_id, offset")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS unparsed (
                topic String,
                partition Int32,
                offset Int64,
                read_at_ms Int64,
                day Date,
                problem String,
                bytes String
            ) {}",
            by_day("ReplacingMergeTree", "topic, partition, offset")
        ),
        cells("cells_hour"),
        cells("cells_day"),
        format!(
            "CREATE TABLE IF NOT EXISTS audit (
                at_ms Int64,
                day Date,
                seq UInt64,
                actor String,
                role Nullable(String),
                client_ip Nullable(String),
                action String,
                target Nullable(String),
                params Nullable(String),
                outcome String
            ) {}",
            by_day("MergeTree", "at_ms, seq")
        ),
        "CREATE TABLE IF NOT EXISTS users (
            name String,
            role String,
            password_hash String,
            disabled UInt8,
            updated_ns UInt64
        ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY name"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS blobs (
            name String,
            data String,
            updated_ns UInt64
        ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY name"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS host_deltas (
            host String,
            first_ms Int64,
            last_ms Int64,
            last_read_ms Int64,
            records Int64,
            messages Int64,
            rejects Int64
        ) ENGINE = Null"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS host_stats (
                host String,
                first_ms {min},
                last_ms {max},
                last_read_ms {max},
                records {sum},
                messages {sum},
                rejects {sum}
            ) ENGINE = AggregatingMergeTree ORDER BY host",
            min = aggregate("min"),
            max = aggregate("max"),
            sum = aggregate("sum"),
        ),
        "CREATE MATERIALIZED VIEW IF NOT EXISTS host_stats_mv TO host_stats AS
            SELECT host, minState(first_ms) AS first_ms, maxState(last_ms) AS last_ms,
                maxState(last_read_ms) AS last_read_ms, sumState(records) AS records,
                sumState(messages) AS messages, sumState(rejects) AS rejects
            FROM host_deltas GROUP BY host"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS events_hourly (
                hour DateTime('UTC'),
                day Date,
                host String,
                log String,
                event_kind String,
                records AggregateFunction(uniqExact, UInt64, UInt64)
            ) {}",
            by_day("AggregatingMergeTree", "hour, host, log, event_kind")
        ),
        "CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
            SELECT toDateTime(intDiv(ifNull(at_ms, read_at_ms), 3600000) * 3600, 'UTC') AS hour,
                toDate(hour) AS day, host, log, event_kind,
                uniqExactState(file_id, offset) AS records
            FROM events GROUP BY hour, day, host, log, event_kind"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS rejects_hourly (
                hour DateTime('UTC'),
                day Date,
                host String,
                class String,
                temporary UInt8,
                rejects AggregateFunction(uniqExact, UInt64, UInt64)
            ) {}",
            by_day("AggregatingMergeTree", "hour, host, class, temporary")
        ),
        "CREATE MATERIALIZED VIEW IF NOT EXISTS rejects_hourly_mv TO rejects_hourly AS
            SELECT toDateTime(intDiv(at_ms, 3600000) * 3600, 'UTC') AS hour,
                toDate(hour) AS day, host, class, temporary,
                uniqExactState(file_id, offset) AS rejects
            FROM rejects GROUP BY hour, day, host, class, temporary"
            .to_string(),
    ]
}

/// Version 2: the API's users and their sessions. The `users` table of
/// version 1 was never written by any build, so it is replaced by one that
/// holds everything a user has.
fn migration_2() -> Vec<String> {
    vec![
        "DROP TABLE IF EXISTS users".to_string(),
        "CREATE TABLE IF NOT EXISTS users (
            name String,
            role String,
            password_hash String,
            disabled UInt8,
            hosts Array(String),
            created_ms Int64,
            updated_ms Int64,
            updated_ns UInt64
        ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY name"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS sessions (
            id String,
            username String,
            token_hash String,
            created_ms Int64,
            expires_ms Int64,
            revoked_ms Nullable(Int64),
            client_ip Nullable(String),
            updated_ns UInt64
        ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY id"
            .to_string(),
    ]
}

/// Version 3: queue snapshots, the messages of each host's queue, and
/// operators' queue jobs with their results.
fn migration_3() -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS queue_snapshots (
                host String,
                taken_ms Int64,
                day Date,
                messages UInt64,
                frozen UInt64,
                bounces UInt64,
                spool_errors UInt64,
                undelivered UInt64,
                bytes UInt64,
                oldest_age Nullable(UInt64)
            ) {}",
            by_day("ReplacingMergeTree", "host, taken_ms")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS queue_messages (
                host String,
                id String,
                taken_ms Int64,
                version UInt64,
                day Date,
                age_key Int64,
                age Nullable(UInt64),
                size Nullable(UInt64),
                sender String,
                frozen UInt8,
                addresses Array(String),
                delivered Array(UInt8),
                body String
            ) {}",
            by_day("ReplacingMergeTree(version)", "host, id")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS queue_jobs (
                job_id String,
                day Date,
                host String,
                action String,
                ids Array(String),
                actor String,
                reason Nullable(String),
                requested_ms Int64,
                expires_ms Int64
            ) {}",
            by_day("ReplacingMergeTree", "job_id")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS queue_results (
                job_id String,
                id String,
                day Date,
                version UInt64,
                host String,
                action String,
                status String,
                exit_code Nullable(Int32),
                output String,
                finished_ms Int64
            ) {}",
            by_day("ReplacingMergeTree(version)", "job_id, id")
        ),
    ]
}

/// Version 4: the live feed's notes of what is inserted into `events` and
/// `lifecycles` (by materialized views, stamped with the server's clock,
/// see `live`), and the login throttle's ledger (see `login`).
fn migration_4() -> Vec<String> {
    let note = |name: &str, columns: &str, key: &str, source: &str| {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {name} (
                    stored_at DateTime('UTC'),
                    day Date,
                    {columns}
                ) {}",
                by_day("MergeTree", &format!("stored_at, {key}"))
            ),
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {name}_mv TO {name} AS
                    SELECT toDateTime(now(), 'UTC') AS stored_at, toDate(stored_at) AS day,
                        {key}
                    FROM {source}"
            ),
        ]
    };
    let mut out = note(
        "live_events",
        "host String, file_id UInt64, offset UInt64",
        "host, file_id, offset",
        "events",
    );
    out.extend(note(
        "live_lifecycles",
        "host String, id String, version UInt64",
        "host, id, version",
        "lifecycles",
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS login_marks (
            key String,
            at_ms Int64,
            day Date,
            kind String
        ) {}",
        by_day("MergeTree", "key, at_ms")
    ));
    out
}

/// The table that records applied migrations.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    applied_ms Int64
) ENGINE = ReplacingMergeTree ORDER BY version";

/// Every migration, oldest first, each a list of statements. Never edit
/// one that has shipped: add a new one.
pub fn migrations() -> Vec<Vec<String>> {
    vec![migration_1(), migration_2(), migration_3(), migration_4()]
}

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    migrations().len() as i64
}

/// Every statement of every migration, with the version table's, in the
/// order [`migrate`] runs them.
pub fn all_statements() -> Vec<String> {
    let mut out = vec![VERSION_TABLE.to_string()];
    out.extend(migrations().into_iter().flatten());
    out
}

/// The schema version of `database` (0: none, or no such database).
/// `db` may be connected to any database that exists.
pub(super) async fn version(db: &Db, database: &str) -> Result<i64> {
    let exists: Vec<u8> = db
        .fetch(
            db.query(
                "SELECT toUInt8(count()) FROM system.tables
                 WHERE database = ? AND name = 'schema_migrations'",
            )
            .bind(database),
            "look for the schema version table",
        )
        .await?;
    if exists.first().copied().unwrap_or(0) == 0 {
        return Ok(0);
    }
    let sql = format!("SELECT toUInt32(max(version)) FROM {database}.schema_migrations");
    let found: Vec<u32> = db.fetch(db.query(&sql), "read the schema version").await?;
    Ok(found.first().copied().unwrap_or(0) as i64)
}

/// Brings `database`, to which `db` is connected, up to the latest
/// schema version.
pub(super) async fn migrate(db: &Db, database: &str) -> Result<()> {
    let all = migrations();
    let known = all.len() as i64;
    db.execute(db.query(VERSION_TABLE), "create the schema version table")
        .await?;
    let found = version(db, database).await?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, statements) in all.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        for sql in statements {
            db.execute(db.query(sql), &format!("apply schema migration {version}"))
                .await?;
        }
        let now = chrono::Utc::now().timestamp_millis();
        db.execute(
            db.query("INSERT INTO schema_migrations (version, applied_ms) VALUES (?, ?)")
                .bind(version)
                .bind(now),
            "record the schema version",
        )
        .await?;
        tracing::info!(version, "ClickHouse schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_hold_no_placeholder() {
        // The client binds `?`: a literal one in DDL would break it.
        for sql in all_statements() {
            assert!(!sql.contains('?'), "{sql}");
        }
    }
}
