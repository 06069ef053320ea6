//! The configuration file of fleet mode, shared by its commands.
//!
//! One TOML file describes a fleet node; each command reads the sections
//! it needs and ignores the others, so one file can serve a machine that
//! runs several of them:
//!
//! ```toml
//! [tail]                     # exim-pilot tail, on each mail server
//! host = "mx1.example.com"   # default: the machine's host name
//! logs = ["/var/log/exim4/mainlog", "/var/log/exim4/rejectlog",
//!         "/var/log/exim4/paniclog"]
//! checkpoints = "/var/lib/exim-pilot/checkpoints"
//! backfill = false           # on a first start, read mainlog.1, .2.gz... first
//! listen = "127.0.0.1:9466"  # /health, /ready and /metrics
//! max_batch_bytes = 262144   # one Kafka record, at most
//! max_batch_records = 1000
//! linger_ms = 5
//! max_in_flight_bytes = 33554432
//!
//! [queue]                    # the queue side of exim-pilot tail
//! enabled = true             # list the queue and run queue actions
//! exim = "/usr/sbin/exim4"   # default: /usr/sbin/exim4, else exim on the PATH
//! exim_config = "/etc/exim4/exim4.conf"  # passed as -C; default: Exim's own
//! interval_s = 30            # seconds between two listings
//!
//! [kafka]                    # every command that talks to Kafka
//! brokers = "kafka1:9092,kafka2:9092"
//! topic = "exim-pilot-raw"
//! queue_topic = "exim-pilot-queue"       # snapshots, results, replies
//! command_topic = "exim-pilot-queue-commands"  # queue jobs, view requests
//!
//! [kafka.producer]           # further librdkafka properties, as strings
//! "compression.type" = "lz4" # default none
//!
//! [kafka.consumer]           # further librdkafka properties of processors
//! "session.timeout.ms" = "10000"
//!
//! [process]                  # exim-pilot process and replay
//! group = "exim-pilot-process"
//! timezone = "local"         # zone of log times without an offset
//! listen = "127.0.0.1:9467"  # /health, /ready and /metrics
//!
//! [clickhouse]               # fleet mode's store
//! url = "http://127.0.0.1:8123"
//! database = "exim_pilot"
//!
//! [serve]                    # exim-pilot serve's API
//! listen = "127.0.0.1:8080"  # what --listen gives
//! trusted_proxies = ["127.0.0.1"]        # X-Forwarded-For believed from these
//! graphiql = true            # the explorer at GET /graphql
//! introspection = true
//! cors_origins = ["https://console.example.com"]  # none by default
//! tls_cert = "/etc/exim-pilot/tls/cert.pem"      # both or neither: HTTPS
//! tls_key = "/etc/exim-pilot/tls/key.pem"
//! read_timeout_s = 15        # to receive a request's headers, then its body
//! write_timeout_s = 15       # longest stall of a write to a client
//! idle_timeout_s = 60        # a kept-alive connection between requests
//! mask_viewer_addresses = false
//! ```
//!
//! Settings are taken from, last one winning: the defaults, the file,
//! `EXIM_PILOT_<SECTION>_<KEY>` environment variables
//! (`EXIM_PILOT_KAFKA_BROKERS`, `EXIM_PILOT_TAIL_LOGS` as a comma-separated
//! list, `EXIM_PILOT_TAIL_BACKFILL=true`), and the command's options.
//! Unknown sections and keys are refused, so a typo is reported rather than
//! ignored. `exim-pilot config check --config FILE` reports
//! every problem of a file at once, each with its line and column
//! ([`problems`]), and prints the settings in effect when there is none.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

mod check;

pub use check::problems;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `exim-pilot tail`.
    #[serde(default)]
    pub tail: TailSection,
    /// The Kafka cluster.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// `exim-pilot process` and `exim-pilot replay`.
    #[serde(default)]
    pub process: ProcessSection,
    /// Fleet mode's ClickHouse store.
    #[serde(default)]
    pub clickhouse: ClickHouseSection,
    /// The queue side of `exim-pilot tail`.
    #[serde(default)]
    pub queue: QueueSection,
    /// `exim-pilot serve`'s API.
    #[serde(default)]
    pub serve: ServeSection,
}

/// The `[serve]` section: the API of `exim-pilot serve`. Its command
/// options, where given, win.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// The address to serve on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Serve GraphiQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphiql: Option<bool>,
    /// Answer introspection queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection: Option<bool>,
    /// Origins allowed cross-origin requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// The HTTPS certificate chain, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Seconds to receive a request's headers, and then its body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_s: Option<u64>,
    /// Seconds a write to a client may stall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout_s: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// Mask the local parts of addresses for viewers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_viewer_addresses: Option<bool>,
}

/// The `[tail]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TailSection {
    /// Name records are labelled with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Log files (or directories holding them).
    #[serde(default)]
    pub logs: Vec<PathBuf>,
    /// Directory of the checkpoint files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<PathBuf>,
    /// Read rotated logs first on a first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<bool>,
    /// Address of /health, /ready and /metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Encoded bytes of one Kafka record, at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_bytes: Option<usize>,
    /// Log records in one Kafka record, at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_records: Option<usize>,
    /// Milliseconds a batch waits for more records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linger_ms: Option<u64>,
    /// Bytes sent and not yet delivered, at most, before reading pauses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_bytes: Option<usize>,
}

/// The `[process]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// The consumer group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Zone of log times written without an offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The year RFC 3164 syslog stamps start in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog_year: Option<i32>,
    /// Address of /health, /ready and /metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Log records per store batch at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_records: Option<usize>,
    /// Longest time spent filling a batch, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_wait_ms: Option<u64>,
    /// Shortest time between the starts of two batches, in milliseconds
    /// (0: a batch is written as soon as no more records wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_interval_ms: Option<u64>,
    /// Time between two saves of a partition's pipeline state, in
    /// milliseconds (0: with every batch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_interval_ms: Option<u64>,
}

/// The `[queue]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Watch the queue and run queue actions (default: when an Exim
    /// binary is found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The Exim binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exim: Option<PathBuf>,
    /// An Exim configuration file, passed as `-C`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exim_config: Option<PathBuf>,
    /// Seconds between two listings of the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u64>,
}

/// The `[clickhouse]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    /// The server's HTTP interface, `http://HOST:8123`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// The `[kafka]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// The raw records' topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The topic of queue snapshots, job results and view replies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_topic: Option<String>,
    /// The topic of queue jobs and view requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_topic: Option<String>,
    /// Further librdkafka producer properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producer: BTreeMap<String, String>,
    /// Further librdkafka consumer properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer: BTreeMap<String, String>,
}

/// How an environment variable's value becomes a setting.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Boolean,
    List,
}

/// The settings environment variables may override:
/// `EXIM_PILOT_<SECTION>_<KEY>`.
const OVERRIDABLE: &[(&str, &str, Kind)] = &[
    ("tail", "host", Kind::Text),
    ("tail", "logs", Kind::List),
    ("tail", "checkpoints", Kind::Text),
    ("tail", "backfill", Kind::Boolean),
    ("tail", "listen", Kind::Text),
    ("tail", "max_batch_bytes", Kind::Integer),
    ("tail", "max_batch_records", Kind::Integer),
    ("tail", "linger_ms", Kind::Integer),
    ("tail", "max_in_flight_bytes", Kind::Integer),
    ("kafka", "brokers", Kind::Text),
    ("kafka", "topic", Kind::Text),
    ("kafka", "queue_topic", Kind::Text),
    ("kafka", "command_topic", Kind::Text),
    ("queue", "enabled", Kind::Boolean),
    ("queue", "exim", Kind::Text),
    ("queue", "exim_config", Kind::Text),
    ("queue", "interval_s", Kind::Integer),
    ("process", "group", Kind::Text),
    ("process", "timezone", Kind::Text),
    ("process", "syslog_year", Kind::Integer),
    ("process", "listen", Kind::Text),
    ("process", "batch_records", Kind::Integer),
    ("process", "batch_wait_ms", Kind::Integer),
    ("process", "batch_interval_ms", Kind::Integer),
    ("process", "state_interval_ms", Kind::Integer),
    ("clickhouse", "url", Kind::Text),
    ("clickhouse", "database", Kind::Text),
    ("serve", "listen", Kind::Text),
    ("serve", "trusted_proxies", Kind::List),
    ("serve", "graphiql", Kind::Boolean),
    ("serve", "introspection", Kind::Boolean),
    ("serve", "cors_origins", Kind::List),
    ("serve", "tls_cert", Kind::Text),
    ("serve", "tls_key", Kind::Text),
    ("serve", "read_timeout_s", Kind::Integer),
    ("serve", "write_timeout_s", Kind::Integer),
    ("serve", "idle_timeout_s", Kind::Integer),
    ("serve", "mask_viewer_addresses", Kind::Boolean),
];

/// The sections whose variables are read; another `EXIM_PILOT_*` variable
/// (`EXIM_PILOT_DATA`, say) belongs to something else.
const ENV_SECTIONS: &[&str] = &["tail", "kafka", "process", "clickhouse", "queue", "serve"];

/// Sections whose prefix other tools share (`EXIM_PILOT_CLICKHOUSE_SERVER`
/// names the server binary for the test scripts): an unknown key there is
/// not a typo of ours.
const SHARED_ENV_SECTIONS: &[&str] = &["clickhouse"];

impl Config {
    /// Reads `file` (when given) and applies the process's environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_with(file, std::env::vars())
    }

    /// [`Config::load`] with the environment given.
    pub fn load_with(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the configuration {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .with_context(|| match file {
                Some(path) => format!("invalid configuration in {}", path.display()),
                None => "invalid configuration in the EXIM_PILOT_* variables".to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values that parse but cannot work.
    fn validate(&self) -> anyhow::Result<()> {
        let tail = &self.tail;
        for (name, value) in [
            ("tail.max_batch_bytes", tail.max_batch_bytes),
            ("tail.max_batch_records", tail.max_batch_records),
            ("tail.max_in_flight_bytes", tail.max_in_flight_bytes),
            ("process.batch_records", self.process.batch_records),
            (
                "process.batch_wait_ms",
                self.process.batch_wait_ms.map(|v| v as usize),
            ),
        ] {
            if value == Some(0) {
                bail!("{name} must be at least 1");
            }
        }
        if let (Some(batch), Some(flight)) = (tail.max_batch_bytes, tail.max_in_flight_bytes) {
            if flight < batch {
                bail!(
                    "tail.max_in_flight_bytes ({flight}) must be at least tail.max_batch_bytes \
                     ({batch})"
                );
            }
        }
        if self
            .kafka
            .brokers
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            bail!("kafka.brokers is empty: give host:port[,host:port...]");
        }
        for (name, topic) in [
            ("kafka.topic", &self.kafka.topic),
            ("kafka.queue_topic", &self.kafka.queue_topic),
            ("kafka.command_topic", &self.kafka.command_topic),
        ] {
            if topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
                bail!("{name} is empty");
            }
        }
        if self.queue.interval_s == Some(0) {
            bail!("queue.interval_s must be at least 1");
        }
        self.serve.validate()?;
        if let Some(zone) = &self.process.timezone {
            crate::cmd::common::parse_zone(zone)
                .map_err(|e| anyhow::anyhow!("process.timezone: {e}"))?;
        }
        if let Some(url) = &self.clickhouse.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("clickhouse.url {url:?} must start with http:// or https://");
            }
        }
        Ok(())
    }

    /// The settings as TOML, as `config check` prints them.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("cannot print the configuration")
    }
}

impl ServeSection {
    /// Refuses values that parse but cannot work.
    fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("serve.read_timeout_s", self.read_timeout_s),
            ("serve.write_timeout_s", self.write_timeout_s),
            ("serve.idle_timeout_s", self.idle_timeout_s),
        ] {
            if value == Some(0) {
                bail!("{name} must be at least 1");
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("serve.tls_cert and serve.tls_key go together: give both, or neither");
        }
        for proxy in &self.trusted_proxies {
            proxy
                .parse::<exim_pilot_api::config::Network>()
                .map_err(|e| anyhow::anyhow!("serve.trusted_proxies: {e}"))?;
        }
        exim_pilot_api::cors::Origins::parse(&self.cors_origins)
            .map_err(|e| anyhow::anyhow!("serve.cors_origins: {e}"))?;
        Ok(())
    }
}

/// Writes the `EXIM_PILOT_<SECTION>_<KEY>` variables into `table`.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("EXIM_PILOT_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = ENV_SECTIONS
            .iter()
            .find(|s| rest.starts_with(&format!("{s}_")))
        else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let Some(&(_, _, kind)) = OVERRIDABLE
            .iter()
            .find(|(s, k, _)| s == section && *k == key)
        else {
            if SHARED_ENV_SECTIONS.contains(section) {
                continue;
            }
            let known: Vec<String> = OVERRIDABLE
                .iter()
                .filter(|(s, _, _)| s == section)
                .map(|(s, k, _)| format!("EXIM_PILOT_{}_{}", s, k).to_ascii_uppercase())
                .collect();
            bail!(
                "{name} is not a setting; known ones are {}",
                known.join(", ")
            );
        };
        let value = env_value(&name, &value, kind)?;
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            bail!("[{section}] in the configuration is not a section");
        };
        section_table.insert(key.to_string(), value);
    }
    Ok(())
}

fn env_value(name: &str, value: &str, kind: Kind) -> anyhow::Result<toml::Value> {
    let value = value.trim();
    Ok(match kind {
        Kind::Text => toml::Value::String(value.to_string()),
        Kind::Integer => toml::Value::Integer(
            value
                .parse()
                .with_context(|| format!("{name}={value:?} is not a whole number"))?,
        ),
        Kind::Boolean => toml::Value::Boolean(match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" | "" => false,
            _ => bail!("{name}={value:?} is not true or false"),
        }),
        Kind::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exim-pilot.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn a_full_file_is_read() {
        let config = load(
            r#"
            [tail]
            host = "mx1"
            logs = ["/var/log/exim4/mainlog", "/var/log/exim4/rejectlog"]
            checkpoints = "/var/lib/exim-pilot/checkpoints"
            backfill = true
            listen = "127.0.0.1:9466"
            linger_ms = 10

            [kafka]
            brokers = "127.0.0.1:9092"

            [kafka.producer]
            "compression.type" = "none"

            [clickhouse]
            url = "http://127.0.0.1:8123"
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(config.tail.host.as_deref(), Some("mx1"));
        assert_eq!(config.tail.logs.len(), 2);
        assert_eq!(config.tail.backfill, Some(true));
        assert_eq!(config.tail.linger_ms, Some(10));
        assert_eq!(config.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(config.kafka.producer["compression.type"], "none");
        assert_eq!(
            config.clickhouse.url.as_deref(),
            Some("http://127.0.0.1:8123")
        );
    }

    #[test]
    fn environment_variables_override_the_file() {
        let config = load(
            "[tail]\nhost = \"mx1\"\n[kafka]\nbrokers = \"a:1\"\n",
            &[
                ("EXIM_PILOT_TAIL_HOST", "mx2"),
                ("EXIM_PILOT_TAIL_LOGS", "/a/mainlog, /a/rejectlog"),
                ("EXIM_PILOT_TAIL_BACKFILL", "yes"),
                ("EXIM_PILOT_TAIL_MAX_BATCH_RECORDS", "50"),
                ("EXIM_PILOT_KAFKA_TOPIC", "raw2"),
                // Variables of other parts are not settings of this file.
                ("EXIM_PILOT_DATA", "/somewhere"),
                ("EXIM_PILOT_CLICKHOUSE_SERVER", "/usr/bin/clickhouse"),
            ],
        )
        .unwrap();
        assert_eq!(config.tail.host.as_deref(), Some("mx2"));
        assert_eq!(
            config.tail.logs,
            vec![PathBuf::from("/a/mainlog"), PathBuf::from("/a/rejectlog")]
        );
        assert_eq!(config.tail.backfill, Some(true));
        assert_eq!(config.tail.max_batch_records, Some(50));
        assert_eq!(config.kafka.brokers.as_deref(), Some("a:1"));
        assert_eq!(config.kafka.topic.as_deref(), Some("raw2"));
    }

    #[test]
    fn process_and_clickhouse_sections_are_read() {
        let config = load(
            "[process]\ngroup = \"g1\"\ntimezone = \"+0100\"\nlisten = \"127.0.0.1:9467\"\n\
             [clickhouse]\nurl = \"http://127.0.0.1:8123\"\n\
             [kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n",
            &[
                ("EXIM_PILOT_PROCESS_GROUP", "g2"),
                ("EXIM_PILOT_CLICKHOUSE_DATABASE", "mail"),
                // The test scripts' variable shares the section's prefix.
                (
                    "EXIM_PILOT_CLICKHOUSE_SERVER",
                    "/usr/sbin/clickhouse-server",
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.process.group.as_deref(), Some("g2"));
        assert_eq!(config.process.timezone.as_deref(), Some("+0100"));
        assert_eq!(config.clickhouse.database.as_deref(), Some("mail"));
        assert_eq!(config.kafka.consumer["session.timeout.ms"], "6000");
        assert!(load("[process]\ntimezone = \"mars\"\n", &[]).is_err());
        assert!(load("[clickhouse]\nurl = \"127.0.0.1:8123\"\n", &[]).is_err());
        assert!(load("[process]\ngruop = \"g\"\n", &[]).is_err());
    }

    #[test]
    fn the_queue_section_and_topics_are_read() {
        let config = load(
            "[queue]\nenabled = false\nexim = \"/usr/sbin/exim4\"\ninterval_s = 10\n\
             [kafka]\nqueue_topic = \"q\"\ncommand_topic = \"c\"\n",
            &[
                ("EXIM_PILOT_QUEUE_ENABLED", "true"),
                ("EXIM_PILOT_QUEUE_EXIM_CONFIG", "/etc/exim4/exim4.conf"),
            ],
        )
        .unwrap();
        assert_eq!(config.queue.enabled, Some(true));
        assert_eq!(config.queue.interval_s, Some(10));
        assert_eq!(
            config.queue.exim_config.as_deref(),
            Some(Path::new("/etc/exim4/exim4.conf"))
        );
        assert_eq!(config.kafka.queue_topic.as_deref(), Some("q"));
        assert_eq!(config.kafka.command_topic.as_deref(), Some("c"));
        assert!(load("[queue]\ninterval_s = 0\n", &[]).is_err());
        assert!(load("[kafka]\ncommand_topic = \" \"\n", &[]).is_err());
        assert!(load("[queue]\nenabeld = true\n", &[]).is_err());
        assert!(load("", &[("EXIM_PILOT_QUEUE_ENABLED", "maybe")]).is_err());
    }

    #[test]
    fn the_serve_section_is_read_and_checked() {
        let config = load(
            "[serve]\nlisten = \"127.0.0.1:8080\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n\
             idle_timeout_s = 30\n",
            &[
                (
                    "EXIM_PILOT_SERVE_CORS_ORIGINS",
                    "https://a.example, http://b.example:8080",
                ),
                ("EXIM_PILOT_SERVE_MASK_VIEWER_ADDRESSES", "yes"),
            ],
        )
        .unwrap();
        let serve = &config.serve;
        assert_eq!(serve.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            serve.cors_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(serve.mask_viewer_addresses, Some(true));
        assert_eq!(serve.idle_timeout_s, Some(30));
        assert!(load("[serve]\ntls_cert = \"/c.pem\"\n", &[]).is_err());
        assert!(load("[serve]\nread_timeout_s = 0\n", &[]).is_err());
        assert!(load("[serve]\ncors_origins = [\"*\"]\n", &[]).is_err());
        assert!(load("[serve]\ntrusted_proxies = [\"nope\"]\n", &[]).is_err());
        assert!(load("[serve]\nanything = 1\n", &[]).is_err());
    }

    #[test]
    fn typos_are_refused() {
        let error = load("[tail]\nhots = \"mx1\"\n", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("hots"), "{error:#}");
        let error = load("[tial]\n", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("tial"), "{error:#}");
        let error = load("", &[("EXIM_PILOT_KAFKA_BROKER", "x:1")]).unwrap_err();
        assert!(
            error.to_string().contains("EXIM_PILOT_KAFKA_BROKERS"),
            "{error}"
        );
        let error = load("", &[("EXIM_PILOT_TAIL_BACKFILL", "maybe")]).unwrap_err();
        assert!(error.to_string().contains("true or false"), "{error}");
    }

    #[test]
    fn values_that_cannot_work_are_refused() {
        assert!(load("[tail]\nmax_batch_records = 0\n", &[]).is_err());
        assert!(load("[tail]\nlisten = \"not an address\"\n", &[]).is_err());
        assert!(load("[kafka]\nbrokers = \" \"\n", &[]).is_err());
        assert!(load(
            "[tail]\nmax_batch_bytes = 1000\nmax_in_flight_bytes = 10\n",
            &[]
        )
        .is_err());
    }

    #[test]
    fn printed_settings_read_back_the_same() {
        let config = load(
            "[tail]\nhost = \"mx1\"\nlogs = [\"/l/mainlog\"]\n[kafka]\nbrokers = \"b:1\"\n",
            &[],
        )
        .unwrap();
        let printed = config.to_toml().unwrap();
        assert_eq!(load(&printed, &[]).unwrap(), config);
    }
}
