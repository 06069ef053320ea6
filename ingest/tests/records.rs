//! Lines into records: partial lines held back, continuation lines grouped,
//! over-long lines cut.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use exim_pilot_ingest::{FollowConfig, Follower, Importer};
use exim_pilot_schema::record::LogFile;

fn follower(path: &Path, config: FollowConfig) -> Follower {
    Follower::new(
        path,
        LogFile::from_path(path),
        "mx1.example.com",
        None,
        config,
    )
    .unwrap()
}

/// A rejectlog entry after DATA with its header dump, invented values.
fn reject_with_headers(n: usize) -> String {
    format!(
        "2026-12-04 15:54:{n:02}.216 [27923] 1xZVce-0007GN-{n:02} H=(crm.example.net) \
         [192.0.2.7]:39760 I=[192.0.2.1]:25 F=<rosa@example.org> rejected after DATA: \
         content rejected\n\
         Envelope-from: <rosa@example.org>\n\
         Envelope-to: <oscar@example.com>\n\
         P Received: from [192.0.2.7] (helo=crm.example.net)\n\
         \tby mx1.example.com with esmtp (Exim 4.96)\n\
         \tid 1xZVce-0007GN-{n:02}\n\
         T To: oscar@example.com\n\
         \x20 Subject: test {n}\n"
    )
}

fn reject_line(n: usize) -> String {
    format!(
        "2026-12-04 15:55:{n:02}.001 [27924] H=(bot.example.net) [198.51.100.9]:4000 \
         I=[192.0.2.1]:25 F=<x@example.net> rejected RCPT <nobody@example.com>: Unknown user\n"
    )
}

#[test]
fn a_partial_last_line_is_held_until_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    let (whole, partial) = (line(0), line(1));
    let (start, rest) = partial.split_at(30);
    append(&log, &format!("{whole}\n{start}"));
    let mut follower = follower(&log, fast());
    assert_eq!(
        texts(&pump(&mut follower, true)),
        std::slice::from_ref(&whole)
    );
    assert!(pump(&mut follower, true).is_empty(), "still no newline");

    append(&log, rest);
    assert!(
        pump(&mut follower, true).is_empty(),
        "complete but without newline"
    );
    append(&log, "\n");
    let records = pump(&mut follower, true);
    assert_eq!(texts(&records), [partial]);
    assert_eq!(records[0].origin.offset, whole.len() as u64 + 1);
}

#[test]
fn rejectlog_header_dumps_stay_with_their_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rejectlog");
    let content = reject_line(1) + &reject_with_headers(2) + &reject_line(3);
    append(&log, &content);
    let records = pump(&mut follower(&log, fast()), true);

    let expected: Vec<String> = [reject_line(1), reject_with_headers(2), reject_line(3)]
        .iter()
        .map(|entry| entry.strip_suffix('\n').unwrap().to_owned())
        .collect();
    assert_eq!(texts(&records), expected);
    assert!(records.iter().all(|r| r.origin.log == LogFile::Reject));
    let second_offset = reject_line(1).len() as u64;
    assert_eq!(records[1].origin.offset, second_offset);
    assert_eq!(
        records[2].origin.offset,
        second_offset + reject_with_headers(2).len() as u64
    );
}

#[test]
fn a_record_waits_for_continuation_lines_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rejectlog");
    let config = FollowConfig {
        group_quiet: Duration::from_secs(3600),
        ..fast()
    };
    let mut follower = follower(&log, config);
    let entry = reject_with_headers(2);
    let (head, tail) = entry.split_at(entry.find("P Received").unwrap());
    append(&log, head);
    assert!(
        pump(&mut follower, true).is_empty(),
        "more lines may follow"
    );
    append(&log, tail);
    assert!(
        pump(&mut follower, true).is_empty(),
        "the next record has not started"
    );

    append(&log, &reject_line(3));
    let records = pump(&mut follower, true);
    assert_eq!(texts(&records), [entry.trim_end().to_owned()]);
}

#[test]
fn the_last_record_is_emitted_after_a_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rejectlog");
    let config = FollowConfig {
        group_quiet: Duration::from_millis(20),
        ..fast()
    };
    let mut follower = follower(&log, config);
    append(&log, &reject_with_headers(2));
    assert!(
        pump(&mut follower, true).is_empty(),
        "not quiet long enough yet"
    );

    let batch = follower
        .next_batch(100, Duration::from_secs(10))
        .unwrap()
        .expect("emitted once quiet");
    assert_eq!(
        texts(&batch.records),
        [reject_with_headers(2).trim_end().to_owned()]
    );
}

#[test]
fn over_long_lines_are_cut_into_bounded_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("paniclog");
    let long = format!("2026-12-04 15:54:29.790 [27481] {}", "x".repeat(300));
    append(&log, &format!("{long}\n{}\n", line(1)));
    let config = FollowConfig {
        max_record_bytes: 130,
        read_chunk: 64,
        ..fast()
    };
    let mut follower = follower(&log, config);
    let records = pump(&mut follower, true);
    let pieces: Vec<&[u8]> = records.iter().map(|r| &r.bytes[..]).collect();
    assert!(pieces.iter().all(|p| p.len() <= 130));
    assert_eq!(pieces[..3].concat(), long.as_bytes());
    assert_eq!(texts(&records[3..]), lines(1..2));
    assert_eq!(follower.stats().counters.oversized_lines, 2);
    let offsets: Vec<u64> = records.iter().map(|r| r.origin.offset).collect();
    assert_eq!(offsets, [0, 130, 260, long.len() as u64 + 1]);
}

#[test]
fn corpus_rejectlog_groups_into_one_record_per_entry() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus");
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let path = corpus.join(scenario).join("rejectlog");
        let content = std::fs::read(&path).unwrap();
        let records: Vec<_> = Importer::new(std::slice::from_ref(&path), "mx1.lab.test")
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();

        let starts = content
            .split(|&b| b == b'\n')
            .filter(|l| exim_pilot_schema::record::is_record_start(l))
            .count();
        assert_eq!(records.len(), starts, "{scenario}");
        assert!(
            records.iter().any(|r| r.bytes.contains(&b'\n')),
            "{scenario}: a header dump"
        );
        let mut rebuilt = Vec::new();
        for record in &records {
            assert_eq!(record.origin.offset as usize, rebuilt.len());
            rebuilt.extend_from_slice(&record.bytes);
            rebuilt.push(b'\n');
        }
        assert_eq!(rebuilt, content, "{scenario}: every byte exactly once");
    }
}

#[test]
fn a_line_exim_split_through_syslog_is_one_record_at_its_first_part() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let config = FollowConfig {
        group_quiet: Duration::from_secs(3600),
        ..fast()
    };
    let mut follower = follower(&log, config);
    let first = "Dec  4 10:00:00 mx1 exim[7]: 2026-12-04 10:00:00 Start queue run\n";
    let part1 = "Dec  4 10:00:01 mx1 exim[8]: [1/2] 2026-12-04 10:00:01 H=[192.0.2.9] \
                 rejected RCPT <nobody@exa\n";
    let part2 = "Dec  4 10:00:01 mx1 exim[8]: [2/2] mple.com>: Unknown user\n";
    append(&log, &format!("{first}{part1}"));
    assert_eq!(texts(&pump(&mut follower, true)), [first.trim_end()]);

    // The second part comes in a later write; the next record ends it.
    append(&log, part2);
    append(&log, first);
    let records = pump(&mut follower, true);
    assert_eq!(
        texts(&records),
        [
            "Dec  4 10:00:01 mx1 exim[8]: 2026-12-04 10:00:01 H=[192.0.2.9] \
          rejected RCPT <nobody@example.com>: Unknown user"
        ]
    );
    assert_eq!(records[0].origin.offset, first.len() as u64);
}
