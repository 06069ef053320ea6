//! Logs damaged on the way: Windows line endings, NUL runs left by a
//! crash, junk between records. Each parses as the undamaged line would,
//! and the record reader never hides a good line inside a bad one.

use std::io::Cursor;

use exim_pilot_processor::parse::{parse_record, RecordReader, MAX_RECORD_BYTES};
use exim_pilot_schema::LogFile;

const DELIVERY: &str = "2024-07-05 09:14:02 1sPf10-00000000Aid-00JP => bob@example.com \
    R=dnslookup T=remote_smtp H=mx.example.com [198.51.100.7] C=\"250 2.0.0 queued as 4Xk1\"";
const COMPLETED: &str = "2024-07-05 09:14:03 1sPf10-00000000Aid-00JP Completed";

fn json(record: &[u8]) -> serde_json::Value {
    serde_json::to_value(parse_record(LogFile::Main, record)).unwrap()
}

fn records(text: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = RecordReader::new(Cursor::new(text.to_vec()));
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        out.push(r.bytes.to_vec());
    }
    out
}

#[test]
fn crlf_line_parses_like_lf_line() {
    let crlf = format!("{DELIVERY}\r");
    assert_eq!(json(crlf.as_bytes()), json(DELIVERY.as_bytes()));
    let completed = format!("{COMPLETED}\r");
    assert_eq!(json(completed.as_bytes())["kind"], "completed");
}

#[test]
fn nul_run_before_a_line_does_not_hide_it() {
    let mut damaged = vec![0u8; 5000];
    damaged.extend_from_slice(COMPLETED.as_bytes());
    assert_eq!(json(&damaged)["kind"], "completed");

    let mut log = format!("{DELIVERY}\n").into_bytes();
    log.extend_from_slice(&damaged);
    log.push(b'\n');
    let recs = records(&log);
    assert_eq!(
        recs.len(),
        2,
        "the NUL-prefixed line is a record of its own"
    );
    assert_eq!(json(&recs[1])["kind"], "completed");
}

#[test]
fn syslog_priority_prefix_starts_a_record() {
    let log = format!(
        "{DELIVERY}\n<22>May 23 10:02:11 mail exim[2210]: 2019-05-23 10:02:11 \
         1hTkY7-0000Ze-04 Completed\n"
    );
    let recs = records(log.as_bytes());
    assert_eq!(recs.len(), 2);
    assert_eq!(json(&recs[1])["kind"], "completed");
}

#[test]
fn truncated_gzip_gives_what_it_holds() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog.1.gz");
    let mut plain = String::new();
    for i in 0..2000 {
        plain.push_str(&format!(
            "2024-07-05 09:14:02 1sPf10-00000000Aid-00JP == r{i}@example.com R=dnslookup \
             T=remote_smtp defer (-44): SMTP error from remote mail server after RCPT \
             TO:<r{i}@example.com>: 451 4.7.1 Greylisted\n"
        ));
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(plain.as_bytes()).unwrap();
    let full = enc.finish().unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();

    let reader = exim_pilot_processor::parse::open_log(&path).unwrap();
    let mut records = RecordReader::new(reader);
    let mut n = 0;
    while let Some(r) = records.next_record().unwrap() {
        if json(r.bytes)["kind"] == "deferral" {
            n += 1;
        }
    }
    assert!(n > 100 && n < 2000, "read {n} of 2000 records");
}

/// Records with their offsets.
fn records_at(text: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut reader = RecordReader::new(Cursor::new(text.to_vec()));
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        out.push((r.offset, r.bytes.to_vec()));
    }
    out
}

#[test]
fn a_line_longer_than_a_record_is_cut_into_pieces_that_keep_every_byte() {
    let long: Vec<u8> = (0..MAX_RECORD_BYTES * 3 + 1234)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut text = long.clone();
    text.push(b'\n');
    text.extend_from_slice(COMPLETED.as_bytes());
    text.push(b'\n');
    let got = records_at(&text);
    assert_eq!(got.len(), 5, "four pieces and the next line");
    let mut offset = 0u64;
    let mut joined = Vec::new();
    for (at, bytes) in &got[..4] {
        assert_eq!(*at, offset);
        assert!(bytes.len() <= MAX_RECORD_BYTES);
        offset += bytes.len() as u64;
        joined.extend_from_slice(bytes);
    }
    assert_eq!(joined, long);
    assert_eq!(got[4], (offset + 1, COMPLETED.as_bytes().to_vec()));
}

#[test]
fn a_line_of_exactly_the_largest_size_is_one_record() {
    let mut text = vec![b'x'; MAX_RECORD_BYTES];
    text.push(b'\n');
    text.extend_from_slice(COMPLETED.as_bytes());
    let got = records(&text);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), MAX_RECORD_BYTES);
    assert_eq!(got[1], COMPLETED.as_bytes());
}

#[test]
fn continuation_lines_join_a_record_only_while_it_fits() {
    // A rejectlog entry followed by endless indented lines.
    let mut text = COMPLETED.as_bytes().to_vec();
    let filler = format!("  {}\n", "y".repeat(1000));
    text.push(b'\n');
    for _ in 0..3000 {
        text.extend_from_slice(filler.as_bytes());
    }
    let got = records(&text);
    assert!(got.len() > 2, "{} records", got.len());
    assert!(got.iter().all(|r| r.len() <= MAX_RECORD_BYTES));
    assert!(got[0].starts_with(COMPLETED.as_bytes()));
    let bytes: usize = got.iter().map(|r| r.len()).sum();
    // Every line is kept: the text less the newlines that ended records.
    assert_eq!(bytes + got.len(), text.len());
}
