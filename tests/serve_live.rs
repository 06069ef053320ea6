//! Live subscriptions of `exim-pilot serve`, run as a process, over a
//! store another process fills: a graphql-transport-ws client subscribes
//! over a real WebSocket to one message's records and changes, then
//! `exim-pilot import` (into the same data directory) or the store's
//! write path (into ClickHouse, as `exim-pilot process` writes) commits
//! the corpus, and the client receives exactly that message's lines and
//! its lifecycle.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use exim_pilot_ingest::Importer;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::Zone;
use exim_pilot_store::{ClickHouseStore, Store};
use exim_pilot_testkit::Server;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

mod support;

use support::stdout_of;

const HOST: &str = "mx1.lab.test";
const MESSAGE: &str = "1xZVcD-000795-1J";
const PASSWORD: &str = "a long enough password";

fn mainlog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus/s01_core_all/mainlog")
}

fn exim_pilot(args: &[&str]) {
    stdout_of(
        Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
            .args(args)
            .env("EXIM_PILOT_PASSWORD", PASSWORD)
            .output()
            .expect("running exim-pilot"),
    );
}

/// `exim-pilot serve` on a random local port; ended when dropped.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(store_args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
            .arg("serve")
            .args(store_args)
            .args(["--listen", "127.0.0.1:0", "--live-interval", "200"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        while !line.contains("http://") {
            line.clear();
            let n = stderr.read_line(&mut line).expect("serve's output");
            assert!(n > 0, "serve ended before serving");
        }
        // Keep reading: a closed pipe would end the process at its next log.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Serve { child, addr }
    }

    async fn graphql(&self, token: Option<&str>, query: &str) -> Value {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/graphql", self.addr))
            .json(&json!({ "query": query }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let v: Value = req.send().await.expect("send").json().await.expect("JSON");
        assert!(v["errors"].is_null(), "{query}: {v}");
        v["data"].clone()
    }

    async fn token(&self) -> String {
        let q = format!(
            "mutation {{ login(username: \"ann\", password: \"{PASSWORD}\") {{ accessToken }} }}"
        );
        let v = self.graphql(None, &q).await;
        v["login"]["accessToken"]
            .as_str()
            .expect("a token")
            .to_string()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, v: Value) {
    ws.send(WsMessage::Text(v.to_string().into()))
        .await
        .expect("send");
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message in time");
        match msg {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Some(Ok(WsMessage::Close(frame))) => panic!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

/// Subscribes to one message's records and changes through `serve`.
async fn subscribe(serve: &Serve) -> Ws {
    let token = serve.token().await;
    let mut req = format!("ws://{}/graphql/ws", serve.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": token } }),
    )
    .await;
    assert_eq!(next(&mut ws).await, json!({ "type": "connection_ack" }));
    let lines = format!(
        "subscription {{ logRecords(filter: {{ messageId: \"{MESSAGE}\" }}) {{ messageId text }} }}"
    );
    let changes = format!(
        "subscription {{ messageChanges(filter: {{ id: \"{MESSAGE}\" }}) {{ id state }} }}"
    );
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "lines", "payload": { "query": lines } }),
    )
    .await;
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "msgs", "payload": { "query": changes } }),
    )
    .await;
    // A few polls of the feed, so that it has seen the subscribers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws
}

/// Reads until every line the store holds for the message has come, and
/// its final state: only that message's lines and changes, each line once.
async fn receive_the_message(serve: &Serve, ws: &mut Ws) {
    let token = serve.token().await;
    let q = format!(
        "{{ message(host: \"{HOST}\", id: \"{MESSAGE}\") {{ state rawLines {{ text }} }} }}"
    );
    let stored = serve.graphql(Some(&token), &q).await;
    let mut expected: Vec<String> = stored["message"]["rawLines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["text"].as_str().expect("text").to_string())
        .collect();
    expected.sort();
    assert!(expected.len() >= 3, "{stored}");
    let state = stored["message"]["state"].clone();

    let mut got = Vec::new();
    let mut last_state = Value::Null;
    while got.len() < expected.len() || last_state != state {
        let msg = next(ws).await;
        assert_eq!(msg["type"], "next", "{msg}");
        match msg["id"].as_str() {
            Some("lines") => {
                let line = &msg["payload"]["data"]["logRecords"];
                assert_eq!(line["messageId"], MESSAGE, "{line}");
                got.push(line["text"].as_str().expect("text").to_string());
            }
            Some("msgs") => {
                let m = &msg["payload"]["data"]["messageChanges"];
                assert_eq!(m["id"], MESSAGE, "{m}");
                last_state = m["state"].clone();
            }
            other => panic!("unexpected id {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_a_data_directory_streams_what_import_adds() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("UTF-8 path");
    exim_pilot(&["user", "add", "ann", "--role", "viewer", "--data", dir]);
    let serve = Serve::start(&["--data", dir]);
    let mut ws = subscribe(&serve).await;

    let log = mainlog();
    let log = log.to_str().expect("UTF-8 path");
    exim_pilot(&[
        "import",
        "--data",
        dir,
        "--host",
        HOST,
        "--timezone",
        "utc",
        log,
    ]);
    receive_the_message(&serve, &mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_clickhouse_streams_what_processors_commit() {
    let server = Server::clickhouse();
    let url = server.address().to_string();
    let clickhouse = ["--clickhouse", url.as_str(), "--database", "live"];
    exim_pilot(&[&["migrate"], &clickhouse[..]].concat());
    exim_pilot(&[&["user", "add", "ann", "--role", "viewer"], &clickhouse[..]].concat());
    let serve = Serve::start(&clickhouse);
    let mut ws = subscribe(&serve).await;

    // What a processor does: the pipeline's batches into the store.
    let store = ClickHouseStore::connect(&url, "live").await.expect("store");
    let mut importer = Importer::new(&[mainlog()], HOST).expect("corpus");
    let mut pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
    while let Some(records) = importer.next_batch(200).expect("read") {
        let batch = pipeline.process(records, true);
        store.commit_batch(batch).await.expect("commit");
    }
    receive_the_message(&serve, &mut ws).await;
}
