//! What can go wrong when running Exim on the queue.

use std::path::PathBuf;
use std::time::Duration;

use exim_pilot_schema::id::InvalidMessageId;

/// Why an Exim command could not be run, or did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum EximError {
    /// A message id was malformed; nothing was run.
    #[error("{0}: refused before running Exim (check the id, e.g. from `exim -bp`)")]
    InvalidId(#[from] InvalidMessageId),

    /// The Exim binary is not where the configuration says.
    #[error(
        "Exim binary {path} not found (install Exim, or set the binary path: \
         /usr/sbin/exim4 on Debian and Ubuntu, /usr/sbin/exim elsewhere)"
    )]
    BinaryMissing {
        /// The configured path.
        path: PathBuf,
    },

    /// The Exim binary exists but could not be started.
    #[error("cannot run {path}: {source} (check that it is an executable this user may run)")]
    Spawn {
        /// The configured path.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// Exim refused: this user is no Exim administrator.
    #[error(
        "`{command}` was refused: permission denied (run exim-pilot as root, as Exim's \
         user, or as a member of a group in Exim's admin_groups)"
    )]
    PermissionDenied {
        /// The command line.
        command: String,
    },

    /// Exim did not finish in time; it was killed.
    #[error(
        "`{command}` did not finish within {timeout:?} and was killed (raise the Exim \
         timeout, or look for a stuck Exim process or a slow spool disk)"
    )]
    TimedOut {
        /// The command line.
        command: String,
        /// The time it was given.
        timeout: Duration,
    },

    /// The message is not on the queue (any more).
    #[error("message {id} is not on the queue (it may have been delivered or removed meanwhile)")]
    NotOnQueue {
        /// The message.
        id: String,
    },

    /// Exim printed more than the configured limit.
    #[error(
        "`{command}` printed more than {limit} bytes and was stopped (raise the maximum \
         output size)"
    )]
    OutputTooLarge {
        /// The command line.
        command: String,
        /// The limit in bytes.
        limit: usize,
    },

    /// Exim ran and failed, or printed something that makes no sense.
    #[error("`{command}` failed{}: {output}", exit_text(.exit_code))]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status, when it exited.
        exit_code: Option<i32>,
        /// What it printed (cut), or what was wrong with it.
        output: String,
    },

    /// A job was sent to the wrong host; nothing was run.
    #[error(
        "queue job {job_id} is for host {job_host}, not this host ({host}); nothing was run \
         (check the host names the nodes run under)"
    )]
    WrongHost {
        /// The job.
        job_id: String,
        /// The host the job names.
        job_host: String,
        /// This host.
        host: String,
    },
}

fn exit_text(code: &Option<i32>) -> String {
    code.map(|c| format!(" with exit status {c}"))
        .unwrap_or_default()
}
