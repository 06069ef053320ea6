//! The node's record of the queue jobs it finished.
//!
//! A command's offset is committed only after the results of its job were
//! acknowledged by the broker, so a crash between the two makes the node
//! read the job again after its restart. To not run it twice, the node
//! notes each job id here once its results are acknowledged, before the
//! offset is committed, and skips a job it finds here. The file sits next
//! to the tail's checkpoints (`queue-jobs.json`), holds the most recent
//! [`KEEP`] job ids and is written as the checkpoints are: to a temporary
//! file, flushed, renamed over the old one, the directory flushed.
//!
//! ```json
//! {"format":1,"host":"mx1.example.com","jobs":[
//!   {"job_id":"5b0c...","finished_at":"2026-12-01T10:00:00Z"}]}
//! ```
//!
//! A file that cannot be read is reported and replaced: the record only
//! spares repeated runs, it is not needed for correctness.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "queue-jobs.json";

/// How many finished jobs are remembered: far more than can be finished
/// between a job's results and its offset commit.
pub const KEEP: usize = 1_000;

/// The file format this version writes and reads.
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileContents {
    format: u32,
    host: String,
    jobs: Vec<Finished>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Finished {
    job_id: String,
    finished_at: DateTime<Utc>,
}

/// The jobs this node finished, most recent last.
pub(crate) struct FinishedJobs {
    path: Option<PathBuf>,
    host: String,
    jobs: VecDeque<Finished>,
    ids: HashSet<String>,
}

impl FinishedJobs {
    /// The record kept in `dir`, or one in memory only without a
    /// directory. Returns it with the reason an existing file could not
    /// be read, if it could not.
    pub(crate) fn open(dir: Option<&Path>, host: &str) -> (FinishedJobs, Option<String>) {
        let mut record = FinishedJobs {
            path: dir.map(|d| d.join(FILE_NAME)),
            host: host.to_string(),
            jobs: VecDeque::new(),
            ids: HashSet::new(),
        };
        let problem = match record.path.as_deref().map(read) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(contents))) if contents.host == host => {
                for job in contents.jobs {
                    record.push(job);
                }
                None
            }
            Some(Ok(Some(contents))) => Some(format!(
                "it is of host {:?}, not {host:?}; starting a new one",
                contents.host
            )),
            Some(Err(reason)) => Some(reason),
        };
        (record, problem)
    }

    /// Whether job `job_id` was finished.
    pub(crate) fn contains(&self, job_id: &str) -> bool {
        self.ids.contains(job_id)
    }

    /// Notes job `job_id` as finished and saves the record. In memory the
    /// job is noted even when saving fails.
    pub(crate) async fn record(&mut self, job_id: &str, at: DateTime<Utc>) -> Result<(), String> {
        self.push(Finished {
            job_id: job_id.to_string(),
            finished_at: at,
        });
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let contents = FileContents {
            format: FORMAT,
            host: self.host.clone(),
            jobs: self.jobs.iter().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&contents).map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || write(&path, &bytes))
            .await
            .map_err(|e| e.to_string())?
    }

    fn push(&mut self, job: Finished) {
        if !self.ids.insert(job.job_id.clone()) {
            return;
        }
        self.jobs.push_back(job);
        while self.jobs.len() > KEEP {
            if let Some(old) = self.jobs.pop_front() {
                self.ids.remove(&old.job_id);
            }
        }
    }
}

fn read(path: &Path) -> Result<Option<FileContents>, String> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let contents: FileContents = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is damaged ({e}); starting a new one", path.display()))?;
    if contents.format != FORMAT {
        return Err(format!(
            "{} has format {}, not {FORMAT}; starting a new one",
            path.display(),
            contents.format
        ));
    }
    Ok(Some(contents))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(fail)?;
    let temporary = path.with_extension("json.tmp");
    File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(fail)?;
    // The rename is only durable once the directory entry is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finished_jobs_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, problem) = FinishedJobs::open(Some(dir.path()), "mx1");
        assert_eq!(problem, None);
        assert!(!record.contains("a"));
        record.record("a", Utc::now()).await.unwrap();
        record.record("b", Utc::now()).await.unwrap();

        let (again, problem) = FinishedJobs::open(Some(dir.path()), "mx1");
        assert_eq!(problem, None);
        assert!(again.contains("a") && again.contains("b") && !again.contains("c"));

        // Another host's record is not this host's.
        let (other, problem) = FinishedJobs::open(Some(dir.path()), "mx2");
        assert!(problem.unwrap().contains("not \"mx2\""));
        assert!(!other.contains("a"));
    }

    #[tokio::test]
    async fn only_the_most_recent_jobs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, _) = FinishedJobs::open(Some(dir.path()), "mx1");
        for n in 0..KEEP + 5 {
            record.push(Finished {
                job_id: format!("job-{n}"),
                finished_at: Utc::now(),
            });
        }
        record.record("last", Utc::now()).await.unwrap();
        let (again, _) = FinishedJobs::open(Some(dir.path()), "mx1");
        assert_eq!(again.jobs.len(), KEEP);
        assert!(!again.contains("job-5") && again.contains("job-6") && again.contains("last"));
    }

    #[test]
    fn a_damaged_file_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"format\":1,\"ho").unwrap();
        let (record, problem) = FinishedJobs::open(Some(dir.path()), "mx1");
        assert!(problem.unwrap().contains("damaged"));
        assert!(record.jobs.is_empty());
    }
}
