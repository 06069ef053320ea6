//! `exim-pilot trace`: the timeline of one message, or of every message to
//! or from an address.
//!
//! Each target is a message id (either format) or an address. The answer
//! comes from the embedded store, or from log files given with `--file`.
//! For each message: who sent it, what it was, each final address with its
//! outcome, then every event in time order, then the raw log lines.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use exim_pilot_ingest::Importer;
use exim_pilot_processor::parse::parse_record;
use exim_pilot_schema::lifecycle::{Attempt, AttemptResult, Lifecycle};
use exim_pilot_schema::MessageId;
use exim_pilot_store::MessageFilter;

use super::common::{self, ClickHouseArgs, LogArgs};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A readable timeline.
    Text,
    /// One JSON object per message: the lifecycle and its raw lines.
    Json,
}

/// Options of `exim-pilot trace`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Message ids or addresses.
    #[arg(value_name = "ID|ADDRESS", required = true)]
    targets: Vec<String>,

    /// Read these log files instead of the store (repeat for several).
    #[arg(long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Read from the store in this data directory (the default without
    /// --file; default ./exim-pilot-data).
    #[arg(long, value_name = "DIR", env = "EXIM_PILOT_DATA")]
    data: Option<PathBuf>,

    #[command(flatten)]
    store: ClickHouseArgs,

    #[command(flatten)]
    log_args: LogArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// A message found, with its raw lines.
#[derive(serde::Serialize)]
struct Found {
    lifecycle: Lifecycle,
    lines: Vec<String>,
}

/// Runs the subcommand.
pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    // The null sender is written `<>`, as the log and reports show it; it
    // is stored as the empty address.
    for target in &mut args.targets {
        if target.trim() == "<>" {
            target.clear();
        }
    }
    let found = if args.files.is_empty() {
        from_store(&args)?
    } else {
        from_files(&args)?
    };
    if found.is_empty() {
        let named: Vec<&str> = args
            .targets
            .iter()
            .map(|t| if t.is_empty() { "<>" } else { t.as_str() })
            .collect();
        eprintln!("exim-pilot: no message matches {}", named.join(", "));
        return Ok(ExitCode::from(1));
    }
    let mut out = String::new();
    for f in &found {
        match args.format {
            Format::Json => {
                out.push_str(&serde_json::to_string(f).context("cannot write JSON")?);
                out.push('\n');
            }
            Format::Text => {
                let mut text = String::new();
                render(&mut text, f);
                out.push_str(&common::printable(&text));
            }
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn from_store(args: &Args) -> anyhow::Result<Vec<Found>> {
    let rt = common::runtime()?;
    let store = common::open_reader(&rt, args.data.as_deref(), &args.store)?;
    rt.block_on(async {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for target in &args.targets {
            let lifecycles = match target.parse::<MessageId>() {
                Ok(id) => store.lifecycles_by_id(id).await?,
                Err(_) => {
                    let filter = MessageFilter {
                        address: Some(target.clone()),
                        ..MessageFilter::default()
                    };
                    common::stored_lifecycles(&*store, &filter).await?
                }
            };
            for lc in lifecycles {
                if !seen.insert((lc.host.clone(), lc.id)) {
                    continue;
                }
                let lines = store
                    .message_records(&lc.host, lc.id)
                    .await?
                    .iter()
                    .map(|r| r.text())
                    .collect();
                found.push(Found {
                    lifecycle: lc,
                    lines,
                });
            }
        }
        Ok(found)
    })
}

fn from_files(args: &Args) -> anyhow::Result<Vec<Found>> {
    if let Some(dir) = &args.data {
        eprintln!(
            "exim-pilot: reading the files given with --file; the store in {} is not used",
            dir.display()
        );
    }
    let host = args.log_args.host()?;
    let all = common::correlate_files(&args.files, &host, &args.log_args)?;
    let wanted: Vec<Lifecycle> = all
        .into_iter()
        .filter(|lc| matches(lc, &args.targets))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }

    // A second pass picks up the raw lines of the messages found.
    let ids: HashSet<MessageId> = wanted.iter().map(|lc| lc.id).collect();
    let mut lines: std::collections::HashMap<MessageId, Vec<String>> = Default::default();
    let mut importer = Importer::new(&args.files, host).context("cannot read the files")?;
    while let Some(records) = importer
        .next_batch(10_000)
        .context("cannot read the files")?
    {
        for raw in &records {
            if let Some(id) = parse_record(raw.origin.log, &raw.bytes).id {
                if ids.contains(&id) {
                    lines
                        .entry(id)
                        .or_default()
                        .push(String::from_utf8_lossy(&raw.bytes).into_owned());
                }
            }
        }
    }
    Ok(wanted
        .into_iter()
        .map(|lc| Found {
            lines: lines.remove(&lc.id).unwrap_or_default(),
            lifecycle: lc,
        })
        .collect())
}

/// True when the lifecycle is one of the targets: its id, its sender, or
/// one of its addresses (final or original), compared without case.
fn matches(lc: &Lifecycle, targets: &[String]) -> bool {
    targets.iter().any(|t| {
        if let Ok(id) = t.parse::<MessageId>() {
            return lc.id == id;
        }
        let same = |a: &str| a.eq_ignore_ascii_case(t);
        lc.sender.as_deref().is_some_and(same)
            || lc.recipients.iter().any(|r| {
                same(&r.address)
                    || r.original.as_deref().is_some_and(same)
                    || r.via.iter().any(|v| same(v))
            })
            || lc.envelope_recipients.iter().any(|r| same(r))
    })
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

/// Writes one message's timeline.
fn render(out: &mut String, f: &Found) {
    let lc = &f.lifecycle;
    let _ = writeln!(
        out,
        "Message {} on {} ({})",
        lc.id,
        lc.host,
        lc.state.as_str()
    );
    let sender = match lc.sender.as_deref() {
        Some("") => "<> (null sender)".to_string(),
        Some(s) => s.to_string(),
        None => "(arrival not in the log)".to_string(),
    };
    let _ = writeln!(out, "  From:        {sender}");
    if let Some(s) = &lc.subject {
        let _ = writeln!(out, "  Subject:     {s}");
    }
    if let Some(m) = &lc.message_id_header {
        let _ = writeln!(out, "  Message-ID:  {m}");
    }
    let mut how = Vec::new();
    if let Some(size) = lc.size {
        how.push(format!("{size} bytes"));
    }
    if let Some(p) = &lc.protocol {
        how.push(format!("P={p}"));
    }
    if let Some(c) = &lc.client {
        let mut client = String::new();
        if let Some(n) = &c.name {
            client.push_str(n);
            client.push(' ');
        }
        if let Some(h) = &c.helo {
            let _ = write!(client, "({h}) ");
        }
        if let Some(ip) = &c.ip {
            let _ = write!(client, "[{ip}]");
        }
        how.push(format!("from {}", client.trim()));
    }
    if let Some(a) = &lc.authenticator {
        how.push(format!(
            "auth {a}{}",
            lc.auth_id
                .as_ref()
                .map(|i| format!(":{i}"))
                .unwrap_or_default()
        ));
    }
    if let Some(x) = &lc.tls_cipher {
        how.push(format!("TLS {x}"));
    }
    if !how.is_empty() {
        let _ = writeln!(out, "  Arrival:     {}", how.join(", "));
    }
    let _ = writeln!(out, "  Received:    {}", when(lc.received_at));
    if let Some(done) = lc.completed_at {
        let qt = lc
            .queue_time_ms
            .map(|ms| format!(" after {}", duration(ms)))
            .unwrap_or_default();
        let _ = writeln!(out, "  Left queue:  {}{qt}", when(Some(done)));
    }
    if lc.incomplete_start {
        let _ = writeln!(
            out,
            "  Note:        the log starts after this message arrived"
        );
    }
    if let Some(p) = lc.parent_id {
        let _ = writeln!(out, "  Reports on:  {p}");
    }
    if !lc.generated.is_empty() {
        let ids: Vec<String> = lc.generated.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(out, "  Generated:   {}", ids.join(", "));
    }

    let _ = writeln!(out, "  Recipients:");
    if lc.recipients.is_empty() {
        let _ = writeln!(out, "    (none logged)");
    }
    for r in &lc.recipients {
        let orig = r
            .original
            .as_ref()
            .map(|o| format!(" (for {o})"))
            .unwrap_or_default();
        let reason = r.reason.map(|c| format!(", {c}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "    {}{orig}: {} after {} attempt{}{reason}",
            r.address,
            r.outcome.as_str(),
            r.attempts,
            if r.attempts == 1 { "" } else { "s" }
        );
        if let Some(t) = &r.last_text {
            let code = r
                .last_code
                .map(|c| format!("{c} "))
                .filter(|c| !t.starts_with(c.as_str()))
                .unwrap_or_default();
            let _ = writeln!(out, "      last: {code}{t}");
        }
    }

    // Every dated event of the message, in time order.
    let mut events: Vec<(DateTime<Utc>, String)> = Vec::new();
    if let Some(t) = lc.received_at {
        events.push((t, "received".into()));
    }
    for r in &lc.recipients {
        for a in &r.history {
            events.push((a.at, attempt_line(&r.address, a)));
        }
    }
    for n in &lc.notes {
        let by =
            n.by.as_ref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
        let text = n
            .text
            .as_ref()
            .map(|t| format!(": {t}"))
            .unwrap_or_default();
        events.push((n.at, format!("{}{by}{text}", n.what)));
    }
    if let Some(t) = lc.completed_at {
        events.push((t, lc.state.as_str().to_string()));
    }
    events.sort_by_key(|e| e.0);
    let _ = writeln!(out, "  Timeline:");
    for (t, what) in events {
        let _ = writeln!(out, "    {}  {what}", t.format("%Y-%m-%d %H:%M:%S%.3f"));
    }

    if !f.lines.is_empty() {
        let _ = writeln!(out, "  Log lines:");
        for l in &f.lines {
            let _ = writeln!(out, "    {l}");
        }
    }
    out.push('\n');
}

fn attempt_line(address: &str, a: &Attempt) -> String {
    let verb = match a.result {
        AttemptResult::Ok => "delivered",
        AttemptResult::Defer => "deferred",
        AttemptResult::Fail => "failed",
    };
    let mut s = format!("{} {address} {verb}", a.mark);
    if let Some(t) = &a.transport {
        let _ = write!(s, " T={t}");
    }
    match (&a.remote_host, &a.remote_ip) {
        (Some(h), Some(ip)) => {
            let _ = write!(s, " via {h} [{ip}]");
        }
        (None, Some(ip)) => {
            let _ = write!(s, " via [{ip}]");
        }
        _ => {}
    }
    if let Some(c) = &a.confirmation {
        let _ = write!(s, ": {c}");
    } else if a.code.is_some() || a.text.is_some() {
        let code = a.code.map(|c| format!("{c} ")).unwrap_or_default();
        let _ = write!(s, ": {code}{}", a.text.as_deref().unwrap_or(""));
    }
    if let Some(c) = a.reason {
        let _ = write!(s, " [{c}]");
    }
    s
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(114), "114 ms");
        assert_eq!(duration(8_000), "8.0 s");
        assert_eq!(duration(194_000), "3m14s");
        assert_eq!(duration(7_500_000), "2h05m");
    }
}
