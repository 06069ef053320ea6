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

use anyhow::{bail, Context};
use exim_pilot_api::config::{Network, TlsFiles};
use exim_pilot_api::queue::QueueControl;
use exim_pilot_api::ApiConfig;
use exim_pilot_ingest::queue::control::ControlConfig;
use exim_pilot_store::{ClickHouseStore, Store};

use super::common;
use super::queue::FleetQueue;
use crate::config::{Config, ServeSection};
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

    /// An origin (https://console.example.com) whose web pages may call
    /// POST /graphql and /export.csv (CORS, without cookies); repeat for
    /// several. None by default: browsers then allow the API's own origin
    /// only.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,

    /// Serve HTTPS with this certificate chain (PEM, the server's own
    /// certificate first); give --tls-key with it.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Seconds a client has to send a request's headers, and then as long
    /// for its body [default: 15].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    read_timeout: Option<u64>,

    /// Seconds a write to a client may stall before the connection is
    /// closed [default: 15].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout: Option<u64>,

    /// Seconds a kept-alive connection may wait for its next request
    /// [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: Option<u64>,

    /// Show viewers mail addresses with their local parts masked
    /// (`*5f0c2a91d4@example.com`, the same mark for the same mailbox);
    /// operators and admins see them whole.
    #[arg(long)]
    mask_viewer_addresses: bool,
}

impl ApiArgs {
    /// The API's settings: these options, else the configuration's
    /// `[serve]` section, else the defaults. The token signing secret
    /// comes from `EXIM_PILOT_JWT_SECRET` when set (every API process of
    /// a fleet must then have the same); otherwise a key is generated and
    /// kept in the store.
    pub fn config(&self, file: &ServeSection) -> anyhow::Result<ApiConfig> {
        let defaults = ApiConfig::default();
        let seconds = |option: Option<u64>, file: Option<u64>, default: Duration| {
            option.or(file).map_or(default, Duration::from_secs)
        };
        let trusted_proxies = if self.trusted_proxies.is_empty() {
            file.trusted_proxies
                .iter()
                .map(|p| p.parse::<Network>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()
                .context("serve.trusted_proxies")?
        } else {
            self.trusted_proxies.clone()
        };
        let cors_origins = if self.cors_origins.is_empty() {
            file.cors_origins.clone()
        } else {
            self.cors_origins.clone()
        };
        Ok(ApiConfig {
            trusted_proxies,
            graphiql: !self.no_graphiql && file.graphiql.unwrap_or(true),
            introspection: !self.no_introspection && file.introspection.unwrap_or(true),
            jwt_secret: std::env::var("EXIM_PILOT_JWT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
            cors_origins,
            tls: self.tls(file)?,
            read_timeout: seconds(
                self.read_timeout,
                file.read_timeout_s,
                defaults.read_timeout,
            ),
            write_timeout: seconds(
                self.write_timeout,
                file.write_timeout_s,
                defaults.write_timeout,
            ),
            idle_timeout: seconds(
                self.idle_timeout,
                file.idle_timeout_s,
                defaults.idle_timeout,
            ),
            mask_viewer_addresses: self.mask_viewer_addresses
                || file.mask_viewer_addresses.unwrap_or(false),
            ..defaults
        })
    }

    /// The TLS files: the options' pair, else the configuration's.
    fn tls(&self, file: &ServeSection) -> anyhow::Result<Option<TlsFiles>> {
        let pair = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => match (&file.tls_cert, &file.tls_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => bail!("serve.tls_cert and serve.tls_key go together: give both, or neither"),
            },
        };
        Ok(pair.map(|(cert, key)| TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }))
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

    /// The address to serve on, e.g. 127.0.0.1:8080. Default: the
    /// configuration's `serve.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]: queue actions
    /// and message views are sent to the mail servers through them.
    /// Default: the configuration's `kafka.brokers`.
    #[arg(long = "kafka", value_name = "BROKERS", env = "EXIM_PILOT_KAFKA")]
    brokers: Option<String>,

    /// The configuration file (its [serve] and [kafka] sections).
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
    let config = Config::load(args.config.as_deref())?;
    let api = args.api.config(&config.serve)?;
    let Some(listen) = args.listen.or(config.serve.listen) else {
        bail!("give the address to serve on: --listen ADDR, or listen in the [serve] section");
    };
    let rt = common::runtime()?;
    let store: Arc<dyn Store> = match &args.clickhouse {
        Some(url) => Arc::new(
            rt.block_on(ClickHouseStore::open(url, &args.database))
                .with_context(|| format!("cannot read the ClickHouse store at {url}"))?,
        ),
        None => common::open_existing_store(args.data.as_deref().unwrap_or(".".as_ref()))?,
    };
    let metrics = Metrics::new().context("cannot set up metrics")?;
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
    let scheme = if api.tls.is_some() { "https" } else { "http" };
    let state = exim_pilot_api::AppState {
        config: api,
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
        let (local, serving) = exim_pilot_api::bind(listen, state, shutdown).await?;
        eprintln!("exim-pilot: serving the GraphQL API on {scheme}://{local}/graphql");
        serving.await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
    }

    fn api(args: &[&str], file: &ServeSection) -> anyhow::Result<ApiConfig> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
        cli.api.config(file)
    }

    #[test]
    fn options_win_over_the_serve_section() {
        let file = ServeSection {
            cors_origins: vec!["https://file.example".into()],
            read_timeout_s: Some(5),
            idle_timeout_s: Some(90),
            tls_cert: Some("/file.crt".into()),
            tls_key: Some("/file.key".into()),
            mask_viewer_addresses: Some(true),
            graphiql: Some(false),
            ..ServeSection::default()
        };
        let config = api(&[], &file).unwrap();
        assert_eq!(config.cors_origins, ["https://file.example"]);
        assert_eq!(config.read_timeout, Duration::from_secs(5));
        assert_eq!(config.write_timeout, Duration::from_secs(15));
        assert_eq!(config.idle_timeout, Duration::from_secs(90));
        assert_eq!(
            config.tls.as_ref().unwrap().cert,
            PathBuf::from("/file.crt")
        );
        assert!(config.mask_viewer_addresses && !config.graphiql);

        let config = api(
            &[
                "--cors-origin",
                "https://a.example",
                "--cors-origin",
                "https://b.example",
                "--read-timeout",
                "2",
                "--tls-cert",
                "/opt.crt",
                "--tls-key",
                "/opt.key",
            ],
            &file,
        )
        .unwrap();
        assert_eq!(
            config.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.read_timeout, Duration::from_secs(2));
        assert_eq!(config.tls.unwrap().key, PathBuf::from("/opt.key"));

        let defaults = api(&[], &ServeSection::default()).unwrap();
        assert!(defaults.cors_origins.is_empty() && defaults.tls.is_none());
        assert!(!defaults.mask_viewer_addresses);
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert!(api(&["--read-timeout", "0"], &ServeSection::default()).is_err());
        assert!(api(&["--tls-key", "/k"], &ServeSection::default()).is_err());
    }
}
