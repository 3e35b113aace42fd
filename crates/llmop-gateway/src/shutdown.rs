//! Graceful shutdown: on SIGTERM or SIGINT the gateway reports not-ready (`/readyz`
//! 503) and keeps serving for `shutdown_grace_ms`, so that load balancers notice before
//! connections are refused; then it stops accepting connections and lets in-flight
//! requests (streams included) finish. At the drain deadline (`shutdown_timeout_ms`)
//! every stream still open ends with a terminal `shutting_down` error event in its
//! format, and calls still in flight are recorded (status 499) before the record writer
//! commits, or spills, what it holds. The summary is logged after the last record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    draining: Arc<AtomicBool>,
    tx: Arc<watch::Sender<bool>>,
    /// `true` once the drain deadline passed: open streams end now.
    deadline: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        let (deadline, _) = watch::channel(false);
        Shutdown {
            draining: Arc::new(AtomicBool::new(false)),
            tx: Arc::new(tx),
            deadline: Arc::new(deadline),
        }
    }

    /// The drain deadline passed: streams still open must end.
    pub fn pass_deadline(&self) {
        self.deadline.send_replace(true);
    }

    /// Watches the drain deadline (`true` once passed).
    pub fn deadline(&self) -> watch::Receiver<bool> {
        self.deadline.subscribe()
    }

    /// Starts the shutdown (idempotent).
    pub fn trigger(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has been triggered.
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Triggers the shutdown on SIGTERM or SIGINT; a second signal during the drain
    /// exits at once (an operator's "I mean it").
    pub fn listen_for_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received: draining in-flight requests");
            this.trigger();
            wait_for_signal().await;
            tracing::warn!("second shutdown signal: exiting without waiting for the drain");
            std::process::exit(130);
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
