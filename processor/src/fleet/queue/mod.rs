//! The queue consumer: snapshots and job results from the queue topic to
//! a [`QueueSink`] (the store).
//!
//! Every mail server's queue node publishes its queue snapshots, in
//! parts, and one result per message of each queue job to the queue topic,
//! keyed by its host name (the records are described in
//! [`exim_pilot_schema::queue_wire`]). Processors read it as a consumer
//! group of their own ([`queue_group`] of the raw topic's group), so the
//! hosts' partitions are shared among them as the raw topic's are.
//!
//! - `assemble`: snapshot parts back into snapshots, per host.
//! - `offsets`: what may be committed.
//! - [`metrics`]: what the consumer logs and counts.
//!
//! # One record at a time
//!
//! A snapshot part joins its host's snapshot; once every part arrived the
//! snapshot goes to [`QueueSink::snapshot`]. A result joins a batch,
//! which goes to [`QueueSink::results`] when it holds
//! [`QueueConsumerConfig::results_batch`] results or its oldest waited
//! [`QueueConsumerConfig::results_wait`]. View replies are for the API
//! and skipped, as are records that are no queue record (reported and
//! counted). A sink that fails is offered the same snapshot or batch again
//! after growing pauses ([`Backoff`]), for as long as it takes; reading
//! waits meanwhile.
//!
//! # Offsets and repeats
//!
//! Offsets are committed only up to what was handed on: the first part of
//! a snapshot still incomplete holds its partition's commit point back
//! (other hosts' snapshots after it are handed on all the same), as does a
//! batch of results not yet stored. After a crash or a rebalance reading
//! starts again there, so some snapshots and results are handed on twice:
//! a sink must take a repeated snapshot (same host and time) and a
//! repeated result (same job, host and message) as the same one, which
//! the stores do.
//!
//! # Known limits
//!
//! While the sink fails for longer than librdkafka's
//! `max.poll.interval.ms` (five minutes by default) the consumer drops out
//! of its group and the partitions go to another processor, or back to
//! this one when it reads again; nothing is lost, some records are read
//! twice.

mod assemble;
pub mod metrics;
mod offsets;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use exim_pilot_schema::queue::{QueueActionResult, QueueSnapshot};
use exim_pilot_schema::queue_wire::{QueueRecord, QueueRecordKind, DEFAULT_QUEUE_TOPIC};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Backoff;
use assemble::{Assembler, Offered};
use metrics::Events;
use offsets::{Offsets, Position};

pub use metrics::QueueConsumerMetrics;

/// The queue consumer group of processors whose raw topic group is
/// `group`: `<group>-queue`.
pub fn queue_group(group: &str) -> String {
    format!("{group}-queue")
}

/// Where queue snapshots and results go: implemented on the store.
#[async_trait]
pub trait QueueSink: Send + Sync {
    /// Why storing failed.
    type Error: std::fmt::Display + Send;

    /// Stores a complete snapshot. The same snapshot may come again.
    async fn snapshot(&self, snapshot: &QueueSnapshot) -> Result<(), Self::Error>;

    /// Stores results of queue jobs. The same results may come again.
    async fn results(&self, results: &[QueueActionResult]) -> Result<(), Self::Error>;
}

#[async_trait]
impl<S: QueueSink + ?Sized> QueueSink for Arc<S> {
    type Error = S::Error;

    async fn snapshot(&self, snapshot: &QueueSnapshot) -> Result<(), Self::Error> {
        (**self).snapshot(snapshot).await
    }

    async fn results(&self, results: &[QueueActionResult]) -> Result<(), Self::Error> {
        (**self).results(results).await
    }
}

/// The options of the queue consumer.
#[derive(Clone, Debug)]
pub struct QueueConsumerConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The queue topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Further librdkafka consumer properties, applied last.
    pub client_options: Vec<(String, String)>,
    /// Results handed to the sink at once, at most. Default 500.
    pub results_batch: usize,
    /// How long a result waits for others to share its batch. Default
    /// 200 ms.
    pub results_wait: Duration,
    /// Pauses between attempts while the sink fails.
    pub retry: Backoff,
}

impl QueueConsumerConfig {
    /// The defaults, for processors of raw topic group `group`.
    pub fn new(brokers: &str, group: &str) -> QueueConsumerConfig {
        QueueConsumerConfig {
            brokers: brokers.to_string(),
            topic: DEFAULT_QUEUE_TOPIC.to_string(),
            group: queue_group(group),
            client_options: Vec::new(),
            results_batch: 500,
            results_wait: Duration::from_millis(200),
            retry: Backoff::default(),
        }
    }
}

/// Why the queue consumer could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot consume the queue topic {topic:?} from {brokers}: {source} (check the broker \
     addresses, the topic and the consumer properties)"
)]
pub struct QueueConsumerError {
    /// The bootstrap servers.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// The cause.
    pub source: Box<KafkaError>,
}

/// Notes revoked partitions for the loop, and logs client errors.
#[derive(Default)]
struct QueueContext {
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for QueueContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(error = %error, reason, "Queue consumer client error");
    }
}

impl ConsumerContext for QueueContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            revoked.extend(list.elements().iter().map(|e| e.partition()));
        }
    }
}

/// The consumer stopped before the sink took what it was offered.
struct Stopped;

/// A member of the queue consumer group; see the module documentation.
pub struct QueueConsumer<S> {
    consumer: StreamConsumer<QueueContext>,
    sink: S,
    config: QueueConsumerConfig,
    events: Events,
    assembler: Assembler,
    offsets: Offsets,
    results: Vec<(QueueActionResult, Position)>,
    results_due: Option<Instant>,
}

impl<S: QueueSink> QueueConsumer<S> {
    /// Creates the consumer and joins the group.
    pub fn new(
        config: QueueConsumerConfig,
        sink: S,
    ) -> Result<QueueConsumer<S>, QueueConsumerError> {
        let error = |source| QueueConsumerError {
            brokers: config.brokers.clone(),
            topic: config.topic.clone(),
            source: Box::new(source),
        };
        let consumer: StreamConsumer<QueueContext> = client_config(&config)
            .create_with_context(QueueContext::default())
            .map_err(error)?;
        consumer.subscribe(&[&config.topic]).map_err(error)?;
        Ok(QueueConsumer {
            consumer,
            sink,
            config,
            events: Events::default(),
            assembler: Assembler::default(),
            offsets: Offsets::default(),
            results: Vec::new(),
            results_due: None,
        })
    }

    /// Counts what the consumer does in `metrics`.
    pub fn with_metrics(mut self, metrics: QueueConsumerMetrics) -> QueueConsumer<S> {
        self.events = Events::new(Some(metrics));
        self
    }

    /// Reads and hands on until `shutdown` completes; then commits what
    /// was handed on. Results batched but not yet stored are read again by
    /// the next owner of their partition.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            brokers = %self.config.brokers,
            topic = %self.config.topic,
            group = %self.config.group,
            "Joined the queue consumer group"
        );
        let (stopper, stop) = watch::channel(false);
        {
            let work = self.work(stop);
            tokio::pin!(work);
            tokio::select! {
                _ = &mut work => {}
                _ = shutdown => {
                    stopper.send_replace(true);
                    work.await;
                }
            }
        }
        self.commit(CommitMode::Sync);
    }

    async fn work(&mut self, stop: watch::Receiver<bool>) {
        let mut stop_wait = stop.clone();
        loop {
            let due = self.results_due;
            let step = tokio::select! {
                _ = stopped(&mut stop_wait) => return,
                _ = sleep_until(due), if due.is_some() => self.flush_results(&stop).await,
                received = self.consumer.recv() => {
                    let inbound = received.map(|m| Inbound {
                        position: Position { partition: m.partition(), offset: m.offset() },
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                    match inbound {
                        Ok(inbound) => self.accept(inbound, &stop).await,
                        Err(error) => {
                            self.events.consumer_error(&error);
                            Ok(())
                        }
                    }
                }
            };
            if step.is_err() {
                return;
            }
            self.forget_revoked();
            self.commit(CommitMode::Async);
        }
    }

    /// Files one record.
    async fn accept(
        &mut self,
        inbound: Inbound,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let Position { partition, offset } = inbound.position;
        self.offsets.received(inbound.position);
        let kind = match QueueRecord::peek_kind(&inbound.payload) {
            Ok(kind) => kind,
            Err(error) => {
                self.events.undecodable(partition, offset, &error);
                self.offsets.done(inbound.position);
                return Ok(());
            }
        };
        if kind == QueueRecordKind::ViewReply {
            self.events.consumed("view_reply");
            self.offsets.done(inbound.position);
            return Ok(());
        }
        match QueueRecord::decode(&inbound.payload) {
            Ok(QueueRecord::SnapshotPart(part)) => {
                self.events.consumed("snapshot_part");
                self.take_part(part, inbound.position, stop).await
            }
            Ok(QueueRecord::Result(result)) => {
                self.events.consumed("result");
                self.take_result(result, inbound.position, stop).await
            }
            Ok(QueueRecord::ViewReply(_)) => {
                self.offsets.done(inbound.position);
                Ok(())
            }
            Err(error) => {
                self.events.undecodable(partition, offset, &error);
                self.offsets.done(inbound.position);
                Ok(())
            }
        }
    }

    async fn take_part(
        &mut self,
        part: exim_pilot_schema::queue_wire::SnapshotPart,
        position: Position,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let (host, index) = (part.host.clone(), part.part);
        let (offered, abandoned) = self.assembler.offer(part, position);
        if let Some(abandoned) = abandoned {
            self.events.abandoned(&abandoned);
            for p in &abandoned.positions {
                self.offsets.done(*p);
            }
        }
        self.events.incomplete(self.assembler.incomplete());
        match offered {
            Offered::Waiting => Ok(()),
            Offered::Skipped(reason) => {
                self.events.skipped(&host, index, reason);
                self.offsets.done(position);
                Ok(())
            }
            Offered::Complete(snapshot, positions) => {
                self.store_snapshot(&snapshot, stop).await?;
                self.events
                    .assembled(&snapshot.host, snapshot.taken_at, snapshot.messages.len());
                for p in positions {
                    self.offsets.done(p);
                }
                Ok(())
            }
        }
    }

    async fn take_result(
        &mut self,
        result: QueueActionResult,
        position: Position,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        self.results.push((result, position));
        if self.results_due.is_none() {
            self.results_due = Some(Instant::now() + self.config.results_wait);
        }
        if self.results.len() >= self.config.results_batch.max(1) {
            return self.flush_results(stop).await;
        }
        Ok(())
    }

    /// Hands the batch of results to the sink.
    async fn flush_results(&mut self, stop: &watch::Receiver<bool>) -> Result<(), Stopped> {
        if self.results.is_empty() {
            self.results_due = None;
            return Ok(());
        }
        let (results, positions): (Vec<QueueActionResult>, Vec<Position>) =
            self.results.iter().cloned().unzip();
        let sink = &self.sink;
        retry(&self.events, self.config.retry, "results", stop, || {
            sink.results(&results)
        })
        .await?;
        self.events.results_stored(results.len());
        for p in positions {
            self.offsets.done(p);
        }
        self.results.clear();
        self.results_due = None;
        Ok(())
    }

    async fn store_snapshot(
        &self,
        snapshot: &QueueSnapshot,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let sink = &self.sink;
        retry(&self.events, self.config.retry, "snapshot", stop, || {
            sink.snapshot(snapshot)
        })
        .await
    }

    /// Drops what this consumer held of partitions given to another.
    fn forget_revoked(&mut self) {
        let revoked: Vec<i32> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for partition in revoked {
            tracing::info!(partition, "Queue topic partition revoked");
            self.assembler.forget_partition(partition);
            self.offsets.forget(partition);
        }
    }

    /// Commits the offsets that moved.
    fn commit(&mut self, mode: CommitMode) {
        let moved = self.offsets.to_commit();
        if moved.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in &moved {
            if let Err(error) =
                list.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset))
            {
                self.events.offset_commit_failed(&error);
                return;
            }
        }
        match self.consumer.commit(&list, mode) {
            Ok(()) => self.offsets.committed(&moved),
            Err(error) => self.events.offset_commit_failed(&error),
        }
    }
}

/// A record of the queue topic, detached from the consumer.
struct Inbound {
    position: Position,
    payload: Vec<u8>,
}

/// Runs `attempt` until it succeeds, pausing after each failure, unless
/// the consumer is told to stop.
async fn retry<F, Fut, E>(
    events: &Events,
    backoff: Backoff,
    what: &'static str,
    stop: &watch::Receiver<bool>,
    mut attempt: F,
) -> Result<(), Stopped>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut stop = stop.clone();
    let mut failures = 0;
    loop {
        let error = match attempt().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        failures += 1;
        let wait = backoff.delay(failures);
        events.sink_failed(what, &error, failures, wait);
        tokio::select! {
            _ = stopped(&mut stop) => return Err(Stopped),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Completes once the stop signal is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// The librdkafka settings of the consumer; the caller's last.
fn client_config(config: &QueueConsumerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("client.id", "exim-pilot-process-queue")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A snapshot part may be larger than librdkafka's default fetch
        // of one partition.
        .set("max.partition.fetch.bytes", (4 << 20).to_string());
    for (key, value) in &config.client_options {
        client.set(key, value);
    }
    client
}
