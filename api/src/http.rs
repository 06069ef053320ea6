//! The GraphQL endpoints: `POST /graphql`, GraphiQL at `GET /graphql`.
//!
//! A request goes through, in order: the body size limit (axum), its
//! media type (only `application/json` or
//! `application/graphql-response+json` bodies are read: see
//! [`json_body`]), the bearer token (a bad one is refused with 401 before anything else), the
//! batch limits (operations per request, mutation fields per request:
//! checked on the parsed documents, before any resolver runs), then the
//! schema's own validation with its depth and complexity limits, then the
//! resolvers, under a time limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{BatchRequest, BatchResponse, ServerError};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::auth::AuthError;
use crate::graphql::Caller;
use crate::Served;

/// The client's IP address, with `X-Forwarded-For` from trusted proxies.
pub fn client_ip(served: &Served, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    served.config.client_ip(peer.ip(), xff)
}

/// The token of an `Authorization: Bearer` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A GraphQL-shaped error answer with `status`.
pub(crate) fn errors(status: StatusCode, message: &str, code: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The media types a POST body may have.
const BODY_TYPES: [&str; 2] = ["application/json", "application/graphql-response+json"];

/// `None` when the request says its body is JSON, else the 415 answer.
///
/// A browser sends a form or `text/plain` body to another site without
/// asking it first (no CORS preflight), so a page anywhere could make its
/// visitors' browsers log in or guess passwords here. A JSON body needs a
/// preflight, which only the configured origins pass (see `cors`).
pub(crate) fn json_body(headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if BODY_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        return None;
    }
    Some(errors(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send the request as JSON, with Content-Type: application/json",
        "UNSUPPORTED_MEDIA_TYPE",
    ))
}

/// `POST /graphql`.
pub async fn post(
    State(served): State<Arc<Served>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = json_body(&headers) {
        return refusal;
    }
    let ip = client_ip(&served, peer, &headers);

    // The caller, if a token came.
    let principal = match principal(&served, &headers).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };

    // The request, within the batch limits.
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return errors(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a GraphQL request: {e}"),
                "BAD_REQUEST",
            )
        }
    };
    if let Some(refusal) = check_batch(&served, &batch, ip).await {
        return refusal;
    }

    let batch = batch.data(Caller { principal, ip });
    let run = served.schema.execute_batch(batch);
    let response = match tokio::time::timeout(served.config.request_timeout, run).await {
        Ok(r) => r,
        Err(_) => BatchResponse::Single(async_graphql::Response::from_errors(vec![
            ServerError::new("the request took too long and was stopped", None),
        ])),
    };
    match serde_json::to_vec(&response) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the response: {e}"),
            "INTERNAL",
        ),
    }
}

/// The caller of a request: `None` without an `Authorization` header; a
/// 401 answer for a bad token, a 503 when the store cannot check it.
pub(crate) async fn principal(
    served: &Served,
    headers: &HeaderMap,
) -> Result<Option<crate::auth::Principal>, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| bearer(v).unwrap_or(""));
    let Some(token) = token else {
        return Ok(None);
    };
    match served.api.auth.authenticate(token).await {
        Ok(p) => Ok(Some(p)),
        // The token may be fine: the store that knows its session did
        // not answer. Logging in again would not help.
        Err(AuthError::Store(e)) => {
            tracing::warn!(error = %e, "Cannot check a token: the store failed");
            Err(errors(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable, so the token cannot be checked; try again later",
                "STORE_UNAVAILABLE",
            ))
        }
        Err(_) => Err(errors(
            StatusCode::UNAUTHORIZED,
            "invalid or expired token; log in again",
            "UNAUTHENTICATED",
        )),
    }
}

/// The refusal of a request with too many operations or mutation fields,
/// if it has too many. The `login` fields of a refused request still
/// count as failed attempts of its client, so that packing guesses into
/// one request gains nothing.
async fn check_batch(served: &Served, batch: &BatchRequest, ip: IpAddr) -> Option<Response> {
    let requests: Vec<&async_graphql::Request> = match batch {
        BatchRequest::Single(r) => vec![r],
        BatchRequest::Batch(rs) => rs.iter().collect(),
    };
    if requests.len() > served.config.max_batch {
        return Some(errors(
            StatusCode::BAD_REQUEST,
            &format!(
                "a batch may hold at most {} operations",
                served.config.max_batch
            ),
            "BATCH_LIMIT",
        ));
    }
    let mut mutations = 0;
    let mut logins = 0;
    for r in requests {
        // Unparsable documents are left to the schema to explain.
        if let Ok(doc) = async_graphql::parser::parse_query(&r.query) {
            let (m, l) = count_mutation_fields(&doc);
            mutations += m;
            logins += l;
        }
    }
    if mutations > served.config.max_mutations {
        served.api.auth.count_failures("-", ip, logins).await;
        return Some(errors(
            StatusCode::BAD_REQUEST,
            &format!(
                "a request may hold at most {} mutation fields, aliases included",
                served.config.max_mutations
            ),
            "BATCH_LIMIT",
        ));
    }
    None
}

/// Mutation fields at the top of every mutation of a document, fragments
/// followed, and how many of them are `login`.
fn count_mutation_fields(doc: &ExecutableDocument) -> (usize, usize) {
    let mut counts = (0, 0);
    let operations: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![&op.node],
        DocumentOperations::Multiple(ops) => ops.values().map(|op| &op.node).collect(),
    };
    for op in operations {
        if op.ty == OperationType::Mutation {
            count_fields(doc, &op.selection_set.node, 0, &mut counts);
        }
    }
    counts
}

fn count_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    depth: usize,
    counts: &mut (usize, usize),
) {
    // Fragment cycles are invalid anyway; the depth bound stops them here.
    if depth > 8 {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                counts.0 += 1;
                if f.node.name.node.as_str() == "login" {
                    counts.1 += 1;
                }
            }
            Selection::InlineFragment(f) => {
                count_fields(doc, &f.node.selection_set.node, depth + 1, counts)
            }
            Selection::FragmentSpread(s) => {
                if let Some(frag) = doc.fragments.get(&s.node.fragment_name.node) {
                    count_fields(doc, &frag.node.selection_set.node, depth + 1, counts);
                }
            }
        }
    }
}

/// `GET /graphql`: GraphiQL, when enabled.
pub async fn graphiql(State(served): State<Arc<Served>>) -> Response {
    if !served.config.graphiql {
        return (StatusCode::NOT_FOUND, "GraphiQL is switched off\n").into_response();
    }
    Html(GRAPHIQL).into_response()
}

/// The explorer page: GraphiQL from its public package, pointed at this
/// server's endpoints.
const GRAPHIQL: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>exim-pilot GraphQL</title>
<link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css">
<style>body { margin: 0; height: 100vh; } #explorer { height: 100vh; }</style>
</head>
<body>
<div id="explorer">Loading the explorer...</div>
<script src="https://unpkg.com/react@18/umd/react.production.min.js" crossorigin></script>
<script src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js" crossorigin></script>
<script src="https://unpkg.com/graphiql@3/graphiql.min.js" crossorigin></script>
<script>
  const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql/ws";
  const fetcher = GraphiQL.createFetcher({ url: "/graphql", subscriptionUrl: ws });
  ReactDOM.createRoot(document.getElementById("explorer"))
    .render(React.createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true }));
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_fields_are_counted_through_aliases_and_fragments() {
        let doc = async_graphql::parser::parse_query(
            "mutation M { a: login(username: \"x\", password: \"y\") { accessToken }
                        b: login(username: \"x\", password: \"z\") { accessToken }
                        ...F ... on Mutation { logout } }
             fragment F on Mutation { c: login(username: \"x\", password: \"w\") { accessToken } }
             query Q { me { name } }",
        )
        .unwrap();
        assert_eq!(count_mutation_fields(&doc), (4, 3));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
