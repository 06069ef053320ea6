//! The API's transport over real connections: cross-origin requests
//! (CORS), HTTPS with a certificate made here (WebSocket included), the
//! checks of the certificate and key at start, and the read, idle and
//! body time limits against raw sockets.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exim_pilot_api::config::TlsFiles;
use exim_pilot_api::{ApiConfig, AppState, ServeError};
use exim_pilot_store::SqliteStore;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::*;

const CONSOLE: &str = "http://console.test:3000";

async fn server(config: ApiConfig) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    (start(Arc::new(store), config).await, dir)
}

/// The `access-control-*` headers of an answer.
fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    server
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}{path}", server.addr),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight")
}

async fn login_from(server: &TestServer, origin: &str) -> reqwest::Response {
    server
        .http
        .post(server.url())
        .header("origin", origin)
        .json(&json!({ "query": "{ me { name } }" }))
        .send()
        .await
        .expect("post")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_origins_no_answer_has_cors_headers() {
    let (server, _dir) = server(test_config()).await;
    let response = preflight(&server, "/graphql", CONSOLE).await;
    assert!(
        cors_headers(&response).is_empty(),
        "{:?}",
        response.headers()
    );
    let response = login_from(&server, CONSOLE).await;
    assert!(
        cors_headers(&response).is_empty(),
        "{:?}",
        response.headers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_get_cors_headers() {
    let config = ApiConfig {
        cors_origins: vec![CONSOLE.to_string(), "https://other.test".to_string()],
        ..test_config()
    };
    let (server, _dir) = server(config).await;

    // A listed origin's preflight is answered, for both endpoints.
    for path in ["/graphql", "/export.csv"] {
        let response = preflight(&server, path, CONSOLE).await;
        assert_eq!(response.status().as_u16(), 204, "{path}");
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], CONSOLE);
        let methods = h["access-control-allow-methods"].to_str().unwrap_or("");
        assert!(methods.contains("POST"), "{methods}");
        let headers = h["access-control-allow-headers"].to_str().unwrap_or("");
        assert!(headers.contains("authorization") && headers.contains("content-type"));
        assert!(h.get("access-control-allow-credentials").is_none());
    }

    // Its requests' answers may be read.
    let token = server.token("val", VIEWER_PASSWORD).await;
    let response = server
        .http
        .post(server.url())
        .header("origin", CONSOLE)
        .bearer_auth(&token)
        .json(&json!({ "query": "{ me { name } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.headers()["access-control-allow-origin"], CONSOLE);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["me"]["name"], "val");

    // Another origin, or the same host on another port or scheme, gets
    // nothing at all, preflight included.
    for origin in [
        "http://evil.test",
        "http://console.test:3001",
        "https://console.test:3000",
        "null",
    ] {
        let response = preflight(&server, "/graphql", origin).await;
        assert!(cors_headers(&response).is_empty(), "{origin}");
        assert_ne!(response.status().as_u16(), 204, "{origin}");
        let response = login_from(&server, origin).await;
        assert!(cors_headers(&response).is_empty(), "{origin}");
    }

    // Nor do the other endpoints.
    let response = server
        .http
        .get(format!("http://{}/metrics", server.addr))
        .header("origin", CONSOLE)
        .send()
        .await
        .expect("metrics");
    assert!(cors_headers(&response).is_empty());
}

/// Binds a server with `config`; the error, if it does not start.
async fn try_start(config: ApiConfig) -> Result<SocketAddr, ServeError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    let state = AppState {
        config,
        ..AppState::new(Arc::new(store), prometheus::Registry::new())
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (addr, serving) = exim_pilot_api::bind(addr, state, std::future::pending()).await?;
    tokio::spawn(serving);
    Ok(addr)
}

#[tokio::test]
async fn a_malformed_origin_stops_the_server_from_starting() {
    for (origin, says) in [
        ("*", "wildcards"),
        ("console.test", "https://console.test"),
        ("https://console.test/app", "no path"),
    ] {
        let config = ApiConfig {
            cors_origins: vec![origin.to_string()],
            ..test_config()
        };
        let error = try_start(config).await.expect_err(origin).to_string();
        assert!(error.contains(origin) && error.contains(says), "{error}");
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files.
struct Certificate {
    pem: String,
    der: Vec<u8>,
    files: TlsFiles,
}

fn certificate(dir: &Path, name: &str) -> Certificate {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).expect("write");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("write");
    Certificate {
        pem: made.cert.pem(),
        der: made.cert.der().to_vec(),
        files: TlsFiles { cert, key },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_queries_and_subscriptions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = certificate(dir.path(), "server");
    let config = ApiConfig {
        tls: Some(cert.files.clone()),
        ..test_config()
    };
    let (server, _store) = server(config).await;

    // A client trusting the certificate logs in and asks.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).expect("PEM"))
        .build()
        .expect("client");
    let url = format!("https://{}/graphql", server.addr);
    let login = json!({ "query": format!(
        "mutation {{ login(username: \"val\", password: \"{VIEWER_PASSWORD}\") {{ accessToken }} }}"
    ) });
    let answer: serde_json::Value = client
        .post(&url)
        .json(&login)
        .send()
        .await
        .expect("HTTPS")
        .json()
        .await
        .expect("JSON");
    let token = answer["data"]["login"]["accessToken"]
        .as_str()
        .expect("token")
        .to_string();

    // Plain HTTP to the same port gets no answer.
    let plain = server.http.post(server.url()).json(&login).send().await;
    assert!(plain.is_err(), "{plain:?}");

    // A client that does not trust the certificate is refused.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .build()
        .expect("client");
    assert!(untrusting.post(&url).json(&login).send().await.is_err());

    // The WebSocket, over TLS too.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone().into()).expect("root");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut request = format!("wss://{}/graphql/ws", server.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket over TLS");
    use futures_util::{SinkExt, StreamExt};
    let init = json!({ "type": "connection_init", "payload": { "token": token } });
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        init.to_string().into(),
    ))
    .await
    .expect("send");
    let ack = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("no error");
    assert!(
        ack.to_text().unwrap_or("").contains("connection_ack"),
        "{ack:?}"
    );
}

/// The error of a TLS setup with these files.
async fn tls_error(cert: &Path, key: &Path) -> String {
    let config = ApiConfig {
        tls: Some(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        ..test_config()
    };
    match try_start(config).await {
        Ok(addr) => panic!("started on {addr} with {cert:?} and {key:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_and_keys_are_refused_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = certificate(dir.path(), "good");
    let other = certificate(dir.path(), "other");
    let missing = dir.path().join("missing.pem");
    let garbage: PathBuf = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate at all\n").expect("write");
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nMIIB!!!notbase64\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let (cert, key) = (&good.files.cert, &good.files.key);

    let cases: [(&Path, &Path, &Path, &str); 6] = [
        (&missing, key, &missing, "cannot read the TLS certificate"),
        (cert, &missing, &missing, "cannot read the TLS key"),
        (&garbage, key, &garbage, "holds no PEM certificate"),
        (&broken, key, &broken, "not valid PEM"),
        (key, cert, key, "were the two swapped"),
        (cert, &other.files.key, &other.files.key, "does not go with"),
    ];
    for (cert, key, named, says) in cases {
        let error = tls_error(cert, key).await;
        assert!(
            error.contains(&named.display().to_string()) && error.contains(says),
            "{error} (expected {says} about {named:?})"
        );
    }
}

/// Reads from a raw connection until the server closes it; how long it
/// took. Panics if it stays open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection stayed open for {limit:?}"),
        }
    }
}

fn short_limits() -> ApiConfig {
    ApiConfig {
        read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_too_slowly_is_cut_off() {
    let (server, _dir) = server(short_limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");

    // One header line every 200 ms: each arrives well within the limit,
    // but the headers never end.
    let started = Instant::now();
    let mut cut = false;
    for i in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = format!("X-Slow-{i}: yes\r\n");
        if stream.write_all(line.as_bytes()).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            cut = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(cut, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(800),
        "cut after only {took:?}"
    );
    assert!(took < Duration::from_secs(3), "cut only after {took:?}");

    // A client that sends its request at once is answered.
    let mut quick = TcpStream::connect(server.addr).await.expect("connect");
    quick
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    quick.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Sends one keep-alive request and reads its whole answer.
async fn health(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_limit() {
    let (server, _dir) = server(short_limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    assert!(health(&mut stream).await.starts_with("HTTP/1.1 200"));

    // Longer than the read limit, shorter than the idle one: still open.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(health(&mut stream).await.starts_with("HTTP/1.1 200"));

    // Then closed once idle for two seconds.
    let took = closed_within(&mut stream, Duration::from_secs(6)).await;
    assert!(took >= Duration::from_millis(1800), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    let (server, _dir) = server(short_limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"query\":",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer));
    read.await.expect("an answer in time").expect("read");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(800));
}
