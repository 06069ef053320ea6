//! Queue control: how the API hands operators' queue jobs and requests to
//! read a queued message to whatever can run Exim on the mail server.
//!
//! The API decides and records; it runs nothing itself. A `queueAction`
//! mutation checks the caller, resolves the messages, saves a
//! [`QueueJob`] in the store, audits it and hands it to the process's
//! [`QueueControl`]: on one machine an implementation that runs Exim
//! locally, in fleet mode one that publishes the job for the host's node.
//! Whoever runs the job writes one [`QueueActionResult`] per message to
//! the store with [`record_results`], which audits each with the job's
//! actor and reason ([`result_audit_entry`]); the API reads results back
//! from the store (queries, and the `queueJobResults` subscription, which
//! polls it).
//!
//! A process without queue control (`AppState::queue` left `None`, as in
//! `exim-pilot serve`) answers queue actions and message views with an
//! error saying so; the queue itself (snapshots, health, history, jobs)
//! is still read from the store.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::json;

use exim_pilot_schema::queue::{MessageView, QueueActionResult, QueueActionStatus, QueueJob};
use exim_pilot_schema::{MessageId, QueueAction};
use exim_pilot_store::{AuditEntry, Store, StoreError};

/// What runs queue jobs and reads queued messages for the API.
#[async_trait]
pub trait QueueControl: Send + Sync {
    /// Hands a saved and audited job on to the node of its host. Returns
    /// once the job is on its way, not once it ran: its results come
    /// through the store.
    async fn submit(&self, job: &QueueJob) -> Result<(), QueueControlError>;

    /// One view of a message on `host`'s queue, as text (`exim -Mvh`,
    /// `-Mvl`, `-Mvb`).
    async fn view(
        &self,
        host: &str,
        id: MessageId,
        view: MessageView,
    ) -> Result<String, QueueControlError>;
}

/// Why queue control could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueControlError {
    /// No node of that name can be reached from this process.
    #[error("the mail server {0:?} cannot be acted on from this process")]
    UnknownHost(String),
    /// The message is not (or no longer) on the queue.
    #[error("message {id} is not on the queue of {host}")]
    NotQueued {
        /// The host.
        host: String,
        /// The message.
        id: MessageId,
    },
    /// The way to the node is down (the broker, the local Exim).
    #[error("queue control is unavailable: {0}; try again later")]
    Unavailable(String),
    /// Exim ran and failed.
    #[error("Exim failed: {0}")]
    Failed(String),
}

/// The audit trail's name of an action: `queue_remove`, `queue_give_up`...
pub fn action_name(action: QueueAction) -> String {
    format!("queue_{}", action.as_str())
}

/// A new job id: a random (version 4) UUID.
pub fn new_job_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The audit entry of one message's result: the action's name, the job's
/// actor and reason, the host as target, `ok` for a message done and the
/// status's name (`failed`, `timed_out`, `expired`) otherwise. The role
/// and client address are those of the job's request entry.
pub fn result_audit_entry(job: &QueueJob, result: &QueueActionResult) -> AuditEntry {
    let outcome = match result.status {
        QueueActionStatus::Done => "ok",
        other => other.as_str(),
    };
    AuditEntry {
        at: result.finished_at,
        actor: job.actor.clone(),
        role: None,
        client_ip: None,
        action: action_name(result.action),
        target: Some(result.host.clone()),
        params: Some(json!({
            "job_id": job.job_id,
            "id": result.id.to_string(),
            "status": result.status.as_str(),
            "exit_code": result.exit_code,
            "reason": job.reason,
        })),
        outcome: outcome.to_string(),
    }
}

/// Stores results of queue jobs and audits each result not stored
/// before (see [`result_audit_entry`]), so that a result delivered twice
/// is audited once. A result of a job the store does not know is stored
/// and audited with the actor `-`. What every runner of jobs calls.
pub async fn record_results(
    store: &dyn Store,
    results: &[QueueActionResult],
) -> Result<(), StoreError> {
    let mut jobs: HashMap<String, (QueueJob, Vec<QueueActionResult>)> = HashMap::new();
    for r in results {
        if jobs.contains_key(&r.job_id) {
            continue;
        }
        let known = store.queue_job(&r.job_id).await?;
        jobs.insert(r.job_id.clone(), known.unwrap_or_else(|| unknown_job(r)));
    }
    store.save_queue_results(results).await?;
    for r in results {
        let Some((job, stored)) = jobs.get_mut(&r.job_id) else {
            continue;
        };
        if stored.iter().any(|s| s == r) {
            continue;
        }
        store.append_audit(&result_audit_entry(job, r)).await?;
        stored.push(r.clone());
    }
    Ok(())
}

/// A stand-in for a job the store does not hold.
fn unknown_job(r: &QueueActionResult) -> (QueueJob, Vec<QueueActionResult>) {
    let job = QueueJob {
        job_id: r.job_id.clone(),
        host: r.host.clone(),
        action: r.action,
        ids: vec![r.id],
        actor: "-".into(),
        reason: None,
        requested_at: r.finished_at,
        expires_at: r.finished_at,
    };
    (job, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_version_4_uuids() {
        let a = new_job_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, new_job_id());
    }
}
