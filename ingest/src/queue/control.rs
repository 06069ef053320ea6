//! Queue control over Kafka, for the API: jobs and view requests go to
//! the command topic, view replies come back on the queue topic.
//!
//! The API must not run Exim and does not link librdkafka; the binary
//! gives it a [`KafkaQueueControl`] (behind the API's own queue control
//! interface) in fleet mode:
//!
//! - [`KafkaQueueControl::submit`] publishes a job, keyed by its host, and
//!   returns once the broker acknowledged it; the host's node runs it and
//!   its results reach the store through the processors, not through
//!   here.
//! - [`KafkaQueueControl::view`] publishes a view request under a new
//!   request id and waits for the reply carrying that id. Replies are read
//!   by a background consumer that starts, when the control is created, at
//!   the end of every partition of the queue topic, commits no offsets and
//!   joins no consumer group (its partitions are assigned by hand): every
//!   API process sees every reply and keeps those it waits for. A request nobody answers in time (the node is down, or
//!   not running its queue side) ends in [`ControlError::NoReply`]; the
//!   request carries its deadline, so a node that reads it later answers
//!   without running Exim.
//!
//! The producer is idempotent with `acks=all`, but, unlike the node's, it
//! gives a record up after [`ControlConfig::send_timeout`]: a person is
//! waiting, and a broker that is away is better reported than waited for.
//!
//! # Known limits
//!
//! The reply reader fetches the whole queue topic from its start point,
//! snapshot parts included, and skips all but replies by their kind
//! letter, without parsing them. Partitions added to the queue topic
//! after the control was created are not read until it is created again.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use exim_pilot_schema::queue::{MessageView, QueueJob};
use exim_pilot_schema::queue_wire::{
    QueueCommand, QueueRecord, QueueRecordKind, QueueWireError, ViewErrorKind, ViewOutcome,
    ViewReply, ViewRequest, DEFAULT_COMMAND_TOPIC, DEFAULT_QUEUE_TOPIC,
};
use exim_pilot_schema::MessageId;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::exim::MessageText;
use super::fleet::events::NodeEvents;
use super::fleet::{consumer_config, producer_config, LoggedClient, QueueOutbox};

/// How long metadata and offset requests to the brokers may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the control talks to Kafka.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Where the nodes' replies come from.
    pub queue_topic: String,
    /// Where jobs and view requests go.
    pub command_topic: String,
    /// Further librdkafka producer properties, applied last.
    pub producer_options: Vec<(String, String)>,
    /// Further librdkafka consumer properties, applied last.
    pub consumer_options: Vec<(String, String)>,
    /// How long the broker may take to acknowledge a command before it is
    /// reported unavailable. Default 10 s.
    pub send_timeout: Duration,
}

impl ControlConfig {
    /// The defaults, talking to `brokers`.
    pub fn new(brokers: &str) -> ControlConfig {
        ControlConfig {
            brokers: brokers.to_string(),
            queue_topic: DEFAULT_QUEUE_TOPIC.to_string(),
            command_topic: DEFAULT_COMMAND_TOPIC.to_string(),
            producer_options: Vec::new(),
            consumer_options: Vec::new(),
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a command could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The Kafka clients could not be set up.
    #[error(
        "cannot set up queue control on {brokers}: {reason} (check the broker addresses, that \
         topics {queue_topic:?} and {command_topic:?} exist, and the client properties)"
    )]
    Setup {
        /// The bootstrap servers.
        brokers: String,
        /// The queue topic.
        queue_topic: String,
        /// The command topic.
        command_topic: String,
        /// What failed.
        reason: String,
    },
    /// The broker did not take the command.
    #[error(
        "the Kafka broker did not take the {what} for host {host}: {source} (check that Kafka \
         at {brokers} is reachable; try again later)"
    )]
    Unavailable {
        /// A job or a view request.
        what: &'static str,
        /// The host it was for.
        host: String,
        /// The bootstrap servers.
        brokers: String,
        /// The cause.
        source: Box<KafkaError>,
    },
    /// No reply came in time.
    #[error(
        "no reply from the queue node of {host} within {waited:?}: the node may be down, not \
         running its queue side, or not reading command topic {topic:?}"
    )]
    NoReply {
        /// The host asked.
        host: String,
        /// How long the reply was waited for.
        waited: Duration,
        /// The command topic.
        topic: String,
    },
    /// The node says the message is not on its queue.
    #[error("message {id} is not on the queue of {host}")]
    NotQueued {
        /// The host.
        host: String,
        /// The message.
        id: MessageId,
    },
    /// The node could not read the message.
    #[error("the queue node of {host} could not read message {id}: {message}")]
    Failed {
        /// The host.
        host: String,
        /// The message.
        id: MessageId,
        /// The node's explanation.
        message: String,
    },
    /// The command could not be encoded.
    #[error("cannot encode the command: {0}")]
    Encode(#[from] QueueWireError),
}

/// Replies waited for, by request id.
#[derive(Default)]
struct Waiting {
    requests: Mutex<HashMap<String, oneshot::Sender<ViewReply>>>,
}

impl Waiting {
    fn add(&self, request_id: &str) -> oneshot::Receiver<ViewReply> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(request_id.to_string(), sender);
        receiver
    }

    fn remove(&self, request_id: &str) {
        self.lock().remove(request_id);
    }

    /// Hands a reply to whoever waits for it; replies to other processes'
    /// requests are dropped.
    fn answer(&self, reply: ViewReply) {
        if let Some(sender) = self.lock().remove(&reply.request_id) {
            let _ = sender.send(reply);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<ViewReply>>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queue control through Kafka; see the module documentation. Dropping it
/// stops its reply reader.
pub struct KafkaQueueControl {
    config: ControlConfig,
    outbox: QueueOutbox,
    waiting: Arc<Waiting>,
    reader: JoinHandle<()>,
}

impl KafkaQueueControl {
    /// Creates the producer and the reply reader, positioned at the end of
    /// every partition of the queue topic, so that every reply written
    /// from now on is seen.
    pub async fn connect(config: ControlConfig) -> Result<KafkaQueueControl, ControlError> {
        let setup = |reason: String| ControlError::Setup {
            brokers: config.brokers.clone(),
            queue_topic: config.queue_topic.clone(),
            command_topic: config.command_topic.clone(),
            reason,
        };
        let producer = producer_config(
            &config.brokers,
            "exim-pilot-queue-control",
            Some(config.send_timeout),
            1 << 20,
            &config.producer_options,
        );
        let outbox = QueueOutbox::new(producer, NodeEvents::default())
            .map_err(|e| setup(format!("producer: {e}")))?;
        let consumer = reply_reader(&config).await.map_err(setup)?;
        let waiting = Arc::new(Waiting::default());
        let reader = tokio::spawn(read_replies(consumer, waiting.clone()));
        Ok(KafkaQueueControl {
            config,
            outbox,
            waiting,
            reader,
        })
    }

    /// Publishes `job` for its host's node; returns once the broker has it.
    pub async fn submit(&self, job: &QueueJob) -> Result<(), ControlError> {
        let bytes = QueueCommand::Job(job.clone()).encode()?;
        self.send("queue job", &job.host, bytes).await?;
        tracing::info!(
            job_id = %job.job_id,
            host = %job.host,
            action = %job.action,
            messages = job.ids.len(),
            "Queue job published for its node"
        );
        Ok(())
    }

    /// Asks `host`'s node for one view of message `id` and waits up to
    /// `timeout` for the reply.
    pub async fn view(
        &self,
        host: &str,
        id: MessageId,
        view: MessageView,
        timeout: Duration,
    ) -> Result<MessageText, ControlError> {
        let request_id = new_request_id();
        let expires_at =
            Utc::now() + chrono::TimeDelta::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX);
        let bytes = QueueCommand::View(ViewRequest {
            request_id: request_id.clone(),
            host: host.to_string(),
            id,
            view,
            expires_at,
        })
        .encode()?;

        // Waiting starts before the request leaves, so that no reply can
        // come unseen.
        let reply = self.waiting.add(&request_id);
        let asked = async {
            self.send("view request", host, bytes).await?;
            Ok::<_, ControlError>(reply.await)
        };
        let outcome = tokio::time::timeout(timeout, asked).await;
        self.waiting.remove(&request_id);
        match outcome {
            Ok(Ok(Ok(reply))) => reply_text(reply),
            Ok(Err(error)) => Err(error),
            Ok(Ok(Err(_))) | Err(_) => Err(ControlError::NoReply {
                host: host.to_string(),
                waited: timeout,
                topic: self.config.command_topic.clone(),
            }),
        }
    }

    async fn send(
        &self,
        what: &'static str,
        host: &str,
        bytes: Vec<u8>,
    ) -> Result<(), ControlError> {
        self.outbox
            .deliver_once(&self.config.command_topic, host, bytes)
            .await
            .map_err(|source| ControlError::Unavailable {
                what,
                host: host.to_string(),
                brokers: self.config.brokers.clone(),
                source: Box::new(source),
            })
    }
}

impl Drop for KafkaQueueControl {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The text of a reply, or the node's reason for none.
fn reply_text(reply: ViewReply) -> Result<MessageText, ControlError> {
    match reply.outcome {
        ViewOutcome::Text { text, truncated } => Ok(MessageText {
            view: reply.view,
            text,
            truncated,
        }),
        ViewOutcome::Error {
            kind: ViewErrorKind::NotQueued,
            ..
        } => Err(ControlError::NotQueued {
            host: reply.host,
            id: reply.id,
        }),
        ViewOutcome::Error { message, .. } => Err(ControlError::Failed {
            host: reply.host,
            id: reply.id,
            message,
        }),
    }
}

/// A consumer of the queue topic assigned every partition at its current
/// end.
async fn reply_reader(config: &ControlConfig) -> Result<StreamConsumer<LoggedClient>, String> {
    // librdkafka wants a group even for partitions assigned by hand; this
    // one is never joined and holds no offsets.
    let group = format!("exim-pilot-queue-control-{}", new_request_id());
    let consumer: StreamConsumer<LoggedClient> = consumer_config(
        &config.brokers,
        "exim-pilot-queue-control",
        &group,
        &config.consumer_options,
    )
    .create_with_context(LoggedClient::default())
    .map_err(|e| format!("consumer: {e}"))?;
    let consumer = Arc::new(consumer);

    // Metadata and offsets are asked with blocking calls.
    let topic = config.queue_topic.clone();
    let positioned = consumer.clone();
    tokio::task::spawn_blocking(move || assign_at_end(&positioned, &topic))
        .await
        .map_err(|e| e.to_string())??;
    Arc::try_unwrap(consumer).map_err(|_| "the reply reader is still shared".to_string())
}

fn assign_at_end(consumer: &StreamConsumer<LoggedClient>, topic: &str) -> Result<(), String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .map_err(|e| format!("metadata of {topic:?}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!(
            "topic {topic:?} has no partitions (does it exist?)"
        ));
    }
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
            .map_err(|e| format!("end of {topic:?} partition {partition}: {e}"))?;
        list.add_partition_offset(topic, partition, Offset::Offset(high))
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&list).map_err(|e| e.to_string())
}

/// Reads the queue topic for view replies, for ever.
async fn read_replies(consumer: StreamConsumer<LoggedClient>, waiting: Arc<Waiting>) {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(error = %error, "Queue reply reader error");
                continue;
            }
        };
        let payload = message.payload().unwrap_or_default();
        // Only replies are parsed; anything undecodable is the
        // processors' to report.
        if QueueRecord::peek_kind(payload) != Ok(QueueRecordKind::ViewReply) {
            continue;
        }
        match QueueRecord::decode(payload) {
            Ok(QueueRecord::ViewReply(reply)) => waiting.answer(reply),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                error = %error,
                "Queue topic record is no view reply; skipped"
            ),
        }
    }
}

/// A request id no other request of any process is likely to share: 128
/// bits from the standard library's randomly seeded hasher, a counter and
/// the time.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u64(count);
        hasher.write_i64(nanos);
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32));
    }
}
