//! The processing pipeline: raw records in, a store batch out.
//!
//! [`Pipeline`] is what `exim-pilot standalone`, `exim-pilot import` and
//! the fleet processor run for every batch of raw records: parse each
//! record, feed mainlog events to the [`Correlator`], classify rejections,
//! and hand the store one [`Batch`] with the raw records, the lifecycles
//! that changed, the rejections and, when asked, the pipeline's own state.
//!
//! # Nothing lost, nothing doubled
//!
//! Raw records and rejections are stored under their origin (host, file
//! identity, offset), so storing one twice changes nothing, and a
//! lifecycle is replaced by its newer version. The correlator is different:
//! applying a deferral twice would count two attempts. The pipeline
//! therefore remembers, per (host, file identity), the offset of the last
//! record it applied, and skips records at or before it. That memory is
//! part of [`PipelineState`], which is saved in the same store transaction
//! as the data it describes. After a crash, whatever the tailer reads
//! again is either skipped (already in the saved state) or applied for the
//! first time, whichever order the store commit and the tailer checkpoint
//! happened in.
//!
//! Through syslog, Exim writes every rejection twice (see
//! [`SyslogCopies`]): the second copy is stored as a raw record but makes
//! no rejection. The rejections waiting for their copy are part of the
//! saved state, so a copy read right after a restart, its original
//! before, is still known as a copy. So is where each log stands in time:
//! in its years when the year of its syslog stamps was given
//! ([`SyslogYears`](crate::parse::SyslogYears)), and in its local time
//! when that is the machine's own zone, whose clock goes back once a year
//! ([`WallClock`](crate::parse::WallClock)); see [`LogClock`].

use std::collections::HashMap;

use exim_pilot_schema::event::{Event, EventKind};
use exim_pilot_schema::{LogFile, RawRecord, RejectRecord, Zone};
use exim_pilot_store::{Batch, Blob, StoredRecord};
use serde::{Deserialize, Serialize};

use crate::classify::{classify_auth_failure, classify_reject};
use crate::correlate::{Correlator, CorrelatorConfig, CorrelatorState, StateError};
use crate::parse::{parse_record_with, LogClock, ParseOptions, SyslogCopies};

/// The blob name the pipeline state is saved under.
pub const STATE_BLOB: &str = "pipeline-state";

/// Version of [`PipelineState`]'s layout.
const STATE_VERSION: u32 = 1;

/// Where the pipeline stands in one file: the offset of the last record it
/// applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPosition {
    /// The mail server.
    pub host: String,
    /// The file identity the tailer gave the records.
    pub file_id: u64,
    /// Offset of the last applied record.
    pub offset: u64,
}

/// Where one log of one mail server stands in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTimes {
    /// The mail server.
    pub host: String,
    /// Which of its logs.
    pub log: LogFile,
    /// Where it stands.
    #[serde(flatten)]
    pub clock: LogClock,
}

/// Everything a [`Pipeline`] must remember across restarts.
///
/// The parts added after the first layout are optional: a state saved
/// without them reads as one in which they are empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineState {
    version: u32,
    /// The correlator's messages in flight.
    pub correlator: CorrelatorState,
    /// The last record applied per file, in (host, file) order.
    pub applied: Vec<AppliedPosition>,
    /// Rejections read through syslog still waiting for their copy.
    #[serde(default, skip_serializing_if = "SyslogCopies::is_empty")]
    pub syslog_copies: SyslogCopies,
    /// Where each log stands in time, in (host, log) order; kept only when
    /// the year of syslog stamps was given or times are local.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_times: Vec<LogTimes>,
}

impl PipelineState {
    /// The state as saved, read back by [`Pipeline::restore`].
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data structures to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why a saved pipeline state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state blob is not valid JSON of the expected shape.
    #[error(
        "saved pipeline state is unreadable ({0}); move the data directory aside to start over"
    )]
    Decode(#[from] serde_json::Error),
    /// The state was written by an incompatible version.
    #[error("saved pipeline state has version {found}, this build reads version {expected}")]
    Version {
        /// Found.
        found: u32,
        /// Expected.
        expected: u32,
    },
    /// The correlator's part is inconsistent.
    #[error(transparent)]
    Correlator(#[from] StateError),
}

/// Counts of what the pipeline has processed since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PipelineCounts {
    /// Records received.
    pub records: u64,
    /// Records skipped because the saved state already covered them.
    pub skipped: u64,
    /// Records the parser could not classify.
    pub unparsed: u64,
    /// Rejections (and failed authentications) found.
    pub rejects: u64,
    /// Second syslog copies of rejections, stored but not counted again.
    pub syslog_copies: u64,
    /// Lifecycle versions handed to the store.
    pub lifecycle_updates: u64,
}

/// Parses, correlates and batches; see the module documentation.
pub struct Pipeline {
    correlator: Correlator,
    zone: Zone,
    options: ParseOptions,
    applied: HashMap<(String, u64), u64>,
    copies: SyslogCopies,
    /// Per mail server, a clock for each of its logs (by [`LogFile`]).
    clocks: HashMap<String, [LogClock; 3]>,
    counts: PipelineCounts,
}

impl Pipeline {
    /// A fresh pipeline reading naive log times in `zone`.
    pub fn new(zone: Zone, config: CorrelatorConfig) -> Pipeline {
        Pipeline {
            correlator: Correlator::with_config(zone, config),
            zone,
            options: ParseOptions::default(),
            applied: HashMap::new(),
            copies: SyslogCopies::new(),
            clocks: HashMap::new(),
            counts: PipelineCounts::default(),
        }
    }

    /// A pipeline that continues from a state saved by [`Pipeline::save`].
    pub fn restore(zone: Zone, saved: &[u8]) -> Result<Pipeline, PipelineError> {
        let state: PipelineState = serde_json::from_slice(saved)?;
        if state.version != STATE_VERSION {
            return Err(PipelineError::Version {
                found: state.version,
                expected: STATE_VERSION,
            });
        }
        let applied = state
            .applied
            .into_iter()
            .map(|p| ((p.host, p.file_id), p.offset))
            .collect();
        let mut clocks: HashMap<String, [LogClock; 3]> = HashMap::new();
        for t in state.log_times {
            clocks.entry(t.host).or_default()[t.log as usize] = t.clock;
        }
        Ok(Pipeline {
            correlator: Correlator::restore(state.correlator)?,
            zone,
            options: ParseOptions::default(),
            applied,
            copies: state.syslog_copies,
            clocks,
            counts: PipelineCounts::default(),
        })
    }

    /// Sets the parse options (the year of syslog stamps).
    pub fn with_parse_options(mut self, options: ParseOptions) -> Pipeline {
        self.options = options;
        self
    }

    /// The state to save, serialised.
    pub fn save(&self) -> Vec<u8> {
        self.state().encode()
    }

    /// A copy of the state to save, to be serialised with
    /// [`PipelineState::encode`] (possibly elsewhere: the copy is cheaper
    /// than the text, and independent of the pipeline once taken).
    pub fn state(&self) -> PipelineState {
        let mut applied: Vec<AppliedPosition> = self
            .applied
            .iter()
            .map(|((host, file_id), offset)| AppliedPosition {
                host: host.clone(),
                file_id: *file_id,
                offset: *offset,
            })
            .collect();
        applied.sort_by(|a, b| (&a.host, a.file_id).cmp(&(&b.host, b.file_id)));
        let logs = [LogFile::Main, LogFile::Reject, LogFile::Panic];
        let mut log_times: Vec<LogTimes> = self
            .clocks
            .iter()
            .flat_map(|(host, clocks)| {
                logs.iter()
                    .filter(|log| !clocks[**log as usize].is_unused())
                    .map(|log| LogTimes {
                        host: host.clone(),
                        log: *log,
                        clock: clocks[*log as usize],
                    })
            })
            .collect();
        log_times.sort_by(|a, b| (&a.host, a.log).cmp(&(&b.host, b.log)));
        PipelineState {
            version: STATE_VERSION,
            correlator: self.correlator.save(),
            applied,
            syslog_copies: self.copies.clone(),
            log_times,
        }
    }

    /// What has been processed so far.
    pub fn counts(&self) -> PipelineCounts {
        self.counts
    }

    /// The correlator, for reading lifecycles still in memory.
    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// Processes raw records into a batch for the store. With `save_state`
    /// the batch also carries the pipeline state as of its last record, so
    /// the store commits both in one transaction.
    pub fn process(&mut self, records: Vec<RawRecord>, save_state: bool) -> Batch {
        let mut batch = Batch::default();
        batch.records.reserve(records.len());

        for raw in records {
            self.counts.records += 1;
            if !self.first_application(&raw) {
                // The saved state covers it, and the state is committed
                // with (or after) the records it covers: already stored.
                self.counts.skipped += 1;
                continue;
            }
            let stored = self.apply(raw, &mut batch.rejects);
            batch.records.push(stored);
        }

        batch.lifecycles = self.correlator.take_changed();
        self.counts.lifecycle_updates += batch.lifecycles.len() as u64;
        if save_state {
            batch.blobs.push(Blob {
                name: STATE_BLOB.to_string(),
                data: self.save(),
            });
        }
        batch
    }

    /// Records the record's position and says whether it is new.
    fn first_application(&mut self, raw: &RawRecord) -> bool {
        let origin = &raw.origin;
        let key = (origin.host.clone(), origin.file_id);
        match self.applied.get_mut(&key) {
            Some(last) if *last >= origin.offset => false,
            Some(last) => {
                *last = origin.offset;
                true
            }
            None => {
                self.applied.insert(key, origin.offset);
                true
            }
        }
    }

    /// Parses one record, applies it, and returns its stored form.
    fn apply(&mut self, raw: RawRecord, rejects: &mut Vec<RejectRecord>) -> StoredRecord {
        let mut event = parse_record_with(&self.options, raw.origin.log, &raw.bytes);
        if self.options.syslog_year.is_some() || self.zone == Zone::Local {
            let host = &raw.origin.host;
            let clocks = match self.clocks.get_mut(host) {
                Some(clocks) => clocks,
                None => self.clocks.entry(host.clone()).or_default(),
            };
            let clock = &mut clocks[raw.origin.log as usize];
            clock.settle_event(&self.options, self.zone, &mut event);
        }
        let at = event.time.map(|t| t.resolve(self.zone));
        let kind = event.kind.name();
        if matches!(event.kind, EventKind::Unparsed { .. }) {
            self.counts.unparsed += 1;
        }

        // The second syslog copy of a rejection is stored, not counted.
        let copy = raw.origin.log == LogFile::Main && self.copies.is_copy(&raw.bytes, &event);
        if copy {
            self.counts.syslog_copies += 1;
        } else if raw.origin.log == LogFile::Main {
            self.correlator.apply(&raw.origin.host, &event);
            if let Some(reject) = reject_record(&raw, &event, at) {
                self.counts.rejects += 1;
                rejects.push(reject);
            }
        }

        let id = event.id;
        StoredRecord::new(raw, at, id, kind)
    }
}

/// The stored form of a rejection or failed authentication. Only mainlog
/// events are used: the rejectlog repeats each of them with the headers.
fn reject_record(
    raw: &RawRecord,
    event: &Event<'_>,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<RejectRecord> {
    let at = at?;
    match &event.kind {
        EventKind::Reject(r) => Some(RejectRecord::from_event(
            raw.origin.clone(),
            at,
            event.id,
            r,
            classify_reject(r),
        )),
        EventKind::AuthFailure(f) => Some(RejectRecord::from_auth_failure(
            raw.origin.clone(),
            at,
            f,
            classify_auth_failure(f),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exim_pilot_schema::RecordOrigin;

    fn raw(offset: u64, line: &str) -> RawRecord {
        RawRecord {
            origin: RecordOrigin {
                host: "mx1".into(),
                log: LogFile::Main,
                file_id: 7,
                offset,
            },
            read_at_ms: 0,
            bytes: line.as_bytes().to_vec(),
        }
    }

    const ARRIVAL: &str = "2024-07-05 09:14:02 1sPf10-00000000Aid-00JP <= alice@example.net \
        H=mx1.example.org [192.0.2.10] P=esmtps S=2480 id=note-1@example.net";
    const DEFERRAL: &str = "2024-07-05 09:14:03 1sPf10-00000000Aid-00JP == bob@example.com \
        R=dnslookup T=remote_smtp defer (-44) H=mx.example.com [198.51.100.7]: SMTP error from \
        remote mail server after RCPT TO:<bob@example.com>: 451 4.7.1 Greylisted";
    const REJECT: &str = "2024-07-05 09:14:04 H=(qwXz81) [192.0.2.145] \
        F=<ivan@example.com> rejected RCPT <judy@example.org>: relay not permitted";

    #[test]
    fn records_replayed_after_a_restart_are_not_applied_twice() {
        let mut first = Pipeline::new(Zone::Utc, CorrelatorConfig::keep_all());
        let batch = first.process(vec![raw(0, ARRIVAL), raw(200, DEFERRAL)], true);
        let saved = &batch.blobs[0].data;

        // The tailer's checkpoint lagged: it hands out both records again.
        let mut second = Pipeline::restore(Zone::Utc, saved).unwrap();
        let again = second.process(vec![raw(0, ARRIVAL), raw(200, DEFERRAL)], false);
        assert_eq!(second.counts().skipped, 2);
        assert!(again.lifecycles.is_empty());

        let lc = second.correlator().lifecycles().next().unwrap().clone();
        assert_eq!(lc.recipients[0].attempts, 1);
    }

    #[test]
    fn rejections_come_from_the_mainlog_only() {
        let mut p = Pipeline::new(Zone::Utc, CorrelatorConfig::keep_all());
        let mut from_reject_log = raw(0, REJECT);
        from_reject_log.origin.log = LogFile::Reject;
        from_reject_log.origin.file_id = 8;
        let batch = p.process(vec![raw(400, REJECT), from_reject_log], false);
        assert_eq!(batch.rejects.len(), 1);
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.records[0].event_kind, "reject");
    }

    #[test]
    fn a_rejection_exim_wrote_twice_to_syslog_is_counted_once() {
        let mut p = Pipeline::new(Zone::Utc, CorrelatorConfig::keep_all());
        let line = format!("Jul  5 09:14:04 mx1 exim[4321]: {REJECT}");
        let copy = format!("Jul  5 09:14:04 mx1 exim[4321]: [1\\2] {REJECT}");
        let headers = "Jul  5 09:14:04 mx1 exim[4321]: [2\\2] Envelope-from: <ivan@example.com>";
        let records = vec![raw(0, &line), raw(300, &copy), raw(600, headers)];
        let batch = p.process(records, false);
        assert_eq!(batch.rejects.len(), 1);
        assert_eq!(batch.records.len(), 3);
        assert_eq!(p.counts().syslog_copies, 1);

        // A second, real rejection later in the same second stays one.
        let batch = p.process(vec![raw(900, &line), raw(1200, &line)], false);
        assert_eq!(batch.rejects.len(), 1);
    }

    #[test]
    fn a_syslog_copy_read_right_after_a_restart_is_still_a_copy() {
        let line = format!("Jul  5 09:14:04 mx1 exim[4321]: {REJECT}");
        let copy = format!("Jul  5 09:14:04 mx1 exim[4321]: [1\\2] {REJECT}");
        let mut first = Pipeline::new(Zone::Utc, CorrelatorConfig::keep_all());
        let batch = first.process(vec![raw(0, &line)], true);
        assert_eq!(batch.rejects.len(), 1);

        let mut second = Pipeline::restore(Zone::Utc, &batch.blobs[0].data).unwrap();
        let batch = second.process(vec![raw(300, &copy)], false);
        assert!(batch.rejects.is_empty(), "{:?}", batch.rejects);
        assert_eq!(second.counts().syslog_copies, 1);
    }

    #[test]
    fn a_state_saved_before_syslog_copies_were_kept_restores() {
        let line = format!("Jul  5 09:14:04 mx1 exim[4321]: {REJECT}");
        let mut first = Pipeline::new(Zone::Utc, CorrelatorConfig::keep_all());
        let batch = first.process(vec![raw(0, ARRIVAL), raw(200, &line)], true);
        let mut saved: serde_json::Value = serde_json::from_slice(&batch.blobs[0].data).unwrap();
        assert!(saved["syslog_copies"].is_array(), "{saved}");

        // The first layout had neither part.
        let fields = saved.as_object_mut().unwrap();
        fields.remove("syslog_copies");
        fields.remove("log_times");
        let old = serde_json::to_vec(&saved).unwrap();
        let mut second = Pipeline::restore(Zone::Utc, &old).unwrap();
        assert_eq!(second.state().correlator, first.state().correlator);

        // Nothing waits for a copy: the next rejection counts.
        let batch = second.process(vec![raw(400, &line)], false);
        assert_eq!(batch.rejects.len(), 1);
    }

    #[test]
    fn a_syslog_log_given_its_year_passes_new_year_across_a_restart() {
        let options = ParseOptions {
            syslog_year: Some(2025),
        };
        let eve = "Dec 31 23:59:58 mx1 exim[7]: 1sPf10-00000000Aid-00JP Completed";
        let day = "Jan  1 00:00:01 mx1 exim[8]: 1sPf10-00000000Aid-00JP Completed";
        let mut first =
            Pipeline::new(Zone::Utc, CorrelatorConfig::keep_all()).with_parse_options(options);
        let batch = first.process(vec![raw(0, eve)], true);
        assert_eq!(
            batch.records[0].at.unwrap().to_rfc3339(),
            "2025-12-31T23:59:58+00:00"
        );

        let mut second = Pipeline::restore(Zone::Utc, &batch.blobs[0].data)
            .unwrap()
            .with_parse_options(options);
        let batch = second.process(vec![raw(100, day)], true);
        assert_eq!(
            batch.records[0].at.unwrap().to_rfc3339(),
            "2026-01-01T00:00:01+00:00"
        );
    }
}
