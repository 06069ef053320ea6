//! Throughput of `exim-pilot tail`'s publishing: a 1,000,000-line mainlog
//! made by `benches/genlog.py` is followed and published to a real
//! Kafka-protocol broker (the test kit's, on the loopback interface) until
//! the broker has acknowledged every record. Prints lines/s and MB/s, and
//! the Kafka records the lines were packed into.
//!
//! `cargo bench -p exim-pilot-ingest --features kafka --bench publish`
//! (set `LINES` to change the size, `PROPERTIES=key=value,...` to try
//! librdkafka settings). Needs the broker installed
//! (`scripts/services.sh install`) and python3.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use exim_pilot_ingest::kafka::{KafkaConfig, Publisher};
use exim_pilot_ingest::{LogSpec, Tailer, TailerConfig};
use exim_pilot_testkit::kafka::{create_topic, unique_topic};
use exim_pilot_testkit::Server;

fn main() {
    let lines: usize = std::env::var("LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = dir.path().join("mainlog");
    let genlog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/genlog.py");
    let status = std::process::Command::new("python3")
        .arg(&genlog)
        .arg(&log)
        .arg(lines.to_string())
        .status()
        .expect("running benches/genlog.py");
    assert!(status.success(), "benches/genlog.py failed");
    let bytes = std::fs::metadata(&log).expect("the generated log").len();
    println!("{lines} lines, {:.1} MB", bytes as f64 / 1e6);

    let server = Server::kafka();
    let topic = unique_topic("bench");
    create_topic(server.address(), &topic, 1);

    let mut config = TailerConfig {
        host: Some("bench.example".into()),
        logs: vec![LogSpec::new(&log)],
        checkpoint_dir: Some(dir.path().join("checkpoints")),
        ..TailerConfig::default()
    };
    config.follow.poll_interval = Duration::from_millis(5);
    config.follow.group_quiet = Duration::from_millis(5);
    let mut tailer = Tailer::new(config).expect("following the log");
    // PROPERTIES="key=value,..." passes librdkafka properties, to compare
    // settings.
    let mut kafka = KafkaConfig::new(server.address(), &topic);
    kafka.properties = std::env::var("PROPERTIES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut publisher = Publisher::new(kafka, "bench.example").expect("creating the publisher");
    let stats = publisher.stats();

    // Lines are counted as the broker acknowledges them; the loop stops
    // once every line is.
    let started = Instant::now();
    let mut last = (0, started);
    while stats.records_published.load(Ordering::Relaxed) < lines as u64 {
        publisher.step(&mut tailer).expect("publishing");
        if last.1.elapsed() >= Duration::from_secs(60) {
            let now = stats.records_published.load(Ordering::Relaxed);
            assert!(now > last.0, "no progress for a minute");
            last = (now, Instant::now());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let batches = stats.batches_published.load(Ordering::Relaxed);
    let sent = stats.bytes_published.load(Ordering::Relaxed);
    println!(
        "publish  {secs:8.2} s {:12.0} lines/s {:8.1} MB/s   {batches} Kafka records \
         ({:.0} lines, {:.0} KB each), {} errors",
        lines as f64 / secs,
        bytes as f64 / 1e6 / secs,
        lines as f64 / batches.max(1) as f64,
        sent as f64 / 1e3 / batches.max(1) as f64,
        stats.publish_errors.load(Ordering::Relaxed),
    );
    publisher.drain(&mut tailer).expect("draining");
    tailer.close().expect("final checkpoint");
}
