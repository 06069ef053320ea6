//! `exim-pilot report`: the deliverability report, from log files or from
//! the embedded store.
//!
//! From files, the logs are parsed and correlated in memory and every
//! lifecycle is counted once, when it can no longer change (evicted by the
//! correlator, or at the end of the input). Rejections come from the
//! mainlog's rejection lines; a rejectlog is read for them only when no
//! mainlog is given, since Exim writes every rejection to both.
//!
//! From a data directory (`--data`), the report comes from the store's
//! rollup cells, which is fast whatever the range.
//!
//! Output: `text` (readable, in the spirit of eximstats), `json` (the
//! [`Report`] as JSON, with a `totals` object) or `csv` (see [`render`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use exim_pilot_processor::classify::classify_reject;
use exim_pilot_processor::correlate::Correlator;
use exim_pilot_processor::parse::{open_log, parse_record, RecordReader};
use exim_pilot_schema::event::EventKind;
use exim_pilot_schema::report::{ReportBuilder, ReportOptions};
use exim_pilot_schema::{LogFile, ReasonClass, RecordOrigin, RejectRecord, Report, Zone};
use exim_pilot_store::sqlite::DATABASE_FILE;
use exim_pilot_store::{SqliteStore, Store};

mod render;

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Readable tables.
    Text,
    /// The report as one JSON object.
    Json,
    /// One flat CSV table (see the documentation of the csv renderer).
    Csv,
}

/// Options of `exim-pilot report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Log files to read (mainlog, rejectlog; plain or .gz; `-` for
    /// standard input), oldest first.
    #[arg(value_name = "FILE", required_unless_present = "data")]
    files: Vec<PathBuf>,

    /// Report from the embedded store in this data directory instead.
    #[arg(long, value_name = "DIR", conflicts_with = "files")]
    data: Option<PathBuf>,

    /// Start of the range: `2026-12-04`, `2026-12-04 10:00`, or RFC 3339.
    /// Counts messages received from the start of that hour on.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,

    /// End of the range (exclusive), same forms; rounded up to the hour.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Report on this mail server only. With files, log lines that do not
    /// name their server (all but syslog lines) are taken to come from it;
    /// the default is this machine's host name.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,

    /// Only addresses in this destination domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,

    /// Rows per table (0 for all).
    #[arg(long, default_value_t = 20)]
    top: usize,

    /// Time zone of log times written without an offset, and of --since
    /// and --until: `local`, `utc` or an offset such as `+0200`.
    #[arg(long, default_value = "local")]
    zone: String,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let zone = Zone::parse(&args.zone).with_context(|| {
        format!(
            "--zone {:?}: use local, utc or an offset like +0200",
            args.zone
        )
    })?;
    let options = ReportOptions {
        since: args
            .since
            .as_deref()
            .map(|s| parse_time(s, zone))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|s| parse_time(s, zone))
            .transpose()?,
        host: args.host.clone(),
        domain: args.domain.clone(),
        top: args.top,
    };

    let report = match &args.data {
        Some(dir) => report_from_store(dir, &options)?,
        None => {
            let default_host = args.host.clone().unwrap_or_else(machine_name);
            report_from_files(&args.files, &default_host, zone, &options)?
        }
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Text => render::text(&report, &mut out)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Csv => render::csv(&report, &mut out)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads `2026-12-04`, `2026-12-04 10:00[:00]`, `2026-12-04T10:00:00` (in
/// `zone`) or an RFC 3339 time with its own offset.
fn parse_time(s: &str, zone: Zone) -> anyhow::Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(zone.to_utc(t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(zone.to_utc(d.and_time(chrono::NaiveTime::MIN)));
    }
    bail!("cannot read the time {s:?}: use 2026-12-04, \"2026-12-04 10:00\" or RFC 3339")
}

/// This machine's host name, for logs that do not say which server wrote
/// them.
fn machine_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn report_from_store(dir: &Path, options: &ReportOptions) -> anyhow::Result<Report> {
    if !dir.join(DATABASE_FILE).exists() {
        bail!(
            "no exim-pilot store in {}: create one with `exim-pilot import --data {0}` or \
             `exim-pilot standalone --data {0}`",
            dir.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = SqliteStore::open_dir(dir)?;
        Ok(store.report(options).await?)
    })
}

/// How many records are read between collecting evicted lifecycles.
const COLLECT_EVERY: u64 = 200_000;

fn report_from_files(
    files: &[PathBuf],
    default_host: &str,
    zone: Zone,
    options: &ReportOptions,
) -> anyhow::Result<Report> {
    let mut correlator = Correlator::new(zone);
    let mut builder = ReportBuilder::new(options.clone());
    let has_mainlog = files.iter().any(|p| LogFile::from_path(p) == LogFile::Main);
    let mut records = 0u64;

    for (file_no, path) in files.iter().enumerate() {
        let log = LogFile::from_path(path);
        let count_rejects = log == LogFile::Main || (log == LogFile::Reject && !has_mainlog);
        let input = open_log(path).with_context(|| format!("reading {}", path.display()))?;
        let mut reader = RecordReader::new(input);
        while let Some(record) = reader
            .next_record()
            .with_context(|| format!("reading {}", path.display()))?
        {
            let event = parse_record(log, record.bytes);
            let host = event
                .syslog
                .as_ref()
                .map_or(default_host, |s| s.host.as_ref());
            if count_rejects {
                let origin = RecordOrigin {
                    host: host.to_string(),
                    log,
                    file_id: file_no as u64,
                    offset: record.offset,
                };
                if let Some(reject) = reject_of(&event, origin, zone) {
                    builder.add_reject(&reject);
                }
            }
            correlator.apply_record(host, log, &event);

            records += 1;
            if records.is_multiple_of(COLLECT_EVERY) {
                collect_evicted(&mut correlator, &mut builder);
            }
        }
    }
    collect_evicted(&mut correlator, &mut builder);
    for lc in correlator.into_lifecycles() {
        builder.add_lifecycle(&lc);
    }
    tracing::debug!(records, "Report input read");
    Ok(builder.finish())
}

/// Counts the lifecycles the correlator has let go of: they will not
/// change any more. Changed lifecycles still in memory are counted at the
/// end, in their final form.
fn collect_evicted(correlator: &mut Correlator, builder: &mut ReportBuilder) {
    for lc in correlator.take_changed() {
        if correlator.get(&lc.host, lc.id).is_none() {
            builder.add_lifecycle(&lc);
        }
    }
}

/// The stored form of a rejection or failed AUTH event.
fn reject_of(
    event: &exim_pilot_schema::Event<'_>,
    origin: RecordOrigin,
    zone: Zone,
) -> Option<RejectRecord> {
    let at = event.time?.resolve(zone);
    match &event.kind {
        EventKind::Reject(r) => Some(RejectRecord::from_event(
            origin,
            at,
            event.id,
            r,
            classify_reject(r),
        )),
        EventKind::AuthFailure(a) => Some(RejectRecord::from_auth_failure(
            origin,
            at,
            a,
            ReasonClass::AuthRelayDenied,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_given_zone() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_time("2026-12-04", Zone::Fixed(60)).unwrap(),
            utc("2026-12-03T23:00:00Z")
        );
        assert_eq!(
            parse_time("2026-12-04 10:30", Zone::Utc).unwrap(),
            utc("2026-12-04T10:30:00Z")
        );
        assert_eq!(
            parse_time("2026-12-04T10:30:00+02:00", Zone::Utc).unwrap(),
            utc("2026-12-04T08:30:00Z")
        );
        assert!(parse_time("yesterday", Zone::Utc).is_err());
    }
}
