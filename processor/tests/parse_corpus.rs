//! The parser against real logs: every record of our lab corpus must be
//! classified. Exim's own test-suite logs are read by `parse_testsuite.rs`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use exim_pilot_processor::parse::{
    parse_record_brief, parse_record_with, Brief, ParseOptions, RecordReader,
};
use exim_pilot_schema::{EventKind, LogFile};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus")
}

/// Every log file of every corpus scenario, with its kind.
fn corpus_logs() -> Vec<(PathBuf, LogFile)> {
    let mut logs = Vec::new();
    let mut scenarios: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    scenarios.sort();
    for dir in scenarios {
        for (name, log) in [
            ("mainlog", LogFile::Main),
            ("partner-mainlog", LogFile::Main),
            ("rejectlog", LogFile::Reject),
            ("paniclog", LogFile::Panic),
        ] {
            let path = dir.join(name);
            if path.exists() {
                logs.push((path, log));
            }
        }
    }
    assert!(logs.len() >= 7, "corpus not found under {:?}", corpus_dir());
    logs
}

/// Parses a file and hands each (record, event kind name, event) over.
fn each_event(path: &Path, log: LogFile, mut f: impl FnMut(&[u8], &EventKind<'_>)) -> usize {
    let opts = ParseOptions {
        syslog_year: Some(2026),
    };
    let mut reader = RecordReader::new(BufReader::new(File::open(path).unwrap()));
    let mut n = 0;
    while let Some(record) = reader.next_record().unwrap() {
        let event = parse_record_with(&opts, log, record.bytes);
        f(record.bytes, &event.kind);
        n += 1;
    }
    n
}

#[test]
fn corpus_has_no_unparsed_record() {
    let mut unparsed = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (path, log) in corpus_logs() {
        each_event(&path, log, |raw, kind| {
            *kinds.entry(kind.name()).or_default() += 1;
            if matches!(kind, EventKind::Unparsed { .. }) {
                unparsed.push(format!(
                    "{}: {}",
                    path.display(),
                    String::from_utf8_lossy(raw)
                ));
            }
        });
    }
    eprintln!("{kinds:#?}");
    assert!(
        unparsed.is_empty(),
        "unparsed records:\n{}",
        unparsed.join("\n")
    );
}

/// A brief parse reads every record of the corpus as the full parse does,
/// but for mainlog SMTP connection and `cwd=` lines without a message id,
/// of which it keeps the time and syslog wrapping; and it does leave some
/// out, or it would save nothing.
#[test]
fn brief_parse_differs_only_by_unread_connection_lines() {
    let opts = ParseOptions {
        syslog_year: Some(2026),
    };
    let mut left_out = 0;
    for (path, log) in corpus_logs() {
        let mut reader = RecordReader::new(BufReader::new(File::open(&path).unwrap()));
        while let Some(record) = reader.next_record().unwrap() {
            let full = parse_record_with(&opts, log, record.bytes);
            match parse_record_brief(&opts, log, record.bytes) {
                Brief::Event(event) => assert_eq!(event, full, "{}", path.display()),
                Brief::Header { time, syslog } => {
                    left_out += 1;
                    let line = String::from_utf8_lossy(record.bytes);
                    assert_eq!(log, LogFile::Main, "{line}");
                    assert_eq!((time, &syslog), (full.time, &full.syslog), "{line}");
                    assert_eq!(full.id, None, "{line}");
                    assert!(
                        matches!(full.kind, EventKind::Smtp(_) | EventKind::Arguments { .. }),
                        "{line}: {full:?}"
                    );
                }
            }
        }
    }
    assert!(left_out > 100, "only {left_out} records left unread");
}
