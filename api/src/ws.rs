//! Subscriptions over WebSocket at `/graphql/ws`, protocol
//! `graphql-transport-ws`.
//!
//! Browsers cannot set headers on a WebSocket, so the token comes in the
//! `connection_init` payload, under `Authorization`, `authorization`,
//! `token` or `headers.authorization` (with or without `Bearer `). The
//! socket closes, as the protocol says:
//!
//! - 4403 when the token is missing or invalid (no acknowledgement is
//!   sent and nothing runs);
//! - 4401 when a `subscribe` comes before the acknowledgement;
//! - 4408 when no `connection_init` comes in time;
//! - 4429 on a second `connection_init`; 4409 when an id is reused;
//!   4400 on a message that is not of the protocol.
//!
//! Once acknowledged, the socket closes with 4403 when the token expires
//! or its session is found gone: the token is checked again every
//! `ws_recheck` (default 5 s), which finds a logout, a password change, a
//! disabled or deleted user. The same check reads the user's current role
//! and mail servers: when they changed, every operation running on the
//! socket ends with an `error` of code `RIGHTS_CHANGED`, and what the
//! client subscribes to next runs with the new rights (masked for a
//! viewer, limited to their servers). An answer about to be written is
//! checked too when the last check is older than [`FRESH`]: what was
//! committed after a change made a second ago or more is never sent
//! under the old rights, for one store read per second of delivery.
//!
//! # Limits
//!
//! A socket runs at most `ws_max_subscriptions` operations at once, and a
//! user at most `ws_max_user_subscriptions` over all their sockets; a
//! `subscribe` past either gets an `error` message with the code
//! `TOO_MANY_SUBSCRIPTIONS` for its id, and the socket stays open. The
//! answers of a socket's operations wait in one queue of [`QUEUED`]
//! messages; an operation whose answer finds it full waits, holding only
//! its place in the live batches (see [`crate::graphql`]'s subscriptions),
//! and one that falls too far behind skips batches with a `LAGGED` error.
//! A client that stops reading thus costs a bounded amount of memory
//! until its writes stall for the write time limit and it is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Request;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::Principal;
use crate::graphql::Caller;
use crate::http::{bearer, client_ip};
use crate::Served;

/// The subprotocol spoken.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// How old the last check of a socket's rights may be when an answer is
/// written; an older one is made again first.
pub const FRESH: Duration = Duration::from_secs(1);

/// Answers waiting to be written to one socket, at most.
pub const QUEUED: usize = 64;

/// The operations each user runs over the sockets of this process.
#[derive(Debug, Default)]
pub struct UserCounts(Arc<Mutex<HashMap<String, usize>>>);

impl UserCounts {
    /// A place for one more operation of `user`, if they run fewer than
    /// `max`; it is given back when dropped.
    fn take(&self, user: &str, max: usize) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let running = counts.entry(user.to_string()).or_insert(0);
        if *running >= max {
            return None;
        }
        *running += 1;
        Some(Slot {
            counts: Arc::clone(&self.0),
            user: user.to_string(),
        })
    }
}

/// One running operation of a user, counted in [`UserCounts`].
struct Slot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = counts.get_mut(&self.user) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// `GET /graphql/ws`.
pub async fn upgrade(
    State(served): State<Arc<Served>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = client_ip(&served, peer, &headers);
    ws.protocols([PROTOCOL])
        .max_message_size(served.config.max_body_bytes)
        .on_upgrade(move |socket| serve(served, socket, ip))
}

/// The token of a `connection_init` payload.
fn token_of(payload: &Value) -> Option<String> {
    let raw = ["Authorization", "authorization", "token"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(Value::as_str))
        .or_else(|| {
            payload
                .get("headers")
                .and_then(|h| h.get("authorization").or_else(|| h.get("Authorization")))
                .and_then(Value::as_str)
        })?;
    Some(bearer(raw).unwrap_or(raw).to_string())
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
}

async fn send(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(WsMessage::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// What the connection knows once acknowledged.
struct Session {
    principal: Principal,
    token: String,
    running: HashMap<String, JoinHandle<()>>,
}

async fn serve(served: Arc<Served>, mut socket: WebSocket, ip: std::net::IpAddr) {
    let mut session: Option<Session> = None;
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(QUEUED);
    let init_deadline = tokio::time::Instant::now() + served.config.ws_init_timeout;
    let mut recheck = tokio::time::interval(served.config.ws_recheck);
    recheck.tick().await;
    let fresh = FRESH.min(served.config.ws_recheck);
    let mut checked = tokio::time::Instant::now();

    let code = loop {
        let expiry = session.as_ref().map(|s| s.principal.expires);
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue,
                };
                let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else {
                    break Some((4400, "invalid message".to_string()));
                };
                match handle(&served, &mut socket, &mut session, &out_tx, msg, ip).await {
                    Ok(()) => {}
                    Err(close) => break Some(close),
                }
            }
            Some(out) = out_rx.recv() => {
                if let Some(s) = session.as_mut().filter(|_| checked.elapsed() >= fresh) {
                    checked = tokio::time::Instant::now();
                    match recheck_rights(&served, &mut socket, s, &mut out_rx).await {
                        Ok(Rights::Same) => {}
                        // What `out` holds was made under the old rights.
                        Ok(Rights::Changed) => continue,
                        Err(close) => break Some(close),
                    }
                }
                if !send(&mut socket, out).await {
                    break None;
                }
            }
            _ = tokio::time::sleep_until(init_deadline), if session.is_none() => {
                break Some((4408, "connection initialisation timeout".to_string()));
            }
            _ = sleep_until_epoch(expiry), if expiry.is_some() => {
                break Some((4403, "Forbidden: the token expired".to_string()));
            }
            _ = recheck.tick(), if session.is_some() => {
                if let Some(s) = session.as_mut() {
                    checked = tokio::time::Instant::now();
                    let rights = recheck_rights(&served, &mut socket, s, &mut out_rx).await;
                    if let Err(close) = rights {
                        break Some(close);
                    }
                }
            }
        }
    };

    if let Some(s) = session.take() {
        for (_, task) in s.running {
            task.abort();
        }
    }
    if let Some((code, reason)) = code {
        close(socket, code, &reason).await;
    }
}

/// What a check of a socket's rights found.
enum Rights {
    /// The user's rights are those the operations run with.
    Same,
    /// They changed: the operations were ended.
    Changed,
}

/// Checks the session's token again: an error closes the socket when its
/// session is gone; changed rights end the running operations, and what
/// they queued under the old rights is dropped unsent.
async fn recheck_rights(
    served: &Served,
    socket: &mut WebSocket,
    s: &mut Session,
    queued: &mut mpsc::Receiver<Value>,
) -> Result<Rights, (u16, String)> {
    let Ok(now) = served.api.auth.authenticate(&s.token).await else {
        return Err((4403, "Forbidden: the token was revoked".to_string()));
    };
    if now.role == s.principal.role && now.hosts == s.principal.hosts {
        return Ok(Rights::Same);
    }
    tracing::info!(
        user = %now.user,
        role = now.role.as_str(),
        operations = s.running.len(),
        "Rights changed; ending the socket's operations"
    );
    let mut ended = Vec::new();
    for (id, task) in s.running.drain() {
        task.abort();
        // Stopped for sure once awaited: nothing more can be queued.
        let _ = task.await;
        ended.push(id);
    }
    while queued.try_recv().is_ok() {}
    for id in ended {
        send(socket, rights_changed(&id)).await;
    }
    s.principal = now;
    Ok(Rights::Changed)
}

/// The `error` message ending operation `id` after its user's rights
/// changed.
fn rights_changed(id: &str) -> Value {
    json!({
        "type": "error",
        "id": id,
        "payload": [{
            "message": "the user's role or mail servers changed: subscribe again",
            "extensions": { "code": "RIGHTS_CHANGED" },
        }],
    })
}

/// Sleeps until `at` seconds since the epoch.
async fn sleep_until_epoch(at: Option<i64>) {
    let now = chrono::Utc::now().timestamp();
    let left = at.unwrap_or(now).saturating_sub(now).max(0) as u64;
    tokio::time::sleep(std::time::Duration::from_secs(left)).await;
}

/// Handles one client message; an error closes the socket with its code.
async fn handle(
    served: &Arc<Served>,
    socket: &mut WebSocket,
    session: &mut Option<Session>,
    out: &mpsc::Sender<Value>,
    msg: Value,
    ip: std::net::IpAddr,
) -> Result<(), (u16, String)> {
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "connection_init" => {
            if session.is_some() {
                return Err((4429, "Too many initialisation requests".into()));
            }
            let payload = msg.get("payload").cloned().unwrap_or(Value::Null);
            let Some(token) = token_of(&payload) else {
                return Err((4403, "Forbidden".into()));
            };
            let principal = served
                .api
                .auth
                .authenticate(&token)
                .await
                .map_err(|_| (4403, "Forbidden".to_string()))?;
            *session = Some(Session {
                principal,
                token,
                running: HashMap::new(),
            });
            send(socket, json!({ "type": "connection_ack" })).await;
            Ok(())
        }
        "ping" => {
            send(socket, json!({ "type": "pong" })).await;
            Ok(())
        }
        "pong" => Ok(()),
        "subscribe" => {
            let Some(s) = session.as_mut() else {
                return Err((4401, "Unauthorized".into()));
            };
            let id = msg
                .get("id")
                .and_then(Value::as_str)
                .ok_or((4400, "subscribe without an id".to_string()))?
                .to_string();
            s.running.retain(|_, task| !task.is_finished());
            if s.running.contains_key(&id) {
                return Err((4409, format!("Subscriber for {id} already exists")));
            }
            let slot = match room(served, s) {
                Ok(slot) => slot,
                Err(message) => {
                    send(socket, too_many(&id, &message)).await;
                    return Ok(());
                }
            };
            let request: Request = msg
                .get("payload")
                .cloned()
                .and_then(|p| serde_json::from_value(p).ok())
                .ok_or((4400, "subscribe without a valid payload".to_string()))?;
            let request = request.data(Caller {
                principal: Some(s.principal.clone()),
                ip,
            });
            let mut stream = served.schema.execute_stream(request);
            let out = out.clone();
            let task_id = id.clone();
            let task = tokio::spawn(async move {
                let _slot = slot;
                while let Some(response) = stream.next().await {
                    let payload = serde_json::to_value(&response).unwrap_or(Value::Null);
                    let next = json!({ "type": "next", "id": task_id, "payload": payload });
                    if out.send(next).await.is_err() {
                        return;
                    }
                }
                let _ = out.send(json!({ "type": "complete", "id": task_id })).await;
            });
            s.running.insert(id, task);
            Ok(())
        }
        "complete" => {
            if let (Some(s), Some(id)) = (session.as_mut(), msg.get("id").and_then(Value::as_str)) {
                if let Some(task) = s.running.remove(id) {
                    task.abort();
                }
            }
            Ok(())
        }
        _ => Err((4400, format!("unknown message type {kind:?}"))),
    }
}

/// A place for one more operation on this socket and of its user, or
/// why there is none.
fn room(served: &Served, s: &Session) -> Result<Slot, String> {
    let per_socket = served.config.ws_max_subscriptions;
    if s.running.len() >= per_socket {
        return Err(format!(
            "too many subscriptions on this connection: at most {per_socket} may run at once"
        ));
    }
    let per_user = served.config.ws_max_user_subscriptions;
    served
        .ws_users
        .take(&s.principal.user, per_user)
        .ok_or_else(|| {
            format!("too many subscriptions for this user: at most {per_user} may run at once")
        })
}

/// The `error` message refusing operation `id` for lack of room.
fn too_many(id: &str, message: &str) -> Value {
    json!({
        "type": "error",
        "id": id,
        "payload": [{ "message": message, "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS" } }],
    })
}
