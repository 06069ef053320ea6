//! `exim-pilot config check`: every problem of a configuration file at
//! once, each with its line and column.
//!
//! The file is read with its positions kept (`toml_edit`). A syntax error
//! is reported alone (nothing after it can be read for sure); otherwise
//! every unknown section and key, every value of the wrong type and every
//! value that parses but cannot work is reported, in the order of the
//! file. The settings that [`Config::load`](super::Config::load) then reads
//! are the same: a file without problems here loads.

use std::net::SocketAddr;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Key, TableLike, Value};

use super::{Kind, OVERRIDABLE};

/// The sections of the file.
const SECTIONS: &[&str] = &["tail", "queue", "kafka", "process", "clickhouse", "serve"];

/// Tables of free-form librdkafka properties.
const PROPERTY_TABLES: &[(&str, &str)] = &[("kafka", "producer"), ("kafka", "consumer")];

/// One problem and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Every problem of the configuration text `text`, in file order.
pub fn problems(text: &str) -> Vec<Problem> {
    let mut found = Found {
        text,
        problems: Vec::new(),
    };
    let document = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let at = error.span().map_or(0, |s| s.start);
            found.add(Some(at..at), format!("not valid TOML: {}", error.message()));
            return found.problems;
        }
    };
    for (name, item) in document.as_table().iter() {
        let key = document.as_table().key(name);
        let span = key.and_then(Key::span);
        if !SECTIONS.contains(&name) {
            found.add(
                span,
                format!("unknown section [{name}] (known: {})", SECTIONS.join(", ")),
            );
            continue;
        }
        let Some(table) = item.as_table_like() else {
            found.add(span, format!("{name} must be a section ([{name}])"));
            continue;
        };
        found.section(name, table);
    }
    found.problems.sort_by_key(|p| (p.line, p.column));
    found.problems
}

struct Found<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Found<'_> {
    fn add(&mut self, span: Option<Range<usize>>, message: String) {
        let at = span.map_or(0, |s| s.start).min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit_once('\n')
            .map_or(before, |(_, rest)| rest)
            .chars()
            .count()
            + 1;
        self.problems.push(Problem {
            line,
            column,
            message,
        });
    }

    fn section(&mut self, section: &str, table: &dyn TableLike) {
        for (key, item) in table.iter() {
            let name = format!("{section}.{key}");
            let key_span = table.key(key).and_then(Key::span);
            if PROPERTY_TABLES.contains(&(section, key)) {
                self.properties(&name, key_span, item);
                continue;
            }
            let Some(&(_, _, kind)) = OVERRIDABLE
                .iter()
                .find(|(s, k, _)| *s == section && *k == key)
            else {
                let known: Vec<&str> = OVERRIDABLE
                    .iter()
                    .filter(|(s, _, _)| *s == section)
                    .map(|(_, k, _)| *k)
                    .chain(
                        PROPERTY_TABLES
                            .iter()
                            .filter(|(s, _)| *s == section)
                            .map(|(_, k)| *k),
                    )
                    .collect();
                self.add(
                    key_span,
                    format!("unknown key {name} (known: {})", known.join(", ")),
                );
                continue;
            };
            let span = item.span().or(key_span);
            match item.as_value() {
                Some(value) => {
                    if let Err(message) = check_value(&name, kind, value) {
                        self.add(span, message);
                    }
                }
                None => self.add(span, format!("{name} must be a value, not a table")),
            }
        }
        self.relations(section, table);
    }

    /// `[kafka.producer]` and `[kafka.consumer]`: strings only.
    fn properties(&mut self, name: &str, key_span: Option<Range<usize>>, item: &Item) {
        let Some(table) = item.as_table_like() else {
            self.add(key_span, format!("{name} must be a table of properties"));
            return;
        };
        for (key, value) in table.iter() {
            if value.as_value().and_then(Value::as_str).is_none() {
                let span = value.span().or_else(|| table.key(key).and_then(Key::span));
                self.add(
                    span,
                    format!(
                        "{name}.{key:?} must be a string, as librdkafka takes them (\"{}\")",
                        value
                            .as_value()
                            .map_or(String::new(), |v| v.to_string().trim().to_string())
                    ),
                );
            }
        }
    }

    /// Settings that are fine alone but not together.
    fn relations(&mut self, section: &str, table: &dyn TableLike) {
        let integer = |key: &str| {
            table
                .get(key)
                .and_then(Item::as_value)
                .and_then(Value::as_integer)
        };
        if section == "serve" {
            let (cert, key) = (table.get("tls_cert"), table.get("tls_key"));
            if cert.is_some() != key.is_some() {
                let span = cert.or(key).and_then(Item::span);
                self.add(
                    span,
                    "serve.tls_cert and serve.tls_key go together: give both, or neither"
                        .to_string(),
                );
            }
        }
        if section == "tail" {
            if let (Some(batch), Some(flight)) =
                (integer("max_batch_bytes"), integer("max_in_flight_bytes"))
            {
                if flight < batch {
                    let span = table.get("max_in_flight_bytes").and_then(Item::span);
                    self.add(
                        span,
                        format!(
                            "tail.max_in_flight_bytes ({flight}) must be at least \
                             tail.max_batch_bytes ({batch})"
                        ),
                    );
                }
            }
        }
    }
}

/// Whether `value` suits setting `name` of `kind`.
fn check_value(name: &str, kind: Kind, value: &Value) -> Result<(), String> {
    let shown = value.to_string().trim().to_string();
    match kind {
        Kind::Text => {
            let Some(text) = value.as_str() else {
                return Err(format!("{name} must be a string, not {shown}"));
            };
            check_text(name, text)
        }
        Kind::Integer => match value.as_integer() {
            None => Err(format!("{name} must be a whole number, not {shown}")),
            Some(n) if n < 0 => Err(format!("{name} must not be negative ({n})")),
            Some(0) if AT_LEAST_ONE.contains(&name) => Err(format!("{name} must be at least 1")),
            Some(_) => Ok(()),
        },
        Kind::Boolean => match value.as_bool() {
            Some(_) => Ok(()),
            None => Err(format!("{name} must be true or false, not {shown}")),
        },
        Kind::List => match value.as_array() {
            Some(items) if items.iter().all(|i| i.as_str().is_some()) => items
                .iter()
                .filter_map(Value::as_str)
                .try_for_each(|item| check_item(name, item)),
            _ => Err(format!("{name} must be a list of strings, not {shown}")),
        },
    }
}

/// Integer settings that must be positive.
const AT_LEAST_ONE: &[&str] = &[
    "tail.max_batch_bytes",
    "tail.max_batch_records",
    "tail.max_in_flight_bytes",
    "process.batch_records",
    "process.batch_wait_ms",
    "queue.interval_s",
    "serve.read_timeout_s",
    "serve.write_timeout_s",
    "serve.idle_timeout_s",
];

/// Items of list settings with a form of their own.
fn check_item(name: &str, item: &str) -> Result<(), String> {
    match name {
        "serve.cors_origins" => exim_pilot_api::cors::Origins::parse(&[item.to_string()])
            .map(|_| ())
            .map_err(|e| format!("{name}: {e}")),
        "serve.trusted_proxies" => item
            .parse::<exim_pilot_api::config::Network>()
            .map(|_| ())
            .map_err(|e| format!("{name}: {e}")),
        _ => Ok(()),
    }
}

/// Text settings with a form of their own.
fn check_text(name: &str, text: &str) -> Result<(), String> {
    match name {
        "tail.listen" | "process.listen" | "serve.listen" => {
            text.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
                format!("{name} {text:?} is no address: give IP:PORT, e.g. 127.0.0.1:9466")
            })
        }
        "kafka.brokers" if text.trim().is_empty() => {
            Err(format!("{name} is empty: give host:port[,host:port...]"))
        }
        "kafka.topic" | "kafka.queue_topic" | "kafka.command_topic" | "tail.host"
            if text.trim().is_empty() =>
        {
            Err(format!("{name} is empty"))
        }
        "process.timezone" => crate::cmd::common::parse_zone(text)
            .map(|_| ())
            .map_err(|e| format!("{name}: {e}")),
        "clickhouse.url" if !(text.starts_with("http://") || text.starts_with("https://")) => Err(
            format!("{name} {text:?} must start with http:// or https://"),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<String> {
        problems(text)
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
            .collect()
    }

    #[test]
    fn a_good_file_has_no_problems() {
        let text = "[tail]\nhost = \"mx1\"\nlogs = [\"/var/log/exim4\"]\nlisten = \"127.0.0.1:9466\"\n\
                    [queue]\nenabled = true\ninterval_s = 30\n\
                    [kafka]\nbrokers = \"k:9092\"\n[kafka.producer]\n\"compression.type\" = \"lz4\"\n\
                    [process]\ntimezone = \"+0100\"\n[clickhouse]\nurl = \"http://c:8123\"\n\
                    [serve]\nlisten = \"127.0.0.1:8080\"\ncors_origins = [\"https://c.example\"]\n\
                    tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nidle_timeout_s = 30\n";
        assert_eq!(messages(text), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = "[tail]\nhots = \"mx1\"\nbackfill = \"yes\"\nmax_batch_bytes = 100\n\
                    max_in_flight_bytes = 10\n\
                    [kafak]\nbrokers = \"x\"\n\
                    [kafka]\nbrokers = \"\"\n[kafka.consumer]\n\"session.timeout.ms\" = 6000\n\
                    [process]\ntimezone = \"mars\"\nbatch_records = 0\n\
                    [clickhouse]\nurl = \"127.0.0.1:8123\"\n";
        let found = messages(text);
        let expect = [
            ("2:1:", "unknown key tail.hots"),
            ("3:12:", "tail.backfill must be true or false"),
            ("5:23:", "tail.max_in_flight_bytes (10) must be at least"),
            ("6:2:", "unknown section [kafak]"),
            ("9:11:", "kafka.brokers is empty"),
            ("11:24:", "\"session.timeout.ms\" must be a string"),
            ("13:12:", "process.timezone"),
            ("14:17:", "process.batch_records must be at least 1"),
            ("16:7:", "must start with http://"),
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for ((place, text), got) in expect.iter().zip(&found) {
            assert!(
                got.starts_with(place) && got.contains(text),
                "{got} vs {place} {text}"
            );
        }
    }

    #[test]
    fn serve_settings_are_checked() {
        let found = messages(
            "[serve]\ncors_origins = [\"https://ok.example\", \"*\"]\ntls_cert = \"/c.pem\"\n\
             read_timeout_s = 0\nlisten = \"x\"\nmask = true\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
        );
        let expect = [
            ("2:16:", "serve.cors_origins: cannot allow \"*\""),
            ("3:12:", "serve.tls_cert and serve.tls_key go together"),
            ("4:18:", "serve.read_timeout_s must be at least 1"),
            ("5:10:", "serve.listen \"x\" is no address"),
            ("6:1:", "unknown key serve.mask"),
            ("7:19:", "serve.trusted_proxies"),
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for ((place, text), got) in expect.iter().zip(&found) {
            assert!(
                got.starts_with(place) && got.contains(text),
                "{got} vs {place} {text}"
            );
        }
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        let found = messages("[tail]\nhost = \"mx1\nlogs = 3\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("2:"), "{found:?}");
    }
}
