//! Following all of a host's logs together.
//!
//! A [`Tailer`] runs one [`Follower`] per configured log (mainlog,
//! rejectlog, paniclog, or whatever a wildcard path covers) and hands out
//! batches that mix their records; each record says which log it came
//! from, and records of one log stay in file order. One acknowledgement
//! covers the whole batch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use exim_pilot_schema::record::LogFile;

use crate::ack::{Ack, Acker, Batch};
use crate::error::{IngestError, Result};
use crate::follower::{FollowConfig, Follower};
use crate::siblings;
use crate::stats::Stats;

/// One configured log.
#[derive(Clone, Debug)]
pub struct LogSpec {
    /// The log's path. `*` and `?` in the file name are allowed
    /// (`/var/log/exim4/*log`); they are expanded once, at start, into the
    /// live logs they cover (rotated siblings are not followed on their
    /// own).
    pub path: PathBuf,
    /// Which log; by default guessed from the file name
    /// ([`LogFile::from_path`]).
    pub log: Option<LogFile>,
    /// Where its checkpoint lives; by default
    /// `<checkpoint_dir>/<host>-<kind>.json`. Only for a path without
    /// wildcards.
    pub checkpoint: Option<PathBuf>,
}

impl LogSpec {
    /// A log at `path` with every default.
    pub fn new(path: impl Into<PathBuf>) -> LogSpec {
        LogSpec {
            path: path.into(),
            log: None,
            checkpoint: None,
        }
    }
}

/// What a tailer follows and where it keeps its checkpoints.
#[derive(Clone, Debug, Default)]
pub struct TailerConfig {
    /// Host name the records are labelled with; by default the machine's
    /// ([`local_hostname`]).
    pub host: Option<String>,
    /// The logs.
    pub logs: Vec<LogSpec>,
    /// Directory of the checkpoint files; with none (and no per-log
    /// checkpoint) nothing is kept.
    pub checkpoint_dir: Option<PathBuf>,
    /// How each log is followed.
    pub follow: FollowConfig,
}

/// Follows several logs of one host; see the module documentation.
pub struct Tailer {
    host: String,
    followers: Vec<Follower>,
    /// Where the next batch starts taking, so no log starves the others.
    next: usize,
    acker: Acker,
}

impl Tailer {
    /// Starts following every configured log.
    pub fn new(config: TailerConfig) -> Result<Tailer> {
        let host = match config.host {
            Some(host) if !host.trim().is_empty() => host,
            _ => local_hostname()?,
        };
        let mut followers: Vec<Follower> = Vec::new();
        let mut checkpoints: Vec<PathBuf> = Vec::new();
        for spec in &config.logs {
            let paths = siblings::expand_log_path(&spec.path).map_err(IngestError::Config)?;
            if paths.is_empty() {
                return Err(IngestError::Config(format!(
                    "{} matches no file: give the log's path without wildcards to wait for it",
                    spec.path.display()
                )));
            }
            if paths.len() != 1 && spec.checkpoint.is_some() {
                return Err(IngestError::Config(format!(
                    "{}: a checkpoint file can only be given for a path without wildcards",
                    spec.path.display()
                )));
            }
            for path in paths {
                let log = spec.log.unwrap_or_else(|| LogFile::from_path(&path));
                let checkpoint = spec.checkpoint.clone().or_else(|| {
                    let dir = config.checkpoint_dir.as_ref()?;
                    Some(dir.join(format!("{}-{}.json", file_safe(&host), log.as_str())))
                });
                if let Some(checkpoint) = &checkpoint {
                    if checkpoints.contains(checkpoint) {
                        return Err(IngestError::Config(format!(
                            "{} and another {} log would share the checkpoint {}: give each \
                             its own checkpoint file",
                            path.display(),
                            log.as_str(),
                            checkpoint.display()
                        )));
                    }
                    checkpoints.push(checkpoint.clone());
                }
                followers.push(Follower::new(
                    path,
                    log,
                    host.clone(),
                    checkpoint,
                    config.follow.clone(),
                )?);
            }
        }
        if followers.is_empty() {
            return Err(IngestError::Config(
                "no log to follow: give at least one log path".into(),
            ));
        }
        Ok(Tailer {
            host,
            followers,
            next: 0,
            acker: Acker::default(),
        })
    }

    /// The host name records are labelled with.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The followers, one per live log.
    pub fn followers(&self) -> &[Follower] {
        &self.followers
    }

    /// A handle that acknowledges batches from another thread.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// Polls every log once ([`Follower::poll`]); returns the number of
    /// records ready.
    pub fn poll(&mut self) -> Result<usize> {
        self.apply_queued_acks()?;
        let mut ready = 0;
        for follower in &mut self.followers {
            ready += follower.poll()?;
        }
        Ok(ready)
    }

    /// Hands out up to `max_records` records already read, taken from the
    /// logs in turn.
    pub fn take_batch(&mut self, max_records: usize) -> Option<Batch> {
        let max_records = max_records.max(1);
        let count = self.followers.len();
        let mut records = Vec::new();
        let mut acks = Vec::new();
        let mut inodes = Vec::new();
        for step in 0..count {
            let index = (self.next + step) % count;
            let room = max_records - records.len();
            if room == 0 {
                break;
            }
            if let Some(batch) = self.followers[index].take_batch(room) {
                inodes.extend_from_slice(&batch.inodes);
                let (taken, ack) = batch.into_parts();
                records.extend(taken);
                acks.push(ack);
            }
        }
        self.next = (self.next + 1) % count.max(1);
        if records.is_empty() {
            return None;
        }
        Some(Batch::new(records, Ack::merge(acks)).with_inodes(inodes))
    }

    /// Pulls the next batch, polling until records are ready or `wait` has
    /// passed (then `None`).
    pub fn next_batch(&mut self, max_records: usize, wait: Duration) -> Result<Option<Batch>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(batch) = self.take_batch(max_records) {
                return Ok(Some(batch));
            }
            self.poll()?;
            if let Some(batch) = self.take_batch(max_records) {
                return Ok(Some(batch));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake = self
                .followers
                .iter()
                .map(|f| f.next_wake(now, deadline))
                .min()
                .unwrap_or(deadline);
            std::thread::sleep(wake.saturating_duration_since(now));
        }
    }

    /// Acknowledges a batch (see [`Follower::ack`]).
    pub fn ack(&mut self, ack: &Ack) -> Result<()> {
        let mut result = Ok(());
        for follower in &mut self.followers {
            // Every follower gets its part even if an earlier one fails to
            // write its checkpoint.
            if let Err(e) = follower.ack(ack) {
                result = Err(e);
            }
        }
        result
    }

    /// Writes every checkpoint that has news.
    pub fn write_checkpoints(&mut self) -> Result<()> {
        self.apply_queued_acks()?;
        let mut result = Ok(());
        for follower in &mut self.followers {
            if let Err(e) = follower.write_checkpoint() {
                result = Err(e);
            }
        }
        result
    }

    /// Applies pending acknowledgements and writes the checkpoints: the
    /// last call on a clean shutdown.
    pub fn close(mut self) -> Result<()> {
        self.write_checkpoints()
    }

    /// Figures of every log.
    pub fn stats(&self) -> Vec<Stats> {
        self.followers.iter().map(Follower::stats).collect()
    }

    fn apply_queued_acks(&mut self) -> Result<()> {
        let mut result = Ok(());
        for ack in self.acker.take() {
            if let Err(e) = self.ack(&ack) {
                result = Err(e);
            }
        }
        result
    }
}

/// The host name for a file name: path separators and other awkward
/// characters become `_`.
fn file_safe(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// This machine's host name, as `gethostname(2)` gives it.
pub fn local_hostname() -> Result<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which is writable
    // for its whole length; gethostname writes no more than that.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return Err(IngestError::Hostname(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let len = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..len]).trim().to_owned();
    if name.is_empty() {
        return Err(IngestError::Hostname("the host name is empty".into()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_found() {
        let name = local_hostname().unwrap();
        assert!(!name.is_empty());
        assert!(!name.contains('\0'));
    }

    #[test]
    fn host_names_are_made_file_safe() {
        assert_eq!(file_safe("mx1.example.com"), "mx1.example.com");
        assert_eq!(file_safe("../etc/x y"), ".._etc_x_y");
    }
}
