//! The queue over Kafka, with a real broker and a real Exim: a node
//! publishes its snapshots in parts and serves jobs and view requests, the
//! processors' queue consumer puts the snapshots back together and hands
//! them and the jobs' results to a sink, and the API's queue control
//! submits jobs and reads messages.
//!
//! Each test starts its own broker and its own Exim (with a spool of its
//! own, see `exim_pilot_testkit::exim`), and creates its own topics.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use exim_pilot_ingest::queue::control::{ControlConfig, ControlError, KafkaQueueControl};
use exim_pilot_ingest::queue::fleet::{NodeConfig, NodeMetrics, QueueNode};
use exim_pilot_ingest::queue::{parse_bp, Exim, EximConfig, Snapshotter};
use exim_pilot_processor::fleet::queue::{
    QueueConsumer, QueueConsumerConfig, QueueConsumerMetrics, QueueSink,
};
use exim_pilot_processor::fleet::Backoff;
use exim_pilot_schema::queue::{
    MessageView, QueueAction, QueueActionResult, QueueActionStatus, QueueJob, QueueSnapshot,
};
use exim_pilot_schema::queue_wire::{PartLimits, QueueCommand, QueueRecord, ViewRequest};
use exim_pilot_schema::MessageId;
use exim_pilot_testkit::exim::Exim as TestExim;
use exim_pilot_testkit::kafka::{create_topic, read_partition, unique_topic};
use exim_pilot_testkit::Server;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node's host name.
const HOST: &str = "queue.test";

/// Longest a test waits for something to happen; a bound, not a speed
/// goal.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------
// The sink

/// Keeps what the queue consumer hands on.
#[derive(Default)]
struct Recorded {
    snapshots: Mutex<Vec<QueueSnapshot>>,
    results: Mutex<Vec<QueueActionResult>>,
}

#[async_trait]
impl QueueSink for Recorded {
    type Error = String;

    async fn snapshot(&self, snapshot: &QueueSnapshot) -> Result<(), String> {
        self.snapshots.lock().unwrap().push(snapshot.clone());
        Ok(())
    }

    async fn results(&self, results: &[QueueActionResult]) -> Result<(), String> {
        self.results.lock().unwrap().extend_from_slice(results);
        Ok(())
    }
}

impl Recorded {
    fn results_of(&self, job_id: &str) -> Vec<QueueActionResult> {
        let results = self.results.lock().unwrap();
        results
            .iter()
            .filter(|r| r.job_id == job_id)
            .cloned()
            .collect()
    }

    fn last_snapshot(&self) -> Option<QueueSnapshot> {
        self.snapshots.lock().unwrap().last().cloned()
    }
}

// ---------------------------------------------------------------------
// The fleet of one node

/// A broker, an Exim with its node, the processors' queue consumer and
/// the API's queue control.
struct Fleet {
    broker: Server,
    kit: TestExim,
    queue_topic: String,
    command_topic: String,
    state_dir: tempfile::TempDir,
    node_metrics: NodeMetrics,
    consumer_metrics: QueueConsumerMetrics,
    sink: Arc<Recorded>,
    control: KafkaQueueControl,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a test changes in the fleet.
struct Setup {
    /// Messages in one snapshot part, at most.
    part_messages: usize,
    /// Partitions of the command topic.
    command_partitions: i32,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            part_messages: 2_000,
            command_partitions: 1,
        }
    }
}

impl Fleet {
    async fn start(setup: Setup) -> Fleet {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let broker = tokio::task::spawn_blocking(Server::kafka).await.unwrap();
        let queue_topic = unique_topic("queue");
        let command_topic = unique_topic("commands");
        let brokers = broker.address().to_string();
        let topics = [
            (queue_topic.clone(), 2),
            (command_topic.clone(), setup.command_partitions),
        ];
        tokio::task::spawn_blocking(move || {
            for (topic, partitions) in topics {
                create_topic(&brokers, &topic, partitions);
            }
        })
        .await
        .unwrap();

        let control = KafkaQueueControl::connect(ControlConfig {
            queue_topic: queue_topic.clone(),
            command_topic: command_topic.clone(),
            ..ControlConfig::new(broker.address())
        })
        .await
        .expect("queue control");
        let (stop, _) = watch::channel(false);
        let mut fleet = Fleet {
            kit: TestExim::new(),
            queue_topic,
            command_topic,
            state_dir: tempfile::tempdir().unwrap(),
            node_metrics: NodeMetrics::new(&prometheus::Registry::new()).unwrap(),
            consumer_metrics: QueueConsumerMetrics::new(&prometheus::Registry::new()).unwrap(),
            sink: Arc::new(Recorded::default()),
            control,
            stop,
            tasks: Vec::new(),
            broker,
        };
        fleet.start_node(&setup, None);
        fleet.start_consumer();
        fleet
    }

    fn exim(&self) -> Arc<Exim> {
        let config = EximConfig {
            binary: self.kit.binary().to_path_buf(),
            config_file: Some(self.kit.config_file().to_path_buf()),
            timeout: Duration::from_secs(60),
            ..EximConfig::default()
        };
        Arc::new(Exim::new(HOST, config))
    }

    fn node_config(&self, setup: &Setup, group: Option<String>) -> NodeConfig {
        let mut config = NodeConfig::new(self.broker.address(), HOST);
        config.queue_topic = self.queue_topic.clone();
        config.command_topic = self.command_topic.clone();
        config.group = group.unwrap_or_else(|| format!("{}-node", self.command_topic));
        config.part_limits = PartLimits {
            max_messages: setup.part_messages,
            ..PartLimits::default()
        };
        config.state_dir = Some(self.state_dir.path().to_path_buf());
        config
    }

    /// Starts a node listing the queue every 300 ms.
    fn start_node(&mut self, setup: &Setup, group: Option<String>) {
        let exim = self.exim();
        let (sender, snapshots) = tokio::sync::mpsc::channel(2);
        let snapshotter = Snapshotter::new(exim.clone(), Duration::from_millis(300));
        self.tasks
            .push(tokio::spawn(snapshotter.run(sender, self.stopped())));
        let node = QueueNode::new(exim, self.node_config(setup, group))
            .with_metrics(self.node_metrics.clone());
        let stopped = self.stopped();
        self.tasks.push(tokio::spawn(async move {
            node.run(snapshots, stopped)
                .await
                .expect("running the node");
        }));
    }

    fn start_consumer(&mut self) {
        let mut config = QueueConsumerConfig::new(
            self.broker.address(),
            &format!("{}-process", self.queue_topic),
        );
        config.topic = self.queue_topic.clone();
        config.results_wait = Duration::from_millis(50);
        config.retry = Backoff {
            first: Duration::from_millis(50),
            max: Duration::from_millis(500),
        };
        let consumer = QueueConsumer::new(config, self.sink.clone())
            .expect("queue consumer")
            .with_metrics(self.consumer_metrics.clone());
        let stopped = self.stopped();
        self.tasks.push(tokio::spawn(consumer.run(stopped)));
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.stop.subscribe();
        async move {
            let _ = receiver.wait_for(|s| *s).await;
        }
    }

    /// Stops the node, the snapshotter and the consumer, and waits for
    /// them.
    async fn stop_all(&mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        let (stop, _) = watch::channel(false);
        self.stop = stop;
    }

    fn job(&self, action: QueueAction, ids: &[&str]) -> QueueJob {
        let now = Utc::now();
        QueueJob {
            job_id: unique_topic("job"),
            host: HOST.to_string(),
            action,
            ids: ids.iter().map(|id| id.parse().unwrap()).collect(),
            actor: "alice".to_string(),
            reason: Some("test".to_string()),
            requested_at: now,
            expires_at: now + TimeDelta::minutes(10),
        }
    }

    /// Waits until the sink holds `count` results of `job`.
    async fn results(&self, job: &QueueJob, count: usize) -> Vec<QueueActionResult> {
        let sink = self.sink.clone();
        let id = job.job_id.clone();
        eventually(&format!("{count} results of job {id}"), || {
            sink.results_of(&id).len() >= count
        })
        .await;
        self.sink.results_of(&job.job_id)
    }

    /// Writes raw bytes to a topic, keyed by `key`.
    async fn produce(&self, topic: &str, key: &str, payload: &[u8]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.address())
            .create()
            .unwrap();
        let record = FutureRecord::to(topic).key(key).payload(payload);
        producer
            .send(record, Timeout::After(PATIENCE))
            .await
            .expect("writing a record");
    }

    /// The queue topic's records, from both partitions.
    async fn queue_records(&self) -> Vec<Vec<u8>> {
        let brokers = self.broker.address().to_string();
        let topic = self.queue_topic.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for partition in 0..2 {
                let records =
                    read_partition(&brokers, &topic, partition, Duration::from_secs(5), |_| {
                        false
                    });
                all.extend(records.into_iter().map(|r| r.payload));
            }
            all
        })
        .await
        .unwrap()
    }
}

/// Waits until `done` holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn frozen(listing: &str) -> usize {
    listing.matches("*** frozen ***").count()
}

fn ids_of(snapshot: &QueueSnapshot) -> BTreeSet<String> {
    snapshot.messages.iter().map(|m| m.id.to_string()).collect()
}

// ---------------------------------------------------------------------
// Snapshots

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_cross_in_parts_and_come_back_whole() {
    let mut fleet = Fleet::start(Setup {
        part_messages: 4,
        ..Setup::default()
    })
    .await;
    let submitted = fleet
        .kit
        .submit_many(25, "alice@example.net", &["bob@example.com"]);
    let count = fleet.kit.bpc();
    assert_eq!(count, 25);

    let sink = fleet.sink.clone();
    eventually("a snapshot of the 25 messages", || {
        sink.last_snapshot()
            .is_some_and(|s| s.messages.len() as u64 == count)
    })
    .await;
    let snapshot = fleet.sink.last_snapshot().unwrap();
    assert_eq!(snapshot.host, HOST);
    let listed = parse_bp(&fleet.kit.bp());
    assert_eq!(
        ids_of(&snapshot),
        listed.messages.iter().map(|m| m.id.to_string()).collect()
    );
    assert_eq!(ids_of(&snapshot), submitted.into_iter().collect());
    fleet.stop_all().await;

    // On the topic, that snapshot took seven records of at most four
    // messages each.
    let parts: Vec<_> = fleet
        .queue_records()
        .await
        .iter()
        .filter_map(|bytes| match QueueRecord::decode(bytes) {
            Ok(QueueRecord::SnapshotPart(part)) if part.taken_at == snapshot.taken_at => Some(part),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 7, "{parts:?}");
    assert!(parts.iter().all(|p| p.parts == 7 && p.messages.len() <= 4));
    assert!(fleet.node_metrics.snapshots_published() >= 1);
    assert!(fleet.consumer_metrics.snapshots_assembled() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_the_broker_is_away_give_way_to_the_newest() {
    let mut fleet = Fleet::start(Setup::default()).await;
    fleet
        .kit
        .submit_many(1, "alice@example.net", &["bob@example.com"]);
    let sink = fleet.sink.clone();
    eventually("a first snapshot", || {
        sink.last_snapshot().is_some_and(|s| s.messages.len() == 1)
    })
    .await;

    tokio::task::block_in_place(|| fleet.broker.stop());
    fleet
        .kit
        .submit_many(3, "alice@example.net", &["bob@example.com"]);
    let metrics = fleet.node_metrics.clone();
    let before = metrics.snapshots_superseded();
    eventually("snapshots superseded during the outage", || {
        metrics.snapshots_superseded() >= before + 5
    })
    .await;
    tokio::task::block_in_place(|| fleet.broker.resume());

    eventually("the newest snapshot after the outage", || {
        sink.last_snapshot().is_some_and(|s| s.messages.len() == 4)
    })
    .await;
    fleet.stop_all().await;
}

// ---------------------------------------------------------------------
// Jobs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_runs_on_the_node_and_its_results_reach_the_sink() {
    let mut fleet = Fleet::start(Setup::default()).await;
    let ids = fleet
        .kit
        .submit_many(3, "alice@example.net", &["bob@example.com"]);
    let job = fleet.job(QueueAction::Freeze, &[&ids[0], &ids[2]]);

    fleet
        .control
        .submit(&job)
        .await
        .expect("submitting the job");
    let results = fleet.results(&job, 2).await;

    let done: Vec<(String, QueueActionStatus)> = results
        .iter()
        .map(|r| (r.id.to_string(), r.status))
        .collect();
    assert_eq!(
        done,
        vec![
            (ids[0].clone(), QueueActionStatus::Done),
            (ids[2].clone(), QueueActionStatus::Done),
        ]
    );
    assert!(results
        .iter()
        .all(|r| r.host == HOST && r.exit_code == Some(0)));
    assert!(results[0].output.contains("is now frozen"), "{results:?}");
    let listing = fleet.kit.bp();
    assert_eq!(frozen(&listing), 2, "{listing}");

    // The next snapshots show them frozen.
    let sink = fleet.sink.clone();
    eventually("a snapshot with two frozen messages", || {
        sink.last_snapshot().is_some_and(|s| s.totals().frozen == 2)
    })
    .await;
    fleet.stop_all().await;
    assert_eq!(fleet.node_metrics.jobs("run"), 1);
    assert_eq!(fleet.node_metrics.results_published(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_job_is_reported_expired_and_not_run() {
    let mut fleet = Fleet::start(Setup::default()).await;
    let ids = fleet
        .kit
        .submit_many(2, "alice@example.net", &["bob@example.com"]);
    let mut job = fleet.job(QueueAction::Remove, &[&ids[0], &ids[1]]);
    job.expires_at = Utc::now() - TimeDelta::seconds(1);

    fleet.control.submit(&job).await.unwrap();
    let results = fleet.results(&job, 2).await;

    assert!(
        results
            .iter()
            .all(|r| r.status == QueueActionStatus::Expired && r.exit_code.is_none()),
        "{results:?}"
    );
    assert!(results[0].output.contains("nothing was run"), "{results:?}");
    assert_eq!(fleet.kit.bpc(), 2);
    fleet.stop_all().await;
    assert_eq!(fleet.node_metrics.jobs("expired"), 1);
    assert_eq!(fleet.node_metrics.jobs("run"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_another_host_are_ignored() {
    let mut fleet = Fleet::start(Setup {
        command_partitions: 3,
        ..Setup::default()
    })
    .await;
    let ids = fleet
        .kit
        .submit_many(2, "alice@example.net", &["bob@example.com"]);

    // Keyed by the other host, and keyed by this one but naming the
    // other: neither runs here.
    let mut elsewhere = fleet.job(QueueAction::Freeze, &[&ids[0]]);
    elsewhere.host = "elsewhere.test".to_string();
    fleet.control.submit(&elsewhere).await.unwrap();
    let mislabelled = QueueCommand::Job(elsewhere.clone()).encode().unwrap();
    let topic = fleet.command_topic.clone();
    fleet.produce(&topic, HOST, &mislabelled).await;
    let metrics = fleet.node_metrics.clone();
    eventually("two commands of another host", || {
        metrics.commands_received("other_host") == 2
    })
    .await;

    // This host's own job still runs.
    let own = fleet.job(QueueAction::Freeze, &[&ids[1]]);
    fleet.control.submit(&own).await.unwrap();
    fleet.results(&own, 1).await;
    let listing = fleet.kit.bp();
    assert_eq!(frozen(&listing), 1, "{listing}");
    assert!(fleet.sink.results_of(&elsewhere.job_id).is_empty());
    fleet.stop_all().await;
    assert_eq!(fleet.node_metrics.jobs("run"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_read_again_after_its_results_is_not_run_twice() {
    let mut fleet = Fleet::start(Setup::default()).await;
    let ids = fleet
        .kit
        .submit_many(1, "alice@example.net", &["bob@example.com"]);
    let job = fleet.job(QueueAction::Freeze, &[&ids[0]]);
    fleet.control.submit(&job).await.unwrap();
    fleet.results(&job, 1).await;
    fleet.stop_all().await;

    // A node whose offsets were lost (a new group) with the same state
    // directory reads the job again: it was finished, so it is skipped.
    // Run again, Exim would refuse to freeze a frozen message and report
    // it failed.
    let setup = Setup::default();
    fleet.start_node(&setup, Some(format!("{}-again", fleet.command_topic)));
    fleet.start_consumer();
    let metrics = fleet.node_metrics.clone();
    eventually("the job read again", || metrics.jobs("repeated") == 1).await;
    let marker = fleet.job(QueueAction::Thaw, &[&ids[0]]);
    fleet.control.submit(&marker).await.unwrap();
    fleet.results(&marker, 1).await;
    fleet.stop_all().await;

    let results = fleet.sink.results_of(&job.job_id);
    assert!(
        results.iter().all(|r| r.status == QueueActionStatus::Done),
        "{results:?}"
    );
    assert_eq!(fleet.node_metrics.jobs("run"), 2);
}

// ---------------------------------------------------------------------
// Views

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_request_returns_what_exim_prints() {
    let mut fleet = Fleet::start(Setup::default()).await;
    let ids = fleet
        .kit
        .submit_many(1, "alice@example.net", &["bob@example.com"]);
    let id: MessageId = ids[0].parse().unwrap();

    let headers = fleet
        .control
        .view(HOST, id, MessageView::Headers, PATIENCE)
        .await
        .expect("the headers");
    assert_eq!(headers.view, MessageView::Headers);
    assert!(headers.text.contains("Subject: queue test"), "{headers:?}");
    assert!(headers.text.contains("<alice@example.net>"), "{headers:?}");
    assert!(!headers.truncated);

    let body = fleet
        .control
        .view(HOST, id, MessageView::Body, PATIENCE)
        .await
        .unwrap();
    assert_eq!(body.text, "Message 0.\n");

    let gone: MessageId = "1xZbZZ-0007ZZ-2T".parse().unwrap();
    match fleet
        .control
        .view(HOST, gone, MessageView::Headers, PATIENCE)
        .await
    {
        Err(ControlError::NotQueued { host, id }) => assert_eq!((host.as_str(), id), (HOST, gone)),
        other => panic!("{other:?}"),
    }
    fleet.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_nobody_answers_says_the_node_may_be_down() {
    let mut fleet = Fleet::start(Setup::default()).await;
    let id: MessageId = "1xZbZZ-0007ZZ-2T".parse().unwrap();
    let error = fleet
        .control
        .view("nowhere.test", id, MessageView::Log, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(error, ControlError::NoReply { .. }), "{error:?}");
    assert!(error.to_string().contains("may be down"), "{error}");
    fleet.stop_all().await;
}

// ---------------------------------------------------------------------
// Bad bytes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_either_topic_is_reported_and_skipped() {
    let mut fleet = Fleet::start(Setup::default()).await;
    let ids = fleet
        .kit
        .submit_many(1, "alice@example.net", &["bob@example.com"]);
    let (queue_topic, command_topic) = (fleet.queue_topic.clone(), fleet.command_topic.clone());

    fleet
        .produce(&command_topic, HOST, b"\xff\x00 not a command")
        .await;
    fleet
        .produce(&command_topic, HOST, b"EPC1J{\"job_id\":")
        .await;
    fleet.produce(&queue_topic, HOST, b"EPQ9S{}").await;
    let view = QueueCommand::View(ViewRequest {
        request_id: "r".into(),
        host: HOST.into(),
        id: ids[0].parse().unwrap(),
        view: MessageView::Log,
        expires_at: Utc::now(),
    });
    fleet
        .produce(&queue_topic, HOST, &view.encode().unwrap())
        .await;
    let (node, consumer) = (fleet.node_metrics.clone(), fleet.consumer_metrics.clone());
    eventually("the garbage to be reported", || {
        node.commands_received("undecodable") == 2 && consumer.records("undecodable") == 2
    })
    .await;

    // Both sides go on working.
    let job = fleet.job(QueueAction::Freeze, &[&ids[0]]);
    fleet.control.submit(&job).await.unwrap();
    let results = fleet.results(&job, 1).await;
    assert_eq!(results[0].status, QueueActionStatus::Done);
    fleet.stop_all().await;
}
