//! The form raw records take on the Kafka topic in fleet mode.
//!
//! One Kafka record carries a [`RecordBatch`]: consecutive records of one
//! file of one mail server, in file order. Batching is what lets a tailer
//! keep up with a busy server: the broker handles tens of thousands of
//! Kafka records per second, a mail server can write far more lines than
//! that, and a batch of a few hundred lines costs the broker about as much
//! as one line.
//!
//! The encoding is a small binary format of our own, versioned by its first
//! bytes, so a processor can tell a batch it understands from anything else
//! on the topic (which it keeps, undecoded, as an unparsed record):
//!
//! ```text
//! magic  "EPB1"
//! host   varint length, UTF-8 bytes
//! log    one byte: 0 main, 1 reject, 2 panic
//! file   varint file_id, varint inode
//! count  varint number of records
//! each   varint offset, varint read_at_ms (zigzag), varint length, bytes
//! ```
//!
//! Records keep their exact bytes (not always UTF-8); nothing is trimmed.

use thiserror::Error;

use crate::record::{LogFile, RawRecord, RecordOrigin};

/// The first bytes of every encoded batch.
pub const MAGIC: &[u8; 4] = b"EPB1";

/// Consecutive records of one log file of one mail server.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordBatch {
    /// The mail server.
    pub host: String,
    /// Which log.
    pub log: LogFile,
    /// The file's identity (see [`RecordOrigin::file_id`]).
    pub file_id: u64,
    /// The file's inode when it was read, for operators tracing a record
    /// back to a file; identity comes from `file_id`.
    pub inode: u64,
    /// The records, in file order.
    pub records: Vec<BatchRecord>,
}

/// One record inside a [`RecordBatch`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchRecord {
    /// Byte offset of the record's first byte in the file.
    pub offset: u64,
    /// When the tailer read it, in milliseconds since the Unix epoch.
    pub read_at_ms: i64,
    /// The record's bytes, without the final newline.
    pub bytes: Vec<u8>,
}

/// Why bytes from the topic are not a batch this version can read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not an exim-pilot record batch (unknown leading bytes)")]
    UnknownFormat,
    /// The bytes end before the batch does.
    #[error("record batch is truncated at byte {0}")]
    Truncated(usize),
    /// A field holds a value no encoder writes.
    #[error("record batch has an invalid {field} at byte {at}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Where.
        at: usize,
    },
    /// Bytes follow the last record.
    #[error("record batch has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

impl RecordBatch {
    /// An empty batch for records of one file.
    pub fn new(host: &str, log: LogFile, file_id: u64, inode: u64) -> RecordBatch {
        RecordBatch {
            host: host.to_string(),
            log,
            file_id,
            inode,
            records: Vec::new(),
        }
    }

    /// The encoded size of the batch, in bytes.
    pub fn encoded_len(&self) -> usize {
        let records: usize = self.records.iter().map(|r| 3 * 10 + r.bytes.len()).sum();
        MAGIC.len() + 10 + self.host.len() + 1 + 20 + 10 + records
    }

    /// Encodes the batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        put_varint(&mut out, self.host.len() as u64);
        out.extend_from_slice(self.host.as_bytes());
        out.push(match self.log {
            LogFile::Main => 0,
            LogFile::Reject => 1,
            LogFile::Panic => 2,
        });
        put_varint(&mut out, self.file_id);
        put_varint(&mut out, self.inode);
        put_varint(&mut out, self.records.len() as u64);
        for record in &self.records {
            put_varint(&mut out, record.offset);
            put_varint(&mut out, zigzag(record.read_at_ms));
            put_varint(&mut out, record.bytes.len() as u64);
            out.extend_from_slice(&record.bytes);
        }
        out
    }

    /// Decodes what [`RecordBatch::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<RecordBatch, WireError> {
        if !bytes.starts_with(MAGIC) {
            return Err(WireError::UnknownFormat);
        }
        let mut reader = Reader {
            bytes,
            at: MAGIC.len(),
        };

        let host_len = reader.length("host length")?;
        let host = std::str::from_utf8(reader.take(host_len)?)
            .map_err(|_| WireError::Invalid {
                field: "host",
                at: reader.at,
            })?
            .to_string();
        let log = match reader.take(1)?[0] {
            0 => LogFile::Main,
            1 => LogFile::Reject,
            2 => LogFile::Panic,
            _ => {
                return Err(WireError::Invalid {
                    field: "log kind",
                    at: reader.at - 1,
                })
            }
        };
        let file_id = reader.varint()?;
        let inode = reader.varint()?;

        let count = reader.length("record count")?;
        // Every record takes at least three bytes, which bounds what a
        // corrupt count can make us reserve.
        let mut records = Vec::with_capacity(count.min(bytes.len() / 3));
        for _ in 0..count {
            let offset = reader.varint()?;
            let read_at_ms = unzigzag(reader.varint()?);
            let len = reader.length("record length")?;
            let bytes = reader.take(len)?.to_vec();
            records.push(BatchRecord {
                offset,
                read_at_ms,
                bytes,
            });
        }
        if reader.at != bytes.len() {
            return Err(WireError::TrailingBytes(bytes.len() - reader.at));
        }
        Ok(RecordBatch {
            host,
            log,
            file_id,
            inode,
            records,
        })
    }

    /// The batch as raw records, in file order.
    pub fn into_raw_records(self) -> impl Iterator<Item = RawRecord> {
        let RecordBatch {
            host,
            log,
            file_id,
            records,
            ..
        } = self;
        records.into_iter().map(move |r| RawRecord {
            origin: RecordOrigin {
                host: host.clone(),
                log,
                file_id,
                offset: r.offset,
            },
            read_at_ms: r.read_at_ms,
            bytes: r.bytes,
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let start = self.at;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or(WireError::Truncated(self.at))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Invalid {
            field: "varint",
            at: start,
        })
    }

    fn length(&mut self, field: &'static str) -> Result<usize, WireError> {
        let at = self.at;
        let value = self.varint()?;
        usize::try_from(value)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or(WireError::Invalid { field, at })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(WireError::Truncated(self.at))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(WireError::Truncated(self.bytes.len()))?;
        self.at = end;
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordBatch {
        let mut batch = RecordBatch::new("mx1.example", LogFile::Reject, u64::MAX, 1201);
        batch.records.push(BatchRecord {
            offset: 0,
            read_at_ms: 1_700_000_000_123,
            bytes: b"2024-01-01 00:00:00 H=(x) [192.0.2.1] rejected".to_vec(),
        });
        batch.records.push(BatchRecord {
            offset: 640,
            read_at_ms: -5,
            bytes: vec![0xff, 0x00, b'\n', b'x'],
        });
        batch
    }

    #[test]
    fn round_trips() {
        let batch = sample();
        let encoded = batch.encode();
        assert!(encoded.len() <= batch.encoded_len());
        assert_eq!(RecordBatch::decode(&encoded).unwrap(), batch);
    }

    #[test]
    fn raw_records_keep_origin() {
        let records: Vec<RawRecord> = sample().into_raw_records().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].origin.offset, 640);
        assert_eq!(records[1].origin.log, LogFile::Reject);
        assert_eq!(records[1].origin.host, "mx1.example");
        assert_eq!(records[1].read_at_ms, -5);
        assert_eq!(records[1].bytes, vec![0xff, 0x00, b'\n', b'x']);
    }

    #[test]
    fn foreign_bytes_are_refused() {
        assert_eq!(
            RecordBatch::decode(b"2024-01-01 a line"),
            Err(WireError::UnknownFormat)
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let encoded = sample().encode();
        for cut in 0..encoded.len() {
            assert!(
                RecordBatch::decode(&encoded[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(
            RecordBatch::decode(&longer),
            Err(WireError::TrailingBytes(1))
        );
    }

    #[test]
    fn corrupt_lengths_do_not_allocate_wildly() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0xff; 12]);
        assert!(RecordBatch::decode(&bytes).is_err());
    }
}
