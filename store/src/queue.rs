//! The values of the queue part of the [`Store`](crate::Store): what
//! searches of a host's current queue, queue health, queue history and
//! operators' queue jobs put in and get back.
//!
//! A host's queue comes in as [`QueueSnapshot`]s
//! (`exim_pilot_schema::queue`). A store keeps two things of each:
//!
//! - its totals ([`QueueTotals`]), as history, one row per (host, time
//!   the snapshot was taken): what trends and growth are computed from;
//! - its messages, as the host's current queue, replacing the messages of
//!   the host's previous snapshot. A snapshot older than the host's
//!   current one (one that arrived late) adds to the history only.
//!
//! Saving the same snapshot twice changes nothing: a snapshot is named by
//! its host and the time it was taken.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use exim_pilot_schema::queue::{QueueJob, QueueTotals, QueuedMessage};
use exim_pilot_schema::{AttemptResult, Lifecycle, MessageId, QueueAction, ReasonClass};

/// Which recipients a recipient search looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientScope {
    /// Those still waiting for delivery (what the message is queued for).
    #[default]
    Undelivered,
    /// Those Exim marked delivered.
    Delivered,
    /// Every recipient.
    Any,
}

/// Which messages of the current queues a search returns. Every field
/// given must match. Texts match as case-insensitive substrings (ASCII
/// letters only fold). A message whose age or size is unknown (a spool
/// read error) matches no age or size bound.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct QueueFilter {
    /// On this mail server.
    pub host: Option<String>,
    /// With this text in the envelope sender.
    pub sender: Option<String>,
    /// With this text in a recipient of `recipient_scope`.
    pub recipient: Option<String>,
    /// Which recipients `recipient` looks at.
    pub recipient_scope: RecipientScope,
    /// One of these ids; empty means any.
    pub ids: Vec<MessageId>,
    /// Queued for at least this many seconds.
    pub min_age_secs: Option<u64>,
    /// Queued for at most this many seconds.
    pub max_age_secs: Option<u64>,
    /// At least this many bytes.
    pub min_size: Option<u64>,
    /// At most this many bytes.
    pub max_size: Option<u64>,
    /// Frozen (`true`) or not (`false`).
    pub frozen: Option<bool>,
    /// A bounce (`true`: null sender) or not (`false`).
    pub bounce: Option<bool>,
}

impl QueueFilter {
    /// The sender text as searched: trimmed and lowercased.
    pub(crate) fn sender_needle(&self) -> Option<String> {
        self.sender.as_deref().map(needle)
    }

    /// The recipient text as searched: trimmed and lowercased.
    pub(crate) fn recipient_needle(&self) -> Option<String> {
        self.recipient.as_deref().map(needle)
    }
}

fn needle(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// The latest deferral of a queued message, from its lifecycle.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LastDeferral {
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// Its reason class, when the classifier gave one.
    pub class: Option<ReasonClass>,
    /// Its error text.
    pub text: Option<String>,
}

impl LastDeferral {
    /// The latest deferral of any recipient of `lc`, if it had one. Of two
    /// at the same time, the later recipient's.
    pub fn of(lc: &Lifecycle) -> Option<LastDeferral> {
        lc.recipients
            .iter()
            .flat_map(|r| r.history.iter())
            .filter(|a| a.result == AttemptResult::Defer)
            .max_by_key(|a| a.at)
            .map(|a| LastDeferral {
                at: a.at,
                class: a.reason,
                text: a.text.clone(),
            })
    }
}

/// One message of a host's current queue.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The host whose queue holds it.
    pub host: String,
    /// When the snapshot it comes from was taken: its age is as of then.
    pub snapshot_at: DateTime<Utc>,
    /// The message as the snapshot listed it.
    pub message: QueuedMessage,
    /// Its latest deferral, from its lifecycle; `None` when it has no
    /// lifecycle or its lifecycle shows no deferral.
    pub last_deferral: Option<LastDeferral>,
}

/// The order of a page of queued messages: oldest first (age
/// descending, unknown ages last), then by host and id.
pub(crate) fn age_key(message: &QueuedMessage) -> i64 {
    message
        .age_secs
        .map_or(-1, |a| a.min(i64::MAX as u64) as i64)
}

/// How one host's queue is doing, from its latest snapshot.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QueueHealth {
    /// The host.
    pub host: String,
    /// When its latest snapshot was taken: how stale these figures are.
    pub snapshot_at: DateTime<Utc>,
    /// The latest snapshot's totals.
    pub totals: QueueTotals,
    /// Messages of the current queue whose lifecycle shows at least one
    /// deferral.
    pub deferred: u64,
    /// Messages now minus messages in the snapshot taken closest to one
    /// hour before the latest one; `None` without a snapshot that old.
    pub growth_last_hour: Option<i64>,
}

/// A snapshot's time and message count, for growth.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Count {
    pub taken_ms: i64,
    pub messages: u64,
}

/// The growth of the hour before `latest`: `before` is the latest
/// snapshot at or before that hour's start, `after` the earliest one
/// after it; of the two, the one closer to the hour's start counts (the
/// older on a tie). Without `before` there is no history that old.
pub(crate) fn growth(latest: Count, before: Option<Count>, after: Option<Count>) -> Option<i64> {
    let mark = latest.taken_ms - HOUR.num_milliseconds();
    let before = before?;
    let base = match after {
        Some(a) if a.taken_ms - mark < mark - before.taken_ms => a,
        _ => before,
    };
    Some(latest.messages as i64 - base.messages as i64)
}

/// An hour.
pub(crate) const HOUR: Duration = Duration::hours(1);

/// Which queue totals to return.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct QueueHistoryQuery {
    /// Only this host; `None` for every host.
    pub host: Option<String>,
    /// Snapshots taken from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Snapshots taken before this time.
    pub until: Option<DateTime<Utc>>,
    /// Buckets of this many seconds (from the epoch), each holding the
    /// largest value of each figure in it; `None` for every snapshot.
    pub bucket_secs: Option<u32>,
    /// At most this many points (0 means 1,000; capped at
    /// [`MAX_HISTORY_POINTS`]): the latest of the range.
    pub limit: usize,
}

/// The most points a history query returns.
pub const MAX_HISTORY_POINTS: usize = 10_000;

impl QueueHistoryQuery {
    /// The number of points asked for, within bounds.
    pub(crate) fn points(&self) -> usize {
        match self.limit {
            0 => 1_000,
            n => n.min(MAX_HISTORY_POINTS),
        }
    }

    /// The bucket width in milliseconds (1 for no buckets).
    pub(crate) fn bucket_ms(&self) -> i64 {
        self.bucket_secs.map_or(1, |s| i64::from(s.max(1)) * 1000)
    }
}

/// One point of a host's queue history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QueuePoint {
    /// The host.
    pub host: String,
    /// The snapshot's time, or its bucket's start.
    pub at: DateTime<Utc>,
    /// The totals (with buckets, the largest of each figure).
    pub totals: QueueTotals,
}

/// Which queue jobs to return. Every field given must match.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct QueueJobFilter {
    /// On this host.
    pub host: Option<String>,
    /// Asked by this user.
    pub actor: Option<String>,
    /// This action.
    pub action: Option<QueueAction>,
    /// Asked from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Asked before this time.
    pub until: Option<DateTime<Utc>>,
}

/// How many messages of a job ended each way so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct QueueJobCounts {
    /// Done.
    pub done: u64,
    /// Failed.
    pub failed: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Not run: the job had expired.
    pub expired: u64,
}

impl QueueJobCounts {
    /// Results so far.
    pub fn total(&self) -> u64 {
        self.done + self.failed + self.timed_out + self.expired
    }

    /// Counts one more result of `status` (its name, as stored).
    pub(crate) fn add(&mut self, status: &str, n: u64) {
        match status {
            "done" => self.done += n,
            "failed" => self.failed += n,
            "timed_out" => self.timed_out += n,
            _ => self.expired += n,
        }
    }
}

/// A job with the counts of its results, as lists show it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QueueJobSummary {
    /// The job.
    pub job: QueueJob,
    /// Its results so far.
    pub counts: QueueJobCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(minutes: i64, messages: u64) -> Count {
        Count {
            taken_ms: minutes * 60_000,
            messages,
        }
    }

    #[test]
    fn growth_compares_with_the_snapshot_closest_to_an_hour_before() {
        let latest = count(120, 50);
        assert_eq!(growth(latest, None, Some(count(70, 10))), None);
        assert_eq!(
            growth(latest, Some(count(55, 20)), Some(count(70, 10))),
            Some(30)
        );
        assert_eq!(
            growth(latest, Some(count(40, 20)), Some(count(61, 10))),
            Some(40)
        );
        assert_eq!(growth(latest, Some(count(60, 60)), None), Some(-10));
    }
}
