//! Fleet mode from end to end: log files, `exim-pilot tail`, a real
//! Kafka-protocol broker, `exim-pilot process`, a real ClickHouse server.
//!
//! Two mail servers' logs (copies of two corpus scenarios) are written
//! little by little while two tailers follow them; one log is rotated by
//! renaming, the other by copytruncate. Two processors share the group;
//! one is killed with SIGKILL and restarted, the broker is down for half
//! a minute and so is ClickHouse. At the end the lifecycles read back
//! from ClickHouse must equal the ground truth, every record must be
//! stored once, and a replay from the beginning into a fresh database
//! must give the same lifecycles and the same report.
//!
//! A partition that a processor had paused during a store outage and that
//! came back to it after a rebalance used to stay paused (librdkafka keeps
//! a partition's pause across rebalances); this test found it, and
//! `tests/fleet_process.rs` pins it on its own.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exim_pilot_processor::parse::RecordReader;
use exim_pilot_schema::Lifecycle;
use exim_pilot_testkit::kafka::{create_topic, unique_topic};
use exim_pilot_testkit::Server;

mod support;

use support::stdout_of;

#[path = "../processor/tests/support/ground_truth.rs"]
mod ground_truth;

/// How long the test waits for anything before it fails.
const PATIENCE: Duration = Duration::from_secs(240);

/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(30);

/// Into how many pieces each log is cut for writing.
const CHUNKS: usize = 10;

/// How a host's mainlog is rotated halfway.
#[derive(Clone, Copy, PartialEq)]
enum Rotation {
    /// `mainlog` is renamed to `mainlog.1` and a new `mainlog` begins.
    Rename,
    /// `mainlog` is copied to `mainlog.1` and truncated to nothing.
    CopyTruncate,
}

struct HostSpec {
    host: &'static str,
    scenario: &'static str,
    rotation: Rotation,
}

/// The two hosts' names land on different partitions of a two-partition
/// topic, so that both processors have work.
const FLEET: [HostSpec; 2] = [
    HostSpec {
        host: "mx1.lab.test",
        scenario: "s01_core_all",
        rotation: Rotation::Rename,
    },
    HostSpec {
        host: "mx2.lab.test",
        scenario: "s02_default_selectors",
        rotation: Rotation::CopyTruncate,
    },
];

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process with its messages in a file, killed when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(mut command: Command, log: &Path) -> Running {
        let file = File::options().create(true).append(true).open(log).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting exim-pilot");
        Running {
            child,
            log: log.to_path_buf(),
        }
    }

    fn messages(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} ended with {status}:\n{}",
                self.log.display(),
                self.messages()
            );
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on a child process of ours.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "{} ended with {status}",
            self.log.display()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("==== {}:\n{}", self.log.display(), self.messages());
        }
    }
}

/// Waits until `done`, failing after [`PATIENCE`] with `explain()`.
fn wait_until(what: &str, mut explain: impl FnMut() -> String, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "gave up waiting until {what} after {PATIENCE:?}: {}",
            explain()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------
// ClickHouse over HTTP

/// Runs `sql` in `database`; the answer's body, or None when the server
/// does not answer or refuses.
fn query(url: &str, database: &str, sql: &str) -> Option<String> {
    let address = url.strip_prefix("http://").unwrap_or(url);
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = format!(
        "POST /?database={database} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        Some(dechunk(body))
    } else {
        Some(body.to_string())
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Stored records per host, each counted once.
fn records_per_host(url: &str, database: &str) -> BTreeMap<String, usize> {
    let Some(text) = query(
        url,
        database,
        "SELECT host, count() FROM events FINAL GROUP BY host",
    ) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(h, n)| (h.to_string(), n.parse().unwrap()))
        .collect()
}

fn number(url: &str, database: &str, sql: &str) -> u64 {
    query(url, database, sql)
        .unwrap_or_else(|| panic!("ClickHouse did not answer {sql}"))
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------
// The mail servers' logs

/// One log file of the corpus, cut at record boundaries into
/// [`CHUNKS`] pieces.
struct Source {
    name: &'static str,
    chunks: Vec<Vec<u8>>,
    records: usize,
    lines: usize,
}

fn source(scenario: &str, name: &'static str) -> Option<Source> {
    let path = ground_truth::corpus_dir().join(scenario).join(name);
    let bytes = std::fs::read(&path).ok()?;
    let mut reader = RecordReader::new(BufReader::new(File::open(&path).unwrap()));
    let mut starts = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        starts.push(record.offset as usize);
    }
    let records = starts.len();
    let mut cuts: Vec<usize> = (0..CHUNKS).map(|i| starts[records * i / CHUNKS]).collect();
    cuts[0] = 0;
    cuts.push(bytes.len());
    let chunks = cuts
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect();
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    Some(Source {
        name,
        chunks,
        records,
        lines,
    })
}

/// One mail server: its log folder, its tailer and what it has written.
struct Host {
    spec: &'static HostSpec,
    logs: PathBuf,
    sources: Vec<Source>,
    lines_written: usize,
    tail: Option<Running>,
    metrics: String,
}

impl Host {
    fn start(spec: &'static HostSpec, root: &Path, brokers: &str, topic: &str) -> Host {
        let home = root.join(spec.host);
        let logs = home.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let sources: Vec<Source> = ["mainlog", "rejectlog", "paniclog"]
            .into_iter()
            .filter_map(|name| source(spec.scenario, name))
            .collect();
        let config = home.join("exim-pilot.toml");
        std::fs::write(
            &config,
            format!(
                "[tail]\nhost = \"{}\"\nlogs = [\"{}\"]\ncheckpoints = \"{}\"\n\n\
                 [kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n",
                spec.host,
                logs.display(),
                home.join("checkpoints").display()
            ),
        )
        .unwrap();
        let mut host = Host {
            spec,
            logs,
            sources,
            lines_written: 0,
            tail: None,
            metrics: format!("127.0.0.1:{}", free_port()),
        };
        // The logs exist before the tailer starts, as on a mail server.
        host.write_chunk(0);
        let mut command = exim_pilot();
        command
            .args(["tail", "--no-queue", "--config"])
            .arg(&config)
            .args(["--listen", &host.metrics])
            .env("RUST_LOG", "info");
        host.tail = Some(Running::spawn(command, &home.join("tail.log")));
        host
    }

    /// Appends piece `n` of every log.
    fn write_chunk(&mut self, n: usize) {
        for source in &self.sources {
            let chunk = &source.chunks[n];
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.join(source.name))
                .unwrap();
            file.write_all(chunk).unwrap();
            self.lines_written += chunk.iter().filter(|&&b| b == b'\n').count();
        }
    }

    /// Rotates the mainlog the host's way.
    fn rotate(&mut self) {
        let live = self.logs.join("mainlog");
        let old = self.logs.join("mainlog.1");
        match self.spec.rotation {
            Rotation::Rename => std::fs::rename(&live, &old).unwrap(),
            Rotation::CopyTruncate => {
                // What logrotate does: lines written between its copy and
                // its truncation are lost, so it happens once the tailer
                // has read everything (Exim is quiet for a moment).
                let written = self.lines_written as f64;
                wait_until(
                    "the tailer has read every line before the copytruncate",
                    || format!("{} lines read", self.lines_read()),
                    || self.lines_read() >= written,
                );
                std::fs::copy(&live, &old).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(&live)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
            }
        }
    }

    fn lines_read(&self) -> f64 {
        metric(&self.metrics, "exim_pilot_ingest_lines_read_total").unwrap_or(0.0)
    }

    fn records(&self) -> usize {
        self.sources.iter().map(|s| s.records).sum()
    }

    fn lines(&self) -> usize {
        self.sources.iter().map(|s| s.lines).sum()
    }
}

/// A metric's value summed over its labels.
fn metric(address: &str, name: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let mut total = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if rest.starts_with(' ') || rest.starts_with('{') {
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

// ---------------------------------------------------------------------
// Processors and readers

/// `exim-pilot SUBCOMMAND...` reading the topic as `group` and writing
/// to ClickHouse database `db`.
fn processor(
    subcommand: &[&str],
    brokers: &str,
    topic: &str,
    group: &str,
    url: &str,
    db: &str,
) -> Command {
    let mut command = exim_pilot();
    command
        .args(subcommand)
        .args(["--kafka", brokers, "--topic", topic, "--group", group])
        .args(["--clickhouse", url, "--database", db])
        .args(["--timezone", "utc", "--quiet"])
        .args(["--kafka-option", "session.timeout.ms=6000"])
        .args(["--kafka-option", "heartbeat.interval.ms=1000"])
        .env("RUST_LOG", "info,rdkafka=debug");
    command
}

fn spawn_process(brokers: &str, topic: &str, group: &str, url: &str, log: &Path) -> Running {
    let command = processor(
        &["process", "--no-queue"],
        brokers,
        topic,
        group,
        url,
        "fleet",
    );
    Running::spawn(command, log)
}

fn owns_a_partition(process: &Running) -> bool {
    process
        .messages()
        .lines()
        .any(|l| l.contains("Partitions assigned partitions=[") && !l.ends_with("=[]"))
}

/// True when the process's latest assignment holds every partition of
/// the two-partition topic.
fn owns_every_partition(process: &Running) -> bool {
    process
        .messages()
        .lines()
        .rev()
        .find(|l| l.contains("Partitions assigned partitions=["))
        .is_some_and(|l| l.ends_with("partitions=[0, 1]"))
}

/// The output of a reading command, which must succeed.
fn read(args: &[&str]) -> String {
    stdout_of(exim_pilot().args(args).output().unwrap())
}

fn lifecycles_json(url: &str, db: &str) -> String {
    read(&["lifecycles", "--clickhouse", url, "--database", db])
}

fn report_json(url: &str, db: &str) -> String {
    read(&[
        "report",
        "--format",
        "json",
        "--top",
        "0",
        "--clickhouse",
        url,
        "--database",
        db,
    ])
}

fn assert_ground_truth(lifecycles: &str) {
    let mut by_host: BTreeMap<String, Vec<Lifecycle>> = BTreeMap::new();
    for line in lifecycles.lines().filter(|l| !l.trim().is_empty()) {
        let lc: Lifecycle = serde_json::from_str(line).unwrap();
        by_host.entry(lc.host.clone()).or_default().push(lc);
    }
    let hosts: Vec<&str> = by_host.keys().map(String::as_str).collect();
    assert_eq!(hosts, FLEET.map(|h| h.host));
    for spec in &FLEET {
        let ours = &by_host[spec.host];
        let problems = ground_truth::compare(&ground_truth::truth(spec.scenario), ours);
        assert!(
            problems.is_empty(),
            "{} ({}): {} mismatches against the ground truth:\n{}",
            spec.host,
            spec.scenario,
            problems.len(),
            problems.join("\n")
        );
    }
}

fn assert_each_row_once(url: &str, db: &str) {
    for (table, key) in [
        ("events", "host, file_id, offset"),
        ("lifecycles", "host, id"),
    ] {
        let rows = number(url, db, &format!("SELECT count() FROM {table} FINAL"));
        let keys = number(url, db, &format!("SELECT uniqExact({key}) FROM {table}"));
        assert_eq!(rows, keys, "{table}: {rows} rows after FINAL, {keys} keys");
    }
}

// ---------------------------------------------------------------------

#[test]
fn tailers_to_clickhouse_through_kills_rotations_and_outages() {
    let mut kafka = Server::kafka();
    let mut clickhouse = Server::clickhouse();
    let brokers = kafka.address().to_string();
    let url = clickhouse.address().to_string();
    let topic = unique_topic("raw");
    let group = unique_topic("group");
    create_topic(&brokers, &topic, 2);
    let root = tempfile::tempdir().unwrap();

    let mut hosts: Vec<Host> = FLEET
        .iter()
        .map(|spec| Host::start(spec, root.path(), &brokers, &topic))
        .collect();
    let expected: BTreeMap<String, usize> = hosts
        .iter()
        .map(|h| (h.spec.host.to_string(), h.records()))
        .collect();
    let write = |hosts: &mut Vec<Host>, n: usize| {
        for host in hosts.iter_mut() {
            if let Some(tail) = &mut host.tail {
                tail.assert_alive();
            }
            host.write_chunk(n);
        }
        // Exim writes as mail comes; so do we, piece by piece.
        std::thread::sleep(Duration::from_millis(300));
    };

    let (first_log, second_log) = (root.path().join("first"), root.path().join("second"));
    let mut first = spawn_process(&brokers, &topic, &group, &url, &first_log);
    let mut second = spawn_process(&brokers, &topic, &group, &url, &second_log);
    // Both must be full members of the group before one dies: the broker
    // gives a member's partitions to the others only once it knew it.
    wait_until(
        "both processors own a partition and both hosts have records stored",
        || format!("{:?}", records_per_host(&url, "fleet")),
        || {
            owns_a_partition(&first)
                && owns_a_partition(&second)
                && records_per_host(&url, "fleet").len() == FLEET.len()
        },
    );
    for n in 1..4 {
        write(&mut hosts, n);
    }

    // Rotations halfway.
    for host in &mut hosts {
        host.rotate();
    }
    write(&mut hosts, 4);

    // A processor dies at work, and comes back.
    write(&mut hosts, 5);
    first.kill();
    // The broker notices the death after the session timeout and gives
    // the survivor every partition; the restart waits for that (for a
    // while), as the broker used in tests can leave a partition with no
    // owner when a member comes back while its dead predecessor still
    // holds it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !owns_every_partition(&second) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut first = spawn_process(&brokers, &topic, &group, &url, &first_log);

    // The broker goes away for a while; the logs go on.
    write(&mut hosts, 6);
    kafka.stop();
    write(&mut hosts, 7);
    std::thread::sleep(OUTAGE);
    kafka.resume();

    // Then ClickHouse.
    write(&mut hosts, 8);
    clickhouse.stop();
    write(&mut hosts, 9);
    std::thread::sleep(OUTAGE);
    clickhouse.resume();

    wait_until(
        "every record is stored",
        || {
            format!(
                "{:?}, expected {expected:?}",
                records_per_host(&url, "fleet")
            )
        },
        || {
            first.assert_alive();
            second.assert_alive();
            records_per_host(&url, "fleet") == expected
        },
    );
    for host in &hosts {
        assert_eq!(host.lines_written, host.lines(), "{}", host.spec.host);
    }
    first.terminate();
    second.terminate();

    assert_each_row_once(&url, "fleet");
    let lifecycles = lifecycles_json(&url, "fleet");
    assert_ground_truth(&lifecycles);
    let report = report_json(&url, "fleet");

    // A replay into a fresh database, by a group of its own, rebuilds
    // the same.
    let replay_group = unique_topic("replay");
    let command = processor(
        &["replay", "--from-beginning"],
        &brokers,
        &topic,
        &replay_group,
        &url,
        "replayed",
    );
    let mut replay = Running::spawn(command, &root.path().join("replay"));
    let mut status = None;
    wait_until(
        "the replay has read the whole topic",
        || records_per_host(&url, "replayed").len().to_string() + " hosts stored",
        || {
            status = replay.child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(
        status.unwrap().success(),
        "replay failed:\n{}",
        replay.messages()
    );
    assert_eq!(records_per_host(&url, "replayed"), expected);
    assert_each_row_once(&url, "replayed");
    assert!(
        lifecycles_json(&url, "replayed") == lifecycles,
        "the replay's lifecycles differ"
    );
    let replayed_report = report_json(&url, "replayed");
    let differing: Vec<(&str, &str)> = report
        .lines()
        .zip(replayed_report.lines())
        .filter(|(a, b)| a != b)
        .take(20)
        .collect();
    assert!(
        report == replayed_report,
        "the replay's report differs (first run, replay): {differing:#?}"
    );
}
