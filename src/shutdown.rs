//! One shutdown signal for the whole operator.
//!
//! `nmo run` has several parts that must all stop on SIGTERM or SIGINT: the controllers, the
//! leader elector, the config watcher and the HTTP servers (metrics, probes, webhook). A
//! [`Shutdown`] is triggered once and every part holds a clone or a [`Shutdown::wait`] future
//! of it. It is a `tokio::sync::watch` of one boolean, so a part that starts after the trigger
//! still sees it (a plain `Notify` would lose the wake-up).

use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// A shutdown signal: triggered once, observed by any number of clones and futures.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Shutdown {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Trigger it; every waiter resolves. Triggering again does nothing.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether it has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// A future that resolves once the signal is triggered (at once if it already was). It
    /// owns what it needs, so it can be handed to a task or to kube-runtime's
    /// `graceful_shutdown_on`.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // The sender lives in `self.tx`, shared by every clone; if all clones are gone
            // nobody can trigger any more, which counts as "never".
            if rx.wait_for(|triggered| *triggered).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Trigger this signal on the first SIGINT or SIGTERM (logged). A second signal ends the
    /// process at once with exit code 1, as controller-runtime does, for an operator whose
    /// graceful stop is stuck.
    pub fn on_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            let mut signals = Signals::new();
            let first = signals.next().await;
            tracing::info!("{first} received, shutting down");
            shutdown.trigger();
            let second = signals.next().await;
            tracing::error!("{second} received again during shutdown, exiting at once");
            std::process::exit(1);
        });
    }
}

/// SIGINT and SIGTERM, registered once so that no signal between two waits is lost.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                streams: signal(SignalKind::interrupt())
                    .ok()
                    .zip(signal(SignalKind::terminate()).ok()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = self.streams.as_mut() {
            return tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_even_one_created_after_the_trigger() {
        let shutdown = Shutdown::new();
        let early = tokio::spawn(shutdown.clone().wait());
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        early.await.unwrap();
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }
}
