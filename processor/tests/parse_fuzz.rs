//! Property tests of the parser and the record reader on arbitrary bytes
//! and on mutated corpus lines: nothing panics, and no byte is lost.
//!
//! A small seeded generator keeps runs reproducible; a failing case prints
//! its input. There is no coverage-guided (cargo-fuzz) target yet: these
//! tests only explore what the seeded generator reaches.

use std::path::Path;

use exim_pilot_processor::parse::{parse_record, RecordReader};
use exim_pilot_schema::{EventKind, LogFile};

/// xorshift64*: small, fast and good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the grammar, so mutations hit its edges.
const INTERESTING: &[u8] = b" :=<>()[]\"\\*-+./,0123456789HIRTSFCPAXKL\t\n\xff\xc3\x00?@";

fn random_byte(rng: &mut Rng) -> u8 {
    if rng.below(3) == 0 {
        rng.next() as u8
    } else {
        INTERESTING[rng.below(INTERESTING.len())]
    }
}

fn corpus_lines() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus");
    let mut lines = Vec::new();
    for scenario in ["s01_core_all", "s02_default_selectors"] {
        for file in ["mainlog", "rejectlog", "paniclog", "partner-mainlog"] {
            if let Ok(text) = std::fs::read(root.join(scenario).join(file)) {
                lines.extend(text.split(|c| *c == b'\n').map(<[u8]>::to_vec));
            }
        }
    }
    assert!(lines.len() > 2000, "corpus not found");
    lines
}

/// Changes a line in one of a few ways.
fn mutate(rng: &mut Rng, line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    for _ in 0..=rng.below(3) {
        let len = out.len();
        let at = rng.below(len + 1);
        match rng.below(6) {
            0 if len > 0 => out[at.min(len - 1)] = random_byte(rng),
            1 => out.insert(at, random_byte(rng)),
            2 => out.truncate(at),
            3 if at < len => {
                let end = (at + rng.below(16)).min(len);
                out.drain(at..end);
            }
            4 if at < len => {
                let end = (at + rng.below(24)).min(len);
                let piece = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            _ => {
                let piece: Vec<u8> = (0..rng.below(8)).map(|_| random_byte(rng)).collect();
                out.splice(at..at, piece);
            }
        }
    }
    out
}

/// Parses `record` as every kind of log and checks what must always hold.
fn check(record: &[u8]) {
    for log in [LogFile::Main, LogFile::Reject, LogFile::Panic] {
        let event = parse_record(log, record);
        if let EventKind::Unparsed { raw, .. } = &event.kind {
            assert_eq!(raw, record, "unparsed record changed");
        }
        serde_json::to_string(&event).unwrap_or_else(|e| {
            panic!(
                "cannot serialise the event of {:?}: {e}",
                String::from_utf8_lossy(record)
            )
        });
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_unparsed_keeps_them() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..10_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| random_byte(&mut rng)).collect();
        check(&bytes);
        // The same bytes behind a valid header reach the body parsers.
        let mut line = b"2024-01-02 03:04:05.678 [12] 1sPf10-00000000Aid-00JP ".to_vec();
        line.extend_from_slice(&bytes);
        check(&line);
    }
}

#[test]
fn mutated_corpus_lines_never_panic() {
    let lines = corpus_lines();
    let mut rng = Rng(42);
    for line in &lines {
        check(line);
        for _ in 0..4 {
            check(&mutate(&mut rng, line));
        }
    }
}

#[test]
fn record_reader_keeps_every_byte() {
    let lines = corpus_lines();
    let mut rng = Rng(7);
    for _ in 0..200 {
        // A random slice of the corpus, mutated, without carriage returns
        // (which the reader drops at line ends).
        let start = rng.below(lines.len());
        let mut input = Vec::new();
        for line in lines.iter().skip(start).take(rng.below(40) + 1) {
            let mut l = if rng.below(4) == 0 {
                mutate(&mut rng, line)
            } else {
                line.clone()
            };
            l.retain(|c| *c != b'\r');
            input.extend_from_slice(&l);
            input.push(b'\n');
        }
        if rng.below(2) == 0 {
            input.pop();
        }

        let mut rebuilt: Vec<u8> = Vec::new();
        let mut last_offset = None;
        for record in RecordReader::new(&input[..]) {
            let record = record.unwrap();
            assert!(last_offset < Some(record.offset), "offsets go forward");
            assert_eq!(rebuilt.len() as u64 + u64::from(last_offset.is_some()), {
                record.offset
            });
            if last_offset.is_some() {
                rebuilt.push(b'\n');
            }
            last_offset = Some(record.offset);
            rebuilt.extend_from_slice(&record.bytes);
            check(&record.bytes);
        }
        let expected = input.strip_suffix(b"\n").unwrap_or(&input);
        assert_eq!(
            String::from_utf8_lossy(&rebuilt),
            String::from_utf8_lossy(expected)
        );
        assert_eq!(rebuilt, expected);
    }
}
