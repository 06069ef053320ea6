//! The API's own metrics, on the process's `/metrics`:
//!
//! - `exim_pilot_api_operations_total{type, field, outcome}`: GraphQL
//!   operations run, by type (`query`, `mutation`, `subscription`), root
//!   field and outcome (`ok`, or `error` when the answer holds an error);
//! - `exim_pilot_api_operation_duration_seconds{type, field}`: how long
//!   queries and mutations took, from parsing to the encoded answer;
//! - `exim_pilot_api_subscriptions_open`: subscriptions streaming now;
//! - `exim_pilot_api_auth_failures_total{reason}`: refused logins
//!   (`credentials`, `throttled`), refused tokens (`token`), requests
//!   without one (`no_token`) and requests beyond the caller's role
//!   (`forbidden`).
//!
//! Operations are labelled by their root fields, not by the operation
//! name a client gives (`query Dashboard { ... }`): names are the
//! client's to choose, so a label per name would let any client create
//! series without end, and the same name may stand for different queries
//! in different clients. The root fields are the schema's own (`messages`,
//! `deliverability`, `queueAction`...), a set fixed at build time, and
//! they say what the server was asked to do. An operation selecting
//! several root fields counts once under each; one that fails to parse or
//! validate counts under `invalid` (of type `unknown` when not even its
//! type could be read), as its fields may be anything.
//! Subscriptions are counted when they end; their duration says nothing
//! of the server's speed and is not observed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::stream::{BoxStream, StreamExt};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The label of operations that did not parse or validate.
const INVALID: &str = "invalid";

/// The API's metrics, registered once per server.
#[derive(Clone)]
pub struct ApiMetrics {
    operations: IntCounterVec,
    duration: HistogramVec,
    subscriptions: IntGauge,
    auth_failures: IntCounterVec,
}

impl ApiMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<ApiMetrics> {
        let operations = IntCounterVec::new(
            Opts::new(
                "exim_pilot_api_operations_total",
                "GraphQL operations run, by type, root field and outcome.",
            ),
            &["type", "field", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "exim_pilot_api_operation_duration_seconds",
                "Time to answer GraphQL queries and mutations, by type and root field.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["type", "field"],
        )?;
        let subscriptions = IntGauge::new(
            "exim_pilot_api_subscriptions_open",
            "GraphQL subscriptions streaming now.",
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "exim_pilot_api_auth_failures_total",
                "Refused logins, tokens and requests, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        Ok(ApiMetrics {
            operations,
            duration,
            subscriptions,
            auth_failures,
        })
    }

    /// Counts an authentication or authorisation failure.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Counts one finished operation under each of its root fields.
    fn operation(&self, seen: &Seen, ok: bool, elapsed: Option<f64>) {
        let ty = seen.ty.unwrap_or("unknown");
        let outcome = if ok { "ok" } else { "error" };
        for field in seen.labels() {
            self.operations
                .with_label_values(&[ty, field, outcome])
                .inc();
            if let Some(seconds) = elapsed {
                self.duration
                    .with_label_values(&[ty, field])
                    .observe(seconds);
            }
        }
    }
}

/// What one request's operation turned out to be.
#[derive(Default)]
struct Seen {
    /// The operation the request names, if it names one.
    name: Option<String>,
    /// Each operation of the document: its name, type and root fields.
    operations: Vec<(Option<String>, &'static str, Vec<String>)>,
    /// The operation's type, once chosen.
    ty: Option<&'static str>,
    /// Its root fields, once chosen and valid.
    fields: Vec<String>,
    /// True once the document validated.
    valid: bool,
}

impl Seen {
    /// The root field labels: the fields once valid, `invalid` otherwise.
    fn labels(&self) -> Vec<&str> {
        if !self.valid || self.fields.is_empty() {
            return vec![INVALID];
        }
        self.fields.iter().map(String::as_str).collect()
    }

    /// Picks the operation run (the one named, or the document's only
    /// one).
    fn choose(&mut self) {
        let chosen = match self.name.as_deref() {
            Some(n) => self
                .operations
                .iter()
                .find(|(o, _, _)| o.as_deref() == Some(n)),
            None if self.operations.len() == 1 => self.operations.first(),
            None => None,
        };
        if let Some((_, ty, fields)) = chosen {
            self.ty = Some(ty);
            self.fields = fields.clone();
        }
    }
}

/// The extension that measures operations: a factory, and one instance
/// per request.
pub struct Observe(pub ApiMetrics);

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Observer {
            metrics: self.0.clone(),
            seen: Arc::new(Mutex::new(Seen::default())),
        })
    }
}

struct Observer {
    metrics: ApiMetrics,
    seen: Arc<Mutex<Seen>>,
}

impl Observer {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends a subscription's count when its stream is dropped.
struct Open {
    metrics: ApiMetrics,
    seen: Arc<Mutex<Seen>>,
    ok: bool,
}

impl Open {
    fn saw(&mut self, response: &Response) {
        self.ok &= response.errors.is_empty();
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.subscriptions.dec();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.metrics.operation(&seen, self.ok, None);
    }
}

#[async_trait::async_trait]
impl Extension for Observer {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let elapsed = started.elapsed().as_secs_f64();
        let seen = self.seen();
        self.metrics
            .operation(&seen, response.errors.is_empty(), Some(elapsed));
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        self.metrics.subscriptions.inc();
        let mut open = Open {
            metrics: self.metrics.clone(),
            seen: self.seen.clone(),
            ok: true,
        };
        next.run(ctx, stream)
            .map(move |response| {
                open.saw(&response);
                response
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.seen().name = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut seen = self.seen();
        seen.operations = operations(&document);
        seen.choose();
        drop(seen);
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        self.seen().valid = true;
        Ok(result)
    }
}

/// Each operation of a document: its name, type and root field names
/// (fragments followed).
fn operations(doc: &ExecutableDocument) -> Vec<(Option<String>, &'static str, Vec<String>)> {
    let ops: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![(None, &op.node)],
        DocumentOperations::Multiple(ops) => ops
            .iter()
            .map(|(name, op)| (Some(name.to_string()), &op.node))
            .collect(),
    };
    ops.into_iter()
        .map(|(name, op)| {
            let ty = match op.ty {
                OperationType::Query => "query",
                OperationType::Mutation => "mutation",
                OperationType::Subscription => "subscription",
            };
            let mut fields = Vec::new();
            root_fields(doc, &op.selection_set.node, 0, &mut fields);
            fields.sort();
            fields.dedup();
            (name, ty, fields)
        })
        .collect()
}

fn root_fields(doc: &ExecutableDocument, set: &SelectionSet, depth: usize, out: &mut Vec<String>) {
    // Fragment cycles do not validate; the bound keeps this finite anyway.
    if depth > 8 {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => out.push(f.node.name.node.to_string()),
            Selection::InlineFragment(f) => {
                root_fields(doc, &f.node.selection_set.node, depth + 1, out)
            }
            Selection::FragmentSpread(s) => {
                if let Some(frag) = doc.fragments.get(&s.node.fragment_name.node) {
                    root_fields(doc, &frag.node.selection_set.node, depth + 1, out);
                }
            }
        }
    }
}
