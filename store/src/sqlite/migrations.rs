//! The SQLite schema and its versioned migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Opening a
//! store applies the missing ones in order, each in its own transaction,
//! so opening is idempotent and an interrupted upgrade resumes. A database
//! from a newer build is refused rather than misread.
//!
//! Tables:
//! - `raw_records`: every raw record with its origin (unique on host, file
//!   identity and offset), log kind, log time, day number, message id and
//!   event kind; `raw_fts` indexes the text (FTS5, contentless, with
//!   deletes so that retention can drop old rows).
//! - `lifecycles`: one row per (host, message id) with the searchable
//!   fields as columns and the whole lifecycle as compressed JSON;
//!   `recipients`, `message_reasons` and `attempts` index its addresses,
//!   reason classes and delivery attempts.
//! - `rejects`: SMTP rejections, unique on their record origin.
//! - `rollup_hour`, `rollup_day`: report cells per (dimension, bucket,
//!   host, key), one column per counter, the delay histogram and the
//!   sample texts.
//! - `hosts`, `blobs`, `audit`.
//! - `users` (the API's users, hosts they may see as a JSON array) and
//!   `sessions` (one per login, with its refresh token's hash).
//! - `queue_snapshots`: the totals of every queue snapshot, by (host,
//!   time taken); `queue_current`: each host's current snapshot time;
//!   `queue_messages` (the message as JSON, with its searchable fields)
//!   and `queue_recipients` (lowercased addresses): each host's current
//!   queue.
//! - `queue_jobs` (ids as a JSON array) and `queue_results`, one per
//!   (job, message).
//! - `sequences`: the last number handed out to raw records and to
//!   lifecycle changes (`lifecycles.change_seq`), for live feeds.
//! - `login_marks`: the login throttle's failures, resets and trusted
//!   addresses, by key and time.

use rusqlite::Connection;

use crate::error::{Result, StoreError};

/// The counter columns of the rollup tables, in the order of
/// `Counters::NAMES` (a test checks that they agree: adding a counter
/// needs a migration adding its column).
const ROLLUP_COLUMNS: &str = "
    messages INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    incomplete INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    origin_smtp INTEGER NOT NULL DEFAULT 0,
    origin_local INTEGER NOT NULL DEFAULT 0,
    origin_bounce INTEGER NOT NULL DEFAULT 0,
    origin_delay_warning INTEGER NOT NULL DEFAULT 0,
    origin_unknown INTEGER NOT NULL DEFAULT 0,
    state_in_flight INTEGER NOT NULL DEFAULT 0,
    state_frozen INTEGER NOT NULL DEFAULT 0,
    state_completed INTEGER NOT NULL DEFAULT 0,
    state_removed INTEGER NOT NULL DEFAULT 0,
    messages_deferred INTEGER NOT NULL DEFAULT 0,
    messages_bounced INTEGER NOT NULL DEFAULT 0,
    addresses INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    bounced INTEGER NOT NULL DEFAULT 0,
    deferred INTEGER NOT NULL DEFAULT 0,
    still_deferred INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    frozen INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    marked_delivered INTEGER NOT NULL DEFAULT 0,
    attempted INTEGER NOT NULL DEFAULT 0,
    delivered_first_attempt INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    deferrals INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    bytes_delivered INTEGER NOT NULL DEFAULT 0,
    delay_sum_ms INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    rejected_temporary INTEGER NOT NULL DEFAULT 0,
";

fn migration_1() -> String {
    let rollup = |name: &str| {
        format!(
            "CREATE TABLE {name} (
                bucket INTEGER NOT NULL,
                host TEXT NOT NULL,
                dim INTEGER NOT NULL,
                key TEXT NOT NULL,
                {ROLLUP_COLUMNS}
                delay BLOB,
                samples TEXT,
                PRIMARY KEY (bucket, host, dim, key)
            ) WITHOUT ROWID;"
        )
    };
    format!(
        "
        CREATE TABLE raw_records (
            rowid INTEGER PRIMARY KEY,
            host TEXT NOT NULL,
            log TEXT NOT NULL,
            file_id INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            read_at_ms INTEGER NOT NULL,
            at_ms INTEGER,
            day INTEGER NOT NULL,
            message_id TEXT,
            event_kind TEXT NOT NULL,
            bytes BLOB NOT NULL
        );
        CREATE UNIQUE INDEX raw_records_origin ON raw_records (host, file_id, offset);
        CREATE INDEX raw_records_message ON raw_records (message_id, host)
            WHERE message_id IS NOT NULL;
        CREATE INDEX raw_records_day ON raw_records (day);
        CREATE VIRTUAL TABLE raw_fts USING fts5 (
            line, content = '', contentless_delete = 1
        );

        CREATE TABLE lifecycles (
            rowid INTEGER PRIMARY KEY,
            host TEXT NOT NULL,
            id TEXT NOT NULL,
            cohort_ms INTEGER NOT NULL,
            last_ms INTEGER NOT NULL,
            state TEXT NOT NULL,
            sender TEXT,
            sender_domain TEXT,
            subject TEXT,
            msgid_header TEXT,
            client_ip TEXT,
            body BLOB NOT NULL
        );
        CREATE UNIQUE INDEX lifecycles_key ON lifecycles (host, id);
        CREATE INDEX lifecycles_id ON lifecycles (id);
        CREATE INDEX lifecycles_cohort ON lifecycles (cohort_ms, host, id);
        CREATE INDEX lifecycles_last ON lifecycles (last_ms);
        CREATE INDEX lifecycles_sender ON lifecycles (sender, cohort_ms);
        CREATE INDEX lifecycles_sender_domain ON lifecycles (sender_domain, cohort_ms);
        CREATE INDEX lifecycles_msgid ON lifecycles (msgid_header)
            WHERE msgid_header IS NOT NULL;
        CREATE INDEX lifecycles_client ON lifecycles (client_ip, cohort_ms)
            WHERE client_ip IS NOT NULL;

        CREATE TABLE recipients (
            lc INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            address TEXT NOT NULL,
            original TEXT,
            domain TEXT NOT NULL,
            outcome TEXT NOT NULL,
            cohort_ms INTEGER NOT NULL,
            PRIMARY KEY (lc, idx)
        ) WITHOUT ROWID;
        CREATE INDEX recipients_address ON recipients (address, cohort_ms);
        CREATE INDEX recipients_original ON recipients (original, cohort_ms)
            WHERE original IS NOT NULL;
        CREATE INDEX recipients_domain ON recipients (domain, cohort_ms);
        CREATE INDEX recipients_outcome ON recipients (outcome, cohort_ms);

        CREATE TABLE message_reasons (
            class TEXT NOT NULL,
            cohort_ms INTEGER NOT NULL,
            lc INTEGER NOT NULL,
            PRIMARY KEY (class, cohort_ms, lc)
        ) WITHOUT ROWID;
        CREATE INDEX message_reasons_lc ON message_reasons (lc);

        CREATE TABLE attempts (
            lc INTEGER NOT NULL,
            rcpt INTEGER NOT NULL,
            n INTEGER NOT NULL,
            at_ms INTEGER NOT NULL,
            result TEXT NOT NULL,
            transport TEXT,
            remote_host TEXT,
            remote_ip TEXT,
            code INTEGER,
            enhanced TEXT,
            reason TEXT,
            text TEXT,
            PRIMARY KEY (lc, rcpt, n)
        ) WITHOUT ROWID;
        CREATE INDEX attempts_at ON attempts (at_ms);

        CREATE TABLE rejects (
            rowid INTEGER PRIMARY KEY,
            host TEXT NOT NULL,
            log TEXT NOT NULL,
            file_id INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            at_ms INTEGER NOT NULL,
            stage TEXT NOT NULL,
            temporary INTEGER NOT NULL,
            client_ip TEXT,
            client_name TEXT,
            helo TEXT,
            sender TEXT,
            recipient TEXT,
            recipient_domain TEXT,
            message_id TEXT,
            reason TEXT NOT NULL,
            class TEXT NOT NULL
        );
        CREATE UNIQUE INDEX rejects_origin ON rejects (host, file_id, offset);
        CREATE INDEX rejects_at ON rejects (at_ms);
        CREATE INDEX rejects_client ON rejects (client_ip, at_ms);
        CREATE INDEX rejects_class ON rejects (class, at_ms);
        CREATE INDEX rejects_domain ON rejects (recipient_domain, at_ms);

        {hour}
        {day}

        CREATE TABLE hosts (
            host TEXT PRIMARY KEY,
            first_ms INTEGER,
            last_ms INTEGER,
            last_read_ms INTEGER,
            records INTEGER NOT NULL DEFAULT 0,
            messages INTEGER NOT NULL DEFAULT 0,
            rejects INTEGER NOT NULL DEFAULT 0
        );

        CREATE TABLE blobs (
            name TEXT PRIMARY KEY,
            data BLOB NOT NULL,
            updated_ms INTEGER NOT NULL
        );

        CREATE TABLE audit (
            rowid INTEGER PRIMARY KEY,
            at_ms INTEGER NOT NULL,
            actor TEXT NOT NULL,
            role TEXT,
            client_ip TEXT,
            action TEXT NOT NULL,
            target TEXT,
            params TEXT,
            outcome TEXT NOT NULL
        );
        CREATE INDEX audit_at ON audit (at_ms);
        -- The audit trail is append-only: rows are never changed, and only
        -- retention deletes them.
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit entries cannot be changed'); END;
        ",
        hour = rollup("rollup_hour"),
        day = rollup("rollup_day"),
    )
}

/// Version 2: rollup cells keyed by dimension first, so that a query for
/// one dimension (the cells of every destination domain over a month)
/// reads only that dimension's rows.
fn migration_2() -> String {
    let mut sql = String::new();
    for table in ["rollup_hour", "rollup_day"] {
        sql.push_str(&format!(
            "CREATE TABLE {table}_v2 (
                bucket INTEGER NOT NULL,
                host TEXT NOT NULL,
                dim INTEGER NOT NULL,
                key TEXT NOT NULL,
                {ROLLUP_COLUMNS}
                delay BLOB,
                samples TEXT,
                PRIMARY KEY (dim, bucket, host, key)
            ) WITHOUT ROWID;
            INSERT INTO {table}_v2 SELECT * FROM {table};
            DROP TABLE {table};
            ALTER TABLE {table}_v2 RENAME TO {table};
            "
        ));
    }
    sql
}

/// Version 3: the users of the API and their sessions (one per login,
/// holding the hash of its current refresh token).
fn migration_3() -> String {
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL,
        hosts TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER,
        client_ip TEXT
    );
    CREATE INDEX sessions_user ON sessions (user) WHERE revoked_ms IS NULL;
    "
    .to_string()
}

/// Version 4: queue snapshots (their totals as history, each host's
/// current queue) and operators' queue jobs with their results.
fn migration_4() -> String {
    "CREATE TABLE queue_snapshots (
        host TEXT NOT NULL,
        taken_ms INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        frozen INTEGER NOT NULL,
        bounces INTEGER NOT NULL,
        spool_errors INTEGER NOT NULL,
        undelivered INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        oldest_age INTEGER,
        PRIMARY KEY (host, taken_ms)
    ) WITHOUT ROWID;
    CREATE INDEX queue_snapshots_taken ON queue_snapshots (taken_ms);
    CREATE TABLE queue_current (
        host TEXT PRIMARY KEY,
        taken_ms INTEGER NOT NULL
    );
    CREATE TABLE queue_messages (
        host TEXT NOT NULL,
        id TEXT NOT NULL,
        age_key INTEGER NOT NULL,
        age INTEGER,
        size INTEGER,
        sender TEXT NOT NULL,
        frozen INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (host, id)
    ) WITHOUT ROWID;
    CREATE INDEX queue_messages_order ON queue_messages (age_key, host, id);
    CREATE TABLE queue_recipients (
        host TEXT NOT NULL,
        id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        address TEXT NOT NULL,
        delivered INTEGER NOT NULL,
        PRIMARY KEY (host, id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE queue_jobs (
        job_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        action TEXT NOT NULL,
        ids TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT,
        requested_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX queue_jobs_requested ON queue_jobs (requested_ms, job_id);
    CREATE TABLE queue_results (
        job_id TEXT NOT NULL,
        id TEXT NOT NULL,
        host TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        output TEXT NOT NULL,
        finished_ms INTEGER NOT NULL,
        PRIMARY KEY (job_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX queue_results_finished ON queue_results (finished_ms);
    "
    .to_string()
}

/// Version 5: positions for live feeds, and the login throttle's ledger.
///
/// `sequences` holds the last number handed out per sequence, so that a
/// number is never handed out twice even when retention deletes the rows
/// that carried the highest ones: `records` numbers raw records (their
/// rowid, given explicitly from now on), `lifecycles` numbers every change
/// of a lifecycle (its `change_seq`). A live feed reads what lies past the
/// numbers it has seen (see `live`). `login_marks`: failed logins, resets
/// and trusted addresses, under the throttle's keys (see `login`).
fn migration_5() -> String {
    "CREATE TABLE sequences (
        name TEXT PRIMARY KEY,
        last INTEGER NOT NULL
    );
    INSERT INTO sequences (name, last)
        SELECT 'records', coalesce(max(rowid), 0) FROM raw_records;
    INSERT INTO sequences (name, last) VALUES ('lifecycles', 0);
    ALTER TABLE lifecycles ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX lifecycles_change ON lifecycles (change_seq);
    CREATE TABLE login_marks (
        key TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL
    );
    CREATE INDEX login_marks_key ON login_marks (key, at_ms);
    CREATE INDEX login_marks_at ON login_marks (at_ms);
    "
    .to_string()
}

/// Every migration, oldest first. Never edit one that has shipped: add a
/// new one.
fn migrations() -> Vec<String> {
    vec![
        migration_1(),
        migration_2(),
        migration_3(),
        migration_4(),
        migration_5(),
    ]
}

/// The first `version - 1` migrations: a database as an older build
/// left it, for upgrade tests.
#[cfg(test)]
pub fn migrations_before(version: usize) -> Vec<String> {
    migrations().into_iter().take(version - 1).collect()
}

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    migrations().len() as i64
}

/// Brings the database up to the latest schema version.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let all = migrations();
    let known = all.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in all.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;

        // Another process may have applied it while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        tx.commit()?;
        tracing::info!(version, "Store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use exim_pilot_schema::report::Counters;

    #[test]
    fn rollup_columns_follow_the_counters() {
        let cols: Vec<&str> = ROLLUP_COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        assert_eq!(cols, Counters::NAMES.to_vec());
    }

    #[test]
    fn rollup_cells_survive_the_change_of_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&migration_1()).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        conn.execute(
            "INSERT INTO rollup_day (bucket, host, dim, key, messages) VALUES (20000, 'mx', 1, 'a', 7)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT messages FROM rollup_day WHERE dim = 1 AND key = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 7);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT * FROM rollup_day WHERE dim = 1 AND bucket >= 0",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("PRIMARY KEY"), "{plan}");
    }

    #[test]
    fn migrating_twice_is_harmless() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::TooNew { .. })));
    }
}
