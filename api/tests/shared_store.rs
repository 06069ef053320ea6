//! Several processes over one store, as `exim-pilot serve` runs in a
//! fleet or beside `standalone`: subscriptions over a real WebSocket
//! receive, filtered, what another writer commits to the store, and
//! failed logins made through one API server count at another. Each test
//! runs on the embedded store (two handles on one data directory, as two
//! processes have) and on a real ClickHouse server (two clients of one
//! database).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exim_pilot_api::AppState;
use exim_pilot_ingest::Importer;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::Zone;
use exim_pilot_store::{Batch, ClickHouseStore, SqliteStore, Store};
use exim_pilot_testkit::Server;
use serde_json::{json, Value};

use common::*;

/// The poll interval of the tests' feeds.
const INTERVAL: Duration = Duration::from_millis(100);

/// Two handles on one store: what the API reads, and what another
/// process writes with. The guard keeps the store alive.
struct TwoHandles {
    api: Arc<dyn Store>,
    writer: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any>,
}

fn sqlite() -> TwoHandles {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = SqliteStore::open_dir(dir.path()).expect("store");
    let writer = SqliteStore::open_dir(dir.path()).expect("second handle");
    TwoHandles {
        api: Arc::new(api),
        writer: Arc::new(writer),
        _guard: Box::new(dir),
    }
}

async fn clickhouse(database: &str) -> TwoHandles {
    let server = Server::clickhouse();
    let url = server.address().to_string();
    let writer = ClickHouseStore::connect(&url, database)
        .await
        .expect("ClickHouse store");
    let api = ClickHouseStore::open(&url, database)
        .await
        .expect("second client");
    TwoHandles {
        api: Arc::new(api),
        writer: Arc::new(writer),
        _guard: Box::new(server),
    }
}

/// The corpus's mainlog as the pipeline makes it into batches.
fn corpus_batches() -> Vec<Batch> {
    let files: Vec<PathBuf> = vec![corpus("s01_core_all").join("mainlog")];
    let mut importer = Importer::new(&files, HOST).expect("corpus");
    let mut pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
    let mut out = Vec::new();
    while let Some(records) = importer.next_batch(150).expect("read") {
        out.push(pipeline.process(records, true));
    }
    out
}

/// Subscribes over a real WebSocket to the deliveries of the corpus's
/// host and to the changes of messages to or from `address`, lets another
/// handle commit the corpus, and checks that exactly the deliveries come,
/// each once, and only changes of messages of `address`.
async fn subscriptions_receive_what_another_writer_commits(store: TwoHandles) {
    let server = start(Arc::clone(&store.api), test_config()).await;
    let feed =
        exim_pilot_api::feed::spawn(Arc::clone(&store.api), server.state.live.clone(), INTERVAL);
    let token = server.token("val", VIEWER_PASSWORD).await;
    let mut ws = connect(&server).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": token } }),
    )
    .await;
    assert_eq!(next(&mut ws).await, Ok(json!({ "type": "connection_ack" })));
    let address = "alice@lab.test";
    let lines = format!(
        "subscription {{ logRecords(filter: {{ host: \"{HOST}\", kind: \"delivery\" }}) \
         {{ host kind text messageId }} }}"
    );
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "lines", "payload": { "query": lines } }),
    )
    .await;
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "msgs", "payload": { "query":
            format!("subscription {{ messageChanges(filter: {{ address: \"{address}\" }}) \
                     {{ id sender recipients {{ address original }} }} }}") } }),
    )
    .await;

    // Both subscriptions listen, and the feed has polled since.
    for _ in 0..100 {
        if server.state.live.receiver_count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.state.live.receiver_count(), 2);
    tokio::time::sleep(INTERVAL * 3).await;

    // Another process commits the corpus.
    let batches = corpus_batches();
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for batch in &batches {
        for r in batch.records.iter().filter(|r| r.event_kind == "delivery") {
            *expected.entry(r.text()).or_default() += 1;
        }
    }
    let deliveries: usize = expected.values().sum();
    assert!(deliveries > 10, "the corpus has deliveries");
    for batch in batches {
        store.writer.commit_batch(batch).await.expect("commit");
    }

    // Exactly those records come, each once, and changes of the address.
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let mut changes = 0;
    while got.values().sum::<usize>() < deliveries || changes == 0 {
        let msg = next(&mut ws).await.expect("a message");
        assert_eq!(msg["type"], "next", "{msg}");
        match msg["id"].as_str() {
            Some("lines") => {
                let line = &msg["payload"]["data"]["logRecords"];
                assert_eq!(line["kind"], "delivery", "{line}");
                assert_eq!(line["host"], HOST, "{line}");
                let text = line["text"].as_str().expect("text").to_string();
                *got.entry(text).or_default() += 1;
            }
            Some("msgs") => {
                let m = &msg["payload"]["data"]["messageChanges"];
                assert!(involves(m, address), "not a message of {address}: {m}");
                changes += 1;
            }
            other => panic!("unexpected id {other:?}: {msg}"),
        }
    }
    assert_eq!(got, expected);

    // Nothing more is on its way: the next message, if any, is a change.
    let quiet = tokio::time::timeout(INTERVAL * 10, next(&mut ws)).await;
    if let Ok(Ok(msg)) = quiet {
        assert_eq!(msg["id"], "msgs", "a record came twice: {msg}");
    }
    feed.abort();
}

fn involves(message: &Value, address: &str) -> bool {
    let sender = message["sender"].as_str().unwrap_or("");
    sender.eq_ignore_ascii_case(address)
        || message["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                ["address", "original"].iter().any(|f| {
                    r[f].as_str()
                        .is_some_and(|a| a.eq_ignore_ascii_case(address))
                })
            })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_receive_what_another_process_commits_to_a_data_directory() {
    subscriptions_receive_what_another_writer_commits(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_receive_what_processors_commit_to_clickhouse() {
    subscriptions_receive_what_another_writer_commits(clickhouse("live_subscriptions").await).await;
}

/// A second API server over the same store, without adding users.
async fn second_server(store: Arc<dyn Store>) -> TestServer {
    let state = AppState {
        config: test_config(),
        ..AppState::new(store, prometheus::Registry::new())
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (addr, serving) = exim_pilot_api::bind(addr, state.clone(), std::future::pending())
        .await
        .expect("bind");
    tokio::spawn(serving);
    TestServer {
        addr,
        state,
        http: reqwest::Client::new(),
    }
}

/// Failed logins through one server make the other refuse even the right
/// password.
async fn failed_logins_through_one_server_count_at_the_other(store: TwoHandles) {
    let a = start(Arc::clone(&store.api), test_config()).await;
    let b = second_server(Arc::clone(&store.writer)).await;
    b.token("val", VIEWER_PASSWORD).await;

    // Three failures, through one server and the other: the limit of one
    // account from one address, which neither reached alone.
    for server in [&a, &b, &a] {
        let v = server.login("root", "wrong-password-9").await;
        assert_eq!(error_code(&v), "INVALID_CREDENTIALS", "{v}");
    }
    for server in [&b, &a] {
        let v = server.login("root", ADMIN_PASSWORD).await;
        assert_eq!(error_code(&v), "THROTTLED", "{v}");
    }

    // The viewer, who logged in through b, is not affected at a.
    a.token("val", VIEWER_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_count_across_servers_of_a_data_directory() {
    failed_logins_through_one_server_count_at_the_other(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_count_across_servers_of_clickhouse() {
    failed_logins_through_one_server_count_at_the_other(clickhouse("login_limits").await).await;
}
