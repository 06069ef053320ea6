//! The values that go into and come out of a [`Store`](crate::Store).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use exim_pilot_schema::report::Dimension;
use exim_pilot_schema::{
    Lifecycle, LogFile, MessageId, MessageState, Outcome, RawRecord, ReasonClass, RecordOrigin,
    RejectRecord,
};

use crate::error::StoreError;

/// One raw log record as stored: its bytes and origin, plus what the parser
/// said about it, so that a message's records and full-text hits can be
/// found without parsing again.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Where it was read; names it uniquely.
    pub origin: RecordOrigin,
    /// When the tailer read it, in milliseconds since the Unix epoch.
    pub read_at_ms: i64,
    /// The record's log time, in UTC, when it had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at: Option<DateTime<Utc>>,
    /// The message it names, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_id: Option<MessageId>,
    /// The parser's event kind (`arrival`, `delivery`, `reject`...).
    pub event_kind: String,
    /// The record's bytes, exactly as read.
    #[serde(with = "exim_pilot_schema::record::bytes_as_text")]
    pub bytes: Vec<u8>,
}

impl StoredRecord {
    /// The stored form of a raw record.
    pub fn new(
        raw: RawRecord,
        at: Option<DateTime<Utc>>,
        message_id: Option<MessageId>,
        event_kind: &str,
    ) -> StoredRecord {
        StoredRecord {
            origin: raw.origin,
            read_at_ms: raw.read_at_ms,
            at,
            message_id,
            event_kind: event_kind.to_string(),
            bytes: raw.bytes,
        }
    }

    /// The record's text, with bytes that are not UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A small named value kept with the data it describes: a tailer
/// checkpoint, the correlator's state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Blob {
    /// Its name; saving under the same name replaces it.
    pub name: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Everything one step of a pipeline writes, committed atomically.
///
/// Standalone mode commits each batch of records together with the
/// lifecycles they changed, the rejections they held, the tailer's new
/// checkpoint and the correlator's state. After a crash the store holds
/// either all of a batch or none of it, and the checkpoint it holds says
/// exactly where the data stops, so reading resumes there: nothing is lost,
/// and what is read twice is recognised by its origin and changes nothing.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Batch {
    /// Raw records; one whose origin is already stored is skipped.
    pub records: Vec<StoredRecord>,
    /// Lifecycles, new or changed; an unchanged one changes nothing.
    pub lifecycles: Vec<Lifecycle>,
    /// SMTP rejections; one whose origin is already stored is skipped.
    pub rejects: Vec<RejectRecord>,
    /// Named values to save.
    pub blobs: Vec<Blob>,
}

impl Batch {
    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.lifecycles.is_empty()
            && self.rejects.is_empty()
            && self.blobs.is_empty()
    }
}

/// What a committed batch changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct BatchSummary {
    /// Records stored (not counting those already there).
    pub records_added: u64,
    /// Lifecycles stored for the first time.
    pub lifecycles_added: u64,
    /// Lifecycles that replaced a different stored version.
    pub lifecycles_updated: u64,
    /// Rejections stored (not counting those already there).
    pub rejects_added: u64,
    /// Blobs saved.
    pub blobs_saved: u64,
}

/// Which lifecycles a search returns. Every field given must match. Times
/// apply to the cohort time (reception, or first sighting when the arrival
/// was not logged); addresses and domains match without regard to case.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct MessageFilter {
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// This mail server.
    pub host: Option<String>,
    /// This envelope sender (`""` for the null sender).
    pub sender: Option<String>,
    /// This sender domain.
    pub sender_domain: Option<String>,
    /// A final address or the original recipient it came from.
    pub recipient: Option<String>,
    /// The sender or a recipient: every message to or from an address.
    pub address: Option<String>,
    /// A final address in this destination domain.
    pub domain: Option<String>,
    /// In this state.
    pub state: Option<MessageState>,
    /// With a final address of this outcome.
    pub outcome: Option<Outcome>,
    /// With a deferral or failure of this class.
    pub reason: Option<ReasonClass>,
    /// With this text in its subject, matched literally, ASCII letters in
    /// either case; refused when [`check_search_text`] refuses it.
    pub subject: Option<String>,
    /// With this Message-ID header (angle brackets optional).
    pub message_id_header: Option<String>,
    /// Sent by this client IP.
    pub client_ip: Option<String>,
}

/// Which page of results to return.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PageRequest {
    /// At most this many items (capped at [`MAX_PAGE`]).
    pub first: usize,
    /// The `end_cursor` of the previous page; `None` for the first page.
    pub after: Option<String>,
}

/// The largest page a store returns.
pub const MAX_PAGE: usize = 1000;

impl Default for PageRequest {
    fn default() -> PageRequest {
        PageRequest {
            first: 50,
            after: None,
        }
    }
}

/// One page of results, newest first.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page.
    pub end_cursor: Option<String>,
    /// True when there are more items after this page.
    pub has_next_page: bool,
}

/// Which rejections to return.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RejectFilter {
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// This mail server.
    pub host: Option<String>,
    /// From this client IP.
    pub client_ip: Option<String>,
    /// Of this reason class.
    pub class: Option<ReasonClass>,
}

/// Most words a full-text search may hold. Each word is one more index
/// lookup to intersect; a few dozen find any line worth finding, while
/// tens of thousands keep the database busy for minutes.
pub const MAX_SEARCH_WORDS: usize = 32;

/// Longest text, in bytes, a full-text search or a subject filter may be.
pub const MAX_SEARCH_BYTES: usize = 1000;

/// Checks text a user typed to search for: at most [`MAX_SEARCH_BYTES`]
/// and no NUL (which the database would read as the end of the text).
/// `what` names the field in the error.
pub fn check_search_text(what: &str, text: &str) -> Result<(), StoreError> {
    if text.contains('\0') {
        return Err(StoreError::InvalidQuery(format!(
            "{what} contains a NUL character; remove it"
        )));
    }
    if text.len() > MAX_SEARCH_BYTES {
        return Err(StoreError::InvalidQuery(format!(
            "{what} is {} bytes long; search for at most {MAX_SEARCH_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// The words of a full-text search, checked: at least one, at most
/// [`MAX_SEARCH_WORDS`], and text [`check_search_text`] accepts.
pub fn search_words(text: &str) -> Result<Vec<&str>, StoreError> {
    check_search_text("the search text", text)?;
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return Err(StoreError::InvalidQuery(
            "full-text search needs at least one word".into(),
        ));
    }
    if words.len() > MAX_SEARCH_WORDS {
        return Err(StoreError::InvalidQuery(format!(
            "the search text has {} words; search for at most {MAX_SEARCH_WORDS}",
            words.len()
        )));
    }
    Ok(words)
}

/// A full-text search over raw log lines.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct LineQuery {
    /// Words that must all appear. Each word matches as a phrase of its
    /// parts, so `bob@example.com` or a message id finds the lines that
    /// contain it.
    pub text: String,
    /// Only this mail server.
    pub host: Option<String>,
    /// Only this log.
    pub log: Option<LogFile>,
    /// From this log time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this log time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many lines (capped at [`MAX_PAGE`]; 0 means 100).
    pub limit: usize,
}

/// Time granularity of rollup cells.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// One cell per hour.
    #[default]
    Hour,
    /// One cell per UTC day.
    Day,
    /// One cell for the whole range, from the day cells of its UTC days
    /// (the range is rounded out to whole days, as for `Day`): what a
    /// caller that sums over time anyway asks for, so that the store sums
    /// where the cells are.
    Range,
}

/// A query for raw rollup cells, for callers that group and bucket numbers
/// themselves (dashboards, the API's deliverability query).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct CellQuery {
    /// From this time on (rounded down to the bucket).
    pub since: Option<DateTime<Utc>>,
    /// Before this time (rounded up to the bucket).
    pub until: Option<DateTime<Utc>>,
    /// Only this mail server.
    pub host: Option<String>,
    /// Only these dimensions; empty means all.
    pub dims: Vec<Dimension>,
    /// Hour, day or whole-range cells. The key's `hour` field holds the
    /// hour number, the day number for day cells, or the first day's
    /// number for a whole range (0 without `since`).
    pub bucket: Bucket,
}

/// The largest number of addresses [`RecipientQuery::top`] may ask for.
pub const MAX_TOP_RECIPIENTS: usize = 1000;

/// Which final addresses to rank by the messages sent to them. Times
/// apply to the messages' cohort time, as in [`MessageFilter`].
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RecipientQuery {
    /// Messages from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Messages before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this mail server.
    pub host: Option<String>,
    /// Only addresses of this destination domain (without regard to case).
    pub domain: Option<String>,
    /// At most this many addresses (capped at [`MAX_TOP_RECIPIENTS`]; 0
    /// means 20).
    pub top: usize,
}

impl RecipientQuery {
    /// How many addresses to return.
    pub fn limit(&self) -> usize {
        match self.top {
            0 => 20,
            n => n.min(MAX_TOP_RECIPIENTS),
        }
    }

    /// The domain asked, as stored: trimmed and lowercased.
    pub fn domain_key(&self) -> Option<String> {
        self.domain.as_ref().map(|d| d.trim().to_ascii_lowercase())
    }
}

/// What the messages of a range did for one final address (lowercased).
/// Counts are of final addresses: a message that reached the same
/// address twice (through two aliases) counts it twice, but once in
/// `messages`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RecipientCount {
    /// The final address: a mailbox, a pipe, a file or `:blackhole:`.
    pub address: String,
    /// Messages with this final address.
    pub messages: i64,
    /// Delivered.
    pub delivered: i64,
    /// Deferred at least once, delivered since or not.
    pub deferred: i64,
    /// Still on the queue after a deferral.
    pub still_deferred: i64,
    /// Bounced.
    pub bounced: i64,
    /// The latest delivery attempt (delivery, deferral or failure) to
    /// it; `None` when none was logged, or its attempts are past their
    /// retention.
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// What a store knows about one mail server.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HostSummary {
    /// The server's name.
    pub host: String,
    /// The earliest log time of its records.
    pub first_seen: Option<DateTime<Utc>>,
    /// The latest log time of its records.
    pub last_seen: Option<DateTime<Utc>>,
    /// When its latest record was read, in milliseconds since the epoch.
    pub last_read_at_ms: Option<i64>,
    /// Records stored, ever (retention does not lower it).
    pub records: i64,
    /// Messages stored, ever.
    pub messages: i64,
    /// Rejections stored, ever.
    pub rejects: i64,
}

/// One entry of the audit trail: who did what, from where, with what
/// result. Entries are only ever appended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// The user name (or `-` when unknown, e.g. a failed login).
    pub actor: String,
    /// The actor's role at the time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    /// The client's IP address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_ip: Option<String>,
    /// What was done (`login`, `user_add`, `queue_remove`...).
    pub action: String,
    /// What it was done to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    /// Its parameters, as JSON.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub params: Option<serde_json::Value>,
    /// `ok`, `denied`, `failed`...
    pub outcome: String,
}

/// Which audit entries to return.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// By this actor.
    pub actor: Option<String>,
    /// This action.
    pub action: Option<String>,
}

/// How long each kind of data is kept, in days.
///
/// Raw records, attempts, rejections and audit entries go by their own
/// time. Lifecycles go by the last time a record named them, so a message
/// still changing is never dropped; a lifecycle is dropped with its
/// recipients and attempts. Rollup cells outlive the lifecycles they were
/// made from, so reports over long ranges keep working after the details
/// are gone: hour cells for `rollup_hours` days and day cells for
/// `rollup_days` days (reports older than the hour cells are whole days).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Retention {
    /// Raw log records and their full-text index (default 90).
    pub raw_records: u32,
    /// Delivery attempts (default 180).
    pub attempts: u32,
    /// Lifecycles, after their last record (default 180).
    pub lifecycles: u32,
    /// SMTP rejections (default 180).
    pub rejects: u32,
    /// Audit entries (default 365).
    pub audit: u32,
    /// Hourly rollup cells (default 180).
    pub rollup_hours: u32,
    /// Daily rollup cells (default 730).
    pub rollup_days: u32,
    /// Queue snapshots: the totals history, and the current queue of a
    /// host whose latest snapshot is older (default 30).
    pub queue_snapshots: u32,
    /// Operators' queue jobs and their results (default 365, as the
    /// audit trail).
    pub queue_jobs: u32,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            raw_records: 90,
            attempts: 180,
            lifecycles: 180,
            rejects: 180,
            audit: 365,
            rollup_hours: 180,
            rollup_days: 730,
            queue_snapshots: 30,
            queue_jobs: 365,
        }
    }
}

impl Retention {
    /// The instant before which data kept `days` days is dropped.
    pub fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
        now - Duration::days(days as i64)
    }
}

/// What one retention pass deleted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RetentionSummary {
    /// Raw records.
    pub raw_records: u64,
    /// Attempts.
    pub attempts: u64,
    /// Lifecycles.
    pub lifecycles: u64,
    /// Rejections.
    pub rejects: u64,
    /// Audit entries.
    pub audit: u64,
    /// Rollup cells (hour and day).
    pub rollup_cells: u64,
    /// Queue snapshots of the totals history.
    pub queue_snapshots: u64,
    /// Queue jobs (their results go with them).
    pub queue_jobs: u64,
}

/// What a user of the API may do. Each role may do everything the ones
/// below it may.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads messages, reports and logs.
    Viewer,
    /// Also acts on queues.
    Operator,
    /// Also manages users and reads the audit trail.
    Admin,
}

impl Role {
    /// The role's name as stored and shown: `admin`, `operator`, `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: use admin, operator or viewer"
            )),
        }
    }
}

/// A user of the API.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct User {
    /// The login name; unique.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The password hash in PHC string form (`$argon2id$...`).
    pub password_hash: String,
    /// A disabled user cannot log in, and its sessions are revoked.
    pub disabled: bool,
    /// The mail servers the user may see; empty means all.
    pub hosts: Vec<String>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user was last changed.
    pub updated_at: DateTime<Utc>,
}

/// One login: what a refresh token stands for. Refreshing replaces the
/// token's hash (the old token stops working); logging out, changing the
/// password or disabling the user revokes it, and a revoked or expired
/// session renews nothing.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Session {
    /// Its identity, named in the access tokens issued for it.
    pub id: String,
    /// The user who logged in.
    pub user: String,
    /// A hash of the current refresh token; the token itself is never
    /// stored.
    pub token_hash: String,
    /// When the user logged in.
    pub created_at: DateTime<Utc>,
    /// When the session ends unless revoked before.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The client's IP address at login.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_ip: Option<String>,
}

impl Session {
    /// True while the session may renew tokens and its access tokens are
    /// accepted.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}
