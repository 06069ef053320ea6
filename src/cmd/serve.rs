//! `exim-pilot serve`: the API over a store another process fills.
//!
//! In fleet mode, processors write ClickHouse and any number of `serve`
//! processes answer the GraphQL API from it (`--clickhouse URL`); on one
//! machine it can also serve a data directory that `standalone` or
//! `import` fills (`--data DIR`). Users, sessions and the audit trail live
//! in the same store. Live subscriptions stay silent here: only the
//! process running the pipeline publishes what it commits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use exim_pilot_api::config::Network;
use exim_pilot_api::ApiConfig;
use exim_pilot_store::{ClickHouseStore, Store};

use super::common;
use crate::metrics::Metrics;

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
    let state = exim_pilot_api::AppState {
        config: args.api.config(),
        ..exim_pilot_api::AppState::new(store, metrics.registry.clone())
    };
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
