//! The parser against real logs: every record of our lab corpus must be
//! classified, and Exim's own test-suite logs (when present on the machine)
//! must parse without panicking, with their unclassified records counted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use exim_pilot_processor::parse::{parse_record_with, ParseOptions, RecordReader};
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

/// Exim's own regression-suite logs, read from the shared folder when it is
/// there (they are GPL test data and never copied into this repository).
fn exim_testsuite_logs() -> Vec<(PathBuf, LogFile)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peer/exim-testsuite");
    let mut logs = Vec::new();
    for (dir, log) in [
        ("log", LogFile::Main),
        ("rejectlog", LogFile::Reject),
        ("paniclog", LogFile::Panic),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        logs.extend(files.into_iter().map(|p| (p, log)));
    }
    logs
}

/// Records of Exim's test-suite logs that are not log records at all: blank
/// lines and the `******** SERVER ********` separators the harness writes.
fn is_harness_text(raw: &[u8]) -> bool {
    raw.iter().all(u8::is_ascii_whitespace)
        || raw.starts_with(b"******** SERVER")
        || raw.starts_with(b"**NOTE:")
}

#[test]
fn exim_testsuite_logs_parse_and_unparsed_records_are_counted() {
    let logs = exim_testsuite_logs();
    if logs.is_empty() {
        eprintln!("Exim's test-suite logs are not on this machine: skipped");
        return;
    }
    let (mut records, mut harness, mut unparsed) = (0, 0, Vec::new());
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (path, log) in &logs {
        records += each_event(path, *log, |raw, kind| {
            *kinds.entry(kind.name()).or_default() += 1;
            if let EventKind::Unparsed { .. } = kind {
                if is_harness_text(raw) {
                    harness += 1;
                } else {
                    unparsed.push(format!(
                        "{}: {}",
                        path.display(),
                        String::from_utf8_lossy(raw)
                    ));
                }
            }
        });
    }
    eprintln!("{} files, {records} records: {kinds:#?}", logs.len());
    eprintln!("unparsed harness text (blank lines, separators): {harness}");
    eprintln!("other unparsed records: {}", unparsed.len());
    for u in unparsed.iter().take(40) {
        eprintln!("  {u}");
    }
    assert!(
        unparsed.is_empty(),
        "{} records of log text were not classified",
        unparsed.len()
    );
}
