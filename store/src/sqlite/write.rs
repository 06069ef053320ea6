//! Writing: batches, lifecycle upserts and rollup maintenance.
//!
//! A batch is one immediate transaction. Rollups are kept right by
//! difference: each changed lifecycle subtracts the cells of its stored
//! version and adds those of its new one, and new rejections add theirs.
//! The differences of the whole batch are summed in memory first, so a
//! batch of a thousand messages of the same hour touches each shared cell
//! (the hour's total, a busy domain) once, not a thousand times.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use exim_pilot_schema::report::{
    cohort_time, contribution, recipient_domain, reject_contribution, sender_domain_key, CellKey,
    Counters, ReportCells,
};
use exim_pilot_schema::{AttemptResult, Lifecycle, ReasonClass, RejectRecord};

use super::codec::{self, cell_extras, enum_str, ms, DAY_MS};
use super::live::Sequences;
use crate::error::{Result, StoreError};
use crate::types::{AuditEntry, Batch, BatchSummary, StoredRecord};

/// What a batch adds to one host's summary.
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

/// Writes a whole batch in one transaction.
pub fn commit_batch(conn: &mut Connection, batch: Batch) -> Result<BatchSummary> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut summary = BatchSummary::default();
    let mut hosts: HashMap<String, HostDelta> = HashMap::new();
    let mut delta = ReportCells::new();
    let mut seq = Sequences::load(&tx)?;

    for record in &batch.records {
        if insert_record(&tx, record, &mut seq)? {
            summary.records_added += 1;
            let h = hosts.entry(record.origin.host.clone()).or_default();
            h.records += 1;
            h.saw(record.at.map(ms));
            h.last_read_ms = Some(h.last_read_ms.unwrap_or(i64::MIN).max(record.read_at_ms));
        }
    }
    for lc in &batch.lifecycles {
        match upsert_lifecycle(&tx, lc, &mut delta, &mut seq)? {
            Upsert::Added => {
                summary.lifecycles_added += 1;
                let h = hosts.entry(lc.host.clone()).or_default();
                h.messages += 1;
                h.saw(lc.last_seen.map(ms));
            }
            Upsert::Updated => summary.lifecycles_updated += 1,
            Upsert::Unchanged => {}
        }
    }
    for reject in &batch.rejects {
        if insert_reject(&tx, reject)? {
            summary.rejects_added += 1;
            delta.add(&reject_contribution(reject));
            let h = hosts.entry(reject.origin.host.clone()).or_default();
            h.rejects += 1;
            h.saw(Some(ms(reject.at)));
        }
    }

    delta.prune();
    apply_cells(&tx, "rollup_hour", &delta)?;
    apply_cells(&tx, "rollup_day", &delta.by_day())?;

    for blob in &batch.blobs {
        tx.prepare_cached(
            "INSERT INTO blobs (name, data, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET data = excluded.data,
                 updated_ms = excluded.updated_ms",
        )?
        .execute(params![blob.name, blob.data, Utc::now().timestamp_millis()])?;
        summary.blobs_saved += 1;
    }
    update_hosts(&tx, &hosts)?;
    seq.save(&tx)?;
    tx.commit()?;
    Ok(summary)
}

/// Inserts a record under the next record number (its rowid, which live
/// feeds follow), unless its origin is stored already.
fn insert_record(tx: &Transaction<'_>, r: &StoredRecord, seq: &mut Sequences) -> Result<bool> {
    let at_ms = r.at.map(ms);
    let day = at_ms.unwrap_or(r.read_at_ms).div_euclid(DAY_MS);
    let rowid = seq.records + 1;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO raw_records (host, log, file_id, offset, read_at_ms, at_ms, day,
                 message_id, event_kind, bytes, rowid)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            r.origin.host,
            r.origin.log.as_str(),
            r.origin.file_id as i64,
            r.origin.offset as i64,
            r.read_at_ms,
            at_ms,
            day,
            r.message_id.map(|id| id.to_string()),
            r.event_kind,
            r.bytes,
            rowid,
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    seq.records = rowid;
    tx.prepare_cached("INSERT INTO raw_fts (rowid, line) VALUES (?1, ?2)")?
        .execute(params![rowid, String::from_utf8_lossy(&r.bytes)])?;
    Ok(true)
}

enum Upsert {
    Added,
    Updated,
    Unchanged,
}

fn upsert_lifecycle(
    tx: &Transaction<'_>,
    lc: &Lifecycle,
    delta: &mut ReportCells,
    seq: &mut Sequences,
) -> Result<Upsert> {
    let json = serde_json::to_vec(lc).map_err(|e| StoreError::corrupt("lifecycle", e))?;
    let id = lc.id.to_string();
    let existing: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT rowid, body FROM lifecycles WHERE host = ?1 AND id = ?2")?
        .query_row(params![lc.host, id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;

    let cohort_ms = cohort_time(lc).map_or(0, ms);
    let last_ms = lc
        .last_seen
        .or(lc.completed_at)
        .map_or(cohort_ms, ms)
        .max(cohort_ms);
    let sender = lc.sender.as_ref().map(|s| s.to_ascii_lowercase());
    let sender_domain = lc.sender.as_ref().map(|_| sender_domain_key(lc));
    let msgid = lc.message_id_header.as_deref().map(codec::normalize_msgid);
    let client_ip = lc.client.as_ref().and_then(|c| c.ip.clone());
    let body = codec::encode_lifecycle(&json)?;

    let (rowid, outcome) = match existing {
        Some((rowid, old_body)) => {
            let old_json = codec::inflate(&old_body)?;
            if old_json == json {
                return Ok(Upsert::Unchanged);
            }
            let old: Lifecycle = serde_json::from_slice(&old_json)
                .map_err(|e| StoreError::corrupt("lifecycle", e))?;
            if lc.incomplete_start && !old.incomplete_start {
                // A line that came after the processor let the finished
                // message go starts a fragment without the arrival; the
                // stored lifecycle is the whole story and stays. The line
                // itself is kept with the raw records.
                tracing::debug!(host = %lc.host, id = %lc.id, "Late fragment of a stored message kept out");
                return Ok(Upsert::Unchanged);
            }
            delta.subtract(&contribution(&old));
            tx.prepare_cached(
                "UPDATE lifecycles SET cohort_ms = ?2, last_ms = ?3, state = ?4, sender = ?5,
                     sender_domain = ?6, subject = ?7, msgid_header = ?8, client_ip = ?9,
                     body = ?10, change_seq = ?11
                 WHERE rowid = ?1",
            )?
            .execute(params![
                rowid,
                cohort_ms,
                last_ms,
                lc.state.as_str(),
                sender,
                sender_domain,
                lc.subject,
                msgid,
                client_ip,
                body,
                seq.next_change()
            ])?;
            for table in ["recipients", "attempts", "message_reasons"] {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE lc = ?1"))?
                    .execute([rowid])?;
            }
            (rowid, Upsert::Updated)
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO lifecycles (host, id, cohort_ms, last_ms, state, sender,
                     sender_domain, subject, msgid_header, client_ip, body, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                lc.host,
                id,
                cohort_ms,
                last_ms,
                lc.state.as_str(),
                sender,
                sender_domain,
                lc.subject,
                msgid,
                client_ip,
                body,
                seq.next_change()
            ])?;
            (tx.last_insert_rowid(), Upsert::Added)
        }
    };

    index_lifecycle(tx, rowid, cohort_ms, lc)?;
    delta.add(&contribution(lc));
    Ok(outcome)
}

/// Writes the rows that let searches find a lifecycle by address, domain,
/// outcome and reason, and its delivery attempts.
fn index_lifecycle(tx: &Transaction<'_>, rowid: i64, cohort_ms: i64, lc: &Lifecycle) -> Result<()> {
    let mut reasons: Vec<ReasonClass> = Vec::new();
    for (i, r) in lc.recipients.iter().enumerate() {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO recipients (lc, idx, address, original, domain, outcome,
                 cohort_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            rowid,
            i as i64,
            r.address.to_ascii_lowercase(),
            r.original.as_ref().map(|o| o.to_ascii_lowercase()),
            recipient_domain(r),
            r.outcome.as_str(),
            cohort_ms
        ])?;
        reasons.extend(r.reason);
        for (n, a) in r.history.iter().enumerate() {
            if a.result != AttemptResult::Ok {
                reasons.push(a.reason.unwrap_or(ReasonClass::Other));
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (lc, rcpt, n, at_ms, result, transport,
                     remote_host, remote_ip, code, enhanced, reason, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                rowid,
                i as i64,
                n as i64,
                ms(a.at),
                enum_str(&a.result),
                a.transport,
                a.remote_host,
                a.remote_ip,
                a.code,
                a.enhanced,
                a.reason.map(|c| c.as_str()),
                a.text
            ])?;
        }
    }
    reasons.sort();
    reasons.dedup();
    for class in reasons {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO message_reasons (class, cohort_ms, lc) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![class.as_str(), cohort_ms, rowid])?;
    }
    Ok(())
}

fn insert_reject(tx: &Transaction<'_>, r: &RejectRecord) -> Result<bool> {
    let recipient_domain = r
        .recipient
        .as_deref()
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase());
    let n = tx
        .prepare_cached(
            "INSERT INTO rejects (host, log, file_id, offset, at_ms, stage, temporary,
                 client_ip, client_name, helo, sender, recipient, recipient_domain,
                 message_id, reason, class)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            r.origin.host,
            r.origin.log.as_str(),
            r.origin.file_id as i64,
            r.origin.offset as i64,
            ms(r.at),
            enum_str(&r.stage),
            r.temporary,
            r.client_ip,
            r.client_name,
            r.helo,
            r.sender,
            r.recipient,
            recipient_domain,
            r.message_id.map(|id| id.to_string()),
            r.reason,
            r.class.as_str(),
        ])?;
    Ok(n == 1)
}

/// The statements that change one rollup table.
struct RollupSql {
    upsert: String,
    delete_if_zero: String,
}

impl RollupSql {
    fn new(table: &str) -> RollupSql {
        let names = Counters::NAMES;
        let placeholders: Vec<String> = (5..5 + names.len() + 2).map(|i| format!("?{i}")).collect();
        let sums: Vec<String> = names
            .iter()
            .map(|c| format!("{c} = {c} + excluded.{c}"))
            .collect();
        let zeros: Vec<String> = names.iter().map(|c| format!("{c} = 0")).collect();
        RollupSql {
            upsert: format!(
                "INSERT INTO {table} (bucket, host, dim, key, {cols}, delay, samples)
                 VALUES (?1, ?2, ?3, ?4, {values})
                 ON CONFLICT (dim, bucket, host, key) DO UPDATE SET {sums},
                     delay = hist_add(delay, excluded.delay),
                     samples = samples_add(samples, excluded.samples)",
                cols = names.join(", "),
                values = placeholders.join(", "),
                sums = sums.join(", "),
            ),
            delete_if_zero: format!(
                "DELETE FROM {table} WHERE bucket = ?1 AND host = ?2 AND dim = ?3 AND key = ?4
                     AND delay IS NULL AND {}",
                zeros.join(" AND ")
            ),
        }
    }
}

/// Adds a set of cell differences to a rollup table, one upsert per cell;
/// a cell that some difference lowered is deleted when it comes to zero.
pub fn apply_cells(tx: &Transaction<'_>, table: &str, cells: &ReportCells) -> Result<()> {
    static HOUR: OnceLock<RollupSql> = OnceLock::new();
    static DAY: OnceLock<RollupSql> = OnceLock::new();
    let sql = match table {
        "rollup_hour" => HOUR.get_or_init(|| RollupSql::new(table)),
        "rollup_day" => DAY.get_or_init(|| RollupSql::new(table)),
        other => return Err(StoreError::InvalidQuery(format!("no rollup table {other}"))),
    };
    let mut upsert = tx.prepare_cached(&sql.upsert)?;
    let mut delete = tx.prepare_cached(&sql.delete_if_zero)?;

    // Sorted, so that writes walk the table's key order.
    let mut keys: Vec<&CellKey> = cells.cells.keys().collect();
    keys.sort_by(|a, b| (a.dim, a.hour, &a.host, &a.key).cmp(&(b.dim, b.hour, &b.host, &b.key)));
    let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(Counters::NAMES.len() + 6);
    for key in keys {
        let Some(change) = cells.cells.get(key) else {
            continue;
        };
        let (delay, samples) = cell_extras(change);
        values.clear();
        values.extend([
            key.hour.into(),
            key.host.clone().into(),
            key.dim.code().into(),
            key.key.clone().into(),
        ]);
        let counts = change.counters.to_array();
        values.extend(counts.map(rusqlite::types::Value::from));
        values.push(delay.into());
        values.push(samples.into());
        upsert.execute(rusqlite::params_from_iter(values.iter()))?;

        let lowered =
            counts.iter().any(|n| *n < 0) || change.delay.buckets.iter().any(|(_, n)| *n < 0);
        if lowered {
            delete.execute(params![key.hour, key.host, key.dim.code(), key.key])?;
        }
    }
    Ok(())
}

fn update_hosts(tx: &Transaction<'_>, hosts: &HashMap<String, HostDelta>) -> Result<()> {
    for (host, d) in hosts {
        tx.prepare_cached(
            "INSERT INTO hosts (host, first_ms, last_ms, last_read_ms, records, messages, rejects)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (host) DO UPDATE SET
                 first_ms = CASE WHEN first_ms IS NULL THEN excluded.first_ms
                     WHEN excluded.first_ms IS NULL THEN first_ms
                     ELSE min(first_ms, excluded.first_ms) END,
                 last_ms = CASE WHEN last_ms IS NULL THEN excluded.last_ms
                     WHEN excluded.last_ms IS NULL THEN last_ms
                     ELSE max(last_ms, excluded.last_ms) END,
                 last_read_ms = CASE WHEN last_read_ms IS NULL THEN excluded.last_read_ms
                     WHEN excluded.last_read_ms IS NULL THEN last_read_ms
                     ELSE max(last_read_ms, excluded.last_read_ms) END,
                 records = records + excluded.records,
                 messages = messages + excluded.messages,
                 rejects = rejects + excluded.rejects",
        )?
        .execute(params![
            host,
            d.first_ms,
            d.last_ms,
            d.last_read_ms,
            d.records,
            d.messages,
            d.rejects
        ])?;
    }
    Ok(())
}

/// Appends one audit entry.
pub fn append_audit(conn: &mut Connection, e: &AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, actor, role, client_ip, action, target, params, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ms(e.at),
        e.actor,
        e.role,
        e.client_ip,
        e.action,
        e.target,
        e.params.as_ref().map(|p| p.to_string()),
        e.outcome
    ])?;
    Ok(())
}

/// Recomputes both rollup tables from the stored lifecycles and rejections.
pub fn rebuild_rollups(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("DELETE FROM rollup_hour; DELETE FROM rollup_day;")?;
    let mut cells = ReportCells::new();
    {
        let mut stmt = tx.prepare("SELECT body FROM lifecycles")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let body: Vec<u8> = row.get(0)?;
            cells.add(&contribution(&codec::decode_lifecycle(&body)?));
        }
        let mut stmt = tx.prepare(&format!("{} FROM rejects", super::read::REJECT_COLUMNS))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            cells.add(&reject_contribution(&super::read::reject_from_row(row)?));
        }
    }
    cells.prune();
    apply_cells(&tx, "rollup_hour", &cells)?;
    apply_cells(&tx, "rollup_day", &cells.by_day())?;
    tx.commit()?;
    Ok(())
}
