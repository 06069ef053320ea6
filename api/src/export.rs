//! CSV exports: `POST /export.csv`.
//!
//! The body is a GraphQL request, as for `POST /graphql`, holding one
//! query operation that selects one field: any report (`deliverability`,
//! `failureReasons`, `rejects`, `topSenders`...), a search (`messages`,
//! `logLines`, `queue`...) or anything else a query returns. It runs
//! through the same schema, so the caller's role, host scope, filters and
//! the query limits apply as they would to the query itself, and the
//! answer is that field's rows as CSV:
//!
//! - a list gives one row per element; a connection one row per node
//!   (`edges { node }` or `nodes`); another object one row per element of
//!   its one list of objects, or a single row;
//! - nested objects become columns named by their path (`lastDeferral.reason`),
//!   lists of plain values one cell joined with `; `, other lists one cell
//!   of JSON;
//! - the columns are those of the first page, in the order of the query;
//!   an answer without rows still gets a header line, of the leaf fields
//!   the query selects (of `node` or `nodes` for a connection).
//!
//! A connection whose query declares a variable `$after` and passes it
//! to the field is read to its end, page after page (`first` rows each),
//! and streamed as it is read. An export that fails after its first page,
//! or reaches [`ApiConfig::export_max_rows`](crate::ApiConfig), is cut off
//! with an aborted transfer, so a client never takes a short file for a
//! whole one. Errors of the first page come back as a GraphQL error
//! answer with status 400, before any CSV.
//!
//! Every export is audited (`export`, the field as target, the
//! operation's name and variables as parameters). Text cells that a
//! spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`,
//! tab or carriage return) are prefixed with `'`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{DocumentOperations, OperationType, Selection, SelectionSet};
use async_graphql::{Name, Value as ConstValue, Variables};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::auth::{audit, Actor, Principal};
use crate::graphql::Caller;
use crate::http::{client_ip, errors, json_body, principal};
use crate::Served;

/// A GraphQL answer's object, its fields in the query's order.
type Object = IndexMap<Name, ConstValue>;

/// The longest query text kept in the audit trail.
const AUDITED_QUERY_CHARS: usize = 2000;

/// The body of an export request.
#[derive(Deserialize)]
struct ExportRequest {
    query: String,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
}

/// What the request asks, once checked.
struct Plan {
    /// The response key of the one field.
    key: String,
    /// Whether the operation declares `$after`, so pages can be followed.
    paged: bool,
    /// The columns the query selects, for a header when no row comes.
    selected: Vec<String>,
}

/// `POST /export.csv`.
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
    let principal = match principal(&served, &headers).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return errors(
                StatusCode::UNAUTHORIZED,
                "an export needs a token: send Authorization: Bearer <accessToken>",
                "UNAUTHENTICATED",
            )
        }
        Err(refusal) => return refusal,
    };
    let request: ExportRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return errors(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a GraphQL request: {e}"),
                "BAD_REQUEST",
            )
        }
    };
    let plan = match plan(&request) {
        Ok(plan) => plan,
        Err(message) => return errors(StatusCode::BAD_REQUEST, &message, "BAD_REQUEST"),
    };
    let actor = Actor::of(&principal, ip);
    let params = serde_json::json!({
        "operationName": request.operation_name,
        "variables": request.variables,
        "query": request.query.chars().take(AUDITED_QUERY_CHARS).collect::<String>(),
    });

    let variables = request.variables.clone().unwrap_or(Value::Null);
    let first = run(&served, &request, variables.clone(), &principal, ip).await;
    let outcome = if first.is_ok() { "ok" } else { "failed" };
    audit(
        &*served.store,
        &actor,
        "export",
        Some(&plan.key),
        Some(params),
        outcome,
    )
    .await;
    let first = match first {
        Ok(data) => data,
        Err(answer) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                answer.to_string(),
            )
                .into_response()
        }
    };

    let page = Page::of(field(&first, &plan.key), &plan.key);
    let columns = if page.rows.is_empty() {
        plan.selected.clone()
    } else {
        columns(&page.rows)
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let filename = format!("{}.csv", plan.key);
    tokio::spawn(stream_rows(
        served, request, variables, principal, ip, plan, page, columns, sender,
    ));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Checks that the request is one query of one field; says which.
fn plan(request: &ExportRequest) -> Result<Plan, String> {
    let document = async_graphql::parser::parse_query(&request.query)
        .map_err(|e| format!("the query does not parse: {e}"))?;
    let operation = match (&document.operations, &request.operation_name) {
        (DocumentOperations::Single(op), _) => &op.node,
        (DocumentOperations::Multiple(ops), Some(name)) => {
            &ops.get(name.as_str())
                .ok_or_else(|| format!("no operation named {name:?} in the query"))?
                .node
        }
        (DocumentOperations::Multiple(_), None) => {
            return Err("the query holds several operations: give operationName".into())
        }
    };
    if operation.ty != OperationType::Query {
        return Err("only queries can be exported, not mutations or subscriptions".into());
    }
    let fields: Vec<_> = operation
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|s| match &s.node {
            Selection::Field(f) => Some(&f.node),
            _ => None,
        })
        .collect();
    if fields.len() != 1 || operation.selection_set.node.items.len() != 1 {
        return Err("an export selects exactly one field (one report or one search)".into());
    }
    let field = fields[0];
    let key = field
        .alias
        .as_ref()
        .map(|a| a.node.to_string())
        .unwrap_or_else(|| field.name.node.to_string());
    let paged = operation
        .variable_definitions
        .iter()
        .any(|v| v.node.name.node.as_str() == "after");
    let rows = row_selection(&field.selection_set.node);
    let mut selected = Vec::new();
    leaf_paths(rows, "", &mut selected);
    Ok(Plan {
        key,
        paged,
        selected,
    })
}

/// The selection of one row: a connection's `edges { node }` or `nodes`,
/// or the field's own.
fn row_selection(set: &SelectionSet) -> &SelectionSet {
    sub_selection(set, "edges")
        .and_then(|edges| sub_selection(edges, "node"))
        .or_else(|| sub_selection(set, "nodes"))
        .unwrap_or(set)
}

/// The selection of field `name` under `parent`, if selected.
fn sub_selection<'a>(parent: &'a SelectionSet, name: &str) -> Option<&'a SelectionSet> {
    parent.items.iter().find_map(|s| match &s.node {
        Selection::Field(f) if f.node.name.node.as_str() == name => {
            Some(&f.node.selection_set.node)
        }
        _ => None,
    })
}

/// The dotted paths of the leaf fields under `set`, as [`flatten`] names
/// columns. Fragments are not followed: their columns appear only once a
/// row has them.
fn leaf_paths(set: &SelectionSet, prefix: &str, out: &mut Vec<String>) {
    for selection in &set.items {
        let Selection::Field(f) = &selection.node else {
            continue;
        };
        let f = &f.node;
        let name = f.alias.as_ref().unwrap_or(&f.name).node.as_str();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        if f.selection_set.node.items.is_empty() {
            out.push(path);
        } else {
            leaf_paths(&f.selection_set.node, &path, out);
        }
    }
}

/// Runs the request with `variables` as `principal`; the data (whose
/// objects keep the query's field order), or the whole GraphQL answer as
/// JSON when it carries errors.
async fn run(
    served: &Served,
    request: &ExportRequest,
    variables: Value,
    principal: &Principal,
    ip: IpAddr,
) -> Result<ConstValue, Value> {
    let mut graphql = async_graphql::Request::new(request.query.clone())
        .variables(Variables::from_json(variables))
        .data(Caller {
            principal: Some(principal.clone()),
            ip,
        });
    if let Some(name) = &request.operation_name {
        graphql = graphql.operation_name(name.clone());
    }
    let run = served.schema.execute(graphql);
    let response = match tokio::time::timeout(served.config.request_timeout, run).await {
        Ok(response) => response,
        Err(_) => {
            return Err(serde_json::json!({
                "errors": [{ "message": "the request took too long and was stopped" }]
            }))
        }
    };
    if !response.errors.is_empty() {
        return Err(serde_json::to_value(&response).unwrap_or(Value::Null));
    }
    Ok(response.data)
}

/// The value of field `key` of the data.
fn field<'a>(data: &'a ConstValue, key: &str) -> &'a ConstValue {
    const NULL: &ConstValue = &ConstValue::Null;
    match data {
        ConstValue::Object(map) => map.get(key).unwrap_or(NULL),
        _ => NULL,
    }
}

/// One answer's rows and the cursor of the next page, if any.
struct Page {
    rows: Vec<Vec<(String, Cell)>>,
    next: Option<String>,
}

impl Page {
    fn of(value: &ConstValue, key: &str) -> Page {
        let (items, next): (Vec<&ConstValue>, Option<String>) = match value {
            ConstValue::List(items) => (items.iter().collect(), None),
            ConstValue::Object(map) => (rows_of_object(value, map), next_cursor(map)),
            ConstValue::Null => (Vec::new(), None),
            other => (vec![other], None),
        };
        let rows = items
            .into_iter()
            .map(|item| {
                let mut cells = Vec::new();
                match item {
                    ConstValue::Object(_) => flatten(item, "", &mut cells),
                    other => flatten(other, key, &mut cells),
                }
                cells
            })
            .collect();
        Page { rows, next }
    }
}

/// The rows of an object answer: a connection's nodes, its one list of
/// objects, or itself.
fn rows_of_object<'a>(value: &'a ConstValue, map: &'a Object) -> Vec<&'a ConstValue> {
    let list = |name: &str| match map.get(name) {
        Some(ConstValue::List(items)) => Some(items),
        _ => None,
    };
    if let Some(edges) = list("edges") {
        return edges
            .iter()
            .map(|e| match e {
                ConstValue::Object(edge) => edge.get("node").unwrap_or(e),
                other => other,
            })
            .collect();
    }
    if let Some(nodes) = list("nodes") {
        return nodes.iter().collect();
    }
    let lists: Vec<&Vec<ConstValue>> = map
        .values()
        .filter_map(|v| match v {
            ConstValue::List(items)
                if !items.is_empty()
                    && items.iter().all(|i| matches!(i, ConstValue::Object(_))) =>
            {
                Some(items)
            }
            _ => None,
        })
        .collect();
    match lists.as_slice() {
        [one] => one.iter().collect(),
        _ => vec![value],
    }
}

/// The cursor of the next page of a connection that has one.
fn next_cursor(map: &Object) -> Option<String> {
    let ConstValue::Object(info) = map.get("pageInfo")? else {
        return None;
    };
    if info.get("hasNextPage")? != &ConstValue::Boolean(true) {
        return None;
    }
    match info.get("endCursor")? {
        ConstValue::String(cursor) => Some(cursor.clone()),
        _ => None,
    }
}

/// One cell: its text, and whether it came from a string (only those may
/// be read as formulas).
#[derive(Clone, Debug, Default, PartialEq)]
struct Cell {
    text: String,
    string: bool,
}

/// Adds the cells of `value` under the column name `path`.
fn flatten(value: &ConstValue, path: &str, cells: &mut Vec<(String, Cell)>) {
    let text = |text: String| Cell { text, string: true };
    let plain = |text: String| Cell {
        text,
        string: false,
    };
    let cell = match value {
        ConstValue::Object(map) => {
            for (key, inner) in map {
                let name = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                flatten(inner, &name, cells);
            }
            return;
        }
        ConstValue::Null => Cell::default(),
        ConstValue::Boolean(b) => plain(b.to_string()),
        ConstValue::Number(n) => plain(n.to_string()),
        ConstValue::Enum(e) => plain(e.to_string()),
        ConstValue::String(s) => text(s.clone()),
        ConstValue::Binary(b) => text(String::from_utf8_lossy(b).into_owned()),
        ConstValue::List(items)
            if items
                .iter()
                .all(|i| !matches!(i, ConstValue::Object(_) | ConstValue::List(_))) =>
        {
            text(
                items
                    .iter()
                    .map(|i| match i {
                        ConstValue::String(s) => s.clone(),
                        ConstValue::Null => String::new(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
        ConstValue::List(_) => text(
            value
                .clone()
                .into_json()
                .map(|j| j.to_string())
                .unwrap_or_default(),
        ),
    };
    cells.push((path.to_string(), cell));
}

/// The columns of a page's rows, in order of first appearance.
fn columns(rows: &[Vec<(String, Cell)>]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for (name, _) in row {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    columns
}

/// One CSV line of `cells` (RFC 4180: quoted when needed, CRLF ends).
fn csv_line<'a>(cells: impl Iterator<Item = Option<&'a Cell>>) -> String {
    let mut line = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            line.push(',');
        }
        let Some(cell) = cell else { continue };
        line.push_str(&exim_pilot_schema::csv::cell(&cell.text, cell.string));
    }
    line.push_str("\r\n");
    line
}

/// The header line.
fn header_line(columns: &[String]) -> String {
    let cells: Vec<Cell> = columns
        .iter()
        .map(|c| Cell {
            text: c.clone(),
            string: false,
        })
        .collect();
    csv_line(cells.iter().map(Some))
}

/// The lines of `rows` under `columns`.
fn row_lines(columns: &[String], rows: &[Vec<(String, Cell)>], out: &mut String) {
    for row in rows {
        out.push_str(&csv_line(columns.iter().map(|c| {
            row.iter().find(|(name, _)| name == c).map(|(_, cell)| cell)
        })));
    }
}

/// Writes the header and the first page, then follows the pages while
/// there are more, the query can ask for them and the limit allows.
#[allow(clippy::too_many_arguments)]
async fn stream_rows(
    served: Arc<Served>,
    request: ExportRequest,
    variables: Value,
    principal: Principal,
    ip: IpAddr,
    plan: Plan,
    first: Page,
    columns: Vec<String>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let cut = |why: String| Err(std::io::Error::other(why));
    let max = served.config.export_max_rows;
    let mut chunk = header_line(&columns);
    let mut written = 0usize;
    let mut page = first;
    loop {
        if written + page.rows.len() > max {
            let room = max - written;
            row_lines(&columns, &page.rows[..room], &mut chunk);
            let _ = sender.send(Ok(Bytes::from(chunk))).await;
            tracing::warn!(rows = max, field = %plan.key, "CSV export cut off at its row limit");
            let _ = sender
                .send(cut(format!("the export reached its limit of {max} rows")))
                .await;
            return;
        }
        row_lines(&columns, &page.rows, &mut chunk);
        written += page.rows.len();
        if sender.send(Ok(Bytes::from(chunk))).await.is_err() {
            return; // The client went away.
        }
        chunk = String::new();
        let Some(cursor) = page.next.take().filter(|_| plan.paged) else {
            return;
        };
        let mut next = match &variables {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        next.insert("after".into(), Value::String(cursor));
        match run(&served, &request, Value::Object(next), &principal, ip).await {
            Ok(data) => page = Page::of(field(&data, &plan.key), &plan.key),
            Err(answer) => {
                tracing::warn!(field = %plan.key, answer = %answer, "CSV export failed on a later page");
                let _ = sender
                    .send(cut(format!("a later page failed: {answer}")))
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads JSON text the way answers are built: fields in order.
    fn answer(text: &str) -> ConstValue {
        serde_json::from_str(text).expect("JSON")
    }

    fn csv(text: &str) -> String {
        let page = Page::of(&answer(text), "field");
        let columns = columns(&page.rows);
        let mut out = header_line(&columns);
        row_lines(&columns, &page.rows, &mut out);
        out
    }

    #[test]
    fn a_connection_gives_one_row_per_node_with_nested_columns() {
        let text = r#"{
            "edges": [
                { "node": { "id": "a", "size": 10, "lastDeferral": { "reason": "TIMEOUT" } } },
                { "node": { "id": "b", "size": null, "lastDeferral": null } }
            ],
            "pageInfo": { "hasNextPage": true, "endCursor": "c2" }
        }"#;
        assert_eq!(
            csv(text),
            "id,size,lastDeferral.reason,lastDeferral\r\na,10,TIMEOUT,\r\nb,,,\r\n"
        );
        assert_eq!(Page::of(&answer(text), "f").next.as_deref(), Some("c2"));
        let last = r#"{ "edges": [], "pageInfo": { "hasNextPage": false, "endCursor": null } }"#;
        assert_eq!(Page::of(&answer(last), "f").next, None);
    }

    #[test]
    fn lists_and_objects_with_one_list_give_rows() {
        assert_eq!(
            csv(r#"[{ "domain": "a.example", "n": 1 }, { "domain": "b.example", "n": 2 }]"#),
            "domain,n\r\na.example,1\r\nb.example,2\r\n"
        );
        assert_eq!(
            csv(r#"{ "total": 3, "groups": [{ "key": "x", "sent": 3 }] }"#),
            "key,sent\r\nx,3\r\n"
        );
        assert_eq!(
            csv(r#"{ "total": 3, "rate": 0.5 }"#),
            "total,rate\r\n3,0.5\r\n"
        );
        assert_eq!(csv(r#"["a", "b"]"#), "field\r\na\r\nb\r\n");
        assert_eq!(csv("null"), "\r\n");
    }

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let out = csv(r#"[{
                "text": "say \"hi\", then\nleave",
                "sender": "=HYPERLINK(\"x\")",
                "delta": -3,
                "to": ["a@example.com", "b@example.com"],
                "hops": [{ "ip": "192.0.2.1" }]
            }]"#);
        assert_eq!(
            out,
            "text,sender,delta,to,hops\r\n\"say \"\"hi\"\", then\nleave\",\"'=HYPERLINK(\"\"x\"\")\",-3,\
             a@example.com; b@example.com,\"[{\"\"ip\"\":\"\"192.0.2.1\"\"}]\"\r\n"
        );
    }

    #[test]
    fn only_one_query_field_is_exported() {
        let request = |query: &str| ExportRequest {
            query: query.to_string(),
            variables: None,
            operation_name: None,
        };
        let ok = plan(&request(
            "query($after: String) { messages(after: $after) { edges { node { id } } } }",
        ))
        .unwrap();
        assert_eq!(ok.key, "messages");
        assert!(ok.paged);
        assert_eq!(
            plan(&request("{ r: rejects { reason } }")).unwrap().key,
            "r"
        );
        assert!(plan(&request("{ me { name } users { name } }")).is_err());
        assert!(plan(&request("mutation { logout }")).is_err());
        assert!(plan(&request("subscription { logRecords { raw } }")).is_err());
        assert!(plan(&request("{ messages(")).is_err());
    }

    fn selected(query: &str) -> Vec<String> {
        let request = ExportRequest {
            query: query.to_string(),
            variables: None,
            operation_name: None,
        };
        plan(&request).expect("plan").selected
    }

    #[test]
    fn an_empty_answer_is_headed_by_the_selected_leaf_fields() {
        assert_eq!(
            selected(
                "query($after: String) { messages(after: $after) { \
                 edges { node { id size sender: from lastDeferral { reason } } } \
                 pageInfo { endCursor } } }"
            ),
            ["id", "size", "sender", "lastDeferral.reason"]
        );
        assert_eq!(
            selected("{ rejects { nodes { at clientIp } } }"),
            ["at", "clientIp"]
        );
        assert_eq!(
            selected("{ failureReasons { reason count } }"),
            ["reason", "count"]
        );
    }
}
