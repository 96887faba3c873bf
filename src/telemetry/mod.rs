//! What the operator tells its operators: Prometheus metrics, health and readiness probes.
//!
//! - [`registry`]: a small Prometheus registry (counters, gauges, fixed-bucket histograms)
//!   rendered in the text exposition format 0.0.4;
//! - [`metrics`]: the series nmo serves ([`Metrics`]);
//! - [`readiness`]: `/readyz` becomes ready once the controllers' caches have synced;
//! - [`http`]: the `/metrics` and `/healthz` + `/readyz` servers.
//!
//! Logs go through `tracing`; each reconcile runs in a span `reconcile{controller, object}`,
//! so every line logged inside names the object. The field is `object`, not `name`: the JSON
//! log format writes a span's own name under the key `name`, and a field of that name would
//! be a duplicate key that JSON readers drop.

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

/// The span a reconcile of `controller` for the object named `object` runs in.
///
/// Its level is ERROR so that it is enabled whenever any line inside is: under a filter such
/// as `RUST_LOG=warn` an INFO span would be filtered out, and the warnings logged inside it
/// would lose the object's name.
pub fn reconcile_span(controller: &'static str, object: &str) -> tracing::Span {
    tracing::error_span!("reconcile", controller, object)
}
