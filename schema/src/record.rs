//! Raw log records as they travel from the tailer to the processor.
//!
//! A record is one logical log entry: usually one line, but a rejectlog
//! entry with its header dump, or a paniclog entry that spans lines, is one
//! record. Its position (host, file identity, byte offset) names it
//! uniquely, so storing it twice can be detected and undone.

use serde::{Deserialize, Serialize};

/// Which of Exim's three logs a record comes from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LogFile {
    /// `mainlog`: arrivals, deliveries, connections.
    Main,
    /// `rejectlog`: rejected SMTP commands, with header dumps.
    Reject,
    /// `paniclog`: serious configuration or runtime errors.
    Panic,
}

impl LogFile {
    /// The name Exim gives the file by default.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFile::Main => "main",
            LogFile::Reject => "reject",
            LogFile::Panic => "panic",
        }
    }

    /// Guesses the log kind from a file name such as `mainlog.1.gz`,
    /// `exim_rejectlog`, `exim-rej.log` (`rej` as a word of its own) or
    /// `paniclog-20240101`, or, when the file name names no kind (`0042`,
    /// `today.log`), from the name of its folder (`rejectlog/0042`);
    /// anything else is a mainlog.
    pub fn from_path(path: &std::path::Path) -> LogFile {
        let named = |name: Option<&std::ffi::OsStr>| {
            let name = name?.to_string_lossy().to_ascii_lowercase();
            let rej_word = name
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == "rej");
            if name.contains("reject") || rej_word {
                Some(LogFile::Reject)
            } else if name.contains("panic") {
                Some(LogFile::Panic)
            } else if name.contains("main") {
                Some(LogFile::Main)
            } else {
                None
            }
        };
        named(path.file_name())
            .or_else(|| named(path.parent().and_then(|p| p.file_name())))
            .unwrap_or(LogFile::Main)
    }
}

impl std::str::FromStr for LogFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "main" | "mainlog" => Ok(LogFile::Main),
            "reject" | "rejectlog" => Ok(LogFile::Reject),
            "panic" | "paniclog" => Ok(LogFile::Panic),
            other => Err(format!(
                "unknown log kind {other:?}: use main, reject or panic"
            )),
        }
    }
}

/// Where a record was read: enough to name it uniquely and to resume.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct RecordOrigin {
    /// The mail server the log belongs to.
    pub host: String,
    /// Which log.
    pub log: LogFile,
    /// Identity of the file the record was read from (inode and a
    /// fingerprint of its first bytes, see the ingest crate). Two records
    /// with the same host, file identity and offset are the same record.
    pub file_id: u64,
    /// Byte offset of the record's first byte in that file.
    pub offset: u64,
}

/// One raw record: its origin, when it was read, and its bytes without the
/// final newline. Lines inside a multi-line record are joined with `\n`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RawRecord {
    /// Where it was read.
    pub origin: RecordOrigin,
    /// When the tailer read it, in milliseconds since the Unix epoch.
    pub read_at_ms: i64,
    /// The record's bytes, exactly as in the file (not always UTF-8).
    #[serde(with = "bytes_as_text")]
    pub bytes: Vec<u8>,
}

/// Serialises bytes as a string when they are UTF-8 and as an array of
/// numbers otherwise, so JSON stays readable and nothing is lost.
pub mod bytes_as_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr<'a> {
        Text(std::borrow::Cow<'a, str>),
        Bytes(Vec<u8>),
    }

    /// Writes `bytes` as text or as numbers.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(t) => s.serialize_str(t),
            Err(_) => bytes.serialize(s),
        }
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => t.into_owned().into_bytes(),
            Repr::Bytes(b) => b,
        })
    }
}

/// True when `line` starts a new record: it begins with Exim's timestamp
/// (`YYYY-MM-DD HH:MM:SS`), an ISO 8601 syslog stamp
/// (`YYYY-MM-DDTHH:MM:SS`) or an RFC 3164 syslog stamp (`Mmm dd hh:mm:ss`),
/// possibly after an RFC 5424 priority (`<22>`, `<22>1 `). Leading NUL
/// bytes are skipped: a crash while the log was being extended leaves a
/// run of them before the next line Exim writes, and that line must not be
/// glued to the record before it. Other lines continue the record before
/// them (rejectlog header dumps, multi-line paniclog entries).
pub fn is_record_start(line: &[u8]) -> bool {
    let first = line.iter().position(|b| *b != 0).unwrap_or(line.len());
    let line = &line[first..];
    if stamp_starts(line) {
        return true;
    }
    if line.first() == Some(&b'<') {
        let head = &line[..line.len().min(6)];
        if let Some(close) = head.iter().position(|b| *b == b'>') {
            let rest = &line[close + 1..];
            let rest = rest.strip_prefix(b"1 ").unwrap_or(rest);
            return stamp_starts(rest);
        }
    }
    false
}

/// True when `line`, which does not start a record, is part of the record
/// before it. Exim indents the lines after the first of a multi-line entry
/// (folded header lines, the detail of a configuration error); after a
/// rejectlog entry it writes the rejected message's envelope
/// (`Envelope-from: <...>`, `Envelope-to: <...>`) and its headers, each
/// after a one-character flag and a space (`P Received: ...`, `* X-Old:
/// ...`), and `*** truncated ***` when the dump was cut. Any other line
/// (blank, or text another program wrote into the log) is not part of a
/// record and stands alone.
pub fn is_continuation(line: &[u8]) -> bool {
    match line {
        [b' ' | b'\t', ..] => true,
        [flag, b' ', ..] if flag.is_ascii_uppercase() || *flag == b'*' => true,
        _ => {
            line.starts_with(b"Envelope-from: ")
                || line.starts_with(b"Envelope-to: ")
                || line.starts_with(b"*** truncated ***")
        }
    }
}

/// True when `line` begins with one of the timestamps of
/// [`is_record_start`].
fn stamp_starts(line: &[u8]) -> bool {
    let digit = |i: usize| line.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| line.get(i) == Some(&c);
    let iso_date = (0..4).all(digit)
        && at(4, b'-')
        && digit(5)
        && digit(6)
        && at(7, b'-')
        && digit(8)
        && digit(9)
        && (at(10, b' ') || at(10, b'T'))
        && digit(11)
        && digit(12)
        && at(13, b':');
    if iso_date {
        return true;
    }
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    line.len() >= 15
        && MONTHS.iter().any(|m| line.starts_with(*m))
        && at(3, b' ')
        && (digit(4) || at(4, b' '))
        && digit(5)
        && at(6, b' ')
        && digit(7)
        && digit(8)
        && at(9, b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_starts() {
        assert!(is_record_start(b"2026-12-04 15:54:25.924 [27397] cwd=/"));
        assert!(is_record_start(
            b"2024-05-23T10:02:11.123+02:00 mail exim[1]: x"
        ));
        assert!(is_record_start(b"May 23 10:02:11 mail exim[2210]: x"));
        assert!(is_record_start(b"Oct  2 05:12:48 mail2 exim[31044]: x"));
        assert!(!is_record_start(b"Envelope-from: <a@example.com>"));
        assert!(!is_record_start(b"  X-Mailer: thing"));
        assert!(!is_record_start(b"P Received: from"));
        assert!(!is_record_start(b""));
        assert!(is_record_start(
            b"\x00\x00\x002026-12-04 15:54:25 1xZVcC-00078S-07 Completed"
        ));
        assert!(is_record_start(b"<22>May 23 10:02:11 mail exim[2210]: x"));
        assert!(is_record_start(
            b"<22>1 2024-05-23T10:02:11Z mail exim 2210 - - x"
        ));
        assert!(!is_record_start(b"<22> not a stamp"));
    }

    #[test]
    fn continuations() {
        assert!(is_continuation(b"Envelope-from: <a@example.com>"));
        assert!(is_continuation(b"Envelope-to: <b@example.org>"));
        assert!(is_continuation(b"    <c@example.org>"));
        assert!(is_continuation(b"P Received: from mx.example.net"));
        assert!(is_continuation(b"\tby mx.example.com with esmtp"));
        assert!(is_continuation(b"* X-Removed: yes"));
        assert!(is_continuation(b"*** truncated ***"));
        assert!(is_continuation(b"  main option \"frobnicate\" unknown"));
        assert!(!is_continuation(b""));
        assert!(!is_continuation(b"250 2.0.0 Ok: queued"));
        assert!(!is_continuation(b"RCPT TO:<a@example.org>"));
        assert!(!is_continuation(b"===== separator ====="));
        assert!(!is_continuation(b"some script output"));
    }

    #[test]
    fn log_file_from_path() {
        use std::path::Path;
        assert_eq!(
            LogFile::from_path(Path::new("/var/log/exim4/mainlog.1.gz")),
            LogFile::Main
        );
        assert_eq!(LogFile::from_path(Path::new("rejectlog")), LogFile::Reject);
        assert_eq!(
            LogFile::from_path(Path::new("/srv/logs/rejectlog/0042")),
            LogFile::Reject
        );
        assert_eq!(
            LogFile::from_path(Path::new("/srv/paniclogs/mainlog")),
            LogFile::Main
        );
        assert_eq!(
            LogFile::from_path(Path::new("/var/log/exim/0042")),
            LogFile::Main
        );
        assert_eq!(
            LogFile::from_path(Path::new("exim_paniclog-2024")),
            LogFile::Panic
        );
        assert_eq!(
            LogFile::from_path(Path::new("/var/log/exim-rej.log.1")),
            LogFile::Reject
        );
        assert_eq!(
            LogFile::from_path(Path::new("/var/log/rejoice.log")),
            LogFile::Main
        );
    }
}
