//! The queue on one machine: `exim-pilot standalone` lists this host's
//! Exim queue into the embedded store at an interval and runs operators'
//! queue jobs with the local Exim.
//!
//! - [`QueueArgs`]: how Exim is run, how often the queue is listed.
//! - [`LocalQueue`]: the API's [`QueueControl`] on this machine: a job
//!   runs message by message in the background, each result recorded (and
//!   audited) as soon as Exim answered, and a fresh listing is stored once
//!   the job is done so the API shows its effect at once.
//! - [`store_snapshots`]: the task that writes listings to the store.
//! - [`FleetQueue`]: the API's [`QueueControl`] in fleet mode (`serve
//!   --kafka`): jobs and view requests go to the command topic, for the
//!   queue node of their host (see `exim_pilot_ingest::queue::control`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use exim_pilot_api::queue::{record_results, QueueControl, QueueControlError};
use exim_pilot_ingest::queue::control::{ControlConfig, ControlError, KafkaQueueControl};
use exim_pilot_ingest::queue::{
    Exim, EximConfig, EximError, MessageText, QueueMetrics, Snapshotter,
};
use exim_pilot_schema::queue::{
    MessageView, QueueActionResult, QueueActionStatus, QueueJob, QueueSnapshot,
};
use exim_pilot_schema::MessageId;
use exim_pilot_store::Store;
use tokio::sync::mpsc;

use crate::config::QueueSection;

/// Where Debian installs Exim.
const DEFAULT_EXIM: &str = "/usr/sbin/exim4";

/// Seconds between two listings of the queue, unless told otherwise.
pub const DEFAULT_INTERVAL_S: u64 = 30;

/// Options for the queue.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct QueueArgs {
    /// The Exim binary that lists the queue and runs queue actions
    /// (default: /usr/sbin/exim4, or `exim` on the PATH).
    #[arg(long, value_name = "PATH")]
    exim: Option<PathBuf>,

    /// An Exim configuration file, passed as `-C` (default: Exim's own).
    #[arg(long, value_name = "FILE")]
    exim_config: Option<PathBuf>,

    /// Seconds between two listings of the queue [default: 30].
    #[arg(long, value_name = "SECONDS")]
    queue_interval: Option<u64>,

    /// Do not watch the queue and refuse queue actions.
    #[arg(long)]
    no_queue: bool,

    /// The queue must be watched: fail when no Exim binary is found.
    #[arg(skip)]
    required: bool,
}

impl QueueArgs {
    /// These options over the configuration's `[queue]` section, the
    /// options winning.
    pub fn with_config(&self, section: &QueueSection) -> QueueArgs {
        QueueArgs {
            exim: self.exim.clone().or_else(|| section.exim.clone()),
            exim_config: self
                .exim_config
                .clone()
                .or_else(|| section.exim_config.clone()),
            queue_interval: self.queue_interval.or(section.interval_s),
            no_queue: self.no_queue || section.enabled == Some(false),
            required: !self.no_queue && section.enabled == Some(true),
        }
    }

    /// Exim as these options say, for `host`; `None` when the queue is
    /// switched off, or when no Exim is installed and the queue was not
    /// asked for explicitly (said on the terminal).
    pub fn exim(
        &self,
        host: &str,
        metrics: Option<QueueMetrics>,
    ) -> anyhow::Result<Option<Arc<Exim>>> {
        if self.no_queue {
            return Ok(None);
        }
        let binary = match &self.exim {
            Some(path) => path.clone(),
            None => match default_exim() {
                Some(path) => path,
                None if self.required => anyhow::bail!(
                    "queue.enabled is true but no Exim binary is found ({DEFAULT_EXIM}, exim \
                     on the PATH): give one with --exim PATH or queue.exim"
                ),
                None => {
                    eprintln!(
                        "exim-pilot: no Exim binary found ({DEFAULT_EXIM}, exim on the PATH); \
                         the queue is not watched (give one with --exim PATH)"
                    );
                    return Ok(None);
                }
            },
        };
        let config = EximConfig {
            binary,
            config_file: self.exim_config.clone(),
            ..EximConfig::default()
        };
        let exim = Exim::new(host, config);
        Ok(Some(Arc::new(match metrics {
            Some(m) => exim.with_metrics(m),
            None => exim,
        })))
    }

    /// Time between two listings.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.queue_interval.unwrap_or(DEFAULT_INTERVAL_S).max(1))
    }
}

/// Debian's Exim, or the first `exim` on the PATH.
fn default_exim() -> Option<PathBuf> {
    let debian = PathBuf::from(DEFAULT_EXIM);
    if debian.is_file() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("exim"))
            .find(|p| p.is_file())
    })
}

/// Writes every listing the snapshotter sends to the store until `stop`
/// is set; a failed write is logged and the next listing tried.
pub async fn store_snapshots(
    store: Arc<dyn Store>,
    mut snapshots: mpsc::Receiver<QueueSnapshot>,
    stop: Arc<AtomicBool>,
) {
    while let Some(snapshot) = snapshots.recv().await {
        save_snapshot(&*store, &snapshot).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
}

async fn save_snapshot(store: &dyn Store, snapshot: &QueueSnapshot) {
    match store.save_queue_snapshot(snapshot).await {
        Ok(()) => tracing::debug!(
            host = %snapshot.host,
            messages = snapshot.messages.len(),
            "Queue listing stored"
        ),
        Err(error) => tracing::warn!(
            host = %snapshot.host,
            %error,
            "Cannot store the queue listing; the next one is tried"
        ),
    }
}

/// Lists the queue once and stores the listing.
pub async fn store_listing(exim: Arc<Exim>, store: &dyn Store) -> anyhow::Result<()> {
    let snapshot = Snapshotter::new(exim, Duration::from_secs(1))
        .snapshot()
        .await?;
    store.save_queue_snapshot(&snapshot).await?;
    Ok(())
}

/// Starts listing the queue into the store; both tasks end once `stop`
/// is set.
pub fn watch_queue(
    rt: &tokio::runtime::Runtime,
    exim: Arc<Exim>,
    interval: Duration,
    store: Arc<dyn Store>,
    stop: Arc<AtomicBool>,
) {
    let (sender, receiver) = mpsc::channel(2);
    let snapshotter = Snapshotter::new(exim, interval);
    let stopped = {
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    rt.spawn(snapshotter.run(sender, stopped));
    rt.spawn(store_snapshots(store, receiver, stop));
}

/// Queue control with the Exim of this machine.
pub struct LocalQueue {
    exim: Arc<Exim>,
    store: Arc<dyn Store>,
}

impl LocalQueue {
    /// Runs jobs with `exim`, recording results in `store`.
    pub fn new(exim: Arc<Exim>, store: Arc<dyn Store>) -> LocalQueue {
        LocalQueue { exim, store }
    }
}

#[async_trait]
impl QueueControl for LocalQueue {
    async fn submit(&self, job: &QueueJob) -> Result<(), QueueControlError> {
        if job.host != self.exim.host() {
            return Err(QueueControlError::UnknownHost(job.host.clone()));
        }
        tokio::spawn(run_job(self.exim.clone(), self.store.clone(), job.clone()));
        Ok(())
    }

    async fn view(
        &self,
        host: &str,
        id: MessageId,
        view: MessageView,
    ) -> Result<String, QueueControlError> {
        if host != self.exim.host() {
            return Err(QueueControlError::UnknownHost(host.to_string()));
        }
        let text = self
            .exim
            .view(id.as_str(), view)
            .await
            .map_err(|e| control_error(host, id, e))?;
        Ok(shown(text))
    }
}

/// Runs a job one message at a time, recording each result at once, then
/// stores a fresh listing. Expiry is checked before every message: a job
/// that outlives its time stops acting and reports the rest expired.
async fn run_job(exim: Arc<Exim>, store: Arc<dyn Store>, job: QueueJob) {
    for id in &job.ids {
        let one = QueueJob {
            ids: vec![*id],
            ..job.clone()
        };
        let results = match exim.run_job(&one, chrono::Utc::now()).await {
            Ok(results) => results,
            Err(error) => {
                // Still a result, so the job's results are complete.
                tracing::warn!(job = %job.job_id, %id, %error, "Queue action not run");
                vec![QueueActionResult {
                    job_id: job.job_id.clone(),
                    host: job.host.clone(),
                    id: *id,
                    action: job.action,
                    status: QueueActionStatus::Failed,
                    exit_code: None,
                    output: error.to_string(),
                    finished_at: chrono::Utc::now(),
                }]
            }
        };
        if let Err(error) = record_results(&*store, &results).await {
            tracing::error!(
                job = %job.job_id,
                %id,
                %error,
                "Cannot record a queue action's result"
            );
        }
    }
    match Snapshotter::new(exim, Duration::from_secs(1))
        .snapshot()
        .await
    {
        Ok(snapshot) => save_snapshot(&*store, &snapshot).await,
        Err(error) => tracing::warn!(%error, "Cannot list the queue after a job"),
    }
}

/// The API's view of an Exim failure.
fn control_error(host: &str, id: MessageId, error: EximError) -> QueueControlError {
    match error {
        EximError::NotOnQueue { .. } => QueueControlError::NotQueued {
            host: host.to_string(),
            id,
        },
        EximError::BinaryMissing { .. }
        | EximError::Spawn { .. }
        | EximError::PermissionDenied { .. } => QueueControlError::Unavailable(error.to_string()),
        other => QueueControlError::Failed(other.to_string()),
    }
}

/// Queue control through Kafka, for `exim-pilot serve`. It connects when
/// first needed and again after a failed connection, so an API started
/// while Kafka is away serves everything else and acts on the queue once
/// Kafka is back.
pub struct FleetQueue {
    config: ControlConfig,
    control: tokio::sync::Mutex<Option<Arc<KafkaQueueControl>>>,
    view_timeout: Duration,
}

impl FleetQueue {
    /// Queue control through the brokers of `config`; tries to connect at
    /// once and says on the terminal when it cannot yet.
    pub async fn start(config: ControlConfig, view_timeout: Duration) -> FleetQueue {
        let queue = FleetQueue {
            config,
            control: tokio::sync::Mutex::new(None),
            view_timeout,
        };
        if let Err(error) = queue.control().await {
            eprintln!("exim-pilot: warning: {error}; queue actions are tried again when asked");
        }
        queue
    }

    async fn control(&self) -> Result<Arc<KafkaQueueControl>, QueueControlError> {
        let mut control = self.control.lock().await;
        if let Some(control) = &*control {
            return Ok(control.clone());
        }
        let connected = Arc::new(
            KafkaQueueControl::connect(self.config.clone())
                .await
                .map_err(fleet_error)?,
        );
        *control = Some(connected.clone());
        Ok(connected)
    }
}

#[async_trait]
impl QueueControl for FleetQueue {
    async fn submit(&self, job: &QueueJob) -> Result<(), QueueControlError> {
        self.control().await?.submit(job).await.map_err(fleet_error)
    }

    async fn view(
        &self,
        host: &str,
        id: MessageId,
        view: MessageView,
    ) -> Result<String, QueueControlError> {
        let text = self
            .control()
            .await?
            .view(host, id, view, self.view_timeout)
            .await
            .map_err(fleet_error)?;
        Ok(shown(text))
    }
}

/// A view's text as the API shows it, its cut said.
fn shown(text: MessageText) -> String {
    let mut out = text.text;
    if text.truncated {
        out.push_str("\n[cut: longer than the configured limit]\n");
    }
    out
}

/// The API's view of a failure to reach a node.
fn fleet_error(error: ControlError) -> QueueControlError {
    match error {
        ControlError::NotQueued { host, id } => QueueControlError::NotQueued { host, id },
        ControlError::Failed { message, .. } => QueueControlError::Failed(message),
        ControlError::Encode(_) => QueueControlError::Failed(error.to_string()),
        ControlError::Setup { .. }
        | ControlError::Unavailable { .. }
        | ControlError::NoReply { .. } => QueueControlError::Unavailable(error.to_string()),
    }
}
