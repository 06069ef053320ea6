//! Reading one file: bytes into lines, lines into records.
//!
//! A [`Source`] reads one physical file (plain, or gzip decompressed on the
//! fly) from a given offset, cuts the bytes into lines and groups the lines
//! into records: a line that does not start a record
//! ([`is_record_start`]) continues the record before it, which is how a
//! rejectlog header dump or a multi-line panic stays in one piece. Lines
//! are joined with `\n`, so a record's bytes are exactly the file's bytes
//! minus the final newline, with one exception: the numbered parts of a
//! syslog line that Exim split are joined back into that line, as
//! [`SplitParts`] does for every reader of logs (the record keeps the
//! first part's syslog prefix and offset, and drops the markers).
//!
//! A line without its newline is held back: Exim may be half-way through
//! writing it. It is emitted as it is only when the caller says the file is
//! finished ([`Source::finish`]). The record being grouped is held until the
//! next record start, or until it has been quiet for a while
//! ([`Source::flush_quiet`]), so the last record of a quiet log is not held
//! for ever.
//!
//! Lines and records are bounded by `max_record_bytes`: a longer line is
//! cut into pieces of that size, each its own record, and a record stops
//! taking continuation lines before it would exceed that size (the next
//! continuation line then starts a record of its own).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exim_pilot_schema::record::{is_record_start, LogFile, RawRecord, RecordOrigin};
use exim_pilot_schema::split::SplitParts;
use flate2::read::MultiGzDecoder;

use crate::events;
use crate::identity::{self, FileIdentity, Fingerprint, FINGERPRINT_MAX_BYTES};
use crate::stats::Counters;

/// A record ready to be handed out, with the position just after it.
#[derive(Debug)]
pub(crate) struct Ready {
    /// The record.
    pub record: RawRecord,
    /// The generation (see the follower) the record belongs to.
    pub generation: u64,
    /// Offset just past the record's last byte (its newline included).
    pub end: u64,
    /// Inode of the file the generation was first read from.
    pub inode: u64,
}

/// What the records of a source are labelled with.
pub(crate) struct Label<'a> {
    pub host: &'a str,
    pub log: LogFile,
}

/// How a source reads its bytes.
enum Reader {
    /// A plain file, read at explicit offsets so a truncation cannot move
    /// a hidden file position.
    Plain(File),
    /// A gzip file, decompressed as a stream. `head` keeps the first
    /// decompressed bytes for the fingerprint.
    Gzip {
        decoder: Box<MultiGzDecoder<CountingReader<BufReader<File>>>>,
        file: File,
        head: Vec<u8>,
    },
}

/// Counts the compressed bytes read from a gzip file, for progress figures.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A record being grouped, or finished.
#[derive(Debug)]
struct Pending {
    offset: u64,
    end: u64,
    bytes: Vec<u8>,
    read_at_ms: i64,
    grown_at: Instant,
}

/// Groups lines into records.
struct Grouper {
    pending: Option<Pending>,
    max_record_bytes: usize,
    parts: SplitParts,
}

impl Grouper {
    /// Adds one line; returns the previous record when this line starts a
    /// new one (or does not fit into it).
    fn push(&mut self, line: &[u8], offset: u64, end: u64, now: Instant) -> Option<Pending> {
        if let Some(pending) = &mut self.pending {
            let fits = pending.bytes.len() + 1 + line.len() <= self.max_record_bytes;
            let joined = if fits && !is_record_start(line) {
                pending.bytes.push(b'\n');
                pending.bytes.extend_from_slice(line);
                true
            } else {
                fits && self.parts.extend(line, &mut pending.bytes)
            };
            if joined {
                pending.end = end;
                pending.grown_at = now;
                return None;
            }
        }
        let bytes = match self.parts.start(line) {
            Some(marker) => [&line[..marker.start], &line[marker.end..]].concat(),
            None => line.to_vec(),
        };
        self.pending.replace(Pending {
            offset,
            end,
            bytes,
            read_at_ms: now_ms(),
            grown_at: now,
        })
    }

    /// Takes the record when nothing was added to it for `quiet`.
    fn take_if_quiet(&mut self, now: Instant, quiet: Duration) -> Option<Pending> {
        let due = self
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.grown_at) >= quiet);
        if due {
            self.pending.take()
        } else {
            None
        }
    }
}

/// One file being read.
pub(crate) struct Source {
    /// Where the file was opened; for logs and checkpoint hints.
    pub path: PathBuf,
    /// The generation these records belong to.
    pub generation: u64,
    /// Identity of the generation (device and inode of the file first
    /// read, fingerprint once known). A copy of a file keeps the identity
    /// of the original, so its records keep their `file_id`.
    pub identity: FileIdentity,
    reader: Reader,
    /// Offset of the next byte to read.
    offset: u64,
    /// The unfinished line, starting at `line_offset`.
    line: Vec<u8>,
    line_offset: u64,
    group: Grouper,
}

impl Source {
    /// Opens `path` (plain or gzip, told by its magic bytes) to read from
    /// `offset`. `identity` names the generation; pass the file's own
    /// identity for a new file.
    pub fn open(
        path: &Path,
        generation: u64,
        identity: FileIdentity,
        offset: u64,
        max_record_bytes: usize,
    ) -> io::Result<Source> {
        let file = File::open(path)?;
        Source::from_file(path, file, generation, identity, offset, max_record_bytes)
    }

    /// Like [`Source::open`] on a file already open.
    pub fn from_file(
        path: &Path,
        file: File,
        generation: u64,
        identity: FileIdentity,
        offset: u64,
        max_record_bytes: usize,
    ) -> io::Result<Source> {
        let reader = if identity::is_gzip_file(&file)? {
            // Clones share the file position, which a fingerprint check may
            // have moved.
            let mut compressed = file.try_clone()?;
            compressed.seek(SeekFrom::Start(0))?;
            let counting = CountingReader {
                inner: BufReader::new(compressed),
                count: 0,
            };
            Reader::Gzip {
                decoder: Box::new(MultiGzDecoder::new(counting)),
                file,
                head: Vec::new(),
            }
        } else {
            Reader::Plain(file)
        };
        let mut source = Source {
            path: path.to_path_buf(),
            generation,
            identity,
            reader,
            offset: 0,
            line: Vec::new(),
            line_offset: 0,
            group: Grouper {
                pending: None,
                max_record_bytes: max_record_bytes.max(1),
                parts: SplitParts::new(),
            },
        };
        source.skip_to(offset)?;
        Ok(source)
    }

    /// Moves the start to `offset`. A plain file just starts there; a gzip
    /// stream has to be decompressed up to it.
    fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if let Reader::Gzip { .. } = self.reader {
            let mut scratch = vec![0u8; 64 * 1024];
            while self.offset < offset {
                let want = scratch.len().min((offset - self.offset) as usize);
                let n = self.read_raw(&mut scratch[..want])?;
                if n == 0 {
                    break;
                }
            }
        } else {
            self.offset = offset;
        }
        self.line_offset = self.offset;
        Ok(())
    }

    /// Reads the next bytes into `buf`, advancing `offset`.
    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            let result = match &mut self.reader {
                Reader::Plain(file) => file.read_at(buf, self.offset),
                Reader::Gzip { decoder, head, .. } => {
                    let result = match decoder.read(buf) {
                        // A truncated or damaged archive (a rotation cut
                        // short by a full disk) still gives what could be
                        // decompressed; a gzip file never grows, so its
                        // end is final.
                        Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                            tracing::warn!(
                                path = %self.path.display(),
                                offset = self.offset,
                                error = %e,
                                "Compressed log is damaged; read up to here"
                            );
                            Ok(0)
                        }
                        other => other,
                    };
                    if let Ok(n) = result {
                        let room = FINGERPRINT_MAX_BYTES.saturating_sub(head.len());
                        head.extend_from_slice(&buf[..n.min(room)]);
                    }
                    result
                }
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.offset += n as u64;
        Ok(n)
    }

    /// The open file, for size checks.
    pub fn file(&self) -> &File {
        match &self.reader {
            Reader::Plain(file) => file,
            Reader::Gzip { file, .. } => file,
        }
    }

    /// True for a plain file (one that can grow or be truncated).
    pub fn is_plain(&self) -> bool {
        matches!(self.reader, Reader::Plain(_))
    }

    /// The bytes read so far while the file has no fingerprint yet (its
    /// first line is still incomplete): then they are the file's head.
    pub fn unfinished_head(&self) -> Option<&[u8]> {
        (self.identity.fingerprint.is_none() && self.line_offset == 0).then_some(&self.line[..])
    }

    /// Offset of the next byte to read.
    pub fn read_offset(&self) -> u64 {
        self.offset
    }

    /// Offset of the first byte not yet emitted in a record: where a
    /// restart has to begin so that nothing held in memory is lost.
    pub fn resume_offset(&self) -> u64 {
        match &self.group.pending {
            Some(pending) => pending.offset,
            None => self.line_offset,
        }
    }

    /// Bytes on disk not yet read: for a plain file its size minus the
    /// read offset, for a gzip file its compressed bytes not yet consumed.
    pub fn bytes_behind(&self) -> u64 {
        match &self.reader {
            Reader::Plain(file) => file
                .metadata()
                .map(|m| m.len().saturating_sub(self.offset))
                .unwrap_or(0),
            Reader::Gzip { decoder, file, .. } => file
                .metadata()
                .map(|m| m.len().saturating_sub(decoder.get_ref().count))
                .unwrap_or(0),
        }
    }

    /// Reads up to `chunk` bytes and emits every record they complete.
    /// Returns the number of bytes read; 0 means the end of the file for
    /// now.
    pub fn read_step(
        &mut self,
        chunk: usize,
        label: &Label<'_>,
        now: Instant,
        out: &mut VecDeque<Ready>,
        counters: &mut Counters,
    ) -> io::Result<usize> {
        // Read straight into the spare end of the line buffer.
        let filled = self.line.len();
        self.line.resize(filled + chunk.max(1), 0);
        let mut spare = std::mem::take(&mut self.line);
        let result = self.read_raw(&mut spare[filled..]);
        self.line = spare;
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                self.line.truncate(filled);
                return Err(e);
            }
        };
        self.line.truncate(filled + n);
        if n == 0 {
            return Ok(0);
        }
        counters.bytes_read += n as u64;
        self.cut_lines(label, now, out, counters)?;
        Ok(n)
    }

    /// Cuts the complete lines (and over-long pieces) out of the line
    /// buffer and groups them into records.
    fn cut_lines(
        &mut self,
        label: &Label<'_>,
        now: Instant,
        out: &mut VecDeque<Ready>,
        counters: &mut Counters,
    ) -> io::Result<()> {
        let max = self.group.max_record_bytes;
        let mut start = 0;
        loop {
            let window = &self.line[start..];
            let limit = window.len().min(max + 1);
            let (len, consumed) = match memchr::memchr(b'\n', &window[..limit]) {
                Some(newline) => (newline, newline + 1),
                None if window.len() > max => {
                    counters.oversized_lines += 1;
                    (max, max)
                }
                None => break,
            };
            self.settle_fingerprint(false)?;
            counters.lines_read += 1;
            let offset = self.line_offset + start as u64;
            let line = &self.line[start..start + len];
            if let Some(done) = self.group.push(line, offset, offset + consumed as u64, now) {
                self.emit(done, label, out);
            }
            start += consumed;
        }
        self.line.drain(..start);
        self.line_offset += start as u64;
        Ok(())
    }

    /// Hands a finished record out.
    fn emit(&self, record: Pending, label: &Label<'_>, out: &mut VecDeque<Ready>) {
        let file_id = self
            .identity
            .file_id()
            .unwrap_or_else(|| fallback_file_id(&self.identity));
        out.push_back(Ready {
            record: RawRecord {
                origin: RecordOrigin {
                    host: label.host.to_owned(),
                    log: label.log,
                    file_id,
                    offset: record.offset,
                },
                read_at_ms: record.read_at_ms,
                bytes: record.bytes,
            },
            generation: self.generation,
            end: record.end,
            inode: self.identity.inode,
        });
    }

    /// Emits the record being grouped when nothing was added to it for
    /// `quiet`. Returns true when a record was emitted.
    pub fn flush_quiet(
        &mut self,
        now: Instant,
        quiet: Duration,
        label: &Label<'_>,
        out: &mut VecDeque<Ready>,
    ) -> bool {
        match self.group.take_if_quiet(now, quiet) {
            Some(done) => {
                self.emit(done, label, out);
                true
            }
            None => false,
        }
    }

    /// When the record being grouped becomes due for a quiet flush.
    pub fn quiet_deadline(&self, quiet: Duration) -> Option<Instant> {
        self.group.pending.as_ref().map(|p| p.grown_at + quiet)
    }

    /// Emits the record being grouped now, without waiting for the next
    /// record start. A line still missing its newline stays held.
    pub fn flush_group(&mut self, label: &Label<'_>, out: &mut VecDeque<Ready>) {
        if let Some(done) = self.group.pending.take() {
            self.emit(done, label, out);
        }
    }

    /// Gives the open file back, for reading it again as a new generation.
    pub fn into_file(self) -> File {
        match self.reader {
            Reader::Plain(file) => file,
            Reader::Gzip { file, .. } => file,
        }
    }

    /// The length of the line being read: once the file is read to its
    /// end, a last line that has no newline yet.
    pub fn unfinished_line_len(&self) -> u64 {
        self.line.len() as u64
    }

    /// Forgets a last line that has no newline yet, leaving it to be read
    /// again once it is complete; returns its length.
    pub fn hold_back_unfinished_line(&mut self) -> usize {
        std::mem::take(&mut self.line).len()
    }

    /// The file is finished: emits the held record and, as a record of its
    /// own, a last line that never got its newline.
    pub fn finish(
        &mut self,
        label: &Label<'_>,
        out: &mut VecDeque<Ready>,
        counters: &mut Counters,
    ) {
        if !self.line.is_empty() {
            // Nothing will complete this line any more, so a fingerprint
            // that could not be taken yet is taken from what is there.
            if let Err(e) = self.settle_fingerprint(true) {
                events::fingerprint_unavailable(&self.path, &e);
            }
            let line = std::mem::take(&mut self.line);
            let offset = self.line_offset;
            self.line_offset += line.len() as u64;
            counters.lines_read += 1;
            counters.unterminated_lines += 1;
            let now = Instant::now();
            if let Some(done) = self.group.push(&line, offset, self.line_offset, now) {
                self.emit(done, label, out);
            }
        }
        if let Some(done) = self.group.pending.take() {
            self.emit(done, label, out);
        }
    }

    /// Takes the fingerprint when it is not known yet and the file's head
    /// allows it.
    fn settle_fingerprint(&mut self, final_content: bool) -> io::Result<()> {
        if self.identity.fingerprint.is_some() {
            return Ok(());
        }
        let head = match &self.reader {
            Reader::Plain(file) => identity::read_head_at(file)?,
            Reader::Gzip { head, .. } => head.clone(),
        };
        self.identity.fingerprint = Fingerprint::of_head(&head, final_content)
            // A complete line is there, so the head is decidable unless the
            // file was truncated meanwhile; then fingerprint what there is.
            .or_else(|| Fingerprint::of_head(&head, true));
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An id for records of a file whose fingerprint could not be taken (it
/// was emptied while being read): device and inode alone.
fn fallback_file_id(identity: &FileIdentity) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&identity.dev.to_le_bytes());
    bytes[8..].copy_from_slice(&identity.inode.to_le_bytes());
    identity::fnv1a(&bytes)
}
