//! The HTTP side of exim-pilot.
//!
//! Every long-running exim-pilot process (`standalone`, `tail`) serves the
//! operational endpoints from here on the address given with `--listen`:
//!
//! - `GET /health`: liveness, `200 ok` while the process runs;
//! - `GET /ready`: readiness, `200 ready` while the store answers, `503`
//!   with the store's error otherwise (for `tail`, which has no store: while
//!   the broker takes its records, see [`probe_router`]);
//! - `GET /metrics`: the process's Prometheus metrics, text format.
//!
//! The GraphQL API will be served from the same router. Input: the
//! process's [`Store`] and its Prometheus [`Registry`]; output: HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use exim_pilot_store::Store;
use prometheus::{Encoder, Registry, TextEncoder};

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The store the process writes to or reads from.
    pub store: Arc<dyn Store>,
    /// The process's metrics.
    pub registry: Registry,
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
    /// The server stopped with an error.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
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
    bind_router(addr, router(state), shutdown).await
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
    tracing::info!(addr = %local, "Serving health, readiness and metrics");
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

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.hosts().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    encode_metrics(&state.registry)
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
