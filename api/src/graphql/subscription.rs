//! Subscriptions: what the pipeline commits, as it commits it.
//!
//! Each subscription follows the broadcast of committed batches
//! ([`crate::live`]) and keeps what its filter asks for. A subscriber too
//! slow to keep up skips the batches it missed rather than holding the
//! pipeline back. The process that runs the pipeline (standalone mode)
//! publishes the batches it commits; `serve` publishes what it polls from
//! the store (see [`crate::feed`]), up to a poll interval later.

use std::sync::Arc;

use async_graphql::{Context, InputObject, Result, Subscription as SubscriptionMacro};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

use exim_pilot_store::Role;

use super::types::{LogLine, Message};
use super::{api, caller};
use crate::live::LiveBatch;

/// Which lifecycle changes to receive.
#[derive(InputObject, Default)]
pub struct MessageChangeFilter {
    /// Only this mail server.
    pub host: Option<String>,
    /// Only this message id.
    pub id: Option<String>,
    /// Only messages from or to this address.
    pub address: Option<String>,
}

/// Which log records to receive.
#[derive(InputObject, Default)]
pub struct LogRecordFilter {
    /// Only this mail server.
    pub host: Option<String>,
    /// Only records naming this message id.
    pub message_id: Option<String>,
    /// Only this kind of record (`arrival`, `delivery`, `reject`...).
    pub kind: Option<String>,
    /// Only records containing this text (case-insensitive).
    pub text: Option<String>,
}

/// The batches committed from now on.
fn batches(rx: broadcast::Receiver<Arc<LiveBatch>>) -> impl Stream<Item = Arc<LiveBatch>> {
    stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(batch) => return Some((batch, rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "Slow subscriber skipped batches");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Subscriptions to what the pipeline commits.
#[derive(Default)]
pub struct LiveSubscription;

#[SubscriptionMacro]
impl LiveSubscription {
    /// Messages whose lifecycle changed.
    async fn message_changes(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: MessageChangeFilter,
    ) -> Result<impl Stream<Item = Message>> {
        let p = caller(ctx, Role::Viewer).await?.clone();
        let rx = api(ctx)?.live.subscribe();
        let address = filter.address.map(|a| a.to_lowercase());
        Ok(batches(rx).flat_map(move |batch| {
            let changed: Vec<Message> = batch
                .lifecycles
                .iter()
                .filter(|lc| p.may_see(&lc.host))
                .filter(|lc| filter.host.as_ref().is_none_or(|h| *h == lc.host))
                .filter(|lc| filter.id.as_ref().is_none_or(|id| *id == lc.id.to_string()))
                .filter(|lc| {
                    address.as_ref().is_none_or(|a| {
                        lc.sender.as_ref().is_some_and(|s| s.to_lowercase() == *a)
                            || lc.recipients.iter().any(|r| {
                                r.address.to_lowercase() == *a
                                    || r.original.as_ref().is_some_and(|o| o.to_lowercase() == *a)
                            })
                    })
                })
                .map(Message::from)
                .collect();
            stream::iter(changed)
        }))
    }

    /// Log records as they are stored.
    async fn log_records(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: LogRecordFilter,
    ) -> Result<impl Stream<Item = LogLine>> {
        let p = caller(ctx, Role::Viewer).await?.clone();
        let rx = api(ctx)?.live.subscribe();
        let text = filter.text.map(|t| t.to_lowercase());
        Ok(batches(rx).flat_map(move |batch| {
            let lines: Vec<LogLine> = batch
                .records
                .iter()
                .filter(|r| p.may_see(&r.origin.host))
                .filter(|r| filter.host.as_ref().is_none_or(|h| *h == r.origin.host))
                .filter(|r| {
                    filter
                        .message_id
                        .as_ref()
                        .is_none_or(|id| r.message_id.is_some_and(|m| m.to_string() == *id))
                })
                .filter(|r| filter.kind.as_ref().is_none_or(|k| *k == r.event_kind))
                .filter(|r| {
                    text.as_ref()
                        .is_none_or(|t| r.text().to_lowercase().contains(t))
                })
                .map(LogLine::from)
                .collect();
            stream::iter(lines)
        }))
    }
}
