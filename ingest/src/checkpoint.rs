//! Checkpoints: where a follower resumes after a stop or a crash.
//!
//! One small JSON file per followed log. It lists the files the follower
//! still has to read, oldest first, each with its identity and the offset
//! up to which every record was *acknowledged* by the consumer. The last
//! entry is usually the live log; earlier entries are rotated files that
//! still had unacknowledged records (or a backfill in progress). The first
//! entry may be the newest file that was read and acknowledged completely,
//! marked `"complete": true`: it tells which rotated files came after it. A follower
//! only ever writes positions its consumer acknowledged, so after a crash
//! or a `kill -9` it resumes at or before the last record that was stored
//! or published: at least once. The records it sends again carry the same
//! (host, `file_id`, offset) as the first time, which is the key the
//! stores de-duplicate on.
//!
//! ```json
//! {
//!   "format": 1,
//!   "host": "mx1.example.com",
//!   "log": "main",
//!   "path": "/var/log/exim4/mainlog",
//!   "written_at_ms": 1796399681000,
//!   "files": [
//!     {
//!       "path": "/var/log/exim4/mainlog",
//!       "dev": 2049,
//!       "inode": 1201,
//!       "fingerprint": { "len": 143, "hash": "9f3a0c5e11d2b7a4" },
//!       "offset": 640
//!     }
//!   ]
//! }
//! ```
//!
//! A file's `path` is where it was last seen, a hint for people: the
//! follower finds the file by identity (device, inode, fingerprint), among
//! the log and its rotated siblings. The file is written atomically: to a
//! temporary file in the same directory, flushed to disk, then renamed over
//! the old one, and the directory is flushed too.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use exim_pilot_schema::record::LogFile;
use serde::{Deserialize, Serialize};

use crate::error::{IngestError, Result};
use crate::identity::FileIdentity;

/// The checkpoint format this crate writes and reads.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The saved position of one followed log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: u32,
    /// Host name the records were labelled with.
    pub host: String,
    /// Which log.
    pub log: LogFile,
    /// The followed path.
    pub path: PathBuf,
    /// When the checkpoint was written, milliseconds since the Unix epoch.
    pub written_at_ms: i64,
    /// Files still to be read, oldest first.
    pub files: Vec<FilePosition>,
}

/// An acknowledged position in one file.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FilePosition {
    /// Where the file was last seen.
    pub path: PathBuf,
    /// Which file it is.
    #[serde(flatten)]
    pub identity: FileIdentity,
    /// Every record before this offset was acknowledged.
    pub offset: u64,
    /// The file was read to its end and every record of it acknowledged.
    /// Only the newest such file is kept, as a landmark: rotated files
    /// newer than it were written after it, and are read whole after a
    /// restart unless the checkpoint knows them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub complete: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(IngestError::CheckpointLoad {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&text).map_err(|e| IngestError::CheckpointLoad {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if checkpoint.format != CHECKPOINT_FORMAT {
            return Err(IngestError::CheckpointLoad {
                path: path.to_path_buf(),
                reason: format!(
                    "format {} is not the supported format {CHECKPOINT_FORMAT}",
                    checkpoint.format
                ),
            });
        }
        Ok(Some(checkpoint))
    }

    /// Writes the checkpoint to `path` atomically, creating the directory
    /// when needed.
    pub fn store(&self, path: &Path) -> Result<()> {
        let fail = |source| IngestError::CheckpointWrite {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(fail)?;

        let mut json = serde_json::to_vec_pretty(self).map_err(|e| fail(e.into()))?;
        json.push(b'\n');
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".tmp.{}", std::process::id()));
        let temporary = PathBuf::from(temporary);

        let written = File::create(&temporary)
            .and_then(|mut file| {
                file.write_all(&json)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temporary, path));
        if let Err(e) = written {
            // Best effort: a stale temporary file is harmless but untidy.
            let _ = fs::remove_file(&temporary);
            return Err(fail(e));
        }

        // The rename is only durable once the directory entry is.
        File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Fingerprint;

    fn sample() -> Checkpoint {
        Checkpoint {
            format: CHECKPOINT_FORMAT,
            host: "mx1.example.com".into(),
            log: LogFile::Main,
            path: "/var/log/exim4/mainlog".into(),
            written_at_ms: 1_796_399_681_000,
            files: vec![FilePosition {
                path: "/var/log/exim4/mainlog".into(),
                identity: FileIdentity {
                    dev: 2049,
                    inode: 1201,
                    fingerprint: Some(Fingerprint {
                        len: 143,
                        hash: 0x9f3a_0c5e_11d2_b7a4,
                    }),
                },
                offset: 640,
                complete: false,
            }],
        }
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints").join("mx1-main.json");
        assert_eq!(Checkpoint::load(&path).unwrap(), None);

        sample().store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(sample()));

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""hash": "9f3a0c5e11d2b7a4""#), "{text}");
        assert!(text.contains(r#""inode": 1201"#), "{text}");
        let leftovers = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let mut checkpoint = sample();
        checkpoint.format = 99;
        checkpoint.store(&path).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(IngestError::CheckpointLoad { .. })
        ));
        fs::write(&path, b"{not json").unwrap();
        assert!(Checkpoint::load(&path).is_err());
    }
}
