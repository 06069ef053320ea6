//! The API over HTTP on a large store: requests per second and latency of
//! a message trace (`message(host, id)` with its recipients, attempts and
//! raw lines) and of a 30-day `deliverability` report by destination
//! domain, for each store: the embedded SQLite store and a ClickHouse
//! server started by `scripts/services.sh`.
//!
//! ```text
//! cargo bench -p exim-pilot-api --bench api -- [MESSAGES] [sqlite|clickhouse|both] [TRACES]
//! ```
//!
//! TRACES (default 1,000) is the number of random messages traced.
//!
//! With `EXIM_PILOT_BENCH_CLICKHOUSE` set to a server's URL, the ClickHouse
//! figures come from that server (database `bench_api`) instead of one
//! started for the run, and a database already holding MESSAGES messages
//! is measured as it is, without filling it again: two builds compare on
//! the same data, and a newer build first migrates the database the older
//! one filled.
//!
//! The store is filled with MESSAGES (default 1,000,000) synthetic
//! messages over 90 days (`exim_pilot_store::conformance::synthetic`).
//! Each figure comes with a baseline measured in the same run on the same
//! machine: the same work asked of the store directly, without HTTP and
//! GraphQL, and `GET /health` over the same HTTP client; the ratios say
//! what the API adds (the report's baseline is the hour cells of the
//! range, which the API read before it read whole days from day cells).
//! Goals: trace p99 under 50 ms, 30-day report p99 under 500 ms.
//! Traces are also asked of a second server on the same store that masks
//! viewers' addresses (`mask_viewer_addresses`), against the plain one,
//! and of the same routes served by `axum::serve` instead of the API's
//! own server (no time limits, no TLS), against the API's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use exim_pilot_api::auth::{self, Actor, AuthConfig};
use exim_pilot_api::{ApiConfig, AppState};
use exim_pilot_schema::report::Dimension;
use exim_pilot_store::conformance::fixtures::{base, id};
use exim_pilot_store::conformance::synthetic::{fill, Rng, HOSTS};
use exim_pilot_store::{Bucket, CellQuery, ClickHouseStore, Role, SqliteStore, Store};
use serde_json::{json, Value};

const PASSWORD: &str = "a long benchmark password";

const TRACE: &str = "query($h: String!, $i: String!) { message(host: $h, id: $i) { id state \
                     sender recipients { address outcome attempts { at result } } \
                     rawLines { at kind text } } }";

const REPORT: &str = "query($s: DateTime!, $u: DateTime!) { deliverability(range: \
                      { since: $s, until: $u }, groupBy: DOMAIN, top: 50) { key messages \
                      delivered deliveryRate delayP50Ms } }";

/// Latencies of one kind of request.
struct Timings {
    label: String,
    times: Vec<StdDuration>,
    wall: StdDuration,
}

impl Timings {
    fn percentile(&self, p: f64) -> StdDuration {
        let mut times = self.times.clone();
        times.sort();
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i]
    }

    fn per_second(&self) -> f64 {
        self.times.len() as f64 / self.wall.as_secs_f64()
    }

    fn print(&self, baseline: Option<&Timings>) {
        let (p50, p99) = (self.percentile(0.5), self.percentile(0.99));
        print!(
            "  {:<44} p50 {:>9.2?}  p99 {:>9.2?}  {:>8.0} req/s",
            self.label,
            p50,
            p99,
            self.per_second()
        );
        if let Some(base) = baseline {
            print!(
                "   (p99 {:.1}x {})",
                p99.as_secs_f64() / base.percentile(0.99).as_secs_f64().max(1e-9),
                base.label
            );
        }
        println!();
    }
}

/// Runs `requests` calls of `call`, `concurrency` at a time.
async fn measure<F, Fut>(label: &str, requests: usize, concurrency: usize, call: F) -> Timings
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut i = w;
            while i < requests {
                let t = Instant::now();
                call(i).await;
                times.push(t.elapsed());
                i += concurrency;
            }
            times
        }));
    }
    let mut times = Vec::with_capacity(requests);
    for worker in workers {
        times.extend(worker.await.expect("a benchmark worker"));
    }
    Timings {
        label: label.to_string(),
        times,
        wall: start.elapsed(),
    }
}

/// The API on `store`, with a logged-in client.
struct Api {
    url: String,
    health: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// A server on `store`, masking viewers' addresses or not, and its
    /// client logged in as the benchmark's viewer.
    async fn start(store: Arc<dyn Store>, mask: bool) -> Api {
        Api::start_with(store, mask, false).await
    }

    /// [`Api::start`], served by `axum::serve` when `axum` is true.
    async fn start_with(store: Arc<dyn Store>, mask: bool, axum: bool) -> Api {
        let state = AppState {
            config: ApiConfig {
                jwt_secret: Some(b"a benchmark secret that is long enough".to_vec()),
                mask_viewer_addresses: mask,
                // One token for the whole run, however long it takes.
                auth: AuthConfig {
                    access_ttl: StdDuration::from_secs(24 * 3600),
                    ..AuthConfig::default()
                },
                ..ApiConfig::default()
            },
            ..AppState::new(store, prometheus::Registry::new())
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let addr = if axum {
            let served = exim_pilot_api::prepare(state).await.expect("the API");
            let app =
                exim_pilot_api::router(served).into_make_service_with_connect_info::<SocketAddr>();
            let listener = tokio::net::TcpListener::bind(addr).await.expect("binding");
            let addr = listener.local_addr().expect("an address");
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        } else {
            let (addr, serving) = exim_pilot_api::bind(addr, state, std::future::pending())
                .await
                .expect("binding the API");
            tokio::spawn(serving);
            addr
        };
        let mut api = Api {
            url: format!("http://{addr}/graphql"),
            health: format!("http://{addr}/health"),
            token: String::new(),
            http: reqwest::Client::new(),
        };
        let login = api
            .post(
                "mutation($p: String!) { login(username: \"bench\", password: $p) { accessToken } }",
                json!({ "p": PASSWORD }),
            )
            .await;
        api.token = login["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("login failed: {login}"))
            .to_string();
        api
    }

    async fn post(&self, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        let answer: Value = request
            .send()
            .await
            .expect("a request")
            .json()
            .await
            .expect("a JSON answer");
        assert!(answer["errors"].is_null(), "{answer}");
        answer
    }
}

async fn bench_store(name: &str, store: Arc<dyn Store>, total: u32, batch: usize, traces: usize) {
    println!("{name}:");
    let stored: i64 = store
        .hosts()
        .await
        .expect("the stored servers")
        .iter()
        .map(|h| h.messages)
        .sum();
    if stored == i64::from(total) {
        println!("  measuring the {total} messages already stored");
    } else {
        assert_eq!(stored, 0, "the store holds {stored} messages, not {total}");
        let t = Instant::now();
        let written = fill(&*store, total, batch)
            .await
            .expect("filling the store");
        println!(
            "  wrote {total} messages ({written} lifecycle writes) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    // A reused database has the user from an earlier run.
    let known = store.user("bench").await.expect("looking up the user");
    if known.is_none() {
        auth::add_user(
            &*store,
            &Actor::command_line(),
            "bench",
            Role::Viewer,
            PASSWORD,
            Vec::new(),
        )
        .await
        .expect("adding the benchmark's user");
    }
    let api = Arc::new(Api::start(store.clone(), false).await);

    // Baseline of HTTP itself.
    let health = {
        let api = api.clone();
        measure("GET /health", 2000, 4, move |_| {
            let api = api.clone();
            async move {
                api.http
                    .get(&api.health)
                    .send()
                    .await
                    .expect("health")
                    .bytes()
                    .await
                    .expect("health body");
            }
        })
        .await
    };
    health.print(None);

    // Message traces: random messages, one at a time and four at once.
    let mut rng = Rng(42);
    let picks: Arc<Vec<u32>> = Arc::new(
        (0..traces)
            .map(|_| rng.below(total as u64) as u32)
            .collect(),
    );
    let direct = {
        let (store, picks) = (store.clone(), picks.clone());
        measure("store: lifecycle + raw records", picks.len(), 1, move |i| {
            let (store, n) = (store.clone(), picks[i]);
            async move {
                let host = HOSTS[(n % 2) as usize];
                let found = store.lifecycle(host, id(n)).await.expect("lifecycle");
                assert!(found.is_some(), "message {n} missing");
                store.message_records(host, id(n)).await.expect("records");
            }
        })
        .await
    };
    direct.print(None);
    let mut plain = None;
    for concurrency in [1, 4] {
        let label = format!("HTTP message(host, id), {concurrency} at a time");
        let timings = traced(&label, &api, &picks, concurrency).await;
        timings.print(Some(&direct));
        plain.get_or_insert(timings);
    }
    let masking = Arc::new(Api::start(store.clone(), true).await);
    let label = "HTTP message(host, id), masked for a viewer";
    let masked = traced(label, &masking, &picks, 1).await;
    masked.print(plain.as_ref());
    let axum = Arc::new(Api::start_with(store.clone(), false, true).await);
    for concurrency in [1, 4] {
        let ours = format!("HTTP message(host, id), {concurrency} at a time, again");
        let ours = traced(&ours, &api, &picks, concurrency).await;
        let label = format!("  the same through axum::serve, {concurrency} at a time");
        let theirs = traced(&label, &axum, &picks, concurrency).await;
        theirs.print(None);
        ours.print(Some(&theirs));
    }

    // The 30-day report by destination domain.
    let until = base();
    let since = until - Duration::days(30);
    let direct = {
        let store = store.clone();
        measure("store: 30-day hour cells by domain", 30, 1, move |_| {
            let store = store.clone();
            async move {
                let query = CellQuery {
                    since: Some(since),
                    until: Some(until),
                    host: None,
                    dims: vec![Dimension::Domain],
                    bucket: Bucket::Hour,
                };
                store.cells(&query).await.expect("cells");
            }
        })
        .await
    };
    direct.print(None);
    for concurrency in [1, 2] {
        let api = api.clone();
        let label = format!("HTTP 30-day deliverability, {concurrency} at a time");
        let timings = measure(&label, 30, concurrency, move |_| {
            let api = api.clone();
            async move {
                let answer = api.post(REPORT, json!({ "s": since, "u": until })).await;
                assert!(
                    answer["data"]["deliverability"]
                        .as_array()
                        .is_some_and(|rows| !rows.is_empty()),
                    "{answer}"
                );
            }
        })
        .await;
        timings.print(Some(&direct));
    }
}

/// Traces the picked messages through `api`, `concurrency` at a time.
async fn traced(label: &str, api: &Arc<Api>, picks: &Arc<Vec<u32>>, concurrency: usize) -> Timings {
    let (api, picks) = (api.clone(), picks.clone());
    measure(label, picks.len(), concurrency, move |i| {
        let (api, n) = (api.clone(), picks[i]);
        async move {
            let host = HOSTS[(n % 2) as usize];
            let answer = api
                .post(TRACE, json!({ "h": host, "i": id(n).to_string() }))
                .await;
            assert!(!answer["data"]["message"].is_null(), "message {n} missing");
        }
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let total: u32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    let traces: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .max(1);

    if which == "sqlite" || which == "both" {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open_dir(dir.path()).expect("the SQLite store");
        bench_store("SQLite (embedded)", Arc::new(store), total, 1_000, traces).await;
    }
    if which == "clickhouse" || which == "both" {
        let (server, url) = match std::env::var("EXIM_PILOT_BENCH_CLICKHOUSE") {
            Ok(url) => (None, url),
            Err(_) => {
                let server = tokio::task::spawn_blocking(exim_pilot_testkit::Server::clickhouse)
                    .await
                    .expect("starting ClickHouse");
                let url = server.address().to_string();
                (Some(server), url)
            }
        };
        let t = Instant::now();
        let store = ClickHouseStore::connect(&url, "bench_api")
            .await
            .expect("the ClickHouse store");
        println!(
            "ClickHouse schema migrated in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        bench_store("ClickHouse", Arc::new(store), total, 10_000, traces).await;
        drop(server);
    }
}
