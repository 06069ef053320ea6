//! Cutting a log into records.
//!
//! A record starts with a line that begins with a timestamp (Exim's own,
//! or a syslog stamp; see [`is_record_start`]). Lines that continue it (a
//! rejectlog entry's envelope and header dump, the indented rest of a
//! multi-line entry; see [`is_continuation`]) are joined to it with `\n`.
//! Any other line is a record of its own: an empty line, or text another
//! program wrote into the log (a script's SMTP transcript, a separator),
//! so stray text neither glues unrelated records together nor hides in
//! one; the parser keeps it as [`Unparsed`](exim_pilot_schema::EventKind).
//!
//! Through syslog, Exim splits a long line into numbered parts, each a
//! syslog line of its own whose message starts with `[n/m] ` or `[n\m] `:
//! `/` says the part was cut mid-line (joined to the next with nothing),
//! `\` that it ended at a newline of the original (joined with `\n`). The
//! reader puts consecutive parts of one line back together, keeping the
//! first part's syslog prefix and dropping the markers. Parts interleaved
//! with other lines are not re-assembled: each becomes a record. The
//! joining is [`SplitParts`]', which the tailer and the importer use too.
//!
//! Each record carries the byte offset of its first line in the (possibly
//! decompressed) stream.
//!
//! Records are bounded by [`MAX_RECORD_BYTES`], as the tailer's are: a
//! longer line is cut into pieces of that size, each a record of its own,
//! and lines are joined to a record only while it fits. So a file without
//! newlines (a damaged log, `/dev/zero`) is read in bounded memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use exim_pilot_schema::record::{is_continuation, is_record_start};
use exim_pilot_schema::split::SplitParts;
use flate2::read::MultiGzDecoder;
use memchr::memchr;

/// The largest record the reader hands out, in bytes: the tailer's
/// default (`FollowerConfig::max_record_bytes` in `exim-pilot-ingest`).
/// Exim's own log lines stay far below it (its log buffer is 8 KB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Reading failed part way (a truncated `.gz` file, an I/O error).
    #[error("cannot read the log: {0}")]
    Read(#[from] io::Error),
}

/// Opens a log for reading: `-` is standard input; a file that starts with
/// the gzip magic bytes is decompressed (every member of a concatenated
/// `.gz`), whatever its name.
pub fn open_log(path: &Path) -> Result<Box<dyn BufRead>, RecordError> {
    const BUF: usize = 1 << 18;
    let open_err = |source| RecordError::Open {
        path: path.to_path_buf(),
        source,
    };
    let raw: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(open_err)?)
    };
    let mut reader = BufReader::with_capacity(BUF, raw);
    let head = reader.fill_buf().map_err(open_err)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            BUF,
            Lenient::new(MultiGzDecoder::new(reader), path),
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// A gzip stream whose damage ends it instead of failing the read: a
/// truncated archive (a rotation cut short by a full disk) still gives
/// every line that could be decompressed, with one warning. Once damaged,
/// the stream stays at its end: the decoder is not asked again (it would
/// fail again, and warn again, for every reader that retries at the end).
struct Lenient<R> {
    inner: R,
    path: PathBuf,
    /// Decompressed bytes handed out so far.
    read: u64,
    damaged: bool,
}

impl<R: Read> Lenient<R> {
    fn new(inner: R, path: &Path) -> Lenient<R> {
        Lenient {
            inner,
            path: path.to_path_buf(),
            read: 0,
            damaged: false,
        }
    }
}

impl<R: Read> Read for Lenient<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.damaged {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.damaged = true;
                    tracing::warn!(
                        path = %self.path.display(),
                        decompressed_bytes = self.read,
                        error = %e,
                        "Compressed log is damaged; read up to here"
                    );
                    return Ok(0);
                }
                Ok(n) => {
                    self.read += n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

/// A record borrowed from the reader's buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Record<'r> {
    /// Byte offset of the record's first line.
    pub offset: u64,
    /// The record, without its final newline; lines joined with `\n`.
    pub bytes: &'r [u8],
}

/// A record that owns its bytes (what the iterator yields).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OwnedRecord {
    /// Byte offset of the record's first line.
    pub offset: u64,
    /// The record, without its final newline; lines joined with `\n`.
    pub bytes: Vec<u8>,
}

/// Cuts a stream into records.
pub struct RecordReader<R> {
    inner: R,
    /// The line read ahead: the start of the next record.
    line: Vec<u8>,
    line_offset: u64,
    have_line: bool,
    record: Vec<u8>,
    pos: u64,
    parts: SplitParts,
}

impl<R: BufRead> RecordReader<R> {
    /// A reader of records from `inner`, starting at offset 0.
    pub fn new(inner: R) -> RecordReader<R> {
        RecordReader::starting_at(inner, 0)
    }

    /// A reader whose first byte is at `offset` in the file (when resuming).
    pub fn starting_at(inner: R, offset: u64) -> RecordReader<R> {
        RecordReader {
            inner,
            line: Vec::with_capacity(512),
            line_offset: offset,
            have_line: false,
            record: Vec::with_capacity(512),
            pos: offset,
            parts: SplitParts::new(),
        }
    }

    /// Reads one line into `self.line`, without its newline; false at the end.
    fn read_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        let n = self.read_until_newline()?;
        if n == 0 {
            return Ok(false);
        }
        self.line_offset = self.pos;
        self.pos += n as u64;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(true)
    }

    /// Appends bytes up to and including the next newline to `self.line`,
    /// or [`MAX_RECORD_BYTES`] of a longer line (the rest is the next
    /// line); the count read, 0 at the end. It does what `read_until` does,
    /// but looks for the newline with `memchr`'s vector search, which is
    /// much faster on log lines than the standard library's.
    fn read_until_newline(&mut self) -> io::Result<usize> {
        let mut n = 0;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(n);
            }
            // A line of exactly the largest size still takes its newline.
            let room = MAX_RECORD_BYTES - n;
            let (take, done) = match memchr(b'\n', &buf[..buf.len().min(room + 1)]) {
                Some(i) => (i + 1, true),
                None if buf.len() > room => (room, true),
                None => (buf.len(), false),
            };
            self.line.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
            n += take;
            if done {
                return Ok(n);
            }
        }
    }

    /// The next record, borrowed until the next call; `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, RecordError> {
        if !self.have_line && !self.read_line()? {
            return Ok(None);
        }
        self.have_line = false;
        let offset = self.line_offset;
        self.record.clear();
        self.start_record();

        // An empty line stands alone.
        if !self.record.is_empty() {
            while self.read_line()? {
                if !continues(&self.line) || !self.fits(1 + self.line.len()) {
                    if self.continue_split() {
                        continue;
                    }
                    self.have_line = true;
                    break;
                }
                self.record.push(b'\n');
                self.record.extend_from_slice(&self.line);
            }
        }
        Ok(Some(Record {
            offset,
            bytes: &self.record,
        }))
    }

    /// Moves the read-ahead line into the record, dropping a split marker
    /// and remembering that parts should follow.
    fn start_record(&mut self) {
        match self.parts.start(&self.line) {
            Some(marker) => {
                self.record.extend_from_slice(&self.line[..marker.start]);
                self.record.extend_from_slice(&self.line[marker.end..]);
            }
            // The record is empty here, so trading buffers moves the line
            // in without copying it.
            None => std::mem::swap(&mut self.record, &mut self.line),
        }
    }

    /// True when `more` bytes can join the record within
    /// [`MAX_RECORD_BYTES`].
    fn fits(&self, more: usize) -> bool {
        self.record.len() + more <= MAX_RECORD_BYTES
    }

    /// Appends the read-ahead line when it is the next part of the line
    /// being re-assembled.
    fn continue_split(&mut self) -> bool {
        self.fits(1 + self.line.len()) && self.parts.extend(&self.line, &mut self.record)
    }
}

/// True when `line` belongs to the record before it: it starts no record
/// and has the shape of a continuation (see [`is_continuation`]).
fn continues(line: &[u8]) -> bool {
    !line.is_empty() && is_continuation(line) && !is_record_start(line)
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<OwnedRecord, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(OwnedRecord {
                offset: r.offset,
                bytes: r.bytes.to_vec(),
            })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_compressed_stream_ends_once_and_stays_ended() {
        /// Gives some bytes, then fails on every later read.
        struct Damaged {
            calls: usize,
        }
        impl Read for Damaged {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.calls += 1;
                if self.calls == 1 {
                    buf[..6].copy_from_slice(b"line1\n");
                    return Ok(6);
                }
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "corrupt deflate stream",
                ))
            }
        }
        let mut lenient = Lenient::new(Damaged { calls: 0 }, Path::new("mainlog.2.gz"));
        let mut buf = [0u8; 64];
        assert_eq!(lenient.read(&mut buf).unwrap(), 6);
        for _ in 0..3 {
            assert_eq!(lenient.read(&mut buf).unwrap(), 0);
        }
        assert_eq!(lenient.inner.calls, 2, "the decoder is not asked again");
        assert_eq!(lenient.read, 6);
    }

    fn records(input: &str) -> Vec<(u64, String)> {
        RecordReader::new(input.as_bytes())
            .map(|r| {
                let r = r.unwrap();
                (r.offset, String::from_utf8(r.bytes).unwrap())
            })
            .collect()
    }

    #[test]
    fn continuation_lines_join_the_record_before() {
        let input = "2024-01-02 03:04:05 H=x rejected after DATA: no\n\
                     Envelope-from: <a@example.com>\n\
                     \tfolded\n\
                     2024-01-02 03:04:06 Completed\n";
        let r = records(input);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].1,
            "2024-01-02 03:04:05 H=x rejected after DATA: no\n\
             Envelope-from: <a@example.com>\n\tfolded"
        );
        assert_eq!(r[1].0, input.find("2024-01-02 03:04:06").unwrap() as u64);
    }

    #[test]
    fn text_that_is_no_continuation_stands_alone() {
        let input = "2024-01-02 03:04:05 1tAbCd-000000001xY-0aBc <= a@example.com\n\
                     250 2.0.0 Ok\n\
                     RCPT TO:<b@example.org>\n\
                     \tindented detail\n\
                     2024-01-02 03:04:06 Completed\n";
        let texts: Vec<_> = records(input).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            texts,
            [
                "2024-01-02 03:04:05 1tAbCd-000000001xY-0aBc <= a@example.com",
                "250 2.0.0 Ok",
                "RCPT TO:<b@example.org>\n\tindented detail",
                "2024-01-02 03:04:06 Completed",
            ]
        );
    }

    #[test]
    fn blank_lines_stand_alone_and_crlf_is_dropped() {
        let r = records("2024-01-02 03:04:05 a\r\n\n\nx\n2024-01-02 03:04:05 b");
        let texts: Vec<_> = r.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "2024-01-02 03:04:05 a",
                "",
                "",
                "x",
                "2024-01-02 03:04:05 b"
            ]
        );
    }

    #[test]
    fn syslog_parts_are_reassembled() {
        let input = "May  3 10:00:00 mx exim[7]: [1/3] 2024-05-03 10:00:00 abc\n\
                     May  3 10:00:00 mx exim[7]: [2\\3] def\n\
                     May  3 10:00:01 mx exim[7]: [3/3] ghi\n\
                     May  3 10:00:01 mx exim[8]: other\n";
        let r = records(input);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].1,
            "May  3 10:00:00 mx exim[7]: 2024-05-03 10:00:00 abcdef\nghi"
        );
        assert_eq!(r[1].1, "May  3 10:00:01 mx exim[8]: other");
    }

    #[test]
    fn interleaved_parts_stay_apart() {
        let input = "May  3 10:00:00 mx exim[7]: [1/2] abc\n\
                     May  3 10:00:00 mx exim[9]: hello\n\
                     May  3 10:00:00 mx exim[7]: [2/2] def\n";
        assert_eq!(records(input).len(), 3);
    }

    #[test]
    fn gzip_is_detected_by_magic() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mainlog.1");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"2024-01-02 03:04:05 Completed\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let reader = RecordReader::new(open_log(&path).unwrap());
        let all: Vec<_> = reader.map(|r| r.unwrap().bytes).collect();
        assert_eq!(all, [b"2024-01-02 03:04:05 Completed".to_vec()]);
    }
}
