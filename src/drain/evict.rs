//! The eviction loop: watch one node's pods, evict every evictable pod concurrently through
//! the policy/v1 Eviction API, retry PodDisruptionBudget refusals with backoff, and finish once
//! nothing evictable is left on the node.
//!
//! The loop keeps its bookkeeping in [`DrainState`], which is plain data fed with watch events
//! and eviction outcomes, so the bookkeeping is tested without a cluster. The I/O around it is
//! [`drain_node`] and [`evict_pod`].

use super::filter::{
    DrainPlan, PodKey, drain_progress, origin, plan_drain, tolerates_unschedulable,
};
use crate::clock::Clock;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::EvictionLabel;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::core::{Selector, SelectorExt, Status};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How a drain paces itself. Durations are on the controller's clock, so a virtual clock that
/// runs faster also retries faster.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainSettings {
    /// First wait before retrying a refused or failed eviction.
    pub retry_initial: Duration,
    /// Longest wait between retries of one pod; the wait doubles up to this.
    pub retry_max: Duration,
    /// Most evictions in flight at once for one node.
    pub max_in_flight: usize,
    /// How long after an accepted eviction a pod that is still not terminating is evicted again.
    pub reevict_after: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            max_in_flight: 100,
            reevict_after: Duration::from_secs(60),
        }
    }
}

/// An eviction that a PodDisruptionBudget refused (HTTP 429).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedEviction {
    /// The pod that could not be evicted.
    pub pod: PodKey,
    /// `namespace/name` of the budget, when the API server or a lookup named it.
    pub budget: Option<String>,
    /// The API server's message.
    pub message: String,
}

/// What one eviction request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictionOutcome {
    /// The API server accepted the eviction: the pod is being deleted.
    Evicted,
    /// The pod no longer exists.
    Gone,
    /// Refused with 429: a PodDisruptionBudget allows no disruption now (or the server is
    /// throttling). Expected; retried with backoff.
    Blocked {
        /// `namespace/name` of the budget when known.
        budget: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// Any other failure; retried with backoff.
    Failed {
        /// What went wrong.
        message: String,
    },
}

impl EvictionOutcome {
    /// The `outcome` label of `nmo_evictions_total`.
    pub fn label(&self) -> EvictionLabel {
        match self {
            EvictionOutcome::Evicted => EvictionLabel::Evicted,
            EvictionOutcome::Gone => EvictionLabel::Gone,
            EvictionOutcome::Blocked { .. } => EvictionLabel::BlockedByPdb,
            EvictionOutcome::Failed { .. } => EvictionLabel::Failed,
        }
    }
}

/// Where a drain stands, as the controller shows it in status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// The node's pods have been listed at least once; before that nothing else is meaningful.
    pub listed: bool,
    /// Pods on the node when the drain started (medik8s `totalpods`).
    pub total_pods: usize,
    /// Pods that had to leave the node during this drain (medik8s `evictionPods`).
    pub to_leave: usize,
    /// Pods still to leave, sorted.
    pub pending: Vec<PodKey>,
    /// Pending pods whose last eviction a budget refused.
    pub blocked: Vec<BlockedEviction>,
    /// Pending pods whose last eviction failed otherwise, with the error.
    pub failed: Vec<(PodKey, String)>,
    /// The last error of the pod watch, if it is currently failing.
    pub watch_error: Option<String>,
    /// Pods left on the node, sorted: replacements of pods this drain evicted that tolerate
    /// the unschedulable taint and came back. Each pod is evicted once; these do not hold up
    /// the drain.
    pub left: Vec<PodKey>,
    /// Nothing evictable is left on the node.
    pub complete: bool,
}

impl DrainReport {
    /// `drainProgress`: 0 to 100.
    pub fn progress(&self) -> i32 {
        if self.complete {
            100
        } else {
            drain_progress(self.to_leave, self.pending.len())
        }
    }

    /// One line for `lastError`, or `None` when nothing is wrong.
    pub fn last_error(&self) -> Option<String> {
        if let Some(first) = self.blocked.first() {
            let budget = match &first.budget {
                Some(b) => format!("PodDisruptionBudget {b}"),
                None => "a PodDisruptionBudget".to_string(),
            };
            let more = match self.blocked.len() {
                1 => String::new(),
                n => format!(" (and {} more pods)", n - 1),
            };
            return Some(format!(
                "cannot evict pod {}: blocked by {budget}: {}{more}",
                first.pod, first.message
            ));
        }
        if let Some((pod, message)) = self.failed.first() {
            return Some(format!("cannot evict pod {pod}: {message}"));
        }
        self.watch_error
            .as_ref()
            .map(|e| format!("cannot watch the node's pods: {e}"))
    }
}

/// Where a drain starts from when it resumes: the counts an earlier run left in status, so that
/// `totalpods` and `evictionPods` stay stable across operator restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainSeed {
    /// `totalpods` from status.
    pub total_pods: Option<usize>,
    /// `evictionPods` from status.
    pub to_leave: Option<usize>,
}

#[derive(Clone, Debug)]
struct Attempt {
    next_try: Instant,
    backoff: Duration,
    blocked: Option<BlockedEviction>,
    failed: Option<String>,
}

/// The drain's bookkeeping: the node's pods as last watched, the evictions in flight and the
/// retry schedule. No I/O.
#[derive(Debug)]
pub struct DrainState {
    settings: DrainSettings,
    pods: BTreeMap<PodKey, Pod>,
    init_buffer: Option<BTreeMap<PodKey, Pod>>,
    listed: bool,
    seed: DrainSeed,
    total_pods: Option<usize>,
    leaving: BTreeSet<PodKey>,
    attempts: HashMap<PodKey, Attempt>,
    in_flight: BTreeSet<PodKey>,
    watch_error: Option<String>,
    evicted_uids: BTreeSet<String>,
    /// For each origin (controller uid) one of whose pods this drain evicted: the uids of its
    /// pods that were on the node then. A pod of that origin that is not among them arrived
    /// later: a replacement.
    evicted_origins: BTreeMap<String, BTreeSet<String>>,
}

impl DrainState {
    /// A drain that has not seen the node's pods yet.
    pub fn new(settings: DrainSettings, seed: DrainSeed) -> Self {
        DrainState {
            settings,
            pods: BTreeMap::new(),
            init_buffer: None,
            listed: false,
            seed,
            total_pods: None,
            leaving: BTreeSet::new(),
            attempts: HashMap::new(),
            in_flight: BTreeSet::new(),
            watch_error: None,
            evicted_uids: BTreeSet::new(),
            evicted_origins: BTreeMap::new(),
        }
    }

    /// Whether `pod` is a replacement of a pod this drain evicted that tolerates the
    /// unschedulable taint: evicting it too would go on for ever, so it is left (and reported).
    ///
    /// A replacement is a pod of an evicted pod's origin that was *not* on the node when that
    /// pod was evicted. A sibling that was already there (a second replica whose eviction a
    /// budget refused) is no replacement: it is evicted like any other pod.
    fn is_left(&self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        tolerates_unschedulable(pod)
            && !self.evicted_uids.contains(uid)
            && self
                .evicted_origins
                .get(&origin(pod))
                .is_some_and(|present| !present.contains(uid))
    }

    /// The drain plan of the pods that are not left alone.
    fn plan(&self) -> DrainPlan {
        plan_drain(self.pods.values().filter(|p| !self.is_left(p)))
    }

    /// Feed one event of the node's pod watch.
    pub fn observe(&mut self, event: watcher::Event<Pod>) {
        self.watch_error = None;
        match event {
            watcher::Event::Init => self.init_buffer = Some(BTreeMap::new()),
            watcher::Event::InitApply(pod) => {
                self.init_buffer
                    .get_or_insert_with(BTreeMap::new)
                    .insert(PodKey::of(&pod), pod);
            }
            watcher::Event::InitDone => {
                self.pods = self.init_buffer.take().unwrap_or_default();
                if !self.listed {
                    self.total_pods = Some(self.seed.total_pods.unwrap_or(self.pods.len()));
                }
                self.listed = true;
                self.forget_departed();
            }
            watcher::Event::Apply(pod) => {
                self.pods.insert(PodKey::of(&pod), pod);
            }
            watcher::Event::Delete(pod) => {
                let key = PodKey::of(&pod);
                self.pods.remove(&key);
                self.attempts.remove(&key);
            }
        }
        if self.listed {
            let plan = self.plan();
            self.leaving.extend(plan.pending());
        }
    }

    /// Record that the pod watch is failing (it retries by itself).
    pub fn watch_failed(&mut self, error: String) {
        self.watch_error = Some(error);
    }

    fn forget_departed(&mut self) {
        let pods = &self.pods;
        self.attempts.retain(|k, _| pods.contains_key(k));
    }

    /// Pods to send an eviction for at `now`: evictable, not in flight, and due for a (re)try.
    /// Marks them in flight, up to `max_in_flight` in all.
    pub fn start_due_evictions(&mut self, now: Instant) -> Vec<PodKey> {
        if !self.listed {
            return Vec::new();
        }
        let room = self
            .settings
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.len());
        let due: Vec<PodKey> = self
            .plan()
            .evict
            .into_iter()
            .filter(|k| !self.in_flight.contains(k))
            .filter(|k| self.attempts.get(k).is_none_or(|a| a.next_try <= now))
            .take(room)
            .collect();
        self.in_flight.extend(due.iter().cloned());
        due
    }

    /// Record the outcome of an eviction sent for `pod`.
    pub fn record(&mut self, pod: PodKey, outcome: EvictionOutcome, now: Instant) {
        self.in_flight.remove(&pod);
        let previous = self.attempts.get(&pod).map(|a| a.backoff);
        let backoff = match previous {
            Some(b) => (b * 2).min(self.settings.retry_max),
            None => self.settings.retry_initial.min(self.settings.retry_max),
        };
        match outcome {
            EvictionOutcome::Evicted => {
                if let Some(p) = self.pods.get(&pod) {
                    if let Some(uid) = &p.metadata.uid {
                        self.evicted_uids.insert(uid.clone());
                    }
                    // The pods of this origin on the node now, less those already left as
                    // replacements: later arrivals are replacements, these are not.
                    let from = origin(p);
                    let present: Vec<String> = self
                        .pods
                        .values()
                        .filter(|q| origin(q) == from && !self.is_left(q))
                        .filter_map(|q| q.metadata.uid.clone())
                        .collect();
                    self.evicted_origins
                        .entry(from)
                        .or_default()
                        .extend(present);
                }
                self.attempts.insert(
                    pod,
                    Attempt {
                        next_try: now + self.settings.reevict_after,
                        backoff: self.settings.retry_initial,
                        blocked: None,
                        failed: None,
                    },
                );
            }
            EvictionOutcome::Gone => {
                self.pods.remove(&pod);
                self.attempts.remove(&pod);
            }
            EvictionOutcome::Blocked { budget, message } => {
                self.attempts.insert(
                    pod.clone(),
                    Attempt {
                        next_try: now + backoff,
                        backoff,
                        blocked: Some(BlockedEviction {
                            pod,
                            budget,
                            message,
                        }),
                        failed: None,
                    },
                );
            }
            EvictionOutcome::Failed { message } => {
                self.attempts.insert(
                    pod,
                    Attempt {
                        next_try: now + backoff,
                        backoff,
                        blocked: None,
                        failed: Some(message),
                    },
                );
            }
        }
    }

    /// When the next retry is due, if any pod waits for one.
    pub fn next_retry(&self) -> Option<Instant> {
        let plan = self.plan();
        plan.evict
            .iter()
            .filter(|k| !self.in_flight.contains(*k))
            .filter_map(|k| self.attempts.get(k).map(|a| a.next_try))
            .min()
    }

    /// Evictions currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The drain as the controller should show it.
    pub fn report(&self) -> DrainReport {
        if !self.listed {
            return DrainReport {
                watch_error: self.watch_error.clone(),
                ..Default::default()
            };
        }
        let plan = self.plan();
        let pending = plan.pending();
        let left: Vec<PodKey> = self
            .pods
            .values()
            .filter(|p| self.is_left(p))
            .map(PodKey::of)
            .collect();
        let mut blocked = Vec::new();
        let mut failed = Vec::new();
        for key in &plan.evict {
            if let Some(a) = self.attempts.get(key) {
                if let Some(b) = &a.blocked {
                    blocked.push(b.clone());
                }
                if let Some(f) = &a.failed {
                    failed.push((key.clone(), f.clone()));
                }
            }
        }
        let to_leave = self.leaving.len().max(self.seed.to_leave.unwrap_or(0));
        DrainReport {
            listed: true,
            total_pods: self.total_pods.unwrap_or(self.pods.len()),
            to_leave,
            complete: plan.is_complete(),
            pending,
            blocked,
            failed,
            watch_error: self.watch_error.clone(),
            left,
        }
    }
}

/// Errors that end a drain. Refused and failed evictions are not among them: they are retried
/// and reported.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The pod watch stream ended, which a retrying watcher never does on its own.
    #[error("the watch of pods on node {node} ended")]
    WatchEnded {
        /// The node being drained.
        node: String,
    },
}

impl DrainError {
    /// A bounded name for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            DrainError::WatchEnded { .. } => "DrainWatchEnded",
        }
    }
}

/// What a drain talks to and reports into.
#[derive(Clone)]
pub struct DrainContext<'a> {
    /// Watches the node's pods (fieldSelector `spec.nodeName`: there is no cluster-wide pod
    /// cache) and looks up budgets.
    pub client: kube::Client,
    /// Sends the Eviction requests. It should be a client without kube's automatic retry of
    /// 429 responses (see `crate::controller::Clients`), or a budget refusal is retried inside
    /// the client for minutes before the drain sees it.
    pub evictions: kube::Client,
    /// The controller's clock: retry delays are on it.
    pub clock: Arc<dyn Clock>,
    /// Where every eviction's outcome is counted.
    pub metrics: &'a Metrics,
}

/// Drain `node`: evict every evictable pod and return once none is left.
///
/// `on_report` is called with every new [`DrainReport`], the last one being complete.
pub async fn drain_node(
    cx: DrainContext<'_>,
    node: &str,
    settings: DrainSettings,
    seed: DrainSeed,
    mut on_report: impl FnMut(&DrainReport) + Send,
) -> Result<DrainReport, DrainError> {
    let DrainContext {
        client,
        evictions,
        clock,
        metrics,
    } = cx;
    let pods: Api<Pod> = Api::all(client.clone());
    let watch_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(pods, watch_config).default_backoff().boxed();
    let mut state = DrainState::new(real_settings(&settings, clock.as_ref()), seed);
    let mut in_flight = FuturesUnordered::new();
    let mut last: Option<DrainReport> = None;
    loop {
        for key in state.start_due_evictions(Instant::now()) {
            let evictions = evictions.clone();
            let client = client.clone();
            in_flight.push(async move {
                let outcome = evict_pod(&evictions, &client, &key).await;
                (key, outcome)
            });
        }
        let report = state.report();
        if last.as_ref() != Some(&report) {
            on_report(&report);
            last = Some(report.clone());
        }
        if report.complete && in_flight.is_empty() {
            return Ok(report);
        }
        let wake = state
            .next_retry()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = events.try_next() => match event {
                Ok(Some(event)) => state.observe(event),
                Ok(None) => return Err(DrainError::WatchEnded { node: node.to_string() }),
                Err(err) => state.watch_failed(err.to_string()),
            },
            Some((key, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                tracing::debug!(%node, pod = %key, ?outcome, "eviction answered");
                metrics.evicted(outcome.label());
                state.record(key, outcome, Instant::now());
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Convert the settings' clock durations into real durations for `tokio::time`.
fn real_settings(settings: &DrainSettings, clock: &dyn Clock) -> DrainSettings {
    let real = |d: Duration| {
        chrono::Duration::from_std(d)
            .map(|v| clock.real_duration(v))
            .unwrap_or(d)
    };
    DrainSettings {
        retry_initial: real(settings.retry_initial),
        retry_max: real(settings.retry_max),
        max_in_flight: settings.max_in_flight,
        reevict_after: real(settings.reevict_after),
    }
}

/// Send one policy/v1 Eviction for `pod` and say what came of it. When a budget refuses and the
/// API server does not name it, the budget is looked up with `client`.
pub async fn evict_pod(
    evictions: &kube::Client,
    client: &kube::Client,
    pod: &PodKey,
) -> EvictionOutcome {
    let outcome = match eviction_request(pod) {
        Ok(request) => eviction_outcome(evictions.request::<Status>(request).await),
        Err(message) => EvictionOutcome::Failed { message },
    };
    match outcome {
        EvictionOutcome::Blocked {
            budget: None,
            message,
        } if message.contains("disruption budget") => {
            let budget = find_budget(client, pod).await;
            EvictionOutcome::Blocked { budget, message }
        }
        other => other,
    }
}

fn eviction_request(pod: &PodKey) -> Result<http::Request<Vec<u8>>, String> {
    let body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
    });
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    http::Request::post(format!(
        "/api/v1/namespaces/{}/pods/{}/eviction",
        pod.namespace, pod.name
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(body)
    .map_err(|e| e.to_string())
}

/// Map the API server's answer to an eviction onto an [`EvictionOutcome`].
pub fn eviction_outcome(result: Result<Status, kube::Error>) -> EvictionOutcome {
    match result {
        Ok(_) => EvictionOutcome::Evicted,
        Err(kube::Error::Api(status)) if status.is_not_found() => EvictionOutcome::Gone,
        Err(kube::Error::Api(status)) if status.code == 429 && is_budget_refusal(&status) => {
            EvictionOutcome::Blocked {
                budget: budget_named_in(&status),
                message: status.message.clone(),
            }
        }
        // API Priority and Fairness (or any other throttling): not a budget, retried.
        Err(kube::Error::Api(status)) if status.code == 429 => EvictionOutcome::Failed {
            message: format!(
                "the API server is throttling requests (HTTP 429): {}",
                if status.message.is_empty() {
                    &status.reason
                } else {
                    &status.message
                }
            ),
        },
        Err(kube::Error::Api(status)) => EvictionOutcome::Failed {
            message: if status.message.is_empty() {
                format!("HTTP {} {}", status.code, status.reason)
            } else {
                status.message.clone()
            },
        },
        Err(other) => EvictionOutcome::Failed {
            message: other.to_string(),
        },
    }
}

/// Whether a 429 is a PodDisruptionBudget refusal: a `DisruptionBudget` cause, or the
/// apiserver's "would violate the pod's disruption budget" message. API Priority and Fairness
/// answers 429 too, naming no budget.
pub fn is_budget_refusal(status: &Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"))
        || status.message.contains("disruption budget")
}

/// The budget name from the `DisruptionBudget` cause the API server attaches to a refusal:
/// "The disruption budget web-pdb needs 2 healthy pods and has 2 currently".
pub fn budget_named_in(status: &Status) -> Option<String> {
    status.details.as_ref()?.causes.iter().find_map(|cause| {
        let text = cause.message.as_str();
        let rest = text.split("disruption budget ").nth(1)?;
        rest.split_whitespace().next().map(str::to_string)
    })
}

/// Find the budget covering `pod` when the API server did not name it: the first PDB in the
/// pod's namespace whose selector matches the pod's labels.
async fn find_budget(client: &kube::Client, pod: &PodKey) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let labels = pods.get_opt(&pod.name).await.ok()??.metadata.labels?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &pod.namespace);
    let list = pdbs.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find_map(|pdb| {
        let selector = Selector::try_from(pdb.spec?.selector?).ok()?;
        // An empty selector matches every pod in policy/v1.
        selector
            .matches(&labels)
            .then(|| pdb.metadata.name.unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::filter::tests::pod;
    use kube::core::response::{StatusCause, StatusDetails};

    fn settings() -> DrainSettings {
        DrainSettings {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(4),
            max_in_flight: 2,
            reevict_after: Duration::from_secs(30),
        }
    }

    fn listed(pods: Vec<Pod>) -> DrainState {
        let mut s = DrainState::new(settings(), DrainSeed::default());
        s.observe(watcher::Event::Init);
        for p in pods {
            s.observe(watcher::Event::InitApply(p));
        }
        s.observe(watcher::Event::InitDone);
        s
    }

    fn key(name: &str) -> PodKey {
        PodKey::new("default", name)
    }

    #[test]
    fn nothing_is_evicted_before_the_first_list_completes() {
        let mut s = DrainState::new(settings(), DrainSeed::default());
        s.observe(watcher::Event::Init);
        s.observe(watcher::Event::InitApply(pod("a").build()));
        assert!(s.start_due_evictions(Instant::now()).is_empty());
        assert!(!s.report().listed);
        assert!(!s.report().complete);
    }

    #[test]
    fn evictions_start_concurrently_up_to_the_in_flight_limit() {
        let mut s = listed(vec![
            pod("a").build(),
            pod("b").build(),
            pod("c").build(),
            pod("ds").owned_by("DaemonSet").build(),
        ]);
        let now = Instant::now();
        assert_eq!(s.start_due_evictions(now), vec![key("a"), key("b")]);
        assert!(s.start_due_evictions(now).is_empty(), "limit reached");
        s.record(key("a"), EvictionOutcome::Evicted, now);
        assert_eq!(s.start_due_evictions(now), vec![key("c")]);
        let r = s.report();
        assert_eq!(r.total_pods, 4);
        assert_eq!(r.to_leave, 3);
        assert_eq!(r.pending, vec![key("a"), key("b"), key("c")]);
    }

    #[test]
    fn the_drain_completes_when_evicted_pods_are_deleted_and_only_daemons_remain() {
        let mut s = listed(vec![
            pod("a").build(),
            pod("ds").owned_by("DaemonSet").build(),
        ]);
        let now = Instant::now();
        s.start_due_evictions(now);
        s.record(key("a"), EvictionOutcome::Evicted, now);
        s.observe(watcher::Event::Apply(pod("a").terminating().build()));
        let r = s.report();
        assert!(!r.complete, "a terminating pod is waited for");
        assert_eq!(r.progress(), 0);
        s.observe(watcher::Event::Delete(pod("a").terminating().build()));
        let r = s.report();
        assert!(r.complete);
        assert_eq!(r.progress(), 100);
        assert_eq!(r.last_error(), None);
        assert!(s.start_due_evictions(now).is_empty());
    }

    #[test]
    fn a_refused_eviction_is_retried_with_doubling_backoff_and_reported() {
        let mut s = listed(vec![pod("web").build()]);
        let t0 = Instant::now();
        s.start_due_evictions(t0);
        let blocked = || EvictionOutcome::Blocked {
            budget: Some("web-pdb".into()),
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        };
        s.record(key("web"), blocked(), t0);
        assert_eq!(s.next_retry(), Some(t0 + Duration::from_secs(1)));
        assert!(s.start_due_evictions(t0).is_empty(), "not due yet");
        let r = s.report();
        assert_eq!(r.blocked.len(), 1);
        let err = r.last_error().unwrap();
        assert!(
            err.contains("web-pdb") && err.contains("default/web"),
            "{err}"
        );

        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.start_due_evictions(t1), vec![key("web")]);
        s.record(key("web"), blocked(), t1);
        assert_eq!(s.next_retry(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        s.start_due_evictions(t2);
        s.record(key("web"), blocked(), t2);
        let t3 = t2 + Duration::from_secs(4);
        s.start_due_evictions(t3);
        s.record(key("web"), blocked(), t3);
        assert_eq!(
            s.next_retry(),
            Some(t3 + Duration::from_secs(4)),
            "capped at retry_max"
        );
        s.start_due_evictions(t3 + Duration::from_secs(4));
        s.record(key("web"), EvictionOutcome::Evicted, t3);
        assert!(s.report().blocked.is_empty(), "no longer blocked");
    }

    #[test]
    fn a_pod_that_is_gone_counts_as_left() {
        let mut s = listed(vec![pod("a").build()]);
        let now = Instant::now();
        s.start_due_evictions(now);
        s.record(key("a"), EvictionOutcome::Gone, now);
        let r = s.report();
        assert!(r.complete);
        assert_eq!(r.to_leave, 1);
    }

    #[test]
    fn a_failed_eviction_is_reported_and_retried() {
        let mut s = listed(vec![pod("a").build()]);
        let now = Instant::now();
        s.start_due_evictions(now);
        s.record(
            key("a"),
            EvictionOutcome::Failed {
                message: "boom".into(),
            },
            now,
        );
        assert_eq!(
            s.report().last_error().as_deref(),
            Some("cannot evict pod default/a: boom")
        );
        assert_eq!(
            s.start_due_evictions(now + Duration::from_secs(1)),
            vec![key("a")]
        );
    }

    #[test]
    fn a_resumed_drain_keeps_the_counts_of_the_earlier_run() {
        let mut s = DrainState::new(
            settings(),
            DrainSeed {
                total_pods: Some(12),
                to_leave: Some(10),
            },
        );
        s.observe(watcher::Event::Init);
        s.observe(watcher::Event::InitApply(pod("a").terminating().build()));
        s.observe(watcher::Event::InitApply(
            pod("ds").owned_by("DaemonSet").build(),
        ));
        s.observe(watcher::Event::InitDone);
        let r = s.report();
        assert_eq!(r.total_pods, 12);
        assert_eq!(r.to_leave, 10);
        assert_eq!(r.progress(), 90);
        assert!(s.start_due_evictions(Instant::now()).is_empty());
    }

    #[test]
    fn a_relist_replaces_the_pods_and_forgets_departed_ones() {
        let mut s = listed(vec![pod("a").build(), pod("b").build()]);
        let now = Instant::now();
        s.start_due_evictions(now);
        s.record(key("a"), EvictionOutcome::Evicted, now);
        s.record(key("b"), EvictionOutcome::Evicted, now);
        s.observe(watcher::Event::Init);
        s.observe(watcher::Event::InitApply(pod("b").terminating().build()));
        s.observe(watcher::Event::InitDone);
        let r = s.report();
        assert_eq!(r.pending, vec![key("b")]);
        assert_eq!(r.progress(), 50);
    }

    fn status(code: u16, message: &str, cause: Option<&str>) -> Status {
        let mut s = Status::failure(message, "TooManyRequests").with_code(code);
        if let Some(c) = cause {
            s = s.with_details(StatusDetails {
                causes: vec![StatusCause {
                    reason: "DisruptionBudget".into(),
                    message: c.into(),
                    field: String::new(),
                }],
                name: String::new(),
                group: "policy".into(),
                kind: "poddisruptionbudgets".into(),
                uid: String::new(),
                retry_after_seconds: 0,
            });
        }
        s
    }

    #[test]
    fn a_429_names_the_budget_from_the_disruption_budget_cause() {
        let outcome = eviction_outcome(Err(kube::Error::Api(
            status(
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.",
                Some("The disruption budget web-pdb needs 2 healthy pods and has 2 currently"),
            )
            .boxed(),
        )));
        assert_eq!(
            outcome,
            EvictionOutcome::Blocked {
                budget: Some("web-pdb".into()),
                message: "Cannot evict pod as it would violate the pod's disruption budget.".into()
            }
        );
    }

    #[test]
    fn answers_map_onto_outcomes() {
        assert_eq!(
            eviction_outcome(Ok(Status::success())),
            EvictionOutcome::Evicted
        );
        let not_found = Status::failure("pods \"a\" not found", "NotFound").with_code(404);
        assert_eq!(
            eviction_outcome(Err(kube::Error::Api(not_found.boxed()))),
            EvictionOutcome::Gone
        );
        let refused = status(
            429,
            "Cannot evict pod as it would violate the pod's disruption budget.",
            None,
        );
        assert!(matches!(
            eviction_outcome(Err(kube::Error::Api(refused.boxed()))),
            EvictionOutcome::Blocked { budget: None, .. }
        ));
        let boom = Status::failure("etcd down", "InternalError").with_code(500);
        assert_eq!(
            eviction_outcome(Err(kube::Error::Api(boom.boxed()))),
            EvictionOutcome::Failed {
                message: "etcd down".into()
            }
        );
    }

    #[test]
    fn a_429_of_api_priority_and_fairness_is_throttling_not_a_budget() {
        let apf = status(429, "Too many requests, please try again later.", None);
        let outcome = eviction_outcome(Err(kube::Error::Api(apf.boxed())));
        let EvictionOutcome::Failed { message } = &outcome else {
            panic!("not a budget refusal: {outcome:?}");
        };
        assert!(message.contains("throttling"), "{message}");
        let mut s = listed(vec![pod("a").build()]);
        let now = Instant::now();
        s.start_due_evictions(now);
        s.record(key("a"), outcome, now);
        let err = s.report().last_error().unwrap();
        assert!(!err.contains("PodDisruptionBudget"), "{err}");
        assert!(s.report().blocked.is_empty());
    }

    #[test]
    fn a_replacement_that_tolerates_the_cordon_is_evicted_once_and_reported_not_looped() {
        let owned = |uid: &str| {
            pod("agent")
                .owned_by("ReplicaSet")
                .tolerating_unschedulable()
                .uid(uid)
                .build()
        };
        let mut s = listed(vec![owned("u1")]);
        let now = Instant::now();
        assert_eq!(s.start_due_evictions(now), vec![key("agent")]);
        s.record(key("agent"), EvictionOutcome::Evicted, now);
        s.observe(watcher::Event::Delete(owned("u1")));
        // Its controller puts it straight back: same name, new uid.
        s.observe(watcher::Event::Apply(owned("u2")));
        let later = now + Duration::from_secs(120);
        assert!(s.start_due_evictions(later).is_empty(), "evicted once");
        let r = s.report();
        assert!(r.complete);
        assert_eq!(r.left, vec![key("agent")]);
        // A pod that does not tolerate the cordon and lands anyway is still evicted.
        s.observe(watcher::Event::Apply(pod("bound").uid("u3").build()));
        assert_eq!(s.start_due_evictions(later), vec![key("bound")]);
    }

    #[test]
    fn a_sibling_that_was_on_the_node_when_its_twin_was_evicted_is_still_evicted() {
        // Two replicas of one ReplicaSet, both tolerating the cordon; a budget lets one go.
        let replica = |name: &str, uid: &str| {
            pod(name)
                .owned_by("ReplicaSet")
                .tolerating_unschedulable()
                .uid(uid)
                .build()
        };
        let mut s = listed(vec![replica("web-1", "u1"), replica("web-2", "u2")]);
        let now = Instant::now();
        assert_eq!(s.start_due_evictions(now), vec![key("web-1"), key("web-2")]);
        s.record(key("web-1"), EvictionOutcome::Evicted, now);
        s.record(
            key("web-2"),
            EvictionOutcome::Blocked {
                budget: Some("web-pdb".into()),
                message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            },
            now,
        );
        let r = s.report();
        assert!(!r.complete, "web-2 is still on the node: {r:?}");
        assert!(r.left.is_empty(), "nothing came back: {:?}", r.left);
        assert_eq!(r.pending, vec![key("web-1"), key("web-2")]);
        assert_eq!(r.blocked.len(), 1);
        let retry = now + Duration::from_secs(1);
        assert_eq!(s.start_due_evictions(retry), vec![key("web-2")]);
        // The replacement of web-1 comes back to the node: that one is left.
        s.observe(watcher::Event::Delete(replica("web-1", "u1")));
        s.observe(watcher::Event::Apply(replica("web-3", "u3")));
        s.record(key("web-2"), EvictionOutcome::Evicted, retry);
        s.observe(watcher::Event::Delete(replica("web-2", "u2")));
        let r = s.report();
        assert!(r.complete, "{r:?}");
        assert_eq!(r.left, vec![key("web-3")]);
    }
}
