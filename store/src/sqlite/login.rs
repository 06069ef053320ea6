//! The login throttle's ledger in the embedded store (see
//! [`crate::login`]): one row per mark, read newest first by key through
//! the `login_marks_key` index.

use rusqlite::{params, Connection, TransactionBehavior};

use super::codec::{from_ms, ms};
use crate::error::{Result, StoreError};
use crate::login::{LoginMark, LoginMarkKind};

/// Appends marks in one transaction.
pub fn append(conn: &mut Connection, marks: &[LoginMark]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt =
            tx.prepare_cached("INSERT INTO login_marks (key, at_ms, kind) VALUES (?1, ?2, ?3)")?;
        for m in marks {
            stmt.execute(params![m.key, ms(m.at), m.kind.as_str()])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The newest `per_key` marks of each key from `since_ms` on.
pub fn marks(
    conn: &Connection,
    keys: &[String],
    since_ms: i64,
    per_key: usize,
) -> Result<Vec<LoginMark>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, kind FROM login_marks WHERE key = ?1 AND at_ms >= ?2
         ORDER BY at_ms DESC LIMIT ?3",
    )?;
    let mut out = Vec::new();
    for key in keys {
        let mut rows = stmt.query(params![key, since_ms, per_key as i64])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(1)?;
            out.push(LoginMark {
                key: key.clone(),
                at: from_ms(row.get(0)?),
                kind: LoginMarkKind::parse(&kind)
                    .ok_or_else(|| StoreError::corrupt("login mark", kind))?,
            });
        }
    }
    Ok(out)
}
