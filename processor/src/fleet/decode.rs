//! Kafka records to raw log records.

use exim_pilot_schema::wire::{RecordBatch, WireError};
use exim_pilot_schema::{LogFile, RawRecord, RecordOrigin};
use exim_pilot_store::StoredRecord;

/// The event kind of a stored Kafka record that is not a record batch.
pub const UNDECODABLE: &str = "undecodable";

/// One Kafka record as polled, detached from the consumer.
#[derive(Clone, Debug)]
pub struct Polled {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub payload: Vec<u8>,
}

/// What a Kafka record holds.
pub enum Decoded {
    /// The log records of a batch, in file order.
    Records(Vec<RawRecord>),
    /// Bytes that are no batch, in their stored form, and why.
    Undecodable(StoredRecord, WireError),
}

/// Decodes one Kafka record of `topic`.
pub fn decode(topic: &str, polled: Polled) -> Decoded {
    match RecordBatch::decode(&polled.payload) {
        Ok(batch) => Decoded::Records(batch.into_raw_records().collect()),
        Err(e) => Decoded::Undecodable(undecodable(topic, polled), e),
    }
}

/// The stored form of a Kafka record that is not a batch: named by its
/// topic, partition and offset, with its bytes unchanged.
fn undecodable(topic: &str, polled: Polled) -> StoredRecord {
    let read_at_ms = polled
        .timestamp_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    StoredRecord {
        origin: RecordOrigin {
            host: format!("kafka:{topic}/{}", polled.partition),
            log: LogFile::Main,
            file_id: 0,
            offset: polled.offset.max(0) as u64,
        },
        read_at_ms,
        at: None,
        message_id: None,
        event_kind: UNDECODABLE.to_string(),
        bytes: polled.payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exim_pilot_schema::wire::BatchRecord;

    fn polled(payload: Vec<u8>) -> Polled {
        Polled {
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_700_000_000_000),
            payload,
        }
    }

    #[test]
    fn a_batch_gives_its_records() {
        let mut batch = RecordBatch::new("mx1", LogFile::Main, 9, 1);
        batch.records.push(BatchRecord {
            offset: 120,
            read_at_ms: 5,
            bytes: b"2024-01-01 00:00:00 line".to_vec(),
        });
        let Decoded::Records(records) = decode("raw", polled(batch.encode())) else {
            panic!("a batch was not decoded");
        };
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].origin.offset, 120);
        assert_eq!(records[0].origin.host, "mx1");
    }

    #[test]
    fn foreign_bytes_are_kept_under_their_kafka_position() {
        let Decoded::Undecodable(record, _) = decode("raw", polled(vec![0xff, b'x'])) else {
            panic!("foreign bytes were decoded");
        };
        assert_eq!(record.origin.host, "kafka:raw/3");
        assert_eq!(record.origin.offset, 42);
        assert_eq!(record.event_kind, UNDECODABLE);
        assert_eq!(record.bytes, vec![0xff, b'x']);
        assert_eq!(record.read_at_ms, 1_700_000_000_000);
    }
}
