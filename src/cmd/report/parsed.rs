//! Parsed records handed from the reading thread to the correlating one.
//!
//! Parsing is the largest part of a report's work, and it needs nothing
//! but the record itself, so `report FILE` parses on a thread of its own
//! (and reads on another).
//! A parsed [`Event`] borrows its texts from the record's bytes; a
//! [`ParsedChunk`] therefore carries a block of records together with their
//! events, and lends the events out only for as long as the chunk lives.

use std::ops::Range;
use std::sync::mpsc;

use exim_pilot_processor::parse::{parse_record_brief, Brief, LogClock, ParseOptions};
use exim_pilot_schema::LogFile;
use exim_pilot_schema::Zone;

/// How many records a chunk holds at most.
pub const CHUNK_RECORDS: usize = 4096;

/// One parsed record and where it was read.
pub struct Parsed<'a> {
    /// The event, or the header of a record the report needs no more of.
    pub read: Brief<'a>,
    /// The record's bytes.
    pub record: &'a [u8],
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

    /// The records gathered, leaving the builder empty with the buffers of
    /// a used chunk when one came back through `spare`.
    ///
    /// Reusing buffers spares the system's work of handing out fresh
    /// memory for every chunk (page faults, zeroed pages), and keeps the
    /// bytes in memory that is already mapped.
    pub fn take(&mut self, spare: &mpsc::Receiver<Spare>) -> ChunkBuilder {
        // The next chunk will be about as large: reserving that now spares
        // growing its buffer step by step, copying it each time.
        let room = self.bytes.len() + self.bytes.len() / 8;
        let Spare {
            mut bytes,
            mut records,
        } = spare.try_recv().unwrap_or_default();
        bytes.clear();
        bytes.reserve(room);
        records.clear();
        records.reserve(CHUNK_RECORDS);
        ChunkBuilder {
            bytes: std::mem::replace(&mut self.bytes, bytes),
            records: std::mem::replace(&mut self.records, records),
        }
    }

    /// Parses every record gathered into `list` (emptied first; the list
    /// of a used chunk, so its memory is reused).
    /// `clocks` follow each kind of log, whose files come in time order
    /// and whose naive times are in `zone`.
    pub fn parse(
        self,
        (options, zone): (&ParseOptions, Zone),
        clocks: &mut [LogClock; 3],
        list: Vec<Parsed<'static>>,
    ) -> ParsedChunk {
        let ChunkBuilder {
            bytes,
            records: ranges,
        } = self;

        // SAFETY: the events borrow from the heap buffer of `bytes`, which
        // the chunk owns and never changes, moves out or grows (moving the
        // Vec moves only its handle), and which is freed or handed on only
        // after the events are gone: fields drop in declaration order,
        // `records` first, and `ParsedChunk::into_spare` empties the list
        // before it gives the buffer up. Events leave the chunk only
        // through `ParsedChunk::records`, whose borrows end with the
        // chunk's.
        let whole: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let mut records = list;
        records.clear();
        records.extend(ranges.iter().map(|(range, log, file_no, offset)| {
            let mut read = parse_record_brief(options, *log, &whole[range.clone()]);
            clocks[*log as usize].settle_brief(options, zone, &mut read);
            Parsed {
                read,
                record: &whole[range.clone()],
                log: *log,
                file_no: *file_no,
                offset: *offset,
            }
        }));
        ParsedChunk {
            records,
            bytes,
            ranges,
        }
    }
}

/// The buffers of a used chunk, for the reading thread to fill again.
#[derive(Default)]
pub struct Spare {
    bytes: Vec<u8>,
    records: Vec<(Range<usize>, LogFile, u64, u64)>,
}

/// Parsed records with the bytes their events borrow from.
pub struct ParsedChunk {
    /// Declared before `bytes`, so dropped before them.
    records: Vec<Parsed<'static>>,
    bytes: Vec<u8>,
    ranges: Vec<(Range<usize>, LogFile, u64, u64)>,
}

impl ParsedChunk {
    /// The records, in reading order.
    pub fn records(&self) -> &[Parsed<'_>] {
        &self.records
    }

    /// Drops the records, giving back the chunk's buffers for reuse: the
    /// reading thread's (bytes and record places) and the empty list of
    /// parsed records.
    pub fn into_spare(self) -> (Spare, Vec<Parsed<'static>>) {
        let ParsedChunk {
            mut records,
            bytes,
            ranges,
        } = self;
        // The events borrow from `bytes`: they go before it is handed on.
        records.clear();
        (
            Spare {
                bytes,
                records: ranges,
            },
            records,
        )
    }
}
