//! The parser over Exim's own regression-suite logs (see
//! `support/testsuite.rs` for where they are read from): every record
//! that starts with a timestamp, in the main, reject and panic logs, must
//! be classified. The logs cover far more of Exim than our corpus (DKIM,
//! SPF, DMARC, ARC, DANE, PRDR, CHUNKING, proxies, events, callouts, every
//! router and transport) and carry the test harness's placeholders where
//! real values were (`S=sss`, `[ip4.ip4.ip4.ip4]:PORT_D`, `pid=p1234`),
//! which must not cost a record its kind. Lines that are no records (blank
//! lines, separators, a test script's SMTP transcript) are unparsed, as
//! any unknown text is.

#[path = "support/testsuite.rs"]
mod testsuite;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use exim_pilot_processor::parse::{parse_record_with, ParseOptions, RecordReader};
use exim_pilot_schema::record::is_record_start;
use exim_pilot_schema::{EventKind, LogFile};

/// How many unclassified records the failure message shows.
const SHOWN: usize = 20;

#[test]
fn every_timestamped_record_of_the_testsuite_logs_is_classified() {
    let Some(logs) = testsuite::logs(&[LogFile::Main, LogFile::Reject, LogFile::Panic]) else {
        eprintln!("{}", testsuite::skipped());
        return;
    };
    let opts = ParseOptions {
        syslog_year: Some(1999),
    };

    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut records, mut timestamped, mut other_text) = (0usize, 0usize, 0usize);
    let mut unclassified = Vec::new();
    for (path, log) in &logs {
        let mut reader = RecordReader::new(BufReader::new(File::open(path).unwrap()));
        while let Some(record) = reader.next_record().unwrap() {
            records += 1;
            let event = parse_record_with(&opts, *log, record.bytes);
            let unparsed = matches!(event.kind, EventKind::Unparsed { .. });
            if !is_record_start(record.bytes) {
                // Not a log record: only ever unparsed.
                assert!(unparsed, "{}: {:?}", path.display(), event.kind.name());
                other_text += 1;
                continue;
            }
            timestamped += 1;
            *kinds.entry(event.kind.name()).or_default() += 1;
            if unparsed {
                unclassified.push(format!(
                    "{}: {}",
                    path.display(),
                    String::from_utf8_lossy(record.bytes)
                ));
            }
        }
    }

    let notes = kinds.get("note").copied().unwrap_or(0);
    eprintln!(
        "{} files, {records} records: {timestamped} timestamped, {other_text} other text",
        logs.len()
    );
    eprintln!(
        "classified: {} of {timestamped}, {} kinds; {notes} notes (text without a kind of its own)",
        timestamped - unclassified.len(),
        kinds.len()
    );
    eprintln!("{kinds:#?}");
    assert!(
        timestamped > 10_000,
        "only {timestamped} timestamped records in {}",
        testsuite::dir().display()
    );
    assert!(
        unclassified.is_empty(),
        "{} timestamped records were not classified; the first {}:\n{}",
        unclassified.len(),
        SHOWN.min(unclassified.len()),
        unclassified[..SHOWN.min(unclassified.len())].join("\n")
    );
}
