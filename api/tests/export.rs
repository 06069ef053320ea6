//! CSV exports over real HTTP, on both stores loaded with the corpus: a
//! paged search is read to its end, a report gives its rows, what may not
//! be read is refused before any CSV, a cut-off export is never a short
//! file, and each export is audited.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use exim_pilot_store::{ClickHouseStore, SqliteStore, Store};
use serde_json::{json, Value};

use common::*;

const SCENARIO: &str = "s01_core_all";

/// Posts an export request; the status and the body, or the error that
/// cut the body off.
async fn export(
    server: &TestServer,
    token: Option<&str>,
    body: Value,
) -> (u16, Result<String, String>) {
    let mut request = server
        .http
        .post(format!("http://{}/export.csv", server.addr))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.map_err(|e| e.to_string()))
}

/// The rows of a CSV text without quoted line breaks: header and cells.
fn rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header = lines
        .next()
        .expect("a header line")
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

async fn exports_work(store: Arc<dyn Store>, limited: Arc<dyn Store>) {
    load_corpus(&*store, SCENARIO).await;
    let server = start(store, test_config()).await;
    let truth = ground_truth(SCENARIO);
    let messages = truth["totals"]["messages"].as_u64().expect("message count") as usize;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let admin = server.token("root", ADMIN_PASSWORD).await;

    // A search, paged seven at a time, read to its end.
    let search = json!({
        "query": "query($after: String) { messages(first: 7, after: $after) { \
                  edges { node { id sender state } } pageInfo { hasNextPage endCursor } } }",
    });
    let (status, body) = export(&server, Some(&viewer), search.clone()).await;
    assert_eq!(status, 200);
    let (header, found) = rows(&body.expect("a whole body"));
    assert_eq!(header, ["id", "sender", "state"]);
    assert_eq!(found.len(), messages);
    let ids: BTreeSet<&String> = found.iter().map(|r| &r[0]).collect();
    assert_eq!(ids.len(), messages, "every message once");

    // Without $after only the first page comes.
    let first_page = json!({
        "query": "{ messages(first: 7) { edges { node { id } } pageInfo { hasNextPage } } }",
    });
    let (_, body) = export(&server, Some(&viewer), first_page).await;
    assert_eq!(rows(&body.unwrap()).1.len(), 7.min(messages));

    // A report: the same rows as the query gives.
    let report = "{ deliverability(groupBy: DOMAIN, top: 1000) { key addresses delivered } }";
    let (status, body) = export(&server, Some(&viewer), json!({ "query": report })).await;
    assert_eq!(status, 200);
    let (header, csv_rows) = rows(&body.unwrap());
    assert_eq!(header, ["key", "addresses", "delivered"]);
    let answer = server.data(&viewer, report, json!({})).await;
    let graphql_rows: Vec<Vec<String>> = answer["deliverability"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            ["key", "addresses", "delivered"]
                .iter()
                .map(|k| match &r[k] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    assert_eq!(csv_rows, graphql_rows);

    // Refusals come before any CSV, as GraphQL errors.
    let (status, _) = export(&server, None, json!({ "query": report })).await;
    assert_eq!(status, 401);
    let (status, body) = export(
        &server,
        Some(&viewer),
        json!({ "query": "{ auditLog { nodes { actor } } }" }),
    )
    .await;
    assert_eq!(status, 400);
    let answer: Value = serde_json::from_str(&body.unwrap()).expect("a JSON answer");
    assert_eq!(error_code(&answer), "FORBIDDEN", "{answer}");
    let (status, _) = export(
        &server,
        Some(&viewer),
        json!({ "query": "mutation { logout }" }),
    )
    .await;
    assert_eq!(status, 400);

    // Every export is in the audit trail, refused ones included.
    let audit = server
        .data(
            &admin,
            "{ auditLog(filter: { action: \"export\" }, first: 100) { nodes { actor target outcome } } }",
            json!({}),
        )
        .await;
    let entries = audit["auditLog"]["nodes"].as_array().expect("entries");
    let count = |target: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e["target"] == json!(target) && e["outcome"] == json!(outcome))
            .count()
    };
    assert_eq!(count("messages", "ok"), 2, "{entries:?}");
    assert_eq!(count("deliverability", "ok"), 1, "{entries:?}");
    assert_eq!(count("auditLog", "failed"), 1, "{entries:?}");
    assert!(entries.iter().all(|e| e["actor"] == json!("val")));

    // An export past the row limit is cut off, not short.
    load_corpus(&*limited, SCENARIO).await;
    let config = exim_pilot_api::ApiConfig {
        export_max_rows: 5,
        ..test_config()
    };
    let small = start(limited, config).await;
    let token = small.token("val", VIEWER_PASSWORD).await;
    let (status, body) = export(&small, Some(&token), search).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a body cut off at the limit: {body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path().join("a")).expect("store");
    let limited = SqliteStore::open_dir(dir.path().join("b")).expect("store");
    exports_work(Arc::new(store), Arc::new(limited)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_on_clickhouse() {
    let server = exim_pilot_testkit::Server::clickhouse();
    let database = format!("api_export_{}", std::process::id());
    let store = ClickHouseStore::connect(server.address(), &database)
        .await
        .expect("ClickHouse store");
    let limited = ClickHouseStore::connect(server.address(), &format!("{database}_small"))
        .await
        .expect("ClickHouse store");
    exports_work(Arc::new(store), Arc::new(limited)).await;
}
