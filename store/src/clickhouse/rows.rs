//! The rows of the ClickHouse tables as Rust values, and their
//! conversions from and to the data model.
//!
//! Rows travel as RowBinary: fields in the order of the table's columns
//! (`INSERT` names the columns from [`columns`]), `Date` as days since
//! the epoch, `String` columns holding bytes through [`bytes`].

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use exim_pilot_schema::report::{recipient_domain, sender_domain_key, Cell, CellKey};
use exim_pilot_schema::report::{
    Counters, DelayHistogram, Dimension, ReportCells, Samples, COUNTER_COUNT,
};
use exim_pilot_schema::{AttemptResult, Lifecycle, MessageId, ReasonClass, RejectRecord};
use exim_pilot_schema::{LogFile, RecordOrigin};

use crate::error::{Result, StoreError};
use crate::types::{AuditEntry, StoredRecord};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Milliseconds since the epoch.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The `Date` (days since the epoch) of an instant in milliseconds,
/// clamped to the range of the type.
pub fn day_of_ms(ms: i64) -> u16 {
    ms.div_euclid(DAY_MS).clamp(0, u16::MAX as i64) as u16
}

/// A `String` column holding arbitrary bytes.
pub mod bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes the bytes as they are.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Reads the bytes as they are.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// The column list of a row type, for `INSERT INTO t (...)` and
/// `SELECT ...`.
pub fn columns<T: clickhouse::Row>() -> String {
    T::COLUMN_NAMES.join(", ")
}

/// A raw record.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct EventRow {
    pub host: String,
    pub log: String,
    pub file_id: u64,
    pub offset: u64,
    pub read_at_ms: i64,
    pub at_ms: Option<i64>,
    pub day: u16,
    pub message_id: Option<String>,
    pub event_kind: String,
    #[serde(with = "bytes")]
    pub bytes: Vec<u8>,
}

impl EventRow {
    pub fn new(r: &StoredRecord) -> EventRow {
        let at_ms = r.at.map(ms);
        EventRow {
            host: r.origin.host.clone(),
            log: r.origin.log.as_str().to_string(),
            file_id: r.origin.file_id,
            offset: r.origin.offset,
            read_at_ms: r.read_at_ms,
            at_ms,
            day: day_of_ms(at_ms.unwrap_or(r.read_at_ms)),
            message_id: r.message_id.map(|id| id.to_string()),
            event_kind: r.event_kind.clone(),
            bytes: r.bytes.clone(),
        }
    }

    pub fn into_record(self) -> Result<StoredRecord> {
        Ok(StoredRecord {
            origin: RecordOrigin {
                host: self.host,
                log: parse_log("record", &self.log)?,
                file_id: self.file_id,
                offset: self.offset,
            },
            read_at_ms: self.read_at_ms,
            at: self.at_ms.map(from_ms),
            message_id: parse_id("record", self.message_id)?,
            event_kind: self.event_kind,
            bytes: self.bytes,
        })
    }
}

fn parse_log(what: &'static str, s: &str) -> Result<LogFile> {
    s.parse::<LogFile>()
        .map_err(|e| StoreError::corrupt(what, e))
}

fn parse_id(what: &'static str, s: Option<String>) -> Result<Option<MessageId>> {
    s.map(|s| s.parse::<MessageId>())
        .transpose()
        .map_err(|e| StoreError::corrupt(what, e))
}

/// A version of a lifecycle with its searchable fields.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct LifecycleRow {
    pub host: String,
    pub id: String,
    pub version: u64,
    pub day: u16,
    pub cohort_ms: i64,
    pub last_ms: i64,
    pub state: String,
    pub incomplete_start: u8,
    pub sender: Option<String>,
    pub sender_domain: Option<String>,
    pub subject: Option<String>,
    pub msgid_header: Option<String>,
    pub client_ip: Option<String>,
    pub addresses: Vec<String>,
    pub originals: Vec<String>,
    pub domains: Vec<String>,
    pub outcomes: Vec<String>,
    pub reasons: Vec<String>,
    pub body: String,
}

/// A Message-ID header as indexed: without angle brackets or blanks.
pub fn normalize_msgid(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

impl LifecycleRow {
    /// The row of `lc` as version `version`, in the partition of `day`.
    pub fn new(lc: &Lifecycle, body: String, version: u64, day: u16) -> LifecycleRow {
        let cohort_ms = exim_pilot_schema::report::cohort_time(lc).map_or(0, ms);
        let last_ms = lc
            .last_seen
            .or(lc.completed_at)
            .map_or(cohort_ms, ms)
            .max(cohort_ms);
        let mut reasons: Vec<ReasonClass> = Vec::new();
        for r in &lc.recipients {
            reasons.extend(r.reason);
            for a in &r.history {
                if a.result != AttemptResult::Ok {
                    reasons.push(a.reason.unwrap_or(ReasonClass::Other));
                }
            }
        }
        reasons.sort();
        reasons.dedup();
        LifecycleRow {
            host: lc.host.clone(),
            id: lc.id.to_string(),
            version,
            day,
            cohort_ms,
            last_ms,
            state: lc.state.as_str().to_string(),
            incomplete_start: u8::from(lc.incomplete_start),
            sender: lc.sender.as_ref().map(|s| s.to_ascii_lowercase()),
            sender_domain: lc.sender.as_ref().map(|_| sender_domain_key(lc)),
            subject: lc.subject.clone(),
            msgid_header: lc.message_id_header.as_deref().map(normalize_msgid),
            client_ip: lc.client.as_ref().and_then(|c| c.ip.clone()),
            addresses: lc
                .recipients
                .iter()
                .map(|r| r.address.to_ascii_lowercase())
                .collect(),
            originals: lc
                .recipients
                .iter()
                .filter_map(|r| r.original.as_ref().map(|o| o.to_ascii_lowercase()))
                .collect(),
            domains: lc.recipients.iter().map(recipient_domain).collect(),
            outcomes: lc
                .recipients
                .iter()
                .map(|r| r.outcome.as_str().to_string())
                .collect(),
            reasons: reasons.iter().map(|c| c.as_str().to_string()).collect(),
            body,
        }
    }
}

/// The stored key and version of a lifecycle, with its body.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct StoredLifecycle {
    pub host: String,
    pub id: String,
    pub version: u64,
    pub day: u16,
    pub body: String,
}

/// A lifecycle from its stored JSON.
pub fn decode_lifecycle(body: &str) -> Result<Lifecycle> {
    serde_json::from_str(body).map_err(|e| StoreError::corrupt("lifecycle", e))
}

/// One delivery attempt of a lifecycle version.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct AttemptRow {
    pub host: String,
    pub id: String,
    pub rcpt: u32,
    pub n: u32,
    pub version: u64,
    pub day: u16,
    pub at_ms: i64,
    pub address: String,
    pub result: String,
    pub transport: Option<String>,
    pub remote_host: Option<String>,
    pub remote_ip: Option<String>,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub reason: Option<String>,
    pub text: Option<String>,
}

/// The attempt rows of a lifecycle version.
pub fn attempt_rows(lc: &Lifecycle, version: u64) -> Vec<AttemptRow> {
    let mut out = Vec::new();
    for (i, r) in lc.recipients.iter().enumerate() {
        for (n, a) in r.history.iter().enumerate() {
            out.push(AttemptRow {
                host: lc.host.clone(),
                id: lc.id.to_string(),
                rcpt: i as u32,
                n: n as u32,
                version,
                day: day_of_ms(ms(a.at)),
                at_ms: ms(a.at),
                address: r.address.clone(),
                result: enum_str(&a.result),
                transport: a.transport.clone(),
                remote_host: a.remote_host.clone(),
                remote_ip: a.remote_ip.clone(),
                code: a.code,
                enhanced: a.enhanced.clone(),
                reason: a.reason.map(|c| c.as_str().to_string()),
                text: a.text.clone(),
            });
        }
    }
    out
}

/// The serde name of a unit enum value (`"rcpt"`, `"in_flight"`...).
pub fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// An SMTP rejection.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct RejectRow {
    pub host: String,
    pub log: String,
    pub file_id: u64,
    pub offset: u64,
    pub at_ms: i64,
    pub day: u16,
    pub stage: String,
    pub temporary: u8,
    pub client_ip: Option<String>,
    pub client_name: Option<String>,
    pub helo: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub recipient_domain: Option<String>,
    pub message_id: Option<String>,
    pub reason: String,
    pub class: String,
}

impl RejectRow {
    pub fn new(r: &RejectRecord) -> RejectRow {
        let recipient_domain = r
            .recipient
            .as_deref()
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase());
        RejectRow {
            host: r.origin.host.clone(),
            log: r.origin.log.as_str().to_string(),
            file_id: r.origin.file_id,
            offset: r.origin.offset,
            at_ms: ms(r.at),
            day: day_of_ms(ms(r.at)),
            stage: enum_str(&r.stage),
            temporary: u8::from(r.temporary),
            client_ip: r.client_ip.clone(),
            client_name: r.client_name.clone(),
            helo: r.helo.clone(),
            sender: r.sender.clone(),
            recipient: r.recipient.clone(),
            recipient_domain,
            message_id: r.message_id.map(|id| id.to_string()),
            reason: r.reason.clone(),
            class: r.class.as_str().to_string(),
        }
    }

    pub fn into_reject(self) -> Result<RejectRecord> {
        Ok(RejectRecord {
            origin: RecordOrigin {
                host: self.host,
                log: parse_log("reject", &self.log)?,
                file_id: self.file_id,
                offset: self.offset,
            },
            at: from_ms(self.at_ms),
            stage: serde_json::from_value(serde_json::Value::String(self.stage))
                .map_err(|e| StoreError::corrupt("reject stage", e))?,
            temporary: self.temporary != 0,
            client_ip: self.client_ip,
            client_name: self.client_name,
            helo: self.helo,
            sender: self.sender,
            recipient: self.recipient,
            message_id: parse_id("reject", self.message_id)?,
            reason: self.reason,
            class: self
                .class
                .parse()
                .map_err(|e: String| StoreError::corrupt("reject", e))?,
        })
    }
}

/// What one source (a lifecycle or a rejection) adds to one report cell,
/// as the tables of schema versions before 8 held it (tests write them).
#[cfg(test)]
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct CellRow {
    pub dim: u8,
    pub bucket: i64,
    pub day: u16,
    pub host: String,
    pub key: String,
    pub source: String,
    pub version: u64,
    pub counters: Vec<i64>,
    pub delay_buckets: Vec<u16>,
    pub delay_counts: Vec<i64>,
    pub samples: Vec<String>,
}

#[cfg(test)]
impl CellRow {
    /// The row of `cell` at `key`; `day_cells` says the key's bucket is a
    /// day number rather than an hour.
    pub fn new(key: &CellKey, cell: &Cell, source: &str, version: u64, day_cells: bool) -> Self {
        let day = if day_cells {
            key.hour
        } else {
            key.hour.div_euclid(24)
        };
        CellRow {
            dim: key.dim.code() as u8,
            bucket: key.hour,
            day: day.clamp(0, u16::MAX as i64) as u16,
            host: key.host.clone(),
            key: key.key.clone(),
            source: source.to_string(),
            version,
            counters: cell.counters.to_array().to_vec(),
            delay_buckets: cell.delay.buckets.iter().map(|(b, _)| *b).collect(),
            delay_counts: cell.delay.buckets.iter().map(|(_, n)| *n).collect(),
            samples: cell.samples.to_vec(),
        }
    }
}

/// A row of `cells_day_sums`: what a batch changes in one day cell (its
/// bucket a day number), counters and histogram as sparse maps, or a
/// mark of one source's change (dimension `MARK_DIM`, the source as key,
/// the mark's sequence number among those of the same change as bucket,
/// the source's version, `marked` 1, no values, and in `applied` the
/// hour cells it added to the sums: see [`encode_applied`]).
#[derive(clickhouse::Row, Serialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct DaySumRow {
    pub dim: u8,
    pub host: String,
    pub key: String,
    pub bucket: i64,
    pub day: u16,
    pub version: u64,
    pub marked: u8,
    #[serde(rename = "countersMap.counter")]
    pub counter_ids: Vec<u8>,
    #[serde(rename = "countersMap.value")]
    pub counter_values: Vec<i64>,
    #[serde(rename = "delayMap.bucket")]
    pub delay_buckets: Vec<u16>,
    #[serde(rename = "delayMap.count")]
    pub delay_counts: Vec<i64>,
    pub applied: String,
}

impl DaySumRow {
    /// The change of the cell `key` (a day cell, or an hour cell as
    /// `span` says): its counters that are not zero, and its histogram.
    pub fn new(key: &CellKey, cell: &Cell, span: Span) -> Self {
        let (counter_ids, counter_values) = nonzero_counters(cell).unzip();
        DaySumRow {
            dim: span.dim(key),
            host: key.host.clone(),
            key: key.key.clone(),
            bucket: key.hour,
            day: span.day(key),
            version: 0,
            marked: 0,
            counter_ids,
            counter_values,
            delay_buckets: cell.delay.buckets.iter().map(|(b, _)| *b).collect(),
            delay_counts: cell.delay.buckets.iter().map(|(_, n)| *n).collect(),
            applied: String::new(),
        }
    }

    /// Mark number `seq` of `source`'s change at `version` in `day`,
    /// which added the hour cells `applied` (encoded) to the sums.
    pub fn mark(mark: Mark, seq: i64, applied: String) -> Self {
        let (host, source, day, version) = mark;
        DaySumRow {
            dim: super::migrations::MARK_DIM,
            host,
            key: source,
            bucket: seq,
            day: date(day),
            version,
            marked: 1,
            counter_ids: Vec::new(),
            counter_values: Vec::new(),
            delay_buckets: Vec::new(),
            delay_counts: Vec::new(),
            applied,
        }
    }
}

/// Counters from (index, value) pairs; indexes of counters this build
/// does not know (added by a newer one) are left out.
pub fn counters(values: impl Iterator<Item = (usize, i64)>) -> Counters {
    let mut out = [0i64; COUNTER_COUNT];
    for (i, n) in values {
        if let Some(v) = out.get_mut(i) {
            *v = n;
        }
    }
    Counters::from_array(out)
}

/// A delay histogram from its buckets and counts, in any order.
pub fn histogram(buckets: &[u16], counts: &[i64]) -> DelayHistogram {
    let mut out = DelayHistogram::default();
    for (b, n) in buckets.iter().zip(counts) {
        out.add_to(*b, *n);
    }
    out
}

/// A cell's counters that are not zero, by their index in
/// `Counters::NAMES`.
fn nonzero_counters(cell: &Cell) -> impl Iterator<Item = (u8, i64)> {
    let values = cell.counters.to_array();
    (0..values.len())
        .filter(move |&i| values[i] != 0)
        .map(move |i| (i as u8, values[i]))
}

/// A day change's identity: (host, source, day, version).
pub type Mark = (String, String, i64, u64);

/// A mark as the write path reads it back: its change, its sequence
/// number and what it applied.
#[derive(clickhouse::Row, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct MarkRead {
    pub key: String,
    pub version: u64,
    pub bucket: i64,
    pub applied: String,
}

/// One hour cell of a mark's `applied` as builds before the grouped
/// form wrote it: (hour, dimension code, key, non-zero counters by
/// index, histogram buckets).
type OldAppliedCell = (i64, u8, String, Vec<(u8, i64)>, Vec<(u16, i64)>);

/// The hour cells of a mark's `applied` that share one hour, counters
/// and histogram: (hour, non-zero counters by index, histogram buckets,
/// the cells' (dimension code, key)s).
type AppliedGroup = (i64, Vec<(u8, i64)>, Vec<(u16, i64)>, Vec<(u8, String)>);

/// The grouped form of a mark's `applied`.
#[derive(Deserialize)]
struct AppliedGroups {
    groups: Vec<AppliedGroup>,
}

/// The hour cells of one server's change, as a mark keeps them: JSON,
/// `{"groups":[...]}`, the cells grouped by hour, counters and
/// histogram, which a change's cells mostly share (a message counts the
/// same in each of its dimensions), so a mark holds each number once.
/// Groups and the cells in them are sorted, so that the same change is
/// the same text. Samples are not part of it (they are only ever added).
pub fn encode_applied(cells: &ReportCells) -> String {
    let mut sorted: Vec<(i64, [i64; COUNTER_COUNT], &Cell, u8, &str)> = cells
        .cells
        .iter()
        .map(|(key, cell)| {
            let dim = key.dim.code() as u8;
            (
                key.hour,
                cell.counters.to_array(),
                cell,
                dim,
                key.key.as_str(),
            )
        })
        .collect();
    sorted.sort_unstable_by(|a, b| {
        (a.0, &a.1, &a.2.delay.buckets[..], a.3, a.4).cmp(&(
            b.0,
            &b.1,
            &b.2.delay.buckets[..],
            b.3,
            b.4,
        ))
    });
    // Written by hand (a mark per change makes this a commit's busiest
    // serialiser).
    let mut out = Text(Vec::with_capacity(24 * sorted.len() + 16));
    out.raw(b"{\"groups\":[");
    let mut last: Option<(i64, &[i64; COUNTER_COUNT], &DelayHistogram)> = None;
    for (hour, counters, cell, dim, key) in &sorted {
        let same = last.is_some_and(|(h, c, d)| {
            h == *hour && c == counters && d.buckets == cell.delay.buckets
        });
        if same {
            out.raw(b",");
        } else {
            if last.is_some() {
                out.raw(b"]],");
            }
            out.raw(b"[");
            out.int(*hour);
            out.raw(b",[");
            for (i, (index, n)) in nonzero_counters(cell).enumerate() {
                out.pair(i, index as i64, n);
            }
            out.raw(b"],[");
            for (i, (bucket, n)) in cell.delay.buckets.iter().enumerate() {
                out.pair(i, *bucket as i64, *n);
            }
            out.raw(b"],[");
            last = Some((*hour, counters, &cell.delay));
        }
        out.raw(b"[");
        out.int(*dim as i64);
        out.raw(b",");
        out.string(key);
        out.raw(b"]");
    }
    if last.is_some() {
        out.raw(b"]]");
    }
    out.raw(b"]}");
    String::from_utf8(out.0).unwrap_or_default()
}

/// A JSON text being written.
struct Text(Vec<u8>);

impl Text {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn int(&mut self, n: i64) {
        self.raw(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `[a,b]`, after a comma unless it is the first (`i` 0) of its array.
    fn pair(&mut self, i: usize, a: i64, b: i64) {
        self.raw(if i == 0 { b"[" } else { b",[" });
        self.int(a);
        self.raw(b",");
        self.int(b);
        self.raw(b"]");
    }

    /// `s` as a JSON string.
    fn string(&mut self, s: &str) {
        let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if plain {
            self.raw(b"\"");
            self.raw(s.as_bytes());
            self.raw(b"\"");
        } else {
            // Writing JSON to a vector does not fail.
            let _ = serde_json::to_writer(&mut self.0, s);
        }
    }
}

/// The hour cells of `host` that [`encode_applied`] wrote, or a build
/// before it (an array of cells, one each); `None` when the text is
/// neither. A dimension this build does not know is kept out, as reads
/// keep it out.
pub fn decode_applied(host: &str, text: &str) -> Option<ReportCells> {
    let groups: Vec<AppliedGroup> = if text.starts_with('[') {
        let cells: Vec<OldAppliedCell> = serde_json::from_str(text).ok()?;
        cells
            .into_iter()
            .map(|(hour, dim, key, counters, delay)| (hour, counters, delay, vec![(dim, key)]))
            .collect()
    } else {
        serde_json::from_str::<AppliedGroups>(text).ok()?.groups
    };
    let mut out = ReportCells::new();
    for (hour, counters, delay, keys) in groups {
        let (buckets, counts): (Vec<u16>, Vec<i64>) = delay.into_iter().unzip();
        let cell = Cell {
            counters: self::counters(counters.into_iter().map(|(i, n)| (i as usize, n))),
            delay: histogram(&buckets, &counts),
            samples: Samples::default(),
        };
        for (dim, key) in keys {
            let Some(dim) = Dimension::from_code(dim as i64) else {
                continue;
            };
            let key = CellKey {
                hour,
                host: host.to_string(),
                dim,
                key,
            };
            out.add_cell(key, &cell);
        }
    }
    Some(out)
}

/// A row of `cells_day_samples`: one sample text of one day cell.
#[derive(clickhouse::Row, Serialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct DaySampleRow {
    pub dim: u8,
    pub host: String,
    pub key: String,
    pub bucket: i64,
    pub day: u16,
    pub sample: String,
}

impl DaySampleRow {
    /// The samples of the cell `key` (a day cell, or an hour cell as
    /// `span` says).
    pub fn of(key: &CellKey, cell: &Cell, span: Span) -> Vec<Self> {
        cell.samples
            .0
            .iter()
            .map(|sample| DaySampleRow {
                dim: span.dim(key),
                host: key.host.clone(),
                key: key.key.clone(),
                bucket: key.hour,
                day: span.day(key),
                sample: sample.clone(),
            })
            .collect()
    }
}

/// What the bucket of a summed cell counts: a day cell's bucket is a day
/// number, an hour cell's an hour number, and an hour cell's dimension
/// code is stored plus [`HOUR_DIM`](super::migrations::HOUR_DIM).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Span {
    Day,
    Hour,
}

impl Span {
    /// The stored dimension code of `key` in this span.
    pub fn dim(self, key: &CellKey) -> u8 {
        let code = key.dim.code() as u8;
        match self {
            Span::Day => code,
            Span::Hour => code + super::migrations::HOUR_DIM,
        }
    }

    /// The dimension of a stored code in this span; `None` for a code of
    /// the other span, a mark, or a dimension this build does not know.
    pub fn dimension(self, stored: u8) -> Option<Dimension> {
        let code = match self {
            Span::Day if stored < super::migrations::HOUR_DIM => stored,
            Span::Hour
                if (super::migrations::HOUR_DIM..super::migrations::MARK_DIM).contains(&stored) =>
            {
                stored - super::migrations::HOUR_DIM
            }
            _ => return None,
        };
        Dimension::from_code(code as i64)
    }

    /// The day (partition) of `key`'s bucket in this span.
    pub fn day(self, key: &CellKey) -> u16 {
        date(key.hour.div_euclid(self.per_day()))
    }

    /// Buckets a day.
    pub fn per_day(self) -> i64 {
        match self {
            Span::Day => 1,
            Span::Hour => 24,
        }
    }
}

/// A day number as a `Date`, clamped to the type's range.
fn date(day: i64) -> u16 {
    day.clamp(0, u16::MAX as i64) as u16
}

/// A day number as `YYYY-MM-DD`, for `toDate(?)`.
pub fn day_string(day: i64) -> String {
    from_ms(day.saturating_mul(DAY_MS))
        .format("%Y-%m-%d")
        .to_string()
}

/// A row of `cells_day_sums` as a read returns it.
#[derive(clickhouse::Row, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct DaySumRead {
    pub bucket: i64,
    pub host: String,
    pub dim: u8,
    pub key: String,
    pub counter_ids: Vec<u8>,
    pub counter_values: Vec<i64>,
    pub delay_buckets: Vec<u16>,
    pub delay_counts: Vec<i64>,
}

/// A row of `cells_day_base` as a read returns it.
#[derive(clickhouse::Row, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct DayBaseRead {
    pub bucket: i64,
    pub host: String,
    pub dim: u8,
    pub key: String,
    pub counters: Vec<i64>,
    pub delay_buckets: Vec<u16>,
    pub delay_counts: Vec<i64>,
}

/// A row of `cells_day_samples` as a read returns it.
#[derive(clickhouse::Row, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct DaySampleRead {
    pub bucket: i64,
    pub host: String,
    pub dim: u8,
    pub key: String,
    pub sample: String,
}

/// A summed cell as a report query returns it.
#[derive(clickhouse::Row, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct SummedCell {
    pub bucket: i64,
    pub host: String,
    pub dim: u8,
    pub key: String,
    pub counters: Vec<i64>,
    pub delay: (Vec<u16>, Vec<i64>),
    pub samples: Vec<String>,
}

/// A per-server delta for the `host_deltas` table. Unknown times are
/// sent as the neutral value of their aggregate (`i64::MAX` for a
/// minimum, `i64::MIN` for a maximum).
#[derive(clickhouse::Row, Serialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct HostDeltaRow {
    pub host: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub last_read_ms: i64,
    pub records: i64,
    pub messages: i64,
    pub rejects: i64,
}

/// One audit entry.
#[derive(clickhouse::Row, Serialize, Deserialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct AuditRow {
    pub at_ms: i64,
    pub day: u16,
    pub seq: u64,
    pub actor: String,
    pub role: Option<String>,
    pub client_ip: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub params: Option<String>,
    pub outcome: String,
}

impl AuditRow {
    pub fn new(e: &AuditEntry, seq: u64) -> AuditRow {
        AuditRow {
            at_ms: ms(e.at),
            day: day_of_ms(ms(e.at)),
            seq,
            actor: e.actor.clone(),
            role: e.role.clone(),
            client_ip: e.client_ip.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            params: e.params.as_ref().map(|p| p.to_string()),
            outcome: e.outcome.clone(),
        }
    }

    pub fn into_entry(self) -> Result<AuditEntry> {
        Ok(AuditEntry {
            at: from_ms(self.at_ms),
            actor: self.actor,
            role: self.role,
            client_ip: self.client_ip,
            action: self.action,
            target: self.target,
            params: self
                .params
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| StoreError::corrupt("audit entry", e))?,
            outcome: self.outcome,
        })
    }
}

/// A named blob.
#[derive(clickhouse::Row, Serialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct BlobRow {
    pub name: String,
    #[serde(with = "bytes")]
    pub data: Vec<u8>,
    pub updated_ns: u64,
}

/// A record of the raw topic that could not be decoded.
#[derive(clickhouse::Row, Serialize, Debug)]
#[clickhouse(crate = "::clickhouse")]
pub struct UnparsedRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub read_at_ms: i64,
    pub day: u16,
    pub problem: String,
    #[serde(with = "bytes")]
    pub bytes: Vec<u8>,
}
