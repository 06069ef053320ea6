//! The processor's loop; see the [module documentation](super) for what a
//! round does and why it is safe to stop anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exim_pilot_schema::RawRecord;
use exim_pilot_store::{Batch, Blob, Store, StoreError, StoredRecord};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::context::{Assignment, FleetContext};
use super::decode::{decode, Decoded, Polled};
use super::pending::{Part, Pending};
use super::saves::{Saved, StateCopy, StateSaves};
use super::{state_blob_name, FleetConfig, FleetMetrics};
use crate::pipeline::{Pipeline, PipelineError, STATE_BLOB};

/// The longest a single poll blocks, so that a stop request is noticed.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Once a round holds records, how long a poll waits for more: records
/// polled meanwhile go into the round; when none came, the round is
/// stored without waiting out [`FleetConfig::batch_wait`]. Records that
/// arrive while a round is stored wait in the consumer's queue and make
/// the next round, so rounds grow with the load.
const GATHER: Duration = Duration::from_millis(5);

/// How long a processor that stops waits for a partition state being
/// saved.
const SAVE_PATIENCE: Duration = Duration::from_secs(60);

/// How long metadata and offset requests to the brokers may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a fetch waits at the broker for records
/// (`fetch.wait.max.ms`; librdkafka's own default is 500). A broker that
/// answers a waiting fetch only once its wait is over, not when records
/// arrive (as tansu appeared to in `benches/fleet-e2e.sh`: 500 ms gave a
/// freshness p50 of 483 ms, 50 ms one of 260 ms), holds every record up
/// to that long before the processor sees it; an idle processor asks this
/// often instead.
const FETCH_WAIT_MS: &str = "50";

/// Why a processor stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The Kafka client could not be created or subscribed.
    #[error("cannot consume topic {topic:?} from {brokers}: {source}; check --kafka and --topic")]
    Consumer {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The cause.
        source: Box<KafkaError>,
    },
    /// A partition's saved pipeline state cannot be used.
    #[error("the saved state of partition {partition} cannot be used: {source}")]
    State {
        /// The partition.
        partition: i32,
        /// The cause.
        source: PipelineError,
    },
    /// The group's offsets could not be reset.
    #[error(
        "cannot reset the offsets of group {group:?} on topic {topic:?}: {source}; stop every \
         processor of the group first"
    )]
    Reset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The cause.
        source: Box<KafkaError>,
    },
    /// The store refused a write outside the retried loop.
    #[error("cannot write to the store: {0}")]
    Store(#[from] StoreError),
}

/// A member of the processor group; see the module documentation.
pub struct Processor {
    consumer: BaseConsumer<FleetContext>,
    store: Arc<dyn Store>,
    runtime: Handle,
    config: FleetConfig,
    metrics: FleetMetrics,
    /// Assigned partitions, with their pipeline once restored.
    partitions: BTreeMap<i32, Option<Pipeline>>,
    /// Partitions revoked since the current round took its records.
    revoked: BTreeSet<i32>,
    /// Partitions read to their end since their last record.
    at_end: BTreeSet<i32>,
    /// Kafka records polled and not processed yet, in poll order.
    inbox: Vec<Inbound>,
    /// The round's batch until the store takes it.
    pending: Pending,
    /// Partitions of the topic, once asked.
    topic_partitions: Option<usize>,
    /// When each partition's state was last stored.
    state_saved: BTreeMap<i32, Instant>,
    /// Partitions stored past their last saved state: the offset just
    /// past what was stored.
    unsaved: BTreeMap<i32, i64>,
    /// The partition states being saved beside the loop.
    saves: StateSaves,
    /// Rebalances seen so far: a save that saw one meets partitions that
    /// may have moved, and commits no offset.
    rebalances: u64,
    /// When the last round began to be stored.
    last_store: Option<Instant>,
}

/// What one poll brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollOutcome {
    /// Nothing within the timeout.
    Nothing,
    /// A Kafka record, filed in the inbox.
    Record,
    /// A partition was read to its end.
    End,
    /// The consumer reported an error.
    Error,
}

/// One decoded Kafka record.
struct Inbound {
    partition: i32,
    offset: i64,
    decoded: Decoded,
}

/// What one partition contributes to a round.
#[derive(Default)]
struct Share {
    records: Vec<RawRecord>,
    undecodable: Vec<StoredRecord>,
    last_offset: i64,
}

impl Processor {
    /// Creates the consumer and joins the group. `runtime` runs the
    /// store's futures; [`Processor::run`] must not be called from inside
    /// it.
    pub fn new(
        config: FleetConfig,
        store: Arc<dyn Store>,
        runtime: Handle,
        metrics: FleetMetrics,
    ) -> Result<Processor, FleetError> {
        let saves = StateSaves::default();
        let context = FleetContext::new(&config.topic, metrics.clone(), saves.clone());
        let consumer: BaseConsumer<FleetContext> = client_config(&config)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("statistics.interval.ms", "5000")
            .create_with_context(context)
            .map_err(|source| consumer_error(&config, source))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|source| consumer_error(&config, source))?;
        tracing::info!(
            brokers = %config.brokers,
            topic = %config.topic,
            group = %config.group,
            "Joined the processor group"
        );
        Ok(Processor {
            consumer,
            store,
            runtime,
            config,
            metrics,
            partitions: BTreeMap::new(),
            revoked: BTreeSet::new(),
            at_end: BTreeSet::new(),
            inbox: Vec::new(),
            pending: Pending::default(),
            topic_partitions: None,
            state_saved: BTreeMap::new(),
            unsaved: BTreeMap::new(),
            saves,
            rebalances: 0,
            last_store: None,
        })
    }

    /// The processor's metrics.
    pub fn metrics(&self) -> &FleetMetrics {
        &self.metrics
    }

    /// Runs rounds until `stop` is set (what was polled by then is still
    /// stored, unless the store is failing) or, with
    /// [`FleetConfig::stop_when_caught_up`], until the topic is read.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), FleetError> {
        let result = self.rounds(stop);
        // A save in flight still lands; its offsets are left for the next
        // owner, which reads on from the last committed ones.
        self.saves.wait(SAVE_PATIENCE);
        result
    }

    fn rounds(&mut self, stop: &AtomicBool) -> Result<(), FleetError> {
        loop {
            self.saves_finished();
            let stopping = stop.load(Ordering::Relaxed);
            if !stopping {
                self.fill_inbox(stop);
            }

            // Before stopping, every partition's state is saved so the
            // next owner starts where this one ended: after the save in
            // flight, so that the final state lands last.
            let finishing = stopping || (self.config.stop_when_caught_up && self.all_at_end());
            if finishing && self.saves.busy() {
                self.saves.wait(SAVE_PATIENCE);
                self.saves_finished();
            }
            if !self.inbox.is_empty() || (finishing && !self.unsaved.is_empty()) {
                self.process_inbox(stop, finishing)?;
                if self.store_pending(stop) {
                    let copies = self.pending.take_states();
                    self.commit_offsets();
                    self.saves
                        .start(&self.runtime, &self.store, copies, self.rebalances);
                }
            }

            if stopping || (self.config.stop_when_caught_up && self.caught_up()) {
                return Ok(());
            }
        }
    }

    /// Commits the offsets of a save that finished, unless a rebalance
    /// came in between.
    fn saves_finished(&mut self) {
        match self.saves.take_finished() {
            None => {}
            Some(Ok(saved)) => self.state_stored(saved),
            Some(Err(e)) => {
                // The partitions stay due: the next round takes another
                // copy.
                self.metrics
                    .store_failed("save partition state", &e, 1, Duration::ZERO);
            }
        }
    }

    fn state_stored(&mut self, saved: Saved) {
        tracing::debug!(
            partitions = saved.offsets.len(),
            bytes = saved.bytes,
            encode_ms = saved.encode.as_millis() as u64,
            store_ms = saved.store.as_millis() as u64,
            "Partition states saved"
        );
        if saved.rebalances != self.rebalances {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, next) in saved.offsets {
            if !self.partitions.contains_key(&partition) {
                continue;
            }
            self.state_saved.insert(partition, saved.started);
            if self.unsaved.get(&partition) == Some(&next) {
                self.unsaved.remove(&partition);
            }
            self.add_offset(&mut list, partition, next);
        }
        self.commit_list(&list);
    }

    /// Polls until the batch is full, or, once [`Processor::hold`] is
    /// over, its time is up, every partition is read to its end, or, once
    /// it holds records, nothing more comes within [`GATHER`].
    fn fill_inbox(&mut self, stop: &AtomicBool) {
        let deadline = Instant::now() + self.config.batch_wait;
        let mut records = 0;
        while records < self.config.batch_records && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let hold = self.hold(now);
            if left.is_zero() && hold.is_zero() {
                break;
            }
            let slice = if self.inbox.is_empty() || !hold.is_zero() {
                POLL_SLICE
            } else {
                GATHER
            };
            let outcome = self.poll_once(left.max(hold).min(slice), &mut records);
            if self.inbox.is_empty() || !hold.is_zero() {
                continue;
            }
            match outcome {
                PollOutcome::End if self.all_at_end() => break,
                PollOutcome::Nothing => break,
                _ => {}
            }
        }
    }

    /// How much longer a round that holds records keeps gathering before
    /// it may be stored: until [`FleetConfig::batch_interval`] has passed
    /// since the last round was stored.
    fn hold(&self, now: Instant) -> Duration {
        match self.last_store {
            Some(at) if !self.inbox.is_empty() => {
                (at + self.config.batch_interval).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Polls once and files what came.
    fn poll_once(&mut self, timeout: Duration, records: &mut usize) -> PollOutcome {
        let polled = match self.consumer.poll(timeout) {
            None => None,
            Some(Ok(m)) => Some(Ok(Polled {
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis(),
                payload: m.payload().unwrap_or_default().to_vec(),
            })),
            Some(Err(e)) => Some(Err(e)),
        };

        // Rebalance callbacks ran inside that poll: act on them before
        // filing the record, which belongs to the new assignment.
        self.rebalanced();

        match polled {
            None => PollOutcome::Nothing,
            Some(Ok(p)) => {
                *records += self.accept(p);
                PollOutcome::Record
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                self.at_end.insert(partition);
                PollOutcome::End
            }
            Some(Err(e)) => {
                self.metrics.consumer_error(&e);
                PollOutcome::Error
            }
        }
    }

    /// Decodes a Kafka record into the inbox; returns its log records.
    fn accept(&mut self, polled: Polled) -> usize {
        self.metrics.consumed(1);
        self.at_end.remove(&polled.partition);
        let (partition, offset) = (polled.partition, polled.offset);
        let decoded = decode(&self.config.topic, polled);
        let records = match &decoded {
            Decoded::Records(r) => r.len(),
            Decoded::Undecodable(_, e) => {
                self.metrics.undecodable(partition, offset, e);
                1
            }
        };
        self.inbox.push(Inbound {
            partition,
            offset,
            decoded,
        });
        records
    }

    /// Applies the assignment changes noted during the last poll.
    fn rebalanced(&mut self) {
        let changes = self.consumer.context().take_changes();
        if changes.is_empty() {
            return;
        }
        self.rebalances += 1;
        for change in changes {
            match change {
                Assignment::Assigned(partitions) => {
                    tracing::info!(?partitions, "Partitions assigned");
                    self.resume(&partitions);
                    for p in partitions {
                        self.partitions.entry(p).or_insert(None);
                    }
                }
                Assignment::Revoked(partitions) => {
                    tracing::info!(?partitions, "Partitions revoked");
                    for p in partitions {
                        self.forget(p);
                    }
                }
                Assignment::Lost => {
                    let all: Vec<i32> = self.partitions.keys().copied().collect();
                    for p in all {
                        self.forget(p);
                    }
                }
            }
        }
        self.metrics.assigned(self.partitions.len());
    }

    /// Drops everything this processor holds of a partition: its next
    /// owner starts from what was stored and committed.
    fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.state_saved.remove(&partition);
        self.unsaved.remove(&partition);
        self.at_end.remove(&partition);
        self.inbox.retain(|i| i.partition != partition);
        self.pending.remove(partition);
        self.revoked.insert(partition);
    }

    /// Runs the inbox through the partitions' pipelines into the pending
    /// batch. When `finishing`, a partition's state goes with its share
    /// (also for partitions without new records whose state is behind).
    /// Otherwise, once [`FleetConfig::state_interval`] has passed since it
    /// was last saved and no save is in flight, a copy of it goes with the
    /// share, to be saved beside the loop once the share is stored.
    fn process_inbox(&mut self, stop: &AtomicBool, finishing: bool) -> Result<(), FleetError> {
        self.revoked.clear();
        let saving = self.saves.busy();
        let mut shares: BTreeMap<i32, Share> = BTreeMap::new();
        if finishing {
            for (&partition, &next_offset) in &self.unsaved {
                shares.entry(partition).or_default().last_offset = next_offset - 1;
            }
        }
        for inbound in std::mem::take(&mut self.inbox) {
            let share = shares.entry(inbound.partition).or_default();
            share.last_offset = inbound.offset;
            match inbound.decoded {
                Decoded::Records(records) => share.records.extend(records),
                Decoded::Undecodable(record, _) => share.undecodable.push(record),
            }
        }

        for (partition, share) in shares {
            if !self.ensure_pipeline(partition, stop)? {
                // Stopping, or the partition went elsewhere meanwhile.
                continue;
            }
            let Some(Some(pipeline)) = self.partitions.get_mut(&partition) else {
                continue;
            };

            let due = !finishing
                && !saving
                && self
                    .state_saved
                    .get(&partition)
                    .is_none_or(|at| at.elapsed() >= self.config.state_interval);
            let before = pipeline.counts();
            let records = share.records.len() + share.undecodable.len();
            let mut batch = pipeline.process(share.records, finishing);
            let state = due.then(|| {
                let started = Instant::now();
                let state = pipeline.state();
                tracing::debug!(
                    partition,
                    messages = state.correlator.messages(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "Partition state copied for saving"
                );
                StateCopy {
                    partition,
                    next_offset: share.last_offset + 1,
                    blob: state_blob_name(&self.config.topic, partition),
                    state,
                }
            });
            self.metrics.processed(before, pipeline.counts());
            for blob in &mut batch.blobs {
                if blob.name == STATE_BLOB {
                    blob.name = state_blob_name(&self.config.topic, partition);
                }
            }
            batch.records.extend(share.undecodable);
            self.pending.insert(
                partition,
                Part {
                    batch,
                    next_offset: share.last_offset + 1,
                    records,
                    with_state: finishing,
                    state,
                },
            );
        }
        self.metrics.pending(self.pending.records());
        Ok(())
    }

    /// Restores a partition's pipeline from the store when it has none
    /// yet. False when the partition is no longer ours or we are stopping.
    fn ensure_pipeline(&mut self, partition: i32, stop: &AtomicBool) -> Result<bool, FleetError> {
        let name = state_blob_name(&self.config.topic, partition);
        let mut failures = 0;
        loop {
            if self.revoked.contains(&partition) {
                return Ok(false);
            }
            match self.partitions.get(&partition) {
                None => return Ok(false),
                Some(Some(_)) => return Ok(true),
                Some(None) => {}
            }
            match self.runtime.block_on(self.store.load_blob(&name)) {
                Ok(saved) => {
                    let pipeline = self.pipeline_from(partition, saved)?;
                    self.partitions.insert(partition, Some(pipeline));
                    return Ok(true);
                }
                Err(e) => {
                    failures += 1;
                    let wait = self.config.retry.delay(failures);
                    self.metrics
                        .store_failed("load partition state", &e, failures, wait);
                    if !self.wait_serving_group(wait, stop) {
                        return Ok(false);
                    }
                    self.metrics.store_retry();
                }
            }
        }
    }

    /// A pipeline continuing from a saved state, or a fresh one when there
    /// is none (or it was cleared for a replay).
    fn pipeline_from(
        &self,
        partition: i32,
        saved: Option<Vec<u8>>,
    ) -> Result<Pipeline, FleetError> {
        let pipeline = match saved.filter(|s| !s.is_empty()) {
            Some(saved) => Pipeline::restore(self.config.zone, &saved)
                .map_err(|source| FleetError::State { partition, source })?,
            None => Pipeline::new(self.config.zone, self.config.correlator),
        };
        tracing::info!(partition, "Partition state restored");
        Ok(pipeline.with_parse_options(self.config.parse))
    }

    /// Commits the pending batch, retrying with back-off. True once the
    /// store took it; false when nothing was left to store (its partitions
    /// were revoked) or the processor is stopping.
    fn store_pending(&mut self, stop: &AtomicBool) -> bool {
        let mut failures = 0;
        self.last_store = Some(Instant::now());
        loop {
            if self.pending.is_empty() {
                self.metrics.pending(0);
                return false;
            }
            let records = self.pending.records();
            self.metrics.pending(records);

            let started = Instant::now();
            match self
                .runtime
                .block_on(self.store.commit_batch(self.pending.to_batch()))
            {
                Ok(summary) => {
                    self.metrics
                        .batch_committed(&summary, records, started.elapsed());
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    let wait = self.config.retry.delay(failures);
                    self.metrics
                        .store_failed("commit batch", &e, failures, wait);
                    if !self.wait_serving_group(wait, stop) {
                        self.pending.clear();
                        self.metrics.pending(0);
                        return false;
                    }
                    self.metrics.store_retry();
                }
            }
        }
    }

    /// Waits with the assigned partitions paused, polling so that the
    /// group keeps this member and its rebalances are seen. False when the
    /// processor is to stop.
    fn wait_serving_group(&mut self, wait: Duration, stop: &AtomicBool) -> bool {
        self.set_paused(true);
        let deadline = Instant::now() + wait;
        let mut records = 0;
        let go_on = loop {
            if stop.load(Ordering::Relaxed) {
                break false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break true;
            }
            // Partitions assigned meanwhile are not paused: their records
            // wait in the inbox for the next round.
            self.poll_once(left.min(POLL_SLICE), &mut records);
        };
        self.set_paused(false);
        go_on
    }

    /// Resumes partitions just assigned.
    ///
    /// librdkafka keeps a partition's pause across rebalances: a partition
    /// paused while the store was failing, revoked before the wait ended
    /// (so not resumed with the rest) and assigned back later would
    /// otherwise stay paused for good, its records never fetched. A
    /// partition assigned during a wait is not paused either way (see
    /// [`Processor::wait_serving_group`]).
    fn resume(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition(&self.config.topic, p);
        }
        if let Err(e) = self.consumer.resume(&list) {
            self.metrics.consumer_error(&e);
        }
    }

    fn set_paused(&self, paused: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            self.metrics.consumer_error(&e);
        }
    }

    /// Adds the offset `next` of `partition` to `list`.
    fn add_offset(&self, list: &mut TopicPartitionList, partition: i32, next: i64) {
        let offset = Offset::Offset(next);
        if let Err(e) = list.add_partition_offset(&self.config.topic, partition, offset) {
            self.metrics.offset_commit_failed(&e);
        }
    }

    /// Commits the offsets of `list`, when it has any.
    fn commit_list(&self, list: &TopicPartitionList) {
        if list.count() > 0 {
            if let Err(e) = self.consumer.commit(list, CommitMode::Sync) {
                self.metrics.offset_commit_failed(&e);
            }
        }
    }

    /// Commits the offsets just past the stored records of the partitions
    /// whose state was stored with them; the others are noted as behind.
    fn commit_offsets(&mut self) {
        let mut list = TopicPartitionList::new();
        let now = Instant::now();
        for (partition, next, with_state) in self.pending.offsets() {
            if !with_state {
                self.unsaved.insert(partition, next);
                continue;
            }
            self.state_saved.insert(partition, now);
            self.unsaved.remove(&partition);
            self.add_offset(&mut list, partition, next);
        }
        self.commit_list(&list);
        self.pending.clear();
        self.metrics.pending(0);
    }

    fn all_at_end(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.keys().all(|p| self.at_end.contains(p))
    }

    /// True when this processor owns every partition of the topic, has
    /// read each to its end and holds nothing unstored.
    fn caught_up(&mut self) -> bool {
        if !self.inbox.is_empty()
            || !self.pending.is_empty()
            || !self.unsaved.is_empty()
            || !self.all_at_end()
        {
            return false;
        }
        if self.topic_partitions.is_none() {
            self.topic_partitions = self
                .consumer
                .fetch_metadata(Some(&self.config.topic), BROKER_TIMEOUT)
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()));
        }
        self.topic_partitions == Some(self.partitions.len())
    }
}

/// The client settings every consumer of ours shares, with the caller's
/// own settings last.
fn client_config(config: &FleetConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("client.id", "exim-pilot-process")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS);
    for (key, value) in &config.client_options {
        client.set(key, value);
    }
    client
}

fn consumer_error(config: &FleetConfig, source: KafkaError) -> FleetError {
    FleetError::Consumer {
        brokers: config.brokers.clone(),
        topic: config.topic.clone(),
        source: Box::new(source),
    }
}

/// Prepares a replay from the beginning of the topic: commits the group's
/// offsets at the start of every partition and clears every partition's
/// saved state, so the next processor of the group parses and correlates
/// everything again and rewrites what it made of it (records and
/// rejections already stored are kept once; lifecycles are replaced).
///
/// Kafka refuses the offsets while processors of the group are running;
/// nothing is changed then. The offsets are reset before the states: were
/// the states cleared first and the reset then refused, a processor of
/// the group restarting later would start fresh in the middle of its
/// partitions.
pub fn reset_to_beginning(
    config: &FleetConfig,
    store: &dyn Store,
    runtime: &Handle,
) -> Result<Vec<i32>, FleetError> {
    let reset_error = |source| FleetError::Reset {
        group: config.group.clone(),
        topic: config.topic.clone(),
        source: Box::new(source),
    };
    let consumer: BaseConsumer<DefaultConsumerContext> = client_config(config)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| consumer_error(config, source))?;

    let metadata = consumer
        .fetch_metadata(Some(&config.topic), BROKER_TIMEOUT)
        .map_err(|source| consumer_error(config, source))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();

    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        let (low, _high) = consumer
            .fetch_watermarks(&config.topic, partition, BROKER_TIMEOUT)
            .map_err(reset_error)?;
        list.add_partition_offset(&config.topic, partition, Offset::Offset(low))
            .map_err(reset_error)?;
    }
    consumer.assign(&list).map_err(reset_error)?;
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(reset_error)?;

    let cleared = Batch {
        blobs: partitions
            .iter()
            .map(|&p| Blob {
                name: state_blob_name(&config.topic, p),
                data: Vec::new(),
            })
            .collect(),
        ..Batch::default()
    };
    runtime.block_on(store.commit_batch(cleared))?;
    tracing::info!(
        topic = %config.topic,
        group = %config.group,
        ?partitions,
        "Offsets reset to the beginning and partition states cleared"
    );
    Ok(partitions)
}
