//! Reading a list of finished log files once, for a backfill import.
//!
//! [`Importer`] reads plain and gzip files (told apart by their magic
//! bytes, not their names) one after the other and yields the same records
//! a follower would: grouped lines, labelled with host, log kind, file
//! identity and offset. Importing a plain file that a follower also read
//! gives records the store recognises as the same, and so does importing a
//! compressed or renamed copy of it: the `file_id` names a file's content,
//! not its inode.
//!
//! The files are read in time order, decided like this: when the first
//! record of every file starts with an ISO date (`YYYY-MM-DD HH:MM:SS`,
//! Exim's own format or an ISO syslog stamp), files are sorted by that
//! timestamp, ties by rotation number. Otherwise (syslog stamps without a
//! year, or a file with no record) they are sorted by rotation number alone:
//! `mainlog.3.gz`, `mainlog.2.gz`, `mainlog.1`, then `mainlog`; dated
//! rotations (`mainlog-20240101`) by their date; files without a rotation
//! suffix last; ties by path. A file's final line without a newline is
//! read as it is, unless the importer was asked to hold such lines back
//! ([`Importer::holding_back_unfinished_lines`]): a plain file may be a
//! live log whose writer has not finished that line, and a store that took
//! half a line would keep that half, the whole line being later found at
//! the same offset and so taken as stored.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use exim_pilot_schema::record::{is_record_start, LogFile, RawRecord};

use crate::error::{IngestError, Result};
use crate::events;
use crate::identity::{self, FileIdentity};
use crate::siblings::{self, Rotation};
use crate::source::{Label, Ready, Source};
use crate::stats::Counters;

/// How many leading bytes are searched for a file's first timestamp.
const TIMESTAMP_SEARCH_BYTES: u64 = 64 * 1024;

/// Largest record an import yields; longer lines are cut into pieces.
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Bytes asked for in one read.
const READ_CHUNK: usize = 256 * 1024;

/// Bytes of records a batch holds at most (beyond its one record at
/// least): a file of long lines (a damaged log) fills a batch of pieces of
/// [`MAX_RECORD_BYTES`] long before it reaches its number of records.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Sorts `paths` into the order they are imported in (see the module
/// documentation).
pub fn order_for_import(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut keyed = Vec::with_capacity(paths.len());
    for path in paths {
        let stamp = first_timestamp(path).map_err(|e| IngestError::read(path, e))?;
        keyed.push((stamp, rotation_key(path), path.clone()));
    }
    if keyed.iter().all(|(stamp, _, _)| stamp.is_some()) {
        keyed.sort_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));
    } else {
        keyed.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
    }
    Ok(keyed.into_iter().map(|(_, _, path)| path).collect())
}

/// Oldest first: dated rotations by date, numbered ones from the highest
/// number, then files that are not rotations.
fn rotation_key(path: &Path) -> (u8, u64) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match Rotation::of(siblings::live_name(name), name) {
        Some(Rotation::Dated(date)) => (0, date),
        Some(Rotation::Numbered(n)) => (1, u64::from(u32::MAX - n)),
        None => (2, 0),
    }
}

/// The ISO timestamp the first record of a file starts with, `T` read as a
/// space, fractions of a second kept.
fn first_timestamp(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = File::open(path)?;
    let mut head = Vec::new();
    if identity::is_gzip_file(&file)? {
        let mut compressed = file;
        compressed.seek(SeekFrom::Start(0))?;
        flate2::read::MultiGzDecoder::new(io::BufReader::new(compressed))
            .take(TIMESTAMP_SEARCH_BYTES)
            .read_to_end(&mut head)?;
    } else {
        file.take(TIMESTAMP_SEARCH_BYTES).read_to_end(&mut head)?;
    }
    let first = head
        .split(|&b| b == b'\n')
        .find(|line| is_record_start(line));
    Ok(first.and_then(iso_timestamp))
}

/// `YYYY-MM-DD HH:MM:SS[.fff]` at the start of `line`, if that is how it
/// starts.
fn iso_timestamp(line: &[u8]) -> Option<Vec<u8>> {
    let iso = line.len() >= 19
        && line[..19].iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ' || b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    if !iso {
        return None;
    }
    let mut stamp = line[..19].to_vec();
    stamp[10] = b' ';
    if line.get(19) == Some(&b'.') {
        let fraction = line[20..].iter().take_while(|b| b.is_ascii_digit()).count();
        stamp.extend_from_slice(&line[19..20 + fraction]);
    }
    Some(stamp)
}

/// Reads a list of files once, in time order; see the module documentation.
pub struct Importer {
    host: String,
    files: Vec<PathBuf>,
    queue: VecDeque<PathBuf>,
    current: Option<(Source, LogFile, u64)>,
    ready: VecDeque<Ready>,
    counters: Counters,
    bytes_total: u64,
    bytes_finished: u64,
    hold_back: bool,
    held_back: Vec<(PathBuf, usize)>,
    /// An error found after records that are still to be handed out.
    failed: Option<IngestError>,
}

impl Importer {
    /// Prepares to import `paths` for `host`; the log kind of each file is
    /// taken from its name ([`LogFile::from_path`]).
    pub fn new(paths: &[PathBuf], host: impl Into<String>) -> Result<Importer> {
        let files = order_for_import(paths)?;
        let mut bytes_total = 0;
        for path in &files {
            let meta = std::fs::metadata(path).map_err(|e| IngestError::read(path, e))?;
            bytes_total += meta.len();
        }
        Ok(Importer {
            host: host.into(),
            queue: files.iter().cloned().collect(),
            files,
            current: None,
            ready: VecDeque::new(),
            counters: Counters::default(),
            bytes_total,
            bytes_finished: 0,
            hold_back: false,
            held_back: Vec::new(),
            failed: None,
        })
    }

    /// The files in the order they are read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Size of all files on disk (compressed size for gzip files).
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// Bytes on disk read so far, for a progress bar.
    pub fn bytes_done(&self) -> u64 {
        let current = self.current.as_ref().map_or(0, |(source, _, size)| {
            size.saturating_sub(source.bytes_behind())
        });
        self.bytes_finished + current
    }

    /// Lines read and records emitted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Leaves out the final line of a plain file when it has no newline
    /// (see [`Importer::held_back`]); compressed files are finished, and
    /// their last line is read whatever it ends with.
    pub fn holding_back_unfinished_lines(mut self) -> Importer {
        self.hold_back = true;
        self
    }

    /// The plain files whose unfinished last line was left out, with its
    /// length in bytes.
    pub fn held_back(&self) -> &[(PathBuf, usize)] {
        &self.held_back
    }

    /// The next up to `max_records` records (fewer when they hold more than
    /// [`MAX_BATCH_BYTES`]); `None` once every file is read.
    pub fn next_batch(&mut self, max_records: usize) -> Result<Option<Vec<RawRecord>>> {
        let max_records = max_records.max(1);
        while self.ready.len() < max_records
            && ready_bytes(&self.ready, max_records) < MAX_BATCH_BYTES
        {
            match self.read_more() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if self.ready.is_empty() => return Err(e),
                Err(e) => {
                    // The records read before the failure go out first.
                    self.failed = Some(e);
                    break;
                }
            }
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let mut count = 0;
        let mut bytes = 0;
        for r in self.ready.iter().take(max_records) {
            if count > 0 && bytes + r.record.bytes.len() > MAX_BATCH_BYTES {
                break;
            }
            bytes += r.record.bytes.len();
            count += 1;
        }
        self.counters.records_emitted += count as u64;
        Ok(Some(self.ready.drain(..count).map(|r| r.record).collect()))
    }

    /// Reads one chunk, opening the next file when needed. False when there
    /// is nothing left.
    fn read_more(&mut self) -> Result<bool> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.current.is_none() && !self.open_next()? {
            return Ok(false);
        }
        let Some((source, log, size)) = self.current.as_mut() else {
            return Ok(false);
        };
        let label = Label {
            host: &self.host,
            log: *log,
        };
        let read = source
            .read_step(
                READ_CHUNK,
                &label,
                Instant::now(),
                &mut self.ready,
                &mut self.counters,
            )
            .map_err(|e| IngestError::read(&source.path, e))?;
        if read == 0 {
            if let Some(shrank) = shrank(source, *size) {
                // What was read is kept; its last line lost its end.
                source.hold_back_unfinished_line();
                source.finish(&label, &mut self.ready, &mut self.counters);
                self.current = None;
                self.queue.clear();
                return Err(shrank);
            }
            if self.hold_back && source.is_plain() {
                let held = source.hold_back_unfinished_line();
                if held > 0 {
                    self.held_back.push((source.path.clone(), held));
                }
            }
            source.finish(&label, &mut self.ready, &mut self.counters);
            self.bytes_finished += *size;
            self.current = None;
        }
        Ok(true)
    }

    fn open_next(&mut self) -> Result<bool> {
        let Some(path) = self.queue.pop_front() else {
            return Ok(false);
        };
        let file = File::open(&path).map_err(|e| IngestError::read(&path, e))?;
        let meta = file.metadata().map_err(|e| IngestError::read(&path, e))?;
        let identity = FileIdentity::of_metadata(&meta);
        let source = Source::from_file(&path, file, 0, identity, 0, MAX_RECORD_BYTES)
            .map_err(|e| IngestError::read(&path, e))?;
        events::importing(&path);
        self.current = Some((source, LogFile::from_path(&path), meta.len()));
        Ok(true)
    }
}

impl Iterator for Importer {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ready) = self.ready.pop_front() {
                self.counters.records_emitted += 1;
                return Some(Ok(ready.record));
            }
            match self.read_more() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The error to report when the plain file `source` reads, ends before
/// the `size` it had when it was opened, or is now shorter than what was
/// read of it: something truncated it while it was read (a rotation by
/// copytruncate, a cleanup), so its end was not imported.
fn shrank(source: &Source, size: u64) -> Option<IngestError> {
    if !source.is_plain() {
        return None;
    }
    let offset = source.read_offset();
    let now = source.file().metadata().map_or(0, |m| m.len());
    (offset < size || now < offset).then(|| IngestError::Shrank {
        path: source.path.clone(),
        offset,
        size: now,
    })
}

/// Bytes held by the first `max_records` ready records.
fn ready_bytes(ready: &VecDeque<Ready>, max_records: usize) -> usize {
    ready
        .iter()
        .take(max_records)
        .map(|r| r.record.bytes.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps() {
        assert_eq!(
            iso_timestamp(b"2026-12-04 15:54:25.924 [27397] x").unwrap(),
            b"2026-12-04 15:54:25.924"
        );
        assert_eq!(
            iso_timestamp(b"2024-05-23T10:02:11+02:00 mail exim[1]: x").unwrap(),
            b"2024-05-23 10:02:11"
        );
        assert_eq!(iso_timestamp(b"May 23 10:02:11 mail exim[2]: x"), None);
    }

    #[test]
    fn a_batch_of_long_lines_is_bounded_by_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mainlog");
        // No newline at all: pieces of the largest record size.
        let size = MAX_BATCH_BYTES * 2 + 12_345;
        std::fs::write(&path, vec![b'z'; size]).unwrap();
        let mut importer = Importer::new(std::slice::from_ref(&path), "mx").unwrap();
        let mut total = 0;
        let mut batches = 0;
        while let Some(batch) = importer.next_batch(10_000).unwrap() {
            let bytes: usize = batch.iter().map(|r| r.bytes.len()).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes} bytes in one batch");
            assert!(batch.iter().all(|r| r.bytes.len() <= MAX_RECORD_BYTES));
            total += bytes;
            batches += 1;
        }
        assert_eq!(total, size, "every byte is read");
        assert!(batches >= 3, "{batches} batches");
    }

    #[test]
    fn rotation_keys_put_the_oldest_first() {
        let mut paths = ["mainlog", "mainlog.1", "mainlog.3.gz", "mainlog.2.gz"]
            .map(PathBuf::from)
            .to_vec();
        paths.sort_by_key(|p| rotation_key(p));
        assert_eq!(
            paths,
            ["mainlog.3.gz", "mainlog.2.gz", "mainlog.1", "mainlog"].map(PathBuf::from)
        );
    }
}
