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
    /// `exim_rejectlog` or `paniclog-20240101`; unknown names are mainlogs.
    pub fn from_path(path: &std::path::Path) -> LogFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.contains("reject") {
            LogFile::Reject
        } else if name.contains("panic") {
            LogFile::Panic
        } else {
            LogFile::Main
        }
    }
}

impl std::str::FromStr for LogFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "main" | "mainlog" => Ok(LogFile::Main),
            "reject" | "rejectlog" => Ok(LogFile::Reject),
            "panic" | "paniclog" => Ok(LogFile::Panic),
            other => Err(format!("unknown log kind {other:?}: use main, reject or panic")),
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
