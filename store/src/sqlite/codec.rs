//! Conversions between the data model and SQLite values.

use std::cell::RefCell;

use chrono::{DateTime, TimeZone, Utc};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;

use exim_pilot_schema::report::{Cell, Counters, Samples, COUNTER_COUNT};
use exim_pilot_schema::Lifecycle;

use crate::error::{Result, StoreError};

/// Milliseconds since the epoch.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// A lifecycle as stored: its JSON, deflated. JSON keeps the stored form
/// readable by any tool and by later versions; deflate makes it about five
/// times smaller.
pub fn encode_lifecycle(json: &[u8]) -> Result<Vec<u8>> {
    // The compressor's state is large to set up, so each thread keeps one.
    thread_local! {
        static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    }
    DEFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset();
        let mut out = Vec::with_capacity(json.len() / 3 + 64);
        loop {
            let done = d.total_in() as usize;
            let status = d
                .compress_vec(&json[done..], &mut out, FlushCompress::Finish)
                .map_err(|e| StoreError::corrupt("lifecycle", e))?;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            out.reserve(out.capacity().max(1024));
        }
    })
}

/// The JSON of a stored lifecycle.
pub fn inflate(body: &[u8]) -> Result<Vec<u8>> {
    thread_local! {
        static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    }
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(false);
        let mut out = Vec::with_capacity(body.len() * 5 + 64);
        loop {
            let (done_in, done_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&body[done_in as usize..], &mut out, FlushDecompress::None)
                .map_err(|e| StoreError::corrupt("lifecycle", e))?;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(1024));
            } else if d.total_in() == done_in && d.total_out() == done_out {
                // Room to write and nothing more to read: the body is cut short.
                return Err(StoreError::corrupt("lifecycle", "truncated body"));
            }
        }
    })
}

/// A stored lifecycle.
pub fn decode_lifecycle(body: &[u8]) -> Result<Lifecycle> {
    serde_json::from_slice(&inflate(body)?).map_err(|e| StoreError::corrupt("lifecycle", e))
}

/// The serde name of a unit enum value (`"rcpt"`, `"in_flight"`...).
pub fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Reads back what [`enum_str`] wrote.
pub fn parse_enum<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| StoreError::corrupt(what, e))
}

/// The counter columns, comma-separated.
pub fn counter_columns() -> String {
    Counters::NAMES.join(", ")
}

/// Reads a cell from a row whose columns from `first` on are the counters,
/// then the histogram, then the samples, into an existing cell, reusing
/// its allocations: reading many rows one after another allocates almost
/// nothing.
pub fn read_cell(row: &rusqlite::Row<'_>, first: usize, cell: &mut Cell) -> Result<()> {
    let mut values = [0i64; COUNTER_COUNT];
    for (i, v) in values.iter_mut().enumerate() {
        *v = row.get_ref(first + i)?.as_i64().map_err(bad_cell)?;
    }
    cell.counters = Counters::from_array(values);
    match row
        .get_ref(first + COUNTER_COUNT)?
        .as_blob_or_null()
        .map_err(bad_cell)?
    {
        Some(b) => cell
            .delay
            .read_bytes(b)
            .ok_or_else(|| StoreError::corrupt("delay histogram", "bad varint"))?,
        None => cell.delay.buckets.clear(),
    }
    cell.samples = match row
        .get_ref(first + COUNTER_COUNT + 1)?
        .as_str_or_null()
        .map_err(bad_cell)?
    {
        Some(s) => serde_json::from_str(s).map_err(|e| StoreError::corrupt("samples", e))?,
        None => Samples::default(),
    };
    Ok(())
}

/// A rollup column of the wrong type.
pub fn bad_cell(e: rusqlite::types::FromSqlError) -> StoreError {
    StoreError::corrupt("rollup cell", e)
}

/// The histogram and samples columns of a cell (NULL when empty).
pub fn cell_extras(cell: &Cell) -> (Option<Vec<u8>>, Option<String>) {
    let delay = (!cell.delay.is_empty()).then(|| cell.delay.to_bytes());
    let samples = (!cell.samples.0.is_empty())
        .then(|| serde_json::to_string(&cell.samples).unwrap_or_default());
    (delay, samples)
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Message-ID header as indexed: without angle brackets or blanks.
pub fn normalize_msgid(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// Turns words typed by a user into an FTS5 query: each word becomes a
/// quoted phrase (so punctuation inside it cannot be read as query
/// syntax), and all words must match. The text is checked by
/// [`crate::search_words`] first.
pub fn fts_query(text: &str) -> Result<String> {
    let words: Vec<String> = crate::search_words(text)?
        .into_iter()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries_quote_each_word() {
        assert_eq!(
            fts_query(" bob@example.com  say\"hi ").unwrap(),
            "\"bob@example.com\" \"say\"\"hi\""
        );
        assert!(fts_query("   ").is_err());
    }

    #[test]
    fn fts_queries_of_too_many_words_a_nul_or_too_long_are_refused() {
        let words = "a* ".repeat(86_000);
        assert!(matches!(
            fts_query(&words),
            Err(StoreError::InvalidQuery(_))
        ));
        assert!(fts_query(&"a ".repeat(32)).is_ok());
        assert!(fts_query(&"a ".repeat(33)).is_err());
        assert!(matches!(
            fts_query("ali\u{0}ce"),
            Err(StoreError::InvalidQuery(_))
        ));
        assert!(fts_query(&"x".repeat(1001)).is_err());
    }

    #[test]
    fn bodies_round_trip() {
        let json = br#"{"a":1}"#;
        assert_eq!(inflate(&encode_lifecycle(json).unwrap()).unwrap(), json);
        assert!(inflate(b"not deflate at all").is_err());

        // Larger than any first guess of the output size, in both directions.
        let big: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = encode_lifecycle(&big).unwrap();
        assert_eq!(inflate(&packed).unwrap(), big);
        assert!(inflate(&packed[..packed.len() / 2]).is_err());
    }
}
