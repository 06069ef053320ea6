//! The queue in `exim-pilot standalone`, against a real Exim with a real
//! queue (the test kit's: its own spool, deliveries deferred to a closed
//! local port): the listing reaches the API, each action changes the
//! queue Exim lists, the results and the audit trail say so, and what
//! may not run does not.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exim_pilot_testkit::exim::Exim;
use serde_json::{json, Value};

const HOST: &str = "mx.queue.test";
const PASSWORD: &str = "correct horse battery staple";

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

fn add_user(data: &Path, name: &str, role: &str) {
    let out = exim_pilot()
        .args(["user", "add", name, "--role", role, "--data"])
        .arg(data)
        .env("EXIM_PILOT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "user add: {out:?}");
}

/// A running `exim-pilot standalone` and its API address.
struct Standalone {
    child: Child,
    addr: String,
}

impl Standalone {
    fn start(exim: &Exim, data: &Path) -> Standalone {
        let mut child = exim_pilot()
            .args(["standalone", "--quiet", "--host", HOST])
            .args(["--listen", "127.0.0.1:0", "--queue-interval", "1"])
            .arg("--log")
            .arg(exim.dir().join("log/mainlog"))
            .arg("--data")
            .arg(data)
            .arg("--exim")
            .arg(exim.binary())
            .arg("--exim-config")
            .arg(exim.config_file())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim()
            .to_string();
        // Keep reading so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        Standalone { child, addr }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A logged-in API client.
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    async fn login(addr: &str, user: &str) -> Client {
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/graphql");
        let mut client = Client {
            http,
            url,
            token: String::new(),
        };
        let answer = client
            .query(
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p) \
                 { accessToken } }",
                json!({ "u": user, "p": PASSWORD }),
            )
            .await;
        client.token = answer["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no token for {user}: {answer}"))
            .to_string();
        client
    }

    async fn query(&self, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn data(&self, query: &str, variables: Value) -> Value {
        let answer = self.query(query, variables).await;
        assert!(answer["errors"].is_null(), "{query}: {answer}");
        answer["data"].clone()
    }

    /// The API's current queue of the host.
    async fn queue(&self) -> Vec<Value> {
        let data = self
            .data(
                "query($h: String!) { queue(host: $h, first: 100) { edges { node { \
                 id frozen sender recipients { address delivered } \
                 lastDeferral { reason text } } } } }",
                json!({ "h": HOST }),
            )
            .await;
        data["queue"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect()
    }

    async fn act(&self, action: &str, ids: &[&str], dry_run: bool) -> Value {
        self.query(
            "mutation($i: QueueActionInput!) { queueAction(input: $i) { dryRun ids \
             matched { id } job { id } } }",
            json!({ "i": {
                "host": HOST, "action": action, "ids": ids,
                "reason": "queue test", "dryRun": dry_run
            } }),
        )
        .await
    }

    /// Waits until every message of the job has a result; returns them.
    async fn results(&self, job: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let data = self
                .data(
                    "query($j: String!) { queueJob(id: $j) { complete \
                     results { id status output } } }",
                    json!({ "j": job }),
                )
                .await;
            if data["queueJob"]["complete"] == json!(true) {
                return data["queueJob"]["results"].as_array().unwrap().clone();
            }
            assert!(
                Instant::now() < deadline,
                "job {job} never completed: {data}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until `check` holds for the API's queue.
async fn wait_for_queue(client: &Client, what: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queue = client.queue().await;
        if check(&queue) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {queue:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ids_of(queue: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = queue
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn listed_ids(bp: &str) -> Vec<String> {
    let mut ids: Vec<String> = bp
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.len() >= 16 && w.as_bytes().get(6) == Some(&b'-'))
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_actions_change_the_real_queue_and_are_audited() {
    let exim = Exim::new();
    let ids = exim.submit_many(3, "alice@example.net", &["bob@example.com"]);
    let mixed = exim.submit_many(
        1,
        "carol@example.net",
        &["done@example.org", "erin@example.org"],
    );
    // Every message gets a delivery attempt: deferrals in the log, and
    // the `done` recipient delivered.
    exim.queue_run();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (name, role) in [("ops", "operator"), ("view", "viewer"), ("boss", "admin")] {
        add_user(&data, name, role);
    }
    let standalone = Standalone::start(&exim, &data);
    let ops = Client::login(&standalone.addr, "ops").await;
    let viewer = Client::login(&standalone.addr, "view").await;
    let admin = Client::login(&standalone.addr, "boss").await;

    // The listing reaches the API: the same messages as `exim -bp`, as
    // many as `exim -bpc`, with the lifecycle's last deferral.
    let expected = listed_ids(&exim.bp());
    assert_eq!(expected.len() as u64, exim.bpc());
    assert_eq!(expected.len(), 4);
    wait_for_queue(&ops, "the listing with deferrals", |q| {
        ids_of(q) == expected && q.iter().all(|m| !m["lastDeferral"].is_null())
    })
    .await;
    let queue = ops.queue().await;
    let mixed_entry = queue.iter().find(|m| m["id"] == json!(mixed[0])).unwrap();
    assert_eq!(
        mixed_entry["recipients"],
        json!([
            { "address": "done@example.org", "delivered": true },
            { "address": "erin@example.org", "delivered": false },
        ])
    );
    let health = ops
        .data(
            "query($h: String) { queueHealth(host: $h) { figures { messages frozen } deferred } }",
            json!({ "h": HOST }),
        )
        .await;
    assert_eq!(health["queueHealth"][0]["figures"]["messages"], json!(4));
    assert_eq!(health["queueHealth"][0]["deferred"], json!(4));

    // A viewer may look but not act; the refusal runs nothing.
    let refused = viewer.act("FREEZE", &[&ids[0]], false).await;
    assert!(!refused["errors"].is_null(), "{refused}");
    // A malformed id refuses the whole request before anything runs.
    let malformed = ops
        .act("FREEZE", &[&ids[0], "1abcde-../../etc"], false)
        .await;
    assert!(!malformed["errors"].is_null(), "{malformed}");
    assert!(!exim.bp().contains("frozen"), "{}", exim.bp());

    // A dry run says what it would touch and touches nothing.
    let dry = ops.act("REMOVE", &[&ids[1]], true).await;
    assert_eq!(dry["data"]["queueAction"]["ids"], json!([ids[1]]), "{dry}");
    assert!(dry["data"]["queueAction"]["job"].is_null());
    assert_eq!(exim.bpc(), 4);

    // Freeze: Exim lists the message frozen, and so does the API.
    let job = ops.act("FREEZE", &[&ids[0]], false).await;
    let job_id = job["data"]["queueAction"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let results = ops.results(&job_id).await;
    assert_eq!(results[0]["status"], json!("DONE"), "{results:?}");
    assert!(
        exim.bp()
            .lines()
            .any(|l| l.contains(&ids[0]) && l.contains("*** frozen ***")),
        "{}",
        exim.bp()
    );
    wait_for_queue(&ops, "the frozen message", |q| {
        q.iter()
            .any(|m| m["id"] == json!(ids[0]) && m["frozen"] == json!(true))
    })
    .await;

    // Thaw it again.
    let job = ops.act("THAW", &[&ids[0]], false).await;
    let job_id = job["data"]["queueAction"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ops.results(&job_id).await[0]["status"], json!("DONE"));
    assert!(!exim.bp().contains("frozen"), "{}", exim.bp());

    // Deliver now: a new attempt, deferred again, in Exim's own log.
    let attempts = |log: &str| {
        log.lines()
            .filter(|l| l.contains(&ids[2]) && l.contains("=="))
            .count()
    };
    let before = attempts(&exim.mainlog());
    let job = ops.act("DELIVER", &[&ids[2]], false).await;
    let job_id = job["data"]["queueAction"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    ops.results(&job_id).await;
    assert!(attempts(&exim.mainlog()) > before, "{}", exim.mainlog());

    // Remove: gone from Exim's queue and from the API's.
    let job = ops.act("REMOVE", &[&ids[1]], false).await;
    let job_id = job["data"]["queueAction"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ops.results(&job_id).await[0]["status"], json!("DONE"));
    assert!(!listed_ids(&exim.bp()).contains(&ids[1]));
    assert_eq!(exim.bpc(), 3);
    wait_for_queue(&ops, "the removal", |q| {
        q.len() == 3 && !q.iter().any(|m| m["id"] == json!(ids[1]))
    })
    .await;

    // Headers of a queued message for an operator, not for a viewer.
    let view = "query($h: String!, $i: String!) { queuedMessage(host: $h, id: $i, view: HEADERS) }";
    let headers = ops.data(view, json!({ "h": HOST, "i": ids[0] })).await;
    let text = headers["queuedMessage"].as_str().unwrap();
    assert!(text.contains("alice@example.net"), "{text}");
    let refused_view = viewer.query(view, json!({ "h": HOST, "i": ids[0] })).await;
    assert!(!refused_view["errors"].is_null(), "{refused_view}");

    // The audit trail: the viewer's refusal, each job and each result.
    let audit = admin
        .data(
            "{ auditLog(first: 200) { nodes { actor action outcome params } } }",
            json!({}),
        )
        .await;
    let entries: Vec<&Value> = audit["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let has = |actor: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["actor"] == json!(actor)
                && e["action"] == json!(action)
                && e["outcome"] == json!(outcome)
        })
    };
    assert!(has("view", "queue_freeze", "denied"), "{entries:?}");
    assert!(has("ops", "queue_freeze", "failed"), "{entries:?}");
    assert!(has("ops", "queue_remove", "dry_run"), "{entries:?}");
    for action in [
        "queue_freeze",
        "queue_thaw",
        "queue_deliver",
        "queue_remove",
    ] {
        let results = entries
            .iter()
            .filter(|e| e["action"] == json!(action) && e["actor"] == json!("ops"))
            .filter(|e| !e["params"]["status"].is_null())
            .count();
        assert_eq!(results, 1, "one result entry for {action}: {entries:?}");
    }
    assert!(has("view", "queue_view", "denied"), "{entries:?}");
    drop(standalone);
}
