//! Following a log through rename rotation, copytruncate, and files that
//! appear late or vanish, with real files in temporary directories.

mod common;

use common::*;
use exim_pilot_ingest::{Follower, LogSpec, Tailer, TailerConfig};
use exim_pilot_schema::record::LogFile;

fn follower(path: &std::path::Path) -> Follower {
    Follower::new(path, LogFile::Main, "mx1.example.com", None, fast()).unwrap()
}

#[test]
fn rename_rotation_drains_the_old_file_before_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..2);
    let mut follower = follower(&log);
    let first = pump(&mut follower, true);
    assert_eq!(texts(&first), lines(0..2));

    // Written before the rotation and not read yet.
    append_lines(&log, 2..3);
    std::fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
    // Written to the old file after the rename, before the tailer noticed.
    append_lines(&dir.path().join("mainlog.1"), 3..4);
    append_lines(&log, 4..6);

    let second = pump(&mut follower, true);
    assert_eq!(texts(&second), lines(2..6));
    let old_id = first[0].origin.file_id;
    assert_eq!(second[0].origin.file_id, old_id);
    assert_eq!(second[1].origin.file_id, old_id);
    assert_ne!(
        second[2].origin.file_id, old_id,
        "the new file has its own id"
    );
    assert_eq!(second[2].origin.offset, 0);
    assert_eq!(follower.stats().counters.rotations, 1);

    append_lines(&log, 6..7);
    assert_eq!(texts(&pump(&mut follower, true)), lines(6..7));
}

#[test]
fn offsets_point_at_each_record_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..5);
    let records = pump(&mut follower(&log), true);
    let content = std::fs::read(&log).unwrap();
    for record in &records {
        let start = record.origin.offset as usize;
        assert_eq!(
            &content[start..start + record.bytes.len()],
            &record.bytes[..]
        );
        assert_eq!(content[start + record.bytes.len()], b'\n');
    }
}

#[test]
fn a_last_line_without_newline_is_emitted_once_its_file_is_rotated_away() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append(&log, &format!("{}\n{}", line(0), line(1)));
    let mut follower = follower(&log);
    assert_eq!(texts(&pump(&mut follower, true)), lines(0..1));

    std::fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
    assert!(pump(&mut follower, true).is_empty(), "no new file yet");
    append_lines(&log, 2..3);
    assert_eq!(texts(&pump(&mut follower, true)), lines(1..3));
    assert_eq!(follower.stats().counters.unterminated_lines, 1);
}

#[test]
fn copytruncate_reads_the_file_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..3);
    let mut follower = follower(&log);
    let before = pump(&mut follower, true);
    assert_eq!(texts(&before), lines(0..3));

    copytruncate(&log, &dir.path().join("mainlog.1"));
    append_lines(&log, 3..4);
    let after = pump(&mut follower, true);
    assert_eq!(texts(&after), lines(3..4));
    assert_eq!(after[0].origin.offset, 0);
    assert_ne!(
        after[0].origin.file_id, before[0].origin.file_id,
        "same inode, new content: a new file id, so offset 0 does not collide"
    );
    assert_eq!(follower.stats().counters.truncations, 1);
}

#[test]
fn a_truncated_file_that_grew_past_the_old_offset_is_still_seen_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..1);
    let mut follower = follower(&log);
    assert_eq!(texts(&pump(&mut follower, true)), lines(0..1));

    // Emptied in place and then written well past the old offset before
    // the next poll: only the fingerprint tells.
    copytruncate(&log, &dir.path().join("mainlog.1"));
    append_lines(&log, 1..6);
    let after = pump(&mut follower, true);
    assert_eq!(texts(&after), lines(1..6));
    assert_eq!(after[0].origin.offset, 0);
}

#[test]
fn copytruncate_takes_the_unread_rest_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..2);
    let mut follower = follower(&log);
    let before = pump(&mut follower, true);

    // Line 2 is written, then the log is copied and truncated before the
    // tailer looked: line 2 only survives in the copy.
    append_lines(&log, 2..3);
    copytruncate(&log, &dir.path().join("mainlog.1"));
    append_lines(&log, 3..4);
    let after = pump(&mut follower, true);
    assert_eq!(texts(&after), lines(2..4));
    assert_eq!(after[0].origin.file_id, before[0].origin.file_id);
    assert_eq!(
        after[0].origin.offset,
        before[1].origin.offset + before[1].bytes.len() as u64 + 1
    );
    assert_eq!(after[1].origin.offset, 0);
}

#[test]
fn copytruncate_takes_the_unread_rest_from_a_compressed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..2);
    let mut follower = follower(&log);
    let before = pump(&mut follower, true);

    append_lines(&log, 2..4);
    copytruncate(&log, &dir.path().join("mainlog.1"));
    gzip(
        &dir.path().join("mainlog.1"),
        &dir.path().join("mainlog.1.gz"),
    );
    std::fs::remove_file(dir.path().join("mainlog.1")).unwrap();
    append_lines(&log, 4..5);
    let after = pump(&mut follower, true);
    assert_eq!(texts(&after), lines(2..5));
    assert_eq!(after[0].origin.file_id, before[0].origin.file_id);
}

/// mainlog holds L1 L2 L3, all published; logrotate copies it to mainlog.1
/// and truncates it; Exim appends L4. With `mainlog*` configured, L1 to L4
/// are each published exactly once, across a restart too.
#[test]
fn copytruncate_with_a_wildcard_watch_reads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    let config = || TailerConfig {
        host: Some("mx1.example.com".into()),
        logs: vec![LogSpec::new(dir.path().join("mainlog*"))],
        checkpoint_dir: Some(dir.path().join("checkpoints")),
        follow: fast(),
    };
    append_lines(&log, 0..3);
    let mut tailer = Tailer::new(config()).unwrap();
    assert_eq!(tailer.followers().len(), 1);
    let mut published = pump_tailer(&mut tailer);

    copytruncate(&log, &dir.path().join("mainlog.1"));
    append_lines(&log, 3..4);
    published.extend(pump_tailer(&mut tailer));
    tailer.close().unwrap();

    // A restart sees mainlog.1 again, now named by the wildcard; it is
    // still content already read.
    let mut tailer = Tailer::new(config()).unwrap();
    assert_eq!(tailer.followers().len(), 1);
    published.extend(pump_tailer(&mut tailer));
    append_lines(&log, 4..5);
    published.extend(pump_tailer(&mut tailer));

    assert_eq!(texts(&published), lines(0..5));
}

#[test]
fn a_file_that_appears_late_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    let mut follower = follower(&log);
    assert!(pump(&mut follower, true).is_empty());
    assert!(pump(&mut follower, true).is_empty());

    append_lines(&log, 0..2);
    let records = pump(&mut follower, true);
    assert_eq!(texts(&records), lines(0..2));
    assert_eq!(records[0].origin.offset, 0);
}

#[test]
fn a_file_that_disappears_is_read_on_until_a_new_one_appears() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..1);
    let mut follower = follower(&log);
    let first = pump(&mut follower, true);

    // Moved out of the way under a name that is no rotation: the open file
    // is still read.
    let moved = dir.path().join("old-mainlog");
    std::fs::rename(&log, &moved).unwrap();
    append_lines(&moved, 1..2);
    assert_eq!(texts(&pump(&mut follower, true)), lines(1..2));

    append_lines(&log, 2..3);
    let last = pump(&mut follower, true);
    assert_eq!(texts(&last), lines(2..3));
    assert_ne!(last[0].origin.file_id, first[0].origin.file_id);
}

#[test]
fn a_deleted_and_recreated_file_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..2);
    let mut follower = follower(&log);
    assert_eq!(texts(&pump(&mut follower, true)), lines(0..2));

    std::fs::remove_file(&log).unwrap();
    assert!(pump(&mut follower, true).is_empty());
    append_lines(&log, 10..12);
    let records = pump(&mut follower, true);
    assert_eq!(texts(&records), lines(10..12));
    assert_eq!(records[0].origin.offset, 0);
}
