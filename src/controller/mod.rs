//! The kube-runtime controllers and how to run them.
//!
//! - [`node_maintenance`]: the NodeMaintenance reconciler (cordon, lease, drain, release).
//! - [`maintenance_window`]: the MaintenanceWindow reconciler (rolling maintenance in windows).
//! - [`lease`]: the medik8s node lease; [`node`]: the node marks of maintenance.
//! - [`quorum`]: the control-plane quorum rule (pure), used by admission and the window planner.
//! - [`events`]: the Event publisher of both controllers; [`backoff`]: error requeue delays.
//! - [`leader`]: leader election of `nmo run` replicas on the Lease `nmo-leader`.
//!
//! [`run_all`] runs every controller until a shutdown signal; [`start`] runs them on the
//! current tokio runtime and returns a [`ControllerHandle`] that `nmo run`, tests and
//! `nmo simulate` can stop gracefully or kill. Both take a [`LiveConfig`]: a plain
//! [`ControllerConfig`] converts into one that never changes, and `nmo run` passes one that its
//! config-file reload swaps.

pub mod backoff;
pub mod events;
pub mod leader;
pub mod lease;
pub mod maintenance_window;
pub mod node;
pub mod node_conditions;
pub mod node_maintenance;
pub mod quorum;
pub mod rate_limit;
pub mod window_index;

pub use maintenance_window::{WindowConfig, WindowStats};
pub use node_maintenance::{NodeMaintenanceConfig, ReconcileStats};
pub use rate_limit::{RateLimit, RateLimitError, RateLimiter};

use crate::clock::Clock;
use crate::telemetry::Telemetry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The API clients the controllers use.
///
/// kube's default client retries 429 answers by itself, with backoff, for minutes. For an
/// eviction a 429 means "a PodDisruptionBudget says no", which the drain must see at once to
/// report it and pace its own retries, so evictions go through a client built without that
/// retry. [`Clients::from_config`] builds both; [`Clients::shared`] uses one client for all
/// (correct, but a refused eviction is then only reported once kube has given up retrying).
#[derive(Clone)]
pub struct Clients {
    /// Everything but evictions and the MaintenanceWindow controller.
    pub api: kube::Client,
    /// Evictions.
    pub evictions: kube::Client,
    /// The MaintenanceWindow controller: with a client-side rate limit, its requests go ahead
    /// of the others waiting for a token (a handover waits for its create, not behind a drain's
    /// evictions and reads); otherwise the same client as `api`.
    pub windows: kube::Client,
}

impl Clients {
    /// Build both clients from one configuration, with no client-side rate limit (tests and
    /// `nmo simulate`; `nmo run` uses [`Clients::from_config_with_rate_limit`]). They send the
    /// User-Agent `nmo/<version>`.
    pub fn from_config(config: kube::Config) -> Result<Self, kube::Error> {
        let config = with_user_agent(config);
        let api = kube::Client::try_from(config.clone())?;
        let mut no_retry = config;
        no_retry.default_retry = false;
        let evictions = kube::Client::try_from(no_retry)?;
        Ok(Clients {
            windows: api.clone(),
            api,
            evictions,
        })
    }

    /// Build the clients from one configuration, every request of each drawing from one
    /// client-side token bucket of `limit` (see [`rate_limit`]); the MaintenanceWindow
    /// controller's go ahead of the others waiting (`RateLimitLayer::first`).
    ///
    /// The limiter sits below the API client's retry of 429, 503 and 504 answers (kube's
    /// default retry policy, rebuilt here around the limiter), so every retry takes a token
    /// too. The eviction client has no retry, as in [`Clients::from_config`]. They send the
    /// User-Agent `nmo/<version>`.
    pub fn from_config_with_rate_limit(
        config: kube::Config,
        limit: RateLimit,
    ) -> Result<Self, kube::Error> {
        use kube::client::ClientBuilder;
        use kube::client::retry::RetryPolicy;
        let limiter = RateLimiter::new(limit);
        let mut no_retry = with_user_agent(config);
        no_retry.default_retry = false;
        let api = ClientBuilder::try_from(no_retry.clone())?
            .with_layer(&rate_limit::RateLimitLayer::new(limiter.clone()))
            // The retry layer sends each attempt again through the limiter, and needs a
            // service it can clone: the buffer is that handle.
            .with_layer(&tower::buffer::BufferLayer::new(1024))
            .with_layer(&tower::retry::RetryLayer::new(RetryPolicy::server_retry()))
            .build();
        let windows = ClientBuilder::try_from(no_retry.clone())?
            .with_layer(&rate_limit::RateLimitLayer::first(limiter.clone()))
            .with_layer(&tower::buffer::BufferLayer::new(1024))
            .with_layer(&tower::retry::RetryLayer::new(RetryPolicy::server_retry()))
            .build();
        let evictions = ClientBuilder::try_from(no_retry)?
            .with_layer(&rate_limit::RateLimitLayer::new(limiter))
            .build();
        Ok(Clients {
            api,
            evictions,
            windows,
        })
    }

    /// Build both clients from kubeconfig YAML (for example `Sandbox::kubeconfig()`), using its
    /// current context.
    pub async fn from_kubeconfig_yaml(yaml: &str) -> Result<Self, ClientsError> {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(yaml).map_err(ClientsError::Kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(ClientsError::Kubeconfig)?;
        Clients::from_config(config).map_err(ClientsError::Client)
    }

    /// Use one client for everything.
    pub fn shared(client: kube::Client) -> Self {
        Clients {
            api: client.clone(),
            evictions: client.clone(),
            windows: client,
        }
    }
}

/// A failure in passing, worth another try soon: a 5xx, a 429, or no answer at all (the
/// connection, a timeout). A 4xx other than 429 is the API server's considered answer.
pub(crate) fn transient_error(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

/// `config` with the User-Agent `nmo/<version>` (kube sends none of its own). The API server
/// names the field manager of a write that gives none after the User-Agent up to its first
/// `/`: kube-runtime's `finalizer()` patches without one, and is then recorded as `nmo`, the
/// [`node::FIELD_MANAGER`] of every other write.
fn with_user_agent(mut config: kube::Config) -> kube::Config {
    let agent = format!("{}/{}", node::FIELD_MANAGER, env!("CARGO_PKG_VERSION"));
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config
            .headers
            .retain(|(name, _)| name != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, value));
    }
    config
}

/// Failures building [`Clients`].
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The kubeconfig could not be read or used.
    #[error("loading kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// The client could not be built.
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
}

impl From<kube::Client> for Clients {
    fn from(client: kube::Client) -> Self {
        Clients::shared(client)
    }
}

/// Configuration of all controllers.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    /// The NodeMaintenance controller.
    pub node_maintenance: NodeMaintenanceConfig,
    /// The MaintenanceWindow controller.
    pub maintenance_window: WindowConfig,
    /// `reportingInstance` of the Events: `nmo` by default; `nmo run` writes its leader
    /// election identity there, so Events tell which replica acted.
    pub reporting_instance: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            node_maintenance: NodeMaintenanceConfig::default(),
            maintenance_window: WindowConfig::default(),
            reporting_instance: events::REPORTER.to_string(),
        }
    }
}

/// The controllers' configuration while they run: a config-file reload may swap it. Each
/// reconcile reads the configuration in force when it starts (a drain, when the drain starts),
/// and every MaintenanceWindow is planned again after a change, so a new cap or default node
/// timeout applies at once.
#[derive(Clone, Debug)]
pub struct LiveConfig(tokio::sync::watch::Receiver<ControllerConfig>);

impl LiveConfig {
    /// Follow the configuration sent on `rx`.
    pub fn new(rx: tokio::sync::watch::Receiver<ControllerConfig>) -> Self {
        LiveConfig(rx)
    }

    /// The configuration in force now.
    pub fn current(&self) -> ControllerConfig {
        self.0.borrow().clone()
    }

    /// One item per change of the configuration (changes in quick succession may fold into
    /// one); ends when nobody can change it any more.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut rx = self.0.clone();
        rx.mark_unchanged();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            rx.mark_unchanged();
            Some(((), rx))
        })
    }
}

impl From<ControllerConfig> for LiveConfig {
    /// A configuration that never changes.
    fn from(config: ControllerConfig) -> Self {
        LiveConfig(tokio::sync::watch::channel(config).1)
    }
}

impl ControllerConfig {
    /// A configuration with a shorter node lease (tests prove renewal with it).
    pub fn with_lease_duration(mut self, duration: Duration) -> Self {
        self.node_maintenance.lease_duration = duration;
        self
    }
}

/// What the running controllers share with whoever started them.
#[derive(Clone)]
pub struct Running {
    /// NodeMaintenance reconcile counts.
    pub node_maintenance: Arc<ReconcileStats>,
    /// MaintenanceWindow reconcile and write counts.
    pub maintenance_window: Arc<WindowStats>,
    /// The metrics and readiness the controllers report into.
    pub telemetry: Telemetry,
    drains: Arc<node_maintenance::Drains>,
}

impl Running {
    /// How many drains are in progress.
    pub fn active_drains(&self) -> usize {
        self.drains.len()
    }

    /// How many pod watches of `Succeeded` NodeMaintenances run.
    pub fn pod_watches(&self) -> usize {
        self.drains.watched()
    }
}

fn shared(telemetry: Telemetry) -> (node_maintenance::Shared, Running) {
    let stats = Arc::new(ReconcileStats::default());
    let drains = Arc::new(node_maintenance::Drains::default());
    (
        node_maintenance::Shared {
            stats: stats.clone(),
            drains: drains.clone(),
            telemetry: telemetry.clone(),
        },
        Running {
            node_maintenance: stats,
            maintenance_window: Arc::new(WindowStats::default()),
            telemetry,
            drains,
        },
    )
}

/// Run every controller until `shutdown` resolves, then wait for in-flight reconciles and
/// stop the drains ([`node_maintenance::Drains::stop_all`]). Their metrics and readiness go
/// nowhere: [`run_all_with_telemetry`] serves them.
pub async fn run_all(
    clients: impl Into<Clients>,
    clock: Arc<dyn Clock>,
    config: impl Into<LiveConfig>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_all_with_telemetry(clients, clock, config, Telemetry::new(), shutdown).await;
}

/// [`run_all`], reporting metrics and cache readiness into `telemetry` (which `nmo run` serves
/// on `/metrics` and `/readyz`).
pub async fn run_all_with_telemetry(
    clients: impl Into<Clients>,
    clock: Arc<dyn Clock>,
    config: impl Into<LiveConfig>,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (shared, running) = shared(telemetry);
    run_with(
        clients.into(),
        clock,
        config.into(),
        shared,
        running.maintenance_window,
        shutdown,
    )
    .await;
    running.drains.stop_all().await;
}

async fn run_with(
    clients: Clients,
    clock: Arc<dyn Clock>,
    config: LiveConfig,
    shared: node_maintenance::Shared,
    window_stats: Arc<WindowStats>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::FutureExt;
    let boxed: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(shutdown);
    let shutdown = boxed.shared();
    let telemetry = shared.telemetry.clone();
    // Both controllers register their caches as they are built, so readiness is complete
    // once both are.
    let node_maintenance = node_maintenance::run(
        clients.api.clone(),
        clients.evictions,
        clock.clone(),
        config.clone(),
        shared,
        shutdown.clone(),
    );
    let maintenance_window = maintenance_window::run(
        clients.windows,
        clock,
        config,
        window_stats,
        telemetry.clone(),
        shutdown,
    );
    telemetry.readiness.set_started();
    futures::join!(node_maintenance, maintenance_window);
}

/// Controllers running in the background, started by [`start`].
pub struct ControllerHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    running: Running,
}

impl ControllerHandle {
    /// Counters and state of the running controllers.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// NodeMaintenance reconcile counts.
    pub fn stats(&self) -> Arc<ReconcileStats> {
        self.running.node_maintenance.clone()
    }

    /// Stop gracefully: no new reconciles, wait for the running ones (their API writes and
    /// Events finish), then stop the drains ([`node_maintenance::Drains::stop_all`]).
    pub async fn stop(mut self) {
        self.stop_gracefully().await;
    }

    async fn stop_gracefully(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.running.drains.stop_all().await;
    }

    /// [`ControllerHandle::stop`], but no longer than `budget`: what is still running then is
    /// aborted, as [`ControllerHandle::kill`] does. Returns whether the stop was graceful.
    pub async fn stop_within(&mut self, budget: Duration) -> bool {
        let graceful = tokio::time::timeout(budget, self.stop_gracefully())
            .await
            .is_ok();
        if !graceful {
            self.abort();
        }
        graceful
    }

    /// Stop at once, as a crash would: the controller task and every drain are aborted
    /// wherever they are.
    pub fn kill(self) {
        self.abort();
    }

    fn abort(&self) {
        self.task.abort();
        self.running.drains.cancel_all();
    }
}

/// Start every controller on the current tokio runtime, with metrics and readiness of their
/// own (see [`Running::telemetry`]).
pub fn start(
    clients: impl Into<Clients>,
    clock: Arc<dyn Clock>,
    config: impl Into<LiveConfig>,
) -> ControllerHandle {
    start_with_telemetry(clients, clock, config, Telemetry::new())
}

/// [`start`], reporting metrics and cache readiness into `telemetry`.
pub fn start_with_telemetry(
    clients: impl Into<Clients>,
    clock: Arc<dyn Clock>,
    config: impl Into<LiveConfig>,
    telemetry: Telemetry,
) -> ControllerHandle {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (shared, running) = shared(telemetry);
    let clients = clients.into();
    let window_stats = running.maintenance_window.clone();
    let task = tokio::spawn(run_with(
        clients,
        clock,
        config.into(),
        shared,
        window_stats,
        async move {
            let _ = stopped.await;
        },
    ));
    ControllerHandle {
        stop: Some(stop),
        task,
        running,
    }
}
