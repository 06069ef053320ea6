//! Everything a follower reports: one function per observable event, which
//! writes the `tracing` event and bumps the matching counter, so the logs
//! and the figures always agree.

use std::path::Path;

use crate::identity::FileIdentity;
use crate::stats::Counters;

pub(crate) fn log_appeared(path: &Path, identity: &FileIdentity) {
    tracing::info!(path = %path.display(), inode = identity.inode, "Log file appeared");
}

pub(crate) fn log_missing(path: &Path) {
    tracing::info!(
        path = %path.display(),
        "Log file does not exist yet; waiting for it to appear"
    );
}

pub(crate) fn log_disappeared(path: &Path, identity: &FileIdentity) {
    tracing::info!(
        path = %path.display(),
        inode = identity.inode,
        "Log file disappeared; still reading the open file until a new one appears"
    );
}

pub(crate) fn rotated(
    counters: &mut Counters,
    path: &Path,
    old: &FileIdentity,
    new: &FileIdentity,
) {
    counters.rotations += 1;
    tracing::info!(
        path = %path.display(),
        old_inode = old.inode,
        new_inode = new.inode,
        "Log file rotated"
    );
}

pub(crate) fn truncated(counters: &mut Counters, path: &Path, inode: u64, offset: u64, size: u64) {
    counters.truncations += 1;
    tracing::info!(
        path = %path.display(),
        inode,
        offset,
        size,
        "Log file truncated; reading it again from the start"
    );
}

pub(crate) fn rest_from_copy(path: &Path, copy: &Path, offset: u64) {
    tracing::info!(
        path = %path.display(),
        copy = %copy.display(),
        offset,
        "Reading the rest of the truncated log from its rotated copy"
    );
}

pub(crate) fn drained(path: &Path, identity: &FileIdentity, end: u64) {
    tracing::debug!(
        path = %path.display(),
        inode = identity.inode,
        end,
        "Rotated file read to its end"
    );
}

pub(crate) fn drain_failed(path: &Path, offset: u64, error: &std::io::Error) {
    tracing::warn!(
        path = %path.display(),
        offset,
        error = %error,
        "Rotated file cannot be read further; the rest of it is skipped"
    );
}

pub(crate) fn resumed(path: &Path, file: &Path, identity: &FileIdentity, offset: u64) {
    tracing::info!(
        path = %path.display(),
        file = %file.display(),
        inode = identity.inode,
        offset,
        "Resuming from checkpoint"
    );
}

pub(crate) fn checkpoint_not_found(
    path: &Path,
    last_seen: &Path,
    identity: &FileIdentity,
    offset: u64,
) {
    tracing::warn!(
        path = %path.display(),
        last_seen = %last_seen.display(),
        inode = identity.inode,
        offset,
        "Checkpointed file not found among the log and its rotated copies; \
         whatever was written to it after the checkpointed offset, if anything, \
         could not be read"
    );
}

pub(crate) fn backfill(path: &Path, file: &Path) {
    tracing::info!(
        path = %path.display(),
        file = %file.display(),
        "Reading rotated file whole before the live log"
    );
}

pub(crate) fn backfill_duplicate(path: &Path, file: &Path) {
    tracing::info!(
        path = %path.display(),
        file = %file.display(),
        "Skipping rotated file whose content is already read from another file"
    );
}

pub(crate) fn checkpoint_written(counters: &mut Counters, path: &Path) {
    counters.checkpoints_written += 1;
    tracing::trace!(path = %path.display(), "Checkpoint written");
}

pub(crate) fn checkpoint_failed(
    counters: &mut Counters,
    path: &Path,
    error: &dyn std::fmt::Display,
) {
    counters.checkpoint_errors += 1;
    tracing::error!(path = %path.display(), error = %error, "Checkpoint write failed");
}

pub(crate) fn checkpoint_of_another_path(path: &Path, checkpoint_path: &Path) {
    tracing::warn!(
        path = %path.display(),
        checkpoint_path = %checkpoint_path.display(),
        "Checkpoint was written for another path; its files are looked up by identity"
    );
}

pub(crate) fn not_examined(file: &Path, error: &std::io::Error) {
    tracing::debug!(file = %file.display(), error = %error, "File not examined");
}

pub(crate) fn fingerprint_unavailable(path: &Path, error: &std::io::Error) {
    tracing::debug!(path = %path.display(), error = %error, "Fingerprint unavailable");
}

pub(crate) fn importing(file: &Path) {
    tracing::info!(file = %file.display(), "Importing log file");
}
