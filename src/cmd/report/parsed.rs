//! Parsed records handed from the reading thread to the correlating one.
//!
//! Parsing is the largest part of a report's work, and it needs nothing
//! but the record itself, so `report FILE` parses on a thread of its own
//! (and reads on another).
//! A parsed [`Event`] borrows its texts from the record's bytes; a
//! [`ParsedChunk`] therefore carries a block of records together with their
//! events, and lends the events out only for as long as the chunk lives.

use std::ops::Range;

use exim_pilot_processor::parse::{parse_record_with, ParseOptions};
use exim_pilot_schema::{Event, LogFile};

/// How many records a chunk holds at most.
pub const CHUNK_RECORDS: usize = 4096;

/// One parsed record and where it was read.
pub struct Parsed<'a> {
    /// The event.
    pub event: Event<'a>,
    /// The log it was read from.
    pub log: LogFile,
    /// The file's place in reading order.
    pub file_no: u64,
    /// Byte offset of the record in its (decompressed) file.
    pub offset: u64,
}

/// Records being gathered for one chunk.
#[derive(Default)]
pub struct ChunkBuilder {
    bytes: Vec<u8>,
    records: Vec<(Range<usize>, LogFile, u64, u64)>,
}

impl ChunkBuilder {
    /// Adds a copy of one record.
    pub fn push(&mut self, bytes: &[u8], log: LogFile, file_no: u64, offset: u64) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.records
            .push((start..self.bytes.len(), log, file_no, offset));
    }

    /// True when the chunk holds as many records as it should.
    pub fn is_full(&self) -> bool {
        self.records.len() >= CHUNK_RECORDS
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records gathered, leaving the builder empty.
    pub fn take(&mut self) -> ChunkBuilder {
        // The next chunk will be about as large: reserving that now spares
        // growing its buffer step by step, copying it each time.
        let room = self.bytes.len() + self.bytes.len() / 8;
        ChunkBuilder {
            bytes: std::mem::replace(&mut self.bytes, Vec::with_capacity(room)),
            records: std::mem::replace(&mut self.records, Vec::with_capacity(CHUNK_RECORDS)),
        }
    }

    /// Parses every record gathered.
    pub fn parse(self, options: &ParseOptions) -> ParsedChunk {
        let ChunkBuilder {
            bytes,
            records: ranges,
        } = self;

        // SAFETY: the events borrow from the heap buffer of `bytes`, which
        // the chunk owns and never changes, moves out or grows (moving the
        // Vec moves only its handle), and which is freed after the events:
        // fields drop in declaration order, `records` first. Events leave
        // the chunk only through `ParsedChunk::records`, whose borrows end
        // with the chunk's.
        let whole: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let records = ranges
            .into_iter()
            .map(|(range, log, file_no, offset)| Parsed {
                event: parse_record_with(options, log, &whole[range]),
                log,
                file_no,
                offset,
            })
            .collect();
        ParsedChunk {
            records,
            _bytes: bytes,
        }
    }
}

/// Parsed records with the bytes their events borrow from.
pub struct ParsedChunk {
    /// Declared before `_bytes`, so dropped before them.
    records: Vec<Parsed<'static>>,
    _bytes: Vec<u8>,
}

impl ParsedChunk {
    /// The records, in reading order.
    pub fn records(&self) -> &[Parsed<'_>] {
        &self.records
    }
}
