//! `exim-pilot import`: backfill log files into the embedded store.
//!
//! Files (plain or gzip, told apart by their content) are read in time
//! order (see the ingest crate's importer), run through the same
//! [`Pipeline`](exim_pilot_processor::pipeline::Pipeline) as
//! `exim-pilot standalone`, and committed batch by batch with the
//! pipeline's state, so an interrupted import can simply be run again:
//! records already stored are recognised and skipped. The last line of a
//! plain file is left out while it has no newline (see
//! [`Importer::holding_back_unfinished_lines`]). A file that shrinks while
//! it is read (truncated by a rotation) ends the import with an error after
//! the records read before it are committed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use exim_pilot_ingest::Importer;
use exim_pilot_store::Store;

use super::common::{self, thousands, DataArgs, LogArgs, Progress};

/// Records per batch.
const BATCH_RECORDS: usize = 20_000;

/// Options of `exim-pilot import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Log files to import (mainlog, rejectlog, paniclog; plain or .gz).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,

    #[command(flatten)]
    data: DataArgs,

    #[command(flatten)]
    log_args: LogArgs,

    /// Print no progress, only the summary.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (store, _lock) = common::open_store_exclusive(&args.data.data)?;
    let rt = common::runtime()?;
    // An import may bring another server's logs: a new explicit --host is
    // taken, and without one the store's own server is assumed.
    let host = rt.block_on(args.log_args.store_host(&*store, true))?;
    let mut pipeline = rt.block_on(common::load_pipeline(&*store, &args.log_args))?;
    // A live log may end in a line Exim is still writing: stored half, it
    // would stay half (the whole line, at the same offset, is taken as
    // stored), so it waits for a later import or for `standalone`.
    let mut importer = Importer::new(&args.files, host.clone())
        .context("cannot read the files")?
        .holding_back_unfinished_lines();

    let started = Instant::now();
    let total = importer.bytes_total().max(1);
    let mut progress = Progress::new(Duration::from_secs(10));
    let mut summary = exim_pilot_store::BatchSummary::default();

    // Each batch is committed with the state that covers it. A file that
    // fails part way (one that shrank while it was read) ends the import
    // after the records read before, which are committed and summed up.
    let mut failed = None;
    loop {
        let records = match importer.next_batch(BATCH_RECORDS) {
            Ok(Some(records)) => records,
            Ok(None) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        let batch = pipeline.process(records, true);
        let s = rt
            .block_on(store.commit_batch(batch))
            .context("cannot write to the store")?;
        summary.records_added += s.records_added;
        summary.lifecycles_added += s.lifecycles_added;
        summary.rejects_added += s.rejects_added;

        if !args.quiet {
            let done = importer.bytes_done();
            progress.show(&bar(done, total, pipeline.counts().records));
        }
    }
    if !args.quiet {
        progress.force(&bar(total, total, pipeline.counts().records));
        progress.finish();
    }

    let counts = pipeline.counts();
    println!(
        "Imported {} file(s) for host {host} in {:.1} s: {} records ({} new, {} already \
         stored), {} messages, {} rejections, {} unparsed records.",
        importer.files().len(),
        started.elapsed().as_secs_f64(),
        thousands(counts.records),
        thousands(summary.records_added),
        thousands(counts.records - summary.records_added.min(counts.records)),
        thousands(summary.lifecycles_added),
        thousands(summary.rejects_added),
        thousands(counts.unparsed),
    );
    for (path, bytes) in importer.held_back() {
        println!(
            "{}: its last line has no newline yet ({bytes} bytes, still being written?) and \
             was left out; import the file again, or let `exim-pilot standalone` read it, once \
             the line is complete.",
            path.display()
        );
    }
    if counts.unparsed > 0 {
        println!(
            "Unparsed records are kept whole; list them with \
             `exim-pilot parse --format jsonl FILE | grep '\"kind\":\"unparsed\"'`."
        );
    }
    match failed {
        Some(e) => Err(anyhow::Error::new(e).context("the import is incomplete")),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// A progress bar: `[#####.....] 52% 1,234 records`.
fn bar(done: u64, total: u64, records: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH / total) as usize;
    format!(
        "[{}{}] {:>3}% {} records",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        done.min(total) * 100 / total,
        thousands(records)
    )
}
