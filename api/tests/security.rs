//! Security of the API over real HTTP and WebSocket connections: logins
//! that say nothing, tokens that are refused, roles, limits, and the
//! close codes of the subscription protocol.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use exim_pilot_api::auth::{Claims, Key, Keyring};
use exim_pilot_api::{ApiConfig, LiveBatch};
use exim_pilot_store::{Role, SqliteStore};
use serde_json::{json, Value};

use common::*;

/// Trades a refresh token for new tokens.
const REFRESH: &str =
    "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    (start(Arc::new(store), test_config()).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_disabled_user_look_the_same() {
    let (server, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    server
        .data(
            &admin,
            "mutation { updateUser(name: \"val\", disabled: true) { disabled } }",
            json!({}),
        )
        .await;

    let wrong = server.login("root", "not-the-password-1").await;
    let unknown = server.login("nobody", "not-the-password-1").await;
    let disabled = server.login("val", VIEWER_PASSWORD).await;
    assert_eq!(error_code(&wrong), "INVALID_CREDENTIALS", "{wrong}");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, disabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_one_account_is_slowed_down() {
    let (server, _dir) = server().await;
    for _ in 0..3 {
        assert_eq!(
            error_code(&server.login("root", "wrong-password-9").await),
            "INVALID_CREDENTIALS"
        );
    }
    // Now even the right password has to wait.
    let v = server.login("root", ADMIN_PASSWORD).await;
    assert_eq!(error_code(&v), "THROTTLED", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_the_right_password_during_a_wait_does_not_lengthen_it() {
    let (server, _dir) = server().await;
    for _ in 0..3 {
        server.login("root", "wrong-password-9").await;
    }

    // The wait is one second; retrying through it, from here or from
    // elsewhere, is refused without being counted.
    for _ in 0..5 {
        let v = server.login("root", ADMIN_PASSWORD).await;
        assert_eq!(error_code(&v), "THROTTLED", "{v}");
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let v = server.login("root", ADMIN_PASSWORD).await;
    assert!(v["errors"].is_null(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_login_aliases_are_refused_and_count_as_attempts() {
    let (server, _dir) = server().await;
    let fields: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "a{i}: login(username: \"root\", password: \"guess-number-{i}\") {{ accessToken }}"
            )
        })
        .collect();
    let query = format!("mutation {{ {} }}", fields.join(" "));
    let (status, v) = server.post(None, json!({ "query": query })).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(error_code(&v), "BATCH_LIMIT");

    let v = server.login("root", ADMIN_PASSWORD).await;
    assert_eq!(error_code(&v), "THROTTLED", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_under_the_limit_each_count() {
    let (server, _dir) = server().await;
    let fields: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "a{i}: login(username: \"root\", password: \"guess-number-{i}\") {{ accessToken }}"
            )
        })
        .collect();
    let query = format!("mutation {{ {} }}", fields.join(" "));
    let (_, v) = server.post(None, json!({ "query": query })).await;
    let codes: Vec<String> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        codes,
        [
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "THROTTLED",
            "THROTTLED"
        ]
    );
}

fn sign(key: &[u8], claims: &Claims) -> String {
    Keyring {
        keys: vec![Key::from_secret(key)],
    }
    .sign(claims)
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let (server, _dir) = server().await;
    let good = server.token("root", ADMIN_PASSWORD).await;
    let me = "{ me { name } }";
    assert!(server.query(Some(&good), me, json!({})).await["errors"].is_null());

    // The claims of the good token, to forge others from.
    let payload = good.split('.').nth(1).expect("payload");
    let claims: Claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims");
    let now = chrono::Utc::now().timestamp();

    let header = URL_SAFE_NO_PAD.encode(
        json!({ "alg": "none", "typ": "JWT", "kid": Key::from_secret(SECRET).kid }).to_string(),
    );
    let alg_none = format!("{header}.{payload}.");
    let wrong_key = sign(b"another secret of the same length as ours...", &claims);
    let wrong_audience = sign(
        SECRET,
        &Claims {
            aud: "someone-else".into(),
            ..claims.clone()
        },
    );
    let wrong_issuer = sign(
        SECRET,
        &Claims {
            iss: "someone-else".into(),
            ..claims.clone()
        },
    );
    let expired = sign(
        SECRET,
        &Claims {
            iat: now - 7200,
            nbf: now - 7200,
            exp: now - 3600,
            ..claims.clone()
        },
    );
    let not_yet = sign(
        SECRET,
        &Claims {
            nbf: now + 3600,
            exp: now + 7200,
            ..claims.clone()
        },
    );
    let other_session = sign(
        SECRET,
        &Claims {
            sid: "made-up".into(),
            ..claims.clone()
        },
    );
    for (what, token) in [
        ("alg none", alg_none),
        ("wrong key", wrong_key),
        ("wrong audience", wrong_audience),
        ("wrong issuer", wrong_issuer),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("unknown session", other_session),
        ("garbage", "abc.def.ghi".to_string()),
    ] {
        let (status, v) = server.post(Some(&token), json!({ "query": me })).await;
        assert_eq!(status, 401, "{what}: {v}");
        assert_eq!(error_code(&v), "UNAUTHENTICATED", "{what}");
    }
    // The server's own signature is what made the difference.
    let resigned = sign(SECRET, &claims);
    assert!(server.query(Some(&resigned), me, json!({})).await["errors"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_stop_working_once_revoked() {
    let (server, _dir) = server().await;
    let (_, first) = server.tokens("root", ADMIN_PASSWORD).await;

    let v = server.query(None, REFRESH, json!({ "t": first })).await;
    let second = v["data"]["refresh"]["refreshToken"]
        .as_str()
        .expect("rotated")
        .to_string();
    let access = v["data"]["refresh"]["accessToken"]
        .as_str()
        .expect("access")
        .to_string();
    assert_ne!(first, second);

    // The old token is refused.
    let v = server.query(None, REFRESH, json!({ "t": first })).await;
    assert_eq!(error_code(&v), "UNAUTHENTICATED", "{v}");

    // ... and using it revoked the session it was copied from.
    let v = server.query(None, REFRESH, json!({ "t": second })).await;
    assert_eq!(error_code(&v), "UNAUTHENTICATED", "{v}");
    let (status, _) = server
        .post(Some(&access), json!({ "query": "{ me { name } }" }))
        .await;
    assert_eq!(status, 401);

    // Logging out revokes both tokens of the session.
    let (access, refresh_token) = server.tokens("root", ADMIN_PASSWORD).await;
    server.data(&access, "mutation { logout }", json!({})).await;
    let v = server
        .query(None, REFRESH, json!({ "t": refresh_token }))
        .await;
    assert_eq!(error_code(&v), "UNAUTHENTICATED", "{v}");
    let (status, _) = server
        .post(Some(&access), json!({ "query": "{ me { name } }" }))
        .await;
    assert_eq!(status, 401);

    // Everything is in the audit trail.
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let audit = server
        .data(
            &admin,
            "{ auditLog(first: 100) { nodes { action outcome } } }",
            json!({}),
        )
        .await;
    let seen: Vec<(String, String)> = audit["auditLog"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["action"].as_str().unwrap_or("").into(),
                n["outcome"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for expected in [
        ("token_refresh", "ok"),
        ("token_refresh", "failed"),
        ("logout", "ok"),
        ("login", "ok"),
        ("user_add", "ok"),
    ] {
        assert!(
            seen.iter().any(|(a, o)| a == expected.0 && o == expected.1),
            "{expected:?} not in {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_refresh_token_for_a_known_session_does_not_end_it() {
    let (server, _dir) = server().await;
    let (access, genuine) = server.tokens("root", ADMIN_PASSWORD).await;

    // Anyone can read the session id from an access token.
    let payload = access.split('.').nth(1).expect("payload");
    let claims: Claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims");
    let (_, genuine_rest) = genuine.split_once('.').expect("session prefix");
    for forged in [
        format!("{}.AAAA", claims.sid),
        format!("{}.AAAA.AAAA", claims.sid),
        format!("{}.{}", claims.sid, genuine_rest.replace('.', "")),
    ] {
        let v = server.query(None, REFRESH, json!({ "t": forged })).await;
        assert_eq!(error_code(&v), "UNAUTHENTICATED", "{v}");
    }

    // The session lives on: its access token and refresh token still work.
    assert!(server
        .query(Some(&access), "{ me { name } }", json!({}))
        .await["errors"]
        .is_null());
    let v = server.query(None, REFRESH, json!({ "t": genuine })).await;
    assert!(v["errors"].is_null(), "{v}");

    // The refusals are audited as failed refreshes.
    let audit = server
        .data(
            &access,
            "{ auditLog(first: 100) { nodes { action outcome } } }",
            json!({}),
        )
        .await;
    let failed = audit["auditLog"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["action"] == "token_refresh" && n["outcome"] == "failed")
        .count();
    assert_eq!(failed, 3, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_calling_an_admin_mutation_is_refused_and_audited() {
    let (server, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let v = server
        .query(
            Some(&viewer),
            "mutation { createUser(name: \"eve\", role: \"admin\", password: \"Mq3vX8rT2kLp-eve\") { user { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&v), "FORBIDDEN", "{v}");
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let users = server.data(&admin, "{ users { name } }", json!({})).await;
    assert!(!users.to_string().contains("eve"));
    let audit = server
        .data(
            &admin,
            "{ auditLog(filter: { actor: \"val\", action: \"access\" }) { nodes { target outcome role } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        audit["auditLog"]["nodes"],
        json!([{ "target": "createUser", "outcome": "denied", "role": "viewer" }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_users_with_checked_passwords() {
    let (server, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let create =
        "mutation($p: String) { createUser(name: \"op\", role: \"operator\", password: $p) \
                  { user { name role } generatedPassword } }";
    let weak = server
        .query(Some(&admin), create, json!({ "p": "password1234" }))
        .await;
    assert_eq!(error_code(&weak), "BAD_USER_INPUT", "{weak}");
    let made = server.data(&admin, create, json!({ "p": null })).await;
    let generated = made["createUser"]["generatedPassword"]
        .as_str()
        .expect("generated");
    let token = server.token("op", generated).await;
    let me = server.data(&token, "{ me { role } }", json!({})).await;
    assert_eq!(me["me"]["role"], "operator");

    // A name taken, and a change of a user who does not exist, say so.
    let again = server
        .query(Some(&admin), create, json!({ "p": null }))
        .await;
    assert_eq!(error_code(&again), "ALREADY_EXISTS", "{again}");
    let nobody = server
        .query(
            Some(&admin),
            "mutation { updateUser(name: \"nobody\", disabled: true) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&nobody), "NOT_FOUND", "{nobody}");

    // A viewer of one mail server asking about another is told so.
    server
        .data(
            &admin,
            "mutation { createUser(name: \"scoped\", role: \"viewer\", \
             password: \"Vx7qLm2pWz9k-sc\", hosts: [\"mx9.example\"]) { user { name } } }",
            json!({}),
        )
        .await;
    let scoped = server.token("scoped", "Vx7qLm2pWz9k-sc").await;
    let other = server
        .query(
            Some(&scoped),
            "{ message(host: \"mx1.example\", id: \"1vcY0u-000001-58\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&other), "FORBIDDEN", "{other}");
    let said = other["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(said.contains("may not see mail server"), "{other}");

    // Changing one's password ends one's sessions.
    server
        .data(
            &token,
            "mutation($c: String!) { changePassword(currentPassword: $c, newPassword: \"Jd8wQm4zRt6y-op\") }",
            json!({ "c": generated }),
        )
        .await;
    let (status, _) = server
        .post(Some(&token), json!({ "query": "{ me { role } }" }))
        .await;
    assert_eq!(status, 401);
    server.token("op", "Jd8wQm4zRt6y-op").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_the_depth_or_complexity_limit_are_refused_before_running() {
    let (server, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let v = server.query(Some(&viewer), deep, json!({})).await;
    assert!(v["data"].is_null(), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested too deep"),
        "{v}"
    );

    let complex = "{ messages(first: 500) { edges { node { id sender recipients { address attempts { at result code text } } } } } }";
    let v = server.query(Some(&viewer), complex, json!({})).await;
    assert!(v["data"].is_null(), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("too complex"),
        "{v}"
    );

    // A page size out of range is refused for what it is, whatever the
    // size: the limit counts it as the largest page.
    for first in [0, 501, 100_000_000] {
        let query = format!("{{ messages(first: {first}) {{ edges {{ node {{ id }} }} }} }}");
        let v = server.query(Some(&viewer), &query, json!({})).await;
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("first must be between 1 and 500"),
            "{v}"
        );
    }
    // So are rankings and line searches asked for no rows or fewer.
    for (query, says) in [
        (
            "{ topSenders(top: 0) { sender } }",
            "top must be between 1 and",
        ),
        (
            "{ topRecipients(top: -1) { address } }",
            "top must be between 1 and",
        ),
        (
            "{ deliverability(top: 0) { key } }",
            "top must be between 1 and",
        ),
        (
            "{ logLines(filter: { text: \"x\", limit: 0 }) { text } }",
            "limit must be between 1 and 1000",
        ),
    ] {
        let v = server.query(Some(&viewer), query, json!({})).await;
        let message = v["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{query}: {v}");
    }

    // Neither reached a resolver: resolvers of refused queries would have
    // audited nothing either way, so check a resolver's own refusal is
    // absent: a viewer asking for the audit trail that deep is refused by
    // the limit, not by the role check.
    let deep_audit = format!(
        "{{ auditLog {{ nodes {{ actor }} }} a: {} }}",
        &deep[2..deep.len() - 2]
    );
    let v = server.query(Some(&viewer), &deep_audit, json!({})).await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested too deep"),
        "{v}"
    );
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let audit = server
        .data(
            &admin,
            "{ auditLog(filter: { action: \"access\" }) { nodes { target } } }",
            json!({}),
        )
        .await;
    assert_eq!(audit["auditLog"]["nodes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_limit_are_refused() {
    let (server, _dir) = server().await;
    let viewer = server.token("val", VIEWER_PASSWORD).await;
    let one = json!({ "query": "{ me { name } }" });
    let (status, v) = server
        .post(Some(&viewer), Value::Array(vec![one.clone(); 3]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    let (status, v) = server
        .post(Some(&viewer), Value::Array(vec![one; 11]))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&v), "BATCH_LIMIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_size_limit_are_refused() {
    let (server, _dir) = server().await;
    let big = "x".repeat(300 * 1024);
    let resp = server
        .http
        .post(server.url())
        .json(&json!({ "query": big }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_close_codes_follow_the_protocol() {
    let (server, _dir) = server().await;
    let subscribe = json!({ "type": "subscribe", "id": "1",
        "payload": { "query": "subscription { logRecords { text } }" } });

    // No token, a bad token: 4403 and no acknowledgement.
    for payload in [
        json!({}),
        json!({ "Authorization": "Bearer abc.def.ghi" }),
        json!({ "token": "nope" }),
    ] {
        let mut ws = connect(&server).await;
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        assert_eq!(next(&mut ws).await, Err(4403), "{payload}");
    }

    // A subscribe before the acknowledgement: 4401.
    let mut ws = connect(&server).await;
    send(&mut ws, subscribe.clone()).await;
    assert_eq!(next(&mut ws).await, Err(4401));

    // Nothing at all: 4408 once the initialisation time is over.
    let mut ws = connect(&server).await;
    assert_eq!(next(&mut ws).await, Err(4408));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_receive_what_the_pipeline_commits() {
    let (server, _dir) = server().await;
    let token = server.token("val", VIEWER_PASSWORD).await;
    for payload in [
        json!({ "Authorization": format!("Bearer {token}") }),
        json!({ "authorization": token }),
        json!({ "token": token }),
        json!({ "headers": { "authorization": format!("Bearer {token}") } }),
    ] {
        let mut ws = connect(&server).await;
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        assert_eq!(
            next(&mut ws).await,
            Ok(json!({ "type": "connection_ack" })),
            "{payload}"
        );
    }

    let mut ws = connect(&server).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": token } }),
    )
    .await;
    assert_eq!(next(&mut ws).await, Ok(json!({ "type": "connection_ack" })));
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "lines",
            "payload": { "query": "subscription { logRecords(filter: { text: \"=>\" }) { host text kind } }" } }),
    )
    .await;
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "msgs",
            "payload": { "query": "subscription { messageChanges { id state } }" } }),
    )
    .await;

    // Give the subscriptions a moment to start, then publish the corpus.
    let live = server.state.live.clone();
    for _ in 0..100 {
        if live.receiver_count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live.receiver_count(), 2);
    let files: Vec<_> = ["mainlog"]
        .iter()
        .map(|f| corpus("s01_core_all").join(f))
        .collect();
    let mut importer = exim_pilot_ingest::Importer::new(&files, HOST).expect("corpus");
    let mut pipeline = exim_pilot_processor::pipeline::Pipeline::new(
        exim_pilot_schema::Zone::Utc,
        exim_pilot_processor::correlate::CorrelatorConfig::default(),
    );
    let records = importer.next_batch(200).expect("read").expect("records");
    let batch = pipeline.process(records, false);
    live.send(Arc::new(LiveBatch::of(&batch)))
        .expect("published");

    let mut lines = 0;
    let mut messages = 0;
    while lines == 0 || messages == 0 {
        let msg = next(&mut ws).await.expect("a message");
        assert_eq!(msg["type"], "next", "{msg}");
        match msg["id"].as_str() {
            Some("lines") => {
                let text = msg["payload"]["data"]["logRecords"]["text"]
                    .as_str()
                    .expect("text");
                assert!(text.contains("=>"), "{text}");
                lines += 1;
            }
            Some("msgs") => messages += 1,
            other => panic!("unexpected id {other:?}"),
        }
    }

    // A second subscribe with a used id closes with 4409.
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "lines",
            "payload": { "query": "subscription { logRecords { text } }" } }),
    )
    .await;
    loop {
        match next(&mut ws).await {
            Ok(_) => continue,
            Err(code) => {
                assert_eq!(code, 4409);
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_text_search_of_eighty_thousand_words_is_refused_at_once() {
    let (server, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let search = "query($t: String!) { logLines(filter: { text: $t }) { text } }";

    let started = std::time::Instant::now();
    let v = server
        .query(Some(&admin), search, json!({ "t": "a* ".repeat(80_000) }))
        .await;
    assert_eq!(error_code(&v), "BAD_USER_INPUT", "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("search for at most"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let v = server
        .query(Some(&admin), search, json!({ "t": "a ".repeat(33) }))
        .await;
    assert_eq!(error_code(&v), "BAD_USER_INPUT", "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("33 words"), "{message}");

    let v = server
        .query(Some(&admin), search, json!({ "t": "a ".repeat(32) }))
        .await;
    assert!(v["errors"].is_null(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_texts_with_a_nul_or_too_long_are_refused_as_bad_input() {
    let (server, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let lines = "query($t: String!) { logLines(filter: { text: $t }) { text } }";
    let messages =
        "query($s: String!) { messages(filter: { subject: $s }) { edges { node { id } } } }";

    for (query, variables) in [
        (lines, json!({ "t": "ali\u{0}ce" })),
        (messages, json!({ "s": "\u{0}zzzz-not-present" })),
        (messages, json!({ "s": "%_".repeat(100_000) })),
    ] {
        let v = server.query(Some(&admin), query, variables).await;
        assert_eq!(error_code(&v), "BAD_USER_INPUT", "{v}");
        let message = v["errors"][0]["message"].as_str().unwrap_or("");
        assert!(!message.contains("database"), "{message}");
    }

    // Wildcards in a subject are matched literally.
    let v = server
        .query(Some(&admin), messages, json!({ "s": "%" }))
        .await;
    assert!(v["errors"].is_null(), "{v}");
}

/// The audit entries of `action`, newest first, as the admin reads them.
async fn audit_entries(server: &TestServer, admin: &str, action: &str) -> Vec<Value> {
    let data = server
        .data(
            admin,
            "query($a: String!) { auditLog(filter: { action: $a }, first: 100) \
             { nodes { actor target params outcome } } }",
            json!({ "a": action }),
        )
        .await;
    data["auditLog"]["nodes"]
        .as_array()
        .expect("audit entries")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_an_overlong_name_is_refused_as_bad_input_and_not_stored() {
    let (server, _dir) = server().await;
    let name = "x".repeat(250_000);

    // More attempts than the slowdown lets through: none is stored,
    // counted or echoed whole.
    for _ in 0..5 {
        let v = server.login(&name, "not-the-password-1").await;
        assert_eq!(
            error_code(&v),
            "BAD_USER_INPUT",
            "{}",
            &v.to_string()[..200]
        );
        assert!(v.to_string().len() < 1_000, "the answer echoes the name");
    }
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let logins = audit_entries(&server, &admin, "login").await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["target"], "root");

    // A name of the longest length a user may have is still a login.
    let v = server.login(&"y".repeat(64), "not-the-password-1").await;
    assert_eq!(error_code(&v), "INVALID_CREDENTIALS", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_keep_a_bounded_part_of_what_callers_sent() {
    let (server, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let name = "z".repeat(100_000);
    let host = "h".repeat(50_000);
    let v = server
        .query(
            Some(&admin),
            "mutation($n: String!, $h: String!) { updateUser(name: $n, hosts: [$h]) { name } }",
            json!({ "n": name, "h": host }),
        )
        .await;
    assert_eq!(error_code(&v), "NOT_FOUND", "{}", &v.to_string()[..200]);

    let entries = audit_entries(&server, &admin, "user_update").await;
    assert_eq!(entries.len(), 1);
    let entry = entries[0].to_string();
    assert!(entry.len() < 2_000, "an entry of {} bytes", entry.len());
    let target = entries[0]["target"].as_str().expect("target");
    assert!(target.starts_with(&"z".repeat(256)), "{target}");
    assert!(target.ends_with("[cut, 100000 characters]"), "{target}");
    let kept = entries[0]["params"]["hosts"][0].as_str().expect("host");
    assert!(kept.ends_with("[cut, 50000 characters]"), "{kept}");
}

/// An acknowledged subscription socket of `token`.
async fn acknowledged(server: &TestServer, token: &str) -> Ws {
    let mut ws = connect(server).await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": token } }),
    )
    .await;
    assert_eq!(next(&mut ws).await, Ok(json!({ "type": "connection_ack" })));
    ws
}

/// Subscribes `id` to the log records.
async fn subscribe_records(ws: &mut Ws, id: &str) {
    send(
        ws,
        json!({ "type": "subscribe", "id": id,
            "payload": { "query": "subscription { logRecords { text } }" } }),
    )
    .await;
}

/// Waits until `n` subscriptions follow the live batches.
async fn until_following(server: &TestServer, n: usize) {
    for _ in 0..200 {
        if server.state.live.receiver_count() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(server.state.live.receiver_count(), n);
}

/// The first batch of the core corpus, as the pipeline commits it.
fn corpus_batch() -> Arc<LiveBatch> {
    let files = [corpus("s01_core_all").join("mainlog")];
    let mut importer = exim_pilot_ingest::Importer::new(&files, HOST).expect("corpus");
    let mut pipeline = exim_pilot_processor::pipeline::Pipeline::new(
        exim_pilot_schema::Zone::Utc,
        exim_pilot_processor::correlate::CorrelatorConfig::default(),
    );
    let records = importer.next_batch(200).expect("read").expect("records");
    Arc::new(LiveBatch::of(&pipeline.process(records, false)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_capped_per_connection_and_per_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    let config = ApiConfig {
        ws_max_subscriptions: 3,
        ws_max_user_subscriptions: 5,
        ..test_config()
    };
    let server = start(Arc::new(store), config).await;
    let token = server.token("val", VIEWER_PASSWORD).await;

    // The fourth on one socket is refused; the socket stays open.
    let mut first = acknowledged(&server, &token).await;
    for id in ["a", "b", "c", "d"] {
        subscribe_records(&mut first, id).await;
    }
    let refused = next(&mut first).await.expect("an answer");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "d");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    until_following(&server, 3).await;

    // The sixth of the user, on another socket, is refused too.
    let mut second = acknowledged(&server, &token).await;
    for id in ["e", "f", "g"] {
        subscribe_records(&mut second, id).await;
    }
    let refused = next(&mut second).await.expect("an answer");
    assert_eq!(refused["id"], "g", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    until_following(&server, 5).await;

    // Ending one makes room for another.
    send(&mut first, json!({ "type": "complete", "id": "a" })).await;
    until_following(&server, 4).await;
    subscribe_records(&mut second, "g").await;
    until_following(&server, 5).await;

    // Closing a socket gives its user's places back.
    drop(first);
    until_following(&server, 3).await;
    let mut third = acknowledged(&server, &token).await;
    subscribe_records(&mut third, "i").await;
    subscribe_records(&mut third, "j").await;
    until_following(&server, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told_what_it_skipped() {
    let (server, _dir) = server().await;
    let token = server.token("val", VIEWER_PASSWORD).await;
    let mut ws = acknowledged(&server, &token).await;
    subscribe_records(&mut ws, "lines").await;
    until_following(&server, 1).await;

    // Far more batches than the broadcast keeps, at once.
    let batch = corpus_batch();
    assert!(batch.records.len() > 10);
    for _ in 0..500 {
        let _ = server.state.live.send(Arc::clone(&batch));
    }

    let mut lines = 0;
    let notice = loop {
        let msg = next(&mut ws).await.expect("a message");
        assert_eq!(msg["type"], "next", "{msg}");
        if msg["payload"]["errors"].is_array() {
            break msg;
        }
        lines += 1;
    };
    let error = &notice["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "LAGGED", "{notice}");
    assert!(
        error["extensions"]["skipped"].as_u64().unwrap_or(0) > 0,
        "{notice}"
    );
    assert!(lines < 500 * batch.records.len());

    // The subscription goes on after the notice. A slow machine may still
    // be sending when the subscriber catches up, so it can fall behind again.
    let msg = loop {
        let msg = next(&mut ws).await.expect("a message");
        if msg["payload"]["errors"][0]["extensions"]["code"] != "LAGGED" {
            break msg;
        }
    };
    assert!(
        msg["payload"]["data"]["logRecords"]["text"].is_string(),
        "{msg}"
    );
}

/// Creates the operator olga; her access token.
async fn operator_olga(server: &TestServer, admin: &str) -> String {
    server
        .data(
            admin,
            "mutation { createUser(name: \"olga\", role: \"operator\", \
             password: \"Pq7rWm3xLk9t-oper\") { generatedPassword } }",
            json!({}),
        )
        .await;
    server.token("olga", "Pq7rWm3xLk9t-oper").await
}

/// A server masking viewers' addresses whose sockets check their rights
/// every `recheck`.
async fn masking_server(recheck: Duration) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("store");
    let config = ApiConfig {
        mask_viewer_addresses: true,
        ws_recheck: recheck,
        ..test_config()
    };
    (start(Arc::new(store), config).await, dir)
}

/// The close code ending `ws`, skipping what comes before it.
async fn closed(ws: &mut Ws) -> u16 {
    loop {
        if let Err(code) = next(ws).await {
            return code;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_soon_after_their_user_is_disabled_or_logs_out() {
    let (server, _dir) = server().await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let val = server.token("val", VIEWER_PASSWORD).await;
    let olga = operator_olga(&server, &admin).await;
    let mut disabled = acknowledged(&server, &val).await;
    subscribe_records(&mut disabled, "lines").await;
    let mut logged_out = acknowledged(&server, &olga).await;
    subscribe_records(&mut logged_out, "lines").await;
    until_following(&server, 2).await;

    // Within the default recheck time (the helper waits 20 s at most).
    server
        .data(
            &admin,
            "mutation { updateUser(name: \"val\", disabled: true) { disabled } }",
            json!({}),
        )
        .await;
    server.data(&olga, "mutation { logout }", json!({})).await;
    assert_eq!(closed(&mut disabled).await, 4403);
    assert_eq!(closed(&mut logged_out).await, 4403);
    until_following(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_when_their_user_is_given_other_rights() {
    let (server, _dir) = masking_server(Duration::from_millis(200)).await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let olga = operator_olga(&server, &admin).await;
    let mut ws = acknowledged(&server, &olga).await;
    subscribe_records(&mut ws, "lines").await;
    until_following(&server, 1).await;

    server
        .data(
            &admin,
            "mutation { updateUser(name: \"olga\", role: \"viewer\") { role } }",
            json!({}),
        )
        .await;
    let ended = next(&mut ws).await.expect("an answer");
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["id"], "lines");
    assert_eq!(ended["payload"][0]["extensions"]["code"], "RIGHTS_CHANGED");
    until_following(&server, 0).await;

    // Subscribing again runs with the viewer's rights: addresses masked.
    subscribe_records(&mut ws, "again").await;
    until_following(&server, 1).await;
    let batch = corpus_batch();
    let _ = server.state.live.send(Arc::clone(&batch));
    let mut seen = 0;
    while seen < 20 {
        let msg = next(&mut ws).await.expect("a record");
        assert_eq!(msg["id"], "again", "{msg}");
        let text = msg["payload"]["data"]["logRecords"]["text"]
            .as_str()
            .expect("text");
        for word in text.split_whitespace().filter(|w| w.contains('@')) {
            let word = word.rsplit(['<', '(', '=']).next().unwrap_or(word);
            assert!(word.starts_with('*'), "unmasked in {text}");
        }
        seen += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_that_are_not_json_are_refused_with_415() {
    let (server, _dir) = server().await;
    let login = json!({
        "query": "mutation { login(username: \"root\", password: \"wrong-password-9\") \
                  { accessToken } }"
    })
    .to_string();
    let export = format!("http://{}/export.csv", server.addr);

    // What a page on another site may send without a preflight, and no
    // type at all.
    for url in [server.url(), export.clone()] {
        for kind in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut request = server.http.post(&url).body(login.clone());
            if let Some(kind) = kind {
                request = request.header("content-type", kind);
            }
            let response = request.send().await.expect("send");
            assert_eq!(response.status().as_u16(), 415, "{url} {kind:?}");
            let v: Value = response.json().await.expect("JSON answer");
            assert_eq!(error_code(&v), "UNSUPPORTED_MEDIA_TYPE", "{v}");
        }
    }

    // None of them reached the login: the right password is not slowed.
    for kind in [
        "application/json; charset=utf-8",
        "Application/GraphQL-Response+JSON",
    ] {
        let body = json!({
            "query": format!(
                "mutation {{ login(username: \"root\", password: \"{ADMIN_PASSWORD}\") \
                 {{ accessToken }} }}"
            )
        });
        let response = server
            .http
            .post(server.url())
            .header("content-type", kind)
            .body(body.to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 200, "{kind}");
        let v: Value = response.json().await.expect("JSON answer");
        assert!(v["data"]["login"]["accessToken"].is_string(), "{kind}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_committed_after_a_change_of_rights_is_sent_under_the_old_ones() {
    // Far off: only the check made before writing can see the change.
    let (server, _dir) = masking_server(Duration::from_secs(600)).await;
    let admin = server.token("root", ADMIN_PASSWORD).await;
    let olga = operator_olga(&server, &admin).await;
    let mut ws = acknowledged(&server, &olga).await;
    subscribe_records(&mut ws, "lines").await;
    until_following(&server, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let change = exim_pilot_api::auth::UserChange {
        role: Some(Role::Viewer),
        ..Default::default()
    };
    exim_pilot_api::auth::update_user(
        &*server.state.store,
        &exim_pilot_api::auth::Actor::command_line(),
        "olga",
        change,
    )
    .await
    .expect("demoted");
    let _ = server.state.live.send(corpus_batch());
    let first = next(&mut ws).await.expect("an answer");
    assert_eq!(first["type"], "error", "{first}");
    assert_eq!(first["payload"][0]["extensions"]["code"], "RIGHTS_CHANGED");
}
