//! Pagination cursors, the same for every backend: an opaque hex string
//! of a few text parts, so a caller cannot tell (or depend on) what a
//! page resumes after.

use crate::error::{Result, StoreError};

/// An opaque pagination cursor made of a few text parts.
pub(crate) fn encode_cursor(parts: &[&str]) -> String {
    let joined = parts.join("\u{1f}");
    joined.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The parts of a cursor, checking their count.
pub(crate) fn decode_cursor(cursor: &str, parts: usize) -> Result<Vec<String>> {
    let bad = || StoreError::InvalidCursor(cursor.to_string());
    if !cursor.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let out: Vec<String> = text.split('\u{1f}').map(str::to_string).collect();
    if out.len() != parts {
        return Err(bad());
    }
    Ok(out)
}

/// The part of a cursor that must be a number.
pub(crate) fn cursor_number(cursor: &str, part: &str) -> Result<i64> {
    part.parse()
        .map_err(|_| StoreError::InvalidCursor(cursor.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(&["1700000000000", "mx1.example.org", "1kYFeb-0007uW-0p"]);
        assert_eq!(
            decode_cursor(&c, 3).unwrap(),
            vec!["1700000000000", "mx1.example.org", "1kYFeb-0007uW-0p"]
        );
        assert!(decode_cursor(&c, 2).is_err());
        assert!(decode_cursor("zz", 1).is_err());
        assert!(decode_cursor("abc", 1).is_err());
    }
}
