//! The GraphQL types of queues: inputs, enums and views of the store's
//! queue values.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Result, SimpleObject};
use chrono::{DateTime, Utc};

use exim_pilot_schema::queue::{
    MessageView, QueueActionResult, QueueActionStatus, QueueJob, QueueTotals,
};
use exim_pilot_schema::{MessageId, QueueAction};
use exim_pilot_store::{
    QueueEntry, QueueFilter as StoreFilter, QueueHealth as StoreHealth, QueueJobCounts,
    QueuePoint as StorePoint, RecipientScope as StoreScope,
};

use crate::graphql::types::{name_of, PageInfo};
use crate::graphql::{api, caller};
use exim_pilot_store::Role;

/// What an operator can do to queued messages.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "QueueAction")]
pub enum ActionKind {
    /// Try to deliver now (`exim -M`).
    Deliver,
    /// Freeze (`exim -Mf`).
    Freeze,
    /// Thaw (`exim -Mt`).
    Thaw,
    /// Remove without a bounce (`exim -Mrm`).
    Remove,
    /// Give up and bounce to the sender (`exim -Mg`).
    GiveUp,
}

impl From<ActionKind> for QueueAction {
    fn from(a: ActionKind) -> QueueAction {
        match a {
            ActionKind::Deliver => QueueAction::Deliver,
            ActionKind::Freeze => QueueAction::Freeze,
            ActionKind::Thaw => QueueAction::Thaw,
            ActionKind::Remove => QueueAction::Remove,
            ActionKind::GiveUp => QueueAction::GiveUp,
        }
    }
}

impl From<QueueAction> for ActionKind {
    fn from(a: QueueAction) -> ActionKind {
        match a {
            QueueAction::Deliver => ActionKind::Deliver,
            QueueAction::Freeze => ActionKind::Freeze,
            QueueAction::Thaw => ActionKind::Thaw,
            QueueAction::Remove => ActionKind::Remove,
            QueueAction::GiveUp => ActionKind::GiveUp,
        }
    }
}

/// How an action on one message ended.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "QueueActionStatus")]
pub enum StatusKind {
    /// Exim did it.
    Done,
    /// Exim refused or failed (see the output).
    Failed,
    /// Exim did not finish in time and was stopped.
    TimedOut,
    /// Not run: the job reached the mail server after it expired.
    Expired,
}

impl From<QueueActionStatus> for StatusKind {
    fn from(s: QueueActionStatus) -> StatusKind {
        match s {
            QueueActionStatus::Done => StatusKind::Done,
            QueueActionStatus::Failed => StatusKind::Failed,
            QueueActionStatus::TimedOut => StatusKind::TimedOut,
            QueueActionStatus::Expired => StatusKind::Expired,
        }
    }
}

/// Which view of a queued message to read.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "MessageView")]
pub enum ViewKind {
    /// Envelope and headers (`exim -Mvh`).
    Headers,
    /// The message's own log (`exim -Mvl`).
    Log,
    /// The body (`exim -Mvb`), cut to a size the mail server's node sets.
    Body,
}

impl From<ViewKind> for MessageView {
    fn from(v: ViewKind) -> MessageView {
        match v {
            ViewKind::Headers => MessageView::Headers,
            ViewKind::Log => MessageView::Log,
            ViewKind::Body => MessageView::Body,
        }
    }
}

/// Which recipients a recipient search looks at.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum RecipientScope {
    /// Those still waiting for delivery.
    #[default]
    Undelivered,
    /// Those already delivered (the message waits for others).
    Delivered,
    /// All of them.
    Any,
}

/// Bucket widths of queue history.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum QueueBucket {
    /// A minute.
    Minute,
    /// Five minutes.
    FiveMinutes,
    /// An hour.
    Hour,
    /// A UTC day.
    Day,
}

impl QueueBucket {
    /// Its width in seconds.
    pub fn seconds(self) -> u32 {
        match self {
            QueueBucket::Minute => 60,
            QueueBucket::FiveMinutes => 300,
            QueueBucket::Hour => 3_600,
            QueueBucket::Day => 86_400,
        }
    }
}

/// Which queued messages to find; every field given must match. Texts
/// match as case-insensitive substrings. A message whose age or size is
/// unknown (Exim could not read its spool file) matches no age or size
/// bound.
#[derive(InputObject, Default, Clone)]
pub struct QueueFilter {
    /// With this text in the envelope sender.
    pub sender: Option<String>,
    /// With this text in a recipient (which recipients: `recipientScope`).
    pub recipient: Option<String>,
    /// Which recipients `recipient` searches: by default those still
    /// waiting for delivery.
    #[graphql(default)]
    pub recipient_scope: RecipientScope,
    /// This message id.
    pub id: Option<String>,
    /// Queued for at least this many seconds.
    pub min_age_seconds: Option<u64>,
    /// Queued for at most this many seconds.
    pub max_age_seconds: Option<u64>,
    /// At least this many bytes.
    pub min_size: Option<u64>,
    /// At most this many bytes.
    pub max_size: Option<u64>,
    /// Frozen, or not.
    pub frozen: Option<bool>,
    /// A bounce (null sender), or not.
    pub bounce: Option<bool>,
}

impl QueueFilter {
    /// The store's filter on `host` (`None`: every host).
    pub fn to_store(&self, host: Option<String>) -> Result<StoreFilter> {
        let ids = match &self.id {
            Some(id) => vec![parse_id(id)?],
            None => Vec::new(),
        };
        Ok(StoreFilter {
            host,
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            recipient_scope: match self.recipient_scope {
                RecipientScope::Undelivered => StoreScope::Undelivered,
                RecipientScope::Delivered => StoreScope::Delivered,
                RecipientScope::Any => StoreScope::Any,
            },
            ids,
            min_age_secs: self.min_age_seconds,
            max_age_secs: self.max_age_seconds,
            min_size: self.min_size,
            max_size: self.max_size,
            frozen: self.frozen,
            bounce: self.bounce,
        })
    }
}

/// A message id, strictly checked.
pub fn parse_id(id: &str) -> Result<MessageId> {
    id.parse::<MessageId>()
        .map_err(|e| super::bad_input(e.to_string()))
}

/// Which queue jobs to find.
#[derive(InputObject, Default)]
pub struct QueueJobFilter {
    /// On this mail server.
    pub host: Option<String>,
    /// Asked by this user.
    pub actor: Option<String>,
    /// This action.
    pub action: Option<ActionKind>,
    /// Asked from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Asked before this time.
    pub until: Option<DateTime<Utc>>,
}

/// What `queueAction` is asked to do: one action on some messages of
/// one mail server, named by their ids or by a filter (give exactly one).
#[derive(InputObject)]
pub struct QueueActionInput {
    /// The mail server.
    pub host: String,
    /// What to do.
    pub action: ActionKind,
    /// The messages, by id (each checked strictly; one malformed id
    /// refuses the whole request).
    pub ids: Option<Vec<String>>,
    /// The messages, as those of the mail server's current queue that
    /// match this filter (as the `queue` query finds them).
    pub filter: Option<QueueFilter>,
    /// Why, in the operator's words; kept in the audit trail.
    pub reason: Option<String>,
    /// Only say which messages of the current queue it would touch.
    #[graphql(default)]
    pub dry_run: bool,
}

/// One recipient of a queued message.
#[derive(SimpleObject, Clone)]
pub struct QueueRecipient {
    /// The address.
    pub address: String,
    /// Whether Exim already delivered to it.
    pub delivered: bool,
}

/// The latest deferral of a queued message, from its lifecycle.
#[derive(SimpleObject, Clone)]
pub struct QueueDeferral {
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// Its reason class (`greylisting`, `timeout`...).
    pub reason: Option<String>,
    /// The error text.
    pub text: Option<String>,
}

/// A message on a mail server's queue, as its latest snapshot lists it.
#[derive(SimpleObject, Clone)]
pub struct QueuedMessage {
    /// The mail server.
    pub host: String,
    /// Exim's message id.
    pub id: String,
    /// When the snapshot listing it was taken: its age is as of then.
    pub snapshot_at: DateTime<Utc>,
    /// Seconds on the queue, as precise as Exim prints it (unknown when
    /// its spool file could not be read).
    pub age_seconds: Option<u64>,
    /// Size in bytes, rounded as Exim prints it.
    pub size: Option<u64>,
    /// The envelope sender; empty for a bounce.
    pub sender: String,
    /// A bounce (null sender).
    pub bounce: bool,
    /// Frozen.
    pub frozen: bool,
    /// Exim's complaint when it could not read the spool file.
    pub spool_error: Option<String>,
    /// Every recipient, delivered ones marked.
    pub recipients: Vec<QueueRecipient>,
    /// The latest deferral its lifecycle shows; null without a lifecycle
    /// or a deferral.
    pub last_deferral: Option<QueueDeferral>,
}

impl From<&QueueEntry> for QueuedMessage {
    fn from(e: &QueueEntry) -> QueuedMessage {
        let m = &e.message;
        QueuedMessage {
            host: e.host.clone(),
            id: m.id.to_string(),
            snapshot_at: e.snapshot_at,
            age_seconds: m.age_secs,
            size: m.size,
            sender: m.sender.clone(),
            bounce: m.is_bounce(),
            frozen: m.frozen,
            spool_error: m.spool_error.clone(),
            recipients: m
                .recipients
                .iter()
                .map(|r| QueueRecipient {
                    address: r.address.clone(),
                    delivered: r.delivered,
                })
                .collect(),
            last_deferral: e.last_deferral.as_ref().map(|d| QueueDeferral {
                at: d.at,
                reason: d.class.as_ref().map(name_of),
                text: d.text.clone(),
            }),
        }
    }
}

/// One queued message of a connection. Only the last edge of a page
/// carries a cursor.
#[derive(SimpleObject)]
pub struct QueuedMessageEdge {
    /// The message.
    pub node: QueuedMessage,
    /// The page's end cursor, on its last edge.
    pub cursor: Option<String>,
}

/// A page of queued messages.
#[derive(SimpleObject)]
pub struct QueuedMessageConnection {
    /// The messages with their cursors.
    pub edges: Vec<QueuedMessageEdge>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

/// The figures of one queue snapshot (or the largest of a bucket's).
#[derive(SimpleObject, Clone)]
pub struct QueueFigures {
    /// Messages on the queue.
    pub messages: u64,
    /// Of them frozen.
    pub frozen: u64,
    /// Of them bounces.
    pub bounces: u64,
    /// Of them with a spool read error.
    pub spool_errors: u64,
    /// Recipients still waiting.
    pub undelivered_recipients: u64,
    /// Sum of sizes, in bytes.
    pub bytes: u64,
    /// Age of the oldest message, in seconds.
    pub oldest_age_seconds: Option<u64>,
}

impl From<&QueueTotals> for QueueFigures {
    fn from(t: &QueueTotals) -> QueueFigures {
        QueueFigures {
            messages: t.messages,
            frozen: t.frozen,
            bounces: t.bounces,
            spool_errors: t.spool_errors,
            undelivered_recipients: t.undelivered_recipients,
            bytes: t.bytes,
            oldest_age_seconds: t.oldest_age_secs,
        }
    }
}

/// How one mail server's queue is doing, from its latest snapshot.
#[derive(SimpleObject)]
pub struct QueueHealth {
    /// The mail server.
    pub host: String,
    /// When its latest snapshot was taken.
    pub snapshot_at: DateTime<Utc>,
    /// Seconds since then, at the time of the request: a large value
    /// means the server's node stopped reporting.
    pub seconds_since_snapshot: i64,
    /// The latest snapshot's figures.
    pub figures: QueueFigures,
    /// Queued messages whose lifecycle shows at least one deferral.
    pub deferred: u64,
    /// Messages now minus messages in the snapshot closest to an hour
    /// before the latest one; null without a snapshot that old.
    pub growth_last_hour: Option<i64>,
}

impl From<&StoreHealth> for QueueHealth {
    fn from(h: &StoreHealth) -> QueueHealth {
        QueueHealth {
            host: h.host.clone(),
            snapshot_at: h.snapshot_at,
            seconds_since_snapshot: (Utc::now() - h.snapshot_at).num_seconds(),
            figures: QueueFigures::from(&h.totals),
            deferred: h.deferred,
            growth_last_hour: h.growth_last_hour,
        }
    }
}

/// One point of a queue's history.
#[derive(SimpleObject)]
pub struct QueuePoint {
    /// The mail server.
    pub host: String,
    /// The snapshot's time, or its bucket's start.
    pub at: DateTime<Utc>,
    /// Its figures; with buckets, the largest of each in the bucket.
    pub figures: QueueFigures,
}

impl From<&StorePoint> for QueuePoint {
    fn from(p: &StorePoint) -> QueuePoint {
        QueuePoint {
            host: p.host.clone(),
            at: p.at,
            figures: QueueFigures::from(&p.totals),
        }
    }
}

/// What running a job's action on one message did.
#[derive(SimpleObject, Clone)]
#[graphql(name = "QueueActionResult")]
pub struct ResultView {
    /// The job.
    pub job_id: String,
    /// The mail server.
    pub host: String,
    /// The message.
    pub id: String,
    /// The action.
    pub action: ActionKind,
    /// How it ended.
    pub status: StatusKind,
    /// Exim's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// What Exim printed.
    pub output: String,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

impl From<&QueueActionResult> for ResultView {
    fn from(r: &QueueActionResult) -> ResultView {
        ResultView {
            job_id: r.job_id.clone(),
            host: r.host.clone(),
            id: r.id.to_string(),
            action: r.action.into(),
            status: r.status.into(),
            exit_code: r.exit_code,
            output: r.output.clone(),
            finished_at: r.finished_at,
        }
    }
}

/// An operator's queue job: one action on some messages of one mail
/// server, and how far it got.
#[derive(SimpleObject)]
#[graphql(name = "QueueJob", complex)]
pub struct JobView {
    /// Its id.
    pub id: String,
    /// The mail server.
    pub host: String,
    /// The action.
    pub action: ActionKind,
    /// The messages it covers.
    pub ids: Vec<String>,
    /// Who asked.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When it was asked.
    pub requested_at: DateTime<Utc>,
    /// After this, the mail server does not run it any more.
    pub expires_at: DateTime<Utc>,
    /// Messages done so far.
    pub done: u64,
    /// Messages Exim failed on.
    pub failed: u64,
    /// Messages Exim did not finish in time.
    pub timed_out: u64,
    /// Messages not run because the job expired.
    pub expired: u64,
    /// Messages without a result yet.
    pub pending: u64,
    /// Every message has a result.
    pub complete: bool,
    #[graphql(skip)]
    pub loaded: Option<Vec<ResultView>>,
}

impl JobView {
    /// The view of a job with its result counts, and its results when
    /// already read.
    pub fn new(job: &QueueJob, counts: QueueJobCounts, results: Option<Vec<ResultView>>) -> Self {
        let pending = (job.ids.len() as u64).saturating_sub(counts.total());
        JobView {
            id: job.job_id.clone(),
            host: job.host.clone(),
            action: job.action.into(),
            ids: job.ids.iter().map(MessageId::to_string).collect(),
            actor: job.actor.clone(),
            reason: job.reason.clone(),
            requested_at: job.requested_at,
            expires_at: job.expires_at,
            done: counts.done,
            failed: counts.failed,
            timed_out: counts.timed_out,
            expired: counts.expired,
            pending,
            complete: pending == 0,
            loaded: results,
        }
    }

    /// The view of a job with all its results.
    pub fn with_results(job: &QueueJob, results: &[QueueActionResult]) -> JobView {
        let mut counts = QueueJobCounts::default();
        for r in results {
            match r.status {
                QueueActionStatus::Done => counts.done += 1,
                QueueActionStatus::Failed => counts.failed += 1,
                QueueActionStatus::TimedOut => counts.timed_out += 1,
                QueueActionStatus::Expired => counts.expired += 1,
            }
        }
        let views = results.iter().map(ResultView::from).collect();
        JobView::new(job, counts, Some(views))
    }
}

#[ComplexObject]
impl JobView {
    /// The result of each message that has one, by finishing time.
    async fn results(&self, ctx: &Context<'_>) -> Result<Vec<ResultView>> {
        if let Some(loaded) = &self.loaded {
            return Ok(loaded.clone());
        }
        caller(ctx, Role::Viewer).await?;
        let found = api(ctx)?.store.queue_job(&self.id).await?;
        Ok(found
            .map(|(_, results)| results.iter().map(ResultView::from).collect())
            .unwrap_or_default())
    }
}

/// A page of queue jobs.
#[derive(SimpleObject)]
pub struct QueueJobConnection {
    /// The jobs, newest first.
    pub nodes: Vec<JobView>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

/// What `queueAction` did.
#[derive(SimpleObject)]
pub struct QueueActionPayload {
    /// True for a dry run: nothing was submitted.
    pub dry_run: bool,
    /// The ids of the messages acted on (or that would be).
    pub ids: Vec<String>,
    /// On a dry run, the messages of the current queue it would touch
    /// (with ids, those of them on the queue as last seen); null
    /// otherwise.
    pub matched: Option<Vec<QueuedMessage>>,
    /// The job submitted; null on a dry run.
    pub job: Option<JobView>,
}
