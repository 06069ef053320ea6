//! Options and helpers that several subcommands share.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use exim_pilot_processor::correlate::CorrelatorConfig;
use exim_pilot_processor::parse::{parse_record_with, LogClock, ParseOptions};
use exim_pilot_processor::pipeline::{Pipeline, STATE_BLOB};
use exim_pilot_schema::Zone;
use exim_pilot_store::{ClickHouseStore, SqliteStore, Store};

/// The data directory used when none is given.
pub const DEFAULT_DATA_DIR: &str = "exim-pilot-data";

/// Where the embedded store lives.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Data directory of the embedded store (created when missing).
    #[arg(long, value_name = "DIR", env = "EXIM_PILOT_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
}

/// Where a reading command finds fleet mode's store.
#[derive(clap::Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// Read from fleet mode's store on this ClickHouse server
    /// (`http://HOST:8123`) instead of a data directory.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "files"])]
    pub clickhouse: Option<String>,

    /// The ClickHouse database (with --clickhouse).
    #[arg(
        long,
        value_name = "NAME",
        default_value = exim_pilot_store::clickhouse::DEFAULT_DATABASE
    )]
    pub database: String,
}

/// Opens the store a reading command asked for: the ClickHouse database
/// when `--clickhouse` is given, else the embedded store in `data` (or
/// the default directory). The store's work runs on `rt`.
pub fn open_reader(
    rt: &tokio::runtime::Runtime,
    data: Option<&Path>,
    clickhouse: &ClickHouseArgs,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &clickhouse.clickhouse {
        let store = rt
            .block_on(ClickHouseStore::open(url, &clickhouse.database))
            .with_context(|| format!("cannot read the ClickHouse store at {url}"))?;
        return Ok(Arc::new(store));
    }
    let dir = data.map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), Path::to_path_buf);
    Ok(open_existing_store(&dir)?)
}

/// How log lines are labelled and read.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Name of the mail server the logs come from (default: this machine's
    /// host name).
    #[arg(long, value_name = "NAME", env = "EXIM_PILOT_HOST")]
    pub host: Option<String>,

    /// Zone of log times written without an offset: `local`, `utc`, or an
    /// offset such as `+0100`. Exim writes the server's local time unless
    /// `log_timezone` is set.
    #[arg(
        long,
        visible_alias = "zone",
        value_name = "ZONE",
        default_value = "local",
        allow_hyphen_values = true,
        value_parser = parse_zone
    )]
    pub timezone: Zone,

    /// The year RFC 3164 syslog stamps, which carry none
    /// (`Oct 22 05:12:48`), start in; a log that runs past New Year moves
    /// to the next year at its first stamp of January. By default the
    /// current year, or the year before for a date later than tomorrow.
    /// Exim's own timestamp, when a line has one, always wins.
    #[arg(long, value_name = "YEAR")]
    pub syslog_year: Option<i32>,
}

impl LogArgs {
    /// How records are parsed.
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            syslog_year: self.syslog_year,
        }
    }

    /// The host name to label records with.
    pub fn host(&self) -> anyhow::Result<String> {
        match &self.host {
            Some(h) if !h.trim().is_empty() => Ok(h.trim().to_string()),
            _ => exim_pilot_ingest::local_hostname()
                .context("cannot read this machine's host name; give one with --host"),
        }
    }

    /// The host name for a store that keeps writing the same server's
    /// logs. Records are stored under (host, file, offset), so a store
    /// that followed a log under one name and reads it again under another
    /// would hold every record twice. The first name used is saved in the
    /// store; without `--host` it is reused (a machine renamed, a container
    /// recreated), and an explicit different `--host` is refused unless the
    /// store is meant to hold several servers (`allow_new`).
    pub async fn store_host(&self, store: &dyn Store, allow_new: bool) -> anyhow::Result<String> {
        let saved = store
            .load_blob(HOST_BLOB)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let given = self
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty());
        let first = saved.is_none();
        let host = match (given, saved) {
            (None, Some(saved)) => saved,
            (Some(given), Some(saved)) if given != saved && !allow_new => bail!(
                "this data directory holds the logs of mail server {saved:?}, not {given:?}:                  reading the same logs under a second name would store them twice. Use                  --host {saved} (or leave --host out), or another --data directory"
            ),
            (Some(given), _) => given.to_string(),
            (None, None) => self.host()?,
        };
        if first {
            store.save_blob(HOST_BLOB, host.as_bytes()).await?;
        }
        Ok(host)
    }
}

/// The blob holding the mail server name a store's logs are read under.
const HOST_BLOB: &str = "log-host";

pub fn parse_zone(s: &str) -> Result<Zone, String> {
    Zone::parse(s).ok_or_else(|| format!("{s:?} is not a zone: use local, utc, or +HHMM/-HHMM"))
}

/// An exclusive claim on a data directory, released when dropped. Two
/// processes writing one store would interleave their pipeline states.
pub struct DataLock {
    _file: File,
}

/// Opens the store in `dir`, holding the directory's lock.
pub fn open_store_exclusive(dir: &Path) -> anyhow::Result<(Arc<SqliteStore>, DataLock)> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "--data {} is a file, not a directory: give a directory for the store",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let lock_path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if file.try_lock().is_err() {
        bail!(
            "data directory {} is in use by another exim-pilot process; stop it or use \
             another --data directory",
            dir.display()
        );
    }
    let store = open_store(dir)?;
    Ok((store, DataLock { _file: file }))
}

/// Opens the store in `dir` for reading and writing, without the lock.
pub fn open_store(dir: &Path) -> anyhow::Result<Arc<SqliteStore>> {
    let store = SqliteStore::open_dir(dir)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Opens an existing store for reading; a missing one is an error that
/// says how to make one.
pub fn open_existing_store(dir: &Path) -> anyhow::Result<Arc<SqliteStore>> {
    let db = dir.join(exim_pilot_store::sqlite::DATABASE_FILE);
    if !db.exists() {
        bail!(
            "no exim-pilot data in {}: run `exim-pilot standalone` or `exim-pilot import` \
             first, or give another --data directory",
            dir.display()
        );
    }
    open_store(dir)
}

/// The pipeline saved in the store, or a fresh one.
pub async fn load_pipeline(store: &dyn Store, log: &LogArgs) -> anyhow::Result<Pipeline> {
    let zone = log.timezone;
    let pipeline = match store.load_blob(STATE_BLOB).await? {
        Some(saved) => Pipeline::restore(zone, &saved).context("cannot resume processing")?,
        None => Pipeline::new(zone, CorrelatorConfig::default()),
    };
    Ok(pipeline.with_parse_options(log.parse_options()))
}

/// A runtime for the store's async interface.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A one-line progress display on standard error: redrawn in place on a
/// terminal, printed at most every few seconds otherwise.
pub struct Progress {
    tty: bool,
    last: std::time::Instant,
    every: std::time::Duration,
    drawn: bool,
}

impl Progress {
    /// A display that, off a terminal, prints a line at most every `every`.
    pub fn new(every: std::time::Duration) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: std::time::Instant::now() - every,
            every,
            drawn: false,
        }
    }

    /// Shows `line` if it is time to.
    pub fn show(&mut self, line: &str) {
        let wait = if self.tty {
            std::time::Duration::from_millis(200)
        } else {
            self.every
        };
        if self.last.elapsed() < wait {
            return;
        }
        self.force(line);
    }

    /// Shows `line` now.
    pub fn force(&mut self, line: &str) {
        self.last = std::time::Instant::now();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the in-place line.
    pub fn finish(&mut self) {
        if self.tty && self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

/// `n` with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `text` safe to print on a terminal: control characters other than
/// newlines and tabs (an escape sequence in a hostile log's subject could
/// retitle or clear the operator's terminal) are shown as `\x1b` or
/// `\u{9b}` instead of being sent as they are.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Reads log files once and correlates them in memory: every lifecycle,
/// ordered by first sighting (ties by message id). Every lifecycle is held
/// until the end, so memory grows with the number of messages in the
/// files (about 2 KB each).
pub fn correlate_files(
    files: &[PathBuf],
    host: &str,
    log_args: &LogArgs,
) -> anyhow::Result<Vec<exim_pilot_schema::Lifecycle>> {
    use exim_pilot_processor::correlate::Correlator;

    let zone = log_args.timezone;
    let opts = log_args.parse_options();

    let mut correlator = Correlator::with_config(zone, CorrelatorConfig::keep_all());
    // Each kind of log is read in time order, file after file.
    let mut clocks: [LogClock; 3] = Default::default();
    if files.iter().any(|p| p.as_os_str() == "-") {
        // Standard input cannot be put in time order: read as given.
        for path in files {
            let log = exim_pilot_schema::LogFile::from_path(path);
            let input = exim_pilot_processor::parse::open_log(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut reader = exim_pilot_processor::parse::RecordReader::new(input);
            while let Some(record) = reader
                .next_record()
                .with_context(|| format!("cannot read {}", path.display()))?
            {
                let mut event = parse_record_with(&opts, log, record.bytes);
                clocks[log as usize].settle_event(&opts, zone, &mut event);
                correlator.apply_record(host, log, &event);
            }
        }
    } else {
        let mut importer = exim_pilot_ingest::Importer::new(files, host.to_string())
            .context("cannot read the files")?;
        while let Some(records) = importer
            .next_batch(10_000)
            .context("cannot read the files")?
        {
            for raw in &records {
                let mut event = parse_record_with(&opts, raw.origin.log, &raw.bytes);
                clocks[raw.origin.log as usize].settle_event(&opts, zone, &mut event);
                correlator.apply_record(&raw.origin.host, raw.origin.log, &event);
            }
        }
    }
    let mut all = correlator.into_lifecycles();
    all.sort_by_key(|a| (a.first_seen, a.id));
    Ok(all)
}

/// Every lifecycle in a store, oldest first.
pub async fn stored_lifecycles(
    store: &dyn Store,
    filter: &exim_pilot_store::MessageFilter,
) -> anyhow::Result<Vec<exim_pilot_schema::Lifecycle>> {
    let mut all = Vec::new();
    let mut page = exim_pilot_store::PageRequest {
        first: exim_pilot_store::MAX_PAGE,
        after: None,
    };
    loop {
        let got = store.search(filter, &page).await?;
        all.extend(got.items);
        if !got.has_next_page {
            break;
        }
        page.after = got.end_cursor;
    }
    all.reverse();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("plain\ttext\nnext"), "plain\ttext\nnext");
        assert_eq!(
            printable("Subject: \u{1b}]0;pwned\u{7}\u{1b}[2J!"),
            "Subject: \\x1b]0;pwned\\x07\\x1b[2J!"
        );
        assert_eq!(printable("a\u{9b}b\rc"), "a\\u{9b}b\\x0dc");
        assert_eq!(printable("jörg"), "jörg");
    }
}
