//! Fleet mode's ClickHouse store read back through the command line: a
//! corpus scenario goes through the processor's pipeline batch by batch,
//! each batch committed to both the embedded store and ClickHouse (as
//! `import` and `process` do), and `lifecycles` and `report` print the
//! same thing from either. Runs against a real ClickHouse server.

use std::path::{Path, PathBuf};
use std::process::Command;

use exim_pilot_ingest::Importer;
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::Zone;
use exim_pilot_store::{ClickHouseStore, SqliteStore, Store};
use exim_pilot_testkit::Server;

mod support;

use support::stdout_of;

/// Records per batch: small, so that many lifecycles are stored several
/// times as they change.
const BATCH_RECORDS: usize = 300;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(name)
}

fn exim_pilot(args: &[&str]) -> String {
    stdout_of(
        Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
            .args(args)
            .output()
            .expect("running exim-pilot"),
    )
}

/// Asserts two outputs are equal line by line, naming the first that
/// differs.
fn same_lines(what: &str, sqlite: &str, clickhouse: &str) {
    let (a, b): (Vec<&str>, Vec<&str>) = (sqlite.lines().collect(), clickhouse.lines().collect());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: line {} differs", i + 1);
    }
    assert_eq!(a.len(), b.len(), "{what}: line counts differ");
    assert!(!a.is_empty(), "{what}: no output");
}

#[test]
fn lifecycles_and_reports_from_clickhouse_equal_those_from_sqlite() {
    let server = Server::clickhouse();
    let url = server.address().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = tempfile::tempdir().expect("temporary folder");
    let sqlite = SqliteStore::open_dir(data.path()).expect("SQLite store");
    let clickhouse = rt
        .block_on(ClickHouseStore::connect(&url, "corpus"))
        .expect("ClickHouse store");

    let dir = scenario("s01_core_all");
    let files: Vec<PathBuf> = ["mainlog", "rejectlog", "paniclog"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut importer = Importer::new(&files, "mx1.lab.test").expect("importer");
    let mut pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
    while let Some(records) = importer
        .next_batch(BATCH_RECORDS)
        .expect("reading the corpus")
    {
        let batch = pipeline.process(records, true);
        let a = rt
            .block_on(sqlite.commit_batch(batch.clone()))
            .expect("SQLite commit");
        let b = rt
            .block_on(clickhouse.commit_batch(batch))
            .expect("ClickHouse commit");
        assert_eq!(a, b, "the stores disagree on what a batch added");
    }
    drop(sqlite);

    let data_dir = data.path().to_str().expect("UTF-8 path");
    let from = |args: &[&str], store: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(store);
        exim_pilot(&all)
    };
    let sqlite_args = ["--data", data_dir];
    let clickhouse_args = ["--clickhouse", url.as_str(), "--database", "corpus"];
    for (what, args) in [
        ("lifecycles", vec!["lifecycles"]),
        ("report", vec!["report", "--format", "json", "--top", "0"]),
        (
            "report over hours",
            vec![
                "report",
                "--format",
                "json",
                "--since",
                "2026-12-03 09:30",
                "--until",
                "2026-12-05 13:10",
            ],
        ),
        (
            "report for a domain",
            vec!["report", "--format", "json", "--domain", "partner.test"],
        ),
    ] {
        same_lines(
            what,
            &from(&args, &sqlite_args),
            &from(&args, &clickhouse_args),
        );
    }

    let migrated = exim_pilot(&["migrate", "--clickhouse", &url, "--database", "corpus"]);
    assert!(migrated.contains("schema version"), "{migrated}");
}

/// A GraphQL request over HTTP/1.0; returns the status code and body.
fn graphql(addr: &str, token: Option<&str>, query: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let body = serde_json::json!({ "query": query }).to_string();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to serve");
    write!(
        stream,
        "POST /graphql HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("sending a request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the answer");
    let code = response[9..12].parse().expect("a status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn a_clickhouse_outage_is_reported_as_such_not_as_a_bad_token() {
    use std::io::{BufRead, BufReader};

    let mut server = Server::clickhouse();
    let url = server.address().to_string();
    exim_pilot(&["migrate", "--clickhouse", &url, "--database", "outage"]);
    let add = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(["user", "add", "ops", "--role", "operator"])
        .args(["--clickhouse", &url, "--database", "outage"])
        .env("EXIM_PILOT_PASSWORD", "a long enough password")
        .output()
        .expect("running user add");
    assert!(add.status.success(), "{add:?}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(["serve", "--clickhouse", &url, "--database", "outage"])
        .args(["--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting serve");
    let mut line = String::new();
    let mut stderr = BufReader::new(serve.stderr.take().expect("stderr"));
    stderr.read_line(&mut line).expect("the address line");
    // Keep reading: a closed pipe would end the process at its next log.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let (_, login) = graphql(
        &addr,
        None,
        r#"mutation { login(username: "ops", password: "a long enough password") { accessToken } }"#,
    );
    let login: serde_json::Value = serde_json::from_str(&login).expect("JSON");
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {login}"))
        .to_string();
    assert_eq!(graphql(&addr, Some(&token), "{ me { name } }").0, 200);

    // ClickHouse away: the caller learns the store is down, and that its
    // token may be fine.
    server.stop();
    let (code, body) = graphql(&addr, Some(&token), "{ me { name } }");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("STORE_UNAVAILABLE"), "{body}");

    // Back: the same token works again.
    server.resume();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = graphql(&addr, Some(&token), "{ me { name } }");
        if code == 200 {
            assert!(body.contains("\"ops\""), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{code}: {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    unsafe {
        libc::kill(serve.id() as i32, libc::SIGTERM);
    }
    let _ = serve.wait();
}
