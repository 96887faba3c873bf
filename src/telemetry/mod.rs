//! What the operator tells its operators: Prometheus metrics, health and readiness probes.
//!
//! - [`registry`]: a small Prometheus registry (counters, gauges, fixed-bucket histograms)
//!   rendered in the text exposition format 0.0.4;
//! - [`metrics`]: the series nmo serves ([`Metrics`]);
//! - [`readiness`]: `/readyz` becomes ready once the controllers' caches have synced;
//! - [`http`]: the `/metrics` and `/healthz` + `/readyz` servers.
//!
//! Logs go through `tracing`; each reconcile runs in a span `reconcile{controller, name}`, so
//! every line logged inside names the object.

pub mod http;
pub mod metrics;
pub mod readiness;
pub mod registry;

pub use http::{HttpServer, ServeError, serve_metrics, serve_probes};
pub use metrics::Metrics;
pub use readiness::Readiness;

use std::sync::Arc;

/// What the controllers report into: the metrics and the readiness of their caches. Cloning
/// shares both.
#[derive(Clone, Default)]
pub struct Telemetry {
    /// The metrics `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// The readiness `/readyz` serves.
    pub readiness: Readiness,
}

impl Telemetry {
    /// Fresh metrics, not ready.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The span a reconcile of `controller` for the object `name` runs in.
pub fn reconcile_span(controller: &'static str, name: &str) -> tracing::Span {
    tracing::info_span!("reconcile", controller, name)
}
