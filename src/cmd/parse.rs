//! `exim-pilot parse`: prints what the parser makes of each record, so
//! anyone can check the parse.
//!
//! With `--format jsonl` every record becomes one JSON object (the event,
//! with its `kind`; an unclassified record has `"kind":"unparsed"` and its
//! raw text). With `--format summary` only the number of records of each
//! kind is printed, which is also the cheapest way to time the parser.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use exim_pilot_processor::parse::{self, RecordReader};
use exim_pilot_schema::LogFile;

/// How `parse` prints its result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Jsonl,
    /// The number of records of each kind.
    Summary,
}

/// Options of `exim-pilot parse`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Log files to read: plain or gzip-compressed; `-` is standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Which log the files are (main, reject or panic). By default it is
    /// guessed from each file's name (or its folder's, when the file's
    /// names none), and standard input is a mainlog.
    #[arg(long)]
    pub log: Option<LogFile>,
    /// The year the logs start in, for syslog stamps without one
    /// (`Oct 22 05:12:48`); stamps after New Year take the next. By
    /// default the current year, or the year before for a date later than
    /// tomorrow.
    #[arg(long)]
    pub syslog_year: Option<i32>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = parse::ParseOptions {
        syslog_year: args.syslog_year,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut counts = Counts::default();
    // The files are one log after another: its years go on across them.
    let mut years: [parse::SyslogYears; 3] = Default::default();

    for path in &args.files {
        let log = args.log.unwrap_or_else(|| LogFile::from_path(path));
        let reader = parse::open_log(path)?;
        read_file(
            path,
            log,
            (&opts, &mut years[log as usize]),
            RecordReader::new(reader),
            args.format,
            &mut counts,
            &mut out,
        )?;
    }

    if args.format == Format::Summary {
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        for (kind, n) in counts.0 {
            *by_name.entry(kind).or_default() += n;
        }
        let counts = by_name;
        let total: u64 = counts.values().sum();
        for (kind, n) in &counts {
            writeln!(out, "{kind}\t{n}")?;
        }
        writeln!(out, "total\t{total}")?;
    }
    out.flush().or_else(ignore_broken_pipe)?;
    Ok(ExitCode::SUCCESS)
}

/// Parses every record of one file and prints or counts it.
fn read_file<R: io::BufRead>(
    path: &Path,
    log: LogFile,
    (opts, years): (&parse::ParseOptions, &mut parse::SyslogYears),
    mut records: RecordReader<R>,
    format: Format,
    counts: &mut Counts,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    while let Some(record) = records
        .next_record()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut event = parse::parse_record_with(opts, log, record.bytes);
        years.settle_event(opts, &mut event);
        counts.add(event.kind.name());
        if format == Format::Jsonl {
            let written = serde_json::to_writer(&mut *out, &event)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = written {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Records per kind. Kind names are static strings, so a short list
/// compared by address is cheaper per record than a map keyed by text;
/// equal names at different addresses are summed when printed.
#[derive(Default)]
struct Counts(Vec<(&'static str, u64)>);

impl Counts {
    fn add(&mut self, kind: &'static str) {
        match self.0.iter_mut().find(|(k, _)| std::ptr::eq(*k, kind)) {
            Some((_, n)) => *n += 1,
            None => self.0.push((kind, 1)),
        }
    }
}

/// A closed pipe (`exim-pilot parse ... | head`) is a normal end.
fn ignore_broken_pipe(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}
