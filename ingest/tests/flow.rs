//! Back-pressure and several logs at once.

mod common;

use common::*;
use exim_pilot_ingest::{Checkpoint, FollowConfig, Follower, LogSpec, Tailer, TailerConfig};
use exim_pilot_schema::record::LogFile;

#[test]
fn a_consumer_that_does_not_pull_stops_the_reading() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..200);
    let config = FollowConfig {
        max_ready_records: 5,
        read_chunk: 256,
        ..fast()
    };
    let mut follower = Follower::new(&log, LogFile::Main, "mx1", None, config).unwrap();

    follower.poll().unwrap();
    let stats = follower.stats();
    assert!(
        stats.records_ready >= 5 && stats.records_ready < 10,
        "{stats:?}"
    );
    assert!(stats.bytes_behind > 0);
    let read = stats.counters.bytes_read;
    follower.poll().unwrap();
    assert_eq!(
        follower.stats().counters.bytes_read,
        read,
        "nothing read while full"
    );

    let all = pump(&mut follower, true);
    assert_eq!(texts(&all), lines(0..200));
    let stats = follower.stats();
    assert_eq!(stats.bytes_behind, 0);
    assert_eq!(stats.counters.lines_read, 200);
    assert_eq!(stats.counters.records_emitted, 200);
    assert_eq!(stats.counters.records_acked, 200);
}

#[test]
fn unacknowledged_batches_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    append_lines(&log, 0..10);
    let config = FollowConfig {
        max_unacked_batches: 2,
        ..fast()
    };
    let mut follower = Follower::new(&log, LogFile::Main, "mx1", None, config).unwrap();
    follower.poll().unwrap();
    let first = follower.take_batch(1).unwrap();
    let _second = follower.take_batch(1).unwrap();
    assert!(follower.take_batch(1).is_none());
    assert_eq!(follower.stats().batches_unacked, 2);

    follower.ack(&first.ack()).unwrap();
    assert!(follower.take_batch(1).is_some());
}

#[test]
fn a_tailer_follows_each_log_of_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    append_lines(&dir.path().join("mainlog"), 0..3);
    append(
        &dir.path().join("rejectlog"),
        "2026-12-04 15:54:41.736 [27621] H=(relay.example.net) [192.0.2.5]:45210 \
         F=<a@example.org> rejected RCPT <nobody@example.com>: Unknown user\n",
    );
    let config = || TailerConfig {
        host: Some("mx1.example.com".into()),
        logs: vec![
            LogSpec::new(dir.path().join("mainlog")),
            LogSpec::new(dir.path().join("rejectlog")),
            LogSpec::new(dir.path().join("paniclog")),
        ],
        checkpoint_dir: Some(checkpoints.clone()),
        follow: fast(),
    };
    let mut tailer = Tailer::new(config()).unwrap();
    let records = pump_tailer(&mut tailer);
    let count = |log| records.iter().filter(|r| r.origin.log == log).count();
    assert_eq!((count(LogFile::Main), count(LogFile::Reject)), (3, 1));
    assert!(records.iter().all(|r| r.origin.host == "mx1.example.com"));
    assert_eq!(tailer.stats().len(), 3);
    tailer.close().unwrap();

    for kind in ["main", "reject"] {
        let path = checkpoints.join(format!("mx1.example.com-{kind}.json"));
        assert!(Checkpoint::load(&path).unwrap().is_some(), "{kind}");
    }

    // The paniclog appears later; the others resume where they were.
    let mut tailer = Tailer::new(config()).unwrap();
    append(
        &dir.path().join("paniclog"),
        "2026-12-04 15:54:29.790 [27481] failed to open config\nsecond line of the panic\n",
    );
    let later = pump_tailer(&mut tailer);
    assert_eq!(
        texts(&later),
        ["2026-12-04 15:54:29.790 [27481] failed to open config\nsecond line of the panic"]
    );
    assert_eq!(later[0].origin.log, LogFile::Panic);
}

#[test]
fn a_tailer_refuses_two_logs_sharing_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = TailerConfig {
        host: Some("mx1".into()),
        logs: vec![
            LogSpec::new(dir.path().join("a/mainlog")),
            LogSpec::new(dir.path().join("b/mainlog")),
        ],
        checkpoint_dir: Some(dir.path().join("cp")),
        follow: fast(),
    };
    assert!(Tailer::new(config).is_err());
}
