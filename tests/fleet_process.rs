//! The fleet processor against a real Kafka-protocol broker.
//!
//! Each test starts its own broker (exim_pilot_testkit), creates its own
//! topic and group, publishes record batches the way a tailer does, and
//! runs processors: in-process where the test needs to look inside (a
//! store that fails on purpose, the pending count), as `exim-pilot
//! process` child processes where one must be killed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use exim_pilot_processor::fleet::{
    state_blob_name, FleetConfig, FleetError, FleetMetrics, Processor, UNDECODABLE,
};
use exim_pilot_processor::parse::RecordReader;
use exim_pilot_schema::report::{ReportCells, ReportOptions};
use exim_pilot_schema::wire::{BatchRecord, RecordBatch};
use exim_pilot_schema::{Lifecycle, LogFile, MessageId, RejectRecord, Report, Zone};
use exim_pilot_store::{
    AuditEntry, AuditFilter, Batch, BatchSummary, CellQuery, HostSummary, LineQuery, MessageFilter,
    Page, PageRequest, RecipientCount, RecipientQuery, RejectFilter, Retention, RetentionSummary,
    Session, SqliteStore, Store, StoreError, StoredRecord, User,
};
use exim_pilot_testkit::Server;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[path = "../processor/tests/support/ground_truth.rs"]
mod ground_truth;

/// How long a test waits for the processors before it fails.
const PATIENCE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------
// Kafka helpers

/// A name no other test uses.
fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn create_topic(rt: &tokio::runtime::Runtime, brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Publishes `payload` to one partition and waits until the broker has it.
fn publish(producer: &BaseProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    let mut record = BaseRecord::to(topic)
        .key(key)
        .payload(payload)
        .partition(partition);
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((e, r)) => {
                // The local queue is full: let it drain.
                eprintln!("send failed ({e}); retrying");
                producer.poll(Duration::from_millis(100));
                record = r;
            }
        }
    }
}

fn flush(producer: &BaseProducer) {
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A client of the group that never joins it: it reads and commits the
/// group's offsets.
fn group_client(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// The group's committed offset per partition (-1 when none).
fn committed(client: &BaseConsumer, topic: &str, partitions: i32) -> Vec<i64> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let got = client
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Commits the group's offset of one partition, as if it had been read.
fn commit_offset(client: &BaseConsumer, topic: &str, partition: i32, offset: i64) {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    client.assign(&list).unwrap();
    client.commit(&list, CommitMode::Sync).unwrap();
    client.unassign().unwrap();
}

/// The end offset of every partition.
fn high_watermarks(client: &BaseConsumer, topic: &str, partitions: i32) -> Vec<i64> {
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

// ---------------------------------------------------------------------
// What the tailers would publish

/// One host's logs: (log kind, file) pairs.
struct HostLogs {
    host: &'static str,
    scenario: &'static str,
    partition: i32,
}

/// The record batches of one log file, `per_batch` records each.
fn batches_of(host: &str, path: &Path, file_id: u64, per_batch: usize) -> Vec<RecordBatch> {
    let log = LogFile::from_path(path);
    let mut reader = RecordReader::new(BufReader::new(File::open(path).unwrap()));
    let mut batches = Vec::new();
    let mut batch = RecordBatch::new(host, log, file_id, file_id);
    while let Some(record) = reader.next_record().unwrap() {
        batch.records.push(BatchRecord {
            offset: record.offset,
            read_at_ms: 1_790_000_000_000,
            bytes: record.bytes.to_vec(),
        });
        if batch.records.len() == per_batch {
            batches.push(std::mem::replace(
                &mut batch,
                RecordBatch::new(host, log, file_id, file_id),
            ));
        }
    }
    if !batch.records.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Every batch of a host's three logs, interleaved the way a tailer
/// following all three would publish them, with the total record count.
fn host_batches(logs: &HostLogs, per_batch: usize) -> (Vec<RecordBatch>, usize) {
    let dir = ground_truth::corpus_dir().join(logs.scenario);
    let mut per_file: Vec<std::collections::VecDeque<RecordBatch>> = ["mainlog", "rejectlog"]
        .iter()
        .enumerate()
        .map(|(i, name)| batches_of(logs.host, &dir.join(name), 100 + i as u64, per_batch).into())
        .collect();
    let total = per_file
        .iter()
        .flatten()
        .map(|b| b.records.len())
        .sum::<usize>();
    let mut out = Vec::new();
    while per_file.iter().any(|f| !f.is_empty()) {
        for file in &mut per_file {
            if let Some(b) = file.pop_front() {
                out.push(b);
            }
        }
    }
    (out, total)
}

const FLEET: [HostLogs; 2] = [
    HostLogs {
        host: "mx1.lab.test",
        scenario: "s01_core_all",
        partition: 0,
    },
    HostLogs {
        host: "mx2.lab.test",
        scenario: "s02_default_selectors",
        partition: 1,
    },
];

// ---------------------------------------------------------------------
// Reading the store back

fn lifecycles_of(rt: &tokio::runtime::Runtime, store: &dyn Store, host: &str) -> Vec<Lifecycle> {
    let filter = MessageFilter {
        host: Some(host.to_string()),
        ..MessageFilter::default()
    };
    let mut page = PageRequest {
        first: exim_pilot_store::MAX_PAGE,
        after: None,
    };
    let mut all = Vec::new();
    loop {
        let got = rt.block_on(store.search(&filter, &page)).unwrap();
        all.extend(got.items);
        if !got.has_next_page {
            break;
        }
        page.after = got.end_cursor;
    }
    all.sort_by_key(|lc| lc.id);
    all
}

/// Every lifecycle of the fleet's hosts, as JSON, in a fixed order.
fn lifecycles_json(rt: &tokio::runtime::Runtime, store: &dyn Store) -> String {
    let all: Vec<Vec<Lifecycle>> = FLEET
        .iter()
        .map(|h| lifecycles_of(rt, store, h.host))
        .collect();
    serde_json::to_string_pretty(&all).unwrap()
}

fn records_per_host(rt: &tokio::runtime::Runtime, store: &dyn Store) -> BTreeMap<String, i64> {
    rt.block_on(store.hosts())
        .unwrap()
        .into_iter()
        .map(|h| (h.host, h.records))
        .collect()
}

fn assert_ground_truth(rt: &tokio::runtime::Runtime, store: &dyn Store) {
    for logs in &FLEET {
        let ours = lifecycles_of(rt, store, logs.host);
        let problems = ground_truth::compare(&ground_truth::truth(logs.scenario), &ours);
        assert!(
            problems.is_empty(),
            "{} ({}): {} mismatches against the ground truth:\n{}",
            logs.host,
            logs.scenario,
            problems.len(),
            problems.join("\n")
        );
    }
}

// ---------------------------------------------------------------------
// Processors

fn config(brokers: &str, topic: &str, group: &str) -> FleetConfig {
    FleetConfig {
        zone: Zone::Utc,
        client_options: vec![
            ("session.timeout.ms".into(), "6000".into()),
            ("heartbeat.interval.ms".into(), "1000".into()),
        ],
        retry: exim_pilot_processor::fleet::Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        ..FleetConfig::new(brokers, topic, group)
    }
}

/// Runs a processor in-process until it has read the whole topic.
fn process_until_caught_up(
    rt: &tokio::runtime::Runtime,
    mut config: FleetConfig,
    store: Arc<dyn Store>,
) -> FleetMetrics {
    config.stop_when_caught_up = true;
    let metrics = FleetMetrics::new(&prometheus::Registry::new()).unwrap();
    let mut processor =
        Processor::new(config, store, rt.handle().clone(), metrics.clone()).unwrap();
    let stop = AtomicBool::new(false);
    processor.run(&stop).unwrap();
    metrics
}

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

/// A child process, killed if the test ends while it runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `exim-pilot process`; its messages go to `log` (shown when the
/// test fails).
fn spawn_process(brokers: &str, topic: &str, group: &str, data: &Path, log: &Path) -> Running {
    let log = File::options().create(true).append(true).open(log).unwrap();
    let child = exim_pilot()
        .args([
            "process",
            "--no-queue",
            "--kafka",
            brokers,
            "--topic",
            topic,
            "--group",
            group,
        ])
        .args(["--timezone", "utc", "--quiet", "--data"])
        .arg(data)
        .args(["--kafka-option", "session.timeout.ms=6000"])
        .args(["--kafka-option", "heartbeat.interval.ms=1000"])
        .env("RUST_LOG", "info,rdkafka=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Running(child)
}

/// A processor running on a thread of its own until the flag is set.
fn spawn_processor(
    rt: &tokio::runtime::Runtime,
    config: FleetConfig,
    store: Arc<dyn Store>,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<(), FleetError>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = FleetMetrics::new(&prometheus::Registry::new()).unwrap();
    let handle = rt.handle().clone();
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut processor = Processor::new(config, store, handle, metrics).unwrap();
        processor.run(&flag)
    });
    (stop, thread)
}

/// A broker, a runtime, and a topic and a consumer group no other test
/// uses.
struct Setup {
    /// Runs while the test holds it.
    _kafka: Server,
    brokers: String,
    rt: tokio::runtime::Runtime,
    topic: String,
    group: String,
}

/// A [`Setup`] whose topic has `partitions`.
fn setup(partitions: i32) -> Setup {
    let kafka = Server::kafka();
    let brokers = kafka.address().to_string();
    let rt = runtime();
    let (topic, group) = (unique("raw"), unique("group"));
    create_topic(&rt, &brokers, &topic, partitions);
    Setup {
        _kafka: kafka,
        brokers,
        rt,
        topic,
        group,
    }
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    wait_until_or(what, || {}, done)
}

/// Waits until `done`; calls `explain` before failing.
fn wait_until_or(what: &str, explain: impl Fn(), mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > PATIENCE {
            explain();
            panic!("gave up waiting until {what} after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------
// A store that fails on purpose

/// Called before every commit attempt of a [`FlakyStore`].
type AttemptHook = Box<dyn Fn(u32, &Batch) + Send + Sync>;

/// Wraps a store; its first `failures` batch commits fail. `seen` is
/// called before every commit attempt with the attempt's number (from 1)
/// and the batch.
struct FlakyStore {
    inner: Arc<SqliteStore>,
    failures: u32,
    attempts: AtomicU32,
    seen: AttemptHook,
}

impl FlakyStore {
    /// A store over `inner` whose first `failures` commits fail; `seen`
    /// is told of every attempt.
    fn new(
        inner: Arc<SqliteStore>,
        failures: u32,
        seen: impl Fn(u32, &Batch) + Send + Sync + 'static,
    ) -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner,
            failures,
            attempts: AtomicU32::new(0),
            seen: Box::new(seen),
        })
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn commit_batch(&self, batch: Batch) -> exim_pilot_store::Result<BatchSummary> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        (self.seen)(attempt, &batch);
        if attempt <= self.failures {
            return Err(StoreError::Task(format!(
                "attempt {attempt} fails on purpose"
            )));
        }
        self.inner.commit_batch(batch).await
    }
    async fn load_blob(&self, name: &str) -> exim_pilot_store::Result<Option<Vec<u8>>> {
        self.inner.load_blob(name).await
    }
    async fn lifecycle(
        &self,
        h: &str,
        id: MessageId,
    ) -> exim_pilot_store::Result<Option<Lifecycle>> {
        self.inner.lifecycle(h, id).await
    }
    async fn lifecycles_by_id(&self, id: MessageId) -> exim_pilot_store::Result<Vec<Lifecycle>> {
        self.inner.lifecycles_by_id(id).await
    }
    async fn message_records(
        &self,
        h: &str,
        id: MessageId,
    ) -> exim_pilot_store::Result<Vec<StoredRecord>> {
        self.inner.message_records(h, id).await
    }
    async fn search(
        &self,
        f: &MessageFilter,
        p: &PageRequest,
    ) -> exim_pilot_store::Result<Page<Lifecycle>> {
        self.inner.search(f, p).await
    }
    async fn rejects(
        &self,
        f: &RejectFilter,
        p: &PageRequest,
    ) -> exim_pilot_store::Result<Page<RejectRecord>> {
        self.inner.rejects(f, p).await
    }
    async fn report(&self, o: &ReportOptions) -> exim_pilot_store::Result<Report> {
        self.inner.report(o).await
    }
    async fn cells(&self, q: &CellQuery) -> exim_pilot_store::Result<ReportCells> {
        self.inner.cells(q).await
    }
    async fn top_recipients(
        &self,
        q: &RecipientQuery,
    ) -> exim_pilot_store::Result<Vec<RecipientCount>> {
        self.inner.top_recipients(q).await
    }
    async fn search_lines(&self, q: &LineQuery) -> exim_pilot_store::Result<Vec<StoredRecord>> {
        self.inner.search_lines(q).await
    }
    async fn hosts(&self) -> exim_pilot_store::Result<Vec<HostSummary>> {
        self.inner.hosts().await
    }
    async fn append_audit(&self, e: &AuditEntry) -> exim_pilot_store::Result<()> {
        self.inner.append_audit(e).await
    }
    async fn audit_log(
        &self,
        f: &AuditFilter,
        p: &PageRequest,
    ) -> exim_pilot_store::Result<Page<AuditEntry>> {
        self.inner.audit_log(f, p).await
    }
    async fn create_user(&self, user: &User) -> exim_pilot_store::Result<()> {
        self.inner.create_user(user).await
    }
    async fn update_user(&self, user: &User) -> exim_pilot_store::Result<()> {
        self.inner.update_user(user).await
    }
    async fn user(&self, name: &str) -> exim_pilot_store::Result<Option<User>> {
        self.inner.user(name).await
    }
    async fn users(&self) -> exim_pilot_store::Result<Vec<User>> {
        self.inner.users().await
    }
    async fn save_session(&self, session: &Session) -> exim_pilot_store::Result<()> {
        self.inner.save_session(session).await
    }
    async fn session(&self, id: &str) -> exim_pilot_store::Result<Option<Session>> {
        self.inner.session(id).await
    }
    async fn revoke_sessions(
        &self,
        user: &str,
        at: DateTime<Utc>,
    ) -> exim_pilot_store::Result<u64> {
        self.inner.revoke_sessions(user, at).await
    }
    async fn save_queue_snapshot(
        &self,
        s: &exim_pilot_schema::QueueSnapshot,
    ) -> exim_pilot_store::Result<()> {
        self.inner.save_queue_snapshot(s).await
    }
    async fn queue_messages(
        &self,
        f: &exim_pilot_store::QueueFilter,
        p: &PageRequest,
    ) -> exim_pilot_store::Result<Page<exim_pilot_store::QueueEntry>> {
        self.inner.queue_messages(f, p).await
    }
    async fn queue_health(
        &self,
        host: Option<&str>,
    ) -> exim_pilot_store::Result<Vec<exim_pilot_store::QueueHealth>> {
        self.inner.queue_health(host).await
    }
    async fn queue_history(
        &self,
        q: &exim_pilot_store::QueueHistoryQuery,
    ) -> exim_pilot_store::Result<Vec<exim_pilot_store::QueuePoint>> {
        self.inner.queue_history(q).await
    }
    async fn save_queue_job(
        &self,
        j: &exim_pilot_schema::QueueJob,
    ) -> exim_pilot_store::Result<()> {
        self.inner.save_queue_job(j).await
    }
    async fn save_queue_results(
        &self,
        r: &[exim_pilot_schema::QueueActionResult],
    ) -> exim_pilot_store::Result<()> {
        self.inner.save_queue_results(r).await
    }
    async fn queue_job(
        &self,
        id: &str,
    ) -> exim_pilot_store::Result<
        Option<(
            exim_pilot_schema::QueueJob,
            Vec<exim_pilot_schema::QueueActionResult>,
        )>,
    > {
        self.inner.queue_job(id).await
    }
    async fn queue_jobs(
        &self,
        f: &exim_pilot_store::QueueJobFilter,
        p: &PageRequest,
    ) -> exim_pilot_store::Result<Page<exim_pilot_store::QueueJobSummary>> {
        self.inner.queue_jobs(f, p).await
    }
    async fn apply_retention(
        &self,
        policy: &Retention,
        now: DateTime<Utc>,
    ) -> exim_pilot_store::Result<RetentionSummary> {
        self.inner.apply_retention(policy, now).await
    }
    async fn live_feed(&self) -> exim_pilot_store::Result<Box<dyn exim_pilot_store::LiveFeed>> {
        self.inner.live_feed().await
    }
    async fn append_login_marks(
        &self,
        marks: &[exim_pilot_store::LoginMark],
    ) -> exim_pilot_store::Result<()> {
        self.inner.append_login_marks(marks).await
    }
    async fn login_marks(
        &self,
        keys: &[String],
        since: DateTime<Utc>,
        per_key: usize,
    ) -> exim_pilot_store::Result<Vec<exim_pilot_store::LoginMark>> {
        self.inner.login_marks(keys, since, per_key).await
    }
}

/// One mainlog line as a batch of one record at file offset `offset`.
fn one_line_batch(host: &str, offset: u64) -> Vec<u8> {
    let mut batch = RecordBatch::new(host, LogFile::Main, 7, 7);
    batch.records.push(BatchRecord {
        offset,
        read_at_ms: 1_790_000_000_000,
        bytes: format!(
            "2026-12-04 15:54:{:02} H=(client{offset}) [192.0.2.{}] rejected EHLO or HELO \
             client{offset}: not a fully qualified name",
            offset % 60,
            offset % 250
        )
        .into_bytes(),
    });
    batch.encode()
}

// ---------------------------------------------------------------------
// Tests

#[test]
fn two_processors_one_killed_and_restarted_store_the_ground_truth() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(2);
    let data = tempfile::tempdir().unwrap();

    let mut all = Vec::new();
    let mut expected = BTreeMap::new();
    for logs in &FLEET {
        let (batches, total) = host_batches(logs, 25);
        expected.insert(logs.host.to_string(), total as i64);
        all.push((logs, batches));
    }
    let producer = producer(&brokers);
    let send_share = |from: f64, to: f64| {
        for (logs, batches) in &all {
            let (a, b) = (
                (batches.len() as f64 * from) as usize,
                (batches.len() as f64 * to) as usize,
            );
            for batch in &batches[a..b] {
                publish(
                    &producer,
                    &topic,
                    logs.partition,
                    logs.host,
                    &batch.encode(),
                );
            }
        }
        flush(&producer);
    };

    // Two processors share the first half.
    send_share(0.0, 0.5);
    let logs = tempfile::tempdir().unwrap();
    let (first_log, second_log) = (logs.path().join("first"), logs.path().join("second"));
    let mut first = spawn_process(&brokers, &topic, &group, data.path(), &first_log);
    let mut second = spawn_process(&brokers, &topic, &group, data.path(), &second_log);
    let store = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    // Both must be full members of the group first: the broker gives a
    // member's partitions to the others only once it knew the member.
    let owns_a_partition = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("Partitions assigned partitions=[") && !l.ends_with("=[]"))
    };
    wait_until("both processors own a partition and stored records", || {
        owns_a_partition(&first_log)
            && owns_a_partition(&second_log)
            && records_per_host(&rt, &*store).len() == FLEET.len()
    });

    // More arrives, one dies without a word while it works, and it
    // comes back.
    send_share(0.5, 1.0);
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    // The broker notices the death after the session timeout (6 s) and
    // gives the survivor every partition. The restart waits for that (for
    // a while): the broker used in tests can leave a partition with no
    // owner when a member comes back while its dead predecessor still
    // holds it.
    let owns_every_partition = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.contains("Partitions assigned partitions=["))
            .is_some_and(|l| l.ends_with("partitions=[0, 1]"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !owns_every_partition(&second_log) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut first = spawn_process(&brokers, &topic, &group, data.path(), &first_log);

    let client = group_client(&brokers, &group);
    let ends = high_watermarks(&client, &topic, 2);
    let show_logs = || {
        for log in [&first_log, &second_log] {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            eprintln!("==== {}:\n{text}", log.display());
        }
    };
    wait_until_or("the group has committed every offset", show_logs, || {
        committed(&client, &topic, 2) == ends
    });
    for child in [&mut first, &mut second] {
        // SAFETY: kill(2) on our own child's process id.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
        assert!(child.0.wait().unwrap().success());
    }

    assert_eq!(records_per_host(&rt, &*store), expected);
    assert_ground_truth(&rt, &*store);
}

#[test]
fn offsets_stay_put_until_the_store_took_the_batch() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(1);

    // Offsets 0..100 were processed long ago; 100..110 are new.
    let producer = producer(&brokers);
    for _ in 0..100 {
        publish(&producer, &topic, 0, "mx1", b"processed before");
    }
    flush(&producer);
    let client = group_client(&brokers, &group);
    commit_offset(&client, &topic, 0, 100);
    for i in 0..10 {
        publish(&producer, &topic, 0, "mx1", &one_line_batch("mx1", i * 100));
    }
    flush(&producer);

    // The store fails three times; each time, the group's offset is read.
    let observed = Arc::new(Mutex::new(Vec::new()));
    let seen = {
        let observed = observed.clone();
        let (brokers, group, topic) = (brokers.clone(), group.clone(), topic.clone());
        move |attempt: u32, batch: &Batch| {
            let client = group_client(&brokers, &group);
            let offset = committed(&client, &topic, 1)[0];
            observed
                .lock()
                .unwrap()
                .push((attempt, batch.records.len(), offset));
        }
    };
    let data = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    let store = FlakyStore::new(inner.clone(), 3, seen);
    let mut config = config(&brokers, &topic, &group);
    config.batch_wait = Duration::from_secs(5);
    let metrics = process_until_caught_up(&rt, config, store);

    let observed = observed.lock().unwrap().clone();
    assert!(observed.len() >= 4, "{observed:?}");
    for (attempt, records, offset) in &observed[..4] {
        assert_eq!(*records, 10, "attempt {attempt} offered {records} records");
        assert_eq!(*offset, 100, "attempt {attempt} saw offset {offset}");
    }
    assert_eq!(metrics.store_retries(), 3);
    assert_eq!(committed(&client, &topic, 1), vec![110]);
    assert_eq!(
        records_per_host(&rt, &*inner),
        BTreeMap::from([("mx1".to_string(), 10)])
    );
}

#[test]
fn a_retried_batch_is_offered_again_not_appended_again() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(4);

    // Partition 3 was read up to offset 42; the record at 42 is new.
    let producer = producer(&brokers);
    for _ in 0..42 {
        publish(&producer, &topic, 3, "mx1", b"processed before");
    }
    flush(&producer);
    let client = group_client(&brokers, &group);
    commit_offset(&client, &topic, 3, 42);
    publish(&producer, &topic, 3, "mx1", &one_line_batch("mx1", 0));
    flush(&producer);

    let metrics = FleetMetrics::new(&prometheus::Registry::new()).unwrap();
    let pending_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = {
        let (metrics, pending_seen) = (metrics.clone(), pending_seen.clone());
        move |_attempt: u32, batch: &Batch| {
            // A partition state saved alone is not the batch looked at.
            if batch.records.is_empty() {
                return;
            }
            pending_seen
                .lock()
                .unwrap()
                .push((metrics.pending_records(), batch.records.len()));
        }
    };
    let data = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    let store = FlakyStore::new(inner.clone(), 2, seen);
    let mut config = config(&brokers, &topic, &group);
    config.stop_when_caught_up = true;
    let mut processor =
        Processor::new(config, store, rt.handle().clone(), metrics.clone()).unwrap();
    processor.run(&AtomicBool::new(false)).unwrap();

    assert_eq!(*pending_seen.lock().unwrap(), vec![(1, 1), (1, 1), (1, 1)]);
    assert_eq!(metrics.pending_records(), 0);
    assert_eq!(metrics.store_retries(), 2);
    assert_eq!(committed(&client, &topic, 4)[3], 43);
    assert_eq!(
        records_per_host(&rt, &*inner),
        BTreeMap::from([("mx1".to_string(), 1)])
    );
}

#[test]
fn replay_from_the_beginning_rebuilds_the_same_store() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(2);
    let producer = producer(&brokers);
    for logs in &FLEET {
        for batch in host_batches(logs, 40).0 {
            publish(
                &producer,
                &topic,
                logs.partition,
                logs.host,
                &batch.encode(),
            );
        }
    }
    flush(&producer);

    // The first run.
    let first_dir = tempfile::tempdir().unwrap();
    let first: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(first_dir.path()).unwrap());
    process_until_caught_up(&rt, config(&brokers, &topic, &group), first.clone());
    assert_ground_truth(&rt, &*first);

    // The group is reset and everything rebuilt in an empty store.
    let second_dir = tempfile::tempdir().unwrap();
    let out = exim_pilot()
        .args([
            "replay",
            "--from-beginning",
            "--kafka",
            &brokers,
            "--topic",
            &topic,
        ])
        .args(["--group", &group, "--timezone", "utc", "--data"])
        .arg(second_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = SqliteStore::open_dir(second_dir.path()).unwrap();
    assert_eq!(lifecycles_json(&rt, &*first), lifecycles_json(&rt, &second));
    assert_eq!(
        records_per_host(&rt, &*first),
        records_per_host(&rt, &second)
    );
}

#[test]
fn an_undecodable_kafka_record_is_stored_whole() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(1);
    let producer = producer(&brokers);
    let garbage = b"EPB1 truncated\xff\xfe garbage payload".to_vec();
    publish(&producer, &topic, 0, "mx1", &garbage);
    publish(&producer, &topic, 0, "mx1", &one_line_batch("mx1", 0));
    flush(&producer);

    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    process_until_caught_up(&rt, config(&brokers, &topic, &group), store.clone());

    let origin_host = format!("kafka:{topic}/0");
    let found = rt
        .block_on(store.search_lines(&LineQuery {
            text: "garbage".into(),
            host: Some(origin_host.clone()),
            ..LineQuery::default()
        }))
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].bytes, garbage);
    assert_eq!(found[0].event_kind, UNDECODABLE);
    assert_eq!(found[0].origin.host, origin_host);
    assert_eq!(found[0].origin.offset, 0);
    assert_eq!(
        records_per_host(&rt, &*store),
        BTreeMap::from([(origin_host, 1), ("mx1".to_string(), 1)])
    );
}

#[test]
fn a_partition_revoked_while_paused_is_read_again_once_assigned_back() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(2);
    let producer = producer(&brokers);
    for p in 0..2 {
        publish(
            &producer,
            &topic,
            p,
            "mx1",
            &one_line_batch(&format!("p{p}"), 0),
        );
    }
    flush(&producer);

    // The first commit fails, and the processor waits 10 s with its
    // partitions paused.
    let data = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = {
        let attempts = attempts.clone();
        move |attempt: u32, _: &Batch| attempts.store(attempt, Ordering::SeqCst)
    };
    let store = FlakyStore::new(inner.clone(), 1, seen);
    let mut config = config(&brokers, &topic, &group);
    config.retry = exim_pilot_processor::fleet::Backoff {
        first: Duration::from_secs(10),
        max: Duration::from_secs(10),
    };
    let (stop, processor) = spawn_processor(&rt, config, store);
    wait_until("the first commit failed", || {
        attempts.load(Ordering::SeqCst) >= 1
    });

    // Another member joins during the wait and takes one partition away;
    // it leaves only after the wait is over, when the processor has
    // resumed what it still had.
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    other.subscribe(&[&topic]).unwrap();
    let mut taken = None;
    wait_until("the other member holds a partition", || {
        let _ = other.poll(Duration::from_millis(100));
        taken = other
            .assignment()
            .ok()
            .and_then(|a| a.elements().first().map(|e| e.partition()));
        taken.is_some()
    });
    wait_until("the processor's wait is over", || {
        let _ = other.poll(Duration::from_millis(100));
        attempts.load(Ordering::SeqCst) >= 2
    });
    drop(other);

    // Both partitions are the processor's again: new records in either
    // are stored.
    for p in 0..2 {
        publish(
            &producer,
            &topic,
            p,
            "mx1",
            &one_line_batch(&format!("p{p}"), 100),
        );
    }
    flush(&producer);
    wait_until_or(
        "new records of both partitions are stored",
        || {
            eprintln!(
                "partition {taken:?} was taken; stored: {:?}",
                records_per_host(&rt, &*inner)
            )
        },
        || {
            let stored = records_per_host(&rt, &*inner);
            (0..2).all(|p| stored.get(&format!("p{p}")) == Some(&2))
        },
    );
    stop.store(true, Ordering::SeqCst);
    processor.join().unwrap().unwrap();
}

#[test]
fn a_state_being_saved_holds_back_the_offset_not_the_records() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(1);
    let producer = producer(&brokers);
    publish(&producer, &topic, 0, "mx1", &one_line_batch("mx1", 0));
    flush(&producer);

    // A write of the state alone (blobs, no records) waits until it is
    // released.
    let released = Arc::new(AtomicBool::new(false));
    let saves = Arc::new(AtomicU32::new(0));
    let seen = {
        let (released, saves) = (released.clone(), saves.clone());
        move |_: u32, batch: &Batch| {
            if batch.records.is_empty() && !batch.blobs.is_empty() {
                saves.fetch_add(1, Ordering::SeqCst);
                while !released.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    };
    let data = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    let store = FlakyStore::new(inner.clone(), 0, seen);
    let mut config = config(&brokers, &topic, &group);
    config.state_interval = Duration::ZERO;
    let (stop, processor) = spawn_processor(&rt, config, store);
    wait_until("the first state is being saved", || {
        saves.load(Ordering::SeqCst) >= 1
    });

    // Records that come meanwhile are stored without waiting for the
    // save; the group's offset and the stored state wait for it.
    for i in 1..5 {
        publish(&producer, &topic, 0, "mx1", &one_line_batch("mx1", i * 100));
    }
    flush(&producer);
    wait_until("the later records are stored", || {
        records_per_host(&rt, &*inner).get("mx1") == Some(&5)
    });
    let client = group_client(&brokers, &group);
    let blob = state_blob_name(&topic, 0);
    assert_eq!(committed(&client, &topic, 1), vec![-1]);
    assert_eq!(rt.block_on(inner.load_blob(&blob)).unwrap(), None);
    assert_eq!(saves.load(Ordering::SeqCst), 1, "one save at a time");

    // Once the state is stored, the offset just past the record it covers
    // is committed; stopping saves the last state with the offset of all.
    released.store(true, Ordering::SeqCst);
    wait_until("the saved state's offset is committed", || {
        committed(&client, &topic, 1) == vec![1]
    });
    assert!(rt.block_on(inner.load_blob(&blob)).unwrap().is_some());
    stop.store(true, Ordering::SeqCst);
    processor.join().unwrap().unwrap();
    assert_eq!(committed(&client, &topic, 1), vec![5]);
    assert_eq!(
        records_per_host(&rt, &*inner),
        BTreeMap::from([("mx1".to_string(), 5)])
    );
}

#[test]
fn records_trickling_in_are_stored_in_few_batches() {
    let Setup {
        _kafka,
        brokers,
        rt,
        topic,
        group,
    } = setup(1);
    // When each batch with records began to be stored, and its size.
    let batches = Arc::new(Mutex::new(Vec::new()));
    let seen = {
        let batches = batches.clone();
        move |_: u32, batch: &Batch| {
            if !batch.records.is_empty() {
                let mut batches = batches.lock().unwrap();
                batches.push((Instant::now(), batch.records.len()));
            }
        }
    };
    let data = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqliteStore::open_dir(data.path()).unwrap());
    let store = FlakyStore::new(inner.clone(), 0, seen);
    let mut config = config(&brokers, &topic, &group);
    let interval = Duration::from_secs(6);
    config.batch_interval = interval;
    let (stop, processor) = spawn_processor(&rt, config, store);

    // The first record is stored at once.
    let producer = producer(&brokers);
    publish(&producer, &topic, 0, "mx1", &one_line_batch("mx1", 0));
    flush(&producer);
    wait_until("the first record is stored", || {
        records_per_host(&rt, &*inner).get("mx1") == Some(&1)
    });

    // The next ones come one by one, each well after the one before
    // (a batch is otherwise stored once no more records wait), and
    // gather into one batch, stored once the interval is over.
    for i in 1..20 {
        std::thread::sleep(Duration::from_millis(50));
        publish(&producer, &topic, 0, "mx1", &one_line_batch("mx1", i * 100));
        flush(&producer);
    }
    wait_until("every record is stored", || {
        records_per_host(&rt, &*inner).get("mx1") == Some(&20)
    });
    stop.store(true, Ordering::SeqCst);
    processor.join().unwrap().unwrap();

    let batches = batches.lock().unwrap().clone();
    let sizes: Vec<usize> = batches.iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes, vec![1, 19]);
    assert!(batches[1].0 - batches[0].0 >= interval);
}
