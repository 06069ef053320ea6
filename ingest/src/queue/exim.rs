//! Running Exim's own command line on the queue: list, count, act, view.
//!
//! Everything goes through the `exim` binary, never through the spool
//! files: `exim -bp` lists the queue (Exim reads its spool, locks what it
//! must and knows its own formats, `split_spool_directory` included), the
//! `-M` options act on one message with Exim's own locking and logging,
//! and `-Mvh`, `-Mvl`, `-Mvb` print a message's parts. exim-pilot never
//! writes to the spool, and never reads it itself.
//!
//! Each run is one process started without a shell (the arguments are
//! passed as they are), with standard input closed, within a time limit
//! (the process and everything it started are killed when it is reached)
//! and with its output cut at a limit. A message id is checked to be an
//! Exim message id before anything runs, so no text from a request ever
//! reaches Exim's command line other than a valid id.
//!
//! Exim only lets its administrators list the queue and act on it: run
//! exim-pilot as root, as Exim's user, or in a group listed in Exim's
//! `admin_groups`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use exim_pilot_schema::queue::{
    MessageView, QueueAction, QueueActionResult, QueueActionStatus, QueueJob,
};
use exim_pilot_schema::MessageId;

use super::error::EximError;
use super::listing::{parse_bp, Listing};
use super::metrics::{Events, QueueMetrics};
use super::process::{self, Finished, RunError};

/// How much of what Exim printed is kept in an action's result.
pub const ACTION_OUTPUT_LIMIT: usize = 4 * 1024;

/// How to run Exim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EximConfig {
    /// The Exim binary. Default `/usr/sbin/exim4`, where Debian and Ubuntu
    /// put it; most other systems call it `/usr/sbin/exim`.
    pub binary: PathBuf,
    /// A configuration file to pass with `-C`, instead of Exim's own.
    /// Exim gives up its root privilege for a file not listed in its
    /// trusted configurations (on Debian `/etc/exim4/trusted_configs`).
    pub config_file: Option<PathBuf>,
    /// How long one Exim command may take before it is killed. Default two
    /// minutes: listing a large queue reads every message's header file,
    /// and `exim -M` waits for the delivery attempt it starts.
    pub timeout: Duration,
    /// The most output kept from one command; a listing larger than this
    /// is an error rather than a silently shortened queue. Default 256 MiB
    /// (a message takes about 100 bytes of `exim -bp`).
    pub max_output_bytes: usize,
    /// The most bytes of a message body that a body view returns. Default
    /// 64 KiB.
    pub body_limit: usize,
}

impl Default for EximConfig {
    fn default() -> EximConfig {
        EximConfig {
            binary: PathBuf::from("/usr/sbin/exim4"),
            config_file: None,
            timeout: Duration::from_secs(120),
            max_output_bytes: 256 << 20,
            body_limit: 64 << 10,
        }
    }
}

/// A view of one queued message, as Exim printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageText {
    /// Which view.
    pub view: MessageView,
    /// The text. For headers and body, without the first line of the
    /// spool file, which only repeats the file's name (`<id>-H`, `<id>-D`).
    pub text: String,
    /// True when the text was cut: the body at the body limit, the other
    /// views at the maximum output size.
    pub truncated: bool,
}

/// Exim on this host, run for the queue.
#[derive(Clone)]
pub struct Exim {
    host: String,
    config: EximConfig,
    events: Events,
}

impl Exim {
    /// Runs Exim as `config` says, for the host named `host` (the name
    /// snapshots carry and jobs must name).
    pub fn new(host: impl Into<String>, config: EximConfig) -> Exim {
        Exim {
            host: host.into(),
            config,
            events: Events::default(),
        }
    }

    /// Counts snapshots, listing problems and actions in `metrics`.
    pub fn with_metrics(mut self, metrics: QueueMetrics) -> Exim {
        self.events = Events::new(Some(metrics));
        self
    }

    /// The host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How Exim is run.
    pub fn config(&self) -> &EximConfig {
        &self.config
    }

    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// Lists the queue (`exim -bp`).
    pub async fn list(&self) -> Result<Listing, EximError> {
        let args = ["-bp"];
        let finished = self.run(&args, self.config.max_output_bytes).await?;
        if finished.cut {
            return Err(EximError::OutputTooLarge {
                command: self.command_line(&args),
                limit: self.config.max_output_bytes,
            });
        }
        let finished = self.succeeded(&args, finished)?;
        Ok(parse_bp(&String::from_utf8_lossy(&finished.stdout)))
    }

    /// Counts the messages on the queue (`exim -bpc`).
    pub async fn count(&self) -> Result<u64, EximError> {
        let args = ["-bpc"];
        let finished = self.run(&args, 1024).await?;
        let finished = self.succeeded(&args, finished)?;
        let text = String::from_utf8_lossy(&finished.stdout);
        text.trim().parse().map_err(|_| EximError::Failed {
            command: self.command_line(&args),
            exit_code: finished.exit_code,
            output: format!("expected a number of messages, got {:?}", text.trim()),
        })
    }

    /// Runs `action` on message `id`, for job `job_id`. Fails without
    /// running anything when `id` is no message id, and when Exim cannot be
    /// started; every other outcome (Exim refused, timed out) is a result.
    pub async fn act(
        &self,
        job_id: &str,
        action: QueueAction,
        id: &str,
    ) -> Result<QueueActionResult, EximError> {
        let id: MessageId = id.parse()?;
        let args = [action.exim_option(), id.as_str()];
        // Output past the action limit is cut from the result, but Exim is
        // not stopped for it: an action is never killed half-way for its
        // chattiness.
        let limit = self.config.max_output_bytes;
        let (status, exit_code, output) = match self.run(&args, limit).await {
            Ok(finished) => {
                let status = match finished.exit_code {
                    Some(0) => QueueActionStatus::Done,
                    _ => QueueActionStatus::Failed,
                };
                (status, finished.exit_code, action_output(&finished))
            }
            Err(error @ EximError::TimedOut { .. }) => {
                (QueueActionStatus::TimedOut, None, error.to_string())
            }
            Err(error) => return Err(error),
        };
        let result = QueueActionResult {
            job_id: job_id.to_string(),
            host: self.host.clone(),
            id,
            action,
            status,
            exit_code,
            output,
            finished_at: Utc::now(),
        };
        self.events.action_finished(&result);
        Ok(result)
    }

    /// Prints one view of message `id`.
    pub async fn view(&self, id: &str, view: MessageView) -> Result<MessageText, EximError> {
        let id: MessageId = id.parse()?;
        let args = [view.exim_option(), id.as_str()];
        // The spool file's first line, `<id>-D` or `<id>-H`, is not counted
        // in the body limit.
        let limit = match view {
            MessageView::Body => self.config.body_limit + id.text_len() + 3,
            MessageView::Headers | MessageView::Log => self.config.max_output_bytes,
        };
        let finished = self.run(&args, limit).await?;
        let cut = finished.cut;
        let finished = if cut {
            finished
        } else {
            self.view_succeeded(&args, id, finished)?
        };
        let text = String::from_utf8_lossy(&finished.stdout);
        Ok(MessageText {
            view,
            text: without_spool_name(&text, id, view).to_string(),
            truncated: cut,
        })
    }

    /// Runs a job's action on each of its messages in order, one result per
    /// message. A job for another host is refused; a job past its expiry
    /// (`now` after `expires_at`) runs nothing and reports every message
    /// expired. A message Exim could not be started for is reported failed,
    /// with the reason as output.
    pub async fn run_job(
        &self,
        job: &QueueJob,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueActionResult>, EximError> {
        let mut results = Vec::with_capacity(job.ids.len());
        self.run_job_each(job, now, |result| results.push(result))
            .await?;
        Ok(results)
    }

    /// [`Exim::run_job`], handing each message's result to `each` as soon
    /// as it is known, so that a long job's results can travel while it
    /// runs.
    pub async fn run_job_each(
        &self,
        job: &QueueJob,
        now: DateTime<Utc>,
        mut each: impl FnMut(QueueActionResult),
    ) -> Result<(), EximError> {
        if job.host != self.host {
            let error = EximError::WrongHost {
                job_id: job.job_id.clone(),
                job_host: job.host.clone(),
                host: self.host.clone(),
            };
            self.events.job_refused(job, &error);
            return Err(error);
        }

        if now > job.expires_at {
            for id in &job.ids {
                let result = self.expired(job, *id, now);
                self.events.action_finished(&result);
                each(result);
            }
            return Ok(());
        }

        for id in &job.ids {
            let result = match self.act(&job.job_id, job.action, id.as_str()).await {
                Ok(result) => result,
                Err(error) => {
                    let result = self.not_run(job, *id, &error);
                    self.events.action_finished(&result);
                    result
                }
            };
            each(result);
        }
        Ok(())
    }

    fn expired(&self, job: &QueueJob, id: MessageId, now: DateTime<Utc>) -> QueueActionResult {
        QueueActionResult {
            job_id: job.job_id.clone(),
            host: self.host.clone(),
            id,
            action: job.action,
            status: QueueActionStatus::Expired,
            exit_code: None,
            output: format!(
                "The job expired at {} and reached this host at {}; nothing was run.",
                job.expires_at.to_rfc3339(),
                now.to_rfc3339()
            ),
            finished_at: now,
        }
    }

    fn not_run(&self, job: &QueueJob, id: MessageId, error: &EximError) -> QueueActionResult {
        QueueActionResult {
            job_id: job.job_id.clone(),
            host: self.host.clone(),
            id,
            action: job.action,
            status: QueueActionStatus::Failed,
            exit_code: None,
            output: error.to_string(),
            finished_at: Utc::now(),
        }
    }

    /// Runs Exim with `args` after the configuration's own.
    async fn run(&self, args: &[&str], limit: usize) -> Result<Finished, EximError> {
        let mut all: Vec<OsString> = Vec::with_capacity(args.len() + 2);
        if let Some(file) = &self.config.config_file {
            all.push("-C".into());
            all.push(file.into());
        }
        all.extend(args.iter().map(OsString::from));

        process::run(&self.config.binary, &all, self.config.timeout, limit)
            .await
            .map_err(|error| match error {
                RunError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    EximError::BinaryMissing {
                        path: self.config.binary.clone(),
                    }
                }
                RunError::Spawn(source) | RunError::Read(source) => EximError::Spawn {
                    path: self.config.binary.clone(),
                    source,
                },
                RunError::TimedOut => EximError::TimedOut {
                    command: self.command_line(args),
                    timeout: self.config.timeout,
                },
            })
    }

    /// The output of a command that exited with status 0, or why it did
    /// not.
    fn succeeded(&self, args: &[&str], finished: Finished) -> Result<Finished, EximError> {
        if finished.exit_code == Some(0) {
            return Ok(finished);
        }
        let output = action_output(&finished);
        if output.to_ascii_lowercase().contains("permission denied") {
            return Err(EximError::PermissionDenied {
                command: self.command_line(args),
            });
        }
        Err(EximError::Failed {
            command: self.command_line(args),
            exit_code: finished.exit_code,
            output,
        })
    }

    fn view_succeeded(
        &self,
        args: &[&str],
        id: MessageId,
        finished: Finished,
    ) -> Result<Finished, EximError> {
        // Exim says `Failed to open input file for <id>-H: No such file or
        // directory` for a message that is not on the queue; for a missing
        // message log it adds why, when Exim keeps none (`message_logs`).
        let stdout = String::from_utf8_lossy(&finished.stdout);
        let missing = finished.exit_code != Some(0)
            && stdout.contains("No such file or directory")
            && !stdout.contains("message_logs option is false");
        if missing {
            return Err(EximError::NotOnQueue { id: id.to_string() });
        }
        self.succeeded(args, finished)
    }

    /// The command as a user would type it, for messages.
    fn command_line(&self, args: &[&str]) -> String {
        let mut line = self.config.binary.display().to_string();
        if let Some(file) = &self.config.config_file {
            line.push_str(&format!(" -C {}", file.display()));
        }
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }
}

/// What Exim printed, both outputs, cut to [`ACTION_OUTPUT_LIMIT`].
fn action_output(finished: &Finished) -> String {
    let mut text = String::from_utf8_lossy(&finished.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&finished.stderr));
    let text = text.trim_end();
    if text.len() <= ACTION_OUTPUT_LIMIT && !finished.cut {
        return text.to_string();
    }
    let mut end = ACTION_OUTPUT_LIMIT.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [cut]", &text[..end])
}

/// `text` without its first line when that line is the spool file's name.
fn without_spool_name(text: &str, id: MessageId, view: MessageView) -> &str {
    let suffix = match view {
        MessageView::Headers => "-H",
        MessageView::Body => "-D",
        MessageView::Log => return text,
    };
    let Some((first, rest)) = text.split_once('\n') else {
        return text;
    };
    match first.strip_prefix(id.as_str()) {
        Some(s) if s == suffix => rest,
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> MessageId {
        text.parse().unwrap()
    }

    #[test]
    fn spool_name_line_is_dropped_from_headers_and_body_only() {
        let old = id("1qAbCK-000123-Xy");
        assert_eq!(
            without_spool_name("1qAbCK-000123-Xy-D\nbody\n", old, MessageView::Body),
            "body\n"
        );
        // Byte 19 for the 16-character form, 26 for the 23-character one;
        // found by the newline, never at a fixed offset.
        let new = id("1tQw7K-00000000Bq3-0KzP");
        let text = "1tQw7K-00000000Bq3-0KzP-D\nbody\n";
        assert_eq!(
            without_spool_name(text, new, MessageView::Body).as_ptr(),
            text[26..].as_ptr()
        );
        assert_eq!(
            without_spool_name("1qAbCK-000123-Xy-H\nroot 0 0\n", old, MessageView::Headers),
            "root 0 0\n"
        );
        assert_eq!(
            without_spool_name("1qAbCK-000123-Xy-D\nbody\n", old, MessageView::Headers),
            "1qAbCK-000123-Xy-D\nbody\n"
        );
        assert_eq!(
            without_spool_name("2026-01-01 Received\n", old, MessageView::Log),
            "2026-01-01 Received\n"
        );
    }

    #[test]
    fn action_output_is_cut_at_a_character_boundary() {
        let finished = Finished {
            exit_code: Some(0),
            stdout: "é".repeat(ACTION_OUTPUT_LIMIT).into_bytes(),
            stderr: Vec::new(),
            cut: false,
        };
        let output = action_output(&finished);
        assert!(output.ends_with(" [cut]"));
        assert!(output.len() <= ACTION_OUTPUT_LIMIT + 6);
    }
}
