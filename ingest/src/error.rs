//! The errors the ingest crate reports.

use std::path::PathBuf;

/// What went wrong while following, reading or checkpointing a log.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A log file could not be opened, read or examined.
    #[error("cannot read {path}: {source} (check that it exists and is readable by this user)")]
    Read {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// A file shrank while it was being imported.
    #[error(
        "{path} shrank to {size} bytes while it was being read, at offset {offset} \
         (truncated by a rotation or a cleanup?); the records read before that were \
         imported, the rest of the file was not: import its rotated copy, or import \
         the file again once nothing truncates it"
    )]
    Shrank {
        /// The file.
        path: PathBuf,
        /// How far it had been read.
        offset: u64,
        /// Its size when the shrinking was found.
        size: u64,
    },

    /// A checkpoint file exists but cannot be read or understood.
    #[error(
        "cannot load checkpoint {path}: {reason} (move the file away to start over, \
         which re-reads the logs; the store drops the duplicates)"
    )]
    CheckpointLoad {
        /// The checkpoint file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// A checkpoint could not be written.
    #[error(
        "cannot write checkpoint {path}: {source} (check the directory's permissions and space)"
    )]
    CheckpointWrite {
        /// The checkpoint file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// The configuration cannot work as given.
    #[error("invalid ingest configuration: {0}")]
    Config(String),

    /// The Kafka producer could not be set up.
    #[error("cannot set up the Kafka producer: {0} (check the Kafka settings)")]
    Kafka(String),

    /// The machine's host name could not be found.
    #[error("cannot find this machine's host name: {0} (set the host name in the configuration)")]
    Hostname(String),
}

impl IngestError {
    /// Wraps an I/O error on `path`.
    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> IngestError {
        IngestError::Read {
            path: path.into(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
