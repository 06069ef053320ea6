//! The login throttle's ledger in ClickHouse (see [`crate::login`]):
//! `login_marks`, a `MergeTree` sorted by (key, time) and partitioned by
//! day. Marks are only ever appended, as the ledger needs; a read takes
//! the ranges of its keys in the days asked, and the newest marks of each.

use serde::{Deserialize, Serialize};

use super::rows::{day_of_ms, from_ms, ms, DAY_MS};
use super::Db;
use crate::error::{Result, StoreError};
use crate::login::{LoginMark, LoginMarkKind};

#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
struct MarkRow {
    key: String,
    at_ms: i64,
    day: u16,
    kind: String,
}

/// Appends marks in one insert.
pub async fn append(db: &Db, marks: &[LoginMark]) -> Result<()> {
    let rows: Vec<MarkRow> = marks
        .iter()
        .map(|m| MarkRow {
            key: m.key.clone(),
            at_ms: ms(m.at),
            day: day_of_ms(ms(m.at)),
            kind: m.kind.as_str().to_string(),
        })
        .collect();
    db.insert("login_marks", &rows, "append login marks").await
}

/// The newest `per_key` marks of each key from `since_ms` on.
pub async fn marks(
    db: &Db,
    keys: &[String],
    since_ms: i64,
    per_key: usize,
) -> Result<Vec<LoginMark>> {
    if keys.is_empty() || per_key == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT key, at_ms, day, kind FROM login_marks
         WHERE key IN ({}) AND day >= toDate(?) AND at_ms >= ?
         ORDER BY key, at_ms DESC LIMIT {per_key} BY key",
        vec!["?"; keys.len()].join(", ")
    );
    let mut q = db.query(&sql);
    for key in keys {
        q = q.bind(key.as_str());
    }
    let day = from_ms(since_ms.div_euclid(DAY_MS) * DAY_MS)
        .format("%Y-%m-%d")
        .to_string();
    let rows: Vec<MarkRow> = db
        .fetch(q.bind(day).bind(since_ms), "read login marks")
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(LoginMark {
                kind: LoginMarkKind::parse(&r.kind)
                    .ok_or_else(|| StoreError::corrupt("login mark", &r.kind))?,
                key: r.key,
                at: from_ms(r.at_ms),
            })
        })
        .collect()
}
