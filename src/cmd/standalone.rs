//! `exim-pilot standalone`: the whole main job on one machine.
//!
//! One process tails this machine's Exim logs (following rotation),
//! parses and correlates every record, and stores records, lifecycles and
//! rejections in the embedded SQLite store, showing its progress on the
//! terminal. Nothing else needs to be installed or running.
//!
//! The loop, per batch: take records from the tailer, run them through the
//! [`Pipeline`], commit the store batch, then acknowledge the records to
//! the tailer so its checkpoint may move past them. The pipeline's state
//! is committed with the data at most every [`STATE_EVERY`] and whenever
//! the tailer has caught up; acknowledgements wait for that commit. A
//! crash at any point therefore re-reads records that the saved state
//! either already covers (skipped) or does not (applied once).
//!
//! With `--listen`, the process serves the GraphQL API (see
//! `exim-pilot serve`), `/health`, `/ready` and `/metrics` (Prometheus) on
//! that address; each committed batch is also published to the API's live
//! subscriptions. Retention runs at start and every hour,
//! by the wall clock: raw records older than 90 days and attempts,
//! lifecycles and rejections older than 180 days are dropped (audit
//! entries after 365 days); `--keep-raw-days`, `--keep-days` and
//! `--no-retention` change that, and whatever is dropped is reported.
//!
//! The host's Exim queue is listed into the store every
//! `--queue-interval` seconds (once, at the end, with `--once`), and the
//! API's queue actions and message views run with the local Exim (see
//! [`super::queue`]); without an Exim binary the queue is left alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use exim_pilot_ingest::{Ack, FollowConfig, LogSpec, Tailer, TailerConfig};
use exim_pilot_processor::pipeline::Pipeline;
use exim_pilot_schema::report::ReportOptions;
use exim_pilot_store::{Retention, Store};

use exim_pilot_api::queue::QueueControl;
use exim_pilot_ingest::queue::QueueMetrics;

use super::common::{self, thousands, DataArgs, LogArgs, Progress};
use super::queue;
use crate::metrics::Metrics;

/// Time between two retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Longest time between two saves of the pipeline state.
const STATE_EVERY: Duration = Duration::from_secs(2);

/// Records per batch at most.
const BATCH_RECORDS: usize = 20_000;

/// Where Exim's logs usually are, per distribution.
const DEFAULT_LOG_DIRS: [&str; 2] = ["/var/log/exim4", "/var/log/exim"];

/// The names Exim's three logs go by.
const LOG_NAMES: [&str; 6] = [
    "mainlog",
    "rejectlog",
    "paniclog",
    "main.log",
    "reject.log",
    "panic.log",
];

/// Options of `exim-pilot standalone`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A log file, or a directory holding mainlog/rejectlog/paniclog.
    /// Repeat for several. Default: Debian's /var/log/exim4/ or
    /// /var/log/exim/.
    #[arg(long = "log", value_name = "PATH")]
    logs: Vec<PathBuf>,

    #[command(flatten)]
    data: DataArgs,

    #[command(flatten)]
    log_args: LogArgs,

    /// On a first start, read the rotated logs (mainlog.1, mainlog.2.gz...)
    /// before the live ones.
    #[arg(long)]
    backfill: bool,

    /// Stop once every log has been read to its end, instead of following.
    #[arg(long)]
    once: bool,

    /// Days raw log records are kept.
    #[arg(long, value_name = "DAYS", default_value_t = 90)]
    keep_raw_days: u32,

    /// Days delivery attempts, lifecycles and rejections are kept.
    #[arg(long, value_name = "DAYS", default_value_t = 180)]
    keep_days: u32,

    /// Keep everything: never drop old data.
    #[arg(long)]
    no_retention: bool,

    /// Serve the GraphQL API, /health, /ready and /metrics on this
    /// address, e.g. 127.0.0.1:9465.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    #[command(flatten)]
    api: super::serve::ApiArgs,

    #[command(flatten)]
    queue: super::queue::QueueArgs,

    /// Print no progress.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let logs = resolve_logs(&args.logs)?;
    let api = args.api.config(&crate::config::ServeSection::default())?;
    let (store, _lock) = common::open_store_exclusive(&args.data.data)?;
    let rt = common::runtime()?;
    let host = rt.block_on(args.log_args.store_host(&*store, false))?;

    let pipeline = rt.block_on(common::load_pipeline(&*store, &args.log_args))?;
    let tailer = Tailer::new(TailerConfig {
        host: Some(host.clone()),
        logs: logs.iter().map(LogSpec::new).collect(),
        checkpoint_dir: Some(args.data.data.join("checkpoints")),
        follow: FollowConfig {
            backfill: args.backfill,
            ..FollowConfig::default()
        },
    })
    .context("cannot follow the logs")?;

    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(&rt, stop.clone());
    let metrics = Metrics::new().context("cannot set up metrics")?;
    let live = exim_pilot_api::live::channel();

    // The queue: listed into the store at an interval (once at the end
    // with --once), acted on through the API.
    let queue_metrics =
        QueueMetrics::new(&metrics.registry).context("cannot set up the queue's metrics")?;
    let exim = args.queue.exim(&host, Some(queue_metrics))?;
    let dyn_store: Arc<dyn Store> = store.clone();
    if let (Some(exim), false) = (&exim, args.once) {
        queue::watch_queue(
            &rt,
            exim.clone(),
            args.queue.interval(),
            dyn_store.clone(),
            stop.clone(),
        );
    }
    let control = exim.clone().map(|exim| {
        Arc::new(queue::LocalQueue::new(exim, dyn_store.clone())) as Arc<dyn QueueControl>
    });

    let server = match args.listen {
        Some(addr) => {
            let state = exim_pilot_api::AppState {
                store: store.clone(),
                registry: metrics.registry.clone(),
                live: live.clone(),
                config: api,
                queue: control,
            };
            Some(serve(&rt, addr, state, stop.clone())?)
        }
        None => None,
    };

    if !args.quiet {
        eprintln!(
            "exim-pilot: following {} as host {host}, storing in {}",
            logs.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            args.data.data.display()
        );
    }
    let mut job = Job {
        tailer,
        pipeline,
        store: store.clone(),
        rt: &rt,
        pending: Vec::new(),
        last_save: Instant::now(),
        last_retention: None,
        retention: (!args.no_retention).then(|| Retention {
            raw_records: args.keep_raw_days,
            attempts: args.keep_days,
            lifecycles: args.keep_days,
            rejects: args.keep_days,
            ..Retention::default()
        }),
        quiet: args.quiet,
        progress: (!args.quiet).then(|| Progress::new(Duration::from_secs(10))),
        metrics,
        live,
    };
    let result = job.run(&stop, args.once);
    if let Some(p) = job.progress.as_mut() {
        p.finish();
    }
    if args.once && result.is_ok() {
        job.tell_unfinished_lines();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(server) = server {
        rt.block_on(server)
            .context("the HTTP server stopped")?
            .context("the HTTP server failed")?;
    }
    result?;
    job.tailer
        .close()
        .context("cannot write the final checkpoints")?;
    if let (Some(exim), true) = (exim, args.once) {
        rt.block_on(queue::store_listing(exim, &*dyn_store))
            .context("cannot list the queue")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the API with the health, readiness and metrics endpoints; they
/// stop once `stop` is set.
fn serve(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    state: exim_pilot_api::AppState,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), exim_pilot_api::ServeError>>> {
    let shutdown = async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let (local, serving) = rt.block_on(exim_pilot_api::bind(addr, state, shutdown))?;
    eprintln!(
        "exim-pilot: serving the GraphQL API, /health, /ready and /metrics on {scheme}://{local}"
    );
    Ok(rt.spawn(serving))
}

/// Where committed batches go for the API's subscriptions.
type Live = tokio::sync::broadcast::Sender<Arc<exim_pilot_api::LiveBatch>>;

/// The running job's parts.
struct Job<'r> {
    tailer: Tailer,
    pipeline: Pipeline,
    store: Arc<exim_pilot_store::SqliteStore>,
    rt: &'r tokio::runtime::Runtime,
    /// Batches stored but not yet covered by a saved state.
    pending: Vec<Ack>,
    last_save: Instant,
    last_retention: Option<Instant>,
    retention: Option<Retention>,
    quiet: bool,
    progress: Option<Progress>,
    metrics: Metrics,
    /// Committed batches, for subscribers.
    live: Live,
}

impl Job<'_> {
    fn run(&mut self, stop: &AtomicBool, once: bool) -> anyhow::Result<()> {
        let mut status = Status::default();
        while !stop.load(Ordering::Relaxed) {
            self.retention()?;
            let batch = self
                .tailer
                .next_batch(BATCH_RECORDS, Duration::from_millis(500))
                .context("cannot read the logs")?;
            let caught_up =
                batch.as_ref().is_none_or(|b| b.len() < BATCH_RECORDS) && self.bytes_behind() == 0;
            // A wait that brought nothing means the last record, held until
            // its continuation lines could no longer follow, was handed out.
            let drained = batch.is_none() && self.bytes_behind() == 0;

            // Store what was read, with the state when it is time.
            let records = match batch {
                Some(batch) => {
                    let (records, ack) = batch.into_parts();
                    self.pending.push(ack);
                    records
                }
                None => Vec::new(),
            };
            let save =
                !self.pending.is_empty() && (caught_up || self.last_save.elapsed() >= STATE_EVERY);
            if !records.is_empty() || save {
                self.commit(records, save)?;
            }

            self.show(&mut status, false)?;
            if once && drained && self.pending.is_empty() {
                break;
            }
        }

        // Leave with everything stored and acknowledged.
        if !self.pending.is_empty() {
            self.commit(Vec::new(), true)?;
        }
        self.show(&mut status, true)?;
        Ok(())
    }

    fn commit(
        &mut self,
        records: Vec<exim_pilot_schema::RawRecord>,
        save: bool,
    ) -> anyhow::Result<()> {
        let batch = self.pipeline.process(records, save);
        // Copied for subscribers only when there are any.
        let live = (self.live.receiver_count() > 0 && !batch.records.is_empty())
            .then(|| exim_pilot_api::LiveBatch::of(&batch));
        let started = Instant::now();
        self.rt
            .block_on(self.store.commit_batch(batch))
            .context("cannot write to the store")?;
        if let Some(live) = live {
            let _ = self.live.send(Arc::new(live));
        }
        self.metrics
            .committed(started.elapsed().as_secs_f64(), self.pipeline.counts());
        self.metrics.tailer(&self.tailer.stats());
        if save {
            for ack in self.pending.drain(..) {
                self.tailer.ack(&ack).context("cannot write a checkpoint")?;
            }
            self.last_save = Instant::now();
        }
        Ok(())
    }

    /// Drops what is older than the retention policy, at most hourly.
    fn retention(&mut self) -> anyhow::Result<()> {
        let Some(policy) = self.retention else {
            return Ok(());
        };
        if self
            .last_retention
            .is_some_and(|t| t.elapsed() < RETENTION_EVERY)
        {
            return Ok(());
        }
        self.last_retention = Some(Instant::now());
        let dropped = self
            .rt
            .block_on(self.store.apply_retention(&policy, chrono::Utc::now()))
            .context("cannot apply retention")?;
        if !self.quiet && (dropped.raw_records > 0 || dropped.lifecycles > 0) {
            eprintln!(
                "exim-pilot: retention dropped {} raw records older than {} days and {} \
                 lifecycles older than {} days (keep them with --no-retention)",
                dropped.raw_records, policy.raw_records, dropped.lifecycles, policy.lifecycles
            );
        }
        tracing::info!(
            raw_records = dropped.raw_records,
            attempts = dropped.attempts,
            lifecycles = dropped.lifecycles,
            rejects = dropped.rejects,
            "Retention applied"
        );
        Ok(())
    }

    /// Says which logs end in a line without its newline: it is read
    /// once complete, so a run that stops now has not read it.
    fn tell_unfinished_lines(&self) {
        for stats in self.tailer.stats() {
            if stats.unfinished_line_bytes > 0 {
                eprintln!(
                    "exim-pilot: {} ends in a line without a newline ({} bytes, still being \
                     written?): it is read once the line is complete",
                    stats.path.display(),
                    stats.unfinished_line_bytes
                );
            }
        }
    }

    fn bytes_behind(&self) -> u64 {
        self.tailer.stats().iter().map(|s| s.bytes_behind).sum()
    }

    /// Refreshes the progress line from the store's totals.
    fn show(&mut self, status: &mut Status, last: bool) -> anyhow::Result<()> {
        let Some(progress) = self.progress.as_mut() else {
            return Ok(());
        };
        if !last
            && status
                .at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        status.at = Some(Instant::now());
        let report = self
            .rt
            .block_on(self.store.report(&ReportOptions::default()))
            .context("cannot read the store's totals")?;
        let t = &report.totals;
        let counts = self.pipeline.counts();
        let behind: u64 = self.tailer.stats().iter().map(|s| s.bytes_behind).sum();
        let line = format!(
            "records {} | messages {} | delivered {} | deferred {} | bounced {} | rejected {} \
             | unparsed {} | behind {} B",
            thousands(counts.records),
            thousands(t.messages.max(0) as u64),
            thousands(t.delivered.max(0) as u64),
            thousands(t.deferred.max(0) as u64),
            thousands(t.bounced.max(0) as u64),
            thousands(t.rejected.max(0) as u64),
            thousands(counts.unparsed),
            thousands(behind),
        );
        if last {
            progress.force(&line);
        } else {
            progress.show(&line);
        }
        Ok(())
    }
}

/// When the progress line was last refreshed.
#[derive(Default)]
struct Status {
    at: Option<Instant>,
}

/// Sets `stop` on SIGINT or SIGTERM, so the job can store what it holds.
pub(crate) fn watch_signals(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>) {
    rt.spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// The log files to follow: the given files, the Exim logs inside given
/// directories, or those of the default directories.
pub(crate) fn resolve_logs(given: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut logs = Vec::new();
    if given.is_empty() {
        for dir in DEFAULT_LOG_DIRS {
            logs.extend(logs_in(Path::new(dir)));
            if !logs.is_empty() {
                return Ok(logs);
            }
        }
        let tried: Vec<String> = DEFAULT_LOG_DIRS
            .iter()
            .flat_map(|d| LOG_NAMES.iter().map(move |n| format!("{d}/{n}")))
            .collect();
        bail!(
            "no Exim log found; tried {}.\nGive the logs with --log PATH (a file or a \
             directory), e.g. --log /var/log/exim4/mainlog",
            tried.join(", ")
        );
    }
    for path in given {
        if path.is_dir() {
            let found = logs_in(path);
            if found.is_empty() {
                bail!(
                    "{} holds none of {}: give the log files themselves with --log",
                    path.display(),
                    LOG_NAMES.join(", ")
                );
            }
            logs.extend(found);
        } else {
            // A file that does not exist yet is followed once it appears.
            if !path.exists() {
                eprintln!(
                    "exim-pilot: {} does not exist yet; it is read once it appears",
                    path.display()
                );
            }
            logs.push(path.clone());
        }
    }
    Ok(logs)
}

/// The Exim logs directly inside `dir`.
fn logs_in(dir: &Path) -> Vec<PathBuf> {
    LOG_NAMES
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .collect()
}
