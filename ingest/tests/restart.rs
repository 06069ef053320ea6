//! Restarting from a checkpoint: nothing lost, nothing doubled, and a
//! checkpoint never applied to a file it does not describe.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use exim_pilot_ingest::{Checkpoint, FileIdentity, Fingerprint, Follower};
use exim_pilot_schema::record::{LogFile, RawRecord};

fn follower(log: &Path, checkpoint: &Path) -> Follower {
    Follower::new(
        log,
        LogFile::Main,
        "mx1.example.com",
        Some(checkpoint.to_path_buf()),
        fast(),
    )
    .unwrap()
}

fn paths(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    (
        dir.path().join("mainlog"),
        dir.path().join("checkpoints").join("mx1-main.json"),
    )
}

#[test]
fn a_restart_mid_file_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..50);

    // First run: pull batches of 7, acknowledge three, pull a fourth and
    // "crash" before acknowledging it (the follower is just dropped).
    let mut first = follower(&log, &checkpoint);
    first.poll().unwrap();
    let mut acked: Vec<RawRecord> = Vec::new();
    for _ in 0..3 {
        let batch = first.take_batch(7).unwrap();
        first.ack(&batch.ack()).unwrap();
        acked.extend(batch.records);
    }
    let unacked = first.take_batch(7).unwrap().records;
    drop(first);
    append_lines(&log, 50..60);

    let mut second = follower(&log, &checkpoint);
    let resumed = pump(&mut second, true);

    // The unacknowledged batch comes again, under the same key.
    assert_eq!(keyed(&resumed[..unacked.len()]), keyed(&unacked));
    let mut all = acked;
    all.extend(resumed);
    assert_eq!(texts(&all), lines(0..60), "every line exactly once");
    let content = std::fs::read(&log).unwrap();
    for record in &all {
        let start = record.origin.offset as usize;
        assert_eq!(
            &content[start..start + record.bytes.len()],
            &record.bytes[..]
        );
    }
}

#[test]
fn only_acknowledged_batches_reach_the_checkpoint_even_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..4);
    let mut follower = follower(&log, &checkpoint);
    follower.poll().unwrap();
    let first = follower.take_batch(2).unwrap();
    let second = follower.take_batch(2).unwrap();

    follower.ack(&second.ack()).unwrap();
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert_eq!(saved.files.len(), 1);
    assert_eq!(saved.files[0].offset, 0, "the first is in flight");

    follower.ack(&first.ack()).unwrap();
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert_eq!(saved.files.len(), 1);
    assert_eq!(
        saved.files[0].offset,
        std::fs::metadata(&log).unwrap().len()
    );
    assert_eq!(follower.stats().counters.records_acked, 4);
}

#[test]
fn an_acknowledgement_from_another_thread_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..3);
    let mut follower = follower(&log, &checkpoint);
    follower.poll().unwrap();
    let batch = follower.take_batch(10).unwrap();
    let acker = follower.acker();
    let ack = batch.ack();
    std::thread::spawn(move || acker.ack(ack)).join().unwrap();

    follower.poll().unwrap();
    let saved = Checkpoint::load(&checkpoint).unwrap().unwrap();
    assert_eq!(
        saved.files[0].offset,
        std::fs::metadata(&log).unwrap().len()
    );
}

#[test]
fn a_checkpoint_names_the_file_by_inode_and_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..2);
    let meta = std::fs::metadata(&log).unwrap();
    let mut identity = FileIdentity::of_metadata(&meta);

    identity.fingerprint = Fingerprint::of_head(&std::fs::read(&log).unwrap(), false);
    assert!(identity.is_same_file(&log).unwrap());

    // The inode is right, the first bytes are another file's: a recycled
    // inode.
    identity.fingerprint = Fingerprint::of_head(format!("{}\n", line(99)).as_bytes(), false);
    assert!(!identity.is_same_file(&log).unwrap());

    assert!(!identity.is_same_file(&dir.path().join("missing")).unwrap());
}

/// A checkpoint says {mainlog, inode 1201, offset 640}; the new mainlog got
/// inode 1201 again with other content: the checkpoint does not apply and
/// the whole new file is read.
#[test]
fn a_checkpoint_for_a_recycled_inode_does_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 100..108);
    let meta = std::fs::metadata(&log).unwrap();
    let claimed = Checkpoint {
        format: 1,
        host: "mx1.example.com".into(),
        log: LogFile::Main,
        path: log.clone(),
        written_at_ms: 0,
        files: vec![exim_pilot_ingest::FilePosition {
            path: log.clone(),
            identity: FileIdentity {
                fingerprint: Fingerprint::of_head(format!("{}\n", line(0)).as_bytes(), false),
                ..FileIdentity::of_metadata(&meta)
            },
            offset: 640,
            complete: false,
        }],
    };
    claimed.store(&checkpoint).unwrap();

    let records = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(texts(&records), lines(100..108));
    assert_eq!(records[0].origin.offset, 0);
}

#[test]
fn a_recreated_file_is_read_whole_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..3);
    let mut first = follower(&log, &checkpoint);
    assert_eq!(pump(&mut first, true).len(), 3);
    first.close().unwrap();

    // Deleted and created again; the file system may well hand out the
    // same inode number.
    std::fs::remove_file(&log).unwrap();
    append_lines(&log, 100..108);
    let records = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(texts(&records), lines(100..108));
    assert_eq!(records[0].origin.offset, 0);
}

#[test]
fn a_file_renamed_while_stopped_is_finished_before_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..2);
    let mut first = follower(&log, &checkpoint);
    let before = pump(&mut first, true);
    drop(first);

    append_lines(&log, 2..4);
    std::fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
    append_lines(&log, 4..5);
    let after = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(texts(&after), lines(2..5));
    assert_eq!(after[0].origin.file_id, before[0].origin.file_id);
}

/// Killed on its first start before anything was acknowledged, then the
/// file is rotated: the next start still knows which file it was reading,
/// and reads it again, whole, before the new one.
#[test]
fn a_first_start_killed_before_any_acknowledgement_survives_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..20);
    let mut first = follower(&log, &checkpoint);
    let unacked = pump(&mut first, false);
    assert_eq!(unacked.len(), 20);
    drop(first);

    std::fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
    append_lines(&log, 20..25);
    let after = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(texts(&after), lines(0..25));
    assert_eq!(
        keyed(&after[..20]),
        keyed(&unacked),
        "the same records again"
    );
}

/// The checkpointed file was rotated twice and compressed, and the new
/// mainlog may even have inherited its inode: the unread rest comes from
/// the compressed file, then the file rotated after it (written entirely
/// while the follower was stopped), then the new file, each whole.
#[test]
fn a_file_compressed_while_stopped_is_finished_from_the_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..2);
    let mut first = follower(&log, &checkpoint);
    let before = pump(&mut first, true);
    drop(first);

    append_lines(&log, 2..3);
    gzip(&log, &dir.path().join("mainlog.2.gz"));
    std::fs::remove_file(&log).unwrap();
    append_lines(&dir.path().join("mainlog.1"), 50..51);
    append_lines(&log, 100..108);

    let after = pump(&mut follower(&log, &checkpoint), true);
    let mut expected = lines(2..3);
    expected.extend(lines(50..51));
    expected.extend(lines(100..108));
    assert_eq!(texts(&after), expected);
    assert_eq!(after[0].origin.file_id, before[0].origin.file_id);
    assert_eq!(after[1].origin.offset, 0);
    assert_eq!(after[2].origin.offset, 0);
}

/// Two copytruncates while stopped, the first when the new content had not
/// even been fingerprinted: the files rotated after the newest one the
/// checkpoint knows are read whole.
#[test]
fn files_rotated_after_the_checkpoint_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..2);
    let mut first = follower(&log, &checkpoint);
    pump(&mut first, true);
    copytruncate(&log, &dir.path().join("mainlog.1"));
    pump(&mut first, true);
    first.close().unwrap();

    append_lines(&log, 2..4);
    std::fs::rename(dir.path().join("mainlog.1"), dir.path().join("mainlog.2")).unwrap();
    copytruncate(&log, &dir.path().join("mainlog.1"));
    append_lines(&log, 4..5);
    let after = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(texts(&after), lines(2..5));
}

#[test]
fn a_file_copytruncated_while_stopped_is_finished_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..3);
    let mut first = follower(&log, &checkpoint);
    let before = pump(&mut first, true);
    drop(first);

    append_lines(&log, 3..4);
    copytruncate(&log, &dir.path().join("mainlog.1"));
    append_lines(&log, 4..5);
    let after = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(texts(&after), lines(3..5));
    assert_eq!(after[0].origin.file_id, before[0].origin.file_id);
    assert_eq!(after[1].origin.offset, 0);
}

#[test]
fn a_restart_during_a_rotation_drains_the_old_file_first() {
    let dir = tempfile::tempdir().unwrap();
    let (log, checkpoint) = paths(&dir);
    append_lines(&log, 0..3);
    let mut first = follower(&log, &checkpoint);
    first.poll().unwrap();
    let batch = first.take_batch(1).unwrap();
    first.ack(&batch.ack()).unwrap();

    // The rotation is seen and both files are read, but only the first
    // record was ever acknowledged.
    std::fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
    append_lines(&log, 3..5);
    let unacked = pump(&mut first, false);
    assert_eq!(texts(&unacked), lines(1..5));
    drop(first);

    let again = pump(&mut follower(&log, &checkpoint), true);
    assert_eq!(keyed(&again), keyed(&unacked));
}
