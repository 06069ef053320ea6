//! One message under correlation: its [`Lifecycle`] and the bookkeeping
//! that decides how each new record changes it.
//!
//! The bookkeeping ([`Track`]) is what the lifecycle alone cannot say:
//! which delivery run the last result lines belonged to, host problems not
//! yet attached to an attempt, failures not yet reported by a bounce, and
//! which recipients are only known from the arrival's `for` list. It is
//! serialisable so that a checkpoint restores correlation exactly.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use exim_pilot_schema::event::{Actor, Arrival, Delivery, HostAddr, HostProblem};
use exim_pilot_schema::lifecycle::{
    Attempt, AttemptResult, Client, Lifecycle, MessageNote, MessageState, Origin, Outcome,
    Recipient,
};
use exim_pilot_schema::{MessageId, ReasonClass};
use serde::{Deserialize, Serialize};

use super::address::{final_address, same_address};
use crate::classify::reply_in_text;

/// Recipient lists longer than this get a lookup index.
const INDEX_FROM: usize = 16;

/// Where a result line sits among the message's delivery runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct RunMark {
    /// The pid of the process that logged the line, when logged.
    pub pid: Option<u32>,
    /// The host's queue-run epoch: how many `Start queue run`/`End queue
    /// run` lines the host had logged by then.
    pub epoch: u64,
    /// How many run boundaries (arrival, freeze, thaw, skip, admin action,
    /// completion) the message had seen by then.
    pub boundary: u32,
}

impl RunMark {
    /// Both lines belong to the same delivery run of the message: nothing
    /// that separates runs happened in between, and the pids agree (or,
    /// without pids, no queue run started or ended).
    fn same_run(&self, later: &RunMark) -> bool {
        if self.boundary != later.boundary {
            return false;
        }
        match (self.pid, later.pid) {
            (Some(a), Some(b)) => a == b,
            _ => self.epoch == later.epoch,
        }
    }
}

/// Whether a new result line for an address continues the address's last
/// attempt instead of starting a new one. With pids, a run is one pid.
/// Without pids, an address gets one result per run except a deferral
/// followed by `** ...: retry timeout exceeded`, so only that pair is
/// joined.
fn continues_attempt(
    prev: &RunMark,
    prev_result: AttemptResult,
    next: &RunMark,
    next_result: AttemptResult,
) -> bool {
    if !prev.same_run(next) {
        return false;
    }
    match (prev.pid, next.pid) {
        (Some(_), Some(_)) => true,
        _ => prev_result == AttemptResult::Defer && next_result == AttemptResult::Fail,
    }
}

/// Bookkeeping for one recipient, parallel to `Lifecycle::recipients`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RecipientTrack {
    /// The run of the recipient's last result line.
    pub last_run: Option<RunMark>,
    /// Known only from the arrival's `for` list (or an admin's `-Mar`):
    /// the first result line naming it as original takes the entry over.
    pub envelope_only: bool,
}

/// Bookkeeping for one message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Track {
    /// Changed since the last `take_changed`.
    pub dirty: bool,
    /// `Completed` was logged.
    pub completed: bool,
    /// `removed by` was logged.
    pub removed: bool,
    /// Run boundaries seen so far (see [`RunMark::boundary`]).
    pub boundary: u32,
    /// The run of the message's last result line.
    pub last_result: Option<RunMark>,
    /// Host problems logged since the last result line.
    pub pending_problems: Vec<String>,
    /// Host problems of the current run, attached to its attempts.
    pub run_problems: Vec<String>,
    /// Recipients that failed in the current run (a bounce message that
    /// is then frozen keeps them on the queue).
    pub failed_in_run: Vec<u32>,
    /// Failures (and cancellations) not yet reported by a bounce: decides
    /// whether a `<= <>` naming this message is a bounce or a warning
    /// when no subject says which.
    pub unreported_failures: u32,
    /// One entry per recipient.
    pub recipients: Vec<RecipientTrack>,
    /// Lowercased address or original to recipient positions, for long
    /// recipient lists; rebuilt on demand.
    #[serde(skip)]
    pub index: Option<HashMap<String, Vec<u32>>>,
}

/// How much of what the records say a lifecycle keeps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Detail {
    /// Everything.
    Full,
    /// Only what a report counts (see `Correlator::omit_details`).
    Counted,
}

/// A lifecycle and its bookkeeping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tracked {
    pub lc: Lifecycle,
    pub track: Track,
}

/// The result of one delivery line.
pub(crate) struct ResultLine<'e, 'a> {
    pub result: AttemptResult,
    pub mark: &'static str,
    pub delivery: &'e Delivery<'a>,
    pub at: DateTime<Utc>,
    pub run: RunMark,
    pub reason: Option<ReasonClass>,
    pub detail: Detail,
}

impl Tracked {
    /// A message first seen now, without its arrival (so far).
    pub fn new(host: &str, id: MessageId) -> Tracked {
        Tracked {
            lc: Lifecycle {
                host: host.to_string(),
                id,
                sender: None,
                size: None,
                received_at: None,
                state: MessageState::InFlight,
                incomplete_start: true,
                in_flight: true,
                origin: Origin::Unknown,
                first_seen: None,
                last_seen: None,
                completed_at: None,
                queue_time_ms: None,
                protocol: None,
                client: None,
                interface: None,
                user: None,
                authenticator: None,
                auth_id: None,
                tls_cipher: None,
                subject: None,
                message_id_header: None,
                envelope_recipients: Vec::new(),
                parent_id: None,
                generated: Vec::new(),
                frozen: false,
                recipients: Vec::new(),
                notes: Vec::new(),
                records: 0,
            },
            track: Track::default(),
        }
    }

    /// Counts one more record naming the message.
    pub fn touch(&mut self, at: DateTime<Utc>) {
        let lc = &mut self.lc;
        lc.records += 1;
        if lc.first_seen.is_none_or(|t| at < t) {
            lc.first_seen = Some(at);
        }
        if lc.last_seen.is_none_or(|t| at > t) {
            lc.last_seen = Some(at);
        }
        self.track.dirty = true;
    }

    /// Something happened that separates delivery runs.
    fn boundary(&mut self) {
        self.track.boundary += 1;
    }

    /// The run a line logged now by `pid` belongs to.
    pub fn run_mark(&self, pid: Option<u32>, epoch: u64) -> RunMark {
        RunMark {
            pid,
            epoch,
            boundary: self.track.boundary,
        }
    }

    fn note(&mut self, at: DateTime<Utc>, what: &str, by: Option<&str>, text: Option<&str>) {
        push_tight(
            &mut self.lc.notes,
            MessageNote {
                at,
                what: what.to_string(),
                by: by.map(str::to_string),
                text: text.map(str::to_string),
            },
        );
    }

    fn note_actor(&mut self, at: DateTime<Utc>, what: &str, actor: &Actor<'_>) {
        self.note(at, what, actor.by.as_deref(), actor.reason.as_deref());
    }

    /// `<=` (or `(=`): fills in everything the arrival line says.
    pub fn on_arrival(
        &mut self,
        a: &Arrival<'_>,
        at: DateTime<Utc>,
        fake_reject: bool,
        detail: Detail,
    ) {
        let lc = &mut self.lc;
        lc.incomplete_start = false;
        lc.sender = Some(a.sender.to_string());
        lc.size = a.size;
        lc.received_at = Some(at);
        lc.parent_id = a.bounce_of;
        lc.origin = origin_of(a);
        match detail {
            Detail::Full => self.arrival_details(a),
            Detail::Counted => self.lc.client = a.host.as_ref().map(client_ip),
        }

        self.lc.recipients.reserve_exact(a.recipients.len());
        self.track.recipients.reserve_exact(a.recipients.len());
        for r in &a.recipients {
            self.add_envelope_recipient(r);
        }
        if fake_reject {
            self.note(at, "fake_reject", None, None);
        }
        self.boundary();
        self.settle(at);
    }

    /// What the arrival line says beyond what reports count.
    fn arrival_details(&mut self, a: &Arrival<'_>) {
        let lc = &mut self.lc;
        lc.protocol = a.protocol.as_deref().map(str::to_string);
        lc.client = a.host.as_ref().map(client);
        lc.interface = a.interface.as_ref().map(|i| {
            let mut s = String::with_capacity(i.ip.len() + 8);
            push_bracketed(&mut s, &i.ip, i.port);
            s
        });
        lc.user = a.user.as_deref().map(str::to_string);
        lc.authenticator = a.authenticator.as_deref().map(str::to_string);
        lc.auth_id = a.auth_id.as_deref().map(str::to_string);
        lc.tls_cipher = a.tls.cipher.as_deref().map(str::to_string);
        lc.subject = a.subject.as_deref().map(str::to_string);
        lc.message_id_header = a.message_id_header.as_deref().map(str::to_string);
        lc.envelope_recipients = a.recipients.iter().map(|r| r.to_string()).collect();
    }

    /// Adds a recipient known from the envelope unless a final address
    /// already came from it (a cutthrough delivery is logged before `<=`).
    fn add_envelope_recipient(&mut self, address: &str) {
        if self.find_by_envelope(address).is_some() {
            return;
        }
        let outcome = if self.lc.frozen {
            Outcome::Frozen
        } else {
            Outcome::Pending
        };
        self.push_recipient(
            Recipient {
                address: address.to_string(),
                outcome,
                ..Recipient::default()
            },
            true,
        );
    }

    /// A delivery result line: `=>`, `->`, `>>`, `*>`, `==` or `**`.
    pub fn on_result(&mut self, line: ResultLine<'_, '_>) {
        let d = line.delivery;
        if is_discard_pseudo_delivery(d) {
            let text = d.comment.as_deref();
            self.note(line.at, "discarded_recipients", None, text);
            return;
        }
        let (address, original) = final_address(&d.address, d.original.as_deref());
        let idx = self.recipient_for(address, original, d);

        // Is this the next line of the same run, and of the same attempt?
        let prev = self.track.recipients[idx].last_run;
        let prev_result = self.lc.recipients[idx].history.last().map(|a| a.result);
        let continues = match (prev, prev_result) {
            (Some(p), Some(r)) => continues_attempt(&p, r, &line.run, line.result),
            _ => false,
        };
        let repeats_in_run = !continues && prev.is_some_and(|p| p.same_run(&line.run));
        let new_run = repeats_in_run
            || self
                .track
                .last_result
                .is_none_or(|p| !p.same_run(&line.run));
        let pending = std::mem::take(&mut self.track.pending_problems);
        if new_run {
            self.track.run_problems = pending;
            self.track.failed_in_run.clear();
        } else {
            self.track.run_problems.extend(pending);
        }
        self.track.last_result = Some(line.run);
        self.track.recipients[idx].last_run = Some(line.run);

        let mut attempt = build_attempt(&line);
        attempt.host_problems = self.track.run_problems.clone();
        let r = &mut self.lc.recipients[idx];
        let (code, text) = (attempt.code, attempt.text.clone());
        match r.history.last_mut() {
            Some(last) if continues => {
                merge_attempt(last, attempt);
                r.last_code = code.or(r.last_code);
                r.last_text = text.or(r.last_text.take());
            }
            _ => {
                push_tight(&mut r.history, attempt);
                r.attempts += 1;
                r.last_code = code;
                r.last_text = text;
            }
        }
        if line.reason.is_some() {
            r.reason = line.reason;
        }
        self.apply_result_outcome(idx, line.result, line.at);
    }

    fn apply_result_outcome(&mut self, idx: usize, result: AttemptResult, at: DateTime<Utc>) {
        let frozen = self.lc.frozen;
        let r = &mut self.lc.recipients[idx];
        if r.outcome.is_final() {
            return;
        }
        match result {
            AttemptResult::Ok => {
                r.outcome = Outcome::Delivered;
                r.final_at = Some(at);
            }
            AttemptResult::Fail => {
                r.outcome = Outcome::Bounced;
                r.final_at = Some(at);
                self.track.failed_in_run.push(idx as u32);
                self.track.unreported_failures += 1;
            }
            AttemptResult::Defer => {
                r.outcome = if frozen {
                    Outcome::Frozen
                } else {
                    Outcome::Deferred
                };
            }
        }
    }

    /// The recipient a result line is about: an existing final address, an
    /// envelope recipient it was expanded from, or a new entry.
    fn recipient_for(
        &mut self,
        address: String,
        original: Option<String>,
        d: &Delivery<'_>,
    ) -> usize {
        if let Some(idx) = self.find_final(&address, original.as_deref()) {
            return idx;
        }
        let top = original.as_deref().unwrap_or(&address);
        if let Some(idx) = self.find_claimable(top) {
            self.track.recipients[idx].envelope_only = false;
            let r = &mut self.lc.recipients[idx];
            r.address = address;
            r.original = original;
            r.via = d.parents.iter().map(|p| p.to_string()).collect();
            self.index_insert(idx);
            return idx;
        }
        self.push_recipient(
            Recipient {
                address,
                original,
                via: d.parents.iter().map(|p| p.to_string()).collect(),
                ..Recipient::default()
            },
            false,
        )
    }

    fn push_recipient(&mut self, r: Recipient, envelope_only: bool) -> usize {
        push_tight(&mut self.lc.recipients, r);
        push_tight(
            &mut self.track.recipients,
            RecipientTrack {
                last_run: None,
                envelope_only,
            },
        );
        let idx = self.lc.recipients.len() - 1;
        self.index_insert(idx);
        idx
    }

    /// The first recipient that `pred` accepts among those whose address
    /// or original may equal `key`: all of them for short lists, the
    /// indexed ones for long lists (so big messages are not scanned once
    /// per result line).
    fn find_where(
        &mut self,
        key: &str,
        pred: impl Fn(&Recipient, &RecipientTrack) -> bool,
    ) -> Option<usize> {
        let n = self.lc.recipients.len();
        if n <= INDEX_FROM {
            return (0..n).find(|&i| pred(&self.lc.recipients[i], &self.track.recipients[i]));
        }
        if self.track.index.is_none() {
            self.rebuild_index();
        }
        let list = self.track.index.as_ref()?.get(&key.to_ascii_lowercase())?;
        list.iter()
            .map(|&i| i as usize)
            .find(|&i| pred(&self.lc.recipients[i], &self.track.recipients[i]))
    }

    fn rebuild_index(&mut self) {
        let mut index: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, r) in self.lc.recipients.iter().enumerate() {
            index
                .entry(r.address.to_ascii_lowercase())
                .or_default()
                .push(i as u32);
            if let Some(o) = &r.original {
                index
                    .entry(o.to_ascii_lowercase())
                    .or_default()
                    .push(i as u32);
            }
        }
        self.track.index = Some(index);
    }

    fn index_insert(&mut self, idx: usize) {
        if self.lc.recipients.len() <= INDEX_FROM {
            return;
        }
        let Some(index) = self.track.index.as_mut() else {
            return self.rebuild_index();
        };
        let r = &self.lc.recipients[idx];
        let mut keys = vec![r.address.to_ascii_lowercase()];
        if let Some(o) = &r.original {
            keys.push(o.to_ascii_lowercase());
        }
        for key in keys {
            let list = index.entry(key).or_default();
            if !list.contains(&(idx as u32)) {
                list.push(idx as u32);
            }
        }
    }

    /// The recipient with exactly this final address and original.
    fn find_final(&mut self, address: &str, original: Option<&str>) -> Option<usize> {
        self.find_where(address, |r, t| {
            !t.envelope_only
                && same_address(&r.address, address)
                && match (&r.original, original) {
                    (Some(a), Some(b)) => same_address(a, b),
                    (None, None) => true,
                    _ => false,
                }
        })
    }

    /// An entry that a final address coming from `top` takes over: the
    /// envelope recipient `top` itself when it is only known from the
    /// arrival, or when its own result lines so far were deferrals (a
    /// router deferred `top` before expanding it to final addresses).
    fn find_claimable(&mut self, top: &str) -> Option<usize> {
        self.find_where(top, |r, t| {
            let open = t.envelope_only || (r.original.is_none() && !r.outcome.is_final());
            open && same_address(&r.address, top)
        })
    }

    /// Any recipient that came from the envelope address `top`: named as
    /// original, or as address when it has no original.
    fn find_by_envelope(&mut self, top: &str) -> Option<usize> {
        self.find_where(top, |r, _| came_from(r, top))
    }

    /// Every recipient that came from the envelope address `top`.
    fn envelope_matches(&self, top: &str) -> Vec<usize> {
        (0..self.lc.recipients.len())
            .filter(|&i| came_from(&self.lc.recipients[i], top))
            .collect()
    }

    /// `Completed`: the message left the queue. Envelope recipients that no
    /// result line ever named had no final address (a system filter that
    /// discarded them, for one): they are dropped from `recipients` and
    /// noted as `unresolved_recipient`.
    pub fn on_completed(&mut self, at: DateTime<Utc>, queue_time_ms: Option<u64>) {
        self.drop_unresolved(at);
        self.track.completed = true;
        self.lc.frozen = false;
        self.lc.completed_at = Some(at);
        self.lc.queue_time_ms = queue_time_ms.or_else(|| self.queue_time_until(at));
        self.boundary();
        self.settle(at);
        self.release_run_memory();
    }

    fn drop_unresolved(&mut self, at: DateTime<Utc>) {
        let unresolved = |r: &Recipient, t: &RecipientTrack| {
            t.envelope_only && r.attempts == 0 && !r.outcome.is_final()
        };
        let any = (0..self.lc.recipients.len())
            .any(|i| unresolved(&self.lc.recipients[i], &self.track.recipients[i]));
        if !any {
            return;
        }
        let recipients = std::mem::take(&mut self.lc.recipients);
        let tracks = std::mem::take(&mut self.track.recipients);
        let mut dropped = Vec::new();
        for (r, t) in recipients.into_iter().zip(tracks) {
            if unresolved(&r, &t) {
                dropped.push(r.address);
            } else {
                self.lc.recipients.push(r);
                self.track.recipients.push(t);
            }
        }
        self.track.index = None;
        self.track.failed_in_run.clear();
        for address in dropped {
            self.note(at, "unresolved_recipient", None, Some(&address));
        }
    }

    fn queue_time_until(&self, at: DateTime<Utc>) -> Option<u64> {
        let received = self.lc.received_at?;
        u64::try_from((at - received).num_milliseconds()).ok()
    }

    /// The message was frozen. A bounce that failed is frozen instead of
    /// bounced again: its failed addresses stay on the queue.
    pub fn on_frozen(&mut self, actor: &Actor<'_>, at: DateTime<Utc>) {
        let error_message = self.lc.sender.as_deref() == Some("")
            || actor
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("error message"));
        let failed_this_run = self
            .track
            .last_result
            .is_some_and(|r| r.boundary == self.track.boundary);
        if error_message && failed_this_run {
            for &i in &self.track.failed_in_run {
                let r = &mut self.lc.recipients[i as usize];
                if r.outcome == Outcome::Bounced {
                    r.outcome = Outcome::Frozen;
                    r.final_at = None;
                }
            }
            self.track.failed_in_run.clear();
        }
        self.note_actor(at, "frozen", actor);
        self.lc.frozen = true;
        self.boundary();
        self.settle(at);
    }

    /// The message was thawed.
    pub fn on_unfrozen(&mut self, actor: &Actor<'_>, at: DateTime<Utc>) {
        self.note_actor(at, "unfrozen", actor);
        self.lc.frozen = false;
        self.boundary();
        self.settle(at);
    }

    /// `Message is frozen`: a delivery run skipped it.
    pub fn on_skipped_frozen(&mut self, at: DateTime<Utc>) {
        self.note(at, "skipped_frozen", None, None);
        self.lc.frozen = true;
        self.boundary();
        self.settle(at);
    }

    /// `removed by`: every address still queued is removed.
    pub fn on_removed(&mut self, actor: &Actor<'_>, at: DateTime<Utc>) {
        self.note_actor(at, "removed", actor);
        self.track.removed = true;
        self.lc.frozen = false;
        self.lc.completed_at = Some(at);
        self.lc.queue_time_ms = self.queue_time_until(at);
        self.boundary();
        self.settle(at);
        self.release_run_memory();
    }

    /// `cancelled by`: every address still queued fails (and is bounced).
    pub fn on_cancelled(&mut self, actor: &Actor<'_>, at: DateTime<Utc>) {
        self.note_actor(at, "cancelled", actor);
        let mut failed = 0;
        for r in &mut self.lc.recipients {
            if !r.outcome.is_final() {
                r.outcome = Outcome::Bounced;
                r.reason = Some(ReasonClass::Cancelled);
                r.final_at = Some(at);
                failed += 1;
            }
        }
        self.track.unreported_failures += failed.max(1);
        self.boundary();
        self.settle(at);
    }

    /// `address <x> marked delivered by`: the addresses that came from the
    /// envelope address `x` count as delivered.
    pub fn on_marked_delivered(&mut self, address: &str, actor: &Actor<'_>, at: DateTime<Utc>) {
        self.note(at, "marked_delivered", actor.by.as_deref(), Some(address));
        let matches = self.envelope_matches(address);
        if matches.is_empty() {
            self.push_recipient(
                Recipient {
                    address: address.to_string(),
                    outcome: Outcome::MarkedDelivered,
                    final_at: Some(at),
                    ..Recipient::default()
                },
                false,
            );
        }
        for i in matches {
            let r = &mut self.lc.recipients[i];
            if !r.outcome.is_final() {
                r.outcome = Outcome::MarkedDelivered;
                r.final_at = Some(at);
            }
        }
        self.boundary();
        self.settle(at);
    }

    /// `recipient <x> added by`: a new envelope recipient.
    pub fn on_recipient_added(&mut self, address: &str, actor: &Actor<'_>, at: DateTime<Utc>) {
        self.note(at, "recipient_added", actor.by.as_deref(), Some(address));
        self.add_envelope_recipient(address);
        self.boundary();
        self.settle(at);
    }

    /// `<x>: error ignored`: a failed bounce is dropped; the address is final.
    pub fn on_error_ignored(&mut self, address: &str, at: DateTime<Utc>) {
        self.note(at, "error_ignored", None, Some(address));
        let found = self.find_where(address, |r, _| same_address(&r.address, address));
        let idx = match found {
            Some(i) => i,
            None => self.push_recipient(
                Recipient {
                    address: address.to_string(),
                    ..Recipient::default()
                },
                false,
            ),
        };
        let r = &mut self.lc.recipients[idx];
        if !r.outcome.is_final() || r.outcome == Outcome::Bounced {
            r.outcome = Outcome::Bounced;
            r.final_at = Some(at);
        }
    }

    /// A per-host problem: kept until the run's next result line (unless
    /// only counted fields are kept: attempts then list no problems).
    pub fn on_host_problem(&mut self, problem: &HostProblem<'_>, detail: Detail) {
        if detail == Detail::Counted {
            return;
        }
        let mut text = host_text(&problem.host);
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&problem.text);
        self.track.pending_problems.push(text);
    }

    /// A record that only adds a note (`no immediate delivery`, a spool
    /// lock, a rewrite, a logwrite).
    pub fn on_note(&mut self, at: DateTime<Utc>, what: &str, text: Option<&str>) {
        self.note(at, what, None, text);
    }

    /// `no immediate delivery`: the run that would follow reception is
    /// skipped.
    pub fn on_no_immediate_delivery(&mut self, reason: &str, at: DateTime<Utc>) {
        self.note(at, "no_immediate_delivery", None, Some(reason));
        self.boundary();
    }

    /// A message off the queue keeps only what late lines may need.
    fn release_run_memory(&mut self) {
        self.track.run_problems = Vec::new();
        self.track.pending_problems = Vec::new();
        self.track.index = None;
    }

    /// Recomputes the message state and the outcome of every address that
    /// is not final yet.
    pub fn settle(&mut self, at: DateTime<Utc>) {
        let state = if self.track.removed {
            MessageState::Removed
        } else if self.track.completed {
            MessageState::Completed
        } else if self.lc.frozen {
            MessageState::Frozen
        } else {
            MessageState::InFlight
        };
        self.lc.state = state;
        self.lc.in_flight = matches!(state, MessageState::InFlight | MessageState::Frozen);
        for r in &mut self.lc.recipients {
            if r.outcome.is_final() {
                continue;
            }
            r.outcome = match state {
                MessageState::Removed => {
                    r.final_at = Some(at);
                    Outcome::Removed
                }
                MessageState::Frozen => Outcome::Frozen,
                _ if r.attempts > 0 => Outcome::Deferred,
                _ => Outcome::Pending,
            };
        }
    }
}

/// Pushes without the spare capacity `Vec` keeps by default while the list
/// is short: most messages have one or two recipients, attempts and notes,
/// and a lifecycle stays in memory for its whole life on the queue.
fn push_tight<T>(v: &mut Vec<T>, item: T) {
    if v.len() < 8 {
        v.reserve_exact(1);
    }
    v.push(item);
}

/// The recipient came from the envelope address `top`.
fn came_from(r: &Recipient, top: &str) -> bool {
    match &r.original {
        Some(o) => same_address(o, top),
        None => same_address(&r.address, top),
    }
}

/// `=> blackhole (RCPT ACL discarded recipients)`: Exim's record that every
/// recipient was discarded at RCPT time. There is no final address.
fn is_discard_pseudo_delivery(d: &Delivery<'_>) -> bool {
    d.address == "blackhole" && d.router.is_none() && d.transport.is_none()
}

fn origin_of(a: &Arrival<'_>) -> Origin {
    if a.bounce_of.is_some() {
        return Origin::Bounce;
    }
    if a.host.is_some() {
        return Origin::Smtp;
    }
    match a.protocol.as_deref() {
        Some(p) if p.starts_with("local") => Origin::Local,
        Some(p) if p.contains("smtp") => Origin::Smtp,
        Some(_) => Origin::Local,
        None if a.user.is_some() => Origin::Local,
        None => Origin::Unknown,
    }
}

/// The client with its IP address only.
fn client_ip(h: &HostAddr<'_>) -> Client {
    Client {
        ip: h.ip.as_deref().map(str::to_string),
        ..Client::default()
    }
}

fn client(h: &HostAddr<'_>) -> Client {
    Client {
        name: h.name.as_deref().map(str::to_string),
        helo: h.helo.as_deref().map(str::to_string),
        ip: h.ip.as_deref().map(str::to_string),
        port: h.port,
    }
}

/// `name [ip]:port` of a host, as far as known.
fn host_text(h: &HostAddr<'_>) -> String {
    let mut s = String::new();
    if let Some(name) = &h.name {
        s.push_str(name);
    }
    if let Some(ip) = &h.ip {
        if !s.is_empty() {
            s.push(' ');
        }
        push_bracketed(&mut s, ip, h.port);
    }
    s
}

/// Appends `[ip]` or `[ip]:port`, without the formatting machinery (this
/// runs for most lines of a log).
fn push_bracketed(s: &mut String, ip: &str, port: Option<u16>) {
    s.push('[');
    s.push_str(ip);
    s.push(']');
    if let Some(port) = port {
        s.push(':');
        let mut digits = [0u8; 5];
        let mut n = port;
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[at..] {
            s.push(char::from(d));
        }
    }
}

fn build_attempt(line: &ResultLine<'_, '_>) -> Attempt {
    if line.detail == Detail::Counted {
        return counted_attempt(line);
    }
    let d = line.delivery;
    let error = d.error.as_deref().or(d.errno_text.as_deref());
    let (stage, code, enhanced, text) = match &d.reply {
        Some(reply) => (
            reply.stage.as_deref().map(str::to_string),
            reply.code,
            reply.enhanced.as_deref().map(str::to_string),
            Some(reply.text.to_string()),
        ),
        None => {
            let text = error.or(d.confirmation.as_deref());
            let found = text.and_then(reply_in_text);
            (
                None,
                found.map(|(code, _)| code),
                found.and_then(|(_, e)| e).map(str::to_string),
                text.map(str::to_string),
            )
        }
    };
    let host = d.host.as_ref();
    Attempt {
        at: line.at,
        result: line.result,
        mark: line.mark.to_string(),
        pid: line.run.pid,
        router: d.router.as_deref().map(str::to_string),
        transport: d.transport.as_deref().map(str::to_string),
        remote_host: host.and_then(|h| h.name.as_deref()).map(str::to_string),
        remote_ip: host.and_then(|h| h.ip.as_deref()).map(str::to_string),
        remote_port: host.and_then(|h| h.port),
        tls_cipher: d.tls.cipher.as_deref().map(str::to_string),
        tls_verified: d.tls.cert_verified,
        confirmation: d.confirmation.as_deref().map(str::to_string),
        stage,
        code,
        enhanced,
        text,
        errno: d.errno,
        duration_ms: d.delivery_time_ms,
        reason: line.reason,
        host_problems: Vec::new(),
    }
}

/// The attempt of a result line with only what reports count: when, the
/// result and reason, where it went (host, transport) and the error text.
/// A successful attempt's text (the receiving server's confirmation) is no
/// sample of any reason, so it is left out.
fn counted_attempt(line: &ResultLine<'_, '_>) -> Attempt {
    let d = line.delivery;
    let host = d.host.as_ref();
    let name = host.and_then(|h| h.name.as_deref());
    let text = match &d.reply {
        _ if line.result == AttemptResult::Ok => None,
        Some(reply) => Some(&reply.text),
        None => d
            .error
            .as_ref()
            .or(d.errno_text.as_ref())
            .or(d.confirmation.as_ref()),
    };
    Attempt {
        at: line.at,
        result: line.result,
        mark: String::new(),
        pid: line.run.pid,
        router: None,
        transport: d.transport.as_deref().map(str::to_string),
        remote_host: name.map(str::to_string),
        // A report keys remote hosts by name, by address only without one.
        remote_ip: host
            .filter(|_| name.is_none())
            .and_then(|h| h.ip.as_deref())
            .map(str::to_string),
        remote_port: host.and_then(|h| h.port),
        tls_cipher: None,
        tls_verified: None,
        confirmation: None,
        stage: None,
        code: None,
        enhanced: None,
        text: text.map(|t| t.to_string()),
        errno: d.errno,
        duration_ms: d.delivery_time_ms,
        reason: line.reason,
        host_problems: Vec::new(),
    }
}

/// Folds the second line of an attempt (`** ...: retry timeout exceeded`
/// after `==`) into it: the result, mark, reason and text become the new
/// line's; what the new line does not say is kept.
fn merge_attempt(into: &mut Attempt, next: Attempt) {
    into.at = next.at;
    into.result = next.result;
    into.mark = next.mark;
    into.reason = next.reason.or(into.reason);
    into.text = next.text.or(into.text.take());
    into.code = next.code.or(into.code);
    into.enhanced = next.enhanced.or(into.enhanced.take());
    into.stage = next.stage.or(into.stage.take());
    into.errno = next.errno.or(into.errno);
    into.router = next.router.or(into.router.take());
    into.transport = next.transport.or(into.transport.take());
    into.remote_host = next.remote_host.or(into.remote_host.take());
    into.remote_ip = next.remote_ip.or(into.remote_ip.take());
    into.remote_port = next.remote_port.or(into.remote_port);
    into.tls_cipher = next.tls_cipher.or(into.tls_cipher.take());
    into.tls_verified = next.tls_verified.or(into.tls_verified);
    into.confirmation = next.confirmation.or(into.confirmation.take());
    into.duration_ms = next.duration_ms.or(into.duration_ms);
    into.host_problems = next.host_problems;
}
