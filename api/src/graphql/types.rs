//! The GraphQL output types: views of the store's values.

use async_graphql::{ComplexObject, Context, Json, Result, SimpleObject};
use chrono::{DateTime, Utc};

use exim_pilot_schema::report::{Cell, Numbers};
use exim_pilot_schema::{Lifecycle, RejectRecord};
use exim_pilot_store::{AuditEntry, HostSummary, RecipientCount, StoredRecord, User};

use super::{api, caller};
use exim_pilot_store::Role;

/// The snake-case name serde gives a value (`in_flight`, `unknown_recipient`).
pub fn name_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// One message's lifecycle on one mail server.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Message {
    /// The mail server.
    pub host: String,
    /// Exim's message id.
    pub id: String,
    /// `in_flight`, `frozen`, `completed` or `removed`.
    pub state: String,
    /// The envelope sender (empty for the null sender).
    pub sender: Option<String>,
    /// The size in bytes.
    pub size: Option<u64>,
    /// When it arrived.
    pub received_at: Option<DateTime<Utc>>,
    /// Its first log record.
    pub first_seen: Option<DateTime<Utc>>,
    /// Its latest log record.
    pub last_seen: Option<DateTime<Utc>>,
    /// When every address reached a final outcome.
    pub completed_at: Option<DateTime<Utc>>,
    /// The subject header.
    pub subject: Option<String>,
    /// The Message-ID header.
    pub message_id_header: Option<String>,
    /// The sending client's IP address.
    pub client_ip: Option<String>,
    /// Every final address with its outcome and attempts.
    pub recipients: Vec<Recipient>,
    /// Everything known, as the store keeps it.
    pub details: Json<serde_json::Value>,
    /// The raw records, when they were read with the lifecycle.
    #[graphql(skip)]
    pub records: Option<Vec<StoredRecord>>,
}

#[ComplexObject]
impl Message {
    /// The raw log lines of the message, in log order.
    async fn raw_lines(&self, ctx: &Context<'_>) -> Result<Vec<LogLine>> {
        caller(ctx, Role::Viewer).await?;
        if let Some(records) = &self.records {
            return Ok(records.iter().map(LogLine::from).collect());
        }
        let id: exim_pilot_schema::MessageId = self.id.parse().map_err(|_| "invalid message id")?;
        let records = api(ctx)?.store.message_records(&self.host, id).await?;
        Ok(records.iter().map(LogLine::from).collect())
    }
}

impl From<&Lifecycle> for Message {
    fn from(lc: &Lifecycle) -> Message {
        Message {
            host: lc.host.clone(),
            id: lc.id.to_string(),
            state: name_of(&lc.state),
            sender: lc.sender.clone(),
            size: lc.size,
            received_at: lc.received_at,
            first_seen: lc.first_seen,
            last_seen: lc.last_seen,
            completed_at: lc.completed_at,
            subject: lc.subject.clone(),
            message_id_header: lc.message_id_header.clone(),
            client_ip: lc.client.as_ref().and_then(|c| c.ip.clone()),
            recipients: lc
                .recipients
                .iter()
                .map(|r| Recipient {
                    address: r.address.clone(),
                    original: r.original.clone(),
                    outcome: name_of(&r.outcome),
                    reason: r.reason.as_ref().map(name_of),
                    final_at: r.final_at,
                    last_code: r.last_code,
                    last_text: r.last_text.clone(),
                    attempts: r
                        .history
                        .iter()
                        .map(|a| Attempt {
                            at: a.at,
                            result: name_of(&a.result),
                            transport: a.transport.clone(),
                            remote_host: a.remote_host.clone(),
                            remote_ip: a.remote_ip.clone(),
                            code: a.code,
                            enhanced: a.enhanced.clone(),
                            text: a.text.clone(),
                            reason: a.reason.as_ref().map(name_of),
                        })
                        .collect(),
                })
                .collect(),
            details: Json(serde_json::to_value(lc).unwrap_or_default()),
            records: None,
        }
    }
}

/// One final address of a message.
#[derive(SimpleObject)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// The address it was redirected from, if any.
    pub original: Option<String>,
    /// `delivered`, `bounced`, `deferred`, `pending`, `frozen`, `removed`
    /// or `marked_delivered`.
    pub outcome: String,
    /// The reason class of its last deferral or failure.
    pub reason: Option<String>,
    /// When it reached its final outcome.
    pub final_at: Option<DateTime<Utc>>,
    /// The last SMTP code.
    pub last_code: Option<u16>,
    /// The last error text.
    pub last_text: Option<String>,
    /// Every delivery attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// One delivery attempt.
#[derive(SimpleObject)]
pub struct Attempt {
    /// When.
    pub at: DateTime<Utc>,
    /// `ok`, `defer` or `fail`.
    pub result: String,
    /// The transport.
    pub transport: Option<String>,
    /// The remote host's name.
    pub remote_host: Option<String>,
    /// The remote host's IP address.
    pub remote_ip: Option<String>,
    /// The SMTP code.
    pub code: Option<u16>,
    /// The enhanced status code.
    pub enhanced: Option<String>,
    /// The error text.
    pub text: Option<String>,
    /// Its reason class.
    pub reason: Option<String>,
}

/// One raw log line.
#[derive(SimpleObject, Clone)]
pub struct LogLine {
    /// The mail server.
    pub host: String,
    /// `main`, `reject` or `panic`.
    pub log: String,
    /// The line's log time.
    pub at: Option<DateTime<Utc>>,
    /// The message it names.
    pub message_id: Option<String>,
    /// What the parser made of it (`arrival`, `delivery`...).
    pub kind: String,
    /// The text, exactly as logged (invalid UTF-8 replaced).
    pub text: String,
}

impl From<&StoredRecord> for LogLine {
    fn from(r: &StoredRecord) -> LogLine {
        LogLine {
            host: r.origin.host.clone(),
            log: r.origin.log.as_str().to_string(),
            at: r.at,
            message_id: r.message_id.map(|id| id.to_string()),
            kind: r.event_kind.clone(),
            text: r.text(),
        }
    }
}

/// Pagination of a connection.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// True when another page follows.
    pub has_next_page: bool,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// One message of a connection. Only the last edge of a page carries a
/// cursor: the stores resume after a page's end, not after any item.
#[derive(SimpleObject)]
pub struct MessageEdge {
    /// The message.
    pub node: Message,
    /// The page's end cursor, on its last edge.
    pub cursor: Option<String>,
}

/// A page of messages.
#[derive(SimpleObject)]
pub struct MessageConnection {
    /// The messages with their cursors.
    pub edges: Vec<MessageEdge>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

/// An SMTP rejection.
#[derive(SimpleObject)]
pub struct Reject {
    /// The mail server.
    pub host: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The SMTP stage.
    pub stage: String,
    /// A 4xx rejection.
    pub temporary: bool,
    /// The client's IP address.
    pub client_ip: Option<String>,
    /// The envelope sender.
    pub sender: Option<String>,
    /// The recipient.
    pub recipient: Option<String>,
    /// The reason as logged.
    pub reason: String,
    /// Its reason class.
    pub class: String,
}

impl From<&RejectRecord> for Reject {
    fn from(r: &RejectRecord) -> Reject {
        Reject {
            host: r.origin.host.clone(),
            at: r.at,
            stage: name_of(&r.stage),
            temporary: r.temporary,
            client_ip: r.client_ip.clone(),
            sender: r.sender.clone(),
            recipient: r.recipient.clone(),
            reason: r.reason.clone(),
            class: name_of(&r.class),
        }
    }
}

/// A page of rejections.
#[derive(SimpleObject)]
pub struct RejectConnection {
    /// The rejections.
    pub nodes: Vec<Reject>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

/// Counts and rates of one group of one bucket.
#[derive(SimpleObject)]
pub struct DeliverabilityRow {
    /// The group's key (a domain, sender, host...; empty for the total).
    pub key: String,
    /// The bucket's start, when bucketed.
    pub bucket_start: Option<DateTime<Utc>>,
    /// Messages.
    pub messages: i64,
    /// Final addresses.
    pub addresses: i64,
    /// Addresses delivered.
    pub delivered: i64,
    /// Addresses deferred at least once.
    pub deferred: i64,
    /// Addresses bounced.
    pub bounced: i64,
    /// Addresses still deferred.
    pub still_deferred: i64,
    /// SMTP rejections.
    pub rejected: i64,
    /// Addresses delivered by their first attempt.
    pub delivered_first_attempt: i64,
    /// Delivered / final addresses.
    pub delivery_rate: Option<f64>,
    /// Bounced / final addresses.
    pub bounce_rate: Option<f64>,
    /// Deferred / final addresses.
    pub deferral_rate: Option<f64>,
    /// Delivered by the first attempt / attempted.
    pub first_attempt_rate: Option<f64>,
    /// Median delivery delay.
    pub delay_p50_ms: Option<u64>,
    /// 90th percentile delay.
    pub delay_p90_ms: Option<u64>,
    /// 99th percentile delay.
    pub delay_p99_ms: Option<u64>,
}

impl DeliverabilityRow {
    /// The row of a summed cell.
    pub fn of(key: String, bucket_start: Option<DateTime<Utc>>, cell: &Cell) -> DeliverabilityRow {
        let n = Numbers::of(cell);
        DeliverabilityRow {
            key,
            bucket_start,
            messages: n.messages,
            addresses: n.addresses,
            delivered: n.delivered,
            deferred: n.deferred,
            bounced: n.bounced,
            still_deferred: n.still_deferred,
            rejected: n.rejected,
            delivered_first_attempt: n.delivered_first_attempt,
            delivery_rate: n.rates.delivery_rate,
            bounce_rate: n.rates.bounce_rate,
            deferral_rate: n.rates.deferral_rate,
            first_attempt_rate: n.rates.first_attempt_rate,
            delay_p50_ms: n.delay.p50_ms,
            delay_p90_ms: n.delay.p90_ms,
            delay_p99_ms: n.delay.p99_ms,
        }
    }
}

/// What the messages of one envelope sender did over a range.
#[derive(SimpleObject)]
pub struct TopSender {
    /// The envelope sender, lowercased: `<>` for the null sender of
    /// bounces, `(unknown)` when the arrival was not logged.
    pub sender: String,
    /// Messages.
    pub messages: i64,
    /// Messages whose arrival was logged.
    pub received: i64,
    /// Final addresses.
    pub addresses: i64,
    /// Addresses delivered.
    pub delivered: i64,
    /// Addresses deferred at least once.
    pub deferred: i64,
    /// Addresses still deferred.
    pub still_deferred: i64,
    /// Addresses bounced.
    pub bounced: i64,
    /// Delivered / final addresses.
    pub delivery_rate: Option<f64>,
    /// Bounced / final addresses.
    pub bounce_rate: Option<f64>,
}

impl TopSender {
    /// The row of a sender's summed cell.
    pub fn of(sender: String, cell: &Cell) -> TopSender {
        let n = Numbers::of(cell);
        TopSender {
            sender,
            messages: n.messages,
            received: n.received,
            addresses: n.addresses,
            delivered: n.delivered,
            deferred: n.deferred,
            still_deferred: n.still_deferred,
            bounced: n.bounced,
            delivery_rate: n.rates.delivery_rate,
            bounce_rate: n.rates.bounce_rate,
        }
    }
}

/// What the messages of a range did for one final address.
#[derive(SimpleObject)]
pub struct TopRecipient {
    /// The final address, lowercased: a mailbox, a pipe, a file or
    /// `:blackhole:`.
    pub address: String,
    /// Messages with this final address.
    pub messages: i64,
    /// Times it was delivered.
    pub delivered: i64,
    /// Times it was deferred at least once, delivered since or not.
    pub deferred: i64,
    /// Times it is still on the queue after a deferral.
    pub still_deferred: i64,
    /// Times it bounced.
    pub bounced: i64,
    /// The latest delivery attempt to it (a delivery, deferral or
    /// failure); null when none was logged or it is past retention.
    pub last_attempt_at: Option<DateTime<Utc>>,
}

impl From<RecipientCount> for TopRecipient {
    fn from(r: RecipientCount) -> TopRecipient {
        TopRecipient {
            address: r.address,
            messages: r.messages,
            delivered: r.delivered,
            deferred: r.deferred,
            still_deferred: r.still_deferred,
            bounced: r.bounced,
            last_attempt_at: r.last_attempt_at,
        }
    }
}

/// What one reason class of deferrals and failures did.
#[derive(SimpleObject)]
pub struct FailureReason {
    /// The class.
    pub class: String,
    /// Messages with an address that met it.
    pub messages: i64,
    /// Final addresses that met it.
    pub addresses: i64,
    /// Addresses deferred for it.
    pub deferred: i64,
    /// Addresses that bounced for it.
    pub bounced: i64,
    /// Deferral attempts of this class.
    pub deferrals: i64,
    /// Failed attempts of this class.
    pub failures: i64,
    /// Example texts.
    pub samples: Vec<String>,
}

/// One mail server.
#[derive(SimpleObject)]
pub struct Host {
    /// Its name.
    pub name: String,
    /// Its earliest record.
    pub first_seen: Option<DateTime<Utc>>,
    /// Its latest record.
    pub last_seen: Option<DateTime<Utc>>,
    /// When its latest record was read.
    pub last_read_at: Option<DateTime<Utc>>,
    /// Seconds between its latest record's log time and its reading.
    pub ingest_lag_seconds: Option<f64>,
    /// Records stored.
    pub records: i64,
    /// Messages stored.
    pub messages: i64,
    /// Rejections stored.
    pub rejects: i64,
}

impl From<&HostSummary> for Host {
    fn from(h: &HostSummary) -> Host {
        let read = h
            .last_read_at_ms
            .and_then(chrono::DateTime::<Utc>::from_timestamp_millis);
        Host {
            name: h.host.clone(),
            first_seen: h.first_seen,
            last_seen: h.last_seen,
            last_read_at: read,
            ingest_lag_seconds: read
                .zip(h.last_seen)
                .map(|(r, s)| (r - s).num_milliseconds() as f64 / 1000.0),
            records: h.records,
            messages: h.messages,
            rejects: h.rejects,
        }
    }
}

/// An audit entry.
#[derive(SimpleObject)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// Their role.
    pub role: Option<String>,
    /// From where.
    pub client_ip: Option<String>,
    /// What.
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// With which parameters.
    pub params: Option<Json<serde_json::Value>>,
    /// `ok`, `failed`, `denied`, `throttled`.
    pub outcome: String,
}

impl From<AuditEntry> for AuditRecord {
    fn from(e: AuditEntry) -> AuditRecord {
        AuditRecord {
            at: e.at,
            actor: e.actor,
            role: e.role,
            client_ip: e.client_ip,
            action: e.action,
            target: e.target,
            params: e.params.map(Json),
            outcome: e.outcome,
        }
    }
}

/// A page of audit entries.
#[derive(SimpleObject)]
pub struct AuditConnection {
    /// The entries, newest first.
    pub nodes: Vec<AuditRecord>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

/// A user, without the password hash.
#[derive(SimpleObject)]
pub struct UserView {
    /// The login name.
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// Disabled users cannot log in.
    pub disabled: bool,
    /// The mail servers the user may see; empty means all.
    pub hosts: Vec<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView {
            name: u.name.clone(),
            role: u.role.as_str().to_string(),
            disabled: u.disabled,
            hosts: u.hosts.clone(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// What `login` and `refresh` return.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Exchange with `refresh` for new tokens; revoked by `logout`.
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub user: UserView,
}

/// What `createUser` returns.
#[derive(SimpleObject)]
pub struct CreatedUser {
    /// The user.
    pub user: UserView,
    /// The generated password when none was given; shown only here.
    pub generated_password: Option<String>,
}
