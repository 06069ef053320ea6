//! SQL functions the writer uses to merge rollup cells inside SQLite, so
//! that adding to a cell is one `INSERT ... ON CONFLICT DO UPDATE` instead
//! of a read and a write.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use exim_pilot_schema::report::{DelayHistogram, Samples};

fn fail(what: &str) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(what.to_string().into())
}

fn histogram(ctx: &Context<'_>, i: usize) -> rusqlite::Result<DelayHistogram> {
    match ctx.get_raw(i) {
        ValueRef::Null => Ok(DelayHistogram::default()),
        ValueRef::Blob(b) => DelayHistogram::from_bytes(b).ok_or_else(|| fail("bad histogram")),
        _ => Err(fail("a histogram must be a blob")),
    }
}

fn samples(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Samples> {
    match ctx.get_raw(i) {
        ValueRef::Null => Ok(Samples::default()),
        ValueRef::Text(t) => serde_json::from_slice(t).map_err(|_| fail("bad samples")),
        _ => Err(fail("samples must be text")),
    }
}

/// Registers `hist_add(a, b)` (the sum of two histograms, NULL when empty)
/// and `samples_add(a, b)` (the merged sample sets, NULL when empty).
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("hist_add", 2, flags, |ctx| {
        let mut a = histogram(ctx, 0)?;
        a.add(&histogram(ctx, 1)?);
        Ok((!a.is_empty()).then(|| a.to_bytes()))
    })?;
    conn.create_scalar_function("samples_add", 2, flags, |ctx| {
        let mut a = samples(ctx, 0)?;
        a.add(&samples(ctx, 1)?);
        Ok((!a.0.is_empty()).then(|| serde_json::to_string(&a).unwrap_or_default()))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_samples_merge_in_sql() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let mut a = DelayHistogram::default();
        a.record(1000);
        let mut b = DelayHistogram::default();
        b.record(1000);
        b.record(5);
        let merged: Vec<u8> = conn
            .query_row(
                "SELECT hist_add(?1, ?2)",
                (a.to_bytes(), b.to_bytes()),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(DelayHistogram::from_bytes(&merged).unwrap().count(), 3);
        let gone: Option<Vec<u8>> = conn
            .query_row(
                "SELECT hist_add(?1, NULL)",
                [DelayHistogram::default().to_bytes()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, None);
        let s: String = conn
            .query_row(r#"SELECT samples_add('["b"]', '["a","c"]')"#, [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(s, r#"["a","b","c"]"#);
        assert!(conn
            .query_row("SELECT hist_add(x'80', NULL)", [], |r| r
                .get::<_, Option<Vec<u8>>>(0))
            .is_err());
    }
}
