//! `MaintenanceWindow` (`nodemaintenance.medik8s.io/v1alpha1`): scheduled rolling maintenance.
//!
//! No spec field has a schema default, so what is in Git is exactly what is in the cluster
//! (no diff for Argo CD or Flux). Effective defaults are computed in memory by the accessors
//! below and shown in status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The message of the CEL rule that refuses MaintenanceWindow names over 63 characters.
pub const WINDOW_NAME_TOO_LONG: &str = "metadata.name must be at most 63 characters: it becomes the value of the nodemaintenance.medik8s.io/window label on generated NodeMaintenances";

/// Default `nodeTimeout` when the spec leaves it out.
pub const DEFAULT_NODE_TIMEOUT: &str = "2h";

/// Desired state of a MaintenanceWindow.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodemaintenance.medik8s.io",
    version = "v1alpha1",
    kind = "MaintenanceWindow",
    plural = "maintenancewindows",
    shortname = "mw",
    category = "maintenance",
    status = "MaintenanceWindowStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"TimeZone","type":"string","jsonPath":".spec.timeZone"}"#,
    printcolumn = r#"{"name":"Window","type":"string","jsonPath":".status.window"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextWindowLocal"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // The name becomes the value of the window label on generated NodeMaintenances, and
    // label values are at most 63 characters: refuse longer names at the API server.
    validation = Rule::new("self.metadata.name.size() <= 63").message(WINDOW_NAME_TOO_LONG)
)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowSpec {
    /// When windows open, with exactly Kubernetes CronJob syntax: 5 fields, names, ranges,
    /// lists, steps, day of week 0-7 and the @-macros.
    #[x_kube(validation = Rule::new("self.trim() != ''").message("spec.schedule must be a 5-field cron expression such as \"0 2 * * 6\" or a macro such as \"@weekly\""))]
    pub schedule: String,
    /// IANA time zone the schedule is read in, such as `Europe/Berlin`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How long each window stays open, as a Go duration (`90m`, `4h`, `1h30m`), elapsed time.
    #[x_kube(validation = Rule::new(r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("spec.duration must be a Go duration such as \"90m\", \"4h\" or \"1h30m\""))]
    pub duration: String,
    /// Which nodes this window maintains. Must not be empty.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("spec.nodeSelector must not be empty: set matchLabels or matchExpressions"))]
    pub node_selector: LabelSelector,
    /// How many selected nodes may be unavailable at once, an integer >= 1 or a percentage
    /// from 1% to 100% (rounded up, minimum 1). Counts nodes already NotReady or cordoned by
    /// others. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("string(self).matches('^[1-9][0-9]*$') || string(self).matches('^(100|[1-9][0-9]?)%$')").message("spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"))]
    pub max_unavailable: Option<IntOrString>,
    /// Copied into each generated NodeMaintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a node's maintenance ends. At least one of `after` and `onReboot` is required.
    pub release: Release,
    /// Longest time from NodeMaintenance creation to release; past it the node is released
    /// and counted as failed. Go duration, default `2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("spec.nodeTimeout must be a Go duration such as \"30m\" or \"2h\""))]
    pub node_timeout: Option<String>,
    /// After release, how long a node must be Ready and schedulable before its slot frees up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,
    /// Failed nodes tolerated per round before the rollout stalls until the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failures: Option<i32>,
    /// What happens at window end: `FinishInFlight` (default) or `Abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_window_end: Option<OnWindowEnd>,
    /// While true, no new nodes are started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// No NodeMaintenance is created; status shows the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Freeze periods: no window opens and no node starts during one (run-now included);
    /// in-flight nodes follow `onWindowEnd`. A window overlapping one is cut at its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub exclusions: Option<Vec<Exclusion>>,
    /// A node label such as `topology.kubernetes.io/zone`: the round takes one value of it
    /// at a time, in name order, finishing that domain before the next; the budget applies
    /// within the domain; nodes without the label come last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("spec.topologyKey must be a node label key such as \"topology.kubernetes.io/zone\""))]
    pub topology_key: Option<String>,
    /// A PromQL query run against the Prometheus of the operator config before each new
    /// node start: a non-empty result blocks new starts until it has been empty for `for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
}

/// A freeze period (`spec.exclusions[]`). The CEL rules compare bounds of the same form
/// (two dates, or two timestamps); `nmo validate` and the webhook also compare mixed ones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.start.size() != 10 || self.end.size() != 10 || self.end >= self.start").message("spec.exclusions[].end must not be before start (dates are whole days)"))]
#[x_kube(validation = Rule::new("self.start.size() == 10 || self.end.size() == 10 || timestamp(self.end) > timestamp(self.start)").message("spec.exclusions[].end must be after start"))]
#[serde(rename_all = "camelCase")]
pub struct Exclusion {
    /// An RFC 3339 timestamp (`2026-12-24T18:00:00+01:00`) or a date (`2026-12-24`, from the
    /// start of that day in `spec.timeZone`).
    #[x_kube(validation = Rule::new(r"self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$')").message("spec.exclusions[].start must be an RFC 3339 timestamp such as \"2026-12-24T18:00:00Z\" or a date such as \"2026-12-24\""))]
    #[schemars(length(max = 40))]
    pub start: String,
    /// An RFC 3339 timestamp or a date (`2026-12-26`, until the end of that day in
    /// `spec.timeZone`). Must be after `start`.
    #[x_kube(validation = Rule::new(r"self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$')").message("spec.exclusions[].end must be an RFC 3339 timestamp such as \"2026-12-26T23:59:59Z\" or a date such as \"2026-12-26\""))]
    #[schemars(length(max = 40))]
    pub end: String,
    /// Why, shown in status and `nmo plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
}

/// The Prometheus health gate (`spec.healthGate`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// A PromQL instant query; any series in its result blocks new starts (such as
    /// `ALERTS{alertstate="firing",severity="critical"}`).
    #[x_kube(validation = Rule::new("self.trim() != ''").message("spec.healthGate.query must not be empty: give a PromQL query such as ALERTS{alertstate=\"firing\"}"))]
    #[schemars(length(max = 4096))]
    pub query: String,
    /// How long the result must stay empty before starts resume, as a Go duration (`5m`).
    #[serde(rename = "for")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("spec.healthGate.for must be a Go duration such as \"5m\" or \"30s\""))]
    pub for_: String,
}

/// When a node's maintenance ends.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.after) || (has(self.onReboot) && self.onReboot)").message("spec.release must set after (a duration such as \"10m\") and/or onReboot: true"))]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// Release this long after the drain succeeded (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$')").message("spec.release.after must be a Go duration such as \"10m\" or \"1h\""))]
    pub after: Option<String>,
    /// Release once the node has rebooted (its bootID changed) and is Ready again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reboot: Option<bool>,
}

/// What happens to in-flight nodes when a window closes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum OnWindowEnd {
    /// Start no new nodes, let in-flight nodes finish.
    #[default]
    FinishInFlight,
    /// Delete in-flight NodeMaintenances at window end.
    Abort,
}

impl MaintenanceWindowSpec {
    /// The zone name, defaulting to UTC.
    pub fn time_zone_or_default(&self) -> &str {
        self.time_zone.as_deref().unwrap_or("UTC")
    }
    /// The budget, defaulting to 1.
    pub fn max_unavailable_or_default(&self) -> IntOrString {
        self.max_unavailable.clone().unwrap_or(IntOrString::Int(1))
    }
    /// The node timeout, defaulting to [`DEFAULT_NODE_TIMEOUT`].
    pub fn node_timeout_or_default(&self) -> &str {
        self.node_timeout.as_deref().unwrap_or(DEFAULT_NODE_TIMEOUT)
    }
    /// `minReadySeconds`, defaulting to 0.
    pub fn min_ready_seconds_or_default(&self) -> i32 {
        self.min_ready_seconds.unwrap_or(0)
    }
    /// `maxFailures`, defaulting to 0.
    pub fn max_failures_or_default(&self) -> i32 {
        self.max_failures.unwrap_or(0)
    }
    /// `onWindowEnd`, defaulting to `FinishInFlight`.
    pub fn on_window_end_or_default(&self) -> OnWindowEnd {
        self.on_window_end.unwrap_or_default()
    }
}

/// A window occurrence, in UTC.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct WindowSpan {
    /// When the window opens.
    pub start: Time,
    /// When the window closes.
    pub end: Time,
    /// True when the run-now annotation opened this window rather than the schedule.
    #[serde(rename = "runNow", default, skip_serializing_if = "Option::is_none")]
    pub run_now: Option<bool>,
}

/// A node being maintained in the current round.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInProgress {
    /// Node name.
    pub name: String,
    /// When its NodeMaintenance was created.
    pub started: Time,
    /// When its drain succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<Time>,
    /// When it was released (its NodeMaintenance deleted); the slot frees after minReadySeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Time>,
    /// The node's bootID when maintenance started, for `release.onReboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// How its maintenance ended, once it has: `ReleaseAfter`, `Rebooted`, `DeletedByOthers`,
    /// `TimedOut`, `Aborted` or `NodeGone`. The node stays listed until its slot frees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<String>,
    /// Since when, after release, the node has been Ready and schedulable (minReadySeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<Time>,
    /// Its NodeMaintenance has been seen in the cluster (until then, absent means "not yet
    /// cached", not "deleted by someone else").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observed: bool,
    /// What the node is doing, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A node that failed in the current round.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct NodeFailure {
    /// Node name.
    pub name: String,
    /// Why it failed.
    pub reason: String,
}

/// A pending node that could not start at the last plan; it is retried on every plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct NodeSkipped {
    /// Node name.
    pub name: String,
    /// Why, as `Word: explanation`: `HeldBy`, `NotReady`, `Cordoned`, `NameTaken` or
    /// `ControlPlaneQuorum`.
    pub reason: String,
}

/// Progress of the current round. A round maintains every selected node once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoundStatus {
    /// Round number, starting at 1.
    pub number: i64,
    /// When the round started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When the round finished, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// Nodes in the round.
    pub total: i32,
    /// Nodes maintained and released.
    pub completed: i32,
    /// Nodes not started yet.
    pub pending: i32,
    /// Nodes being maintained now.
    pub in_progress: i32,
    /// Nodes that failed this round.
    pub failed: i32,
    /// The nodes being maintained now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_progress_nodes: Vec<NodeInProgress>,
    /// The nodes that failed this round, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_nodes: Vec<NodeFailure>,
    /// Pending nodes that could not start at the last plan, with reasons (while the round
    /// runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_nodes: Vec<NodeSkipped>,
    /// With `spec.topologyKey`, the domain (label value) being maintained now; the empty
    /// string names the nodes without the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_domain: Option<String>,
    /// The nodes done this round (kept so that a round carries over between windows and
    /// across operator restarts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_nodes: Vec<String>,
    /// When failures went past maxFailures; the rollout resumes at the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_at: Option<Time>,
    /// Failures forgiven when the last stall was lifted by a new window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgiven_failures: Option<i32>,
}

/// Observed state of a MaintenanceWindow. Quiet: nothing here changes on every reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowStatus {
    /// The generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `WindowOpen`, `Reconciling` (only while maintaining) and `Stalled` (only when stuck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// `open` or `closed`, for `kubectl get mw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The next window opening, in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<WindowSpan>,
    /// The next window opening as a readable string in the window's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window_local: Option<String>,
    /// The open window, while one is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_window: Option<WindowSpan>,
    /// The current (or last) round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<RoundStatus>,
    /// `completed/total` of the current round, for `kubectl get mw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The last value of the run-now annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_run_now: Option<String>,
    /// With `dryRun`, the order in which nodes would be maintained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_nodes: Option<Vec<String>>,
    /// The exclusion in force now, if any (`spec.exclusions[i]` and its reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_exclusion: Option<String>,
    /// The health gate's memory, with `spec.healthGate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGateStatus>,
}

/// What the health gate remembers between reconciles (`status.healthGate`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthGateStatus {
    /// True while the gate blocks new starts (firing, unreachable, or not yet empty for
    /// `for`).
    pub blocking: bool,
    /// Since when the query's result has been empty after it blocked; starts resume at
    /// `clearSince + for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_since: Option<Time>,
}
