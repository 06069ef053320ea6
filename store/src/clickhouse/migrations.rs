//! The ClickHouse schema and its versioned migrations.
//!
//! `schema_migrations` holds one row per migration applied. [`migrate`]
//! applies the missing ones in order; every step is written to be run
//! again harmlessly (`IF NOT EXISTS`, back-fills that write the same rows
//! again into tables that keep one of them), so a migration interrupted
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
//! - `lifecycle_days`: the day partition of every lifecycle, by (host,
//!   message id), fed from `lifecycles` by a materialized view: how a
//!   lookup finds the one partition to read. Partitioned by month.
//! - `attempts`: the delivery attempts of every lifecycle, by (host, id,
//!   recipient, attempt number), versioned like their lifecycle.
//! - `events_by_message`: the origin and day of every raw record with a
//!   message id, by (host, message id, origin), fed from `events` by a
//!   materialized view: how a trace finds its records. Partitioned by
//!   month.
//! - `rejects`: SMTP rejections, by record origin.
//! - `unparsed`: what came off the raw topic and could not be decoded,
//!   by (topic, partition, offset), with its bytes.
//! - `cells_day_sums`, `cells_day_samples`, `cells_day_base`: the day
//!   and hour cells summed per (dimension, bucket, host, key), kept up to
//!   date by what each batch changes, with marks naming what each change
//!   added, so that a batch sent again counts once (see `migration_6`,
//!   `migration_7` and `migration_8`). Counters are a map from their
//!   index in `Counters::NAMES`, so a counter added later needs no change.
//! - `cells_hour_by_source`: the hour cells stored before version 8, one
//!   row per (dimension, bucket, host, key, source), versioned like their
//!   lifecycle; a report adds their latest versions to the sums. The
//!   counters are one array in the order of `Counters::NAMES`: a counter
//!   added later is appended, and `sumForEach` sums arrays of different
//!   lengths. (`cells_day` held the same per day until version 6.)
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

/// [`by_day`] for the tables partitioned by the month of their `day`.
fn by_month(engine: &str, order: &str) -> String {
    format!("ENGINE = {engine} PARTITION BY toYYYYMM(day) ORDER BY ({order})")
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

/// Version 5: what a trace reads by key. `events` is sorted by origin and
/// `lifecycles` is partitioned by day, so finding a message's records
/// scanned every message id of its server, and finding its lifecycle read
/// a granule of bodies in every day's partition. Two small tables, sorted
/// by (host, message id), say where to look:
///
/// - `events_by_message`: the origin and day of every raw record that
///   carries a message id. It holds no bytes: a trace reads the records
///   from `events` by their origin, that table's key, in the partitions of
///   their days only, so the raw text is stored once.
/// - `lifecycle_days`: the day partition of every lifecycle (every
///   version of a lifecycle stays in the day it was first stored).
///
/// Materialized views fill both from every insert into `events` and
/// `lifecycles`, rather than the store's write path inserting into each:
/// they cannot drift from their table, whoever writes it, and a batch sent
/// again is deduplicated as in its table (`ReplacingMergeTree`; reads take
/// each row once). Each view is created before the back-fill copies what
/// its table already holds, so a row written while a live database
/// migrates is copied at least once; copied twice (by both, or by a
/// migration run again after an interruption), it is one row once merged.
/// Both are partitioned by month, not by day like the tables they index:
/// a lookup reads a granule in every partition, so a day partition each
/// would make a trace over 90 days read 180 granules. Their granules are
/// small (1,024 rows) for the same reason.
fn migration_5() -> Vec<String> {
    let records = "SELECT host, assumeNotNull(message_id) AS id, day, file_id, offset
        FROM events WHERE isNotNull(message_id)";
    let lifecycles = "SELECT host, id, day FROM lifecycles";
    let small_granules = "SETTINGS index_granularity = 1024";
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS events_by_message (
                host String,
                id String,
                day Date,
                file_id UInt64,
                offset UInt64
            ) {} {small_granules}",
            by_month("ReplacingMergeTree", "host, id, file_id, offset")
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_message_mv
             TO events_by_message AS {records}"
        ),
        format!("INSERT INTO events_by_message (host, id, day, file_id, offset) {records}"),
        format!(
            "CREATE TABLE IF NOT EXISTS lifecycle_days (
                host String,
                id String,
                day Date
            ) {} {small_granules}",
            by_month("ReplacingMergeTree", "host, id")
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS lifecycle_days_mv
             TO lifecycle_days AS {lifecycles}"
        ),
        format!("INSERT INTO lifecycle_days (host, id, day) {lifecycles}"),
    ]
}

/// The dimension code of the marks in `cells_day_sums`: no report
/// dimension has it.
pub(super) const MARK_DIM: u8 = 255;

/// Version 6: day cells summed per (dimension, day, host, key), as
/// SQLite keeps them, instead of one row per source (lifecycle or
/// rejection) that every read had to deduplicate with `FINAL` and sum: a
/// month of one dimension is then some thousands of rows, whatever the
/// traffic, read without `FINAL` nor `GROUP BY` and added up by the store.
///
/// - `cells_day_sums` (`SummingMergeTree`): what each new version of a
///   source changes (its new counters and histogram less its old ones),
///   summed per batch, as sparse maps (`countersMap`, `delayMap`) that
///   merges add up. Beside them, in the same insert and so in the same
///   part of the same day partition, a mark per (source, day, version)
///   (dimension `MARK_DIM`, the source as key, `marked` 1) says that the
///   change is in: a batch sent again after a failure leaves out what is
///   marked, so nothing counts twice (see `write`). The write path
///   inserts into it directly: a materialized view could not tell a
///   change from the version it replaces.
///   Its granules are small (1,024 rows), so that a read of one dimension
///   reads little of the others' rows.
/// - `cells_day_samples` (`ReplacingMergeTree`): the sample texts of
///   each day cell, one row each. A sample is only ever added (as SQLite
///   keeps them), so writing one twice changes nothing and it needs no
///   mark.
/// - `cells_day_base` (`ReplacingMergeTree` by cell): the sums of the
///   per-source day cells stored before this version, written once by the
///   migration (a run again writes the same rows); a read adds it to the
///   sums, each of its cells once.
///
/// The old table is renamed before it is summed, so that a processor of
/// an older build, still running, fails on its next batch instead of
/// writing cells the sums would miss: it retries until it is replaced by
/// this build, which stores that batch again.
fn migration_6() -> Vec<Step> {
    vec![
        Step::Sql(format!(
            "CREATE TABLE IF NOT EXISTS cells_day_sums (
                dim UInt8,
                host String,
                key String,
                bucket Int64,
                day Date,
                version UInt64,
                marked UInt8,
                countersMap Nested(counter UInt8, value Int64),
                delayMap Nested(bucket UInt16, count Int64)
            ) {} SETTINGS index_granularity = 1024",
            by_day("SummingMergeTree", "dim, host, key, bucket, day, version")
        )),
        Step::Sql(format!(
            "CREATE TABLE IF NOT EXISTS cells_day_samples (
                dim UInt8,
                host String,
                key String,
                bucket Int64,
                day Date,
                sample String
            ) {}",
            by_day("ReplacingMergeTree", "dim, host, key, bucket, sample")
        )),
        Step::Sql(format!(
            "CREATE TABLE IF NOT EXISTS cells_day_base (
                dim UInt8,
                host String,
                key String,
                bucket Int64,
                day Date,
                counters Array(Int64),
                delay_buckets Array(UInt16),
                delay_counts Array(Int64)
            ) {}",
            by_day("ReplacingMergeTree", "dim, host, key, bucket")
        )),
        Step::Rename {
            from: "cells_day",
            to: "cells_day_by_source",
        },
        Step::SumDayCells {
            from: "cells_day_by_source",
        },
    ]
}

/// Version 7: each mark of `cells_day_sums` names the hour cells its
/// change added to the sums (`applied`), so that a batch sent again with
/// other content for the same version of a source (cut otherwise by a
/// processor restarted from an earlier state) adds only the difference,
/// and clears the hour cells the first attempt wrote that it no longer
/// has. Marks written before have it empty: their change counts as
/// applied whole, as it did then.
fn migration_7() -> Vec<Step> {
    vec![Step::AddColumn {
        table: "cells_day_sums",
        column: "applied",
        definition: "String",
    }]
}

/// What is added to a dimension's code in the rows of `cells_day_sums`
/// and `cells_day_samples` that hold an hour cell (whose bucket is an
/// hour number) rather than a day cell. Dimension codes stay below it,
/// and [`MARK_DIM`] above.
pub(super) const HOUR_DIM: u8 = 128;

/// Version 8: hour cells summed like the day cells, in the same tables.
/// One row per source and version in `cells_hour` made a batch write
/// about seven hour cell rows per message, more rows than raw records,
/// and a report per hour read as many. Now each change to the sums (see
/// `migration_6`) adds its hour cells beside its day cells: rows of
/// `cells_day_sums` and `cells_day_samples` whose dimension code is
/// raised by [`HOUR_DIM`] and whose bucket is an hour. They go in the
/// same insert as the day sums and the change's mark, so a change is in
/// both or in neither, and a batch sent again after a failure adds to
/// each hour what it wants less what its marks applied, as for the days.
///
/// The per-source table is renamed `cells_hour_by_source` and kept as it
/// is: a read adds its latest versions to the sums. A lifecycle stored
/// before the change keeps its hour cells there, and the change of its
/// next version (new cells less old ones) goes to the sums, so the two
/// add up to its latest cells. The rename makes a processor of an older
/// build, still running, fail on its next batch instead of writing per
/// source cells the sums would count again: it retries until it is
/// replaced by this build.
fn migration_8() -> Vec<Step> {
    vec![Step::Rename {
        from: "cells_hour",
        to: "cells_hour_by_source",
    }]
}

/// One step of a migration.
pub enum Step {
    /// A statement, run as it is.
    Sql(String),
    /// Renames table `from` to `to`, unless `from` is gone (renamed by an
    /// earlier run of the migration).
    Rename {
        from: &'static str,
        to: &'static str,
    },
    /// Sums the per-source day cells of table `from` into
    /// `cells_day_base` and `cells_day_samples`, one day partition at a
    /// time (so that memory holds one day's cells), then drops `from`;
    /// nothing when `from` is gone. A run interrupted half-way (or two at
    /// once) sums some days again, which writes the same rows again.
    SumDayCells { from: &'static str },
    /// Adds a column to a table, unless it has it (added by an earlier
    /// run of the migration, or by one running at once).
    AddColumn {
        table: &'static str,
        column: &'static str,
        definition: &'static str,
    },
}

impl Step {
    /// The statements of this step on a database created by the same
    /// migrations: one of each kind it may send.
    fn statements(&self) -> Vec<String> {
        match self {
            Step::Sql(sql) => vec![sql.clone()],
            Step::Rename { from, to } => vec![format!("RENAME TABLE {from} TO {to}")],
            Step::AddColumn {
                table,
                column,
                definition,
            } => vec![add_column(table, column, definition)],
            Step::SumDayCells { from } => {
                let mut out: Vec<String> = sum_day_cells(from)
                    .into_iter()
                    .map(|sql| sql.replace('?', "'1970-01-01'"))
                    .collect();
                out.push(format!("DROP TABLE IF EXISTS {from}"));
                out
            }
        }
    }

    async fn run(&self, db: &Db, database: &str, doing: &str) -> Result<()> {
        match self {
            Step::Sql(sql) => db.execute(db.query(sql), doing).await,
            Step::Rename { from, to } => {
                if !table_exists(db, database, from).await? {
                    return Ok(());
                }
                let sql = format!("RENAME TABLE {from} TO {to}");
                let renamed = db.execute(db.query(&sql), doing).await;
                // Another migration running at once may have renamed it
                // between the look and the rename.
                if renamed.is_err() && !table_exists(db, database, from).await? {
                    return Ok(());
                }
                renamed
            }
            Step::AddColumn {
                table,
                column,
                definition,
            } => {
                if column_exists(db, database, table, column).await? {
                    return Ok(());
                }
                let sql = add_column(table, column, definition);
                let added = db.execute(db.query(&sql), doing).await;
                if added.is_err() && column_exists(db, database, table, column).await? {
                    return Ok(());
                }
                added
            }
            Step::SumDayCells { from } => {
                let summed = sum_day_cells_of(db, database, from, doing).await;
                // Another migration running at once drops the table once
                // it has summed all of it.
                if summed.is_err() && !table_exists(db, database, from).await? {
                    return Ok(());
                }
                summed
            }
        }
    }
}

/// Runs [`Step::SumDayCells`] while `from` exists.
async fn sum_day_cells_of(db: &Db, database: &str, from: &str, doing: &str) -> Result<()> {
    if !table_exists(db, database, from).await? {
        return Ok(());
    }
    let sql = format!("SELECT DISTINCT toString(day) AS d FROM {from} ORDER BY d");
    let days: Vec<String> = db.fetch(db.query(&sql), doing).await?;
    for day in &days {
        for sql in sum_day_cells(from) {
            db.execute(db.query(&sql).bind(day.as_str()), doing).await?;
        }
    }
    tracing::info!(days = days.len(), "ClickHouse day cells summed");
    let sql = format!("DROP TABLE IF EXISTS {from}");
    db.execute(db.query(&sql), doing).await
}

/// The statements that sum one day (the `?`) of the per-source day
/// cells of table `from`, the latest version of each, into
/// `cells_day_base` and `cells_day_samples`.
fn sum_day_cells(from: &str) -> Vec<String> {
    vec![
        format!(
            "INSERT INTO cells_day_base
                 (dim, host, key, bucket, day, counters, delay_buckets, delay_counts)
             SELECT dim, host, key, bucket, day, counters, delay.1, delay.2
             FROM (
                 SELECT dim, host, key, bucket, day, sumForEach(counters) AS counters,
                     sumMap(delay_buckets, delay_counts) AS delay
                 FROM {from} FINAL WHERE day = toDate(?)
                 GROUP BY dim, host, key, bucket, day
             )"
        ),
        format!(
            "INSERT INTO cells_day_samples (dim, host, key, bucket, day, sample)
             SELECT DISTINCT dim, host, key, bucket, day, arrayJoin(samples) AS sample
             FROM {from} FINAL WHERE day = toDate(?)"
        ),
    ]
}

/// The statement that adds `column` to `table`.
fn add_column(table: &str, column: &str, definition: &str) -> String {
    format!("ALTER TABLE {table} ADD COLUMN {column} {definition}")
}

async fn column_exists(db: &Db, database: &str, table: &str, column: &str) -> Result<bool> {
    let q = db
        .query(
            "SELECT toUInt8(count()) FROM system.columns
             WHERE database = ? AND table = ? AND name = ?",
        )
        .bind(database)
        .bind(table)
        .bind(column);
    let found: Vec<u8> = db
        .fetch(q, &format!("look for column {column} of {table}"))
        .await?;
    Ok(found.first().copied().unwrap_or(0) > 0)
}

async fn table_exists(db: &Db, database: &str, table: &str) -> Result<bool> {
    let q = db
        .query("SELECT toUInt8(count()) FROM system.tables WHERE database = ? AND name = ?")
        .bind(database)
        .bind(table);
    let found: Vec<u8> = db.fetch(q, &format!("look for table {table}")).await?;
    Ok(found.first().copied().unwrap_or(0) > 0)
}

/// The table that records applied migrations.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    applied_ms Int64
) ENGINE = ReplacingMergeTree ORDER BY version";

/// Statements, as the steps of a migration.
fn plain(statements: Vec<String>) -> Vec<Step> {
    statements.into_iter().map(Step::Sql).collect()
}

/// Every migration, oldest first, each a list of steps. Never edit one
/// that has shipped: add a new one.
pub fn migrations() -> Vec<Vec<Step>> {
    vec![
        plain(migration_1()),
        plain(migration_2()),
        plain(migration_3()),
        plain(migration_4()),
        plain(migration_5()),
        migration_6(),
        migration_7(),
        migration_8(),
    ]
}

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    migrations().len() as i64
}

/// Every statement of every migration, with the version table's, in the
/// order [`migrate`] runs them on a new database.
pub fn all_statements() -> Vec<String> {
    let mut out = vec![VERSION_TABLE.to_string()];
    for step in migrations().iter().flatten() {
        out.extend(step.statements());
    }
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
    migrate_to(db, database, latest_version()).await
}

/// Brings `database` up to schema version `target` (tests start from
/// older versions).
pub(super) async fn migrate_to(db: &Db, database: &str, target: i64) -> Result<()> {
    let all = migrations();
    let known = all.len() as i64;
    db.execute(db.query(VERSION_TABLE), "create the schema version table")
        .await?;
    let found = version(db, database).await?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    let todo = (target.min(known) - found).max(0) as usize;
    for (i, steps) in all.iter().enumerate().skip(found as usize).take(todo) {
        let version = i as u32 + 1;
        let doing = format!("apply schema migration {version}");
        for step in steps {
            step.run(db, database, &doing).await?;
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
