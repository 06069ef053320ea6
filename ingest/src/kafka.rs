//! Publishing records to Kafka: the sink of `exim-pilot tail`.
//!
//! A [`Publisher`] pulls batches from a [`Tailer`], packs their records into
//! [`RecordBatch`]es (consecutive records of one file, the raw topic's wire
//! format), produces each as one Kafka record keyed by the host name, and
//! acknowledges the tailer's batches once the broker has taken every Kafka
//! record holding their records. The stages of [`Publisher::run`]:
//!
//! 1. **pull**: take a batch from the tailer, unless the bytes in flight
//!    (packed, sent or waiting to be sent, not yet acknowledged) reach
//!    [`KafkaConfig::max_in_flight_bytes`]: then reading stops until the
//!    broker catches up, which bounds memory during a broker outage;
//! 2. **pack**: append each record to the open batch of its file; a batch
//!    that reaches [`KafkaConfig::max_batch_bytes`] or
//!    [`KafkaConfig::max_batch_records`] is closed;
//! 3. **send**: closed batches, and open ones older than
//!    [`KafkaConfig::linger`], are encoded and handed to the producer, in
//!    order;
//! 4. **settle**: delivery reports mark Kafka records delivered; the oldest
//!    records, as long as they are delivered, leave the queue, and a tailer
//!    batch whose records are all delivered is acknowledged, in the order
//!    the batches were pulled, so its checkpoint moves.
//!
//! # Keying and ordering
//!
//! The key of every Kafka record is the host name. Kafka keeps the order of
//! records within a partition only, and the key picks the partition, so all
//! records of one mail server reach one partition, in the order they were
//! read, and one processor sees every line of that server in order. That
//! matters: a message's lines are spread over minutes, some lines carry no
//! message id at all (SMTP connections, rejections, queue runs), and
//! correlation needs them all in order on the same processor. A key per
//! file or per message id would split a server's lines over processors. One
//! partition takes tens of megabytes per second; one Exim server's logs, a
//! few thousand lines per second at the busiest, are far below that, so the
//! key never limits throughput; servers spread over partitions by their
//! names.
//!
//! Batching is what makes the broker keep up: it handles some tens of
//! thousands of Kafka records per second, and a batch of a thousand lines
//! costs it about as much as one line.
//!
//! # Delivery guarantees
//!
//! The producer is idempotent (`enable.idempotence=true`, `acks=all`): the
//! broker drops the copies librdkafka's own retries would make, and keeps
//! the records of a partition in the order they were produced. Records do
//! not time out locally by default (`message.timeout.ms=0`): while the
//! broker is down the producer keeps retrying, the in-flight limit stops the
//! reading, and everything resumes when the broker is back.
//!
//! A Kafka record that fails for good (a missing topic, a record too large
//! for the broker, a local timeout set with `message.timeout.ms`, a fatal
//! producer error) is counted and logged, and the publisher *rewinds*: it
//! waits for every report still outstanding (unless the producer failed
//! for good), waits a back-off (doubling from one second to half a
//! minute), replaces the producer by a new one (a new producer id, so no
//! broker holds the failed records' sequence numbers against it) and sends
//! again, in the original order, every Kafka record from the oldest
//! undelivered one on, delivered ones after it included. Nothing is dropped and the last copy
//! of each record on the topic is in order; the copies sent twice carry the
//! same (host, `file_id`, offset) and the stores de-duplicate them.
//!
//! Together with the tailer's checkpoints this is at-least-once delivery: a
//! crash re-reads and re-publishes only records whose Kafka records had not
//! all been reported delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exim_pilot_schema::record::RawRecord;
use exim_pilot_schema::wire::{BatchRecord, RecordBatch};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};

use crate::ack::{Ack, Batch};
use crate::error::{IngestError, Result};
use crate::tailer::Tailer;

/// The topic raw records go to unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "exim-pilot-raw";

/// Where and how records are published.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Encoded size of one Kafka record, at most (about): a batch is
    /// closed before a record would take it past this.
    pub max_batch_bytes: usize,
    /// Records in one Kafka record, at most.
    pub max_batch_records: usize,
    /// How long a batch waits for more records of its file before it is
    /// sent.
    pub linger: Duration,
    /// Bytes packed or sent and not yet delivered, at most: reading stops
    /// at this point until deliveries catch up.
    pub max_in_flight_bytes: usize,
    /// Records pulled from the tailer at once, at most.
    pub pull_records: usize,
    /// How long a clean shutdown waits for outstanding deliveries.
    pub shutdown_timeout: Duration,
    /// Further librdkafka producer properties, applied last (they may
    /// override the ones set here, `message.timeout.ms` say).
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// The defaults for `brokers` and `topic`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            max_batch_bytes: 256 * 1024,
            max_batch_records: 1000,
            linger: Duration::from_millis(5),
            max_in_flight_bytes: 32 * 1024 * 1024,
            pull_records: 5000,
            shutdown_timeout: Duration::from_secs(10),
            properties: Vec::new(),
        }
    }

    /// The librdkafka configuration of the producer.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "exim-pilot-tail")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Never give up on a record locally: an outage stops the
            // reading (through the in-flight limit) rather than failing
            // records.
            .set("message.timeout.ms", "0")
            // Our batches are the unit; librdkafka's own batching only
            // gathers the few Kafka records sent together.
            .set("linger.ms", "5")
            // Uncompressed by default: with lz4 the publish benchmark
            // against the test broker ran at a quarter of the speed. Where
            // the network is the limit, set `compression.type` in the
            // properties.
            .set("compression.type", "none")
            .set(
                "message.max.bytes",
                (self.max_batch_bytes.max(1_000_000) + 64 * 1024).to_string(),
            );
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// The publisher's figures; shared, so another thread (the metrics
/// endpoint) can read them while it runs. Counters only grow.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Log records whose Kafka record was reported delivered.
    pub records_published: AtomicU64,
    /// Kafka records reported delivered.
    pub batches_published: AtomicU64,
    /// Encoded bytes reported delivered.
    pub bytes_published: AtomicU64,
    /// Kafka records the producer reported failed (each is sent again).
    pub publish_errors: AtomicU64,
    /// Errors the client reported outside any one record (a broker that
    /// cannot be reached, say).
    pub client_errors: AtomicU64,
    /// Rewinds: sending again from the oldest undelivered Kafka record.
    pub rewinds: AtomicU64,
    /// Bytes packed or sent and not yet delivered (a gauge).
    pub in_flight_bytes: AtomicU64,
    /// Kafka records sent or waiting to be sent and not yet delivered (a
    /// gauge).
    pub in_flight_batches: AtomicU64,
    /// When the oldest Kafka record still waiting for its delivery report
    /// was first sent, in milliseconds since the Unix epoch; 0 when none
    /// waits (a gauge).
    pub oldest_unsettled_ms: AtomicU64,
}

impl PublishStats {
    /// How long the oldest undelivered Kafka record has waited, if any.
    pub fn oldest_unsettled_age(&self) -> Option<Duration> {
        let since = self.oldest_unsettled_ms.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis(now_ms().saturating_sub(since)))
    }
}

/// Where a Kafka record stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Encoded, not yet accepted by the producer.
    Unsent,
    /// Accepted by the producer, no delivery report yet.
    Pending,
    /// Reported delivered.
    Delivered,
    /// Reported failed; sent again at the next rewind.
    Failed,
}

/// One Kafka record, from encoding until it is delivered and settled.
struct Outgoing {
    /// Number given at the last send; the delivery report carries it.
    seq: u64,
    payload: Vec<u8>,
    records: u64,
    /// The pulls (tailer batches) with records in it.
    pulls: Vec<u64>,
    state: State,
    first_sent_ms: u64,
}

/// A tailer batch whose records are not all delivered.
struct Pull {
    id: u64,
    ack: Ack,
    /// Kafka records, open or outgoing, holding some of its records and
    /// not yet settled.
    pieces: usize,
}

/// Records of one file being gathered into a batch.
struct OpenBatch {
    batch: RecordBatch,
    size: usize,
    opened: Instant,
    pulls: Vec<u64>,
}

/// Delivery reports, passed from librdkafka's callback to the loop.
struct Reports {
    queue: Mutex<Vec<(u64, std::result::Result<(), String>)>>,
    stats: Arc<PublishStats>,
    /// The client error just reported. rdkafka 0.38's producer hands each
    /// error event to [`ClientContext::error`] twice in a row (once while
    /// polling the queue, once more as the producer's event); the second
    /// call is recognised by its text and dropped.
    last_error: Mutex<Option<String>>,
    /// When each client error was last logged as a warning: while no
    /// broker answers, librdkafka reports the same few errors many times a
    /// second, each logged as a warning once per [`REPEAT_WARNING_AFTER`]
    /// (and at debug level in between).
    warned: Mutex<HashMap<String, Instant>>,
}

/// How long the same client error goes without a second warning.
const REPEAT_WARNING_AFTER: Duration = Duration::from_secs(30);

/// Logs a librdkafka message at its level. Errors go to debug: the error
/// callback reports the same failures, counted.
pub(crate) fn log_client_message(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::debug!(facility, message, "Kafka client error"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility, message, "Kafka client warning"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility, message, "Kafka client notice")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility, message, "Kafka client debug"),
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_client_message(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(text.as_str()) {
            *last = None;
            return;
        }
        *last = Some(text);
        drop(last);
        let warn = self.is_new_warning(&error.to_string());
        client_error(&self.stats, &error, reason, warn);
    }
}

impl Reports {
    /// True when `error` was not warned about in the last
    /// [`REPEAT_WARNING_AFTER`] (the reason, such as how many brokers are
    /// down, may change in between).
    fn is_new_warning(&self, error: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned
            .get(error)
            .is_some_and(|at| at.elapsed() < REPEAT_WARNING_AFTER)
        {
            return false;
        }
        // Errors are of a few kinds; forgetting them all now and then
        // keeps the map small whatever librdkafka says.
        if warned.len() >= 64 {
            warned.clear();
        }
        warned.insert(error.to_string(), Instant::now());
        true
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.to_string()),
        };
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push((seq as u64, outcome));
    }
}

/// Publishes a tailer's records to Kafka; see the module documentation.
pub struct Publisher {
    config: KafkaConfig,
    host: String,
    producer: BaseProducer<Reports>,
    stats: Arc<PublishStats>,

    open: Vec<OpenBatch>,
    outgoing: VecDeque<Outgoing>,
    pulls: VecDeque<Pull>,
    next_seq: u64,
    next_pull: u64,
    in_flight_bytes: usize,

    /// Set while a failure waits for its rewind: when to send again.
    rewind_at: Option<Instant>,
    /// The producer hit a fatal error and is replaced at the rewind.
    fatal: bool,
    backoff: Duration,
}

/// The first wait before sending again after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait before sending again after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Longest time the loop waits for the tailer or the broker at once, so
/// delivery reports and the stop flag are looked at often.
const TICK: Duration = Duration::from_millis(50);

impl Publisher {
    /// A publisher of `host`'s records with a new producer. Nothing is
    /// sent, nor any broker contacted, before [`Publisher::run`].
    pub fn new(config: KafkaConfig, host: &str) -> Result<Publisher> {
        let stats = Arc::new(PublishStats::default());
        let producer = create_producer(&config, &stats)?;
        Ok(Publisher {
            config,
            host: host.to_string(),
            producer,
            stats,
            open: Vec::new(),
            outgoing: VecDeque::new(),
            pulls: VecDeque::new(),
            next_seq: 0,
            next_pull: 0,
            in_flight_bytes: 0,
            rewind_at: None,
            fatal: false,
            backoff: FIRST_BACKOFF,
        })
    }

    /// Asks the broker whether the topic exists, waiting up to `timeout`
    /// for an answer; `None` when the broker cannot be asked now. Records
    /// for a missing topic wait in flight until it is created (some
    /// brokers, tansu among them, do not create topics on their own).
    pub fn topic_exists(&self, timeout: Duration) -> Option<bool> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.config.topic), timeout)
            .ok()?;
        Some(metadata.topics().iter().any(|t| {
            t.name() == self.config.topic && t.error().is_none() && !t.partitions().is_empty()
        }))
    }

    /// The figures, for another thread to read.
    pub fn stats(&self) -> Arc<PublishStats> {
        self.stats.clone()
    }

    /// Publishes until `stop` is set, then sends what it holds, waits up to
    /// [`KafkaConfig::shutdown_timeout`] for the deliveries, acknowledges
    /// them and returns. `tick` is called about once a second with the
    /// tailer, for figures. The tailer's final checkpoints are the
    /// caller's (`Tailer::close`).
    pub fn run(
        &mut self,
        tailer: &mut Tailer,
        stop: &AtomicBool,
        mut tick: impl FnMut(&Tailer, &PublishStats),
    ) -> Result<()> {
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.step(tailer)?;
            if last_tick.elapsed() >= Duration::from_secs(1) {
                tick(tailer, &self.stats);
                last_tick = Instant::now();
            }
        }
        let result = self.drain(tailer);
        tick(tailer, &self.stats);
        result
    }

    /// One round of the loop: settle what was reported, pull, pack, send.
    pub fn step(&mut self, tailer: &mut Tailer) -> Result<()> {
        self.settle(tailer, Duration::ZERO)?;
        self.rewind_if_due();

        // Pull, unless the in-flight limit is reached; then wait for the
        // broker instead.
        if self.in_flight_bytes < self.config.max_in_flight_bytes {
            let wait = self.linger_wait();
            if let Some(batch) = tailer.next_batch(self.config.pull_records, wait)? {
                self.pack(batch);
            }
        } else {
            self.settle(tailer, TICK)?;
        }

        self.close_lingering(Instant::now());
        self.send();
        self.publish_gauges();
        Ok(())
    }

    /// Sends everything held and waits for the deliveries, at most
    /// [`KafkaConfig::shutdown_timeout`].
    pub fn drain(&mut self, tailer: &mut Tailer) -> Result<()> {
        let deadline = Instant::now() + self.config.shutdown_timeout;
        self.close_lingering(Instant::now() + self.config.linger + Duration::from_secs(3600));
        while !self.outgoing.is_empty() && Instant::now() < deadline {
            self.rewind_if_due();
            self.send();
            self.settle(tailer, TICK)?;
        }
        self.publish_gauges();
        if !self.outgoing.is_empty() {
            tracing::warn!(
                batches = self.outgoing.len(),
                "Stopping with Kafka records not reported delivered; their records are \
                 published again at the next start"
            );
        }
        tailer.write_checkpoints()
    }

    // ---- pack ----------------------------------------------------------

    /// Spreads a tailer batch over the open batches of its files.
    fn pack(&mut self, batch: Batch) {
        let pull = self.next_pull;
        self.next_pull += 1;
        let inodes: Vec<(u64, u64)> =
            batch
                .records
                .iter()
                .map(|r| r.origin.file_id)
                .fold(Vec::new(), |mut ids, id| {
                    if !ids.iter().any(|&(known, _)| known == id) {
                        ids.push((id, batch.inode_of(id).unwrap_or(0)));
                    }
                    ids
                });
        let (records, ack) = batch.into_parts();
        self.pulls.push_back(Pull {
            id: pull,
            ack,
            pieces: 0,
        });
        for record in records {
            let inode = inodes
                .iter()
                .find(|&&(id, _)| id == record.origin.file_id)
                .map_or(0, |&(_, inode)| inode);
            self.pack_record(record, inode, pull);
        }
    }

    fn pack_record(&mut self, record: RawRecord, inode: u64, pull: u64) {
        let log = record.origin.log;
        let file_id = record.origin.file_id;
        let size = record_size(&record);

        // A full batch of this file is closed first, so records of one file
        // always leave in file order.
        let found = self
            .open
            .iter()
            .position(|o| o.batch.log == log && o.batch.file_id == file_id);
        if let Some(index) = found {
            let open = &self.open[index];
            if open.batch.records.len() >= self.config.max_batch_records
                || open.size + size > self.config.max_batch_bytes
            {
                self.close(index);
            }
        }
        let index = match self
            .open
            .iter()
            .position(|o| o.batch.log == log && o.batch.file_id == file_id)
        {
            Some(index) => index,
            None => {
                let batch = RecordBatch::new(&self.host, log, file_id, inode);
                let size = batch.encoded_len();
                self.in_flight_bytes += size;
                self.open.push(OpenBatch {
                    batch,
                    size,
                    opened: Instant::now(),
                    pulls: Vec::new(),
                });
                self.open.len() - 1
            }
        };

        let open = &mut self.open[index];
        if open.pulls.last() != Some(&pull) {
            open.pulls.push(pull);
            if let Some(p) = self.pulls.iter_mut().rev().find(|p| p.id == pull) {
                p.pieces += 1;
            }
        }
        open.size += size;
        self.in_flight_bytes += size;
        open.batch.records.push(BatchRecord {
            offset: record.origin.offset,
            read_at_ms: record.read_at_ms,
            bytes: record.bytes,
        });
    }

    /// Closes the open batches that waited [`KafkaConfig::linger`] by
    /// `now`.
    fn close_lingering(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.open.len() {
            if now.saturating_duration_since(self.open[index].opened) >= self.config.linger {
                self.close(index);
            } else {
                index += 1;
            }
        }
    }

    /// Encodes the open batch at `index` and queues it to be sent.
    fn close(&mut self, index: usize) {
        let open = self.open.remove(index);
        let payload = open.batch.encode();
        self.in_flight_bytes = self.in_flight_bytes - open.size + payload.len();
        self.outgoing.push_back(Outgoing {
            seq: 0,
            payload,
            records: open.batch.records.len() as u64,
            pulls: open.pulls,
            state: State::Unsent,
            first_sent_ms: 0,
        });
    }

    /// How long the tailer may wait for records: until the oldest open
    /// batch is due, at most a tick.
    fn linger_wait(&self) -> Duration {
        let now = Instant::now();
        self.open
            .iter()
            .map(|o| (o.opened + self.config.linger).saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
            .min(TICK)
    }

    // ---- send ----------------------------------------------------------

    /// Hands the unsent Kafka records to the producer, in order, unless a
    /// rewind is pending.
    fn send(&mut self) {
        if self.rewind_at.is_some() {
            return;
        }
        for out in self.outgoing.iter_mut() {
            if out.state != State::Unsent {
                continue;
            }
            let seq = self.next_seq;
            let record = BaseRecord::with_opaque_to(&self.config.topic, seq as usize)
                .key(self.host.as_str())
                .payload(out.payload.as_slice());
            match self.producer.send(record) {
                Ok(()) => {
                    self.next_seq += 1;
                    out.seq = seq;
                    out.state = State::Pending;
                    if out.first_sent_ms == 0 {
                        out.first_sent_ms = now_ms();
                    }
                }
                // The producer's queue is full: the rest waits, in order.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((error, _)) => {
                    publish_failed(&self.stats, &error.to_string());
                    self.schedule_rewind();
                    break;
                }
            }
        }
    }

    // ---- settle --------------------------------------------------------

    /// Serves the producer's callbacks (waiting up to `wait` for one),
    /// applies the delivery reports, and acknowledges the tailer batches
    /// that are wholly delivered.
    fn settle(&mut self, tailer: &mut Tailer, wait: Duration) -> Result<()> {
        self.producer.poll(wait);
        let reports = {
            let mut queue = self
                .producer
                .context()
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *queue)
        };
        for (seq, outcome) in reports {
            let Some(out) = self.find_pending(seq) else {
                // A report of a send that a rewind has replaced.
                continue;
            };
            match outcome {
                Ok(()) => out.state = State::Delivered,
                Err(error) => {
                    out.state = State::Failed;
                    publish_failed(&self.stats, &error);
                    self.schedule_rewind();
                }
            }
        }
        if !self.fatal {
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                self.fatal = true;
                fatal_error(&self.stats, &format!("{code:?}: {reason}"));
                self.producer
                    .purge(PurgeConfig::default().queue().inflight());
                self.schedule_rewind();
            }
        }

        // The oldest Kafka records leave once delivered; a pull whose
        // pieces are all gone is acknowledged.
        let mut settled_any = false;
        while self
            .outgoing
            .front()
            .is_some_and(|o| o.state == State::Delivered)
        {
            let Some(done) = self.outgoing.pop_front() else {
                break;
            };
            settled_any = true;
            self.in_flight_bytes -= done.payload.len();
            self.stats
                .records_published
                .fetch_add(done.records, Ordering::Relaxed);
            self.stats.batches_published.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes_published
                .fetch_add(done.payload.len() as u64, Ordering::Relaxed);
            for pull in done.pulls {
                if let Some(p) = self.pulls.iter_mut().find(|p| p.id == pull) {
                    p.pieces -= 1;
                }
            }
        }
        if settled_any && self.rewind_at.is_none() {
            self.backoff = FIRST_BACKOFF;
        }
        while self.pulls.front().is_some_and(|p| p.pieces == 0) {
            if let Some(done) = self.pulls.pop_front() {
                // A checkpoint that cannot be written is logged and counted
                // by the tailer and tried again at the next acknowledgement;
                // until then a restart publishes more records twice, which
                // is no reason to stop publishing.
                let _ = tailer.ack(&done.ack);
            }
        }
        Ok(())
    }

    fn find_pending(&mut self, seq: u64) -> Option<&mut Outgoing> {
        let index = self
            .outgoing
            .iter()
            .position(|o| o.state == State::Pending && o.seq == seq)?;
        self.outgoing.get_mut(index)
    }

    fn has_pending(&self) -> bool {
        self.outgoing.iter().any(|o| o.state == State::Pending)
    }

    // ---- rewind --------------------------------------------------------

    fn schedule_rewind(&mut self) {
        if self.rewind_at.is_none() {
            self.rewind_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Once a failure's back-off has passed and no report is outstanding,
    /// marks every Kafka record from the oldest undelivered one on to be
    /// sent again by a new producer.
    fn rewind_if_due(&mut self) {
        let Some(at) = self.rewind_at else {
            return;
        };
        // Reports still to come may say delivered; a producer that failed
        // for good is dropped with whatever it still holds.
        if Instant::now() < at || (self.has_pending() && !self.fatal) {
            return;
        }
        // A new producer gets a new producer id, so the broker starts its
        // sequence numbers afresh: after records failed, the old
        // producer's sequence may have a gap that some brokers refuse for
        // good (records timed out locally, say).
        match create_producer(&self.config, &self.stats) {
            Ok(producer) => {
                self.producer = producer;
                self.fatal = false;
            }
            Err(error) => {
                tracing::error!(error = %error, "Cannot recreate the Kafka producer");
                self.rewind_at = Some(Instant::now() + self.backoff);
                return;
            }
        }
        let mut resend = 0;
        for out in self.outgoing.iter_mut() {
            if out.state == State::Delivered && resend == 0 {
                // Delivered before the first undelivered record: it
                // settles at the next report.
                continue;
            }
            out.state = State::Unsent;
            resend += 1;
        }
        self.stats.rewinds.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            batches = resend,
            "Sending Kafka records again from the oldest undelivered one"
        );
        self.rewind_at = None;
    }

    fn publish_gauges(&self) {
        self.stats
            .in_flight_bytes
            .store(self.in_flight_bytes as u64, Ordering::Relaxed);
        self.stats
            .in_flight_batches
            .store(self.outgoing.len() as u64, Ordering::Relaxed);
        let oldest = self
            .outgoing
            .iter()
            .find(|o| o.state != State::Delivered && o.first_sent_ms != 0)
            .map_or(0, |o| o.first_sent_ms);
        self.stats
            .oldest_unsettled_ms
            .store(oldest, Ordering::Relaxed);
    }
}

/// The producer, configured for `config`.
fn create_producer(
    config: &KafkaConfig,
    stats: &Arc<PublishStats>,
) -> Result<BaseProducer<Reports>> {
    let reports = Reports {
        queue: Mutex::new(Vec::new()),
        stats: stats.clone(),
        last_error: Mutex::new(None),
        warned: Mutex::new(HashMap::new()),
    };
    config
        .client_config()
        .create_with_context(reports)
        .map_err(|e| IngestError::Kafka(e.to_string()))
}

/// What a record adds to an encoded batch, at most.
fn record_size(record: &RawRecord) -> usize {
    3 * 10 + record.bytes.len()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---- events: each writes its log line and bumps its counter ----------------

fn publish_failed(stats: &PublishStats, error: &str) {
    stats.publish_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(error, "Kafka record not delivered; it is sent again");
}

/// Counts a client error; logs it as a warning when `warn`, else at debug
/// level (a repeat of the last warning).
fn client_error(stats: &PublishStats, error: &KafkaError, reason: &str, warn: bool) {
    stats.client_errors.fetch_add(1, Ordering::Relaxed);
    if warn {
        tracing::warn!(error = %error, reason, "Kafka client error");
    } else {
        tracing::debug!(error = %error, reason, "Kafka client error");
    }
}

fn fatal_error(stats: &PublishStats, reason: &str) {
    stats.client_errors.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        reason,
        "Kafka producer failed for good; it is recreated and the undelivered records sent again"
    );
}

#[cfg(test)]
mod tests {
    use exim_pilot_schema::record::{LogFile, RecordOrigin};

    use super::*;

    fn record(log: LogFile, file_id: u64, offset: u64, text: &str) -> RawRecord {
        RawRecord {
            origin: RecordOrigin {
                host: "mx1".into(),
                log,
                file_id,
                offset,
            },
            read_at_ms: 1,
            bytes: text.as_bytes().to_vec(),
        }
    }

    /// A publisher whose producer is never asked to send: its broker
    /// address is a closed loopback port.
    fn publisher(max_batch_records: usize) -> Publisher {
        let mut config = KafkaConfig::new("127.0.0.1:9", "unused");
        config.max_batch_records = max_batch_records;
        Publisher::new(config, "mx1").unwrap()
    }

    fn decoded(publisher: &Publisher) -> Vec<RecordBatch> {
        publisher
            .outgoing
            .iter()
            .map(|o| RecordBatch::decode(&o.payload).unwrap())
            .collect()
    }

    #[test]
    fn records_are_packed_per_file_in_file_order() {
        let mut publisher = publisher(3);
        let batch = Batch::new(
            vec![
                record(LogFile::Main, 7, 0, "m0"),
                record(LogFile::Reject, 9, 0, "r0"),
                record(LogFile::Main, 7, 3, "m1"),
                record(LogFile::Main, 7, 6, "m2"),
                record(LogFile::Main, 7, 9, "m3"),
            ],
            Ack { parts: Vec::new() },
        )
        .with_inodes(vec![(7, 70), (9, 90)]);
        publisher.pack(batch);

        // The full mainlog batch closed at three records; the rest waits
        // for the linger.
        let closed = decoded(&publisher);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].inode, 70);
        let offsets: Vec<u64> = closed[0].records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 3, 6]);

        publisher.close_lingering(Instant::now() + Duration::from_secs(1));
        let all = decoded(&publisher);
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|b| b.host == "mx1"));
        let rest: Vec<(LogFile, u64)> = all[1..]
            .iter()
            .map(|b| (b.log, b.records[0].offset))
            .collect();
        assert!(rest.contains(&(LogFile::Main, 9)) && rest.contains(&(LogFile::Reject, 0)));

        // One pull, spread over three Kafka records, all still in flight.
        assert_eq!(publisher.pulls.len(), 1);
        assert_eq!(publisher.pulls[0].pieces, 3);
        let payload: usize = publisher.outgoing.iter().map(|o| o.payload.len()).sum();
        assert_eq!(publisher.in_flight_bytes, payload);
    }

    #[test]
    fn a_client_error_repeated_is_counted_each_time_and_warned_once() {
        let stats = Arc::new(PublishStats::default());
        let reports = Reports {
            queue: Mutex::new(Vec::new()),
            stats: stats.clone(),
            last_error: Mutex::new(None),
            warned: Mutex::new(HashMap::new()),
        };
        let down = || KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        for n in 0..5 {
            // The same event reported twice in a row counts once.
            reports.error(down(), &format!("{} brokers are down", n % 2));
            reports.error(down(), &format!("{} brokers are down", n % 2));
        }
        assert_eq!(stats.client_errors.load(Ordering::Relaxed), 5);
        // Warned about with the first report, so not again for a while.
        assert!(!reports.is_new_warning(&down().to_string()));
        // Another error is warned about, and the first one still not again.
        let other = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(reports.is_new_warning(&other.to_string()));
        assert!(!reports.is_new_warning(&down().to_string()));
    }
}
