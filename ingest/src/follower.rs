//! Following one log path through rotations.
//!
//! A [`Follower`] watches one configured path (say `/var/log/exim4/mainlog`)
//! by polling, and turns what is appended into records. It reads the files
//! that held the log over time one after the other, each a *generation*:
//!
//! - **Rename rotation** (a new inode at the path): the old file is still
//!   open, so it is read to its end, its last lines included, and then the
//!   new file is read from its start.
//! - **copytruncate** (the file shrinks below the read offset, or its first
//!   bytes no longer match their fingerprint): what follows is a new
//!   generation, read from offset 0. If the rotated copy (`mainlog.1`, or
//!   already `mainlog.1.gz`) holds bytes that were not read before the
//!   truncation, they are read from the copy first, under the original
//!   file's identity. The copy is never read as a log of its own, even when
//!   a wildcard such as `mainlog*` names it: it is content already read.
//! - **Several rotations between two polls**: rotated files newer than the
//!   newest file read to its end (found among the siblings by identity),
//!   other than files being read or whose first bytes are known, were never
//!   open; they are read whole before the new file.
//! - **A missing path** (at start, or after the file was deleted): the
//!   follower waits for it; an open file whose path vanished is read on
//!   until a new file appears at the path.
//!
//! Where the follower starts:
//!
//! - With a checkpoint, each file it lists is found by identity (device,
//!   inode *and* fingerprint, see [`crate::identity`]) at the path or among
//!   the rotated siblings, and read from the acknowledged offset. A file at
//!   the path whose inode matches but whose first bytes differ is a new
//!   file that inherited a recycled inode: it is read from 0. Rotated files
//!   newer than every file the checkpoint lists were written while the
//!   follower was stopped, and are read whole before the live file.
//! - Without one, the live file is read from its start; with `backfill`,
//!   its rotated siblings are read first, oldest first.
//!
//! Records are pulled in bounded [`Batch`]es and acknowledged with
//! [`Follower::ack`]; only acknowledged positions are written to the
//! checkpoint (see [`crate::checkpoint`]). The follower reads ahead only
//! until `max_ready_records` or `max_ready_bytes` records wait to be pulled,
//! and hands out no more than `max_unacked_batches` unacknowledged batches,
//! so a consumer that stops pulling or acknowledging stops the reading.
//!
//! A last line that never gets its newline is held while the file may still
//! grow. It is emitted as a record of its own when its file is finished: the
//! file was rotated away by renaming and the new file appeared, or it was
//! truncated and no copy holds the rest. A line written to a renamed file
//! after the new file was noticed is not read.
//!
//! Polling is the only way changes are noticed; there is no inotify. A
//! change is seen within one poll interval. Content that is written to a
//! file of which no complete line was read yet, and rotated away before the
//! next poll, is read late (after content that followed it) or, when no
//! later rotation reveals it, not at all. A truncation is
//! recognised by size or by the fingerprint; before the first line is
//! complete there is no fingerprint, and a file truncated and rewritten
//! beyond the bytes read so far, starting with those same bytes, passes for
//! the same file.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exim_pilot_schema::record::LogFile;

use crate::ack::{self, Ack, AckWindow, Acker, Acknowledged, Batch};
use crate::checkpoint::{Checkpoint, FilePosition, CHECKPOINT_FORMAT};
use crate::error::{IngestError, Result};
use crate::events;
use crate::identity::{self, FileIdentity, Fingerprint};
use crate::siblings::{self, Sibling};
use crate::source::{self, Label, Ready, Source};
use crate::stats::{Counters, Stats};

/// How a follower reads and checkpoints.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// Time between looks at the file when there is nothing new.
    pub poll_interval: Duration,
    /// How long a record may wait for continuation lines once nothing more
    /// is being written, before it is emitted.
    pub group_quiet: Duration,
    /// Largest record in bytes; longer lines are cut into pieces.
    pub max_record_bytes: usize,
    /// Bytes asked for in one read.
    pub read_chunk: usize,
    /// Records read ahead of the consumer, at most (about).
    pub max_ready_records: usize,
    /// Bytes of records read ahead of the consumer, at most (about).
    pub max_ready_bytes: usize,
    /// Batches handed out and not yet acknowledged, at most.
    pub max_unacked_batches: usize,
    /// Least time between two checkpoint writes.
    pub checkpoint_interval: Duration,
    /// On a first start (no checkpoint), read the rotated siblings first.
    pub backfill: bool,
}

impl Default for FollowConfig {
    fn default() -> Self {
        FollowConfig {
            poll_interval: Duration::from_millis(250),
            group_quiet: Duration::from_millis(100),
            max_record_bytes: 1024 * 1024,
            read_chunk: 64 * 1024,
            max_ready_records: 10_000,
            max_ready_bytes: 8 * 1024 * 1024,
            max_unacked_batches: 256,
            checkpoint_interval: Duration::from_secs(1),
            backfill: false,
        }
    }
}

/// One file the log was held in, read or still to be read.
#[derive(Debug)]
struct Generation {
    id: u64,
    identity: FileIdentity,
    /// Where the file was last seen.
    path: PathBuf,
    /// Every record before this offset is acknowledged.
    acked: u64,
    /// Set once the file is read to its end and closed: the offset just
    /// past its last record.
    end: Option<u64>,
}

/// Follows one log path; see the module documentation.
pub struct Follower {
    id: u64,
    path: PathBuf,
    log: LogFile,
    host: String,
    config: FollowConfig,
    checkpoint_path: Option<PathBuf>,

    next_generation: u64,
    generations: VecDeque<Generation>,
    /// Files to read to their end before the live one, in order.
    drains: VecDeque<Source>,
    /// The file at the path, once it exists.
    live: Option<Source>,
    /// The newest file read to its end with every record acknowledged.
    anchor: Option<Generation>,
    missing_reported: bool,
    gone_reported: bool,

    ready: VecDeque<Ready>,
    ready_bytes: usize,
    window: AckWindow,
    acker: Acker,

    checkpoint_dirty: bool,
    checkpoint_written_at: Option<Instant>,
    counters: Counters,
}

impl Follower {
    /// Starts following `path`, a log of kind `log` on `host`.
    ///
    /// `checkpoint` is the file that keeps the acknowledged position; with
    /// `None` nothing is kept and every start is a first start.
    pub fn new(
        path: impl Into<PathBuf>,
        log: LogFile,
        host: impl Into<String>,
        checkpoint: Option<PathBuf>,
        config: FollowConfig,
    ) -> Result<Follower> {
        let mut follower = Follower {
            id: ack::next_follower_id(),
            path: path.into(),
            log,
            host: host.into(),
            config,
            checkpoint_path: checkpoint,
            next_generation: 0,
            generations: VecDeque::new(),
            drains: VecDeque::new(),
            live: None,
            anchor: None,
            missing_reported: false,
            gone_reported: false,
            ready: VecDeque::new(),
            ready_bytes: 0,
            window: AckWindow::default(),
            acker: Acker::default(),
            checkpoint_dirty: false,
            checkpoint_written_at: None,
            counters: Counters::default(),
        };

        let saved = match &follower.checkpoint_path {
            Some(path) => Checkpoint::load(path)?,
            None => None,
        };
        let first_start = saved.is_none();
        match saved {
            Some(checkpoint) => follower.resume(checkpoint)?,
            None if follower.config.backfill => follower.plan_backfill()?,
            None => {}
        }

        // Holding the live file open from the start means a rotation
        // before the first poll still finds it.
        if follower.live.is_none() {
            follower.open_live()?;
        }

        // On a first start, the files about to be read are written down at
        // once, at offset 0: a process killed before its first
        // acknowledgement, whose file is rotated before it starts again,
        // then finds the file under its new name and reads it again from
        // the start (what was stored already is recognised), rather than
        // starting afresh on the new file and never reading the rest of
        // the old one.
        if first_start && (follower.anchor.is_some() || !follower.generations.is_empty()) {
            follower.checkpoint_dirty = true;
            follower.write_checkpoint()?;
        }
        Ok(follower)
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which log this is.
    pub fn log(&self) -> LogFile {
        self.log
    }

    /// The host name records are labelled with.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A handle that acknowledges batches from another thread.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// Looks at the files once: reads what is new (as far as the read-ahead
    /// limits allow), follows rotations, and emits records that have been
    /// quiet long enough. Returns the number of records ready to be pulled.
    pub fn poll(&mut self) -> Result<usize> {
        self.apply_queued_acks();
        let now = Instant::now();

        // A rotation noticed on the live file queues the old file for
        // draining; another round reads the old file's last lines and the
        // new file's first ones in the same poll.
        for _ in 0..4 {
            self.poll_drains(now);
            if !self.drains.is_empty() || !self.has_room() {
                break;
            }
            if !self.poll_live(now)? {
                break;
            }
        }

        // A failed write is logged and counted where it happens; reading
        // goes on, and the next acknowledgement tries again.
        let _ = self.checkpoint_if_due();
        Ok(self.ready.len())
    }

    /// Hands out up to `max_records` of the records read so far, without
    /// reading. `None` when none are ready or `max_unacked_batches` batches
    /// are still unacknowledged.
    pub fn take_batch(&mut self, max_records: usize) -> Option<Batch> {
        self.apply_queued_acks();
        if self.ready.is_empty() || self.window.in_flight() >= self.config.max_unacked_batches {
            return None;
        }
        let count = max_records.max(1).min(self.ready.len());
        let mut records = Vec::with_capacity(count);
        let mut last = (0, 0);
        let mut inodes: Vec<(u64, u64)> = Vec::new();
        for ready in self.ready.drain(..count) {
            self.ready_bytes = self.ready_bytes.saturating_sub(ready.record.bytes.len());
            last = (ready.generation, ready.end);
            let file_id = ready.record.origin.file_id;
            if !inodes.iter().any(|&(id, _)| id == file_id) {
                inodes.push((file_id, ready.inode));
            }
            records.push(ready.record);
        }
        self.counters.records_emitted += count as u64;
        let batch = self.window.hand_out(last, count as u64);
        Some(Batch::new(records, Ack::single(self.id, batch)).with_inodes(inodes))
    }

    /// Pulls the next batch of up to `max_records`, polling the files until
    /// records are ready or `wait` has passed (then `None`).
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
            std::thread::sleep(self.next_wake(now, deadline) - now);
        }
    }

    /// When to look again: after a poll interval, or earlier when a held
    /// record becomes due, but never after `deadline`.
    pub(crate) fn next_wake(&self, now: Instant, deadline: Instant) -> Instant {
        let quiet = self
            .live
            .as_ref()
            .and_then(|live| live.quiet_deadline(self.config.group_quiet));
        let mut wake = (now + self.config.poll_interval).min(deadline);
        // A record already due waits for the next poll like everything else
        // (it is held only while the reading is not at the end of the file).
        if let Some(quiet) = quiet.filter(|&quiet| quiet > now) {
            wake = wake.min(quiet);
        }
        wake
    }

    /// Acknowledges a batch: its records are safe, and the checkpoint may
    /// move past them once every earlier batch is acknowledged too. Writes
    /// the checkpoint when `checkpoint_interval` has passed since the last
    /// write. Parts of `ack` that belong to other followers are ignored.
    pub fn ack(&mut self, ack: &Ack) -> Result<()> {
        self.apply_ack(ack);
        self.apply_queued_acks();
        self.checkpoint_if_due()
    }

    /// The acknowledged position as it would be written now.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            format: CHECKPOINT_FORMAT,
            host: self.host.clone(),
            log: self.log,
            path: self.path.clone(),
            written_at_ms: source::now_ms(),
            files: self
                .anchor
                .iter()
                .chain(&self.generations)
                .map(|g| FilePosition {
                    path: g.path.clone(),
                    identity: g.identity,
                    offset: g.acked,
                    complete: g.end == Some(g.acked),
                })
                .collect(),
        }
    }

    /// Writes the checkpoint now, if there is one to write and anything was
    /// acknowledged since the last write.
    pub fn write_checkpoint(&mut self) -> Result<()> {
        let Some(path) = self.checkpoint_path.clone() else {
            return Ok(());
        };
        if !self.checkpoint_dirty {
            return Ok(());
        }
        match self.checkpoint().store(&path) {
            Ok(()) => {
                self.checkpoint_dirty = false;
                self.checkpoint_written_at = Some(Instant::now());
                events::checkpoint_written(&mut self.counters, &path);
                Ok(())
            }
            Err(e) => {
                events::checkpoint_failed(&mut self.counters, &path, &e);
                Err(e)
            }
        }
    }

    /// Applies pending acknowledgements and writes the checkpoint: the last
    /// call before the follower is dropped on a clean shutdown.
    pub fn close(mut self) -> Result<()> {
        self.apply_queued_acks();
        self.write_checkpoint()
    }

    /// The follower's figures.
    pub fn stats(&self) -> Stats {
        let behind = self
            .drains
            .iter()
            .chain(self.live.iter())
            .map(Source::bytes_behind)
            .sum();
        Stats {
            path: self.path.clone(),
            log: self.log,
            counters: self.counters,
            bytes_behind: behind,
            unfinished_line_bytes: self.live.as_ref().map_or(0, |s| s.unfinished_line_len()),
            records_ready: self.ready.len(),
            batches_unacked: self.window.in_flight(),
        }
    }

    // ---- starting -------------------------------------------------------

    /// Plans the reading from a checkpoint: each listed file is found by
    /// identity and read from its acknowledged offset; rotated files newer
    /// than all of them are read whole.
    fn resume(&mut self, checkpoint: Checkpoint) -> Result<()> {
        if checkpoint.path != self.path || checkpoint.log != self.log {
            events::checkpoint_of_another_path(&self.path, &checkpoint.path);
        }
        let siblings =
            siblings::rotated_siblings(&self.path).map_err(|e| IngestError::read(&self.path, e))?;
        let count = checkpoint.files.len();

        // Where the rotated files stop being known: every sibling newer
        // than `newest_known` was written after the checkpoint.
        let mut newest_known: Option<usize> = None;
        let mut live_known = false;
        let mut unfingerprinted = Vec::new();
        for (index, position) in checkpoint.files.into_iter().enumerate() {
            if position.identity.fingerprint.is_none() {
                // Nothing of it was read (a file is fingerprinted by its
                // first line), and a later file on the same inode cannot be
                // told from it: it is covered by reading what is new.
                unfingerprinted.push(position.identity);
                continue;
            }

            // Only the newest file can still be at the path.
            if index + 1 == count && !position.complete {
                if let Some(file) = self.open_if_same(&self.path.clone(), &position.identity)? {
                    let path = self.path.clone();
                    let generation = self.add_generation(position.identity, &path, position.offset);
                    let source = self.source_from(&path, file, generation, position)?;
                    self.live = Some(source);
                    live_known = true;
                    continue;
                }
            }

            let Some((at, file)) = locate(&position.identity, &siblings, false) else {
                if !position.complete {
                    events::checkpoint_not_found(
                        &self.path,
                        &position.path,
                        &position.identity,
                        position.offset,
                    );
                }
                continue;
            };
            newest_known = Some(newest_known.map_or(at, |newest| newest.max(at)));
            let found = siblings[at].path.clone();
            if position.complete {
                // Nothing left to read: it only marks where the rotated
                // files stand, and is kept for the next checkpoint.
                self.anchor = Some(Generation {
                    id: u64::MAX,
                    identity: position.identity,
                    path: found,
                    acked: position.offset,
                    end: Some(position.offset),
                });
                continue;
            }
            let generation = self.add_generation(position.identity, &found, position.offset);
            let source = self.source_from(&found, file, generation, position)?;
            self.drains.push_back(source);
        }
        if live_known {
            return Ok(());
        }

        // Rotated files newer than every checkpointed one were written
        // after the checkpoint (the log was rotated while the follower was
        // stopped): they are read whole before the live file. Without such
        // a landmark, a file that had no fingerprint yet is looked up by
        // inode, and it and everything newer is read.
        let first_new = match newest_known {
            Some(newest) => Some(newest + 1),
            None => siblings.iter().position(|sibling| {
                std::fs::metadata(&sibling.path).is_ok_and(|meta| {
                    unfingerprinted
                        .iter()
                        .any(|identity| identity.same_inode(&meta))
                })
            }),
        };
        if let Some(first_new) = first_new {
            let newer = siblings.into_iter().skip(first_new).collect();
            self.read_siblings_first(newer, self.known_fingerprints())?;
        }
        Ok(())
    }

    /// A source for a checkpointed file found at `path`.
    fn source_from(
        &self,
        path: &Path,
        file: File,
        generation: u64,
        position: FilePosition,
    ) -> Result<Source> {
        events::resumed(&self.path, path, &position.identity, position.offset);
        let max = self.config.max_record_bytes;
        Source::from_file(
            path,
            file,
            generation,
            position.identity,
            position.offset,
            max,
        )
        .map_err(|e| IngestError::read(path, e))
    }

    /// Opens `path` when it holds the file `identity` names.
    fn open_if_same(&self, path: &Path, identity: &FileIdentity) -> Result<Option<File>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IngestError::read(path, e)),
        };
        match identity.is_same_open_file(&file) {
            Ok(true) => Ok(Some(file)),
            Ok(false) => Ok(None),
            Err(e) => Err(IngestError::read(path, e)),
        }
    }

    /// Plans a first-start backfill: the rotated siblings, oldest first,
    /// before the live file. A sibling with the same first bytes as the
    /// live file or as another sibling is a copy, read once.
    fn plan_backfill(&mut self) -> Result<()> {
        let siblings =
            siblings::rotated_siblings(&self.path).map_err(|e| IngestError::read(&self.path, e))?;
        let seen = live_fingerprint(&self.path).into_iter().collect();
        self.read_siblings_first(siblings, seen)
    }

    /// Queues `siblings` (oldest first) to be read whole before the live
    /// file, except those whose first bytes are in `seen`: copies of
    /// content read anyway.
    fn read_siblings_first(
        &mut self,
        siblings: Vec<Sibling>,
        mut seen: Vec<Fingerprint>,
    ) -> Result<()> {
        for sibling in siblings {
            let path = sibling.path;
            let opened = File::open(&path).and_then(|file| {
                let head = identity::read_head_of(&file)?;
                Ok((file.metadata()?, head, file))
            });
            let (meta, head, file) = match opened {
                Ok(opened) => opened,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(IngestError::read(&path, e)),
            };
            let mut identity = FileIdentity::of_metadata(&meta);
            identity.fingerprint = Fingerprint::of_head(&head, true);
            if let Some(fingerprint) = identity.fingerprint {
                if seen.contains(&fingerprint) {
                    events::backfill_duplicate(&self.path, &path);
                    continue;
                }
                seen.push(fingerprint);
            }
            events::backfill(&self.path, &path);
            let generation = self.add_generation(identity, &path, 0);
            let max = self.config.max_record_bytes;
            let source = Source::from_file(&path, file, generation, identity, 0, max)
                .map_err(|e| IngestError::read(&path, e))?;
            self.drains.push_back(source);
        }
        Ok(())
    }

    // ---- reading --------------------------------------------------------

    fn has_room(&self) -> bool {
        room(&self.ready, self.ready_bytes, &self.config)
    }

    /// Reads the queued files to their ends, oldest first.
    fn poll_drains(&mut self, now: Instant) {
        let label = Label {
            host: &self.host,
            log: self.log,
        };
        let chunk = self.config.read_chunk;
        while let Some(source) = self.drains.front_mut() {
            if !room(&self.ready, self.ready_bytes, &self.config) {
                break;
            }
            let before = self.ready.len();
            let read = source.read_step(chunk, &label, now, &mut self.ready, &mut self.counters);
            let finished = match read {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    events::drain_failed(&source.path, source.read_offset(), &e);
                    true
                }
            };
            if finished {
                source.finish(&label, &mut self.ready, &mut self.counters);
            }
            self.ready_bytes += new_bytes(&self.ready, before);
            let (generation, identity) = (source.generation, source.identity);
            sync_identity(&mut self.generations, generation, identity);
            if finished {
                let end = source.resume_offset();
                events::drained(&source.path, &identity, end);
                self.drains.pop_front();
                finish_generation(&mut self.generations, generation, end);
            }
        }
        self.prune();
    }

    /// Reads the file at the path. Returns true when it switched to another
    /// file (a rotation or truncation), so the caller polls again.
    fn poll_live(&mut self, now: Instant) -> Result<bool> {
        if self.live.is_none() && !self.open_live()? {
            return Ok(false);
        }
        if self.live_truncated()? {
            self.restart_truncated()?;
            return Ok(true);
        }

        let label = Label {
            host: &self.host,
            log: self.log,
        };
        let chunk = self.config.read_chunk;
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        let mut at_end = false;
        while room(&self.ready, self.ready_bytes, &self.config) {
            let before = self.ready.len();
            let read = live.read_step(chunk, &label, now, &mut self.ready, &mut self.counters);
            self.ready_bytes += new_bytes(&self.ready, before);
            match read {
                Ok(0) => {
                    at_end = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(IngestError::read(&live.path, e)),
            }
        }
        sync_identity(&mut self.generations, live.generation, live.identity);
        if !at_end {
            return Ok(false);
        }
        let before = self.ready.len();
        live.flush_quiet(now, self.config.group_quiet, &label, &mut self.ready);
        self.ready_bytes += new_bytes(&self.ready, before);
        self.follow_path()
    }

    /// Opens the file at the path as a new generation. False when there is
    /// no file yet.
    fn open_live(&mut self) -> Result<bool> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.missing_reported {
                    events::log_missing(&self.path);
                    self.missing_reported = true;
                }
                return Ok(false);
            }
            Err(e) => return Err(IngestError::read(&self.path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| IngestError::read(&self.path, e))?;
        let identity = FileIdentity::of_metadata(&meta);
        if self.missing_reported {
            events::log_appeared(&self.path, &identity);
            self.missing_reported = false;
        }
        self.live = Some(self.new_live(file, identity)?);
        Ok(true)
    }

    /// A new generation for `file`, now at the path, read from its start.
    fn new_live(&mut self, file: File, identity: FileIdentity) -> Result<Source> {
        let path = self.path.clone();
        let generation = self.add_generation(identity, &path, 0);
        let max = self.config.max_record_bytes;
        Source::from_file(&path, file, generation, identity, 0, max)
            .map_err(|e| IngestError::read(&path, e))
    }

    /// True when the live file was truncated: it is shorter than what was
    /// read, or its first bytes are no longer those fingerprinted (it was
    /// truncated and has grown again since).
    fn live_truncated(&self) -> Result<bool> {
        let Some(live) = self.live.as_ref().filter(|live| live.is_plain()) else {
            return Ok(false);
        };
        let fail = |e| IngestError::read(&live.path, e);
        let size = live.file().metadata().map_err(fail)?.len();
        if size < live.read_offset() {
            return Ok(true);
        }
        match (live.identity.fingerprint, live.unfinished_head()) {
            (Some(fingerprint), _) => {
                let head = identity::read_head_at(live.file()).map_err(fail)?;
                Ok(!fingerprint.matches(&head))
            }
            // Before the first line is complete, the bytes read so far are
            // the file's head.
            (None, Some(read)) if !read.is_empty() => {
                let head = identity::read_head_at(live.file()).map_err(fail)?;
                Ok(!head.starts_with(read))
            }
            (None, _) => Ok(false),
        }
    }

    /// After a truncation: the unread rest of the old content comes from
    /// its rotated copy when one holds it, then the file is read again from
    /// its start as a new generation.
    fn restart_truncated(&mut self) -> Result<()> {
        let Some(mut old) = self.live.take() else {
            return Ok(());
        };
        let size = old.file().metadata().map(|m| m.len()).unwrap_or(0);
        events::truncated(
            &mut self.counters,
            &self.path,
            old.identity.inode,
            old.read_offset(),
            size,
        );

        // Complete lines already read are emitted; only an unfinished last
        // line is left to come from the copy.
        let label = Label {
            host: &self.host,
            log: self.log,
        };
        let before = self.ready.len();
        old.flush_group(&label, &mut self.ready);
        let resume = old.resume_offset();
        let mut identity = old.identity;
        let copy = self.find_copy(&old).map(|(copy, head)| {
            // A file still without a fingerprint takes it from its copy:
            // nothing of it was emitted under another id yet.
            if identity.fingerprint.is_none() {
                identity.fingerprint = Fingerprint::of_head(&head, true);
                sync_identity(&mut self.generations, old.generation, identity);
            }
            copy
        });
        let max = self.config.max_record_bytes;
        let opened = copy.map(|copy| {
            let source = Source::open(&copy, old.generation, identity, resume, max);
            (copy, source)
        });
        match opened {
            Some((copy, Ok(source))) => {
                events::rest_from_copy(&self.path, &copy, resume);
                self.drains.push_back(source);
            }
            failed => {
                if let Some((copy, Err(e))) = failed {
                    events::drain_failed(&copy, resume, &e);
                }
                old.finish(&label, &mut self.ready, &mut self.counters);
                finish_generation(&mut self.generations, old.generation, old.resume_offset());
            }
        }
        self.ready_bytes += new_bytes(&self.ready, before);
        self.prune();
        self.queue_unread_rotations(&identity, false)?;

        let file = old.into_file();
        let meta = file
            .metadata()
            .map_err(|e| IngestError::read(&self.path, e))?;
        self.live = Some(self.new_live(file, FileIdentity::of_metadata(&meta))?);
        Ok(())
    }

    /// The newest rotated copy of the file `old` reads: a sibling whose
    /// first bytes match the fingerprint (or, before there is one, start
    /// with the bytes read so far), and that holds at least what was read
    /// (gzip files are taken on trust). Returns its path and first bytes.
    fn find_copy(&self, old: &Source) -> Option<(PathBuf, Vec<u8>)> {
        let fingerprint = old.identity.fingerprint;
        let prefix = old.unfinished_head().filter(|p| !p.is_empty());
        if fingerprint.is_none() && prefix.is_none() {
            return None;
        }
        let is_copy = |head: &[u8]| match fingerprint {
            Some(fingerprint) => fingerprint.matches(head),
            None => prefix.is_some_and(|prefix| head.starts_with(prefix)),
        };
        let read = old.read_offset();
        let siblings = siblings::rotated_siblings(&self.path).ok()?;
        siblings.into_iter().rev().find_map(|sibling| {
            let examine = || -> io::Result<Option<Vec<u8>>> {
                let file = File::open(&sibling.path)?;
                let head = identity::read_head_of(&file)?;
                let long_enough = identity::is_gzip_file(&file)? || file.metadata()?.len() >= read;
                Ok((is_copy(&head) && long_enough).then_some(head))
            };
            let head = examine().ok()??;
            Some((sibling.path, head))
        })
    }

    /// Looks at the path after the live file was read to its end: a new
    /// file there means a rename rotation. Returns true on a switch.
    fn follow_path(&mut self) -> Result<bool> {
        let Some(live) = &self.live else {
            return Ok(false);
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.gone_reported {
                    events::log_disappeared(&self.path, &live.identity);
                    self.gone_reported = true;
                }
                return Ok(false);
            }
            Err(e) => return Err(IngestError::read(&self.path, e)),
        };
        if live.identity.same_inode(&meta) {
            self.gone_reported = false;
            return Ok(false);
        }

        // Open the new file first, so the identity logged and read is the
        // one of the file actually opened.
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(IngestError::read(&self.path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| IngestError::read(&self.path, e))?;
        if live.identity.same_inode(&meta) {
            return Ok(false);
        }
        let new_identity = FileIdentity::of_metadata(&meta);
        events::rotated(
            &mut self.counters,
            &self.path,
            &live.identity,
            &new_identity,
        );
        self.gone_reported = false;
        if let Some(old) = self.live.take() {
            let identity = old.identity;
            self.drains.push_back(old);
            self.queue_unread_rotations(&identity, true)?;
        }
        self.live = Some(self.new_live(file, new_identity)?);
        Ok(true)
    }

    /// Queues the rotated files that were never open: those newer than the
    /// newest file read to its end (before there is one, newer than the
    /// file `current` names), other than files held open or whose content
    /// is known. They appear when the log was rotated more than once
    /// between two polls, and are read whole before the new file. Nothing
    /// is queued when neither file is found among the rotated ones.
    /// `held_open` is as for [`locate`].
    fn queue_unread_rotations(&mut self, current: &FileIdentity, held_open: bool) -> Result<()> {
        let siblings = match siblings::rotated_siblings(&self.path) {
            Ok(siblings) => siblings,
            Err(e) => {
                events::not_examined(&self.path, &e);
                return Ok(());
            }
        };
        let finished = self
            .generations
            .iter()
            .rev()
            .find(|g| g.end.is_some() && g.identity.fingerprint.is_some())
            .or(self.anchor.as_ref())
            .map(|g| g.identity);
        let landmark = finished
            .and_then(|finished| locate(&finished, &siblings, false))
            .or_else(|| locate(current, &siblings, held_open));
        let Some((at, _)) = landmark else {
            return Ok(());
        };

        let open: Vec<FileIdentity> = self
            .drains
            .iter()
            .chain(self.live.iter())
            .map(|source| source.identity)
            .chain([*current])
            .collect();
        let newer = siblings
            .into_iter()
            .skip(at + 1)
            .filter(|sibling| {
                std::fs::metadata(&sibling.path)
                    .is_ok_and(|meta| !open.iter().any(|o| o.same_inode(&meta)))
            })
            .collect();
        self.read_siblings_first(newer, self.known_fingerprints())
    }

    /// Fingerprints of the files being read or to be read, and of the file
    /// now at the path: content that needs no second reading.
    fn known_fingerprints(&self) -> Vec<Fingerprint> {
        let mut known: Vec<Fingerprint> = self
            .generations
            .iter()
            .filter_map(|g| g.identity.fingerprint)
            .collect();
        known.extend(live_fingerprint(&self.path));
        known
    }

    // ---- acknowledging --------------------------------------------------

    fn apply_queued_acks(&mut self) {
        for ack in self.acker.take() {
            self.apply_ack(&ack);
        }
    }

    fn apply_ack(&mut self, ack: &Ack) {
        let id = self.id;
        for part in ack.parts.iter().filter(|p| p.follower == id) {
            if let Some(settled) = self.window.acknowledge(part.batch) {
                self.settle(settled);
            }
        }
    }

    /// Moves the acknowledged positions up to the end of `settled`.
    fn settle(&mut self, settled: Acknowledged) {
        let (last_generation, end) = settled.last;
        for generation in &mut self.generations {
            if generation.id < last_generation {
                // Records of a later file are only read once the earlier
                // ones are finished, so those are acknowledged to their end.
                if let Some(end) = generation.end {
                    generation.acked = end;
                }
            } else if generation.id == last_generation {
                generation.acked = generation.acked.max(end);
            }
        }
        self.counters.records_acked += settled.records;
        self.checkpoint_dirty = true;
        self.prune();
    }

    /// Forgets finished files whose every record is acknowledged.
    fn prune(&mut self) {
        while let Some(first) = self.generations.front() {
            if first.end != Some(first.acked) {
                break;
            }
            let finished = self.generations.pop_front();
            // A file without a fingerprint cannot be found again, so it
            // makes no landmark.
            if finished
                .as_ref()
                .is_some_and(|g| g.identity.fingerprint.is_some())
            {
                self.anchor = finished;
            }
            self.checkpoint_dirty = true;
        }
    }

    fn checkpoint_if_due(&mut self) -> Result<()> {
        let due = match self.checkpoint_written_at {
            Some(at) => at.elapsed() >= self.config.checkpoint_interval,
            None => true,
        };
        if due {
            self.write_checkpoint()
        } else {
            Ok(())
        }
    }

    fn add_generation(&mut self, identity: FileIdentity, path: &Path, offset: u64) -> u64 {
        let id = self.next_generation;
        self.next_generation += 1;
        self.generations.push_back(Generation {
            id,
            identity,
            path: path.to_path_buf(),
            acked: offset,
            end: None,
        });
        id
    }
}

/// Finds a file among the rotated siblings, newest first: the same device
/// and inode with matching first bytes (renamed), or else the newest file
/// with matching first bytes (a copy, or a compressed rotation). Returns
/// its index in `siblings` and the open file. The live path is not a
/// candidate: it holds the newest file, which is looked at separately.
///
/// `held_open` says the follower still holds the file open, so its inode
/// cannot have been given to another file: then device and inode alone
/// find it, which is the only way while it has no fingerprint yet.
fn locate(identity: &FileIdentity, siblings: &[Sibling], held_open: bool) -> Option<(usize, File)> {
    if identity.fingerprint.is_none() && !held_open {
        return None;
    }
    let mut copy = None;
    for (at, sibling) in siblings.iter().enumerate().rev() {
        let examine = || -> io::Result<(bool, bool, File)> {
            let file = File::open(&sibling.path)?;
            let same_inode = identity.same_inode(&file.metadata()?);
            let same_content = match identity.fingerprint {
                Some(fingerprint) => fingerprint.matches(&identity::read_head_of(&file)?),
                None => same_inode,
            };
            Ok((same_inode, same_content, file))
        };
        match examine() {
            Ok((true, true, file)) => return Some((at, file)),
            Ok((false, true, file)) if copy.is_none() && identity.fingerprint.is_some() => {
                copy = Some((at, file));
            }
            Ok(_) => {}
            Err(e) => events::not_examined(&sibling.path, &e),
        }
    }
    copy
}

/// The fingerprint of the file now at `path`, if it has one yet.
fn live_fingerprint(path: &Path) -> Option<Fingerprint> {
    Fingerprint::of_head(&identity::read_head(path).ok()?, false)
}

/// True while the read-ahead limits allow reading more.
fn room(ready: &VecDeque<Ready>, ready_bytes: usize, config: &FollowConfig) -> bool {
    ready.len() < config.max_ready_records && ready_bytes < config.max_ready_bytes
}

/// Bytes of the records added to `ready` after the first `before`.
fn new_bytes(ready: &VecDeque<Ready>, before: usize) -> usize {
    ready
        .iter()
        .skip(before)
        .map(|r| r.record.bytes.len())
        .sum()
}

/// Keeps the generation's identity up to date (its fingerprint is learnt
/// while reading).
fn sync_identity(generations: &mut VecDeque<Generation>, id: u64, identity: FileIdentity) {
    if let Some(generation) = generations.iter_mut().find(|g| g.id == id) {
        generation.identity = identity;
    }
}

/// Marks a generation read to its end.
fn finish_generation(generations: &mut VecDeque<Generation>, id: u64, end: u64) {
    if let Some(generation) = generations.iter_mut().find(|g| g.id == id) {
        generation.end = Some(end);
    }
}
