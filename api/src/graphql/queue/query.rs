//! Queue queries: current queues, health, history, jobs, and reading a
//! queued message.

use async_graphql::{Context, Object, Result};
use serde_json::json;

use exim_pilot_schema::queue::MessageView;
use exim_pilot_store::{
    QueueHistoryQuery, QueueJobFilter as StoreJobFilter, Role, MAX_HISTORY_POINTS,
};

use super::types::*;
use super::{control, control_error, error, who};
use crate::auth::{audit, AuthError, Principal};
use crate::graphql::query::{page, TimeRange};
use crate::graphql::types::PageInfo;
use crate::graphql::{api, caller, coded, scoped_host};

/// Queries of the mail servers' queues.
#[derive(Default)]
pub struct QueueQuery;

#[Object]
impl QueueQuery {
    /// Messages on the mail servers' queues (one server's with `host`),
    /// as their latest snapshots list them, matching a filter, each with
    /// the latest deferral of its lifecycle: the oldest first (unknown
    /// ages last), then by server and id, a page at a time.
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn queue(
        &self,
        ctx: &Context<'_>,
        host: Option<String>,
        #[graphql(default)] filter: QueueFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<QueuedMessageConnection> {
        let p = caller(ctx, Role::Viewer).await?;
        let host = scoped_host(p, host)?;
        let filter = filter.to_store(host)?;
        let found = api(ctx)?
            .store
            .queue_messages(&filter, &page(first, after)?)
            .await?;
        let found_items: Vec<_> = found.items.iter().filter(|e| p.may_see(&e.host)).collect();
        let last = found_items.len().saturating_sub(1);
        let edges = found_items
            .iter()
            .enumerate()
            .map(|(i, e)| QueuedMessageEdge {
                node: QueuedMessage::from(*e),
                cursor: (i == last).then(|| found.end_cursor.clone()).flatten(),
            })
            .collect();
        Ok(QueuedMessageConnection {
            edges,
            page_info: PageInfo {
                has_next_page: found.has_next_page,
                end_cursor: found.end_cursor,
            },
        })
    }

    /// The health of each mail server's queue (one server's with `host`),
    /// from its latest snapshot, by server name.
    async fn queue_health(
        &self,
        ctx: &Context<'_>,
        host: Option<String>,
    ) -> Result<Vec<QueueHealth>> {
        let p = caller(ctx, Role::Viewer).await?;
        if host.as_ref().is_some_and(|h| !p.may_see(h)) {
            return Err(coded(AuthError::Forbidden(Role::Admin)));
        }
        let health = api(ctx)?.store.queue_health(host.as_deref()).await?;
        Ok(health
            .iter()
            .filter(|h| p.may_see(&h.host))
            .map(QueueHealth::from)
            .collect())
    }

    /// A mail server's queue figures over a range, oldest first: one point
    /// per snapshot, or per bucket with the largest figures of each. At
    /// most `limit` points (default 1,000, at most 10,000): the latest
    /// of the range; ask for buckets over long ranges.
    #[graphql(complexity = "limit.unwrap_or(1000).max(1) as usize * child_complexity")]
    async fn queue_history(
        &self,
        ctx: &Context<'_>,
        host: String,
        #[graphql(default)] range: TimeRange,
        bucket: Option<QueueBucket>,
        limit: Option<i32>,
    ) -> Result<Vec<QueuePoint>> {
        let p = caller(ctx, Role::Viewer).await?;
        let host = scoped_host(p, Some(host))?;
        let limit = limit.unwrap_or(1000);
        if !(1..=MAX_HISTORY_POINTS as i32).contains(&limit) {
            return Err(super::bad_input(format!(
                "limit must be between 1 and {MAX_HISTORY_POINTS}"
            )));
        }
        let query = QueueHistoryQuery {
            host,
            since: range.since,
            until: range.until,
            bucket_secs: bucket.map(QueueBucket::seconds),
            limit: limit as usize,
        };
        let points = api(ctx)?.store.queue_history(&query).await?;
        Ok(points.iter().map(QueuePoint::from).collect())
    }

    /// One queue job with the result of each message that has one; null
    /// when there is no such job on a mail server the caller may see.
    async fn queue_job(&self, ctx: &Context<'_>, id: String) -> Result<Option<JobView>> {
        let p = caller(ctx, Role::Viewer).await?;
        let found = api(ctx)?.store.queue_job(&id).await?;
        Ok(found
            .filter(|(job, _)| p.may_see(&job.host))
            .map(|(job, results)| JobView::with_results(&job, &results)))
    }

    /// Queue jobs, newest first, with how far each got.
    #[graphql(complexity = "first.unwrap_or(50).max(1) as usize * child_complexity")]
    async fn queue_jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: QueueJobFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<QueueJobConnection> {
        let p = caller(ctx, Role::Viewer).await?;
        let f = StoreJobFilter {
            host: scoped_host(p, filter.host)?,
            actor: filter.actor,
            action: filter.action.map(Into::into),
            since: filter.since,
            until: filter.until,
        };
        let found = api(ctx)?.store.queue_jobs(&f, &page(first, after)?).await?;
        Ok(QueueJobConnection {
            nodes: found
                .items
                .iter()
                .filter(|s| p.may_see(&s.job.host))
                .map(|s| JobView::new(&s.job, s.counts, None))
                .collect(),
            page_info: PageInfo {
                has_next_page: found.has_next_page,
                end_cursor: found.end_cursor,
            },
        })
    }

    /// One view of a message on a mail server's queue, read from Exim
    /// through the process's queue control: its headers (`HEADERS`), its
    /// own log (`LOG`) or its body (`BODY`, cut to a size the server's
    /// node sets). Headers and body are message content: only the roles
    /// the API is configured with may read them (operators and admins by
    /// default); every view, and every refusal, is audited.
    async fn queued_message(
        &self,
        ctx: &Context<'_>,
        host: String,
        id: String,
        view: ViewKind,
    ) -> Result<String> {
        let (p, actor) = who(ctx)?;
        let view: MessageView = view.into();
        let params = json!({ "id": id, "view": view });
        let read = read_view(ctx, p, &host, &id, view).await;
        let outcome = match &read {
            Ok(_) => "ok",
            Err((outcome, _)) => outcome,
        };
        let store = &*api(ctx)?.store;
        audit(
            store,
            &actor,
            "queue_view",
            Some(&host),
            Some(params),
            outcome,
        )
        .await;
        read.map_err(|(_, e)| e)
    }
}

/// Reads a view of a queued message if the caller may: the text, or the
/// audit outcome of the refusal with its error.
async fn read_view(
    ctx: &Context<'_>,
    p: &Principal,
    host: &str,
    id: &str,
    view: MessageView,
) -> std::result::Result<String, (&'static str, async_graphql::Error)> {
    let failed = |e| ("failed", e);
    let roles = view_roles(ctx, view).map_err(failed)?;
    if !roles.contains(&p.role) || !p.may_see(host) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let e = error(
            "FORBIDDEN",
            format!(
                "forbidden: this view of a queued message is for the roles: {}",
                names.join(", ")
            ),
        );
        return Err(("denied", e));
    }
    let id = parse_id(id).map_err(failed)?;
    let control = control(ctx).map_err(failed)?;
    control
        .view(host, id, view)
        .await
        .map_err(|e| failed(control_error(&e)))
}

/// The roles that may read `view` of a queued message.
fn view_roles<'a>(ctx: &'a Context<'_>, view: MessageView) -> Result<&'a [Role]> {
    let config = &api(ctx)?.config;
    Ok(match view {
        MessageView::Log => &config.queue_log_roles,
        MessageView::Headers | MessageView::Body => &config.queue_view_roles,
    })
}
