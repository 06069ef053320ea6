//! Random sequences of appends, rename rotations, copytruncates,
//! compressions, crashes and restarts, checked against the one rule that
//! matters: once duplicates are dropped by (file id, offset), every line
//! written arrives exactly once, in order, and no key ever names two
//! different lines.
//!
//! Rotations come at any time, with unread lines in the file or not, and
//! several may pass between two polls. One documented gap is avoided: the
//! running follower has opened a file, and read a complete line of its
//! content, before that content is rotated away (until then it has no
//! fingerprint to know the file by). While the follower is stopped,
//! anything goes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use exim_pilot_ingest::{FollowConfig, Follower};
use exim_pilot_schema::record::LogFile;

/// A small deterministic generator (xorshift64*), so a failure can be
/// replayed from its seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Shifts `mainlog.N` (plain or gzip) to `N+1`, oldest first.
fn shift_rotations(dir: &Path) {
    for n in (1..=30).rev() {
        for suffix in ["", ".gz"] {
            let from = dir.join(format!("mainlog.{n}{suffix}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("mainlog.{}{suffix}", n + 1))).unwrap();
            }
        }
    }
}

/// Prints the checkpoint and which lines each file holds (tracing only).
fn dump(dir: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let bytes = std::fs::read(&path).unwrap();
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
                &mut out,
            )
            .unwrap();
            out
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let numbers: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(" [2").nth(1).map(|r| &r[..4]))
            .collect();
        let meta = std::fs::metadata(&path).unwrap();
        eprintln!(
            "  {} ino {} {:?}",
            path.file_name().unwrap().to_string_lossy(),
            std::os::unix::fs::MetadataExt::ino(&meta),
            numbers
        );
        if path.extension().is_some_and(|e| e == "json") {
            eprintln!("{text}");
        }
    }
}

fn run(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mainlog");
    let checkpoint = dir.path().join("cp.json");
    let config = FollowConfig {
        backfill: true,
        ..fast()
    };
    let start = |checkpoint: &PathBuf| {
        let checkpoint = Some(checkpoint.clone());
        Follower::new(&log, LogFile::Main, "mx1", checkpoint, config.clone()).unwrap()
    };
    let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut follower = Some(start(&checkpoint));
    let mut written = 0;
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    let mut first_seen: Vec<String> = Vec::new();

    let mut deliver = |records: Vec<exim_pilot_schema::record::RawRecord>| {
        for record in records {
            let text = String::from_utf8(record.bytes).unwrap();
            let key = (record.origin.file_id, record.origin.offset);
            match seen.get(&key) {
                Some(earlier) => assert_eq!(earlier, &text, "seed {seed}: one key, two lines"),
                None => {
                    seen.insert(key, text.clone());
                    if !first_seen.contains(&text) {
                        first_seen.push(text);
                    }
                }
            }
        }
    };

    let trace = std::env::var_os("SOAK_TRACE").is_some();
    if trace {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("exim_pilot_ingest=debug")
            .with_test_writer()
            .try_init();
    }
    let mut fingerprinted = false;
    let mut opened = log.exists();
    let has_line = |log: &Path| std::fs::read(log).is_ok_and(|c| c.contains(&b'\n'));
    for _ in 0..80 {
        let step = random.below(12);
        if trace {
            eprintln!(
                "step {step} written {written} running {}",
                follower.is_some()
            );
            dump(dir.path());
        }
        if let (4 | 5, Some(running)) = (step, follower.as_mut()) {
            if (!fingerprinted && has_line(&log)) || !opened || random.below(2) == 0 {
                running.poll().unwrap();
                fingerprinted |= has_line(&log);
                opened |= log.exists();
            }
        }
        match step {
            0..=3 => {
                let count = 1 + random.below(4) as usize;
                append_lines(&log, written..written + count);
                written += count;
            }
            4 => {
                shift_rotations(dir.path());
                if log.exists() {
                    std::fs::rename(&log, dir.path().join("mainlog.1")).unwrap();
                    fingerprinted = false;
                    opened = false;
                    // Exim may still write one line to the old file before
                    // it reopens its log.
                    if random.below(2) == 0 {
                        append_lines(&dir.path().join("mainlog.1"), written..written + 1);
                        written += 1;
                    }
                }
            }
            5 => {
                if log.exists() {
                    shift_rotations(dir.path());
                    copytruncate(&log, &dir.path().join("mainlog.1"));
                    fingerprinted = false;
                }
            }
            6 => {
                let plain = dir.path().join("mainlog.2");
                if plain.exists() {
                    gzip(&plain, &dir.path().join("mainlog.2.gz"));
                    std::fs::remove_file(&plain).unwrap();
                }
            }
            7 => {
                // A crash: records handed out and not acknowledged are lost
                // with the process, and come again after the restart.
                if let Some(mut running) = follower.take() {
                    running.poll().unwrap();
                    if let Some(batch) = running.take_batch(1 + random.below(3) as usize) {
                        deliver(batch.records);
                    }
                }
            }
            11 => {
                // A line seen half-written. The cut is past the timestamp:
                // a truncation is only told from growth by the bytes
                // already read while the first line is unfinished.
                let text = line(written) + "\n";
                let cut = 40 + random.below(text.len() as u64 - 41) as usize;
                let (head, tail) = text.split_at(cut);
                append(&log, head);
                if let Some(running) = follower.as_mut() {
                    running.poll().unwrap();
                    fingerprinted |= has_line(&log);
                    opened |= log.exists();
                }
                append(&log, tail);
                written += 1;
            }
            8 => {
                if trace && follower.is_none() {
                    dump(dir.path());
                }
                if follower.is_none() {
                    follower = Some(start(&checkpoint));
                    fingerprinted = false;
                    opened = log.exists();
                }
            }
            _ => {
                if let Some(running) = follower.as_mut() {
                    running.poll().unwrap();
                    fingerprinted |= has_line(&log);
                    opened |= log.exists();
                    while let Some(batch) = running.take_batch(1 + random.below(5) as usize) {
                        let ack = batch.ack();
                        deliver(batch.records);
                        running.ack(&ack).unwrap();
                    }
                }
            }
        }
    }
    let mut follower = follower.unwrap_or_else(|| start(&checkpoint));
    deliver(pump(&mut follower, true));
    assert_eq!(first_seen, lines(0..written), "seed {seed}");
}

#[test]
fn random_rotations_and_crashes_lose_and_double_nothing() {
    // SOAK_SEED replays one seed; SOAK_SEEDS runs that many for a longer
    // soak.
    let seeds = match (std::env::var("SOAK_SEED"), std::env::var("SOAK_SEEDS")) {
        (Ok(seed), _) => {
            let seed = seed.parse().unwrap();
            seed..seed + 1
        }
        (_, Ok(count)) => 0..count.parse().unwrap(),
        _ => 0..20,
    };
    for seed in seeds {
        run(seed);
    }
}
