//! Correlation: from parsed events to message lifecycles.
//!
//! A [`Correlator`] groups the events of each message, keyed by (mail
//! server, message id), into a [`Lifecycle`]: the arrival, every final
//! address with its own outcome and delivery attempts, freezes, thaws,
//! admin actions, bounces and completion.
//!
//! # Which events count
//!
//! Only mainlog events change lifecycles. Exim writes every rejection to
//! the mainlog as well as to the rejectlog, and paniclog entries about a
//! delivery repeat as `==` lines in the mainlog, so feeding the other logs
//! would count things twice: [`Correlator::apply_record`] ignores them, and
//! [`Correlator::apply`] must only be given mainlog events. Rejections,
//! connection records and other events without a lifecycle meaning are
//! ignored here (the reports count rejections from the events directly);
//! a rejection that names a message id (`rejected after DATA`) does not
//! create a lifecycle, since no message was accepted.
//!
//! # Attempts and delivery runs
//!
//! An address's `attempts` counts the delivery runs (a queue run, an
//! immediate delivery, an `exim -M`) that logged a result line for it:
//! `=>`, `->`, `>>`, `*>`, `==` or `**`. Within one run an address gets one
//! result line, except that a `==` deferral may be followed by
//! `** ...: retry timeout exceeded` for the same address; that pair is one
//! attempt. How a run is recognised:
//!
//! - With pids in the log (`+pid`), a run is the process that logged the
//!   result lines: two result lines for one address belong to the same
//!   attempt when they have the same pid and nothing that separates runs
//!   (see below) came in between.
//! - Without pids (Exim's default log selector), a `**` line joins the
//!   address's previous `==` attempt when nothing separated runs and no
//!   `Start queue run`/`End queue run` line was logged in between; every
//!   other result line starts a new attempt. Two runs of one message can
//!   only share a queue-run epoch when started by hand (`exim -M`) without
//!   an intervening boundary, and then a retry timeout that the second run
//!   finds without trying is joined to the first run's deferral; the count
//!   is then one too low.
//!
//! What separates runs of a message: its arrival, `Completed`, a freeze or
//! thaw, `Message is frozen`, `no immediate delivery`, and the admin
//! actions (removal, cancellation, marking delivered, adding a recipient).
//! Per-host problems (`H=... Connection refused`) are logged by the
//! transport's subprocess before the result line, under another pid; they
//! are attached to every attempt of the run whose result lines follow.
//!
//! # Outcomes
//!
//! `=>`, `->`, `>>` and `*>` deliver an address; `**`, a cancellation
//! (`-Mg`, or the system filter) and `error ignored` bounce it; an admin's
//! removal removes it and `-Mmd` marks it delivered. An address without a
//! final outcome is `frozen` while the message is frozen, `deferred` once
//! it has had an attempt and `pending` before. A bounce message whose
//! delivery fails is frozen (`Frozen (delivery error message)`) rather than
//! bounced again: the addresses that failed in that run go back to the
//! queue until a later run delivers them or ignores the error.
//!
//! Final addresses are written in full (see [`address`]). The recipients
//! listed on the arrival (`for a b`, the `received_recipients` selector)
//! start as `pending` entries; the first result line whose original (or
//! address) names one takes it over, and more final addresses from the
//! same envelope recipient (an alias to three people) are added. Without
//! that selector the final addresses come from the result lines alone, so
//! a message that never logged one has no recipients.
//!
//! When a router deferred an envelope address (`== x R=filter`) and a
//! later run delivers to addresses that came from it (`=> y <x>`), the
//! first of them takes over `x`'s entry with its attempts: `x` was not a
//! final address. When a message completes, envelope recipients that no
//! line ever named are dropped (they had no final address) and noted as
//! `unresolved_recipient`. `=> blackhole (RCPT ACL discarded recipients)`
//! is a note, not an address.
//!
//! # Bounces and delay warnings
//!
//! An arrival `<= <> R=<id>` is a bounce or a delay warning about message
//! `<id>`: its `parent_id` is set, and while the parent is in memory the
//! parent's `generated` list gains it. When the arrival logs a subject
//! (`T=`), `Warning: message ... delayed` means a delay warning and
//! anything else a bounce. Without a subject, the parent decides: Exim
//! sends a bounce only after failing an address, so the arrival is a
//! bounce when the parent had a failure (or a cancellation) that no
//! earlier bounce reported, and a delay warning otherwise. With the parent
//! out of memory, it is taken as a bounce.
//!
//! # Memory and late lines
//!
//! A completed or removed message stays in memory for a grace period of
//! log time ([`CorrelatorConfig::grace`]), so lines logged after
//! `Completed` (a bounce's arrival, or the result lines of the run that
//! completed it) still land in the right lifecycle; then it is evicted. A
//! message that stays in flight without any record for
//! [`CorrelatorConfig::stale_after`] is evicted too (its lifecycle says
//! `in_flight`); frozen messages are kept, since queue runs skip them
//! silently and they may stay frozen for weeks. A line for an evicted
//! message starts a new lifecycle marked `incomplete_start`, which a store
//! must not let replace the evicted one it holds.
//!
//! Two ways to consume lifecycles: a store upserts what
//! [`Correlator::take_changed`] (or, without copies,
//! [`Correlator::drain_changed`]) hands out, which includes evicted
//! lifecycles that changed since the last call; a report that counts each
//! message once sets [`CorrelatorConfig::keep_evicted`] (and
//! [`Correlator::ignore_changes`]), counts what
//! [`Correlator::take_evicted`] returns (final forms) and, at the end, what
//! [`Correlator::into_lifecycles`] returns.
//!
//! # Checkpoints
//!
//! [`Correlator::save`] returns the whole state as a [`CorrelatorState`]
//! (serde), and [`Correlator::restore`] continues from it: restoring in the
//! middle of a log and feeding the rest gives the same lifecycles as one
//! pass.

pub mod address;
mod message;
mod state;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Duration, Utc};
use exim_pilot_schema::event::{Delivery, DeliveryMark, Event, EventKind};
use exim_pilot_schema::lifecycle::{AttemptResult, Lifecycle, MessageState, Origin};
use exim_pilot_schema::{LogFile, LogTime, MessageId, Zone};

use crate::classify::classify_delivery;
use message::Detail;
use message::{ResultLine, Tracked};
pub use state::{CorrelatorState, StateError};

/// How long lifecycles stay in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// How long, in log time, a completed or removed message is kept for
    /// late lines; `None` keeps everything (one-shot runs over files).
    pub grace: Option<Duration>,
    /// How long, in log time, a message still in flight is kept without any
    /// record naming it; `None` keeps it until it completes.
    pub stale_after: Option<Duration>,
    /// Keep every evicted lifecycle, in its final form, until
    /// [`Correlator::take_evicted`] takes it (for reports, which count each
    /// message once when it can no longer change).
    pub keep_evicted: bool,
}

impl Default for CorrelatorConfig {
    /// One hour of grace; in-flight messages are dropped after eight days
    /// of silence (Exim's default retry rules give up after four).
    fn default() -> Self {
        CorrelatorConfig {
            grace: Some(Duration::hours(1)),
            stale_after: Some(Duration::days(8)),
            keep_evicted: false,
        }
    }
}

impl CorrelatorConfig {
    /// Keeps every lifecycle until the correlator is dropped.
    pub fn keep_all() -> Self {
        CorrelatorConfig {
            grace: None,
            stale_after: None,
            keep_evicted: false,
        }
    }
}

/// A message on one mail server: (interned host, message id).
type Key = (u32, MessageId);

/// A small, fast hasher for keys that Exim generates (not chosen by
/// clients): FxHash's multiply-rotate.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// What the correlator knows about one mail server.
#[derive(Clone, Debug, Default)]
struct HostTrack {
    name: String,
    /// The latest log time seen from this host.
    clock: Option<DateTime<Utc>>,
    /// Queue runs started or ended so far.
    queue_epoch: u64,
    /// Completed messages in order of completion, with their eviction time.
    expiring: VecDeque<(DateTime<Utc>, MessageId)>,
    /// When in-flight messages were last checked for staleness.
    last_sweep: Option<DateTime<Utc>>,
}

/// Groups events into lifecycles. See the module documentation.
pub struct Correlator {
    zone: Zone,
    config: CorrelatorConfig,
    hosts: Vec<HostTrack>,
    host_ids: HashMap<String, u32>,
    last_host: Option<u32>,
    /// Boxed: a lifecycle is large, and the map moves its entries when it
    /// grows.
    messages: KeyMap<Box<Tracked>>,
    dirty: Vec<Key>,
    /// Evicted lifecycles that changed since the last `take_changed`.
    unreported: Vec<Lifecycle>,
    /// Evicted lifecycles not yet taken by `take_evicted` (only with
    /// [`CorrelatorConfig::keep_evicted`]).
    evicted: Vec<Lifecycle>,
    /// Whether `dirty` and `unreported` are kept (see
    /// [`Correlator::ignore_changes`]).
    track_changes: bool,
    /// How much of each record lifecycles keep (see
    /// [`Correlator::omit_details`]).
    detail: Detail,
}

impl Correlator {
    /// A correlator reading naive log times in `zone`, with the default
    /// [`CorrelatorConfig`].
    pub fn new(zone: Zone) -> Correlator {
        Correlator::with_config(zone, CorrelatorConfig::default())
    }

    /// A correlator with explicit memory settings.
    pub fn with_config(zone: Zone, config: CorrelatorConfig) -> Correlator {
        Correlator {
            zone,
            config,
            hosts: Vec::new(),
            host_ids: HashMap::new(),
            last_host: None,
            messages: KeyMap::default(),
            dirty: Vec::new(),
            unreported: Vec::new(),
            track_changes: true,
            detail: Detail::Full,
            evicted: Vec::new(),
        }
    }

    /// Applies an event of any log: only mainlog events are used (see the
    /// module documentation).
    pub fn apply_record(&mut self, host: &str, log: LogFile, event: &Event<'_>) {
        if log == LogFile::Main {
            self.apply(host, event);
        }
    }

    /// What [`Correlator::apply`] does with a mainlog record that names no
    /// message and is no queue run, for a record read only as far as its
    /// time (see `parse_record_brief`): the server's clock moves on.
    pub fn apply_time(&mut self, host: &str, time: Option<LogTime>) {
        let hid = self.host_id(host);
        let at = self.clock(hid, time);
        self.evict(hid, at);
    }

    /// Applies one mainlog event from mail server `host`.
    pub fn apply(&mut self, host: &str, event: &Event<'_>) {
        let hid = self.host_id(host);
        let at = self.clock(hid, event.time);

        if let EventKind::QueueRun(_) = event.kind {
            self.hosts[hid as usize].queue_epoch += 1;
        }
        if let Some(id) = event.id {
            self.apply_message_event(hid, id, at, event);
        }
        self.evict(hid, at);
    }

    fn apply_message_event(&mut self, hid: u32, id: MessageId, at: DateTime<Utc>, ev: &Event) {
        let epoch = self.hosts[hid as usize].queue_epoch;
        let key = (hid, id);
        let m = match self.messages.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                if !creates_lifecycle(&ev.kind) {
                    return;
                }
                v.insert(Box::new(Tracked::new(&self.hosts[hid as usize].name, id)))
            }
        };
        if !m.track.dirty && self.track_changes {
            self.dirty.push(key);
        }
        m.touch(at);
        let was_done = m.track.completed || m.track.removed;
        let mut bounce_of = None;

        match &ev.kind {
            EventKind::Arrival(a) | EventKind::FakeReject(a) => {
                let fake = matches!(ev.kind, EventKind::FakeReject(_));
                m.on_arrival(a, at, fake, self.detail);
                bounce_of = a
                    .bounce_of
                    .map(|parent| (parent, warning_by_subject(a.subject.as_deref())));
            }
            EventKind::Delivery { mark, delivery } => {
                let mark_text = match mark {
                    DeliveryMark::Normal => "=>",
                    DeliveryMark::Additional => "->",
                    DeliveryMark::Cutthrough => ">>",
                    DeliveryMark::Suppressed => "*>",
                };
                let line = ResultLine {
                    detail: self.detail,
                    ..result_line(m, AttemptResult::Ok, mark_text, delivery, at, ev, epoch)
                };
                m.on_result(line);
            }
            EventKind::Failure(d) => {
                let line = ResultLine {
                    detail: self.detail,
                    ..result_line(m, AttemptResult::Fail, "**", d, at, ev, epoch)
                };
                m.on_result(line);
            }
            EventKind::Deferral(d) => {
                let line = ResultLine {
                    detail: self.detail,
                    ..result_line(m, AttemptResult::Defer, "==", d, at, ev, epoch)
                };
                m.on_result(line);
            }
            EventKind::Completed { queue_time_ms, .. } => m.on_completed(at, *queue_time_ms),
            EventKind::Frozen(actor) => m.on_frozen(actor, at),
            EventKind::Unfrozen(actor) => m.on_unfrozen(actor, at),
            EventKind::SkippedFrozen => m.on_skipped_frozen(at),
            EventKind::Removed(actor) => m.on_removed(actor, at),
            EventKind::Cancelled(actor) => m.on_cancelled(actor, at),
            EventKind::MarkedDelivered { address, actor } => {
                m.on_marked_delivered(address, actor, at)
            }
            EventKind::RecipientAdded { address, actor } => {
                m.on_recipient_added(address, actor, at)
            }
            EventKind::ErrorIgnored { address, .. } => m.on_error_ignored(address, at),
            EventKind::HostProblem(p) => m.on_host_problem(p, self.detail),
            EventKind::NoImmediateDelivery { reason } => m.on_no_immediate_delivery(reason, at),
            EventKind::SpoolLocked => m.on_note(at, "spool_locked", None),
            EventKind::Rewrite { from, to, .. } => {
                let text = format!("{from} rewritten as {to}");
                m.on_note(at, "rewrite", Some(&text));
            }
            EventKind::Note(n) => m.on_note(at, "note", Some(&n.text)),
            EventKind::Warning(n) => m.on_note(at, "warning", Some(&n.text)),
            EventKind::TlsProblem(n) => m.on_note(at, "tls_problem", Some(&n.text)),
            EventKind::HostLookup(h) => m.on_note(at, "host_lookup", Some(&h.text)),
            EventKind::TransportOutput { text, .. } => {
                m.on_note(at, "transport_output", Some(text))
            }
            _ => {}
        }

        let done = m.track.completed || m.track.removed;
        if let Some((parent, warning)) = bounce_of {
            self.link_bounce(hid, id, parent, warning);
        }
        if done && !was_done {
            if let Some(grace) = self.config.grace {
                let host = &mut self.hosts[hid as usize];
                host.expiring.push_back((at + grace, id));
            }
        }
    }

    /// Links a bounce or delay warning to the message it reports on, and
    /// decides which of the two it is (see the module documentation).
    fn link_bounce(
        &mut self,
        hid: u32,
        child: MessageId,
        parent: MessageId,
        warning: Option<bool>,
    ) {
        let mut is_warning = warning.unwrap_or(false);
        if let Some(p) = self.messages.get_mut(&(hid, parent)) {
            if warning.is_none() {
                is_warning = p.track.unreported_failures == 0;
            }
            if !is_warning {
                p.track.unreported_failures = 0;
            }
            if !p.lc.generated.contains(&child) {
                p.lc.generated.push(child);
            }
            if !p.track.dirty && self.track_changes {
                p.track.dirty = true;
                self.dirty.push((hid, parent));
            }
        }
        if let Some(c) = self.messages.get_mut(&(hid, child)) {
            c.lc.origin = if is_warning {
                Origin::DelayWarning
            } else {
                Origin::Bounce
            };
        }
    }

    /// Stops remembering which lifecycles changed, for a consumer that only
    /// counts the evicted lifecycles and those left at the end (a report
    /// with [`CorrelatorConfig::keep_evicted`]): [`Correlator::take_changed`]
    /// and [`Correlator::drain_changed`] then hand out nothing new, and an
    /// eviction no longer copies the lifecycle for them. This is not part
    /// of the saved state: a restored correlator remembers changes again.
    pub fn ignore_changes(&mut self) {
        self.track_changes = false;
        self.dirty = Vec::new();
        self.unreported = Vec::new();
    }

    /// Keeps in lifecycles only what a report counts, which spares copying
    /// most texts of the records: arrivals keep sender, size, time, origin,
    /// parent and the client's IP address (no protocol, interface, user,
    /// authentication, TLS, subject, `id=` or envelope recipients), and
    /// attempts keep time, result, reason, remote host (its name, or its
    /// IP address when it has none), transport, error text, errno and
    /// duration (no mark, router, TLS, confirmation, SMTP
    /// stage or codes, host problems). Outcomes, attempts counts and
    /// reasons are the same as with every detail. Records applied before
    /// the call are kept whole; this is not part of the saved state.
    pub fn omit_details(&mut self) {
        self.detail = Detail::Counted;
    }

    /// Lifecycles changed since the last call (and evicted ones not yet
    /// returned), for the store to upsert.
    pub fn take_changed(&mut self) -> Vec<Lifecycle> {
        let mut out = std::mem::take(&mut self.unreported);
        for key in std::mem::take(&mut self.dirty) {
            if let Some(m) = self.messages.get_mut(&key) {
                if m.track.dirty {
                    m.track.dirty = false;
                    out.push(m.lc.clone());
                }
            }
        }
        out
    }

    /// Like [`Correlator::take_changed`] without copying: calls `f` with
    /// every lifecycle changed since the last call.
    pub fn drain_changed(&mut self, mut f: impl FnMut(&Lifecycle)) {
        for lc in std::mem::take(&mut self.unreported) {
            f(&lc);
        }
        for key in std::mem::take(&mut self.dirty) {
            if let Some(m) = self.messages.get_mut(&key) {
                if m.track.dirty {
                    m.track.dirty = false;
                    f(&m.lc);
                }
            }
        }
    }

    /// Lifecycles evicted since the last call, in their final form; always
    /// empty unless [`CorrelatorConfig::keep_evicted`] is set. Together with
    /// [`Correlator::into_lifecycles`] at the end, this hands out every
    /// message exactly once.
    pub fn take_evicted(&mut self) -> Vec<Lifecycle> {
        std::mem::take(&mut self.evicted)
    }

    /// [`Correlator::take_evicted`] that collects the next evictions in
    /// `spare` (emptied first), so that a caller done with an earlier list
    /// hands its room back instead of the list growing again from nothing.
    pub fn swap_evicted(&mut self, mut spare: Vec<Lifecycle>) -> Vec<Lifecycle> {
        spare.clear();
        std::mem::replace(&mut self.evicted, spare)
    }

    /// Every lifecycle in memory.
    pub fn lifecycles(&self) -> impl Iterator<Item = &Lifecycle> {
        self.messages.values().map(|m| &m.lc)
    }

    /// Every lifecycle in memory, ordered by host, first record and id.
    pub fn snapshot(&self) -> Vec<Lifecycle> {
        let mut all: Vec<Lifecycle> = self.lifecycles().cloned().collect();
        sort_lifecycles(&mut all);
        all
    }

    /// Every lifecycle in memory, ordered as by [`Correlator::snapshot`].
    pub fn into_lifecycles(self) -> Vec<Lifecycle> {
        let mut all: Vec<Lifecycle> = self.messages.into_values().map(|m| m.lc).collect();
        sort_lifecycles(&mut all);
        all
    }

    /// The lifecycle of one message, when in memory.
    pub fn get(&self, host: &str, id: MessageId) -> Option<&Lifecycle> {
        let hid = *self.host_ids.get(host)?;
        self.messages.get(&(hid, id)).map(|m| &m.lc)
    }

    /// How many lifecycles are in memory.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when no lifecycle is in memory.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn host_id(&mut self, host: &str) -> u32 {
        if let Some(h) = self.last_host {
            if self.hosts[h as usize].name == host {
                return h;
            }
        }
        let id = match self.host_ids.get(host) {
            Some(&id) => id,
            None => {
                let id = self.hosts.len() as u32;
                self.hosts.push(HostTrack {
                    name: host.to_string(),
                    ..HostTrack::default()
                });
                self.host_ids.insert(host.to_string(), id);
                id
            }
        };
        self.last_host = Some(id);
        id
    }

    /// A record's time in UTC, moving the host's clock on; the host's
    /// latest time when the record had none, and the Unix epoch when
    /// nothing is known yet.
    fn clock(&mut self, hid: u32, time: Option<LogTime>) -> DateTime<Utc> {
        let host = &mut self.hosts[hid as usize];
        match time.map(|t| t.resolve(self.zone)) {
            Some(t) => {
                if host.clock.is_none_or(|c| t > c) {
                    host.clock = Some(t);
                }
                t
            }
            None => host.clock.unwrap_or(DateTime::UNIX_EPOCH),
        }
    }

    /// Drops lifecycles whose grace period has passed, and (once per log
    /// hour) in-flight ones that went silent.
    fn evict(&mut self, hid: u32, now: DateTime<Utc>) {
        let host = &mut self.hosts[hid as usize];
        let mut expired = Vec::new();
        while let Some(&(when, id)) = host.expiring.front() {
            if when > now {
                break;
            }
            host.expiring.pop_front();
            expired.push(id);
        }
        for id in expired {
            if let Entry::Occupied(m) = self.messages.entry((hid, id)) {
                if m.get().track.completed || m.get().track.removed {
                    let m = m.remove();
                    self.pass_on(m);
                }
            }
        }

        let Some(stale_after) = self.config.stale_after else {
            return;
        };
        let host = &mut self.hosts[hid as usize];
        let due = host
            .last_sweep
            .is_none_or(|t| now - t >= Duration::hours(1));
        if !due {
            return;
        }
        host.last_sweep = Some(now);
        let stale: Vec<Key> = self
            .messages
            .iter()
            .filter(|(k, m)| {
                k.0 == hid
                    && m.lc.state == MessageState::InFlight
                    && m.lc.last_seen.is_some_and(|t| now - t > stale_after)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.drop_message(key);
        }
    }

    fn drop_message(&mut self, key: Key) {
        if let Some(m) = self.messages.remove(&key) {
            self.pass_on(m);
        }
    }

    /// Hands a message that left memory to whoever takes lifecycles: the
    /// changed ones to a store, every one to a report that keeps them.
    fn pass_on(&mut self, m: Box<Tracked>) {
        let changed = m.track.dirty && self.track_changes;
        match (changed, self.config.keep_evicted) {
            (true, true) => {
                self.unreported.push(m.lc.clone());
                self.evicted.push(m.lc);
            }
            (true, false) => self.unreported.push(m.lc),
            (false, true) => self.evicted.push(m.lc),
            (false, false) => {}
        }
    }
}

/// Events that imply an accepted message; others only add to a lifecycle
/// that exists already.
fn creates_lifecycle(kind: &EventKind<'_>) -> bool {
    matches!(
        kind,
        EventKind::Arrival(_)
            | EventKind::FakeReject(_)
            | EventKind::Delivery { .. }
            | EventKind::Failure(_)
            | EventKind::Deferral(_)
            | EventKind::Completed { .. }
            | EventKind::Frozen(_)
            | EventKind::Unfrozen(_)
            | EventKind::SkippedFrozen
            | EventKind::Removed(_)
            | EventKind::Cancelled(_)
            | EventKind::MarkedDelivered { .. }
            | EventKind::RecipientAdded { .. }
            | EventKind::ErrorIgnored { .. }
            | EventKind::HostProblem(_)
            | EventKind::NoImmediateDelivery { .. }
    )
}

/// `Some(true)` for a delay warning's subject, `Some(false)` for another
/// subject, `None` when no subject was logged.
fn warning_by_subject(subject: Option<&str>) -> Option<bool> {
    let s = subject?;
    let warning = s
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case("warning: message"))
        && s.contains("delayed");
    Some(warning)
}

fn result_line<'e, 'a>(
    m: &Tracked,
    result: AttemptResult,
    mark: &'static str,
    delivery: &'e Delivery<'a>,
    at: DateTime<Utc>,
    ev: &Event<'_>,
    epoch: u64,
) -> ResultLine<'e, 'a> {
    let reason = match result {
        AttemptResult::Ok => None,
        AttemptResult::Defer => Some(classify_delivery(delivery, true)),
        AttemptResult::Fail => Some(classify_delivery(delivery, false)),
    };
    ResultLine {
        result,
        mark,
        delivery,
        at,
        run: m.run_mark(ev.pid, epoch),
        reason,
        detail: Detail::Full,
    }
}

fn sort_lifecycles(all: &mut [Lifecycle]) {
    all.sort_by(|a, b| {
        (&a.host, a.first_seen, a.id.as_str()).cmp(&(&b.host, b.first_seen, b.id.as_str()))
    });
}

#[cfg(test)]
mod tests;
