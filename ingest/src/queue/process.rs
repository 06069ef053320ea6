//! Running one command: no shell, no input, a time limit, bounded output.
//!
//! The command runs in a process group of its own, so that when it is
//! stopped (it ran out of time, or printed more than wanted) everything it
//! started goes too: `exim -M` forks a delivery process, a wrapper script
//! forks its commands. Killing only the first process would leave the
//! others running and holding the output pipes open.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

/// How much of the error output is kept; the rest is read and dropped.
const STDERR_LIMIT: usize = 64 * 1024;

/// A command that ran to its end, or was stopped because its output
/// reached the limit.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Its exit status, when it exited (not when it was killed).
    pub exit_code: Option<i32>,
    /// What it printed, up to the limit.
    pub stdout: Vec<u8>,
    /// What it printed as errors, up to 64 KiB.
    pub stderr: Vec<u8>,
    /// True when the output went past the limit: it is cut there and the
    /// command was killed.
    pub cut: bool,
}

/// Why a command did not finish.
#[derive(Debug)]
pub(crate) enum RunError {
    /// It could not be started.
    Spawn(io::Error),
    /// It did not finish in time and was killed.
    TimedOut,
    /// Its output could not be read.
    Read(io::Error),
}

/// Runs `program` with `args`, keeping at most `limit` bytes of its output.
pub(crate) async fn run(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    limit: usize,
) -> Result<Finished, RunError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Spawn)?;
    let group = child.id();

    match tokio::time::timeout(timeout, collect(&mut child, group, limit)).await {
        Ok(finished) => finished,
        Err(_) => {
            kill_group(group);
            // Reap it; it was just sent SIGKILL, so this does not wait long.
            let _ = child.wait().await;
            Err(RunError::TimedOut)
        }
    }
}

/// Reads both outputs and waits for the exit.
async fn collect(
    child: &mut Child,
    group: Option<u32>,
    limit: usize,
) -> Result<Finished, RunError> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = async {
        let read = read_capped(stdout, limit).await;
        // A command stopped from reading blocks on its next write: end it
        // now, or the error output below would never reach its end.
        if matches!(read, Ok((_, true))) {
            kill_group(group);
        }
        read
    };
    let (out, err) = tokio::join!(out, read_drained(stderr, STDERR_LIMIT));
    let (stdout, cut) = out.map_err(RunError::Read)?;
    let stderr = err.map_err(RunError::Read)?;
    let status = child.wait().await.map_err(RunError::Read)?;
    Ok(Finished {
        exit_code: status.code(),
        stdout,
        stderr,
        cut,
    })
}

/// Reads up to `limit` bytes, and says whether there was more.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
) -> io::Result<(Vec<u8>, bool)> {
    let mut buffer = Vec::new();
    if let Some(pipe) = pipe {
        pipe.take(limit as u64 + 1).read_to_end(&mut buffer).await?;
    }
    let cut = buffer.len() > limit;
    buffer.truncate(limit);
    Ok((buffer, cut))
}

/// Reads up to `limit` bytes, then reads the rest to its end and drops it.
async fn read_drained(pipe: Option<impl AsyncRead + Unpin>, limit: usize) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    if let Some(mut pipe) = pipe {
        (&mut pipe)
            .take(limit as u64)
            .read_to_end(&mut buffer)
            .await?;
        tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
    }
    Ok(buffer)
}

/// Sends SIGKILL to the process group the command leads.
fn kill_group(group: Option<u32>) {
    let Some(group) = group.and_then(|g| i32::try_from(g).ok()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers. The group is the one the child
    // leads; the child is not reaped yet, so its id cannot have been reused.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        vec!["-c".into(), script.into()]
    }

    #[tokio::test]
    async fn output_and_exit_status() {
        let finished = run(
            Path::new("/bin/sh"),
            &sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
            100,
        )
        .await
        .unwrap();
        assert_eq!(finished.exit_code, Some(3));
        assert_eq!(finished.stdout, b"out\n");
        assert_eq!(finished.stderr, b"err\n");
        assert!(!finished.cut);
    }

    #[tokio::test]
    async fn output_past_the_limit_is_cut_and_the_command_stopped() {
        let finished = run(
            Path::new("/bin/sh"),
            &sh("while :; do echo 0123456789; done"),
            Duration::from_secs(30),
            1000,
        )
        .await
        .unwrap();
        assert!(finished.cut);
        assert_eq!(finished.stdout.len(), 1000);
        assert_eq!(finished.exit_code, None);
    }

    #[tokio::test]
    async fn a_command_out_of_time_is_killed() {
        let error = run(
            Path::new("/bin/sh"),
            &sh("sleep 60; echo never"),
            Duration::from_millis(200),
            100,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, RunError::TimedOut), "{error:?}");
    }

    #[tokio::test]
    async fn a_missing_program_does_not_start() {
        let error = run(
            Path::new("/nonexistent/exim"),
            &[],
            Duration::from_secs(1),
            100,
        )
        .await
        .unwrap_err();
        match error {
            RunError::Spawn(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}
