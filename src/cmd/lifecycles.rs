//! `exim-pilot lifecycles`: one JSON object per message.
//!
//! For anyone who wants to check the correlation: each line is a
//! [`Lifecycle`](exim_pilot_schema::Lifecycle) as JSON, with `host`, `id`,
//! `sender`, `size`, `received_at`, `state` and one `recipients` entry per
//! final address (`address`, `original`, `outcome`, `attempts`,
//! `last_code`, `last_text`, `reason`, and the attempt `history`).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use exim_pilot_store::MessageFilter;

use super::common::{self, ClickHouseArgs, LogArgs};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
}

/// Options of `exim-pilot lifecycles`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Log files to read (plain or .gz); without them, the store is read
    /// (the embedded one, or fleet mode's with --clickhouse).
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Read from the store in this data directory (the default when no
    /// file is given; default ./exim-pilot-data).
    #[arg(long, value_name = "DIR", env = "EXIM_PILOT_DATA")]
    data: Option<PathBuf>,

    #[command(flatten)]
    store: ClickHouseArgs,

    #[command(flatten)]
    log_args: LogArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lifecycles = if args.files.is_empty() {
        let rt = common::runtime()?;
        let store = common::open_reader(&rt, args.data.as_deref(), &args.store)?;
        rt.block_on(common::stored_lifecycles(
            &*store,
            &MessageFilter::default(),
        ))?
    } else {
        if let Some(dir) = &args.data {
            eprintln!(
                "exim-pilot: reading the files given; the store in {} is not used",
                dir.display()
            );
        }
        let host = args.log_args.host()?;
        common::correlate_files(&args.files, &host, &args.log_args)?
    };

    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    for lc in &lifecycles {
        match args.format {
            Format::Jsonl => {
                serde_json::to_writer(&mut out, lc).context("cannot write JSON")?;
                out.write_all(b"\n").context("cannot write the output")?;
            }
        }
    }
    out.flush().context("cannot write the output")?;
    Ok(ExitCode::SUCCESS)
}
