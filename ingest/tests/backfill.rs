//! Reading rotated files: the first-start backfill of a follower, and the
//! one-off import of a list of files.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use exim_pilot_ingest::{order_for_import, Checkpoint, FollowConfig, Follower, Importer};
use exim_pilot_schema::record::LogFile;

fn backfilling() -> FollowConfig {
    FollowConfig {
        backfill: true,
        ..fast()
    }
}

fn follower(log: &Path, checkpoint: &Path, config: FollowConfig) -> Follower {
    Follower::new(
        log,
        LogFile::Main,
        "mx1.example.com",
        Some(checkpoint.to_path_buf()),
        config,
    )
    .unwrap()
}

fn text(range: std::ops::Range<usize>) -> String {
    range.map(|n| line(n) + "\n").collect()
}

/// mainlog.3.gz, mainlog.2.gz, mainlog.1 and mainlog, written in that
/// order (lines 0..2, 2..4, 4..6, 6..8).
fn rotated_set(dir: &Path) -> PathBuf {
    write_gzip(&dir.join("mainlog.3.gz"), &text(0..2));
    write_gzip(&dir.join("mainlog.2.gz"), &text(2..4));
    append(&dir.join("mainlog.1"), &text(4..6));
    append(&dir.join("mainlog"), &text(6..8));
    dir.join("mainlog")
}

#[test]
fn backfill_reads_rotated_files_oldest_first_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_set(dir.path());
    let checkpoint = dir.path().join("cp.json");

    let mut first = follower(&log, &checkpoint, backfilling());
    let records = pump(&mut first, true);
    assert_eq!(texts(&records), lines(0..8));
    let file_ids: std::collections::BTreeSet<u64> =
        records.iter().map(|r| r.origin.file_id).collect();
    assert_eq!(file_ids.len(), 4, "each file has its own id");
    first.close().unwrap();
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    let names: Vec<(&str, bool)> = saved
        .files
        .iter()
        .map(|f| (f.path.file_name().unwrap().to_str().unwrap(), f.complete))
        .collect();
    // Only the live file is left to read; the newest file read completely
    // is kept as a landmark.
    assert_eq!(names, [("mainlog.1", true), ("mainlog", false)]);

    let mut second = follower(&log, &checkpoint, backfilling());
    assert!(pump(&mut second, true).is_empty());
    append_lines(&log, 8..9);
    assert_eq!(texts(&pump(&mut second, true)), lines(8..9));
}

#[test]
fn without_backfill_only_the_live_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_set(dir.path());
    let records = pump(
        &mut follower(&log, &dir.path().join("cp.json"), fast()),
        true,
    );
    assert_eq!(texts(&records), lines(6..8));
}

#[test]
fn an_interrupted_backfill_resumes_where_it_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_set(dir.path());
    let checkpoint = dir.path().join("cp.json");

    let mut first = follower(&log, &checkpoint, backfilling());
    first.poll().unwrap();
    let batch = first.take_batch(3).unwrap();
    first.ack(&batch.ack()).unwrap();
    assert_eq!(texts(&batch.records), lines(0..3));
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    let names: Vec<(&str, bool)> = saved
        .files
        .iter()
        .map(|f| (f.path.file_name().unwrap().to_str().unwrap(), f.complete))
        .collect();
    assert_eq!(
        names,
        [
            ("mainlog.3.gz", true),
            ("mainlog.2.gz", false),
            ("mainlog.1", false),
            ("mainlog", false)
        ]
    );
    drop(first);

    let rest = pump(&mut follower(&log, &checkpoint, backfilling()), true);
    assert_eq!(texts(&rest), lines(3..8));
}

#[test]
fn backfill_skips_a_copy_of_the_live_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append(&log, &text(0..3));
    // copytruncate has copied but not yet truncated.
    std::fs::copy(&log, dir.path().join("mainlog.1")).unwrap();
    let records = pump(
        &mut follower(&log, &dir.path().join("cp.json"), backfilling()),
        true,
    );
    assert_eq!(texts(&records), lines(0..3));
}

#[test]
fn import_orders_files_by_their_first_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let at = |day: u32, n: usize| {
        format!("2026-12-{day:02} 10:00:00 1xZVcX-0007E3-{n:02} <= a{n}@example.com S=1\n")
    };
    let late = dir.path().join("mainlog");
    let middle = dir.path().join("saved.gz");
    let early = dir.path().join("other");
    append(&late, &(at(3, 4) + &at(3, 5)));
    write_gzip(&middle, &(at(2, 2) + &at(2, 3)));
    append(&early, &(at(1, 0) + &at(1, 1)));

    let given = vec![late.clone(), middle.clone(), early.clone()];
    assert_eq!(order_for_import(&given).unwrap(), [early, middle, late]);

    let mut importer = Importer::new(&given, "mx1.example.com").unwrap();
    let mut records = Vec::new();
    while let Some(batch) = importer.next_batch(4).unwrap() {
        assert!(batch.len() <= 4);
        records.extend(batch);
    }
    let ids: Vec<String> = texts(&records)
        .iter()
        .map(|t| t[34..36].to_owned())
        .collect();
    assert_eq!(ids, ["00", "01", "02", "03", "04", "05"]);
    assert_eq!(importer.bytes_done(), importer.bytes_total());
}

#[test]
fn import_falls_back_to_rotation_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let syslog = |n: usize| format!("Dec  4 10:00:{n:02} mx1 exim[1]: 1xZVcX-0007E3-{n:02} <= x\n");
    let names = ["mainlog", "mainlog.1", "mainlog.2.gz", "mainlog.10.gz"];
    for (age, name) in names.iter().enumerate() {
        let path = dir.path().join(name);
        if name.ends_with(".gz") {
            write_gzip(&path, &syslog(10 - age));
        } else {
            append(&path, &syslog(10 - age));
        }
    }
    let given: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
    let ordered = order_for_import(&given).unwrap();
    let ordered: Vec<&str> = ordered
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        ordered,
        ["mainlog.10.gz", "mainlog.2.gz", "mainlog.1", "mainlog"]
    );

    let records: Vec<_> = Importer::new(&given, "mx1.example.com")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len(), 4);
    assert!(
        records.windows(2).all(|w| w[0].bytes < w[1].bytes),
        "oldest first"
    );
}

#[test]
fn import_keeps_a_final_line_without_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mainlog");
    append(&path, &format!("{}\n{}", line(0), line(1)));
    let records: Vec<_> = Importer::new(&[path], "mx1.example.com")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(texts(&records), lines(0..2));
}

#[test]
fn a_file_truncated_while_it_is_imported_fails_after_the_records_read_before() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    let all = text(0..40_000);
    append(&log, &all);

    let mut importer = Importer::new(std::slice::from_ref(&log), "mx1.example.com").unwrap();
    let mut got: Vec<u8> = Vec::new();
    let first = importer.next_batch(10).unwrap().unwrap();
    for r in &first {
        got.extend_from_slice(&r.bytes);
        got.push(b'\n');
    }
    let read_so_far = got.len() as u64;

    // Cut the file well before what the importer has read of it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(read_so_far / 2)
        .unwrap();
    let error = loop {
        match importer.next_batch(10_000) {
            Ok(Some(records)) => {
                for r in &records {
                    got.extend_from_slice(&r.bytes);
                    got.push(b'\n');
                }
            }
            Ok(None) => panic!("the import ended without noticing the file shrank"),
            Err(e) => break e,
        }
    };
    let message = error.to_string();
    assert!(message.contains("shrank"), "{message}");
    assert!(message.contains(&log.display().to_string()), "{message}");

    // Every record handed out is a whole line of the file as it was.
    assert!(got.len() as u64 >= read_so_far);
    assert!(
        all.as_bytes().starts_with(&got),
        "records differ from the file"
    );
    assert!(importer.next_batch(10).unwrap().is_none());
}
