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
//! Output: HTTP/1.1, or HTTPS with a certificate and key given ([`tls`]).
//!
//! - [`server`]: the listener and each connection's time limits (headers
//!   and body within the read limit, writes that stall, idle kept-alive
//!   connections).
//! - [`cors`]: which other origins' pages may call the API.
//! - [`auth`]: users, passwords, tokens, login limits (counted in the
//!   store, shared by every API process of a fleet), the audit of it all.
//! - [`feed`]: live data for processes that do not run the pipeline.
//! - [`graphql`]: the schema and its resolvers; [`metrics`] measures its
//!   operations and [`mask`] masks viewers' addresses, both as schema
//!   extensions.
//! - [`queue`]: the interface to whatever acts on Exim's queues
//!   ([`QueueControl`]), and the audit of queue jobs' results.
//! - [`config`]: the settings.
//!
//! Known gaps: HTTP/2 is not served (put a proxy in front for it); the
//! certificate is read once at start, so a renewed one takes a restart;
//! TLS runs on ring, which has no post-quantum key exchange; masking
//! hides the local parts of addresses, not names written elsewhere (a
//! subject or an SMTP reply that quotes a person's name stays as logged).

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
pub mod cors;
pub mod export;
pub mod feed;
pub mod graphql;
pub mod http;
pub mod live;
pub mod mask;
pub mod metrics;
pub mod queue;
pub mod server;
pub mod tls;
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
    /// The origins allowed cross-origin requests.
    pub origins: Arc<cors::Origins>,
    /// The operations each user runs over WebSockets now.
    pub ws_users: ws::UserCounts,
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
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// An origin allowed for CORS is malformed.
    #[error(transparent)]
    Cors(#[from] cors::CorsError),
    /// The API's metrics could not be registered.
    #[error("cannot register the API's metrics: {0}")]
    Metrics(#[source] prometheus::Error),
}

/// Sets up authentication, metrics and the schema over the state's
/// store.
pub async fn prepare(state: AppState) -> Result<Arc<Served>, ServeError> {
    let origins = Arc::new(cors::Origins::parse(&state.config.cors_origins)?);
    let metrics = metrics::ApiMetrics::register(&state.registry).map_err(ServeError::Metrics)?;
    let keys = auth::Keyring::load(&*state.store, state.config.jwt_secret.as_deref())
        .await
        .map_err(ServeError::Keys)?;
    let masker = state
        .config
        .mask_viewer_addresses
        .then(|| Arc::new(mask::Masker::new(&keys.root_secret())));
    let auth = auth::Auth::new(Arc::clone(&state.store), keys, state.config.auth.clone())
        .with_metrics(metrics.clone());
    let api = Arc::new(graphql::Api {
        store: Arc::clone(&state.store),
        auth: Arc::new(auth),
        live: state.live.clone(),
        queue: state.queue.clone(),
        config: state.config.clone(),
        metrics,
        masker,
    });
    let schema = graphql::schema(Arc::clone(&api), state.config.introspection);
    Ok(Arc::new(Served {
        store: state.store,
        registry: state.registry,
        config: state.config,
        api,
        schema,
        origins,
        ws_users: ws::UserCounts::default(),
    }))
}

/// The routes. Request bodies are read whole first, within the read
/// time limit and the size limit ([`server::read_body`]); `/graphql` and
/// `/export.csv` answer the configured origins' cross-origin requests
/// ([`cors`]).
pub fn router(served: Arc<Served>) -> Router {
    let limit = served.config.max_body_bytes;
    let body = (served.config.read_timeout, limit);
    let mut api = Router::new()
        .route("/graphql", get(http::graphiql).post(http::post))
        .route("/export.csv", axum::routing::post(export::post));
    if !served.origins.is_empty() {
        let cors = axum::middleware::from_fn_with_state(served.origins.clone(), cors::cors);
        api = api.layer(cors);
    }
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/graphql/ws", get(ws::upgrade))
        .merge(api)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            body,
            server::read_body,
        ))
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

/// The transport settings of `config`, its TLS files read and checked.
pub fn transport(config: &ApiConfig) -> Result<server::Transport, ServeError> {
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    Ok(server::Transport {
        tls,
        read_timeout: config.read_timeout,
        write_timeout: config.write_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: server::default_max_connections(),
    })
}

/// Binds `addr` and returns the bound address (useful with port 0) and a
/// future that serves until `shutdown` completes. The TLS files and the
/// CORS origins are checked first: nothing listens if they are wrong.
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
    let transport = transport(&state.config)?;
    let served = prepare(state).await?;
    bind_with(addr, router(served), transport, shutdown).await
}

/// [`bind`] for any router, such as [`probe_router`]'s, over plain HTTP
/// with the default time limits.
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
    bind_with(addr, app, server::Transport::default(), shutdown).await
}

/// [`bind_router`] with the transport given.
pub async fn bind_with(
    addr: SocketAddr,
    app: Router,
    transport: server::Transport,
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
    let scheme = if transport.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(addr = %local, scheme, "Serving HTTP");
    let serve = async move {
        server::serve(listener, app, transport, shutdown).await;
        Ok(())
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
