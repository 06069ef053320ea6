//! Throughput of the fleet processor: records per second from a real
//! broker, through parsing and correlation, into the SQLite store.
//!
//!     cargo bench --bench fleet [-- LINES]      (default 200,000)
//!
//! Generates a mainlog with `benches/genlog.py`, publishes it as record
//! batches of 500 records for two mail servers (one partition each) to a
//! broker of its own (exim_pilot_testkit), then times one processor
//! reading the whole topic into an empty store, and prints records per
//! second. Publishing is timed apart and not included.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exim_pilot_processor::fleet::{FleetConfig, FleetMetrics, Processor};
use exim_pilot_processor::parse::RecordReader;
use exim_pilot_schema::wire::{BatchRecord, RecordBatch};
use exim_pilot_schema::{LogFile, Zone};
use exim_pilot_store::{SqliteStore, Store};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const HOSTS: [&str; 2] = ["mx1.bench.test", "mx2.bench.test"];
const PER_BATCH: usize = 500;

fn main() {
    let lines: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let work = tempfile::tempdir().expect("a temporary folder");
    let log = work.path().join("mainlog");
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/genlog.py"))
        .arg(&log)
        .arg((lines / HOSTS.len()).to_string())
        .status()
        .expect("running benches/genlog.py");
    assert!(status.success(), "benches/genlog.py failed");

    let kafka = exim_pilot_testkit::Server::kafka();
    let brokers = kafka.address().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let topic = "exim-pilot-bench";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("an admin client");
    let new = NewTopic::new(topic, HOSTS.len() as i32, TopicReplication::Fixed(1));
    for r in rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("creating the topic")
    {
        r.expect("creating the topic");
    }

    // Publish.
    let started = Instant::now();
    let records = publish(&brokers, topic, &log);
    let publish_secs = started.elapsed().as_secs_f64();

    // Process into an empty store.
    let data = work.path().join("data");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(&data).expect("a store"));
    let config = FleetConfig {
        zone: Zone::Utc,
        stop_when_caught_up: true,
        ..FleetConfig::new(&brokers, topic, "bench")
    };
    let metrics = FleetMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let started = Instant::now();
    let mut processor =
        Processor::new(config, store, rt.handle().clone(), metrics.clone()).expect("a processor");
    processor
        .run(&AtomicBool::new(false))
        .expect("processing the topic");
    let secs = started.elapsed().as_secs_f64();

    assert_eq!(metrics.records_processed(), records as u64);
    println!(
        "published {records} records in {publish_secs:.2} s; processed them into SQLite in \
         {secs:.2} s: {:.0} records/s, {} store batches",
        records as f64 / secs,
        metrics.batches_committed()
    );
}

/// Publishes the log once per host, in batches; returns the records sent.
fn publish(brokers: &str, topic: &str, log: &Path) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .expect("a producer");
    let mut sent = 0;
    for (partition, host) in HOSTS.iter().enumerate() {
        let mut reader =
            RecordReader::new(BufReader::new(File::open(log).expect("the generated log")));
        let mut batch = RecordBatch::new(host, LogFile::Main, 1, 1);
        loop {
            let record = reader.next_record().expect("reading the generated log");
            let end = record.is_none();
            if let Some(record) = record {
                batch.records.push(BatchRecord {
                    offset: record.offset,
                    read_at_ms: 0,
                    bytes: record.bytes.to_vec(),
                });
            }
            if batch.records.len() == PER_BATCH || (end && !batch.records.is_empty()) {
                sent += batch.records.len();
                let payload = batch.encode();
                let mut next = BaseRecord::to(topic)
                    .key(*host)
                    .payload(&payload)
                    .partition(partition as i32);
                while let Err((_, again)) = producer.send(next) {
                    producer.poll(Duration::from_millis(50));
                    next = again;
                }
                batch.records.clear();
            }
            if end {
                break;
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("publishing the batches");
    sent
}
