//! The node's stop signal, shared by its tasks.

use tokio::sync::watch;

/// Sets the stop signal.
pub(crate) struct StopSender(watch::Sender<bool>);

/// Tells a task to stop. Cloning gives another task the same signal.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

/// A new stop signal, not set.
pub(crate) fn stop_signal() -> (StopSender, Stop) {
    let (sender, receiver) = watch::channel(false);
    (StopSender(sender), Stop(receiver))
}

impl StopSender {
    /// Tells every task to stop.
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Stop {
    /// Completes once the signal is set (or its sender is gone).
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

impl Stop {
    /// A signal set `grace` after this one: for work that may finish
    /// what it started once told to stop.
    pub(crate) fn delayed(&self, grace: std::time::Duration) -> Stop {
        let (sender, delayed) = stop_signal();
        let mut first = self.clone();
        tokio::spawn(async move {
            first.wait().await;
            tokio::time::sleep(grace).await;
            sender.stop();
        });
        delayed
    }
}
