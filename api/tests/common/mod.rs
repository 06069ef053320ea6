//! What the API tests share: a store loaded with the corpus, a server on
//! a random local port, a small GraphQL client and a WebSocket one.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exim_pilot_api::auth::{self, Actor};
use exim_pilot_api::{ApiConfig, AppState, QueueControl};
use exim_pilot_ingest::Importer;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::Zone;
use exim_pilot_store::{Role, Store};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The host name the corpus is loaded under.
pub const HOST: &str = "mx1.lab.test";

/// The token signing secret of test servers.
pub const SECRET: &[u8] = b"a test secret that is long enough for HS256";

/// Passwords of the users every test server has.
pub const ADMIN_PASSWORD: &str = "vT7qLm2pXr9w-admin";
pub const VIEWER_PASSWORD: &str = "Zk4nHq8sWc2e-viewer";

/// A corpus scenario's folder.
pub fn corpus(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/corpus")
        .join(scenario)
}

/// The scenario's ground truth.
pub fn ground_truth(scenario: &str) -> Value {
    let bytes = std::fs::read(corpus(scenario).join("ground_truth.json")).expect("ground truth");
    serde_json::from_slice(&bytes).expect("ground truth JSON")
}

/// Loads a scenario's three logs through the pipeline, as `import` does.
pub async fn load_corpus(store: &dyn Store, scenario: &str) {
    let dir = corpus(scenario);
    let files: Vec<PathBuf> = ["mainlog", "rejectlog", "paniclog"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut importer = Importer::new(&files, HOST).expect("open the corpus");
    let mut pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
    while let Some(records) = importer.next_batch(500).expect("read the corpus") {
        let batch = pipeline.process(records, true);
        store.commit_batch(batch).await.expect("commit");
    }
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub http: reqwest::Client,
}

/// Default settings of test servers: a known secret, a short WebSocket
/// initialisation time.
pub fn test_config() -> ApiConfig {
    ApiConfig {
        jwt_secret: Some(SECRET.to_vec()),
        ws_init_timeout: Duration::from_millis(500),
        ..ApiConfig::default()
    }
}

/// Starts a server on 127.0.0.1 with an admin `root` and a viewer `val`.
pub async fn start(store: Arc<dyn Store>, config: ApiConfig) -> TestServer {
    start_with_queue(store, config, None).await
}

/// [`start`] with a queue control.
pub async fn start_with_queue(
    store: Arc<dyn Store>,
    config: ApiConfig,
    queue: Option<Arc<dyn QueueControl>>,
) -> TestServer {
    for (name, role, password) in [
        ("root", Role::Admin, ADMIN_PASSWORD),
        ("val", Role::Viewer, VIEWER_PASSWORD),
    ] {
        auth::add_user(
            &*store,
            &Actor::command_line(),
            name,
            role,
            password,
            Vec::new(),
        )
        .await
        .expect("add user");
    }
    let state = AppState {
        config,
        queue,
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

impl TestServer {
    /// The GraphQL endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Posts a body; returns the status and the JSON answer.
    pub async fn post(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(self.url()).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    /// Runs one query; returns the JSON answer.
    pub async fn query(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (_, v) = self
            .post(token, json!({ "query": query, "variables": variables }))
            .await;
        v
    }

    /// Runs a query that must succeed; returns its data.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let v = self.query(Some(token), query, variables).await;
        assert!(v.get("errors").is_none(), "{query}: {v}");
        v["data"].clone()
    }

    /// Logs in; returns the whole answer.
    pub async fn login(&self, user: &str, password: &str) -> Value {
        self.query(
            None,
            "mutation($u: String!, $p: String!) { login(username: $u, password: $p) \
             { accessToken refreshToken expiresAt user { name role } } }",
            json!({ "u": user, "p": password }),
        )
        .await
    }

    /// Logs in and returns the access token.
    pub async fn token(&self, user: &str, password: &str) -> String {
        self.tokens(user, password).await.0
    }

    /// Logs in and returns the access token and the refresh token.
    pub async fn tokens(&self, user: &str, password: &str) -> (String, String) {
        let v = self.login(user, password).await;
        let token = |name: &str| {
            v["data"]["login"][name]
                .as_str()
                .unwrap_or_else(|| panic!("login of {user} failed: {v}"))
                .to_string()
        };
        (token("accessToken"), token("refreshToken"))
    }
}

/// The `code` extension of an answer's first error.
pub fn error_code(v: &Value) -> String {
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A WebSocket to a test server.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a subscription socket to the server.
pub async fn connect(server: &TestServer) -> Ws {
    let mut req = format!("ws://{}/graphql/ws", server.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or("")),
        Some("graphql-transport-ws")
    );
    ws
}

/// Sends one protocol message.
pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(WsMessage::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next protocol message, or the close code.
pub async fn next(ws: &mut Ws) -> Result<Value, u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an answer in time");
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                return Ok(serde_json::from_str(t.as_str()).expect("JSON"))
            }
            Some(Ok(WsMessage::Close(frame))) => return Err(frame.map_or(0, |f| f.code.into())),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Err(0),
        }
    }
}
