//! `exim-pilot report`: the deliverability report, from log files or from
//! the embedded store.
//!
//! From files, the logs are parsed and correlated in memory and every
//! lifecycle is counted once, when it can no longer change (evicted by the
//! correlator, or at the end of the input). Rejections come from the
//! mainlog's rejection lines; a rejectlog is read for them only when no
//! mainlog is given, since Exim writes every rejection to both.
//!
//! Without files, the report comes from the embedded store's rollup cells
//! (in `--data DIR`, `$EXIM_PILOT_DATA` or `exim-pilot-data`), which is
//! fast whatever the range, or with `--clickhouse URL` from fleet mode's
//! store, with the same numbers.
//!
//! Output: `text` (readable, in the spirit of eximstats), `json` (the
//! [`Report`] as JSON, with a `totals` object) or `csv` (see [`render`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use exim_pilot_processor::classify::{classify_auth_failure, classify_reject};
use exim_pilot_processor::correlate::{Correlator, CorrelatorConfig};
use exim_pilot_processor::parse::{open_log, Brief, ParseOptions, RecordReader, SyslogCopies};
use exim_pilot_schema::event::EventKind;
use exim_pilot_schema::report::{ReportBuilder, ReportOptions};
use exim_pilot_schema::{Lifecycle, LogFile, RecordOrigin, RejectRecord, Report, Zone};

use super::common::{self, ClickHouseArgs, LogArgs};

mod parsed;
mod render;

use parsed::{ChunkBuilder, Parsed, ParsedChunk, Spare};

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
    /// standard input), oldest first. Without files, the report comes from
    /// the embedded store.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Data directory of the embedded store to report from (default
    /// `exim-pilot-data`).
    #[arg(
        long,
        value_name = "DIR",
        env = "EXIM_PILOT_DATA",
        conflicts_with = "files"
    )]
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

    /// Only addresses in this destination domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,

    /// Rows per table (0 for all).
    #[arg(long, default_value_t = 20)]
    top: usize,

    #[command(flatten)]
    store: ClickHouseArgs,

    /// `--host`: with files, the mail server the logs come from (lines
    /// that name their server, through syslog, keep it); with the store,
    /// report on that server only. `--timezone`: the zone of log times
    /// without an offset, and of --since and --until.
    #[command(flatten)]
    log: LogArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let zone = args.log.timezone;
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
        host: args.log.host.clone(),
        domain: args.domain.clone(),
        top: args.top,
    };
    if let (Some(since), Some(until)) = (options.since, options.until) {
        if since >= until {
            anyhow::bail!(
                "--since {since} is not before --until {until}: the range would be empty"
            );
        }
    }

    let report = if args.files.is_empty() {
        report_from_store(args.data.as_deref(), &args.store, &options)?
    } else {
        let default_host = args.log.host()?;
        report_from_files(
            &args.files,
            &default_host,
            zone,
            &args.log.parse_options(),
            &options,
        )?
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Text => {
            let mut text = Vec::new();
            render::text(&report, &mut text)?;
            let text = String::from_utf8_lossy(&text);
            out.write_all(common::printable(&text).as_bytes())?;
        }
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

fn report_from_store(
    data: Option<&Path>,
    clickhouse: &ClickHouseArgs,
    options: &ReportOptions,
) -> anyhow::Result<Report> {
    let rt = common::runtime()?;
    let store = common::open_reader(&rt, data, clickhouse)?;
    let report = rt.block_on(store.report(options))?;
    Ok(report)
}

/// How many records are read between collecting evicted lifecycles.
///
/// Small batches keep the counting thread in step with the reading one:
/// with large ones it fell behind and counted a backlog alone at the end
/// (a fifth of a report's time on two cores), and the lifecycles waiting
/// for it held memory that small batches hand back while still in cache.
const COLLECT_EVERY: u64 = 5_000;

/// How long, in log time, a report keeps a completed message in memory for
/// lines that still name it, before counting it.
///
/// Exim writes nothing about a message after its `Completed` line but for
/// lines other processes wrote at about the same moment (a bounce's
/// arrival, a delivery logged by a parallel process): within a second in
/// the corpus and in Exim's own test logs. Five minutes leaves ample room
/// for that and for clocks of syslog relays, while holding several times
/// fewer lifecycles than the store's hour (`CorrelatorConfig::default`),
/// which also serves readers that restart mid-log: on a busy server those
/// lifecycles were a tenth of the report's work and most of its memory.
const REPORT_GRACE: chrono::Duration = chrono::Duration::minutes(5);

/// Rejections are sent to the counting thread in batches of about this
/// many (evicted lifecycles go as the correlator hands them out).
const BATCH: usize = 2048;

/// Finished lifecycles and rejections for the counting thread, kept in
/// the lists they were gathered in rather than boxed one by one: moving a
/// lifecycle into a box of its own costs an allocation and a copy each.
#[derive(Default)]
struct Batch {
    lifecycles: Vec<Lifecycle>,
    rejects: Vec<RejectRecord>,
}

/// What the counting thread receives: batches while the files are read,
/// then the correlator with the lifecycles still in memory, of which it
/// counts every other one (the reading thread counts the others).
enum ToCount {
    Batch(Batch),
    Rest(Arc<Correlator>),
}

/// Whether the counting thread counts the `n`th lifecycle left in memory
/// at the end; the reading thread counts the others.
fn counted_by_counting_thread(n: usize) -> bool {
    n.is_multiple_of(2)
}

/// Sends items to the counting thread in batches, and frees the batches
/// it has counted.
///
/// Memory is cheapest to free on the thread that allocated it: the
/// allocator's path for memory of another thread costs several times more,
/// which for a report's millions of small strings was a large part of the
/// counting thread's work. So counted batches come back here to be freed.
struct Sender {
    tx: mpsc::SyncSender<ToCount>,
    counted: mpsc::Receiver<Batch>,
    batch: Batch,
    /// The emptied list of a counted batch, for the next evictions.
    spare: Vec<Lifecycle>,
    /// The emptied rejection lists of counted batches, for the next ones.
    spare_rejects: Vec<Vec<RejectRecord>>,
}

impl Sender {
    fn push_reject(&mut self, reject: RejectRecord) -> anyhow::Result<()> {
        self.batch.rejects.push(reject);
        if self.batch.rejects.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends evicted lifecycles on, with the rejections gathered so far.
    fn push_lifecycles(&mut self, lifecycles: Vec<Lifecycle>) -> anyhow::Result<()> {
        if lifecycles.is_empty() {
            return Ok(());
        }
        self.batch.lifecycles = lifecycles;
        self.flush()
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for counted in self.counted.try_iter() {
            let Batch {
                lifecycles: mut room,
                mut rejects,
            } = counted;
            room.clear();
            self.spare = room;
            if rejects.capacity() >= BATCH {
                rejects.clear();
                self.spare_rejects.push(rejects);
            }
        }
        let next_rejects = self
            .spare_rejects
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH));
        let batch = Batch {
            lifecycles: std::mem::take(&mut self.batch.lifecycles),
            rejects: std::mem::replace(&mut self.batch.rejects, next_rejects),
        };
        self.send(ToCount::Batch(batch))
    }

    fn send(&self, message: ToCount) -> anyhow::Result<()> {
        self.tx
            .send(message)
            .map_err(|_| anyhow::anyhow!("the report's counting thread stopped"))
    }
}

/// Reads, parses and correlates the files on this thread while another
/// counts finished lifecycles and rejections, so a report uses two cores.
///
/// The lifecycles still in memory at the end (tens of thousands on a busy
/// log: every message of the last minutes, and every one still queued)
/// are split between both threads, so that neither counts them alone
/// while the other waits: this one counts its half into a builder of its
/// own, added to the counting thread's at the end.
fn report_from_files(
    files: &[PathBuf],
    default_host: &str,
    zone: Zone,
    parse_options: &ParseOptions,
    options: &ReportOptions,
) -> anyhow::Result<Report> {
    // Two batches in flight keep both threads busy; a counting thread
    // that falls behind slows the reading one rather than building up a
    // backlog (see `COLLECT_EVERY`).
    let (tx, rx) = mpsc::sync_channel::<ToCount>(2);
    let (counted_tx, counted) = mpsc::channel::<Batch>();
    let counting_options = options.clone();
    let counter = std::thread::spawn(move || count(counting_options, &rx, &counted_tx));
    let mut sender = Sender {
        tx,
        counted,
        batch: Batch::default(),
        spare: Vec::new(),
        spare_rejects: Vec::new(),
    };

    let correlator = Arc::new(read_files(
        files,
        default_host,
        zone,
        parse_options,
        &mut sender,
    )?);
    sender.flush()?;
    sender.send(ToCount::Rest(Arc::clone(&correlator)))?;
    let Sender { tx, counted, .. } = sender;
    drop(tx);
    let mut mine = ReportBuilder::new(options.clone());
    for (n, lc) in correlator.lifecycles().enumerate() {
        if !counted_by_counting_thread(n) {
            mine.add_lifecycle(lc);
        }
    }
    let mut builder = counter
        .join()
        .map_err(|_| anyhow::anyhow!("the report's counting thread failed"))?;
    builder.merge(&mine);
    let report = builder.finish();

    // Freeing hundreds of thousands of small allocations one by one takes
    // a noticeable part of the run; the process ends right after.
    std::mem::forget(counted.try_iter().collect::<Vec<_>>());
    std::mem::forget(counted);
    std::mem::forget(builder);
    std::mem::forget(mine);
    std::mem::forget(correlator);
    Ok(report)
}

/// The counting thread: adds every item of every batch to a report, sends
/// each counted batch back to be freed, and at the end adds its share of
/// the lifecycles still in the correlator.
fn count(
    options: ReportOptions,
    rx: &mpsc::Receiver<ToCount>,
    counted: &mpsc::Sender<Batch>,
) -> ReportBuilder {
    let mut builder = ReportBuilder::new(options);
    for message in rx {
        match message {
            ToCount::Batch(batch) => {
                for lc in &batch.lifecycles {
                    builder.add_lifecycle(lc);
                }
                for reject in &batch.rejects {
                    builder.add_reject(reject);
                }
                if let Err(unwanted) = counted.send(batch) {
                    // The reading thread is done: the process ends soon.
                    std::mem::forget(unwanted.0);
                }
            }
            ToCount::Rest(correlator) => {
                for (n, lc) in correlator.lifecycles().enumerate() {
                    if counted_by_counting_thread(n) {
                        builder.add_lifecycle(lc);
                    }
                }
            }
        }
    }
    builder
}

/// Feeds every file to a correlator, sending rejections and evicted
/// lifecycles on; returns the correlator with what is still in memory.
///
/// The correlator keeps each lifecycle it evicts, in its final form, for
/// [`Correlator::take_evicted`]; those still in memory at the end are final
/// then. So every message is counted exactly once, and memory holds only
/// the messages still in flight and those completed in the last
/// [`REPORT_GRACE`] of log time.
///
/// The files are read on one thread and parsed on another (see
/// [`parsed`]), which hands over chunks of parsed records in reading order.
fn read_files(
    files: &[PathBuf],
    default_host: &str,
    zone: Zone,
    parse_options: &ParseOptions,
    sender: &mut Sender,
) -> anyhow::Result<Correlator> {
    let config = CorrelatorConfig {
        keep_evicted: true,
        grace: Some(REPORT_GRACE),
        ..CorrelatorConfig::default()
    };
    let mut correlator = Correlator::with_config(zone, config);
    correlator.ignore_changes();
    correlator.omit_details();
    let has_mainlog = files.iter().any(|p| LogFile::from_path(p) == LogFile::Main);

    // Read oldest first, whatever order the files were named in (rotated
    // files by their first timestamp or rotation number), as `import` does.
    let files = if files.iter().any(|p| p.as_os_str() == "-") {
        files.to_vec()
    } else {
        exim_pilot_ingest::order_for_import(files).context("cannot read the files")?
    };

    // A few chunks in flight keep both threads busy with bounded memory.
    // Used chunks go back to the parsing thread, which frees their events
    // where they were allocated (see `Sender`) and hands their buffers on
    // to be filled again.
    let (read_tx, read) = mpsc::sync_channel::<anyhow::Result<ChunkBuilder>>(4);
    let (tx, rx) = mpsc::sync_channel::<anyhow::Result<ParsedChunk>>(4);
    let (used_tx, used) = mpsc::channel::<ParsedChunk>();
    let (spare_tx, spare) = mpsc::channel::<Spare>();
    let parse_options = *parse_options;
    let reader = std::thread::spawn(move || read_chunks(&files, &read_tx, &spare));
    let parser = std::thread::spawn(move || {
        parse_chunks(&read, (&parse_options, zone), &tx, &used, &spare_tx);
    });

    let mut copies = SyslogCopies::new();
    let mut records = 0u64;
    for chunk in rx {
        let chunk = chunk?;
        for parsed in chunk.records() {
            let log = parsed.log;
            match &parsed.read {
                Brief::Event(event) => {
                    let host = event
                        .syslog
                        .as_ref()
                        .map_or(default_host, |s| s.host.as_ref());
                    // A rejection Exim wrote twice through syslog counts once.
                    let count_rejects = (log == LogFile::Main
                        || (log == LogFile::Reject && !has_mainlog))
                        && !copies.is_copy(parsed.record, event);
                    if count_rejects {
                        if let Some(reject) = reject_of(event, host, parsed, zone) {
                            sender.push_reject(reject)?;
                        }
                    }
                    correlator.apply_record(host, log, event);
                }
                Brief::Header { time, syslog } => {
                    let host = syslog.as_ref().map_or(default_host, |s| s.host.as_ref());
                    correlator.apply_time(host, *time);
                }
            }

            records += 1;
            if records.is_multiple_of(COLLECT_EVERY) {
                pass_evicted(&mut correlator, sender)?;
            }
        }
        if let Err(unwanted) = used_tx.send(chunk) {
            // The reading thread is done: the process ends soon.
            std::mem::forget(unwanted.0);
        }
    }
    parser
        .join()
        .map_err(|_| anyhow::anyhow!("the report's parsing thread failed"))?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the report's reading thread failed"))?;
    pass_evicted(&mut correlator, sender)?;
    tracing::debug!(records, in_memory = correlator.len(), "Report input read");
    Ok(correlator)
}

/// Reads every file in order, sending chunks of records to `tx`, filling
/// the buffers of used chunks that come back through `spare`; a reading
/// error is sent as the last item.
fn read_chunks(
    files: &[PathBuf],
    tx: &mpsc::SyncSender<anyhow::Result<ChunkBuilder>>,
    spare: &mpsc::Receiver<Spare>,
) {
    let mut chunk = ChunkBuilder::default();
    for (file_no, path) in files.iter().enumerate() {
        let log = LogFile::from_path(path);
        let read = (|| -> anyhow::Result<()> {
            let input = open_log(path)?;
            let mut reader = RecordReader::new(input);
            while let Some(record) = reader.next_record()? {
                chunk.push(record.bytes, log, file_no as u64, record.offset);
                if chunk.is_full() && tx.send(Ok(chunk.take(spare))).is_err() {
                    // The parsing thread stopped; the correlating one
                    // reports why.
                    return Ok(());
                }
            }
            Ok(())
        })();
        if let Err(e) = read {
            let _ = tx.send(Err(e.context(format!("reading {}", path.display()))));
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(std::mem::take(&mut chunk)));
    }
}

/// Parses the chunks `read` hands over, in order, sending them on to `tx`.
/// Frees the events of the chunks that come back through `used`, and
/// sends their buffers back to the reading thread through `spare`.
fn parse_chunks(
    read: &mpsc::Receiver<anyhow::Result<ChunkBuilder>>,
    options: (&ParseOptions, Zone),
    tx: &mpsc::SyncSender<anyhow::Result<ParsedChunk>>,
    used: &mpsc::Receiver<ParsedChunk>,
    spare: &mpsc::Sender<Spare>,
) {
    let mut lists = Vec::new();
    let mut clocks = Default::default();
    for chunk in read {
        for done in used.try_iter() {
            let (buffers, list) = done.into_spare();
            // The reading thread may be done; the buffers are then freed.
            let _ = spare.send(buffers);
            lists.push(list);
        }
        let list = lists.pop().unwrap_or_default();
        if tx
            .send(chunk.map(|c| c.parse(options, &mut clocks, list)))
            .is_err()
        {
            // The correlating thread stopped; it reports why.
            return;
        }
    }
}

/// Sends the lifecycles evicted so far to the counting thread.
fn pass_evicted(correlator: &mut Correlator, sender: &mut Sender) -> anyhow::Result<()> {
    let room = std::mem::take(&mut sender.spare);
    sender.push_lifecycles(correlator.swap_evicted(room))
}

/// The stored form of a rejection or failed AUTH event, read from server
/// `host`.
fn reject_of(
    event: &exim_pilot_schema::Event<'_>,
    host: &str,
    parsed: &Parsed<'_>,
    zone: Zone,
) -> Option<RejectRecord> {
    let origin = || RecordOrigin {
        host: host.to_string(),
        log: parsed.log,
        file_id: parsed.file_no,
        offset: parsed.offset,
    };
    match &event.kind {
        EventKind::Reject(r) => {
            let at = event.time?.resolve(zone);
            let class = classify_reject(r);
            Some(RejectRecord::from_event(origin(), at, event.id, r, class))
        }
        EventKind::AuthFailure(a) => {
            let at = event.time?.resolve(zone);
            let class = classify_auth_failure(a);
            Some(RejectRecord::from_auth_failure(origin(), at, a, class))
        }
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
