//! The GraphQL schema: queries, mutations and subscriptions.
//!
//! Every resolver reads through the [`Store`] interface, so the same
//! schema serves the embedded store of standalone mode and ClickHouse in
//! fleet mode. Every field checks the caller's role first ([`caller`]);
//! a refusal of a mutation is audited. Depth and complexity limits are
//! checked when the query is validated, before any resolver runs.
//!
//! - `query`: messages, reports, logs, hosts, the audit trail, users.
//! - `mutation`: login, refresh, logout, passwords, users.
//! - `subscription`: live lifecycle changes and log records.
//! - `types`: the output types.
//! - `queue`: the mail servers' queues: current queues, health, history,
//!   queue actions and their jobs, reading a queued message.
//!
//! Each part is its own object; [`Query`], [`Mutation`] and
//! [`Subscription`] merge them into the schema's three root types.

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::{
    Context, ErrorExtensions, MergedObject, MergedSubscription, Schema, SchemaBuilder,
};
use tokio::sync::broadcast;

use exim_pilot_store::{Role, Store, StoreError};

use crate::auth::{Actor, Auth, AuthError, Principal};
use crate::live::LiveBatch;
use crate::mask::{MaskViewers, Masker};
use crate::metrics::{ApiMetrics, Observe};
use crate::{ApiConfig, QueueControl};

mod mutation;
mod query;
mod queue;
mod subscription;
pub mod types;

/// Queries.
#[derive(MergedObject, Default)]
pub struct Query(query::LogQuery, queue::QueueQuery);

/// Mutations.
#[derive(MergedObject, Default)]
pub struct Mutation(mutation::AccountMutation, queue::QueueMutation);

/// Subscriptions.
#[derive(MergedSubscription, Default)]
pub struct Subscription(subscription::LiveSubscription, queue::QueueSubscription);

/// The schema type.
pub type ApiSchema = Schema<Query, Mutation, Subscription>;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 10;

/// Largest query complexity accepted (each field costs one; lists cost
/// their page size times their children).
pub const MAX_COMPLEXITY: usize = 5_000;

/// What the resolvers share.
pub struct Api {
    /// The store read and written.
    pub store: Arc<dyn Store>,
    /// Authentication.
    pub auth: Arc<Auth>,
    /// Committed batches, as the pipeline publishes them.
    pub live: broadcast::Sender<Arc<LiveBatch>>,
    /// What acts on queues, where something can.
    pub queue: Option<Arc<dyn QueueControl>>,
    /// The API's settings.
    pub config: ApiConfig,
    /// The API's metrics.
    pub metrics: ApiMetrics,
    /// What masks viewers' addresses, when they are masked.
    pub masker: Option<Arc<Masker>>,
}

/// Who sent the request and from where.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The authenticated user, if a valid token came with the request.
    pub principal: Option<Principal>,
    /// The client's IP address.
    pub ip: IpAddr,
}

/// The schema with its limits, without data (for the SDL).
pub fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
}

/// The schema serving `api`: its operations measured (see
/// [`crate::metrics`]), and viewers' addresses masked when configured
/// (see [`crate::mask`]).
pub fn schema(api: Arc<Api>, introspection: bool) -> ApiSchema {
    let mut b = builder().extension(Observe(api.metrics.clone()));
    if let Some(masker) = &api.masker {
        b = b.extension(MaskViewers(masker.clone()));
    }
    let mut b = b.data(api);
    if !introspection {
        b = b.disable_introspection();
    }
    b.finish()
}

/// The schema in SDL, as checked in at `api/schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// The shared data.
pub fn api<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Arc<Api>> {
    ctx.data::<Arc<Api>>()
}

/// The request's caller.
pub fn request_caller<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Caller> {
    ctx.data::<Caller>()
}

/// An error with a `code` extension clients can test.
pub fn coded(e: AuthError) -> async_graphql::Error {
    let code = match &e {
        AuthError::InvalidCredentials => "INVALID_CREDENTIALS",
        AuthError::Throttled(_) => "THROTTLED",
        AuthError::InvalidToken => "UNAUTHENTICATED",
        AuthError::Forbidden(_) => "FORBIDDEN",
        AuthError::Password(_) | AuthError::BadName(_) => "BAD_USER_INPUT",
        AuthError::Store(StoreError::Exists { .. }) => "ALREADY_EXISTS",
        AuthError::Store(StoreError::NotFound { .. }) => "NOT_FOUND",
        AuthError::Store(_) => "INTERNAL",
    };
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| ext.set("code", code))
}

/// The caller, if their role is at least `role`. A refusal is audited
/// with the field's name.
pub async fn caller<'a>(ctx: &'a Context<'_>, role: Role) -> async_graphql::Result<&'a Principal> {
    let c = request_caller(ctx)?;
    let Some(p) = &c.principal else {
        api(ctx)?.metrics.auth_failure("no_token");
        return Err(coded(AuthError::InvalidToken));
    };
    if p.role >= role {
        return Ok(p);
    }
    api(ctx)?.metrics.auth_failure("forbidden");
    let field = ctx.field().name().to_string();
    crate::auth::audit(
        &*api(ctx)?.store,
        &Actor::of(p, c.ip),
        "access",
        Some(&field),
        None,
        "denied",
    )
    .await;
    Err(coded(AuthError::Forbidden(role)))
}

/// The host a scoped caller may read: the one asked if allowed, their
/// only host when they have one and asked for none.
pub fn scoped_host(p: &Principal, asked: Option<String>) -> async_graphql::Result<Option<String>> {
    match asked {
        Some(h) if p.may_see(&h) => Ok(Some(h)),
        Some(h) => Err(async_graphql::Error::new(format!(
            "forbidden: you may not see mail server {h:?}"
        ))
        .extend_with(|_, ext| ext.set("code", "FORBIDDEN"))),
        None if p.hosts.is_empty() => Ok(None),
        None if p.hosts.len() == 1 => Ok(p.hosts.first().cloned()),
        None => Err(async_graphql::Error::new(
            "name one of the mail servers you may see with `host`",
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        let current = super::sdl();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &current).expect("write schema.graphql");
        }
        let saved = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            saved == current,
            "api/schema.graphql is out of date: run `UPDATE_SCHEMA=1 cargo test -p \
             exim-pilot-api checked_in_schema_is_current` and commit the file"
        );
    }
}
