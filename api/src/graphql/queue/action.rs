//! The `queueAction` mutation: one action on some messages of one mail
//! server's queue.
//!
//! A request goes through, in order, and stops at the first refusal:
//!
//! 1. the caller: operators and admins, on a mail server they may see;
//! 2. the process's queue control: without one nothing can be done;
//! 3. the messages: ids, each checked strictly, or a filter resolved
//!    against the server's current queue; at most
//!    `ApiConfig::queue_max_ids` of them;
//! 4. a dry run answers with the messages of the current queue it would
//!    touch, and stops;
//! 5. otherwise the job is made (a new id, valid for
//!    `ApiConfig::queue_job_ttl`), saved, audited, and handed to queue
//!    control.
//!
//! Every request is audited once, as `queue_<action>` on the server with
//! the ids, the reason and the outcome: `denied`, `failed` (with the
//! error), `dry_run`, or `ok` for a job submitted. A job that queue
//! control then fails to take gets a second entry, `failed`. Nothing runs
//! before the audit entry of its job is written.

use async_graphql::{Context, Object, Result};
use chrono::Utc;
use serde_json::{json, Value};

use exim_pilot_schema::queue::QueueJob;
use exim_pilot_schema::{MessageId, QueueAction};
use exim_pilot_store::{
    PageRequest, QueueEntry, QueueFilter as StoreFilter, Role, Store, MAX_PAGE,
};

use super::types::*;
use super::{bad_input, control, control_error, error, who};
use crate::auth::{audit, Actor, AuthError, Principal};
use crate::graphql::{api, coded, Api};
use crate::queue::{action_name, new_job_id};

/// The longest reason accepted, in characters.
const MAX_REASON: usize = 1_000;

/// Ids looked up in one store query.
const ID_CHUNK: usize = 500;

/// Why a request was refused: the audit outcome and the error.
type Refusal = (&'static str, async_graphql::Error);

fn failed(e: async_graphql::Error) -> Refusal {
    ("failed", e)
}

/// Mutations of the mail servers' queues.
#[derive(Default)]
pub struct QueueMutation;

#[Object]
impl QueueMutation {
    /// Runs one action on some messages of one mail server's queue
    /// (operators and admins): the messages named by `ids`, or those of
    /// the server's current queue matching `filter`. With `dryRun`,
    /// nothing runs: the answer lists the messages of the current queue
    /// it would touch. Otherwise a queue job is submitted to the server
    /// and returned; its per-message results come later (`queueJob`,
    /// `queueJobResults`). A malformed id refuses the whole request, as
    /// do more messages than the configured limit (10,000 by default).
    /// Every request, refused or not, is audited with its reason.
    async fn queue_action(
        &self,
        ctx: &Context<'_>,
        input: QueueActionInput,
    ) -> Result<QueueActionPayload> {
        let (p, actor) = who(ctx)?;
        let api = api(ctx)?;
        let action: QueueAction = input.action.into();
        let base = json!({ "reason": input.reason, "dry_run": input.dry_run });
        let base = with(&base, "ids", json!(input.ids));

        let targets = match plan(ctx, api, p, &input).await {
            Ok(t) => t,
            Err((outcome, e)) => {
                let params = with(&base, "error", json!(e.message));
                record(api, &actor, action, &input.host, params, outcome).await;
                return Err(e);
            }
        };
        let params = with(&base, "ids", json!(id_texts(&targets.ids)));
        let params = with(&params, "filter", targets.filter.clone());
        if input.dry_run {
            record(api, &actor, action, &input.host, params, "dry_run").await;
            return Ok(QueueActionPayload {
                dry_run: true,
                ids: id_texts(&targets.ids),
                matched: Some(targets.matched.iter().map(QueuedMessage::from).collect()),
                job: None,
            });
        }
        submit(ctx, api, p, &actor, &input, targets.ids, params).await
    }
}

/// The messages a request acts on.
struct Targets {
    /// Their ids, each once, in the order given or found.
    ids: Vec<MessageId>,
    /// Those of them on the current queue (filled for dry runs and
    /// filters).
    matched: Vec<QueueEntry>,
    /// The filter they were found with, as audited.
    filter: Value,
}

/// Checks the caller and the request and finds the messages.
async fn plan(
    ctx: &Context<'_>,
    api: &Api,
    p: &Principal,
    input: &QueueActionInput,
) -> std::result::Result<Targets, Refusal> {
    if p.role < Role::Operator {
        return Err(("denied", coded(AuthError::Forbidden(Role::Operator))));
    }
    if !p.may_see(&input.host) {
        return Err(("denied", coded(AuthError::Forbidden(Role::Admin))));
    }
    control(ctx).map_err(failed)?;
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(failed(bad_input(format!(
            "the reason is longer than {MAX_REASON} characters"
        ))));
    }
    let max = api.config.queue_max_ids;
    let store = &*api.store;
    match (&input.ids, &input.filter) {
        (Some(ids), None) => {
            let ids = parse_ids(ids, max).map_err(failed)?;
            let matched = if input.dry_run {
                queued(store, &input.host, &ids).await.map_err(failed)?
            } else {
                Vec::new()
            };
            Ok(Targets {
                ids,
                matched,
                filter: Value::Null,
            })
        }
        (None, Some(filter)) => {
            let filter = filter.to_store(Some(input.host.clone())).map_err(failed)?;
            let matched = matching(store, &filter, max).await.map_err(failed)?;
            if matched.is_empty() && !input.dry_run {
                return Err(failed(bad_input(format!(
                    "the filter matches no message on the queue of {}",
                    input.host
                ))));
            }
            Ok(Targets {
                ids: matched.iter().map(|e| e.message.id).collect(),
                matched,
                filter: serde_json::to_value(&filter).unwrap_or(Value::Null),
            })
        }
        _ => Err(failed(bad_input(
            "name the messages with either `ids` or `filter`, not both or neither",
        ))),
    }
}

/// The ids of a request, each checked strictly, each once.
fn parse_ids(ids: &[String], max: usize) -> Result<Vec<MessageId>> {
    if ids.is_empty() {
        return Err(bad_input("give at least one message id"));
    }
    let mut out: Vec<MessageId> = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    for text in ids {
        let id = parse_id(text)?;
        if seen.insert(id) {
            out.push(id);
        }
    }
    if out.len() > max {
        return Err(too_many(out.len(), max));
    }
    Ok(out)
}

fn too_many(n: usize, max: usize) -> async_graphql::Error {
    error(
        "BULK_LIMIT",
        format!(
            "{n} messages is more than one queue action may touch ({max}): narrow the \
             filter or split the ids"
        ),
    )
}

/// The messages of `host`'s current queue among `ids`.
async fn queued(store: &dyn Store, host: &str, ids: &[MessageId]) -> Result<Vec<QueueEntry>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let filter = StoreFilter {
            host: Some(host.to_string()),
            ids: chunk.to_vec(),
            ..StoreFilter::default()
        };
        out.extend(matching(store, &filter, usize::MAX).await?);
    }
    Ok(out)
}

/// Every message of the current queues matching `filter`; more than
/// `max` refuses.
async fn matching(store: &dyn Store, filter: &StoreFilter, max: usize) -> Result<Vec<QueueEntry>> {
    let mut out = Vec::new();
    let mut page = PageRequest {
        first: MAX_PAGE,
        after: None,
    };
    loop {
        let found = store.queue_messages(filter, &page).await?;
        out.extend(found.items);
        if out.len() > max {
            return Err(too_many(out.len(), max));
        }
        if !found.has_next_page {
            return Ok(out);
        }
        page.after = found.end_cursor;
    }
}

/// Makes, saves, audits and submits the job.
async fn submit(
    ctx: &Context<'_>,
    api: &Api,
    p: &Principal,
    actor: &Actor,
    input: &QueueActionInput,
    ids: Vec<MessageId>,
    params: Value,
) -> Result<QueueActionPayload> {
    let action: QueueAction = input.action.into();
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(api.config.queue_job_ttl)
        .unwrap_or_else(|_| chrono::Duration::minutes(10));
    let job = QueueJob {
        job_id: new_job_id(),
        host: input.host.clone(),
        action,
        ids,
        actor: p.user.clone(),
        reason: input.reason.clone().filter(|r| !r.trim().is_empty()),
        requested_at: now,
        expires_at: now + ttl,
    };
    let params = with(&params, "job_id", json!(job.job_id));

    if let Err(e) = api.store.save_queue_job(&job).await {
        let params = with(&params, "error", json!(e.to_string()));
        record(api, actor, action, &job.host, params, "failed").await;
        return Err(e.into());
    }
    record(api, actor, action, &job.host, params.clone(), "ok").await;

    let control = control(ctx)?;
    if let Err(e) = control.submit(&job).await {
        tracing::warn!(job = %job.job_id, host = %job.host, error = %e, "Queue job not submitted");
        let params = with(&params, "error", json!(e.to_string()));
        record(api, actor, action, &job.host, params, "failed").await;
        return Err(control_error(&e));
    }
    Ok(QueueActionPayload {
        dry_run: false,
        ids: id_texts(&job.ids),
        matched: None,
        job: Some(JobView::with_results(&job, &[])),
    })
}

/// Appends the request's audit entry.
async fn record(
    api: &Api,
    actor: &Actor,
    action: QueueAction,
    host: &str,
    params: Value,
    outcome: &str,
) {
    let name = action_name(action);
    audit(&*api.store, actor, &name, Some(host), Some(params), outcome).await;
}

/// `object` with `key` set to `value` (left out when null).
fn with(object: &Value, key: &str, value: Value) -> Value {
    let mut out = object.clone();
    if let (Some(map), false) = (out.as_object_mut(), value.is_null()) {
        map.insert(key.to_string(), value);
    }
    out
}

fn id_texts(ids: &[MessageId]) -> Vec<String> {
    ids.iter().map(MessageId::to_string).collect()
}
