//! The HTTP side of exim-pilot: operational endpoints and the GraphQL API.
//!
//! Every long-running exim-pilot process (`standalone`, `serve`) serves,
//! on the address given with `--listen`:
//!
//! - `GET /health`: liveness, `200 ok` while the process runs;
//! - `GET /ready`: readiness, `200 ready` while the store answers, `503`
//!   with the store's error otherwise (`tail` and other processes without
//!   a store serve only these three, see [`probe_router`]);
//! - `GET /metrics`: the process's Prometheus metrics, text format;
//! - `POST /graphql`: queries and mutations (see [`http`]);
//! - `GET /graphql`: the GraphiQL explorer (can be switched off);
//! - `/graphql/ws`: subscriptions over WebSocket (see [`ws`]);
//! - `POST /export.csv`: one query's rows as CSV, streamed (see [`export`]).
//!
//! Input: the process's [`Store`], its Prometheus [`Registry`], the
//! broadcast of committed batches ([`live`]: sent by the pipeline where
//! it runs, by a poller of the store's live feed ([`feed`]) in `serve`),
//! and where Exim can be reached its [`QueueControl`].
//! Output: HTTP.
//!
//! - [`auth`]: users, passwords, tokens, login limits (counted in the
//!   store, shared by every API process of a fleet), the audit of it all.
//! - [`feed`]: live data for processes that do not run the pipeline.
//! - [`graphql`]: the schema and its resolvers.
//! - [`queue`]: the interface to whatever acts on Exim's queues
//!   ([`QueueControl`]), and the audit of queue jobs' results.
//! - [`config`]: the settings.
//!
//! Known gaps: TLS is left to a reverse proxy; there is no CORS support
//! (browsers may only use the API from the same origin); read and idle
//! timeouts are not set (each request has a time limit); metrics are not
//! broken down by GraphQL operation yet; viewers see full addresses.
//!
//! A process that does not run the pipeline (`serve`) learns what was
//! committed by polling the store ([`feed`]): its subscriptions see a
//! commit up to one poll interval late.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use exim_pilot_store::Store;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::broadcast;

pub mod auth;
pub mod config;
pub mod export;
pub mod feed;
pub mod graphql;
pub mod http;
pub mod live;
pub mod queue;
pub mod ws;

pub use config::ApiConfig;
pub use live::LiveBatch;
pub use queue::{QueueControl, QueueControlError};

/// What the process hands the server.
#[derive(Clone)]
pub struct AppState {
    /// The store the process writes to or reads from.
    pub store: Arc<dyn Store>,
    /// The process's metrics.
    pub registry: Registry,
    /// Committed batches, for subscriptions ([`live::channel`]).
    pub live: broadcast::Sender<Arc<LiveBatch>>,
    /// The API's settings.
    pub config: ApiConfig,
    /// What acts on the mail servers' queues; `None` where nothing can
    /// (queue actions and message views are then refused).
    pub queue: Option<Arc<dyn QueueControl>>,
}

impl AppState {
    /// A state with default settings, a channel nobody publishes on and
    /// no queue control.
    pub fn new(store: Arc<dyn Store>, registry: Registry) -> AppState {
        AppState {
            store,
            registry,
            live: live::channel(),
            config: ApiConfig::default(),
            queue: None,
        }
    }
}

/// What the handlers share once the server is set up.
pub struct Served {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The metrics.
    pub registry: Registry,
    /// The settings.
    pub config: ApiConfig,
    /// The resolvers' data.
    pub api: Arc<graphql::Api>,
    /// The schema.
    pub schema: graphql::ApiSchema,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}; choose another address with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The token signing keys could not be loaded from the store.
    #[error("cannot load the token signing keys: {0}")]
    Keys(#[source] auth::TokenError),
    /// The server stopped with an error.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Sets up authentication and the schema over the state's store.
pub async fn prepare(state: AppState) -> Result<Arc<Served>, ServeError> {
    let keys = auth::Keyring::load(&*state.store, state.config.jwt_secret.as_deref())
        .await
        .map_err(ServeError::Keys)?;
    let auth = Arc::new(auth::Auth::new(
        Arc::clone(&state.store),
        keys,
        state.config.auth.clone(),
    ));
    let api = Arc::new(graphql::Api {
        store: Arc::clone(&state.store),
        auth,
        live: state.live.clone(),
        queue: state.queue.clone(),
        config: state.config.clone(),
    });
    let schema = graphql::schema(Arc::clone(&api), state.config.introspection);
    Ok(Arc::new(Served {
        store: state.store,
        registry: state.registry,
        config: state.config,
        api,
        schema,
    }))
}

/// The routes.
pub fn router(served: Arc<Served>) -> Router {
    let limit = served.config.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/graphql", get(http::graphiql).post(http::post))
        .route("/graphql/ws", get(ws::upgrade))
        .route("/export.csv", axum::routing::post(export::post))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(served)
}

/// Headers every answer carries: no sniffing, no framing, no referrer, no
/// caching of API answers.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What `/ready` asks in a process without a store (`exim-pilot tail`):
/// `Err` with the reason when the process cannot do its work now.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The routes of a process without a store: `/health`, `/ready` (answered
/// by `ready`) and `/metrics`.
pub fn probe_router(registry: Registry, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/health", get(health))
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { encode_metrics(&registry) }
            }),
        )
}

/// Binds `addr` and returns the bound address (useful with port 0) and a
/// future that serves until `shutdown` completes.
pub async fn bind(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ServeError>>,
    ),
    ServeError,
> {
    let served = prepare(state).await?;
    bind_router(addr, router(served), shutdown).await
}

/// [`bind`] for any router, such as [`probe_router`]'s.
pub async fn bind_router(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ServeError>>,
    ),
    ServeError,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(addr = %local, "Serving HTTP");
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let serve = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    };
    Ok((local, serve))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(served): State<Arc<Served>>) -> impl IntoResponse {
    match served.store.hosts().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(served): State<Arc<Served>>) -> impl IntoResponse {
    encode_metrics(&served.registry)
}

fn encode_metrics(registry: &Registry) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            format!("cannot encode metrics: {e}\n").into_bytes(),
        ),
    }
}
