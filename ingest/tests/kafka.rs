//! Publishing to a real Kafka-protocol broker: every record reaches the
//! topic, once, in file order, with its origin; rotations and recycled
//! inodes do not lose or repeat records.
//!
//! Each test starts its own broker (`exim_pilot_testkit::Server`) and
//! creates its own topic with one partition.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exim_pilot_ingest::kafka::{KafkaConfig, PublishStats, Publisher};
use exim_pilot_ingest::{Checkpoint, LogSpec, Tailer, TailerConfig};
use exim_pilot_schema::record::LogFile;
use exim_pilot_schema::wire::RecordBatch;
use exim_pilot_testkit::kafka::{create_topic, read_partition, unique_topic};
use exim_pilot_testkit::Server;

/// Longest a test waits for records to arrive; a bound, not a speed goal.
const PATIENCE: Duration = Duration::from_secs(120);

/// One log record as read back from the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    host: String,
    log: LogFile,
    file_id: u64,
    inode: u64,
    offset: u64,
    bytes: Vec<u8>,
}

/// A publisher running in its own thread until stopped.
struct Running {
    stop: Arc<AtomicBool>,
    stats: Arc<PublishStats>,
    thread: Option<JoinHandle<Tailer>>,
}

impl Running {
    fn start(config: TailerConfig, brokers: &str, topic: &str) -> Running {
        Running::start_with(config, KafkaConfig::new(brokers, topic))
    }

    fn start_with(config: TailerConfig, kafka: KafkaConfig) -> Running {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut tailer = Tailer::new(config).expect("following the logs");
        let mut publisher = Publisher::new(kafka, tailer.host()).expect("creating the publisher");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = publisher.stats();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            publisher
                .run(&mut tailer, &flag, |_, _| {})
                .expect("publishing");
            tailer
        });
        Running {
            stop,
            stats,
            thread: Some(thread),
        }
    }

    fn published(&self) -> u64 {
        self.stats.records_published.load(Ordering::Relaxed)
    }

    /// Waits until `count` records were acknowledged by the broker.
    fn wait_published(&self, count: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.published() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} records published",
                self.published()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops cleanly: everything held is published and checkpointed.
    fn stop(mut self) -> Tailer {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        thread.join().expect("the publisher thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn tailer_config(host: &str, logs: &[PathBuf], checkpoints: &Path) -> TailerConfig {
    let mut config = TailerConfig {
        host: Some(host.to_string()),
        logs: logs.iter().map(LogSpec::new).collect(),
        checkpoint_dir: Some(checkpoints.to_path_buf()),
        ..TailerConfig::default()
    };
    config.follow.poll_interval = Duration::from_millis(20);
    config.follow.group_quiet = Duration::from_millis(20);
    config.follow.checkpoint_interval = Duration::ZERO;
    config
}

/// Reads the topic back until `count` log records arrived (or the
/// patience ran out), decoding every Kafka record.
fn read_back(brokers: &str, topic: &str, count: usize) -> Vec<Published> {
    let mut records = Vec::new();
    let messages = read_partition(brokers, topic, 0, PATIENCE, |messages| {
        messages
            .iter()
            .map(|m| RecordBatch::decode(&m.payload).map_or(0, |b| b.records.len()))
            .sum::<usize>()
            >= count
    });
    for message in messages {
        let batch = RecordBatch::decode(&message.payload).expect("a record batch");
        assert_eq!(
            message.key.as_deref(),
            Some(batch.host.as_bytes()),
            "the key is the host"
        );
        for record in batch.records {
            records.push(Published {
                host: batch.host.clone(),
                log: batch.log,
                file_id: batch.file_id,
                inode: batch.inode,
                offset: record.offset,
                bytes: record.bytes,
            });
        }
    }
    records
}

/// The records a tailer reads from `logs`, without Kafka: what the topic
/// must hold.
fn expected_records(host: &str, logs: &[PathBuf]) -> Vec<Published> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tailer_config(host, logs, dir.path());
    config.checkpoint_dir = None;
    let mut tailer = Tailer::new(config).unwrap();
    let mut records = Vec::new();
    let mut quiet_rounds = 0;
    while quiet_rounds < 5 {
        match tailer
            .next_batch(10_000, Duration::from_millis(50))
            .unwrap()
        {
            Some(batch) => {
                quiet_rounds = 0;
                for r in batch.records {
                    records.push(Published {
                        host: r.origin.host,
                        log: r.origin.log,
                        file_id: r.origin.file_id,
                        inode: 0,
                        offset: r.origin.offset,
                        bytes: r.bytes,
                    });
                }
            }
            None => quiet_rounds += 1,
        }
    }
    records
}

/// Records grouped by (log, file), in topic order.
fn by_file(records: &[Published]) -> BTreeMap<(LogFile, u64), Vec<&Published>> {
    let mut files: BTreeMap<(LogFile, u64), Vec<&Published>> = BTreeMap::new();
    for r in records {
        files.entry((r.log, r.file_id)).or_default().push(r);
    }
    files
}

fn text(records: &[Published]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.bytes).into_owned())
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus")
}

#[test]
fn every_corpus_record_is_published_once_in_file_order() {
    let server = Server::kafka();
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = Vec::new();
        for name in ["mainlog", "rejectlog", "paniclog"] {
            let source = corpus().join(scenario).join(name);
            if source.exists() {
                let copy = dir.path().join(name);
                fs::copy(&source, &copy).unwrap();
                logs.push(copy);
            }
        }
        let host = format!("{scenario}.lab.test");
        let expected = expected_records(&host, &logs);
        assert!(expected.len() > 500, "{scenario}: the corpus is read");

        let topic = unique_topic("corpus");
        create_topic(server.address(), &topic, 1);
        let running = Running::start(
            tailer_config(&host, &logs, &dir.path().join("checkpoints")),
            server.address(),
            &topic,
        );
        running.wait_published(expected.len() as u64);
        drop(running.stop());
        let published = read_back(server.address(), &topic, expected.len());

        // Same records, each once, in file order per file, with their
        // origin; the inode is the file's.
        assert_eq!(published.len(), expected.len(), "{scenario}: no duplicates");
        let got = by_file(&published);
        let want = by_file(&expected);
        assert_eq!(got.len(), want.len());
        for (file, want) in &want {
            let got = &got[file];
            let strip = |r: &&Published| Published {
                inode: 0,
                ..(*r).clone()
            };
            assert_eq!(
                got.iter().map(strip).collect::<Vec<_>>(),
                want.iter().map(strip).collect::<Vec<_>>(),
                "{scenario}: {file:?}"
            );
            let path = dir.path().join(format!("{}log", file.0.as_str()));
            let inode = fs::metadata(&path).unwrap().ino();
            assert!(got.iter().all(|r| r.inode == inode && r.host == host));
        }

        // Every byte of each log is in its records.
        for path in &logs {
            let log = LogFile::from_path(path);
            let mut rebuilt = Vec::new();
            for r in published.iter().filter(|r| r.log == log) {
                rebuilt.extend_from_slice(&r.bytes);
                rebuilt.push(b'\n');
            }
            assert_eq!(rebuilt, fs::read(path).unwrap(), "{}", path.display());
        }
    }
}

#[test]
fn copytruncate_content_is_published_once_even_when_the_copy_is_watched() {
    let server = Server::kafka();
    let topic = unique_topic("copytruncate");
    create_topic(server.address(), &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let mainlog = dir.path().join("mainlog");
    let line = |n: u32| format!("2026-12-01 10:00:0{n} 1xZVcX-0007Dw-1{n} <= a@b.test L{n}\n");
    append(&mainlog, &(line(1) + &line(2) + &line(3)));

    let config = tailer_config(
        "mx1.lab.test",
        &[dir.path().join("mainlog*")],
        &dir.path().join("checkpoints"),
    );
    let running = Running::start(config, server.address(), &topic);
    running.wait_published(3);

    // copytruncate: copy, empty the file in place, go on writing.
    fs::copy(&mainlog, dir.path().join("mainlog.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&mainlog)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&mainlog, &line(4));
    running.wait_published(4);

    // Time for a wrong second reading of the copy to show.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(running.published(), 4);
    drop(running.stop());

    let published = read_back(server.address(), &topic, 4);
    let lines: Vec<String> = (1..=4).map(|n| line(n).trim_end().to_string()).collect();
    assert_eq!(text(&published), lines);
}

#[test]
fn a_new_file_with_a_recycled_inode_is_published_whole() {
    let server = Server::kafka();
    let topic = unique_topic("inode-reuse");
    create_topic(server.address(), &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let mainlog = dir.path().join("mainlog");
    let logs = [mainlog.clone()];

    // Eight old lines of 80 bytes, published: the checkpoint says offset
    // 640 in this file.
    let old = |n: u32| format!("2026-12-01 09:00:00 old line {n:02} {}\n", "o".repeat(47));
    let new = |n: u32| format!("2026-12-01 11:00:00 new line {n:02} {}\n", "n".repeat(67));
    assert_eq!(old(1).len(), 80);
    assert_eq!(new(1).len(), 100);
    append(&mainlog, &(1..=8).map(old).collect::<String>());
    let running = Running::start(
        tailer_config("mx1.lab.test", &logs, &checkpoints),
        server.address(),
        &topic,
    );
    running.wait_published(8);
    running.stop().close().unwrap();
    let checkpoint_path = checkpoints.join("mx1.lab.test-main.json");
    let mut checkpoint = Checkpoint::load(&checkpoint_path).unwrap().unwrap();
    let live = checkpoint.files.last().unwrap().clone();
    assert_eq!(live.offset, 640);

    // Rotate and compress while stopped; the new mainlog gets the old
    // inode number (simulated by writing it into the checkpoint) and 800
    // bytes of new lines.
    let rotated = dir.path().join("mainlog.1");
    fs::rename(&mainlog, &rotated).unwrap();
    let status = std::process::Command::new("gzip")
        .arg(&rotated)
        .status()
        .unwrap();
    assert!(status.success());
    append(&mainlog, &(1..=8).map(new).collect::<String>());
    let meta = fs::metadata(&mainlog).unwrap();
    for file in &mut checkpoint.files {
        if file.identity == live.identity {
            file.identity.dev = meta.dev();
            file.identity.inode = meta.ino();
        }
    }
    checkpoint.store(&checkpoint_path).unwrap();

    let running = Running::start(
        tailer_config("mx1.lab.test", &logs, &checkpoints),
        server.address(),
        &topic,
    );
    running.wait_published(8);
    std::thread::sleep(Duration::from_secs(1));
    drop(running.stop());

    let published = read_back(server.address(), &topic, 16);
    let texts = text(&published);
    let new_lines: Vec<String> = (1..=8).map(|n| new(n).trim_end().to_string()).collect();
    let got_new: Vec<String> = texts
        .iter()
        .filter(|t| t.contains("new line"))
        .cloned()
        .collect();
    assert_eq!(got_new, new_lines, "every new line, once, in order");
    let first_new = published
        .iter()
        .find(|r| r.bytes.starts_with(b"2026-12-01 11"))
        .unwrap();
    assert_eq!(first_new.offset, 0, "the new file is read from its start");
    assert_eq!(
        texts.iter().filter(|t| t.contains("old line")).count(),
        8,
        "the old lines are not published again"
    );
}

#[test]
fn records_that_fail_during_an_outage_are_sent_again_in_order() {
    let mut server = Server::kafka();
    let topic = unique_topic("rewind");
    create_topic(server.address(), &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let mainlog = dir.path().join("mainlog");
    let line = |n: u32| format!("2026-12-01 10:00:00 1xZVcX-0007Dw-13 Completed line {n:06}\n");
    let lines = |range: std::ops::Range<u32>| range.map(line).collect::<String>();

    // Records give up after two seconds, so an outage fails them and the
    // publisher has to send them again.
    let mut kafka = KafkaConfig::new(server.address(), &topic);
    kafka.properties = vec![("message.timeout.ms".into(), "2000".into())];
    append(&mainlog, &lines(0..1000));
    let running = Running::start_with(
        tailer_config(
            "mx1.lab.test",
            std::slice::from_ref(&mainlog),
            &dir.path().join("checkpoints"),
        ),
        kafka,
    );
    running.wait_published(1000);

    server.stop();
    append(&mainlog, &lines(1000..3000));
    let deadline = Instant::now() + PATIENCE;
    while running.stats.publish_errors.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no record failed during the outage"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.resume();
    running.wait_published(3000);
    let rewinds = running.stats.rewinds.load(Ordering::Relaxed);
    drop(running.stop());
    assert!(rewinds >= 1);

    let published = read_back(server.address(), &topic, 3000);
    let texts = text(&published);
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (position, t) in texts.iter().enumerate() {
        last.insert(t.as_str(), position);
    }
    let expected: Vec<String> = (0..3000).map(|n| line(n).trim_end().to_string()).collect();
    assert_eq!(last.len(), 3000, "every line, nothing else");
    let positions: Vec<usize> = expected.iter().map(|t| last[t.as_str()]).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "the last copies are in file order"
    );
}
