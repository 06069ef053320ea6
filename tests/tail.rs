//! `exim-pilot tail` as a process against a real Kafka-protocol broker:
//! killed with SIGKILL and restarted, or cut off from a stopped broker, it
//! loses no record; `exim-pilot config check` validates a file.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exim_pilot_schema::wire::RecordBatch;
use exim_pilot_testkit::kafka::{create_topic, read_partition, unique_topic};
use exim_pilot_testkit::Server;

/// Longest a test waits for something; a bound, not a speed goal.
const PATIENCE: Duration = Duration::from_secs(180);

fn exim_pilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
}

/// A free loopback port for the metrics endpoint.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `exim-pilot tail`, killed when dropped.
struct Tail {
    child: Child,
    listen: String,
}

impl Tail {
    fn start(config: &Path) -> Tail {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = exim_pilot()
            .args(["tail", "--no-queue", "--config"])
            .arg(config)
            .args(["--listen", &listen])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting exim-pilot tail");
        Tail { child, listen }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The value of a metric (summed over labels), once the endpoint
    /// answers.
    fn metric(&self, name: &str) -> Option<f64> {
        let mut stream = TcpStream::connect(&self.listen).ok()?;
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
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            total = Some(total.unwrap_or(0.0) + value);
        }
        total
    }

    fn wait_metric(&mut self, name: &str, at_least: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(self.alive(), "exim-pilot tail died");
            let value = self.metric(name).unwrap_or(0.0);
            if value >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed at {value}, below {at_least}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops it as an operator would (SIGTERM) and waits for it.
    fn terminate(mut self) {
        // SAFETY: sending a signal to a child process we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exim-pilot tail exited with {status}");
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, brokers: &str, topic: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("exim-pilot.toml");
    let text = format!(
        "[tail]\nhost = \"mx1.lab.test\"\nlogs = [\"{}\"]\ncheckpoints = \"{}\"\n{extra}\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n",
        dir.join("mainlog").display(),
        dir.join("checkpoints").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Appends lines `range` to the mainlog.
fn write_lines(dir: &Path, range: std::ops::Range<u32>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mainlog"))
        .unwrap();
    let mut text = String::new();
    for n in range {
        text.push_str(&format!(
            "2026-12-01 10:00:00 1xZVcX-0007Dw-13 => rcpt{n:07}@lab.test R=dnslookup T=remote_smtp \
             H=127.0.0.1 [127.0.0.1] C=\"250 OK\"\n"
        ));
    }
    file.write_all(text.as_bytes()).unwrap();
}

/// The line numbers on the topic, in topic order, duplicates included,
/// read until `distinct` different lines arrived.
fn published_lines(brokers: &str, topic: &str, distinct: usize) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    let mut decoded = 0;
    let messages = read_partition(brokers, topic, 0, PATIENCE, |messages| {
        for message in &messages[decoded..] {
            if let Ok(batch) = RecordBatch::decode(&message.payload) {
                seen.extend(batch.records.iter().map(|r| (batch.file_id, r.offset)));
            }
        }
        decoded = messages.len();
        seen.len() >= distinct
    });
    let mut lines = Vec::new();
    for message in messages {
        let batch = RecordBatch::decode(&message.payload).unwrap();
        for record in batch.records {
            let text = String::from_utf8(record.bytes).unwrap();
            let n = text.split("rcpt").nth(1).unwrap()[..7].parse().unwrap();
            lines.push(n);
        }
    }
    lines
}

/// Checks that every line 0..total is there, and that the last copy of
/// each comes in order.
fn assert_complete_in_order(lines: &[u32], total: u32) -> usize {
    let mut last_seen: BTreeMap<u32, usize> = BTreeMap::new();
    for (position, &n) in lines.iter().enumerate() {
        last_seen.insert(n, position);
    }
    let missing: Vec<u32> = (0..total).filter(|n| !last_seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost: {:?}...",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(last_seen.len(), total as usize, "no line outside the log");
    let order: Vec<usize> = last_seen.values().copied().collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "lines out of order");
    lines.len() - total as usize
}

#[test]
fn a_killed_tail_loses_nothing_after_restart() {
    let server = Server::kafka();
    let topic = unique_topic("kill");
    create_topic(server.address(), &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.address(), &topic, "");

    write_lines(dir.path(), 0..20_000);
    let mut tail = Tail::start(&config);
    tail.wait_metric("exim_pilot_tail_records_published_total", 1.0);
    // More lines while it runs, then SIGKILL in the middle of them.
    for chunk in 0..10 {
        write_lines(
            dir.path(),
            20_000 + chunk * 5_000..20_000 + (chunk + 1) * 5_000,
        );
    }
    tail.kill();
    write_lines(dir.path(), 70_000..100_000);

    let mut tail = Tail::start(&config);
    tail.wait_metric("exim_pilot_ingest_lines_read_total", 1.0);
    let lines = published_lines(server.address(), &topic, 100_000);
    tail.terminate();
    let duplicates = assert_complete_in_order(&lines, 100_000);
    eprintln!("kill -9: 100000 lines, {duplicates} published twice");
}

#[test]
fn a_broker_outage_pauses_publishing_and_loses_nothing() {
    let mut server = Server::kafka();
    let topic = unique_topic("outage");
    create_topic(server.address(), &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    // A small in-flight limit, so the outage fills it.
    let config = write_config(
        dir.path(),
        server.address(),
        &topic,
        "max_in_flight_bytes = 1048576",
    );

    write_lines(dir.path(), 0..10_000);
    let mut tail = Tail::start(&config);
    tail.wait_metric("exim_pilot_tail_records_published_total", 10_000.0);

    // The broker goes away; about 12 MB more are written meanwhile.
    server.stop();
    write_lines(dir.path(), 10_000..100_000);
    std::thread::sleep(Duration::from_secs(5));
    assert!(tail.alive(), "exim-pilot tail died with the broker");
    let in_flight = tail.metric("exim_pilot_tail_in_flight_bytes").unwrap();
    let behind = tail.metric("exim_pilot_ingest_bytes_behind").unwrap();
    // One pull from the tailer may pass the limit.
    assert!(in_flight <= 2.0 * 1_048_576.0, "in flight: {in_flight}");
    assert!(
        behind > 1_000_000.0,
        "reading paused: {behind} bytes behind"
    );
    let rss_kib = resident_kib(tail.child.id());
    assert!(rss_kib < 200 * 1024, "resident memory {rss_kib} KiB");

    server.resume();
    let lines = published_lines(server.address(), &topic, 100_000);
    assert!(tail.alive());
    tail.terminate();
    let duplicates = assert_complete_in_order(&lines, 100_000);
    eprintln!("outage: 100000 lines, {duplicates} published twice, {rss_kib} KiB resident");
}

/// Resident memory of a process, from /proc.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn config_check_prints_the_settings_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exim-pilot.toml");
    std::fs::write(
        &path,
        "[tail]\nhost = \"mx1\"\nlogs = [\"/var/log/exim4/mainlog\"]\n\
         [kafka]\nbrokers = \"127.0.0.1:9092\"\n[clickhouse]\nurl = \"http://127.0.0.1:8123\"\n",
    )
    .unwrap();
    let output = exim_pilot()
        .args(["config", "check", "--config"])
        .arg(&path)
        .env("EXIM_PILOT_KAFKA_TOPIC", "raw-test")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    for wanted in [
        "host = \"mx1\"",
        "topic = \"raw-test\"",
        "max_batch_records = 1000",
        "linger_ms = 5",
        "[clickhouse]",
    ] {
        assert!(text.contains(wanted), "{wanted} missing from:\n{text}");
    }

    std::fs::write(&path, "[tail]\nhots = \"mx1\"\n").unwrap();
    let output = exim_pilot()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("hots"), "{error}");
}
