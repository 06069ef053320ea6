//! Reports: deliverability numbers counted per message and per address.
//!
//! A report answers "how is my mail doing?" over a time range: how many
//! messages arrived, how many of their final addresses were delivered,
//! deferred or bounced, how fast, where to, from whom, and why things
//! failed. Every number counts messages or final addresses (the
//! [`Recipient`]s of a [`Lifecycle`]), never log lines: an address deferred
//! three times and then delivered counts once as delivered and once as
//! deferred, not four times.
//!
//! # Cohorts: where in time a message is counted
//!
//! All numbers of a message are attributed to the hour it was received (its
//! `<=` line), or to the hour it was first seen when the log did not show
//! the arrival. A message received on Monday and delivered on Tuesday counts
//! as delivered in Monday's report: a report over a range describes the
//! messages that arrived in that range and what became of them so far.
//! SMTP rejections have no lifecycle and are counted at their own time.
//! Ranges are whole UTC hours: a report `since` 10:20 starts at 10:00 and
//! one `until` 11:05 ends at 12:00.
//!
//! # Rollup cells
//!
//! The unit of aggregation is the [`Cell`]: a set of [`Counters`], a delay
//! histogram and a few sample texts, under a [`CellKey`] (hour, mail server,
//! [`Dimension`], key). [`contribution`] gives the cells one lifecycle adds;
//! cells add up, and counters and histograms also subtract. Lifecycles
//! change over time (deferred today, delivered tomorrow), so a store keeps
//! its rollups right by subtracting a lifecycle's old contribution and
//! adding its new one. Summing cells over any set of hours gives the same
//! numbers as aggregating the lifecycles themselves, which is what lets a
//! store answer a 90-day report from a few thousand cells instead of
//! millions of messages.
//!
//! Sample texts are not subtracted: they are examples of what a reason
//! looked like, and a text once seen stays a valid example even after the
//! lifecycle that showed it changed.
//!
//! # Delay percentiles
//!
//! Delivery delay (reception to final delivery, per delivered address) is
//! kept in a [`DelayHistogram`] with fixed log-scale buckets, eight per
//! doubling, so histograms from any cells merge exactly. A percentile read
//! from it is within 4.5% of the true value (or 1 ms, whichever is larger).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::event::{AuthFailure, Reject, RejectStage};
use crate::lifecycle::{AttemptResult, Lifecycle, MessageState, Origin, Outcome, Recipient};
use crate::record::RecordOrigin;
use crate::{MessageId, ReasonClass};

/// Seconds in a report hour bucket.
pub const HOUR_SECONDS: i64 = 3600;

/// How many sample texts a cell keeps per reason.
pub const SAMPLE_LIMIT: usize = 3;

/// Sample texts longer than this (in bytes) are cut.
pub const SAMPLE_MAX_LEN: usize = 300;

/// The hour bucket (hours since the Unix epoch) of an instant.
pub fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(HOUR_SECONDS)
}

/// The instant an hour bucket starts.
pub fn hour_start(hour: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(hour.saturating_mul(HOUR_SECONDS), 0)
        .single()
        .unwrap_or_default()
}

/// The time a lifecycle's numbers are attributed to: its reception, or its
/// first sighting when the arrival was not logged.
pub fn cohort_time(lc: &Lifecycle) -> Option<DateTime<Utc>> {
    lc.received_at
        .or(lc.first_seen)
        .or(lc.last_seen)
        .or(lc.completed_at)
}

/// The hour bucket of [`cohort_time`]. A lifecycle with no time at all
/// (which a correlator should never produce) is counted at the epoch.
pub fn cohort_hour(lc: &Lifecycle) -> i64 {
    cohort_time(lc).map_or(0, hour_of)
}

// ---------------------------------------------------------------------------
// Counters

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The additive numbers of a cell or of a whole report.
        ///
        /// Message counters count each message once per cell; address
        /// counters count final addresses. In a cell of a dimension other
        /// than [`Dimension::Total`], a message is counted when at least one
        /// of its addresses belongs to the cell's key, and only those
        /// addresses are counted.
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: i64,)*
        }

        /// How many counters [`Counters`] has.
        pub const COUNTER_COUNT: usize = [$(stringify!($name),)*].len();

        impl Counters {
            /// The counters' names, in declaration order; also the column
            /// names stores use.
            pub const NAMES: [&'static str; COUNTER_COUNT] = [$(stringify!($name),)*];

            /// The values in the order of [`Counters::NAMES`].
            pub fn to_array(&self) -> [i64; COUNTER_COUNT] {
                [$(self.$name,)*]
            }

            /// Builds counters from values in the order of [`Counters::NAMES`].
            pub fn from_array(values: [i64; COUNTER_COUNT]) -> Counters {
                let mut it = values.into_iter();
                Counters { $($name: it.next().unwrap_or(0),)* }
            }

            /// Adds `other` to `self`.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// Subtracts `other` from `self`.
            pub fn subtract(&mut self, other: &Counters) {
                $(self.$name -= other.$name;)*
            }

            /// True when every counter is zero.
            pub fn is_zero(&self) -> bool {
                true $(&& self.$name == 0)*
            }
        }
    };
}

counters! {
    /// Messages: every lifecycle counted, whether or not its arrival was logged.
    messages,
    /// Messages whose arrival (`<=`) was logged.
    received,
    /// Messages first seen after their arrival (the log started later).
    incomplete,
    /// Sum of `S=` over received messages.
    bytes_received,
    /// Messages received over SMTP.
    origin_smtp,
    /// Messages submitted locally.
    origin_local,
    /// Bounce messages Exim generated.
    origin_bounce,
    /// Delay warnings Exim generated.
    origin_delay_warning,
    /// Messages of unknown origin (arrival not logged).
    origin_unknown,
    /// Messages still on the queue, not frozen.
    state_in_flight,
    /// Messages still on the queue and frozen.
    state_frozen,
    /// Messages that completed.
    state_completed,
    /// Messages an administrator removed.
    state_removed,
    /// Messages with at least one address that saw a deferral.
    messages_deferred,
    /// Messages with at least one bounced address.
    messages_bounced,
    /// Final addresses.
    addresses,
    /// Final addresses delivered (`=>`, `->`, `>>`).
    delivered,
    /// Final addresses that failed permanently.
    bounced,
    /// Final addresses that saw at least one deferral, whatever became of
    /// them later (delivered, bounced or still waiting).
    deferred,
    /// Final addresses still deferred: on the queue after a deferral.
    still_deferred,
    /// Final addresses on the queue with no delivery attempt logged yet.
    pending,
    /// Final addresses of frozen messages, still on the queue.
    frozen,
    /// Final addresses removed by an administrator before delivery.
    removed,
    /// Final addresses marked delivered by an administrator.
    marked_delivered,
    /// Final addresses with at least one delivery attempt.
    attempted,
    /// Final addresses delivered by their first attempt.
    delivered_first_attempt,
    /// Delivery attempts (delivery runs that logged a result line).
    attempts,
    /// Attempts that deferred.
    deferrals,
    /// Attempts that failed permanently.
    failures,
    /// Message size times delivered addresses.
    bytes_delivered,
    /// Sum of delivery delays in milliseconds (for the mean).
    delay_sum_ms,
    /// SMTP rejections (every rejected command; 4xx and 5xx).
    rejected,
    /// SMTP rejections that were temporary (4xx).
    rejected_temporary,
}

// ---------------------------------------------------------------------------
// Delay histogram

/// Log-scale buckets per doubling of the delay.
pub const BUCKETS_PER_DOUBLING: u32 = 8;

/// Delays above this many milliseconds (about 35 years) share the last bucket.
const MAX_DELAY_MS: u64 = 1 << 40;

/// A histogram of delays in milliseconds with fixed log-scale buckets.
///
/// Bucket 0 holds 0 ms; bucket `b >= 1` holds delays in
/// `[2^((b-1)/8), 2^(b/8))` ms. Values read back are the bucket's geometric
/// middle, so they are within 4.5% of the true value (or 1 ms). Counts are
/// signed so that histograms can be subtracted (a store removing a
/// lifecycle's old contribution).
///
/// One message's histogram holds a bucket or two, and a report builds
/// several such passing histograms per message it counts, so the first
/// two buckets are kept inline rather than on the heap.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DelayHistogram {
    /// (bucket index, count), sorted by bucket; zero counts are absent.
    pub buckets: SmallVec<[(u16, i64); 2]>,
}

/// The bucket a delay falls in.
pub fn delay_bucket(ms: u64) -> u16 {
    if ms == 0 {
        return 0;
    }
    let ms = ms.min(MAX_DELAY_MS) as f64;
    1 + (ms.log2() * BUCKETS_PER_DOUBLING as f64).floor() as u16
}

/// The value a bucket stands for: its geometric middle, kept inside the
/// whole milliseconds the bucket can hold.
pub fn bucket_value(bucket: u16) -> u64 {
    if bucket == 0 {
        return 0;
    }
    let per = BUCKETS_PER_DOUBLING as f64;
    let lo = ((bucket - 1) as f64 / per).exp2();
    let hi = (bucket as f64 / per).exp2();
    let mid = (lo * hi).sqrt().round();
    mid.max(lo.ceil()) as u64
}

impl DelayHistogram {
    /// Records one delay.
    pub fn record(&mut self, ms: u64) {
        self.add_to(delay_bucket(ms), 1);
    }

    /// Adds `n` (which may be negative) to one bucket's count.
    pub fn add_to(&mut self, bucket: u16, n: i64) {
        match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => {
                self.buckets[i].1 += n;
                if self.buckets[i].1 == 0 {
                    self.buckets.remove(i);
                }
            }
            Err(i) if n != 0 => self.buckets.insert(i, (bucket, n)),
            Err(_) => {}
        }
    }

    /// Adds every bucket of `other`.
    pub fn add(&mut self, other: &DelayHistogram) {
        for (b, n) in &other.buckets {
            self.add_to(*b, *n);
        }
    }

    /// Subtracts every bucket of `other`.
    pub fn subtract(&mut self, other: &DelayHistogram) {
        for (b, n) in &other.buckets {
            self.add_to(*b, -*n);
        }
    }

    /// True when no bucket holds anything.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// How many delays were recorded.
    pub fn count(&self) -> i64 {
        self.buckets
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| *n > 0)
            .sum()
    }

    /// The delay at quantile `q` (0..=1), nearest-rank, as its bucket's value.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n <= 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
        let mut seen = 0;
        for (b, c) in &self.buckets {
            if *c <= 0 {
                continue;
            }
            seen += c;
            if seen >= rank {
                return Some(bucket_value(*b));
            }
        }
        None
    }

    /// The largest delay, as its bucket's value.
    pub fn max(&self) -> Option<u64> {
        self.buckets
            .iter()
            .rev()
            .find(|(_, c)| *c > 0)
            .map(|(b, _)| bucket_value(*b))
    }

    /// A compact binary form: pairs of (bucket, count) as LEB128 varints,
    /// counts zigzag-encoded.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buckets.len() * 3);
        for (b, n) in &self.buckets {
            put_varint(&mut out, *b as u64);
            put_varint(&mut out, ((n << 1) ^ (n >> 63)) as u64);
        }
        out
    }

    /// Reads what [`DelayHistogram::to_bytes`] wrote; `None` when the bytes
    /// are not such a form.
    pub fn from_bytes(bytes: &[u8]) -> Option<DelayHistogram> {
        let mut h = DelayHistogram::default();
        h.read_bytes(bytes)?;
        Some(h)
    }

    /// Replaces the contents with what [`DelayHistogram::to_bytes`] wrote,
    /// reusing the allocation; `None` (and an empty histogram) when the
    /// bytes are not such a form.
    pub fn read_bytes(&mut self, mut bytes: &[u8]) -> Option<()> {
        self.buckets.clear();
        let mut read = || -> Option<()> {
            while !bytes.is_empty() {
                let b = get_varint(&mut bytes)?;
                let z = get_varint(&mut bytes)?;
                let n = ((z >> 1) as i64) ^ -((z & 1) as i64);
                self.add_to(u16::try_from(b).ok()?, n);
            }
            Some(())
        };
        let ok = read();
        if ok.is_none() {
            self.buckets.clear();
        }
        ok
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Cells

/// What a cell's key means.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Everything; the key is empty.
    Total,
    /// Destination domain of the final address (of the original address
    /// for pipes, files and `:blackhole:`).
    Domain,
    /// Envelope sender; `<>` for the null sender.
    Sender,
    /// Domain of the envelope sender; `<>` for the null sender.
    SenderDomain,
    /// The server an address was delivered to, or its last attempt went to;
    /// `local` for deliveries without a remote host.
    RemoteHost,
    /// The transport of that same attempt.
    Transport,
    /// The sending client's IP address; `local` for local submissions.
    Client,
    /// The reason class of deferrals and failures.
    Reason,
    /// The reason class of SMTP rejections.
    RejectReason,
    /// The client IP address of SMTP rejections.
    RejectIp,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 10] = [
        Dimension::Total,
        Dimension::Domain,
        Dimension::Sender,
        Dimension::SenderDomain,
        Dimension::RemoteHost,
        Dimension::Transport,
        Dimension::Client,
        Dimension::Reason,
        Dimension::RejectReason,
        Dimension::RejectIp,
    ];

    /// A stable small number for storage.
    pub fn code(self) -> i64 {
        match self {
            Dimension::Total => 0,
            Dimension::Domain => 1,
            Dimension::Sender => 2,
            Dimension::SenderDomain => 3,
            Dimension::RemoteHost => 4,
            Dimension::Transport => 5,
            Dimension::Client => 6,
            Dimension::Reason => 7,
            Dimension::RejectReason => 8,
            Dimension::RejectIp => 9,
        }
    }

    /// The dimension's place in [`Dimension::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The dimension stored as `code`.
    pub fn from_code(code: i64) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.code() == code)
    }
}

/// Where a cell sits: hour bucket, mail server, dimension and key.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct CellKey {
    /// Hours since the Unix epoch.
    pub hour: i64,
    /// The mail server the log came from.
    pub host: String,
    /// What the key means.
    pub dim: Dimension,
    /// The domain, sender, reason... (empty for [`Dimension::Total`]).
    pub key: String,
}

/// A bounded set of example texts: the first [`SAMPLE_LIMIT`] distinct
/// texts in byte order, so that merging in any order gives the same set.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Samples(pub BTreeSet<String>);

impl Samples {
    /// Adds a text, cut to [`SAMPLE_MAX_LEN`] bytes.
    pub fn insert(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let mut end = text.len().min(SAMPLE_MAX_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        if self.0.len() >= SAMPLE_LIMIT {
            match self.0.last() {
                Some(last) if text < last.as_str() => {}
                _ => return,
            }
        }
        // Most texts are there already: they are not copied again.
        if self.0.contains(text) {
            return;
        }
        self.0.insert(text.to_string());
        while self.0.len() > SAMPLE_LIMIT {
            self.0.pop_last();
        }
    }

    /// Adds every text of `other`.
    pub fn add(&mut self, other: &Samples) {
        for t in &other.0 {
            self.insert(t);
        }
    }

    /// The texts in byte order.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

/// The aggregate under one [`CellKey`].
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Cell {
    /// The additive numbers.
    pub counters: Counters,
    /// Delivery delays of delivered addresses.
    pub delay: DelayHistogram,
    /// Example texts (reason cells only).
    pub samples: Samples,
}

impl Cell {
    /// Adds `other`.
    pub fn add(&mut self, other: &Cell) {
        self.counters.add(&other.counters);
        self.delay.add(&other.delay);
        self.samples.add(&other.samples);
    }

    /// Subtracts `other`'s counters and histogram; samples stay.
    pub fn subtract(&mut self, other: &Cell) {
        self.counters.subtract(&other.counters);
        self.delay.subtract(&other.delay);
    }

    /// True when counters and histogram are all zero (the cell can go).
    pub fn is_zero(&self) -> bool {
        self.counters.is_zero() && self.delay.is_empty()
    }
}

/// A set of cells: one lifecycle's contribution, a store's pending change,
/// or a whole in-memory rollup.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ReportCells {
    /// The cells (hashed with foldhash: a store builds and adds up
    /// several of these per message).
    pub cells: HashMap<CellKey, Cell, RandomState>,
}

impl ReportCells {
    /// An empty set.
    pub fn new() -> ReportCells {
        ReportCells::default()
    }

    /// Adds one cell.
    pub fn add_cell(&mut self, key: CellKey, cell: &Cell) {
        self.cells.entry(key).or_default().add(cell);
    }

    /// Adds every cell of `other`.
    pub fn add(&mut self, other: &ReportCells) {
        for (k, c) in &other.cells {
            self.add_cell(k.clone(), c);
        }
    }

    /// Subtracts every cell of `other` (samples stay).
    pub fn subtract(&mut self, other: &ReportCells) {
        for (k, c) in &other.cells {
            self.cells.entry(k.clone()).or_default().subtract(c);
        }
    }

    /// Drops cells whose counters and histogram are all zero.
    pub fn prune(&mut self) {
        self.cells.retain(|_, c| !c.is_zero());
    }

    /// The same cells summed per day (hour bucket divided by 24, UTC):
    /// what a store keeps for long ranges. Keys keep the hour field as the
    /// day number.
    pub fn by_day(&self) -> ReportCells {
        let mut out = ReportCells::new();
        for (k, c) in &self.cells {
            let key = CellKey {
                hour: k.hour.div_euclid(24),
                ..k.clone()
            };
            out.add_cell(key, c);
        }
        out
    }

    /// True when there is no cell.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// The cells one lifecycle contributes.
pub fn contribution(lc: &Lifecycle) -> ReportCells {
    let mut out = ReportCells::new();
    for_each_cell(lc, None, |dim, key, cell| {
        let k = CellKey {
            hour: cohort_hour(lc),
            host: lc.host.clone(),
            dim,
            key: key.to_string(),
        };
        out.add_cell(k, cell);
    });
    out
}

/// The cells one SMTP rejection contributes.
pub fn reject_contribution(reject: &RejectRecord) -> ReportCells {
    let mut out = ReportCells::new();
    let hour = hour_of(reject.at);
    for_each_reject_cell(reject, |dim, key, cell| {
        let k = CellKey {
            hour,
            host: reject.origin.host.clone(),
            dim,
            key: key.to_string(),
        };
        out.add_cell(k, cell);
    });
    out
}

// ---------------------------------------------------------------------------
// What a lifecycle counts as

/// The destination domain of a final address, lowercased: the part after
/// the last `@`, else that of the original address (pipes, files and
/// `:blackhole:` have none of their own), else `(none)`.
pub fn recipient_domain(r: &Recipient) -> String {
    recipient_domain_key(r).into_owned()
}

/// [`recipient_domain`], borrowed from the address when it is lowercase
/// already (counting runs this for every address of every message).
fn recipient_domain_key(r: &Recipient) -> Cow<'_, str> {
    domain_of(&r.address)
        .or_else(|| r.original.as_deref().and_then(domain_of))
        .unwrap_or(Cow::Borrowed("(none)"))
}

fn domain_of(address: &str) -> Option<Cow<'_, str>> {
    let (_, d) = address.rsplit_once('@')?;
    let d = d.trim_end_matches('>').trim();
    (!d.is_empty()).then(|| lowercase(d))
}

/// `s` in ASCII lowercase, copied only when it has capitals.
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The sender key: the envelope sender lowercased, `<>` for the null
/// sender, `(unknown)` when the arrival was not logged.
pub fn sender_key(lc: &Lifecycle) -> String {
    sender_cow(lc).into_owned()
}

fn sender_cow(lc: &Lifecycle) -> Cow<'_, str> {
    match lc.sender.as_deref() {
        None => Cow::Borrowed("(unknown)"),
        Some("") => Cow::Borrowed("<>"),
        Some(s) => lowercase(s),
    }
}

/// The sender-domain key: like [`sender_key`], the domain part of it;
/// `(local)` for a sender without a domain.
pub fn sender_domain_key(lc: &Lifecycle) -> String {
    sender_domain_cow(lc).into_owned()
}

fn sender_domain_cow(lc: &Lifecycle) -> Cow<'_, str> {
    match lc.sender.as_deref() {
        None => Cow::Borrowed("(unknown)"),
        Some("") => Cow::Borrowed("<>"),
        Some(s) => domain_of(s).unwrap_or(Cow::Borrowed("(local)")),
    }
}

/// The client key of a received message: its IP, `local` for local
/// submissions; `None` when unknown.
pub fn client_key(lc: &Lifecycle) -> Option<String> {
    client_str(lc).map(str::to_string)
}

fn client_str(lc: &Lifecycle) -> Option<&str> {
    if let Some(ip) = lc.client.as_ref().and_then(|c| c.ip.as_deref()) {
        return Some(ip);
    }
    match lc.origin {
        Origin::Local | Origin::Bounce | Origin::DelayWarning => Some("local"),
        Origin::Smtp | Origin::Unknown => None,
    }
}

/// The attempt that decided an address: its last successful attempt when
/// delivered, otherwise its last attempt.
fn decisive_attempt(r: &Recipient) -> Option<&crate::lifecycle::Attempt> {
    if r.outcome == Outcome::Delivered {
        if let Some(a) = r
            .history
            .iter()
            .rev()
            .find(|a| a.result == AttemptResult::Ok)
        {
            return Some(a);
        }
    }
    r.history.last()
}

fn remote_host_key(a: &crate::lifecycle::Attempt) -> &str {
    a.remote_host
        .as_deref()
        .or(a.remote_ip.as_deref())
        .unwrap_or("local")
}

/// The reason class a bounced address failed with.
fn final_reason(r: &Recipient) -> ReasonClass {
    r.history
        .iter()
        .rev()
        .find(|a| a.result == AttemptResult::Fail)
        .and_then(|a| a.reason)
        .or(r.reason)
        .unwrap_or(ReasonClass::Other)
}

fn has_failure(r: &Recipient) -> bool {
    r.history.iter().any(|a| a.result != AttemptResult::Ok)
}

fn has_deferral(r: &Recipient) -> bool {
    r.outcome == Outcome::Deferred || r.history.iter().any(|a| a.result == AttemptResult::Defer)
}

/// Delivery delay of a delivered address, when both ends are known.
fn delivery_delay_ms(lc: &Lifecycle, r: &Recipient) -> Option<u64> {
    if r.outcome != Outcome::Delivered {
        return None;
    }
    let start = lc.received_at?;
    let end = r.final_at.or_else(|| {
        r.history
            .iter()
            .rev()
            .find(|a| a.result == AttemptResult::Ok)
            .map(|a| a.at)
    })?;
    Some((end - start).num_milliseconds().max(0) as u64)
}

fn message_counters(lc: &Lifecycle, rcpts: &[&Recipient]) -> Counters {
    let received = lc.received_at.is_some();
    let mut c = Counters {
        messages: 1,
        received: received as i64,
        incomplete: (!received) as i64,
        bytes_received: if received {
            lc.size.unwrap_or(0) as i64
        } else {
            0
        },
        messages_deferred: rcpts.iter().any(|r| has_deferral(r)) as i64,
        messages_bounced: rcpts.iter().any(|r| r.outcome == Outcome::Bounced) as i64,
        ..Counters::default()
    };
    match lc.origin {
        Origin::Smtp => c.origin_smtp = 1,
        Origin::Local => c.origin_local = 1,
        Origin::Bounce => c.origin_bounce = 1,
        Origin::DelayWarning => c.origin_delay_warning = 1,
        Origin::Unknown => c.origin_unknown = 1,
    }
    match lc.state {
        MessageState::InFlight => c.state_in_flight = 1,
        MessageState::Frozen => c.state_frozen = 1,
        MessageState::Completed => c.state_completed = 1,
        MessageState::Removed => c.state_removed = 1,
    }
    c
}

/// The address counters and delay of one final address.
fn address_cell(lc: &Lifecycle, r: &Recipient) -> Cell {
    let mut c = Counters {
        addresses: 1,
        deferred: has_deferral(r) as i64,
        attempts: r.attempts as i64,
        ..Counters::default()
    };
    match r.outcome {
        Outcome::Delivered => c.delivered = 1,
        Outcome::Bounced => c.bounced = 1,
        Outcome::Deferred => c.still_deferred = 1,
        Outcome::Pending => c.pending = 1,
        Outcome::Frozen => c.frozen = 1,
        Outcome::Removed => c.removed = 1,
        Outcome::MarkedDelivered => c.marked_delivered = 1,
    }
    for a in &r.history {
        match a.result {
            AttemptResult::Defer => c.deferrals += 1,
            AttemptResult::Fail => c.failures += 1,
            AttemptResult::Ok => {}
        }
    }
    c.attempted = (r.attempts > 0 || !r.history.is_empty()) as i64;
    let first_ok = match r.history.first() {
        Some(a) => a.result == AttemptResult::Ok,
        None => r.attempts == 1,
    };
    c.delivered_first_attempt = (r.outcome == Outcome::Delivered && first_ok) as i64;
    if r.outcome == Outcome::Delivered {
        c.bytes_delivered = lc.size.unwrap_or(0) as i64;
    }
    let mut cell = Cell {
        counters: c,
        ..Cell::default()
    };
    if let Some(ms) = delivery_delay_ms(lc, r) {
        cell.counters.delay_sum_ms = ms as i64;
        cell.delay.record(ms);
    }
    cell
}

/// What one address adds to the cell of one reason class: the address
/// counted once, its deferrals and failures of that class only, `deferred`
/// when it deferred for that reason and `bounced` when it finally failed
/// for it; plus sample texts.
fn reason_cell(base: &Cell, r: &Recipient, class: ReasonClass) -> Cell {
    let mut cell = base.clone();
    let c = &mut cell.counters;
    // A successful attempt has no reason: its text (the receiving server's
    // confirmation) is no sample of any, "other" included.
    let of_class = |a: &&crate::lifecycle::Attempt| {
        a.result != AttemptResult::Ok && a.reason.unwrap_or(ReasonClass::Other) == class
    };
    c.deferrals = 0;
    c.failures = 0;
    c.deferred = 0;
    for a in r.history.iter().filter(of_class) {
        match a.result {
            AttemptResult::Defer => {
                c.deferrals += 1;
                c.deferred = 1;
            }
            AttemptResult::Fail => c.failures += 1,
            AttemptResult::Ok => {}
        }
        if let Some(t) = &a.text {
            cell.samples.insert(t);
        }
    }
    if r.outcome == Outcome::Deferred && r.reason.unwrap_or(ReasonClass::Other) == class {
        c.deferred = 1;
    }
    c.bounced = (r.outcome == Outcome::Bounced && final_reason(r) == class) as i64;
    // The address's last text stands in only when it is no confirmation.
    let last_failed = r
        .history
        .last()
        .is_none_or(|a| a.result != AttemptResult::Ok);
    if cell.samples.0.is_empty() && r.reason == Some(class) && last_failed {
        if let Some(t) = &r.last_text {
            cell.samples.insert(t);
        }
    }
    cell
}

/// The reason classes an address met: those of its deferrals and failures,
/// its final reason when it bounced, and its last reason while deferred.
fn reasons_of(r: &Recipient) -> BTreeSet<ReasonClass> {
    let mut set: BTreeSet<ReasonClass> = r
        .history
        .iter()
        .filter(|a| a.result != AttemptResult::Ok)
        .map(|a| a.reason.unwrap_or(ReasonClass::Other))
        .collect();
    if r.outcome == Outcome::Bounced {
        set.insert(final_reason(r));
    }
    if r.outcome == Outcome::Deferred {
        set.insert(r.reason.unwrap_or(ReasonClass::Other));
    }
    set
}

/// Calls `emit` once per (dimension, key) a lifecycle counts in, with the
/// summed cell. When `domain` is given, only addresses of that destination
/// domain count, and a message with none of them counts nowhere.
fn for_each_cell(
    lc: &Lifecycle,
    domain: Option<&str>,
    mut emit: impl FnMut(Dimension, &str, &Cell),
) {
    // Most messages have a recipient or two: their lists stay on the stack.
    let rcpts: SmallVec<[&Recipient; 4]> = lc
        .recipients
        .iter()
        .filter(|r| domain.is_none_or(|d| recipient_domain_key(r) == d))
        .collect();
    if domain.is_some() && rcpts.is_empty() {
        return;
    }
    let msg = Cell {
        counters: message_counters(lc, &rcpts),
        ..Cell::default()
    };
    let per_address: SmallVec<[Cell; 2]> = rcpts.iter().map(|r| address_cell(lc, r)).collect();

    // Dimensions every address of the message shares.
    let mut all = msg.clone();
    for c in &per_address {
        all.add(c);
    }
    emit(Dimension::Total, "", &all);
    emit(Dimension::Sender, &sender_cow(lc), &all);
    emit(Dimension::SenderDomain, &sender_domain_cow(lc), &all);
    if let Some(client) = client_str(lc) {
        emit(Dimension::Client, client, &all);
    }

    // Dimensions that split the addresses: each key gets the message once
    // plus its own addresses.
    if let ([r], [c]) = (rcpts.as_slice(), per_address.as_slice()) {
        // With one address (most messages), that is the whole message.
        for_each_split_key(r, |dim, key, class| match class {
            None => emit(dim, &key, &all),
            Some(class) => {
                let mut rc = reason_cell(c, r, class);
                rc.add(&msg);
                emit(dim, &key, &rc);
            }
        });
        return;
    }
    // Most addresses add a domain, a remote host and a transport: those
    // of a one-address message fit the list's room on the stack.
    let mut split = SplitCells(SmallVec::new());
    for (r, c) in rcpts.iter().zip(&per_address) {
        for_each_split_key(r, |dim, key, class| match class {
            None => split.add(dim, key, &msg, c),
            Some(class) => split.add(dim, key, &msg, &reason_cell(c, r, class)),
        });
    }
    for (dim, key, cell) in &split.0 {
        emit(*dim, key, cell);
    }
}

/// Calls `f` with each (dimension, key) of the dimensions that split a
/// message's addresses that address `r` counts in: its domain, remote
/// host and transport, and, unless it was delivered without a failure,
/// each reason class it met (given as the third argument).
fn for_each_split_key<'a>(
    r: &'a Recipient,
    mut f: impl FnMut(Dimension, Cow<'a, str>, Option<ReasonClass>),
) {
    f(Dimension::Domain, recipient_domain_key(r), None);
    if let Some(a) = decisive_attempt(r) {
        f(Dimension::RemoteHost, remote_host_key(a).into(), None);
        if let Some(t) = &a.transport {
            f(Dimension::Transport, t.as_str().into(), None);
        }
    }
    if r.outcome == Outcome::Delivered && !has_failure(r) {
        return;
    }
    for class in reasons_of(r) {
        f(Dimension::Reason, class.as_str().into(), Some(class));
    }
}

/// The cells of the dimensions that split a message's addresses, by
/// (dimension, key). A message has a few of them, so a list searched from
/// the start costs less than a map, and keys borrow from the lifecycle.
struct SplitCells<'a>(SmallVec<[(Dimension, Cow<'a, str>, Cell); 4]>);

impl<'a> SplitCells<'a> {
    /// Adds an address's cell under (dim, key), which starts from the
    /// message's own cell.
    fn add(&mut self, dim: Dimension, key: Cow<'a, str>, msg: &Cell, cell: &Cell) {
        let found = self.0.iter_mut().find(|(d, k, _)| *d == dim && *k == key);
        match found {
            Some((_, _, sum)) => sum.add(cell),
            None => {
                let mut sum = msg.clone();
                sum.add(cell);
                self.0.push((dim, key, sum));
            }
        }
    }
}

fn for_each_reject_cell(reject: &RejectRecord, mut emit: impl FnMut(Dimension, &str, &Cell)) {
    let mut cell = Cell::default();
    cell.counters.rejected = 1;
    cell.counters.rejected_temporary = reject.temporary as i64;
    emit(Dimension::Total, "", &cell);
    let ip = reject.client_ip.as_deref().unwrap_or("(unknown)");
    emit(Dimension::RejectIp, ip, &cell);
    cell.samples.insert(&reject.reason);
    emit(Dimension::RejectReason, reject.class.as_str(), &cell);
}

// ---------------------------------------------------------------------------
// Rejections

/// One SMTP rejection, owned, as stores keep it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RejectRecord {
    /// The record it was read from (its host is the mail server); names
    /// the rejection uniquely, so storing it twice changes nothing.
    pub origin: RecordOrigin,
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// The SMTP phase that was refused.
    pub stage: RejectStage,
    /// True for a temporary (4xx) rejection.
    pub temporary: bool,
    /// The client's IP address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_ip: Option<String>,
    /// The client's host name, when looked up.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_name: Option<String>,
    /// The HELO/EHLO name the client gave.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub helo: Option<String>,
    /// The envelope sender, when the rejection names one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sender: Option<String>,
    /// The refused recipient of a `RCPT` rejection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipient: Option<String>,
    /// The message id, for rejections after DATA that name one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_id: Option<MessageId>,
    /// The reason Exim logged.
    pub reason: String,
    /// Its reason class.
    pub class: ReasonClass,
}

impl RejectRecord {
    /// Builds the stored form of a parsed rejection. `class` comes from the
    /// processor's classifier.
    pub fn from_event(
        origin: RecordOrigin,
        at: DateTime<Utc>,
        message_id: Option<MessageId>,
        reject: &Reject<'_>,
        class: ReasonClass,
    ) -> RejectRecord {
        let host = reject.host.as_ref();
        RejectRecord {
            origin,
            at,
            stage: reject.stage,
            temporary: reject.temporary,
            client_ip: host.and_then(|h| h.ip.as_deref()).map(str::to_string),
            client_name: host.and_then(|h| h.name.as_deref()).map(str::to_string),
            helo: host.and_then(|h| h.helo.as_deref()).map(str::to_string),
            sender: reject.sender.as_deref().map(str::to_string),
            recipient: reject.recipient.as_deref().map(str::to_string),
            message_id,
            reason: reject.reason.to_string(),
            class,
        }
    }

    /// Builds the stored form of a failed SMTP AUTH, which clients see as a
    /// rejection of the `AUTH` command (temporary when the code is 4xx).
    pub fn from_auth_failure(
        origin: RecordOrigin,
        at: DateTime<Utc>,
        failure: &AuthFailure<'_>,
        class: ReasonClass,
    ) -> RejectRecord {
        let h = &failure.host;
        RejectRecord {
            origin,
            at,
            stage: RejectStage::Auth,
            temporary: failure.code.is_some_and(|c| (400..500).contains(&c)),
            client_ip: h.ip.as_deref().map(str::to_string),
            client_name: h.name.as_deref().map(str::to_string),
            helo: h.helo.as_deref().map(str::to_string),
            sender: None,
            recipient: None,
            message_id: None,
            reason: format!(
                "{} authenticator failed: {}",
                failure.authenticator, failure.text
            ),
            class,
        }
    }

    /// The mail server that logged it.
    pub fn host(&self) -> &str {
        &self.origin.host
    }
}

// ---------------------------------------------------------------------------
// Rollup: cells summed over a range

/// The cells of one dimension by key. An in-memory report looks a key up
/// for every message it counts, so the maps use foldhash, which is several
/// times faster than the standard hasher on short keys and still seeded at
/// random per map (keys come from the logs, that is from outside). Cells
/// are boxed: a map of senders or clients of a busy log grows to hundreds
/// of thousands of keys, and a table of small entries touches and moves
/// far less memory as it grows than one holding the cells themselves.
pub type KeyCells = HashMap<String, Box<Cell>, RandomState>;

/// Cells summed over a time range, ready to become a [`Report`]: per
/// (dimension, key) over all hours and servers, the totals per server, and
/// the totals per hour. Stores build it from their rollup tables; the
/// in-memory path from lifecycles.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Rollup {
    /// Per dimension (at [`Dimension::index`]) and key, summed over hours
    /// and servers.
    pub by_key: [KeyCells; Dimension::ALL.len()],
    /// [`Dimension::Total`] per mail server.
    pub by_host: BTreeMap<String, Cell>,
    /// [`Dimension::Total`] per hour bucket, summed over servers.
    pub hourly: BTreeMap<i64, Cell>,
    /// [`Dimension::Total`] per day (days since the epoch), summed over
    /// servers, from a store's day cells: the per-day series of days whose
    /// hour cells are no longer kept (day cells are kept longer).
    pub daily: BTreeMap<i64, Cell>,
}

impl Rollup {
    /// An empty rollup.
    pub fn new() -> Rollup {
        Rollup::default()
    }

    /// Adds one cell. `hour` is `None` for cells that span more than an
    /// hour (a store's day cells): they count in the totals but not in the
    /// hourly series, which the caller then fills with
    /// [`Rollup::add_hourly`].
    pub fn add(&mut self, hour: Option<i64>, host: &str, dim: Dimension, key: &str, cell: &Cell) {
        if dim == Dimension::Total {
            match self.by_host.get_mut(host) {
                Some(c) => c.add(cell),
                None => {
                    self.by_host.insert(host.to_string(), cell.clone());
                }
            }
            if let Some(h) = hour {
                self.add_hourly(h, cell);
            }
        }
        let keys = &mut self.by_key[dim.index()];
        match keys.get_mut(key) {
            Some(c) => c.add(cell),
            None => {
                keys.insert(key.to_string(), Box::new(cell.clone()));
            }
        }
    }

    /// The summed cell of one dimension and key.
    pub fn get(&self, dim: Dimension, key: &str) -> Option<&Cell> {
        self.by_key[dim.index()].get(key).map(|c| &**c)
    }

    /// Every key of a dimension with its cell.
    pub fn keys(&self, dim: Dimension) -> impl Iterator<Item = (&String, &Cell)> {
        self.by_key[dim.index()].iter().map(|(k, c)| (k, &**c))
    }

    /// Adds a [`Dimension::Total`] cell to the hourly series only.
    pub fn add_hourly(&mut self, hour: i64, cell: &Cell) {
        self.hourly.entry(hour).or_default().add(cell);
    }

    /// Adds a [`Dimension::Total`] day cell to the daily series only.
    pub fn add_daily(&mut self, day: i64, cell: &Cell) {
        self.daily.entry(day).or_default().add(cell);
    }

    /// Adds everything of another rollup.
    pub fn merge(&mut self, other: &Rollup) {
        for (mine, keys) in self.by_key.iter_mut().zip(&other.by_key) {
            for (key, cell) in keys {
                match mine.get_mut(key) {
                    Some(c) => c.add(cell),
                    None => {
                        mine.insert(key.clone(), cell.clone());
                    }
                }
            }
        }
        for (host, cell) in &other.by_host {
            self.by_host.entry(host.clone()).or_default().add(cell);
        }
        for (hour, cell) in &other.hourly {
            self.add_hourly(*hour, cell);
        }
        for (day, cell) in &other.daily {
            self.add_daily(*day, cell);
        }
    }

    /// Adds a set of hour cells.
    pub fn add_cells(&mut self, cells: &ReportCells) {
        for (k, c) in &cells.cells {
            self.add(Some(k.hour), &k.host, k.dim, &k.key, c);
        }
    }
}

// ---------------------------------------------------------------------------
// Report

/// What a report covers.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ReportOptions {
    /// Start of the range (rounded down to the hour).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since: Option<DateTime<Utc>>,
    /// End of the range, exclusive (rounded up to the hour).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub until: Option<DateTime<Utc>>,
    /// Only this mail server.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
    /// Only addresses of this destination domain (and messages with one).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub domain: Option<String>,
    /// Rows kept per breakdown table; 0 keeps all.
    pub top: usize,
}

impl ReportOptions {
    /// The first hour bucket in range.
    pub fn first_hour(&self) -> Option<i64> {
        self.since.map(hour_of)
    }

    /// The hour bucket just past the range.
    pub fn end_hour(&self) -> Option<i64> {
        self.until.map(|t| {
            let h = hour_of(t);
            if t.timestamp().rem_euclid(HOUR_SECONDS) == 0 && t.timestamp_subsec_nanos() == 0 {
                h
            } else {
                h + 1
            }
        })
    }

    /// True when an hour bucket is in range.
    pub fn hour_in_range(&self, hour: i64) -> bool {
        self.first_hour().is_none_or(|h| hour >= h) && self.end_hour().is_none_or(|h| hour < h)
    }

    /// The domain filter, lowercased.
    pub fn domain_filter(&self) -> Option<String> {
        self.domain.as_ref().map(|d| d.trim().to_ascii_lowercase())
    }
}

/// Delay statistics from a histogram.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DelayStats {
    /// Delivered addresses whose delay is known.
    pub count: i64,
    /// Mean delay in milliseconds (exact).
    pub mean_ms: Option<u64>,
    /// Median.
    pub p50_ms: Option<u64>,
    /// 90th percentile.
    pub p90_ms: Option<u64>,
    /// 99th percentile.
    pub p99_ms: Option<u64>,
    /// Largest delay.
    pub max_ms: Option<u64>,
}

impl DelayStats {
    fn of(cell: &Cell) -> DelayStats {
        let count = cell.delay.count();
        DelayStats {
            count,
            mean_ms: (count > 0).then(|| (cell.counters.delay_sum_ms.max(0) / count) as u64),
            p50_ms: cell.delay.quantile(0.50),
            p90_ms: cell.delay.quantile(0.90),
            p99_ms: cell.delay.quantile(0.99),
            max_ms: cell.delay.max(),
        }
    }
}

fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// Rates, as fractions (0.0 to 1.0, four decimals); `null` when the
/// denominator is zero.
#[derive(Clone, Copy, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Rates {
    /// Delivered addresses / all final addresses.
    pub delivery_rate: Option<f64>,
    /// Bounced addresses / all final addresses.
    pub bounce_rate: Option<f64>,
    /// Addresses that saw a deferral / all final addresses.
    pub deferral_rate: Option<f64>,
    /// Addresses delivered by their first attempt / addresses attempted.
    pub first_attempt_rate: Option<f64>,
}

impl Rates {
    fn of(c: &Counters) -> Rates {
        Rates {
            delivery_rate: rate(c.delivered, c.addresses),
            bounce_rate: rate(c.bounced, c.addresses),
            deferral_rate: rate(c.deferred, c.addresses),
            first_attempt_rate: rate(c.delivered_first_attempt, c.attempted),
        }
    }
}

/// The numbers of one row of a breakdown or time series.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Numbers {
    /// See [`Counters::messages`].
    pub messages: i64,
    /// See [`Counters::received`].
    pub received: i64,
    /// See [`Counters::addresses`].
    pub addresses: i64,
    /// See [`Counters::delivered`].
    pub delivered: i64,
    /// See [`Counters::bounced`].
    pub bounced: i64,
    /// See [`Counters::deferred`].
    pub deferred: i64,
    /// See [`Counters::still_deferred`].
    pub still_deferred: i64,
    /// See [`Counters::pending`].
    pub pending: i64,
    /// See [`Counters::frozen`].
    pub frozen: i64,
    /// See [`Counters::delivered_first_attempt`].
    pub delivered_first_attempt: i64,
    /// See [`Counters::rejected`].
    pub rejected: i64,
    /// See [`Counters::bytes_received`].
    pub bytes_received: i64,
    /// See [`Counters::bytes_delivered`].
    pub bytes_delivered: i64,
    /// Rates of this row.
    #[serde(flatten)]
    pub rates: Rates,
    /// Delay statistics of this row.
    pub delay: DelayStats,
}

impl Numbers {
    /// The numbers of a cell.
    pub fn of(cell: &Cell) -> Numbers {
        let c = &cell.counters;
        Numbers {
            messages: c.messages,
            received: c.received,
            addresses: c.addresses,
            delivered: c.delivered,
            bounced: c.bounced,
            deferred: c.deferred,
            still_deferred: c.still_deferred,
            pending: c.pending,
            frozen: c.frozen,
            delivered_first_attempt: c.delivered_first_attempt,
            rejected: c.rejected,
            bytes_received: c.bytes_received,
            bytes_delivered: c.bytes_delivered,
            rates: Rates::of(c),
            delay: DelayStats::of(cell),
        }
    }
}

/// One row of a breakdown table.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Row {
    /// The domain, sender, host...
    pub key: String,
    /// Its numbers.
    #[serde(flatten)]
    pub numbers: Numbers,
}

/// A breakdown table: its largest rows, and how many keys there were.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Table {
    /// Distinct keys before cutting to the top rows.
    pub distinct: usize,
    /// The rows, largest first.
    pub rows: Vec<Row>,
}

/// One row of a time series.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct TimeRow {
    /// Start of the hour or day (UTC).
    pub start: DateTime<Utc>,
    /// Its numbers.
    #[serde(flatten)]
    pub numbers: Numbers,
}

/// Messages by state.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct States {
    /// On the queue, not frozen.
    pub in_flight: i64,
    /// On the queue, frozen.
    pub frozen: i64,
    /// Completed.
    pub completed: i64,
    /// Removed by an administrator.
    pub removed: i64,
}

/// Messages by origin.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Origins {
    /// Received over SMTP.
    pub smtp: i64,
    /// Submitted locally.
    pub local: i64,
    /// Bounces Exim generated.
    pub bounce: i64,
    /// Delay warnings Exim generated.
    pub delay_warning: i64,
    /// Arrival not logged.
    pub unknown: i64,
}

/// Volume.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Bytes {
    /// Bytes received (`S=` of arrivals).
    pub received: i64,
    /// Bytes delivered (size times delivered addresses).
    pub delivered: i64,
}

/// First-attempt against eventual delivery.
#[derive(Clone, Copy, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct FirstAttempt {
    /// Addresses with at least one attempt.
    pub attempted: i64,
    /// Delivered by the first attempt.
    pub delivered_first_attempt: i64,
    /// Delivered by a later attempt.
    pub delivered_after_retry: i64,
    /// Delivered at all.
    pub delivered_eventually: i64,
    /// `delivered_first_attempt / attempted`.
    pub first_attempt_rate: Option<f64>,
    /// `delivered_eventually / attempted`.
    pub eventual_rate: Option<f64>,
}

/// One reason class with what it did.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ReasonRow {
    /// The class.
    pub class: ReasonClass,
    /// Messages with an address that met this reason.
    pub messages: i64,
    /// Final addresses that met it (a deferral or failure of this class).
    pub addresses: i64,
    /// Addresses deferred for it at least once.
    pub deferred: i64,
    /// Addresses that finally bounced for it.
    pub bounced: i64,
    /// Addresses that met it and were delivered in the end.
    pub delivered_later: i64,
    /// Addresses that met it and are still deferred.
    pub still_deferred: i64,
    /// Deferral attempts of this class.
    pub deferrals: i64,
    /// Failed attempts of this class.
    pub failures: i64,
    /// Example texts.
    pub samples: Vec<String>,
}

/// Rejections of one reason class.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RejectReasonRow {
    /// The class.
    pub class: ReasonClass,
    /// Rejections.
    pub rejected: i64,
    /// Of them temporary (4xx).
    pub temporary: i64,
    /// Example texts.
    pub samples: Vec<String>,
}

/// Rejections from one client IP.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RejectIpRow {
    /// The IP address (`(unknown)` when not logged).
    pub ip: String,
    /// Rejections.
    pub rejected: i64,
    /// Of them temporary (4xx).
    pub temporary: i64,
}

/// SMTP rejections.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Rejects {
    /// All rejections.
    pub total: i64,
    /// Temporary (4xx).
    pub temporary: i64,
    /// Permanent (5xx).
    pub permanent: i64,
    /// Per reason class, most first.
    pub by_reason: Vec<RejectReasonRow>,
    /// Distinct client IPs before cutting to the top rows.
    pub distinct_ips: usize,
    /// Per client IP, most first.
    pub by_client_ip: Vec<RejectIpRow>,
}

/// A deliverability report. Its JSON form is what `exim-pilot report
/// --format json` prints; `totals` holds every [`Counters`] field.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// What the report covers (range rounded to whole hours).
    pub options: ReportOptions,
    /// The first hour with data.
    pub first_hour: Option<DateTime<Utc>>,
    /// The last hour with data.
    pub last_hour: Option<DateTime<Utc>>,
    /// Every counter, summed.
    pub totals: Counters,
    /// Rates over all addresses.
    pub rates: Rates,
    /// Messages by state.
    pub messages_by_state: States,
    /// Messages by origin.
    pub messages_by_origin: Origins,
    /// Volume.
    pub bytes: Bytes,
    /// First-attempt against eventual delivery.
    pub first_attempt: FirstAttempt,
    /// Delivery delay, reception to delivery, per delivered address.
    pub delay: DelayStats,
    /// Per mail server (where the log came from).
    pub by_host: Table,
    /// Per destination domain.
    pub by_domain: Table,
    /// Per envelope sender.
    pub by_sender: Table,
    /// Per sender domain.
    pub by_sender_domain: Table,
    /// Per server delivered to.
    pub by_remote_host: Table,
    /// Per transport.
    pub by_transport: Table,
    /// Per sending client.
    pub by_client: Table,
    /// Per hour (UTC), hours with data only.
    pub per_hour: Vec<TimeRow>,
    /// Per day (UTC), days with data only.
    pub per_day: Vec<TimeRow>,
    /// Why deliveries were deferred or failed, most addresses first.
    pub reasons: Vec<ReasonRow>,
    /// SMTP rejections.
    pub rejects: Rejects,
}

fn table(rollup: &Rollup, dim: Dimension, top: usize, by_addresses: bool) -> Table {
    let cells: Vec<(&String, &Cell)> = rollup.keys(dim).filter(|(_, c)| !c.is_zero()).collect();
    rows_of(cells, top, by_addresses)
}

/// The largest `top` rows (all when 0): ordered by addresses or messages,
/// then by key. Only the rows kept are turned into [`Numbers`].
fn rows_of(cells: Vec<(&String, &Cell)>, top: usize, by_addresses: bool) -> Table {
    let size = |c: &Cell| {
        let c = &c.counters;
        if by_addresses {
            (c.addresses, c.messages)
        } else {
            (c.messages, c.addresses)
        }
    };
    let order = |(sa, ka, _): &Sized, (sb, kb, _): &Sized| sb.cmp(sa).then_with(|| ka.cmp(kb));
    type Sized<'a> = ((i64, i64), &'a String, &'a Cell);
    let distinct = cells.len();
    let mut cells: Vec<Sized> = cells.into_iter().map(|(k, c)| (size(c), k, c)).collect();

    // Tables of senders or clients can hold hundreds of thousands of keys,
    // most of them of the same small size: find the smallest size the top
    // rows can have from the sizes alone, then order by key only what is
    // left.
    if top > 0 && cells.len() > top {
        let mut sizes: Vec<(i64, i64)> = cells.iter().map(|(s, _, _)| *s).collect();
        let (_, least, _) = sizes.select_nth_unstable_by(top - 1, |a, b| b.cmp(a));
        let least = *least;
        cells.retain(|(s, _, _)| *s >= least);
        if cells.len() > top {
            cells.select_nth_unstable_by(top - 1, order);
            cells.truncate(top);
        }
    }
    cells.sort_unstable_by(order);
    let rows = cells
        .into_iter()
        .map(|(_, k, c)| Row {
            key: k.clone(),
            numbers: Numbers::of(c),
        })
        .collect();
    Table { distinct, rows }
}

impl Report {
    /// Builds the report from summed cells.
    pub fn from_rollup(rollup: &Rollup, options: &ReportOptions) -> Report {
        let total = rollup
            .get(Dimension::Total, "")
            .cloned()
            .unwrap_or_default();
        let c = total.counters;
        let top = options.top;

        let by_host = rows_of(rollup.by_host.iter().collect(), 0, false);

        let hourly: Vec<(i64, &Cell)> = rollup
            .hourly
            .iter()
            .filter(|(_, cell)| !cell.is_zero())
            .map(|(h, cell)| (*h, cell))
            .collect();
        let per_hour = hourly
            .iter()
            .map(|(h, cell)| TimeRow {
                start: hour_start(*h),
                numbers: Numbers::of(cell),
            })
            .collect();
        let mut days: BTreeMap<i64, Cell> = BTreeMap::new();
        for (h, cell) in &hourly {
            days.entry(h.div_euclid(24)).or_default().add(cell);
        }
        // Days without hour cells (past the hour cells' retention) come
        // from their day cells.
        let mut day_cells_only = Vec::new();
        for (d, cell) in &rollup.daily {
            if !cell.is_zero() && !days.contains_key(d) {
                days.insert(*d, cell.clone());
                day_cells_only.push(*d);
            }
        }
        let first_hour = [
            hourly.first().map(|(h, _)| *h),
            day_cells_only.first().map(|d| d * 24),
        ]
        .into_iter()
        .flatten()
        .min();
        let last_hour = [
            hourly.last().map(|(h, _)| *h),
            day_cells_only.last().map(|d| d * 24 + 23),
        ]
        .into_iter()
        .flatten()
        .max();
        let per_day = days
            .iter()
            .map(|(d, cell)| TimeRow {
                start: hour_start(d * 24),
                numbers: Numbers::of(cell),
            })
            .collect();

        Report {
            options: ReportOptions {
                since: options.first_hour().map(hour_start),
                until: options.end_hour().map(hour_start),
                ..options.clone()
            },
            first_hour: first_hour.map(hour_start),
            last_hour: last_hour.map(hour_start),
            totals: c,
            rates: Rates::of(&c),
            messages_by_state: States {
                in_flight: c.state_in_flight,
                frozen: c.state_frozen,
                completed: c.state_completed,
                removed: c.state_removed,
            },
            messages_by_origin: Origins {
                smtp: c.origin_smtp,
                local: c.origin_local,
                bounce: c.origin_bounce,
                delay_warning: c.origin_delay_warning,
                unknown: c.origin_unknown,
            },
            bytes: Bytes {
                received: c.bytes_received,
                delivered: c.bytes_delivered,
            },
            first_attempt: FirstAttempt {
                attempted: c.attempted,
                delivered_first_attempt: c.delivered_first_attempt,
                delivered_after_retry: c.delivered - c.delivered_first_attempt,
                delivered_eventually: c.delivered,
                first_attempt_rate: rate(c.delivered_first_attempt, c.attempted),
                eventual_rate: rate(c.delivered, c.attempted),
            },
            delay: DelayStats::of(&total),
            by_host,
            by_domain: table(rollup, Dimension::Domain, top, true),
            by_sender: table(rollup, Dimension::Sender, top, false),
            by_sender_domain: table(rollup, Dimension::SenderDomain, top, false),
            by_remote_host: table(rollup, Dimension::RemoteHost, top, true),
            by_transport: table(rollup, Dimension::Transport, top, true),
            by_client: table(rollup, Dimension::Client, top, false),
            per_hour,
            per_day,
            reasons: reason_rows(rollup),
            rejects: reject_section(rollup, top),
        }
    }
}

fn reason_rows(rollup: &Rollup) -> Vec<ReasonRow> {
    let mut rows: Vec<ReasonRow> = rollup
        .keys(Dimension::Reason)
        .filter(|(_, c)| !c.is_zero())
        .filter_map(|(k, cell)| {
            let c = &cell.counters;
            Some(ReasonRow {
                class: k.parse().ok()?,
                messages: c.messages,
                addresses: c.addresses,
                deferred: c.deferred,
                bounced: c.bounced,
                delivered_later: c.delivered,
                still_deferred: c.still_deferred,
                deferrals: c.deferrals,
                failures: c.failures,
                samples: cell.samples.to_vec(),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.addresses, b.deferrals + b.failures)
            .cmp(&(a.addresses, a.deferrals + a.failures))
            .then(a.class.cmp(&b.class))
    });
    rows
}

fn reject_section(rollup: &Rollup, top: usize) -> Rejects {
    let total = rollup
        .get(Dimension::Total, "")
        .map(|c| c.counters)
        .unwrap_or_default();
    let mut by_reason: Vec<RejectReasonRow> = rollup
        .keys(Dimension::RejectReason)
        .filter(|(_, c)| c.counters.rejected != 0)
        .filter_map(|(k, cell)| {
            Some(RejectReasonRow {
                class: k.parse().ok()?,
                rejected: cell.counters.rejected,
                temporary: cell.counters.rejected_temporary,
                samples: cell.samples.to_vec(),
            })
        })
        .collect();
    by_reason.sort_by(|a, b| b.rejected.cmp(&a.rejected).then(a.class.cmp(&b.class)));
    let mut by_client_ip: Vec<RejectIpRow> = rollup
        .keys(Dimension::RejectIp)
        .filter(|(_, c)| c.counters.rejected != 0)
        .map(|(k, cell)| RejectIpRow {
            ip: k.clone(),
            rejected: cell.counters.rejected,
            temporary: cell.counters.rejected_temporary,
        })
        .collect();
    by_client_ip.sort_by(|a, b| b.rejected.cmp(&a.rejected).then(a.ip.cmp(&b.ip)));
    let distinct_ips = by_client_ip.len();
    if top > 0 {
        by_client_ip.truncate(top);
    }
    Rejects {
        total: total.rejected,
        temporary: total.rejected_temporary,
        permanent: total.rejected - total.rejected_temporary,
        by_reason,
        distinct_ips,
        by_client_ip,
    }
}

// ---------------------------------------------------------------------------
// In-memory aggregation

/// Builds a report in memory from lifecycles and rejections, applying the
/// options' range and filters exactly as a store does from its rollups.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    options: ReportOptions,
    domain: Option<String>,
    rollup: Rollup,
}

impl ReportBuilder {
    /// A builder for a report with these options.
    pub fn new(options: ReportOptions) -> ReportBuilder {
        ReportBuilder {
            domain: options.domain_filter(),
            options,
            rollup: Rollup::new(),
        }
    }

    fn host_matches(&self, host: &str) -> bool {
        self.options.host.as_deref().is_none_or(|h| h == host)
    }

    /// Counts one lifecycle (when it is in range and matches the filters).
    pub fn add_lifecycle(&mut self, lc: &Lifecycle) {
        let hour = cohort_hour(lc);
        if !self.options.hour_in_range(hour) || !self.host_matches(&lc.host) {
            return;
        }
        let rollup = &mut self.rollup;
        for_each_cell(lc, self.domain.as_deref(), |dim, key, cell| {
            rollup.add(Some(hour), &lc.host, dim, key, cell);
        });
    }

    /// Counts one rejection (when it is in range and matches the filters;
    /// with a domain filter, only rejections of a recipient in it).
    pub fn add_reject(&mut self, reject: &RejectRecord) {
        let hour = hour_of(reject.at);
        if !self.options.hour_in_range(hour) || !self.host_matches(reject.host()) {
            return;
        }
        if let Some(d) = &self.domain {
            if reject.recipient.as_deref().and_then(domain_of).as_deref() != Some(d.as_str()) {
                return;
            }
        }
        let rollup = &mut self.rollup;
        for_each_reject_cell(reject, |dim, key, cell| {
            rollup.add(Some(hour), reject.host(), dim, key, cell);
        });
    }

    /// Adds what another builder (with the same options) counted, so that
    /// parts of the input can be counted in parallel.
    pub fn merge(&mut self, other: &ReportBuilder) {
        self.rollup.merge(&other.rollup);
    }

    /// The cells counted so far.
    pub fn rollup(&self) -> &Rollup {
        &self.rollup
    }

    /// The report.
    pub fn finish(&self) -> Report {
        Report::from_rollup(&self.rollup, &self.options)
    }
}

/// Cells of a lifecycle limited to one destination domain, as
/// [`ReportBuilder`] counts them under a domain filter.
pub fn contribution_for_domain(lc: &Lifecycle, domain: &str) -> ReportCells {
    let mut out = ReportCells::new();
    let domain = domain.to_ascii_lowercase();
    for_each_cell(lc, Some(&domain), |dim, key, cell| {
        let k = CellKey {
            hour: cohort_hour(lc),
            host: lc.host.clone(),
            dim,
            key: key.to_string(),
        };
        out.add_cell(k, cell);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Attempt;
    use crate::LogFile;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn each_dimension_has_its_own_place_and_code() {
        for (i, d) in Dimension::ALL.into_iter().enumerate() {
            assert_eq!(d.index(), i, "{d:?}");
            assert_eq!(Dimension::from_code(d.code()), Some(d));
        }
    }

    fn attempt(at: &str, result: AttemptResult, reason: Option<ReasonClass>) -> Attempt {
        Attempt {
            at: t(at),
            result,
            mark: match result {
                AttemptResult::Ok => "=>",
                AttemptResult::Defer => "==",
                AttemptResult::Fail => "**",
            }
            .into(),
            pid: None,
            router: Some("dnslookup".into()),
            transport: Some("remote_smtp".into()),
            remote_host: Some("mx.example.net".into()),
            remote_ip: Some("192.0.2.25".into()),
            remote_port: None,
            tls_cipher: None,
            tls_verified: None,
            confirmation: None,
            stage: None,
            code: None,
            enhanced: None,
            text: reason.map(|r| format!("451 4.0.0 {r} text")),
            errno: None,
            duration_ms: None,
            reason,
            host_problems: vec![],
        }
    }

    fn rcpt(address: &str, outcome: Outcome, history: Vec<Attempt>) -> Recipient {
        Recipient {
            address: address.into(),
            outcome,
            attempts: history.len() as u32,
            reason: history.iter().rev().find_map(|a| a.reason),
            final_at: outcome
                .is_final()
                .then(|| history.last().map(|a| a.at))
                .flatten(),
            history,
            ..Recipient::default()
        }
    }

    fn message(id: &str, received: &str, recipients: Vec<Recipient>) -> Lifecycle {
        let done = recipients.iter().all(|r| r.outcome.is_final());
        Lifecycle {
            host: "mx1.example.org".into(),
            id: id.parse().unwrap(),
            sender: Some("Alice@Example.org".into()),
            size: Some(1000),
            received_at: Some(t(received)),
            state: if done {
                MessageState::Completed
            } else {
                MessageState::InFlight
            },
            incomplete_start: false,
            in_flight: !done,
            origin: Origin::Smtp,
            first_seen: Some(t(received)),
            last_seen: Some(t(received)),
            completed_at: None,
            queue_time_ms: None,
            protocol: Some("esmtp".into()),
            client: Some(crate::lifecycle::Client {
                ip: Some("198.51.100.7".into()),
                ..Default::default()
            }),
            interface: None,
            user: None,
            authenticator: None,
            auth_id: None,
            tls_cipher: None,
            subject: None,
            message_id_header: None,
            envelope_recipients: vec![],
            parent_id: None,
            generated: vec![],
            frozen: false,
            recipients,
            notes: vec![],
            records: 3,
        }
    }

    fn sample_lifecycles() -> Vec<Lifecycle> {
        use AttemptResult::*;
        vec![
            // Delivered first time, 2 s after reception.
            message(
                "1kYFeb-0007uW-0p",
                "2026-12-04T10:00:00Z",
                vec![rcpt(
                    "bob@example.net",
                    Outcome::Delivered,
                    vec![attempt("2026-12-04T10:00:02Z", Ok, None)],
                )],
            ),
            // Greylisted, then delivered an hour later; second address bounced.
            message(
                "1kYFeb-0007uX-0q",
                "2026-12-04T10:30:00Z",
                vec![
                    rcpt(
                        "carol@example.net",
                        Outcome::Delivered,
                        vec![
                            attempt(
                                "2026-12-04T10:30:01Z",
                                Defer,
                                Some(ReasonClass::Greylisting),
                            ),
                            attempt("2026-12-04T11:30:00Z", Ok, None),
                        ],
                    ),
                    rcpt(
                        "nobody@example.com",
                        Outcome::Bounced,
                        vec![attempt(
                            "2026-12-04T10:30:01Z",
                            Fail,
                            Some(ReasonClass::UnknownRecipient),
                        )],
                    ),
                ],
            ),
            // Still deferred, next day.
            message(
                "1kYFeb-0007uY-0r",
                "2026-12-05T09:15:00Z",
                vec![rcpt(
                    "dave@example.com",
                    Outcome::Deferred,
                    vec![attempt(
                        "2026-12-05T09:15:03Z",
                        Defer,
                        Some(ReasonClass::Timeout),
                    )],
                )],
            ),
        ]
    }

    fn reject(at: &str, ip: &str, temporary: bool, class: ReasonClass) -> RejectRecord {
        RejectRecord {
            origin: RecordOrigin {
                host: "mx1.example.org".into(),
                log: LogFile::Reject,
                file_id: 7,
                offset: 100,
            },
            at: t(at),
            stage: RejectStage::Rcpt,
            temporary,
            client_ip: Some(ip.into()),
            client_name: None,
            helo: Some("client.example".into()),
            sender: Some("x@example.org".into()),
            recipient: Some("nobody@example.com".into()),
            message_id: None,
            reason: format!("{class} refused"),
            class,
        }
    }

    fn report_of(lcs: &[Lifecycle], rejects: &[RejectRecord], options: ReportOptions) -> Report {
        let mut b = ReportBuilder::new(options);
        lcs.iter().for_each(|l| b.add_lifecycle(l));
        rejects.iter().for_each(|r| b.add_reject(r));
        b.finish()
    }

    #[test]
    fn totals_count_messages_and_final_addresses() {
        let rejects = vec![
            reject(
                "2026-12-04T10:05:00Z",
                "203.0.113.9",
                false,
                ReasonClass::UnknownRecipient,
            ),
            reject(
                "2026-12-04T10:06:00Z",
                "203.0.113.9",
                true,
                ReasonClass::Greylisting,
            ),
        ];
        let r = report_of(&sample_lifecycles(), &rejects, ReportOptions::default());
        let c = &r.totals;
        assert_eq!((c.messages, c.received, c.addresses), (3, 3, 4));
        assert_eq!(
            (c.delivered, c.bounced, c.deferred, c.still_deferred),
            (2, 1, 2, 1)
        );
        assert_eq!((c.rejected, c.rejected_temporary), (2, 1));
        assert_eq!((c.attempts, c.deferrals, c.failures), (5, 2, 1));
        assert_eq!(c.delivered_first_attempt, 1);
        assert_eq!(c.attempted, 4);
        assert_eq!(c.messages_deferred, 2);
        assert_eq!(c.messages_bounced, 1);
        assert_eq!(r.messages_by_state.completed, 2);
        assert_eq!(r.messages_by_state.in_flight, 1);
        assert_eq!(r.bytes.received, 3000);
        assert_eq!(r.bytes.delivered, 2000);
        assert_eq!(r.rates.delivery_rate, Some(0.5));
        assert_eq!(r.rates.bounce_rate, Some(0.25));
        assert_eq!(r.first_attempt.first_attempt_rate, Some(0.25));
        assert_eq!(r.first_attempt.delivered_after_retry, 1);
        assert_eq!(r.rejects.permanent, 1);
        assert_eq!(r.rejects.by_client_ip[0].rejected, 2);

        let json = serde_json::to_value(&r).unwrap();
        for k in ["received", "delivered", "deferred", "bounced", "rejected"] {
            assert!(json["totals"][k].is_i64(), "totals.{k} missing");
        }
    }

    #[test]
    fn breakdowns_split_addresses_and_count_messages_once() {
        let r = report_of(&sample_lifecycles(), &[], ReportOptions::default());
        let row = |t: &Table, k: &str| {
            t.rows
                .iter()
                .find(|r| r.key == k)
                .map(|r| r.numbers.clone())
                .unwrap()
        };
        let net = row(&r.by_domain, "example.net");
        assert_eq!((net.messages, net.addresses, net.delivered), (2, 2, 2));
        let com = row(&r.by_domain, "example.com");
        assert_eq!(
            (com.messages, com.addresses, com.bounced, com.still_deferred),
            (2, 2, 1, 1)
        );
        let sender = row(&r.by_sender, "alice@example.org");
        assert_eq!((sender.messages, sender.addresses), (3, 4));
        assert_eq!(row(&r.by_sender_domain, "example.org").messages, 3);
        assert_eq!(row(&r.by_remote_host, "mx.example.net").addresses, 4);
        assert_eq!(row(&r.by_transport, "remote_smtp").addresses, 4);
        assert_eq!(row(&r.by_client, "198.51.100.7").messages, 3);
        assert_eq!(row(&r.by_host, "mx1.example.org").addresses, 4);
        assert_eq!(r.per_day.len(), 2);
        assert_eq!(r.per_day[0].numbers.messages, 2);
        assert_eq!(r.per_hour.len(), 2);
    }

    #[test]
    fn reasons_count_addresses_per_class_with_samples() {
        let r = report_of(&sample_lifecycles(), &[], ReportOptions::default());
        let find = |c: ReasonClass| r.reasons.iter().find(|x| x.class == c).unwrap();
        let grey = find(ReasonClass::Greylisting);
        assert_eq!(
            (grey.addresses, grey.deferred, grey.delivered_later),
            (1, 1, 1)
        );
        assert_eq!(grey.bounced, 0);
        assert_eq!(grey.samples, vec!["451 4.0.0 greylisting text".to_string()]);
        let unknown = find(ReasonClass::UnknownRecipient);
        assert_eq!(
            (unknown.bounced, unknown.failures, unknown.deferred),
            (1, 1, 0)
        );
        let timeout = find(ReasonClass::Timeout);
        assert_eq!((timeout.still_deferred, timeout.deferrals), (1, 1));
    }

    #[test]
    fn a_confirmation_is_no_sample_of_an_unclassified_deferral() {
        let mut deferred = attempt("2026-12-04T10:00:01Z", AttemptResult::Defer, None);
        deferred.text = Some("421 try again later".into());
        let mut delivered = attempt("2026-12-04T10:20:00Z", AttemptResult::Ok, None);
        delivered.text = Some("250 OK id=1kYFeb-0007uZ-0s".into());
        let lc = message(
            "1kYFeb-0007uW-0p",
            "2026-12-04T10:00:00Z",
            vec![rcpt(
                "erin@example.net",
                Outcome::Delivered,
                vec![deferred, delivered],
            )],
        );
        let r = report_of(&[lc], &[], ReportOptions::default());
        let other = r
            .reasons
            .iter()
            .find(|x| x.class == ReasonClass::Other)
            .expect("the deferral's class");
        assert_eq!(other.samples, vec!["421 try again later".to_string()]);
        assert_eq!((other.deferrals, other.delivered_later), (1, 1));
    }

    #[test]
    fn a_delivered_address_s_last_text_is_no_sample_of_its_deferral() {
        // A deferral of a known class logged without a text, then the
        // delivery: the address's last text is the confirmation.
        let deferred = attempt(
            "2026-12-04T10:00:01Z",
            AttemptResult::Defer,
            Some(ReasonClass::Greylisting),
        );
        let deferred = Attempt {
            text: None,
            ..deferred
        };
        let mut delivered = attempt("2026-12-04T10:20:00Z", AttemptResult::Ok, None);
        delivered.text = Some("250 OK id=1kYFeb-0007uZ-0s".into());
        let mut r = rcpt(
            "erin@example.net",
            Outcome::Delivered,
            vec![deferred, delivered],
        );
        r.last_text = Some("250 OK id=1kYFeb-0007uZ-0s".into());
        let lc = message("1kYFeb-0007uW-0p", "2026-12-04T10:00:00Z", vec![r]);
        let report = report_of(&[lc], &[], ReportOptions::default());
        let grey = report
            .reasons
            .iter()
            .find(|x| x.class == ReasonClass::Greylisting)
            .expect("the deferral's class");
        assert_eq!(grey.deferrals, 1);
        assert!(grey.samples.is_empty(), "{:?}", grey.samples);
    }

    #[test]
    fn delay_percentiles_come_from_delivered_addresses() {
        let r = report_of(&sample_lifecycles(), &[], ReportOptions::default());
        assert_eq!(r.delay.count, 2);
        let p50 = r.delay.p50_ms.unwrap();
        assert!((1900..=2100).contains(&p50), "p50 {p50}");
        let max = r.delay.max_ms.unwrap();
        let exact = 3_600_000.0;
        assert!((max as f64 - exact).abs() / exact < 0.045, "max {max}");
        assert_eq!(r.delay.mean_ms, Some((2_000 + 3_600_000) / 2));
    }

    #[test]
    fn range_and_filters_follow_the_reception_hour() {
        let since = Some(t("2026-12-04T10:20:00Z"));
        let until = Some(t("2026-12-04T10:40:00Z"));
        let r = report_of(
            &sample_lifecycles(),
            &[],
            ReportOptions {
                since,
                until,
                ..Default::default()
            },
        );
        // Whole hours: 10:00 to 11:00 holds the first two messages.
        assert_eq!(r.totals.messages, 2);
        assert_eq!(r.options.since, Some(t("2026-12-04T10:00:00Z")));
        assert_eq!(r.options.until, Some(t("2026-12-04T11:00:00Z")));

        let d = report_of(
            &sample_lifecycles(),
            &[],
            ReportOptions {
                domain: Some("Example.COM".into()),
                ..Default::default()
            },
        );
        assert_eq!((d.totals.messages, d.totals.addresses), (2, 2));
        assert_eq!(d.totals.delivered, 0);

        let h = report_of(
            &sample_lifecycles(),
            &[],
            ReportOptions {
                host: Some("other".into()),
                ..Default::default()
            },
        );
        assert_eq!(h.totals.messages, 0);
    }

    #[test]
    fn subtracting_the_old_contribution_moves_counts() {
        let mut lcs = sample_lifecycles();
        let mut cells = ReportCells::new();
        for l in &lcs {
            cells.add(&contribution(l));
        }

        // The still-deferred message gets delivered the next hour.
        let old = lcs[2].clone();
        let r = &mut lcs[2].recipients[0];
        r.history
            .push(attempt("2026-12-05T10:15:00Z", AttemptResult::Ok, None));
        r.attempts = 2;
        r.outcome = Outcome::Delivered;
        r.final_at = Some(t("2026-12-05T10:15:00Z"));
        lcs[2].state = MessageState::Completed;
        cells.subtract(&contribution(&old));
        cells.add(&contribution(&lcs[2]));
        cells.prune();

        let mut from_cells = Rollup::new();
        from_cells.add_cells(&cells);
        let incremental = Report::from_rollup(&from_cells, &ReportOptions::default());
        let fresh = report_of(&lcs, &[], ReportOptions::default());
        assert_eq!(incremental, fresh);
        assert_eq!(fresh.totals.still_deferred, 0);
        assert_eq!(fresh.totals.delivered, 3);
        assert_eq!(fresh.totals.deferred, 2);
    }

    #[test]
    fn top_rows_are_the_largest_in_order() {
        let mut rollup = Rollup::new();
        for (i, n) in [5, 1, 9, 3, 9, 7, 2].iter().enumerate() {
            let cell = Cell {
                counters: Counters {
                    messages: *n,
                    ..Counters::default()
                },
                ..Cell::default()
            };
            rollup.add(None, "mx", Dimension::Sender, &format!("s{i}"), &cell);
        }
        let t = table(&rollup, Dimension::Sender, 3, false);
        let keys: Vec<&str> = t.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, vec!["s2", "s4", "s5"]);
        assert_eq!(t.distinct, 7);
        assert_eq!(table(&rollup, Dimension::Sender, 0, false).rows.len(), 7);
    }

    #[test]
    fn builders_merge_to_the_same_report() {
        let lcs = sample_lifecycles();
        let whole = report_of(&lcs, &[], ReportOptions::default());
        let mut a = ReportBuilder::new(ReportOptions::default());
        let mut b = ReportBuilder::new(ReportOptions::default());
        a.add_lifecycle(&lcs[0]);
        b.add_lifecycle(&lcs[1]);
        b.add_lifecycle(&lcs[2]);
        a.merge(&b);
        assert_eq!(a.finish(), whole);
    }

    #[test]
    fn day_cells_sum_hour_cells() {
        let mut cells = ReportCells::new();
        for l in &sample_lifecycles() {
            cells.add(&contribution(l));
        }
        let days = cells.by_day();
        let total: i64 = days
            .cells
            .iter()
            .filter(|(k, _)| k.dim == Dimension::Total)
            .map(|(_, c)| c.counters.messages)
            .sum();
        assert_eq!(total, 3);
        assert_eq!(
            days.cells
                .keys()
                .filter(|k| k.dim == Dimension::Total)
                .count(),
            2
        );
    }

    #[test]
    fn histogram_round_trips_and_bounds_error() {
        let mut h = DelayHistogram::default();
        for ms in [0, 1, 7, 999, 1000, 65_000, 86_400_000] {
            h.record(ms);
        }
        let mut other = DelayHistogram::default();
        other.record(5);
        h.subtract(&other);
        assert_eq!(DelayHistogram::from_bytes(&h.to_bytes()), Some(h.clone()));
        assert_eq!(h.buckets.iter().filter(|(_, n)| *n < 0).count(), 1);
        for ms in [
            1u64,
            2,
            3,
            10,
            999,
            1234,
            60_000,
            3_600_000,
            86_400_000,
            1 << 35,
        ] {
            let v = bucket_value(delay_bucket(ms)) as f64;
            let err = (v - ms as f64).abs();
            assert!(err <= 1.0 || err / ms as f64 <= 0.045, "{ms} read as {v}");
        }
        assert_eq!(DelayHistogram::from_bytes(&[0x80]), None);
    }

    #[test]
    fn histogram_buckets_stay_sorted_and_exact_whatever_the_order() {
        // Dense runs, holes and counts that return to zero, against a map.
        let mut h = DelayHistogram::default();
        let mut expected = std::collections::BTreeMap::<u16, i64>::new();
        let mut x: u64 = 7;
        for step in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let bucket = if step % 3 == 0 {
                (x >> 33) as u16 % 400
            } else {
                100 + (x >> 40) as u16 % 40
            };
            let n = if x >> 63 == 1 { -1 } else { 1 };
            h.add_to(bucket, n);
            *expected.entry(bucket).or_default() += n;
            expected.retain(|_, c| *c != 0);
        }
        let got: Vec<(u16, i64)> = h.buckets.iter().copied().collect();
        let want: Vec<(u16, i64)> = expected.into_iter().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn samples_keep_the_same_set_in_any_order() {
        let texts = ["d", "a", "c", "b", "a"];
        let mut x = Samples::default();
        texts.iter().for_each(|s| x.insert(s));
        let mut y = Samples::default();
        texts.iter().rev().for_each(|s| y.insert(s));
        assert_eq!(x, y);
        assert_eq!(x.to_vec(), vec!["a", "b", "c"]);
    }

    #[test]
    fn counters_map_to_names_in_order() {
        let c = Counters {
            rejected: 4,
            ..Counters::default()
        };
        let a = c.to_array();
        let i = Counters::NAMES
            .iter()
            .position(|n| *n == "rejected")
            .unwrap();
        assert_eq!(a[i], 4);
        assert_eq!(Counters::from_array(a), c);
        assert!(Dimension::ALL
            .iter()
            .all(|d| Dimension::from_code(d.code()) == Some(*d)));
    }

    #[test]
    fn message_without_arrival_counts_at_first_sighting() {
        let mut lc = sample_lifecycles().remove(0);
        lc.received_at = None;
        lc.incomplete_start = true;
        lc.origin = Origin::Unknown;
        lc.first_seen = Some(t("2026-12-04T12:10:00Z"));
        let cells = contribution(&lc);
        assert!(cells
            .cells
            .keys()
            .all(|k| k.hour == hour_of(t("2026-12-04T12:00:00Z"))));
        let r = report_of(&[lc], &[], ReportOptions::default());
        assert_eq!((r.totals.received, r.totals.incomplete), (0, 1));
        assert_eq!(r.delay.count, 0);
    }
}
