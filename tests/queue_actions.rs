//! The queue against a real Exim with a real queue (the test kit's: its
//! own spool, deliveries deferred to a closed local port), in both modes:
//! `exim-pilot standalone` alone, and fleet mode's `tail`, `process` and
//! `serve` with a real Kafka-protocol broker and a real ClickHouse server.
//! The same scenario runs on both: the listing reaches the API, each
//! action changes the queue Exim lists, the results and the audit trail
//! say so, and what may not run does not.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exim_pilot_testkit::exim::Exim;
use exim_pilot_testkit::kafka::{create_topic, unique_topic};
use exim_pilot_testkit::Server;
use serde_json::{json, Value};

const HOST: &str = "mx.queue.test";
const PASSWORD: &str = "correct horse battery staple";

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

/// Adds the scenario's users with `store` (the options naming the store).
fn add_users(store: &[&str]) {
    for (name, role) in [("ops", "operator"), ("view", "viewer"), ("boss", "admin")] {
        let out = exim_pilot()
            .args(["user", "add", name, "--role", role])
            .args(store)
            .env("EXIM_PILOT_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "user add: {out:?}");
    }
}

/// Starts `command` with its standard error read on a thread of its own;
/// returns the child and the first address it prints after `http://` on
/// a line that says `serving` (the API's), if `want_address`.
fn spawn(mut command: Command, want_address: bool) -> (Child, String) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = String::new();
    if want_address {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "no address printed; the process said: {seen}");
            seen.push_str(&line);
            if let Some(rest) = line
                .split("http://")
                .nth(1)
                .filter(|_| line.contains("serving"))
            {
                addr = rest.trim().trim_end_matches("/graphql").to_string();
                break;
            }
        }
    }
    // Keep reading so the process never blocks on a full pipe; echo what
    // it says so a failure shows it.
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            eprint!("{line}");
            line.clear();
        }
    });
    (child, addr)
}

/// Ends a child the test started, by its PID.
fn terminate(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// A running `exim-pilot standalone` and its API address.
struct Standalone {
    child: Child,
    addr: String,
}

impl Standalone {
    fn start(exim: &Exim, data: &Path) -> Standalone {
        let mut command = exim_pilot();
        command
            .args(["standalone", "--quiet", "--host", HOST])
            .args(["--listen", "127.0.0.1:0", "--queue-interval", "1"])
            .arg("--log")
            .arg(exim.dir().join("log/mainlog"))
            .arg("--data")
            .arg(data)
            .arg("--exim")
            .arg(exim.binary())
            .arg("--exim-config")
            .arg(exim.config_file());
        let (child, addr) = spawn(command, true);
        Standalone { child, addr }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Fleet mode on one machine: a broker, a ClickHouse server, and the
/// mail server's `tail`, a `process` and a `serve`, all of the test's own.
struct Fleet {
    // Dropped first: the processes, then the servers.
    children: Vec<Child>,
    addr: String,
    _dir: tempfile::TempDir,
    _kafka: Server,
    _clickhouse: Server,
}

impl Fleet {
    fn start(exim: &Exim) -> Fleet {
        let kafka = Server::kafka();
        let clickhouse = Server::clickhouse();
        let brokers = kafka.address().to_string();
        let url = clickhouse.address().to_string();
        let raw = unique_topic("queue-raw");
        let queue = unique_topic("queue-queue");
        let commands = unique_topic("queue-commands");
        for topic in [&raw, &queue, &commands] {
            create_topic(&brokers, topic, 2);
        }
        let database = format!("queue_{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fleet.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{raw}\"\n\
                 queue_topic = \"{queue}\"\ncommand_topic = \"{commands}\"\n\n\
                 [clickhouse]\nurl = \"{url}\"\ndatabase = \"{database}\"\n"
            ),
        )
        .unwrap();
        let store = [
            "--clickhouse",
            url.as_str(),
            "--database",
            database.as_str(),
        ];

        // The processor creates the database; users come after it.
        let mut process = exim_pilot();
        process
            .args(["process", "--config"])
            .arg(&config)
            .args(["--group", &unique_topic("queue-group")]);
        let mut children = vec![spawn(process, false).0];
        wait_for_database(&url, &database);
        add_users(&store);

        let mut tail = exim_pilot();
        tail.args(["tail", "--host", HOST, "--config"])
            .arg(&config)
            .arg("--log")
            .arg(exim.dir().join("log/mainlog"))
            .arg("--checkpoints")
            .arg(dir.path().join("checkpoints"))
            .arg("--exim")
            .arg(exim.binary())
            .arg("--exim-config")
            .arg(exim.config_file())
            .args(["--queue-interval", "1"]);
        children.push(spawn(tail, false).0);

        let mut serve = exim_pilot();
        serve
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(store);
        let (child, addr) = spawn(serve, true);
        children.push(child);
        Fleet {
            children,
            addr,
            _dir: dir,
            _kafka: kafka,
            _clickhouse: clickhouse,
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            terminate(child);
        }
    }
}

/// Waits until the processor has created the users table of `database`.
fn wait_for_database(url: &str, database: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let query = format!("EXISTS TABLE {database}.users");
    loop {
        let answer = std::process::Command::new("curl")
            .args(["-sS", "--data-binary", &query, url])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&answer.stdout).trim() == "1" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the processor never created {database}: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
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

/// A real queue: three messages to one recipient and one to two, of
/// which one is delivered; every message has had a delivery attempt, so
/// the log has deferrals. Returns Exim, the three and the one.
fn real_queue() -> (Exim, Vec<String>, Vec<String>) {
    let exim = Exim::new();
    let ids = exim.submit_many(3, "alice@example.net", &["bob@example.com"]);
    let mixed = exim.submit_many(
        1,
        "carol@example.net",
        &["done@example.org", "erin@example.org"],
    );
    exim.queue_run();
    (exim, ids, mixed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_queue_actions_change_the_real_queue_and_are_audited() {
    let (exim, ids, mixed) = real_queue();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_users(&["--data", data.to_str().unwrap()]);
    let standalone = Standalone::start(&exim, &data);
    queue_scenario(&exim, &standalone.addr, &ids, &mixed).await;
    drop(standalone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_queue_actions_change_the_real_queue_and_are_audited() {
    let (exim, ids, mixed) = real_queue();
    let exim = std::sync::Arc::new(exim);
    let fleet = {
        let exim = exim.clone();
        tokio::task::spawn_blocking(move || Fleet::start(&exim))
            .await
            .unwrap()
    };
    queue_scenario(&exim, &fleet.addr, &ids, &mixed).await;
    drop(fleet);
}

/// What both modes must do, on the API at `addr`.
async fn queue_scenario(exim: &Exim, addr: &str, ids: &[String], mixed: &[String]) {
    let ops = Client::login(addr, "ops").await;
    let viewer = Client::login(addr, "view").await;
    let admin = Client::login(addr, "boss").await;

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
}
