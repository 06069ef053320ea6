//! Answering view requests: Exim prints the view, the reply goes to the
//! queue topic under the request's id.
//!
//! A request read after its expiry is answered with an error without
//! running Exim: nobody waits for it any more, and a node catching up
//! after an outage should not read hundreds of old messages. A text larger
//! than [`NodeConfig::max_reply_bytes`](super::NodeConfig::max_reply_bytes)
//! is cut there (and marked truncated), so that a reply always fits in a
//! Kafka record.

use std::sync::Arc;

use chrono::Utc;
use exim_pilot_schema::queue_wire::{
    QueueRecord, ViewErrorKind, ViewOutcome, ViewReply, ViewRequest,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::super::{EximError, MessageText};
use super::commands::Position;
use super::stop::Stop;
use super::Node;

/// Answers one request; reports its position to `done` once the broker
/// has the reply.
pub(super) async fn serve(
    node: Arc<Node>,
    request: ViewRequest,
    position: Position,
    done: mpsc::UnboundedSender<Position>,
    grace: Stop,
    _permit: OwnedSemaphorePermit,
) {
    let mut grace_wait = grace.clone();
    let outcome = tokio::select! {
        _ = grace_wait.wait() => return,
        outcome = read(&node, &request) => outcome,
    };
    node.events.view_served(&request, &outcome);
    let reply = QueueRecord::ViewReply(ViewReply {
        request_id: request.request_id,
        host: node.host().to_string(),
        id: request.id,
        view: request.view,
        outcome,
    });
    let bytes = match reply.encode() {
        Ok(bytes) => bytes,
        Err(error) => {
            node.events.not_encoded("view reply", &error);
            let _ = done.send(position);
            return;
        }
    };
    let flight = node
        .outbox
        .send(&node.config.queue_topic, node.host(), bytes)
        .await;
    if node.outbox.deliver(vec![flight], &grace).await.is_ok() {
        let _ = done.send(position);
    }
}

/// What Exim printed, or why there is nothing.
async fn read(node: &Node, request: &ViewRequest) -> ViewOutcome {
    let now = Utc::now();
    if now > request.expires_at {
        return ViewOutcome::Error {
            kind: ViewErrorKind::Expired,
            message: format!(
                "the request expired at {} and reached the node at {}; nothing was read",
                request.expires_at.to_rfc3339(),
                now.to_rfc3339()
            ),
        };
    }
    match node.exim.view(request.id.as_str(), request.view).await {
        Ok(text) => capped(text, node.config.max_reply_bytes),
        Err(error @ EximError::NotOnQueue { .. }) => ViewOutcome::Error {
            kind: ViewErrorKind::NotQueued,
            message: error.to_string(),
        },
        Err(error) => ViewOutcome::Error {
            kind: ViewErrorKind::Failed,
            message: error.to_string(),
        },
    }
}

/// The text, cut at a character boundary to at most `max` bytes.
fn capped(text: MessageText, max: usize) -> ViewOutcome {
    let MessageText {
        mut text,
        mut truncated,
        ..
    } = text;
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        truncated = true;
    }
    ViewOutcome::Text { text, truncated }
}

#[cfg(test)]
mod tests {
    use exim_pilot_schema::queue::MessageView;

    use super::*;

    #[test]
    fn a_long_text_is_cut_at_a_character_boundary_and_marked() {
        let text = MessageText {
            view: MessageView::Headers,
            text: "é".repeat(10),
            truncated: false,
        };
        match capped(text.clone(), 5) {
            ViewOutcome::Text { text, truncated } => {
                assert_eq!(text, "éé");
                assert!(truncated);
            }
            other => panic!("{other:?}"),
        }
        match capped(text, 100) {
            ViewOutcome::Text { text, truncated } => {
                assert_eq!(text.len(), 20);
                assert!(!truncated);
            }
            other => panic!("{other:?}"),
        }
    }
}
