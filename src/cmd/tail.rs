//! `exim-pilot tail`: the tailer node of fleet mode.
//!
//! Runs on each mail server: follows Exim's mainlog, rejectlog and
//! paniclog (through rotations, see the ingest crate) and publishes every
//! record to the raw topic in Kafka, where `exim-pilot process` picks them
//! up. The checkpoints move only past records the broker acknowledged (see
//! `exim_pilot_ingest::kafka`), so a crash or a broker outage loses
//! nothing: records are published at least once.
//!
//! Settings come from the `[tail]` and `[kafka]` sections of `--config`,
//! `EXIM_PILOT_TAIL_*` and `EXIM_PILOT_KAFKA_*` variables, and the options
//! below, the last winning (see `crate::config`). With `--listen`, the
//! process serves `/health`, `/ready` (503 while the broker leaves records
//! unacknowledged for more than [`READY_LAG`]) and `/metrics`.
//!
//! The queue side runs next to it when an Exim binary is found (or the
//! `[queue]` section asks for it; `--no-queue` switches it off): the
//! host's queue is listed every `--queue-interval` seconds and published
//! to the queue topic, and the queue jobs and view requests the API
//! writes to the command topic for this host are run with the local Exim,
//! their results published to the queue topic (see
//! `exim_pilot_ingest::queue::fleet`). The node notes the jobs it finished
//! next to the checkpoints, so a restart runs none twice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use exim_pilot_ingest::kafka::{KafkaConfig, PublishStats, Publisher, DEFAULT_TOPIC};
use exim_pilot_ingest::queue::fleet::{NodeConfig, NodeMetrics, QueueNode};
use exim_pilot_ingest::queue::{Exim, QueueMetrics, Snapshotter};
use exim_pilot_ingest::{FollowConfig, LogSpec, Tailer, TailerConfig};
use exim_pilot_schema::queue_wire::{DEFAULT_COMMAND_TOPIC, DEFAULT_QUEUE_TOPIC};
use tokio::sync::mpsc;

use super::common::{self, DEFAULT_DATA_DIR};
use super::queue::QueueArgs;
use super::standalone::{resolve_logs, watch_signals};
use crate::config::Config;
use crate::metrics::TailMetrics;

/// How long the oldest unacknowledged Kafka record may wait before
/// `/ready` says the process is not publishing.
const READY_LAG: Duration = Duration::from_secs(30);

/// Options of `exim-pilot tail`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// The configuration file (its [tail] and [kafka] sections).
    #[arg(long, value_name = "FILE", env = "EXIM_PILOT_CONFIG")]
    pub config: Option<PathBuf>,

    /// A log file, or a directory holding mainlog/rejectlog/paniclog.
    /// Repeat for several. Default: the configuration's, else Debian's
    /// /var/log/exim4/ or /var/log/exim/.
    #[arg(long = "log", value_name = "PATH")]
    pub logs: Vec<PathBuf>,

    /// Name of this mail server in the records (default: the machine's
    /// host name). It is also the Kafka key: keep it stable.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long = "kafka", value_name = "BROKERS")]
    pub brokers: Option<String>,

    /// The topic raw records go to [default: exim-pilot-raw].
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,

    /// Directory of the checkpoint files [default: exim-pilot-data/checkpoints].
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,

    /// On a first start, publish the rotated logs (mainlog.1,
    /// mainlog.2.gz...) before the live ones.
    #[arg(long)]
    pub backfill: bool,

    /// Serve /health, /ready and /metrics on this address, e.g.
    /// 127.0.0.1:9466.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Everything `tail` runs with, defaults applied.
#[derive(Debug)]
pub struct Settings {
    /// The host name; `None` means the machine's.
    pub host: Option<String>,
    /// The logs, as given (directories not yet expanded).
    pub logs: Vec<PathBuf>,
    /// The checkpoint directory.
    pub checkpoints: PathBuf,
    /// Read rotated logs first on a first start.
    pub backfill: bool,
    /// Where to serve the probes and metrics.
    pub listen: Option<SocketAddr>,
    /// The publisher's settings.
    pub kafka: KafkaConfig,
    /// The queue side's options, the configuration's applied.
    pub queue: QueueArgs,
    /// Where the queue side publishes and reads.
    pub queue_topic: String,
    /// Where queue jobs and view requests come from.
    pub command_topic: String,
    /// Further librdkafka consumer properties (the command topic's).
    pub consumer_options: Vec<(String, String)>,
}

impl Settings {
    /// Merges the configuration (file and environment) with the options.
    pub fn resolve(args: &Args, config: &Config) -> anyhow::Result<Settings> {
        let tail = &config.tail;
        let Some(brokers) = args
            .brokers
            .clone()
            .or_else(|| config.kafka.brokers.clone())
        else {
            bail!(
                "no Kafka broker given: use --kafka HOST:PORT, brokers in the [kafka] section \
                 of --config, or EXIM_PILOT_KAFKA_BROKERS"
            );
        };
        let topic = args
            .topic
            .clone()
            .or_else(|| config.kafka.topic.clone())
            .unwrap_or_else(|| DEFAULT_TOPIC.to_string());
        let mut kafka = KafkaConfig::new(brokers, topic);
        if let Some(bytes) = tail.max_batch_bytes {
            kafka.max_batch_bytes = bytes;
        }
        if let Some(records) = tail.max_batch_records {
            kafka.max_batch_records = records;
        }
        if let Some(ms) = tail.linger_ms {
            kafka.linger = Duration::from_millis(ms);
        }
        if let Some(bytes) = tail.max_in_flight_bytes {
            kafka.max_in_flight_bytes = bytes;
        }
        kafka.max_in_flight_bytes = kafka.max_in_flight_bytes.max(kafka.max_batch_bytes);
        kafka.properties = config
            .kafka
            .producer
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        Ok(Settings {
            host: args.host.clone().or_else(|| tail.host.clone()),
            logs: if args.logs.is_empty() {
                tail.logs.clone()
            } else {
                args.logs.clone()
            },
            checkpoints: args
                .checkpoints
                .clone()
                .or_else(|| tail.checkpoints.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR).join("checkpoints")),
            backfill: args.backfill || tail.backfill.unwrap_or(false),
            listen: args.listen.or(tail.listen),
            kafka,
            queue: args.queue.with_config(&config.queue),
            queue_topic: config
                .kafka
                .queue_topic
                .clone()
                .unwrap_or_else(|| DEFAULT_QUEUE_TOPIC.to_string()),
            command_topic: config
                .kafka
                .command_topic
                .clone()
                .unwrap_or_else(|| DEFAULT_COMMAND_TOPIC.to_string()),
            consumer_options: config
                .kafka
                .consumer
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let settings = Settings::resolve(&args, &config)?;
    let logs = resolve_logs(&settings.logs)?;

    let mut tailer = Tailer::new(TailerConfig {
        host: settings.host.clone(),
        logs: logs.iter().map(LogSpec::new).collect(),
        checkpoint_dir: Some(settings.checkpoints.clone()),
        follow: FollowConfig {
            backfill: settings.backfill,
            // A record must fit in one Kafka record: longer lines are cut.
            max_record_bytes: settings
                .kafka
                .max_batch_bytes
                .saturating_sub(1024)
                .max(1024),
            ..FollowConfig::default()
        },
    })
    .context("cannot follow the logs")?;
    let host = tailer.host().to_string();
    let mut publisher =
        Publisher::new(settings.kafka.clone(), &host).context("cannot publish to Kafka")?;

    match publisher.topic_exists(Duration::from_secs(5)) {
        Some(true) => {}
        Some(false) => eprintln!(
            "exim-pilot: warning: topic {} does not exist at {}; records wait until it is \
             created (the broker may not create topics on its own)",
            settings.kafka.topic, settings.kafka.brokers
        ),
        None => eprintln!(
            "exim-pilot: warning: no Kafka broker answers at {} yet; records wait until one does",
            settings.kafka.brokers
        ),
    }

    let rt = common::runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(&rt, stop.clone());
    let mut metrics = TailMetrics::new().context("cannot set up metrics")?;
    let server = match settings.listen {
        Some(addr) => Some(serve(&rt, addr, &metrics, publisher.stats(), stop.clone())?),
        None => None,
    };
    let queue_metrics =
        QueueMetrics::new(&metrics.registry).context("cannot set up the queue's metrics")?;
    let queue_node = match settings.queue.exim(&host, Some(queue_metrics))? {
        Some(exim) => Some(start_queue_node(
            &rt,
            exim,
            &settings,
            &metrics.registry,
            stop.clone(),
        )?),
        None => None,
    };

    eprintln!(
        "exim-pilot: following {} as host {host}, publishing to topic {} at {}",
        logs.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        settings.kafka.topic,
        settings.kafka.brokers,
    );
    let result = publisher.run(&mut tailer, &stop, |tailer, published| {
        metrics.update(&tailer.stats(), published)
    });

    stop.store(true, Ordering::Relaxed);
    let queue_failed = match queue_node {
        Some(node) => rt.block_on(node).unwrap_or(true),
        None => false,
    };
    if let Some(server) = server {
        rt.block_on(server)
            .context("the HTTP server stopped")?
            .context("the HTTP server failed")?;
    }
    result.context("cannot go on publishing")?;
    tailer
        .close()
        .context("cannot write the final checkpoints")?;
    if queue_failed {
        bail!("the queue side could not run (see above)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the queue side: listings every interval, published with the
/// results of the jobs run. The task ends once `stop` is set, and says
/// whether the node failed; a node that cannot start sets `stop`, so the
/// whole process ends with the error.
fn start_queue_node(
    rt: &tokio::runtime::Runtime,
    exim: Arc<Exim>,
    settings: &Settings,
    registry: &prometheus::Registry,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<bool>> {
    let mut config = NodeConfig::new(&settings.kafka.brokers, exim.host());
    config.queue_topic = settings.queue_topic.clone();
    config.command_topic = settings.command_topic.clone();
    config.producer_options = settings.kafka.properties.clone();
    config.consumer_options = settings.consumer_options.clone();
    config.state_dir = Some(settings.checkpoints.clone());
    let node = QueueNode::new(exim.clone(), config).with_metrics(
        NodeMetrics::new(registry).context("cannot set up the queue node's metrics")?,
    );
    eprintln!(
        "exim-pilot: listing the queue with {} every {} s, to topic {}; running queue jobs \
         from topic {}",
        exim.config().binary.display(),
        settings.queue.interval().as_secs(),
        settings.queue_topic,
        settings.command_topic
    );

    let (sender, receiver) = mpsc::channel(2);
    let snapshotter = Snapshotter::new(exim, settings.queue.interval());
    rt.spawn(snapshotter.run(sender, stopped(stop.clone())));
    Ok(rt.spawn(async move {
        match node.run(receiver, stopped(stop.clone())).await {
            Ok(()) => false,
            Err(error) => {
                eprintln!("exim-pilot: error: {error}");
                stop.store(true, Ordering::Relaxed);
                true
            }
        }
    }))
}

/// Completes once `stop` is set.
async fn stopped(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the health, readiness and metrics endpoints; they stop once
/// `stop` is set.
fn serve(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    metrics: &TailMetrics,
    published: Arc<PublishStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), exim_pilot_api::ServeError>>> {
    let ready: exim_pilot_api::ReadyCheck =
        Arc::new(move || match published.oldest_unsettled_age() {
            Some(age) if age > READY_LAG => Err(format!(
                "the broker has not acknowledged records for {} s",
                age.as_secs()
            )),
            _ => Ok(()),
        });
    let app = exim_pilot_api::probe_router(metrics.registry.clone(), ready);
    let shutdown = async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (local, serving) = rt.block_on(exim_pilot_api::bind_router(addr, app, shutdown))?;
    eprintln!("exim-pilot: serving /health, /ready and /metrics on http://{local}");
    Ok(rt.spawn(serving))
}
