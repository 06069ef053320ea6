//! Masked addresses (`mask_viewer_addresses`) over real HTTP and
//! WebSocket connections, on the corpus: a viewer finds no local part of
//! the logs anywhere in any answer, exports and subscriptions included;
//! an admin sees them whole; a viewer still searches by a whole address.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use exim_pilot_api::LiveBatch;
use exim_pilot_store::SqliteStore;
use serde_json::{json, Value};

use common::*;

const SCENARIO: &str = "s01_core_all";

/// Every local part of an address in the scenario's logs, lowercased,
/// and the bare local parts of its local deliveries (`=> alice <...>`).
fn local_parts() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for log in ["mainlog", "rejectlog", "paniclog"] {
        let text = std::fs::read_to_string(corpus(SCENARIO).join(log)).unwrap_or_default();
        for (i, _) in text.match_indices('@') {
            let before = &text[..i];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-+".contains(c)))
                .map_or(0, |p| p + 1);
            let local = before[start..].trim_start_matches('.');
            let domain = text[i + 1..].chars().next();
            if !local.is_empty() && domain.is_some_and(|c| c.is_ascii_alphanumeric()) {
                found.insert(local.to_lowercase());
            }
        }
    }
    assert!(found.len() > 20, "too few local parts: {found:?}");
    found
}

/// The local parts found in `text` (lowercased): as an address's local
/// part, or as a whole word.
fn leaks(text: &str, locals: &BTreeSet<String>) -> Vec<String> {
    let lower = text.to_lowercase();
    let word = |c: char| c.is_ascii_alphanumeric() || "._-+".contains(c);
    locals
        .iter()
        .filter(|l| {
            lower.match_indices(l.as_str()).any(|(i, _)| {
                let before = lower[..i].chars().next_back();
                let after = lower[i + l.len()..].chars().next();
                before.is_none_or(|c| !word(c)) && after.is_none_or(|c| !word(c) || c == '@')
            })
        })
        .cloned()
        .collect()
}

/// Queries covering every field that shows addresses or log text.
const QUERIES: &[&str] = &[
    "{ messages(first: 200) { edges { node { host id sender subject messageIdHeader clientIp \
       details recipients { address original lastText reason \
       attempts { text remoteHost transport } } rawLines { text kind } } } } }",
    "{ rejects(first: 500) { nodes { sender recipient reason clientIp class } } }",
    "{ topSenders(top: 1000) { sender messages } }",
    "{ topRecipients(top: 1000) { address messages } }",
    "{ deliverability(groupBy: SENDER, top: 1000) { key messages } }",
    "{ failureReasons { class samples } }",
    "{ logLines(filter: { text: \"test\", limit: 1000 }) { text kind } }",
    "{ logLines(filter: { text: \"lab\", limit: 1000 }) { text kind } }",
];

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    load_corpus(&store, SCENARIO).await;
    let config = exim_pilot_api::ApiConfig {
        mask_viewer_addresses: true,
        ..test_config()
    };
    (start(Arc::new(store), config).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_local_part_in_any_answer_and_an_admin_sees_them_all() {
    let (server, _dir) = server().await;
    let mut locals = local_parts();
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let admin = server.token("root", ADMIN_PASSWORD).await;

    // The API's own words (the reason class `quota`) are no leak of the
    // mailbox of the same name.
    let classes = server
        .data(
            &admin,
            "{ failureReasons { class } rejects(first: 500) { nodes { class } } }",
            json!({}),
        )
        .await;
    for class in classes.to_string().split('"') {
        locals.remove(class);
    }

    let mut admin_leaks = BTreeSet::new();
    for query in QUERIES {
        let seen = server.data(&viewer, query, json!({})).await.to_string();
        assert!(seen.len() > 100, "{query}: {seen}");
        let found = leaks(&seen, &locals);
        assert!(found.is_empty(), "{query} shows {found:?} to a viewer");
        assert!(seen.contains("*"), "{query}: nothing masked: {seen}");

        let whole = server.data(&admin, query, json!({})).await.to_string();
        admin_leaks.extend(leaks(&whole, &locals));
    }
    // The admin's answers hold the addresses, so the viewer's test above
    // could have failed.
    assert!(
        admin_leaks.len() * 10 >= locals.len() * 9,
        "{admin_leaks:?}"
    );
    assert!(admin_leaks.contains("ivan"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_finds_messages_by_a_whole_address_under_a_stable_mark() {
    let (server, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let query = "query($a: String) { messages(first: 500, filter: { sender: $a }) \
                 { edges { node { id sender } } } }";
    let data = server
        .data(&viewer, query, json!({ "a": "ivan@lab.test" }))
        .await;
    let edges = data["messages"]["edges"].as_array().expect("edges");
    assert!(edges.len() >= 2, "{data}");
    let senders: BTreeSet<&str> = edges
        .iter()
        .map(|e| e["node"]["sender"].as_str().expect("sender"))
        .collect();
    assert_eq!(senders.len(), 1, "one mailbox, one mark: {senders:?}");
    let mark = senders.iter().next().copied().unwrap_or_default();
    assert!(
        mark.starts_with('*') && mark.ends_with("@lab.test"),
        "{mark}"
    );

    // The same mailbox has the same mark in another answer.
    let ranked = server
        .data(&viewer, "{ topSenders(top: 1000) { sender } }", json!({}))
        .await;
    assert!(ranked.to_string().contains(mark), "{ranked}");

    // An admin's filter finds the same messages, unmasked.
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let whole = server
        .data(&admin, query, json!({ "a": "ivan@lab.test" }))
        .await;
    assert_eq!(
        whole["messages"]["edges"].as_array().map(Vec::len),
        Some(edges.len())
    );
    assert!(whole.to_string().contains("ivan@lab.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_csv_export_is_masked() {
    let (server, _dir) = server().await;
    let locals = local_parts();
    let body = json!({ "query": "query($after: String) { messages(first: 100, after: $after) \
        { edges { node { id sender recipients { address original lastText } \
          rawLines { text } } } pageInfo { hasNextPage endCursor } } }" });
    let mut texts = Vec::new();
    for (user, password) in [("val", VIEWER_PASSWORD), ("root", ADMIN_PASSWORD)] {
        let token = server.token(user, password).await;
        let response = server
            .http
            .post(format!("http://{}/export.csv", server.addr))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 200);
        texts.push(response.text().await.expect("CSV"));
    }
    let truth = ground_truth(SCENARIO);
    let messages = truth["totals"]["messages"].as_u64().expect("messages") as usize;
    assert!(texts[0].lines().count() > messages, "every page read");
    let found = leaks(&texts[0], &locals);
    assert!(found.is_empty(), "the viewer's export shows {found:?}");
    assert!(
        !leaks(&texts[1], &locals).is_empty(),
        "the admin's is whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_subscriptions_are_masked() {
    let (server, _dir) = server().await;
    let locals = local_parts();
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let mut ws = connect(&server).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {viewer}") } }),
    )
    .await;
    assert_eq!(next(&mut ws).await.expect("ack")["type"], "connection_ack");
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "lines",
            "payload": { "query": "subscription { logRecords { text } }" } }),
    )
    .await;
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "msgs", "payload": { "query":
            "subscription { messageChanges { sender details recipients { address lastText } } }" } }),
    )
    .await;
    let live = server.state.live.clone();
    for _ in 0..100 {
        if live.receiver_count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live.receiver_count(), 2);

    // The whole mainlog, as one committed batch.
    let files = vec![corpus(SCENARIO).join("mainlog")];
    let mut importer = exim_pilot_ingest::Importer::new(&files, HOST).expect("corpus");
    let mut pipeline = exim_pilot_processor::pipeline::Pipeline::new(
        exim_pilot_schema::Zone::Utc,
        exim_pilot_processor::correlate::CorrelatorConfig::default(),
    );
    let records = importer
        .next_batch(100_000)
        .expect("read")
        .expect("records");
    let batch = pipeline.process(records, true);
    let expected = batch.records.len() + batch.lifecycles.len();
    live.send(Arc::new(LiveBatch::of(&batch)))
        .expect("published");

    let mut seen = String::new();
    for _ in 0..expected {
        let msg: Value = next(&mut ws).await.expect("a message");
        assert_eq!(msg["type"], "next", "{msg}");
        seen.push_str(&msg["payload"].to_string());
    }
    assert!(seen.contains("@lab.test"), "domains stay");
    let found = leaks(&seen, &locals);
    assert!(found.is_empty(), "subscriptions show {found:?} to a viewer");
}
