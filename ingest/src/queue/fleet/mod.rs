//! The queue node's Kafka side, in fleet mode: snapshots out, commands in,
//! results and replies out.
//!
//! A [`QueueNode`] runs on each mail server next to `exim-pilot tail`. It
//! takes the [`Snapshotter`](super::Snapshotter)'s snapshots from a
//! channel and publishes them, in parts, to the queue topic; it reads the
//! command topic for its host's queue jobs and view requests, runs them
//! through [`Exim`], and publishes one result per message of each job, and
//! one reply per view request, to the queue topic. Every record it writes
//! is keyed by the host name, so one host's records stay in order in one
//! partition. The records' form is [`exim_pilot_schema::queue_wire`].
//!
//! - `snapshots`: publishing snapshots, the newest one first.
//! - `commands`: reading the command topic, committing its offsets as
//!   the work of each command is done.
//! - `jobs`: the job worker; `journal`: the jobs it finished.
//! - `views`: answering view requests.
//! - `outbox`: the producer, which delivers every record eventually.
//! - [`events`]: what the node logs and counts ([`NodeMetrics`]).
//!
//! # Delivery
//!
//! The producer is idempotent with `acks=all` and never gives a record up
//! locally: while the broker is away, results and replies wait in
//! librdkafka until it is back, and nothing else piles up: reading
//! commands pauses behind the job running, and of the snapshots taken
//! meanwhile only the newest is kept.
//!
//! Commands are processed at least once: a command's offset is committed
//! only after the broker acknowledged its results (a job) or its reply (a
//! view). A node that crashes in between reads the command again when it
//! restarts. A job is then not run again if it finished: finished job ids
//! are noted, before the offset is committed, in a small file next to the
//! tail's checkpoints ([`NodeConfig::state_dir`]). A job interrupted while
//! running (a crash, or a stop that outlasted the shutdown grace) runs
//! again from its first message. Running an action twice on one message
//! is safe: Exim refuses to freeze a frozen message or thaw a thawed one,
//! a removed or bounced message is no longer on the queue, and a second
//! delivery attempt is one more attempt; the second run's results, which
//! carry Exim's refusal, then stand next to the first ones under the same
//! job and message. Without a state directory, a crash between the results
//! and the commit runs the whole job again in the same way.
//!
//! # Known limits
//!
//! Each node reads every partition of the command topic (its consumer
//! group is its own), skipping other hosts' commands: fine for the few
//! small records commands are, wasteful for thousands of hosts. Two nodes
//! running under one host name share one consumer group and split the
//! partitions between them; each runs what it is given.

mod client;
mod commands;
pub mod events;
mod jobs;
mod journal;
mod outbox;
mod snapshots;
mod stop;
mod views;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exim_pilot_schema::queue::QueueSnapshot;
use exim_pilot_schema::queue_wire::{PartLimits, DEFAULT_COMMAND_TOPIC, DEFAULT_QUEUE_TOPIC};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;

use super::exim::Exim;
use client::Logged;
use events::NodeEvents;
use outbox::Outbox;

pub use events::NodeMetrics;
pub use journal::FILE_NAME as JOURNAL_FILE_NAME;

pub(crate) use client::{consumer_config, producer_config, Logged as LoggedClient};
pub(crate) use outbox::Outbox as QueueOutbox;

/// The consumer group of the node of `host`: `exim-pilot-node-<host>`.
pub fn node_group(host: &str) -> String {
    format!("exim-pilot-node-{host}")
}

/// Where and how the node talks to Kafka.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Where snapshots, results and replies go.
    pub queue_topic: String,
    /// Where jobs and view requests come from.
    pub command_topic: String,
    /// The consumer group on the command topic; by default
    /// [`node_group`] of the host.
    pub group: String,
    /// Further librdkafka producer properties, applied last.
    pub producer_options: Vec<(String, String)>,
    /// Further librdkafka consumer properties, applied last.
    pub consumer_options: Vec<(String, String)>,
    /// How large a snapshot part may grow.
    pub part_limits: PartLimits,
    /// Where the journal of finished jobs is kept (the tail's checkpoint
    /// directory is the place); `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
    /// The longest view text a reply carries; a longer one is cut and
    /// marked truncated. Default 512 KiB.
    pub max_reply_bytes: usize,
    /// View requests answered at once, at most. Default 4.
    pub concurrent_views: usize,
    /// How long, once told to stop, a running job and the deliveries
    /// under way may take to finish. Default 10 s.
    pub shutdown_timeout: Duration,
}

impl NodeConfig {
    /// The defaults, for the node of `host` talking to `brokers`.
    pub fn new(brokers: &str, host: &str) -> NodeConfig {
        NodeConfig {
            brokers: brokers.to_string(),
            queue_topic: DEFAULT_QUEUE_TOPIC.to_string(),
            command_topic: DEFAULT_COMMAND_TOPIC.to_string(),
            group: node_group(host),
            producer_options: Vec::new(),
            consumer_options: Vec::new(),
            part_limits: PartLimits::default(),
            state_dir: None,
            max_reply_bytes: 512 * 1024,
            concurrent_views: 4,
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    /// The largest record the node writes, about.
    fn max_record_bytes(&self) -> usize {
        self.part_limits.max_bytes.max(self.max_reply_bytes) + 64 * 1024
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The producer could not be created.
    #[error(
        "cannot create a Kafka producer for {brokers}: {source} (check the broker addresses \
         and the producer properties)"
    )]
    Producer {
        /// The bootstrap servers.
        brokers: String,
        /// The cause.
        source: Box<KafkaError>,
    },
    /// The command topic cannot be consumed.
    #[error(
        "cannot consume the command topic {topic:?} from {brokers}: {source} (check the \
         broker addresses, the topic and the consumer properties)"
    )]
    Consumer {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The cause.
        source: Box<KafkaError>,
    },
}

/// The Kafka side of one host's queue node; see the module documentation.
pub struct QueueNode {
    exim: Arc<Exim>,
    config: NodeConfig,
    metrics: Option<NodeMetrics>,
}

impl QueueNode {
    /// The node of `exim`'s host, as `config` says.
    pub fn new(exim: Arc<Exim>, config: NodeConfig) -> QueueNode {
        QueueNode {
            exim,
            config,
            metrics: None,
        }
    }

    /// Counts what the node does in `metrics`.
    pub fn with_metrics(mut self, metrics: NodeMetrics) -> QueueNode {
        self.metrics = Some(metrics);
        self
    }

    /// Publishes the snapshots that arrive on `snapshots` and serves the
    /// command topic until `shutdown` completes; then lets the work under
    /// way finish within [`NodeConfig::shutdown_timeout`]. Fails only when
    /// the Kafka clients cannot be created; everything after that is
    /// retried, logged and counted.
    pub async fn run(
        self,
        snapshots: mpsc::Receiver<QueueSnapshot>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let node = Arc::new(Node::new(self)?);
        let consumer = node.command_consumer()?;
        tracing::info!(
            host = node.host(),
            brokers = %node.config.brokers,
            queue_topic = %node.config.queue_topic,
            command_topic = %node.config.command_topic,
            group = %node.config.group,
            "Queue node publishing snapshots and reading commands"
        );

        let (stopper, stop) = stop::stop_signal();
        let snapshots = tokio::spawn(snapshots::publish(node.clone(), snapshots, stop.clone()));
        let commands = tokio::spawn(commands::serve(node.clone(), consumer, stop));
        shutdown.await;
        stopper.stop();

        for (task, name) in [(snapshots, "snapshots"), (commands, "commands")] {
            if let Err(error) = task.await {
                tracing::error!(task = name, error = %error, "Queue node task failed");
            }
        }
        node.outbox.flush(node.config.shutdown_timeout).await;
        tracing::info!(host = node.host(), "Queue node stopped");
        Ok(())
    }
}

/// What the node's tasks share.
struct Node {
    exim: Arc<Exim>,
    config: NodeConfig,
    outbox: Outbox,
    events: NodeEvents,
}

impl Node {
    fn new(node: QueueNode) -> Result<Node, NodeError> {
        let QueueNode {
            exim,
            config,
            metrics,
        } = node;
        let events = NodeEvents::new(metrics);
        let producer = producer_config(
            &config.brokers,
            "exim-pilot-queue-node",
            None,
            config.max_record_bytes(),
            &config.producer_options,
        );
        let outbox =
            Outbox::new(producer, events.clone()).map_err(|source| NodeError::Producer {
                brokers: config.brokers.clone(),
                source: Box::new(source),
            })?;
        Ok(Node {
            exim,
            config,
            outbox,
            events,
        })
    }

    fn host(&self) -> &str {
        self.exim.host()
    }

    fn command_consumer(&self) -> Result<StreamConsumer<Logged>, NodeError> {
        let error = |source| NodeError::Consumer {
            brokers: self.config.brokers.clone(),
            topic: self.config.command_topic.clone(),
            source: Box::new(source),
        };
        let consumer: StreamConsumer<Logged> = consumer_config(
            &self.config.brokers,
            "exim-pilot-queue-node",
            &self.config.group,
            &self.config.consumer_options,
        )
        .create_with_context(Logged::default())
        .map_err(error)?;
        consumer
            .subscribe(&[&self.config.command_topic])
            .map_err(error)?;
        Ok(consumer)
    }
}
