//! The mail servers' queues in the API.
//!
//! What is read comes from the store, as the mail servers' nodes keep it
//! up to date with queue snapshots: current queues (`queue`), their
//! health and history, operators' jobs and their results. What acts goes
//! through the process's [`QueueControl`](crate::QueueControl): queue
//! actions (`queueAction`) and reading a queued message
//! (`queuedMessage`). Both are audited, refusals included.
//!
//! Who may do what: every role reads queues, jobs and results (of the
//! mail servers they may see); operators and admins act; a queued
//! message's headers and body are read by the roles of
//! `ApiConfig::queue_view_roles` (operators and admins by default), its
//! log by those of `ApiConfig::queue_log_roles` (everyone by default).
//!
//! - `query`: the queries, message views included.
//! - `action`: the `queueAction` mutation.
//! - `results`: the `queueJobResults` subscription.
//! - `types`: inputs, enums and output types.

use async_graphql::{Context, ErrorExtensions};

use crate::auth::{Actor, AuthError, Principal};
use crate::graphql::{api, coded, request_caller};
use crate::{QueueControl, QueueControlError};

mod action;
mod query;
mod results;
mod types;

pub use action::QueueMutation;
pub use query::QueueQuery;
pub use results::QueueSubscription;

/// An error with a `code` extension clients can test.
pub(crate) fn error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, ext| ext.set("code", code))
}

/// A request that cannot be served as asked.
pub(crate) fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    error("BAD_USER_INPUT", message)
}

/// The text of the error a process without queue control answers.
pub const UNAVAILABLE: &str = "queue actions are not available in this process: it has no \
     way to reach Exim (run them through `exim-pilot standalone` on the mail server, or \
     through the API of a fleet whose nodes take queue jobs)";

/// The error of a refused queue control request.
fn control_error(e: &QueueControlError) -> async_graphql::Error {
    let code = match e {
        QueueControlError::UnknownHost(_) | QueueControlError::NotQueued { .. } => "NOT_FOUND",
        QueueControlError::Unavailable(_) => "QUEUE_UNAVAILABLE",
        QueueControlError::Failed(_) => "QUEUE_FAILED",
    };
    error(code, e.to_string())
}

/// The process's queue control, if it has one.
fn control<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a dyn QueueControl> {
    api(ctx)?
        .queue
        .as_deref()
        .ok_or_else(|| error("QUEUE_UNAVAILABLE", UNAVAILABLE))
}

/// The authenticated caller, whatever their role, as the audit trail
/// names them.
fn who<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<(&'a Principal, Actor)> {
    let c = request_caller(ctx)?;
    let p = c
        .principal
        .as_ref()
        .ok_or_else(|| coded(AuthError::InvalidToken))?;
    Ok((p, Actor::of(p, c.ip)))
}
