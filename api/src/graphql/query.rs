//! Queries.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, InputObject, Object, Result};
use chrono::{DateTime, Utc};

use exim_pilot_schema::report::{hour_start, Cell, CellKey, Dimension, ReportOptions};
use exim_pilot_schema::MessageId;
use exim_pilot_store::{check_search_text, search_words};
use exim_pilot_store::{
    AuditFilter, Bucket, CellQuery, LineQuery, MessageFilter as StoreFilter, PageRequest,
    RecipientQuery, RejectFilter as StoreRejectFilter, Role, Store, StoreError, MAX_TOP_RECIPIENTS,
};

use super::queue::bad_input;
use super::types::*;
use super::{api, caller, scoped_host};

/// Largest page of messages, rejections or audit entries.
const MAX_FIRST: i32 = 500;

/// How many senders or recipients a ranking returns unless told.
const DEFAULT_TOP: i32 = 20;

/// The `top` of a ranking, within 1 and the largest the store allows.
fn ranking_size(top: Option<i32>) -> usize {
    top.unwrap_or(DEFAULT_TOP)
        .clamp(1, MAX_TOP_RECIPIENTS as i32) as usize
}

/// A size argument (`top`, `limit`) given or its default, refused when
/// outside `1..=max`, as a page size out of range is.
fn size_arg(name: &str, value: Option<i32>, default: i32, max: i32) -> Result<usize> {
    let value = value.unwrap_or(default);
    if (1..=max).contains(&value) {
        Ok(value as usize)
    } else {
        Err(format!("{name} must be between 1 and {max}").into())
    }
}

/// A time range; open ends are unbounded.
#[derive(InputObject, Clone, Default)]
pub struct TimeRange {
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
}

/// Which messages to find; every field given must match.
#[derive(InputObject, Default)]
pub struct MessageFilter {
    /// Received (or first seen) from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// On this mail server.
    pub host: Option<String>,
    /// From this envelope sender (`""` for the null sender).
    pub sender: Option<String>,
    /// From this sender domain.
    pub sender_domain: Option<String>,
    /// To this address (final or original).
    pub recipient: Option<String>,
    /// To or from this address.
    pub address: Option<String>,
    /// To this destination domain.
    pub domain: Option<String>,
    /// In this state (`in_flight`, `frozen`, `completed`, `removed`).
    pub state: Option<String>,
    /// With an address of this outcome (`delivered`, `bounced`...).
    pub outcome: Option<String>,
    /// With a deferral or failure of this reason class.
    pub reason: Option<String>,
    /// With this text in the subject, matched literally (`%` and `_` are
    /// no wildcards), ASCII letters in either case; at most 1000 bytes.
    pub subject: Option<String>,
    /// With this Message-ID header.
    pub message_id_header: Option<String>,
    /// From this client IP address.
    pub client_ip: Option<String>,
}

/// Reads a snake-case name into one of the data model's enums.
fn parse_name<T: serde::de::DeserializeOwned>(
    what: &str,
    name: Option<String>,
) -> Result<Option<T>> {
    name.map(|n| {
        serde_json::from_value(serde_json::Value::String(n.clone()))
            .map_err(|_| async_graphql::Error::new(format!("unknown {what} {n:?}")))
    })
    .transpose()
}

/// A store's refusal of what a user typed, as a `BAD_USER_INPUT` error.
fn user_input<T>(checked: Result<T, StoreError>) -> Result<T> {
    checked.map_err(|e| bad_input(e.to_string()))
}

impl MessageFilter {
    /// Refuses a NUL in any text of the filter (the database would read
    /// it as the end of the text, so `subject: "\u0000x"` would find every
    /// message) and a subject longer than a search may be.
    fn check(&self) -> Result<()> {
        let texts = [
            ("host", &self.host),
            ("sender", &self.sender),
            ("senderDomain", &self.sender_domain),
            ("recipient", &self.recipient),
            ("address", &self.address),
            ("domain", &self.domain),
            ("state", &self.state),
            ("outcome", &self.outcome),
            ("reason", &self.reason),
            ("messageIdHeader", &self.message_id_header),
            ("clientIp", &self.client_ip),
        ];
        for (name, text) in texts {
            if text.as_deref().is_some_and(|t| t.contains('\0')) {
                return Err(bad_input(format!(
                    "{name} contains a NUL character; remove it"
                )));
            }
        }
        if let Some(subject) = &self.subject {
            user_input(check_search_text("the subject filter", subject))?;
        }
        Ok(())
    }

    fn into_store(self, host: Option<String>) -> Result<StoreFilter> {
        self.check()?;
        Ok(StoreFilter {
            since: self.since,
            until: self.until,
            host,
            sender: self.sender,
            sender_domain: self.sender_domain,
            recipient: self.recipient,
            address: self.address,
            domain: self.domain,
            state: parse_name("state", self.state)?,
            outcome: parse_name("outcome", self.outcome)?,
            reason: parse_name("reason class", self.reason)?,
            subject: self.subject,
            message_id_header: self.message_id_header,
            client_ip: self.client_ip,
        })
    }
}

/// What deliverability numbers are grouped by.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum GroupBy {
    /// One group: everything.
    Total,
    /// Destination domain.
    Domain,
    /// Envelope sender.
    Sender,
    /// Sender domain.
    SenderDomain,
    /// The mail server that logged it.
    LocalHost,
    /// The remote server delivered to.
    RemoteHost,
    /// The transport.
    Transport,
    /// The sending client's IP address.
    Client,
}

/// Time buckets.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum BucketSize {
    /// Per hour.
    Hour,
    /// Per UTC day.
    Day,
}

/// Which raw lines to find.
#[derive(InputObject)]
pub struct LogLineFilter {
    /// Words that must all appear: at most 32 words and 1000 bytes.
    pub text: String,
    /// Only this mail server.
    pub host: Option<String>,
    /// Only this log: `main`, `reject` or `panic`.
    pub log: Option<String>,
    /// From this log time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this log time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many lines (default 100, at most 1000).
    pub limit: Option<i32>,
}

/// Which rejections to find.
#[derive(InputObject, Default)]
pub struct RejectFilter {
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this mail server.
    pub host: Option<String>,
    /// From this client IP.
    pub client_ip: Option<String>,
    /// Of this reason class.
    pub class: Option<String>,
}

/// Which audit entries to find.
#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    /// From this time on.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// By this user.
    pub actor: Option<String>,
    /// This action (`login`, `user_add`...).
    pub action: Option<String>,
}

/// A page's size as its complexity counts it: a size out of range counts
/// as the largest, so that it is refused by [`page`] with a clear reason
/// rather than as too complex.
fn page_size(first: Option<i32>) -> usize {
    first.unwrap_or(50).clamp(1, MAX_FIRST) as usize
}

pub(super) fn page(first: Option<i32>, after: Option<String>) -> Result<PageRequest> {
    let first = first.unwrap_or(50);
    if !(1..=MAX_FIRST).contains(&first) {
        return Err(format!("first must be between 1 and {MAX_FIRST}").into());
    }
    Ok(PageRequest {
        first: first as usize,
        after,
    })
}

/// Hours in a day.
const DAY_HOURS: i64 = 24;

/// The rollup cells of `query`'s range (its bucket aside), each keyed by
/// its hour number, a day cell by the first hour of its day. Unless
/// `hourly`, on a store that gains by it
/// ([`Store::splits_ranges_into_days`]), the whole UTC days of the range
/// are read from day cells and only the partial days at its ends from
/// hour cells: a month is then some thirty cells per group to read and
/// sum rather than seven hundred. The sums are the same either way.
/// With `whole`, the caller sums over time anyway, so the whole days come
/// summed by the store, as one cell per group keyed by their first day.
async fn range_cells(
    store: &dyn Store,
    query: &CellQuery,
    hourly: bool,
    whole: bool,
) -> Result<Vec<(CellKey, Cell)>> {
    let with = |since, until, bucket| CellQuery {
        since,
        until,
        bucket,
        ..query.clone()
    };
    let first_day = query.since.map(|t| {
        let day = day_floor(t);
        if day < t {
            day + DAY
        } else {
            day
        }
    });
    let last_day = query.until.map(day_floor);
    let whole_days = match (first_day, last_day) {
        (Some(first), Some(last)) => first < last,
        _ => true,
    };
    if hourly || !whole_days || !store.splits_ranges_into_days() {
        let cells = store
            .cells(&with(query.since, query.until, Bucket::Hour))
            .await?;
        return Ok(cells.cells.into_iter().collect());
    }
    // The three reads run at once: each costs a round trip whatever its
    // length.
    let head = match (query.since, first_day) {
        (Some(since), Some(first)) if since < first => {
            Some(with(Some(since), Some(first), Bucket::Hour))
        }
        _ => None,
    };
    let tail = match (query.until, last_day) {
        (Some(until), Some(last)) if last < until => {
            Some(with(Some(last), Some(until), Bucket::Hour))
        }
        _ => None,
    };
    let days = with(
        first_day,
        last_day,
        if whole { Bucket::Range } else { Bucket::Day },
    );
    let read = |q: Option<CellQuery>| async move {
        match q {
            Some(q) => store.cells(&q).await.map(|c| c.cells),
            None => Ok(Default::default()),
        }
    };
    let (head, days, tail) = tokio::try_join!(read(head), store.cells(&days), read(tail))?;
    let mut out: Vec<(CellKey, Cell)> = head.into_iter().collect();
    out.extend(days.cells.into_iter().map(|(mut key, cell)| {
        key.hour *= DAY_HOURS;
        (key, cell)
    }));
    out.extend(tail);
    Ok(out)
}

/// A day.
const DAY: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The start of `t`'s UTC day.
fn day_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(86_400) * 86_400;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// Queries of what the logs tell, and of the API's users.
#[derive(Default)]
pub struct LogQuery;

#[Object]
impl LogQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<UserView> {
        let p = caller(ctx, Role::Viewer).await?;
        let user = api(ctx)?
            .store
            .user(&p.user)
            .await?
            .ok_or("the user no longer exists")?;
        Ok(UserView::from(&user))
    }

    /// Every user (admins only).
    async fn users(&self, ctx: &Context<'_>) -> Result<Vec<UserView>> {
        caller(ctx, Role::Admin).await?;
        let users = api(ctx)?.store.users().await?;
        Ok(users.iter().map(UserView::from).collect())
    }

    /// One message's whole lifecycle on one mail server.
    async fn message(
        &self,
        ctx: &Context<'_>,
        host: String,
        id: String,
    ) -> Result<Option<Message>> {
        let p = caller(ctx, Role::Viewer).await?;
        let host = scoped_host(p, Some(host))?.unwrap_or_default();
        let id: MessageId = id.parse().map_err(|_| "invalid message id")?;
        let store = &api(ctx)?.store;
        // A trace asks for the raw lines too: read them at the same time
        // as the lifecycle rather than after it.
        if !ctx.look_ahead().field("rawLines").exists() {
            let lc = store.lifecycle(&host, id).await?;
            return Ok(lc.as_ref().map(Message::from));
        }
        let (lc, records) =
            tokio::join!(store.lifecycle(&host, id), store.message_records(&host, id));
        // Records that failed to load are asked for again by `rawLines`,
        // which reports its own error.
        Ok(lc?.as_ref().map(|lc| Message {
            records: records.ok(),
            ..Message::from(lc)
        }))
    }

    /// Messages matching a filter, newest first, a page at a time.
    #[graphql(complexity = "page_size(first) * child_complexity")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: MessageFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<MessageConnection> {
        let p = caller(ctx, Role::Viewer).await?;
        let host = scoped_host(p, filter.host.clone())?;
        let filter = filter.into_store(host)?;
        let page = page(first, after)?;
        let found = api(ctx)?.store.search(&filter, &page).await?;
        let last = found.items.len().saturating_sub(1);
        let edges = found
            .items
            .iter()
            .enumerate()
            .map(|(i, lc)| MessageEdge {
                node: Message::from(lc),
                cursor: (i == last).then(|| found.end_cursor.clone()).flatten(),
            })
            .collect();
        Ok(MessageConnection {
            edges,
            page_info: PageInfo {
                has_next_page: found.has_next_page,
                end_cursor: found.end_cursor,
            },
        })
    }

    /// Delivery numbers over a range, grouped, per bucket or over the
    /// whole range. Rows are ordered by bucket, then by final addresses.
    #[graphql(complexity = "top.unwrap_or(100).max(1) as usize * child_complexity")]
    async fn deliverability(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] range: TimeRange,
        #[graphql(default_with = "GroupBy::Total")] group_by: GroupBy,
        bucket: Option<BucketSize>,
        host: Option<String>,
        top: Option<i32>,
    ) -> Result<Vec<DeliverabilityRow>> {
        let p = caller(ctx, Role::Viewer).await?;
        let host = scoped_host(p, host)?;
        let top = size_arg("top", top, 100, 10_000)?;
        let dim = match group_by {
            GroupBy::Total | GroupBy::LocalHost => Dimension::Total,
            GroupBy::Domain => Dimension::Domain,
            GroupBy::Sender => Dimension::Sender,
            GroupBy::SenderDomain => Dimension::SenderDomain,
            GroupBy::RemoteHost => Dimension::RemoteHost,
            GroupBy::Transport => Dimension::Transport,
            GroupBy::Client => Dimension::Client,
        };
        let query = CellQuery {
            since: range.since,
            until: range.until,
            host,
            dims: vec![dim],
            bucket: Bucket::Hour,
        };
        let hourly = bucket == Some(BucketSize::Hour);
        let whole = bucket.is_none();
        let cells = range_cells(&*api(ctx)?.store, &query, hourly, whole).await?;

        // Sum the cells per (bucket, group).
        let mut groups: BTreeMap<(Option<i64>, String), Cell> = BTreeMap::new();
        for (key, cell) in &cells {
            if key.dim != dim {
                continue;
            }
            let time = bucket.map(|b| match b {
                BucketSize::Hour => key.hour,
                BucketSize::Day => key.hour.div_euclid(DAY_HOURS) * DAY_HOURS,
            });
            let group = match group_by {
                GroupBy::LocalHost => key.host.clone(),
                _ => key.key.clone(),
            };
            groups.entry((time, group)).or_default().add(cell);
        }
        let mut rows: Vec<DeliverabilityRow> = groups
            .into_iter()
            .map(|((time, key), cell)| DeliverabilityRow::of(key, time.map(hour_start), &cell))
            .collect();
        rows.sort_by(|a, b| {
            a.bucket_start
                .cmp(&b.bucket_start)
                .then(b.addresses.cmp(&a.addresses))
                .then(b.messages.cmp(&a.messages))
                .then(a.key.cmp(&b.key))
        });
        if bucket.is_none() {
            rows.truncate(top);
        }
        Ok(rows)
    }

    /// Envelope senders ranked by their messages in a range (by cohort
    /// time: reception, or first sighting), most first, then by address;
    /// `top` of them (default 20, at most 1000). Read from the report
    /// cells, so it costs what `deliverability(groupBy: SENDER)` does.
    /// SMTP rejections are not counted per sender.
    #[graphql(complexity = "ranking_size(top) * child_complexity")]
    async fn top_senders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] range: TimeRange,
        host: Option<String>,
        top: Option<i32>,
    ) -> Result<Vec<TopSender>> {
        let p = caller(ctx, Role::Viewer).await?;
        let top = size_arg("top", top, DEFAULT_TOP, MAX_TOP_RECIPIENTS as i32)?;
        let query = CellQuery {
            since: range.since,
            until: range.until,
            host: scoped_host(p, host)?,
            dims: vec![Dimension::Sender],
            bucket: Bucket::Hour,
        };
        let cells = range_cells(&*api(ctx)?.store, &query, false, true).await?;

        // One cell per sender, over every hour and server.
        let mut senders: BTreeMap<String, Cell> = BTreeMap::new();
        for (key, cell) in &cells {
            if key.dim == Dimension::Sender {
                senders.entry(key.key.clone()).or_default().add(cell);
            }
        }
        let mut rows: Vec<TopSender> = senders
            .into_iter()
            .map(|(sender, cell)| TopSender::of(sender, &cell))
            .filter(|row| row.messages > 0)
            .collect();
        rows.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.sender.cmp(&b.sender)));
        rows.truncate(top);
        Ok(rows)
    }

    /// Final addresses ranked by the messages of a range (by cohort time)
    /// sent to them, most first, then by address; `top` of them (default
    /// 20, at most 1000), only those of `domain` when given. Its cost
    /// grows with the messages in the range.
    #[graphql(complexity = "ranking_size(top) * child_complexity")]
    async fn top_recipients(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] range: TimeRange,
        host: Option<String>,
        top: Option<i32>,
        domain: Option<String>,
    ) -> Result<Vec<TopRecipient>> {
        let p = caller(ctx, Role::Viewer).await?;
        let query = RecipientQuery {
            since: range.since,
            until: range.until,
            host: scoped_host(p, host)?,
            domain,
            top: size_arg("top", top, DEFAULT_TOP, MAX_TOP_RECIPIENTS as i32)?,
        };
        let found = api(ctx)?.store.top_recipients(&query).await?;
        Ok(found.into_iter().map(TopRecipient::from).collect())
    }

    /// Deferral and failure reasons over a range, most frequent first.
    async fn failure_reasons(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] range: TimeRange,
        host: Option<String>,
    ) -> Result<Vec<FailureReason>> {
        let p = caller(ctx, Role::Viewer).await?;
        let options = ReportOptions {
            since: range.since,
            until: range.until,
            host: scoped_host(p, host)?,
            domain: None,
            top: 10,
        };
        let report = api(ctx)?.store.report(&options).await?;
        Ok(report
            .reasons
            .iter()
            .map(|r| FailureReason {
                class: name_of(&r.class),
                messages: r.messages,
                addresses: r.addresses,
                deferred: r.deferred,
                bounced: r.bounced,
                deferrals: r.deferrals,
                failures: r.failures,
                samples: r.samples.clone(),
            })
            .collect())
    }

    /// SMTP rejections, newest first.
    #[graphql(complexity = "page_size(first) * child_complexity")]
    async fn rejects(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: RejectFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<RejectConnection> {
        let p = caller(ctx, Role::Viewer).await?;
        let store_filter = StoreRejectFilter {
            since: filter.since,
            until: filter.until,
            host: scoped_host(p, filter.host)?,
            client_ip: filter.client_ip,
            class: parse_name("reason class", filter.class)?,
        };
        let found = api(ctx)?
            .store
            .rejects(&store_filter, &page(first, after)?)
            .await?;
        Ok(RejectConnection {
            nodes: found.items.iter().map(Reject::from).collect(),
            page_info: PageInfo {
                has_next_page: found.has_next_page,
                end_cursor: found.end_cursor,
            },
        })
    }

    /// Raw lines of any of the three logs containing every word of a text,
    /// most recently stored first.
    #[graphql(complexity = "filter.limit.unwrap_or(100).max(1) as usize * child_complexity")]
    async fn log_lines(&self, ctx: &Context<'_>, filter: LogLineFilter) -> Result<Vec<LogLine>> {
        let p = caller(ctx, Role::Viewer).await?;
        user_input(search_words(&filter.text))?;
        let query = LineQuery {
            text: filter.text,
            host: scoped_host(p, filter.host)?,
            log: filter
                .log
                .map(|l| l.parse())
                .transpose()
                .map_err(|_| "log must be main, reject or panic")?,
            since: filter.since,
            until: filter.until,
            limit: size_arg("limit", filter.limit, 100, 1000)?,
        };
        let lines = api(ctx)?.store.search_lines(&query).await?;
        Ok(lines.iter().map(LogLine::from).collect())
    }

    /// Every mail server seen.
    async fn hosts(&self, ctx: &Context<'_>) -> Result<Vec<Host>> {
        let p = caller(ctx, Role::Viewer).await?;
        let hosts = api(ctx)?.store.hosts().await?;
        Ok(hosts
            .iter()
            .filter(|h| p.may_see(&h.host))
            .map(Host::from)
            .collect())
    }

    /// The audit trail, newest first (admins only).
    #[graphql(complexity = "page_size(first) * child_complexity")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: AuditLogFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<AuditConnection> {
        caller(ctx, Role::Admin).await?;
        let f = AuditFilter {
            since: filter.since,
            until: filter.until,
            actor: filter.actor,
            action: filter.action,
        };
        let found = api(ctx)?.store.audit_log(&f, &page(first, after)?).await?;
        Ok(AuditConnection {
            nodes: found.items.into_iter().map(AuditRecord::from).collect(),
            page_info: PageInfo {
                has_next_page: found.has_next_page,
                end_cursor: found.end_cursor,
            },
        })
    }
}
