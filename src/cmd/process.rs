//! `exim-pilot process`: the processor of fleet mode.
//!
//! The tailers of the mail servers publish their log records to a Kafka
//! topic; any number of `exim-pilot process` instances with the same
//! `--group` share its partitions, parse and correlate the records and
//! write them to the store. Offsets are committed only once the store has
//! acknowledged the batch holding the records, and each partition's
//! correlator state is stored with its data, so an instance may be killed
//! at any moment: another one (or the same, restarted) goes on from what
//! was stored, losing and doubling nothing. See
//! `exim_pilot_processor::fleet` for how.
//!
//! A processor that dies without leaving the group keeps its partitions
//! until the broker gives up on it, after `session.timeout.ms` (librdkafka
//! default 45 s); lower it with `--kafka-option` for a quicker takeover.
//!
//! The store is a ClickHouse database with `--clickhouse` (created and
//! brought up to date at startup), else the SQLite store in `--data`
//! (several instances may share one data directory: SQLite serialises
//! their writes). `--listen` serves `/health`, `/ready` and `/metrics` as
//! `standalone` does.
//!
//! Each processor also reads the queue topic, where the mail servers'
//! queue nodes publish their queue listings and the results of queue
//! jobs, as the consumer group `<group>-queue`, and stores them (results
//! audited once each) unless `--no-queue` says otherwise (see
//! `exim_pilot_processor::fleet::queue`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::fleet::queue::{
    QueueConsumer, QueueConsumerConfig, QueueConsumerMetrics, QueueSink,
};
use exim_pilot_processor::fleet::{FleetConfig, FleetMetrics, Processor};
use exim_pilot_processor::parse::ParseOptions;
use exim_pilot_schema::queue::{QueueActionResult, QueueSnapshot};
use exim_pilot_schema::queue_wire::DEFAULT_QUEUE_TOPIC;
use exim_pilot_schema::Zone;
use exim_pilot_store::{ClickHouseStore, Store, StoreError};

use super::common::{self, thousands};
use crate::config::Config;

/// The raw topic's usual name.
pub const DEFAULT_TOPIC: &str = "exim-pilot-raw";

/// The processors' usual consumer group.
pub const DEFAULT_GROUP: &str = "exim-pilot-process";

/// Where the records come from and where they go; shared with `replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// The configuration file (its [kafka], [process] and [clickhouse]
    /// sections); options given here win over it.
    #[arg(long, value_name = "FILE", env = "EXIM_PILOT_CONFIG")]
    config: Option<PathBuf>,

    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]. Default: the
    /// configuration's `kafka.brokers`.
    #[arg(long = "kafka", value_name = "BROKERS", env = "EXIM_PILOT_KAFKA")]
    brokers: Option<String>,

    /// The topic the tailers publish to [default: exim-pilot-raw].
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,

    /// The consumer group; processors of one group share the partitions
    /// [default: exim-pilot-process].
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,

    /// A librdkafka client setting (security.protocol=ssl,
    /// session.timeout.ms=10000...); repeat for several. Added to the
    /// configuration's `[kafka.consumer]`.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    kafka_options: Vec<(String, String)>,

    /// Data directory of the SQLite store, when no ClickHouse server is
    /// given [default: ./exim-pilot-data].
    #[arg(long, value_name = "DIR", env = "EXIM_PILOT_DATA")]
    data: Option<PathBuf>,

    /// Write to a ClickHouse server (`http://HOST:8123`) instead of the
    /// SQLite store in --data; the database is created and its tables
    /// brought up to date when needed. Default: the configuration's
    /// `clickhouse.url`.
    #[arg(
        long,
        value_name = "URL",
        env = "EXIM_PILOT_CLICKHOUSE",
        conflicts_with = "data"
    )]
    clickhouse: Option<String>,

    /// The ClickHouse database (with --clickhouse) [default: exim_pilot].
    #[arg(long, value_name = "NAME")]
    database: Option<String>,

    /// Zone of log times written without an offset: `local`, `utc`, or an
    /// offset such as `+0100`. Exim writes the server's local time unless
    /// `log_timezone` is set [default: local].
    #[arg(
        long,
        visible_alias = "zone",
        value_name = "ZONE",
        allow_hyphen_values = true,
        value_parser = common::parse_zone
    )]
    timezone: Option<Zone>,

    /// The year RFC 3164 syslog stamps, which carry none, start in; a log
    /// that runs past New Year moves to the next year there.
    #[arg(long, value_name = "YEAR")]
    syslog_year: Option<i32>,
}

/// Where a processor's settings ended up, from the defaults, the
/// configuration file, its environment variables and the options, the
/// last one winning.
#[derive(Debug, Clone)]
pub struct Fleet {
    brokers: String,
    topic: String,
    group: String,
    kafka_options: Vec<(String, String)>,
    store: StoreChoice,
    timezone: Zone,
    syslog_year: Option<i32>,
    /// The configuration's `process.listen`.
    pub listen: Option<SocketAddr>,
    /// The configuration's `process.batch_records`.
    pub batch_records: Option<usize>,
    /// The configuration's `process.batch_wait_ms`.
    pub batch_wait: Option<Duration>,
    /// The configuration's `process.batch_interval_ms`.
    pub batch_interval: Option<Duration>,
    /// The configuration's `process.state_interval_ms`.
    pub state_interval: Option<Duration>,
    /// The topic of queue listings and job results.
    queue_topic: String,
}

#[derive(Debug, Clone)]
enum StoreChoice {
    Sqlite(PathBuf),
    ClickHouse { url: String, database: String },
}

impl FleetArgs {
    /// Merges the configuration (file and environment) with the options.
    pub fn resolve(&self) -> anyhow::Result<Fleet> {
        let config = Config::load(self.config.as_deref())?;
        let brokers = self
            .brokers
            .clone()
            .or_else(|| config.kafka.brokers.clone())
            .context(
                "no Kafka brokers: give --kafka HOST:PORT, kafka.brokers in the file of \
                 --config, or EXIM_PILOT_KAFKA_BROKERS",
            )?;
        let topic = self
            .topic
            .clone()
            .or_else(|| config.kafka.topic.clone())
            .unwrap_or_else(|| DEFAULT_TOPIC.to_string());
        let group = self
            .group
            .clone()
            .or_else(|| config.process.group.clone())
            .unwrap_or_else(|| DEFAULT_GROUP.to_string());
        let mut kafka_options: Vec<(String, String)> = config
            .kafka
            .consumer
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kafka_options.extend(self.kafka_options.iter().cloned());

        let database = self
            .database
            .clone()
            .or_else(|| config.clickhouse.database.clone())
            .unwrap_or_else(|| exim_pilot_store::clickhouse::DEFAULT_DATABASE.to_string());
        let store = match (&self.clickhouse, &self.data, &config.clickhouse.url) {
            (Some(url), _, _) => StoreChoice::ClickHouse {
                url: url.clone(),
                database,
            },
            (None, Some(dir), _) => StoreChoice::Sqlite(dir.clone()),
            (None, None, Some(url)) => StoreChoice::ClickHouse {
                url: url.clone(),
                database,
            },
            (None, None, None) => StoreChoice::Sqlite(PathBuf::from(common::DEFAULT_DATA_DIR)),
        };

        let timezone = match (self.timezone, &config.process.timezone) {
            (Some(zone), _) => zone,
            (None, Some(text)) => common::parse_zone(text)
                .map_err(|e| anyhow::anyhow!("process.timezone in the configuration: {e}"))?,
            (None, None) => Zone::Local,
        };
        Ok(Fleet {
            brokers,
            topic,
            group,
            kafka_options,
            store,
            timezone,
            syslog_year: self.syslog_year.or(config.process.syslog_year),
            listen: config.process.listen,
            batch_records: config.process.batch_records,
            batch_wait: config.process.batch_wait_ms.map(Duration::from_millis),
            batch_interval: config.process.batch_interval_ms.map(Duration::from_millis),
            state_interval: config.process.state_interval_ms.map(Duration::from_millis),
            queue_topic: config
                .kafka
                .queue_topic
                .clone()
                .unwrap_or_else(|| DEFAULT_QUEUE_TOPIC.to_string()),
        })
    }
}

impl Fleet {
    /// The processor's configuration.
    pub fn config(&self) -> FleetConfig {
        let defaults = FleetConfig::new(&self.brokers, &self.topic, &self.group);
        FleetConfig {
            client_options: self.kafka_options.clone(),
            zone: self.timezone,
            parse: ParseOptions {
                syslog_year: self.syslog_year,
            },
            correlator: CorrelatorConfig::default(),
            batch_records: self.batch_records.unwrap_or(defaults.batch_records),
            batch_wait: self.batch_wait.unwrap_or(defaults.batch_wait),
            batch_interval: self.batch_interval.unwrap_or(defaults.batch_interval),
            state_interval: self.state_interval.unwrap_or(defaults.state_interval),
            ..defaults
        }
    }

    /// The store the processors write to: the ClickHouse database when
    /// one is given, else the SQLite store in the data directory. The
    /// store's work runs on `rt`.
    pub fn open_store(&self, rt: &tokio::runtime::Runtime) -> anyhow::Result<Arc<dyn Store>> {
        match &self.store {
            StoreChoice::ClickHouse { url, database } => {
                let store = rt
                    .block_on(ClickHouseStore::connect(url, database))
                    .with_context(|| format!("cannot open the ClickHouse store at {url}"))?;
                Ok(Arc::new(store))
            }
            StoreChoice::Sqlite(dir) => Ok(common::open_store(dir)?),
        }
    }

    /// The queue consumer's configuration.
    pub fn queue_config(&self) -> QueueConsumerConfig {
        QueueConsumerConfig {
            topic: self.queue_topic.clone(),
            client_options: self.kafka_options.clone(),
            ..QueueConsumerConfig::new(&self.brokers, &self.group)
        }
    }

    /// The store, as messages name it.
    pub fn store_name(&self) -> String {
        match &self.store {
            StoreChoice::ClickHouse { url, database } => format!("database {database} of {url}"),
            StoreChoice::Sqlite(dir) => dir.display().to_string(),
        }
    }
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Options of `exim-pilot process`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    fleet: FleetArgs,

    /// Serve /health, /ready and /metrics on this address, e.g.
    /// 127.0.0.1:9466.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,

    /// Do not read the queue topic (queue listings and job results are
    /// then stored by no one unless another processor group reads them).
    #[arg(long)]
    no_queue: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fleet = args.fleet.resolve()?;
    let config = fleet.config();
    let listen = args.listen.or(fleet.listen);
    let queue = (!args.no_queue).then(|| fleet.queue_config());
    run_processor(&fleet, config, queue, listen, args.quiet)
}

/// Runs a processor until it is stopped (SIGINT, SIGTERM) or, when the
/// configuration says so, until it has caught up.
pub fn run_processor(
    fleet: &Fleet,
    config: FleetConfig,
    queue: Option<QueueConsumerConfig>,
    listen: Option<SocketAddr>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let rt = common::runtime()?;
    let store = fleet.open_store(&rt)?;
    let stop = Arc::new(AtomicBool::new(false));
    super::standalone::watch_signals(&rt, stop.clone());

    let registry = prometheus::Registry::new();
    let metrics = FleetMetrics::new(&registry).context("cannot set up metrics")?;
    let server = match listen {
        Some(addr) => Some(serve(
            &rt,
            addr,
            store.clone(),
            registry.clone(),
            stop.clone(),
        )?),
        None => None,
    };

    if !quiet {
        eprintln!(
            "exim-pilot: processing topic {} of {} as group {}, storing in {}",
            config.topic,
            config.brokers,
            config.group,
            fleet.store_name()
        );
    }
    let queue = match queue {
        Some(queue) => Some(start_queue_consumer(
            &rt,
            queue,
            store.clone(),
            &registry,
            stop.clone(),
            quiet,
        )?),
        None => None,
    };
    let mut processor = Processor::new(config, store, rt.handle().clone(), metrics.clone())?;
    let result = processor.run(&stop);
    drop(processor);

    stop.store(true, Ordering::Relaxed);
    if let Some(queue) = queue {
        rt.block_on(queue).context("the queue consumer stopped")?;
    }
    if let Some(server) = server {
        rt.block_on(server)
            .context("the HTTP server stopped")?
            .context("the HTTP server failed")?;
    }
    result?;
    if !quiet {
        eprintln!(
            "exim-pilot: processed {} records in {} batches",
            thousands(metrics.records_processed()),
            thousands(metrics.batches_committed())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores queue listings and job results from the queue topic.
struct StoreQueueSink(Arc<dyn Store>);

#[async_trait]
impl QueueSink for StoreQueueSink {
    type Error = StoreError;

    async fn snapshot(&self, snapshot: &QueueSnapshot) -> Result<(), StoreError> {
        self.0.save_queue_snapshot(snapshot).await
    }

    async fn results(&self, results: &[QueueActionResult]) -> Result<(), StoreError> {
        exim_pilot_api::queue::record_results(&*self.0, results).await
    }
}

/// Starts reading the queue topic into the store; the task ends once
/// `stop` is set.
fn start_queue_consumer(
    rt: &tokio::runtime::Runtime,
    config: QueueConsumerConfig,
    store: Arc<dyn Store>,
    registry: &prometheus::Registry,
    stop: Arc<AtomicBool>,
    quiet: bool,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let metrics = QueueConsumerMetrics::new(registry)
        .context("cannot set up the queue consumer's metrics")?;
    if !quiet {
        eprintln!(
            "exim-pilot: storing queue listings and job results from topic {} as group {}",
            config.topic, config.group
        );
    }
    let consumer = {
        let _runtime = rt.enter();
        QueueConsumer::new(config, StoreQueueSink(store))?.with_metrics(metrics)
    };
    let stopped = async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    Ok(rt.spawn(consumer.run(stopped)))
}

/// Starts the health, readiness and metrics endpoints; they stop once
/// `stop` is set.
fn serve(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    store: Arc<dyn Store>,
    registry: prometheus::Registry,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), exim_pilot_api::ServeError>>> {
    let state = exim_pilot_api::AppState::new(store, registry);
    let shutdown = async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    let (local, serving) = rt.block_on(exim_pilot_api::bind(addr, state, shutdown))?;
    eprintln!("exim-pilot: serving /health, /ready and /metrics on http://{local}");
    Ok(rt.spawn(serving))
}
