//! The records of a log file, and where the corpus's mainlogs are in the
//! repository's test data, for the tests that feed whole logs.

#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use exim_pilot_processor::parse::RecordReader;

/// The mainlog of a corpus scenario (`s01_core_all`, ...).
pub fn mainlog(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/corpus")
        .join(scenario)
        .join("mainlog")
}

/// Every record of the file at `path`, in order.
pub fn records(path: &Path) -> Vec<Vec<u8>> {
    let mut reader = RecordReader::new(BufReader::new(File::open(path).unwrap()));
    let mut all = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        all.push(record.bytes.to_vec());
    }
    all
}
