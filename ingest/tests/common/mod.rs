//! Helpers shared by the ingest tests: fast settings, log lines with
//! invented values, and a loop that reads a follower dry.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use exim_pilot_ingest::{FollowConfig, Follower, Tailer};
use exim_pilot_schema::record::RawRecord;

/// Settings that make every step visible at once: no waiting for quiet
/// records, a checkpoint on every acknowledgement.
pub fn fast() -> FollowConfig {
    FollowConfig {
        poll_interval: Duration::from_millis(1),
        group_quiet: Duration::ZERO,
        checkpoint_interval: Duration::ZERO,
        ..FollowConfig::default()
    }
}

/// A mainlog line (without newline) numbered `n`.
pub fn line(n: usize) -> String {
    format!(
        "2026-12-04 15:54:{:02}.{:03} [2{n:04}] 1xZVcX-0007E3-{n:02} <= sender{n}@example.com \
         H=(client.example.net) [192.0.2.{}] P=esmtp S={}",
        n % 60,
        n % 1000,
        n % 250,
        1000 + n
    )
}

/// Appends `text` to the file at `path`, creating it when needed.
pub fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Appends the lines numbered `range`, each with its newline.
pub fn append_lines(path: &Path, range: std::ops::Range<usize>) {
    let text: String = range.map(|n| line(n) + "\n").collect();
    append(path, &text);
}

/// Polls and pulls until nothing new comes, acknowledging every batch
/// when `ack` is set.
pub fn pump(follower: &mut Follower, ack: bool) -> Vec<RawRecord> {
    let mut records = Vec::new();
    loop {
        follower.poll().unwrap();
        let Some(batch) = follower.take_batch(1000) else {
            break;
        };
        if ack {
            follower.ack(&batch.ack()).unwrap();
        }
        records.extend(batch.records);
    }
    records
}

/// [`pump`] for a tailer, always acknowledging.
pub fn pump_tailer(tailer: &mut Tailer) -> Vec<RawRecord> {
    let mut records = Vec::new();
    loop {
        tailer.poll().unwrap();
        let Some(batch) = tailer.take_batch(1000) else {
            break;
        };
        tailer.ack(&batch.ack()).unwrap();
        records.extend(batch.records);
    }
    records
}

/// The records' bytes as text.
pub fn texts(records: &[RawRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.bytes.clone()).unwrap())
        .collect()
}

/// What names a record and what it holds, without the read time.
pub fn keyed(records: &[RawRecord]) -> Vec<(exim_pilot_schema::record::RecordOrigin, Vec<u8>)> {
    records
        .iter()
        .map(|r| (r.origin.clone(), r.bytes.clone()))
        .collect()
}

/// The lines numbered `range`.
pub fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(line).collect()
}

/// Copies `from` to `to` compressed with gzip.
pub fn gzip(from: &Path, to: &Path) {
    let content = std::fs::read(from).unwrap();
    let file = std::fs::File::create(to).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    encoder.write_all(&content).unwrap();
    encoder.finish().unwrap();
}

/// Writes `content` to `path` compressed with gzip.
pub fn write_gzip(path: &Path, content: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    encoder.write_all(content.as_bytes()).unwrap();
    encoder.finish().unwrap();
}

/// logrotate's copytruncate: copy the log to `copy`, then empty it.
pub fn copytruncate(log: &Path, copy: &Path) {
    std::fs::copy(log, copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .unwrap()
        .set_len(0)
        .unwrap();
}
