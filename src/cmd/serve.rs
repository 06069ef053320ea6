//! `exim-pilot serve`: the API over a store another process fills.
//!
//! In fleet mode, processors write ClickHouse and any number of `serve`
//! processes answer the GraphQL API from it (`--clickhouse URL`); on one
//! machine it can also serve a data directory that `standalone` or
//! `import` fills (`--data DIR`). Users, sessions, the audit trail and
//! the login limits live in the same store, so that every `serve` of a
//! fleet counts failed logins made through any of them.
//!
//! Live subscriptions (records and lifecycle changes) are fed from the
//! store: a task polls the store's live feed every `--live-interval`
//! milliseconds (default 1000) and hands what the processors committed
//! since to the subscriptions, which filter it as in `standalone` (see
//! `exim_pilot_api::feed`, where polling the store rather than reading
//! Kafka is argued). Subscribers see a commit up to one interval late;
//! while nobody subscribes, a poll only moves past what was stored,
//! without reading the records and lifecycles themselves.
//!
//! With `--kafka` (or `kafka.brokers` in `--config`), queue actions and
//! views of queued messages go to the command topic, where each mail
//! server's `exim-pilot tail` takes those of its host; the results come
//! back through `exim-pilot process` into the store. Without it, the API
//! shows the queue but refuses to act on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use exim_pilot_api::config::Network;
use exim_pilot_api::queue::QueueControl;
use exim_pilot_api::ApiConfig;
use exim_pilot_ingest::queue::control::ControlConfig;
use exim_pilot_store::{ClickHouseStore, Store};

use super::common;
use super::queue::FleetQueue;
use crate::config::Config;
use crate::metrics::Metrics;

/// Configuration properties as librdkafka takes them.
fn options(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The API's options, shared by `serve` and `standalone`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// A proxy (address or network) whose X-Forwarded-For header is
    /// believed; repeat for several.
    #[arg(long = "trusted-proxy", value_name = "NET")]
    trusted_proxies: Vec<Network>,

    /// Do not serve the GraphiQL explorer at GET /graphql.
    #[arg(long)]
    no_graphiql: bool,

    /// Refuse GraphQL introspection queries.
    #[arg(long)]
    no_introspection: bool,
}

impl ApiArgs {
    /// The API's settings. The token signing secret comes from
    /// `EXIM_PILOT_JWT_SECRET` when set (every API process of a fleet
    /// must then have the same); otherwise a key is generated and kept in
    /// the store.
    pub fn config(&self) -> ApiConfig {
        ApiConfig {
            trusted_proxies: self.trusted_proxies.clone(),
            graphiql: !self.no_graphiql,
            introspection: !self.no_introspection,
            jwt_secret: std::env::var("EXIM_PILOT_JWT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
            ..ApiConfig::default()
        }
    }
}

/// Options of `exim-pilot serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serve the store in this data directory.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "clickhouse",
        required_unless_present = "clickhouse"
    )]
    data: Option<PathBuf>,

    /// Serve fleet mode's store on this ClickHouse server (`http://HOST:8123`).
    #[arg(long, value_name = "URL")]
    clickhouse: Option<String>,

    /// The ClickHouse database (with --clickhouse).
    #[arg(long, value_name = "NAME", default_value = exim_pilot_store::clickhouse::DEFAULT_DATABASE)]
    database: String,

    /// The address to serve on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]: queue actions
    /// and message views are sent to the mail servers through them.
    /// Default: the configuration's `kafka.brokers`.
    #[arg(long = "kafka", value_name = "BROKERS", env = "EXIM_PILOT_KAFKA")]
    brokers: Option<String>,

    /// The configuration file (its [kafka] section).
    #[arg(long, value_name = "FILE", env = "EXIM_PILOT_CONFIG")]
    config: Option<PathBuf>,

    /// Seconds a view of a queued message waits for the mail server's
    /// answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    view_timeout: u64,

    /// Milliseconds between two polls of the store for live
    /// subscriptions; 0 leaves subscriptions silent.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        env = "EXIM_PILOT_LIVE_INTERVAL_MS"
    )]
    live_interval: u64,

    #[command(flatten)]
    api: ApiArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = common::runtime()?;
    let store: Arc<dyn Store> = match &args.clickhouse {
        Some(url) => Arc::new(
            rt.block_on(ClickHouseStore::open(url, &args.database))
                .with_context(|| format!("cannot read the ClickHouse store at {url}"))?,
        ),
        None => common::open_existing_store(args.data.as_deref().unwrap_or(".".as_ref()))?,
    };
    let metrics = Metrics::new().context("cannot set up metrics")?;
    let config = Config::load(args.config.as_deref())?;
    let queue = match args.brokers.clone().or(config.kafka.brokers.clone()) {
        Some(brokers) => {
            let kafka = &config.kafka;
            let mut control = ControlConfig::new(&brokers);
            if let Some(topic) = &kafka.queue_topic {
                control.queue_topic = topic.clone();
            }
            if let Some(topic) = &kafka.command_topic {
                control.command_topic = topic.clone();
            }
            control.producer_options = options(&kafka.producer);
            control.consumer_options = options(&kafka.consumer);
            eprintln!(
                "exim-pilot: queue actions go to topic {} at {brokers}",
                control.command_topic
            );
            let timeout = Duration::from_secs(args.view_timeout.max(1));
            let fleet = rt.block_on(FleetQueue::start(control, timeout));
            Some(Arc::new(fleet) as Arc<dyn QueueControl>)
        }
        None => None,
    };
    let state = exim_pilot_api::AppState {
        config: args.api.config(),
        queue,
        ..exim_pilot_api::AppState::new(store, metrics.registry.clone())
    };
    if args.live_interval > 0 {
        let interval = Duration::from_millis(args.live_interval);
        let _feed = rt.enter();
        exim_pilot_api::feed::spawn(Arc::clone(&state.store), state.live.clone(), interval);
    }
    rt.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let (local, serving) = exim_pilot_api::bind(args.listen, state, shutdown).await?;
        eprintln!("exim-pilot: serving the GraphQL API on http://{local}/graphql");
        serving.await
    })
    .context("the HTTP server failed")?;
    Ok(ExitCode::SUCCESS)
}
