//! `nmo simulate`: the real controllers against the in-process sandbox, on a virtual clock.
//!
//! A scenario is: a seeded cluster (generated workers and GPU nodes with pods and a PDB, or a
//! snapshot of a real cluster), the manifests to apply (by default the embedded examples'
//! MaintenanceWindows), and a virtual time span. The clock runs `speed` times faster than real
//! time while anything is happening, and jumps ahead to just before the next window opening
//! when nothing is (no NodeMaintenance exists and no window is open), so a week of windows
//! plays out in seconds. Every MaintenanceWindow Event is printed as it happens, stamped with
//! virtual time, and a summary ends the run.
//!
//! The same scenario plays on another API server too (`--cluster-kubeconfig`, meant for the
//! real control plane of `tests/control-plane/run`), with the kubelet simulator
//! (`crate::kubelet`) in place of the sandbox's built-in kubelet.
//!
//! Two simulated actors stand in for what a real cluster has around nmo:
//! - the sandbox's kubelet-like behaviour, or the kubelet simulator (pods terminate after their
//!   grace period, ReplicaSet pods are recreated elsewhere);
//! - a reboot agent: for windows released `onReboot`, it reboots a node (new bootID) a few
//!   virtual minutes after its NodeMaintenance succeeded, as kured or a node script would.

use crate::api::{MaintenanceWindow, NodeMaintenance, WINDOW_LABEL, from_time};
use crate::clock::{Clock, VirtualClock};
use crate::controller::{self, ControllerConfig};
use crate::kubelet::{KubeletSimulator, SimulatorHandle};
use crate::sandbox::{NewPod, Sandbox};
use crate::schedule::selector_matches;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The manifests `nmo simulate` applies when given none: the MaintenanceWindows of examples/.
pub const EMBEDDED_EXAMPLES: [(&str, &str); 2] = [
    (
        "examples/weekly-workers-berlin.yaml",
        include_str!("../../examples/weekly-workers-berlin.yaml"),
    ),
    (
        "examples/nightly-reboot.yaml",
        include_str!("../../examples/nightly-reboot.yaml"),
    ),
];

/// Label of generated worker nodes (what the weekly example selects).
pub const WORKER_LABEL: &str = "node-role.kubernetes.io/worker";
/// Label of generated GPU nodes (what the nightly example selects).
pub const GPU_LABEL: &str = "nvidia.com/gpu.present";

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The sandbox failed.
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// An API call of the simulator failed.
    #[error("{operation}: {source}")]
    Api {
        operation: String,
        #[source]
        source: kube::Error,
    },
    /// The kubelet simulator failed.
    #[error("kubelet simulator: {0}")]
    Simulator(String),
    /// The input cannot be played on this target.
    #[error("{0}")]
    Unsupported(String),
}

/// How to seed the simulated cluster.
#[derive(Clone, Debug)]
pub enum Seed {
    /// Generated nodes: `workers` workers (`worker-1`…) and `gpus` GPU nodes (`gpu-1`…), each
    /// with two `web` ReplicaSet pods under a PDB allowing one disruption and a DaemonSet pod.
    Generated { workers: usize, gpus: usize },
    /// A snapshot (`kubectl get nodes,pods,pdb -A -o yaml`), already read.
    Snapshot(String),
}

/// The cluster a scenario plays on.
pub enum Target {
    /// The in-process sandbox, whose built-in kubelet plays the nodes.
    Sandbox(Sandbox),
    /// Any API server reached through a kubeconfig (meant for a test control plane such as
    /// `tests/control-plane/run`, which has no kubelets): the kubelet simulator registers the
    /// nodes and plays their kubelets, the scheduler and the node lifecycle controller.
    Cluster {
        /// The client configuration (boxed: it is large).
        config: Box<kube::Config>,
        /// The simulated nodes.
        simulator: KubeletSimulator,
        /// The simulator's loops, stopped when the target is dropped.
        loops: SimulatorHandle,
    },
}

impl Target {
    /// The client configuration of the controllers and the observers.
    pub fn client_config(&self) -> Result<kube::Config, SimulateError> {
        match self {
            Target::Sandbox(s) => Ok(s.client_config()?),
            Target::Cluster { config, .. } => Ok((**config).clone()),
        }
    }

    fn client(&self) -> Result<Client, SimulateError> {
        Client::try_from(self.client_config()?).map_err(|source| SimulateError::Api {
            operation: "building a client".into(),
            source,
        })
    }

    /// Reboot a node (a new bootID, Ready again).
    async fn reboot_node(&self, node: &str) -> bool {
        match self {
            Target::Sandbox(s) => s.reboot_node(node).is_ok(),
            Target::Cluster { simulator, .. } => simulator.reboot(node).await.is_ok(),
        }
    }
}

/// The generated nodes of a seed: (name, label key, label value).
fn generated_nodes(workers: usize, gpus: usize) -> Vec<(String, &'static str, &'static str)> {
    (1..=workers)
        .map(|i| (format!("worker-{i}"), WORKER_LABEL, ""))
        .chain((1..=gpus).map(|i| (format!("gpu-{i}"), GPU_LABEL, "true")))
        .collect()
}

/// The `web` PDB of a generated seed: one disruption at a time.
const WEB_PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: default\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app: web\n";

/// Seed a cluster behind an API server, as [`seed`] seeds the sandbox: the simulator registers
/// the nodes; a `web` ReplicaSet of two pods per node (spread by the simulated scheduler) under
/// the same PDB, and a `node-agent` DaemonSet, are created through the API, so
/// kube-controller-manager makes their pods. Snapshots are refused (their pods would need
/// their nodes' kubelets).
pub async fn seed_cluster(
    client: &Client,
    simulator: &KubeletSimulator,
    seed: &Seed,
) -> Result<(), SimulateError> {
    let Seed::Generated { workers, gpus } = seed else {
        return Err(SimulateError::Unsupported(
            "--snapshot cannot seed a cluster given by --cluster-kubeconfig; use generated nodes (--nodes, --gpu-nodes)".into(),
        ));
    };
    let nodes = generated_nodes(*workers, *gpus);
    for (node, key, value) in &nodes {
        simulator
            .register_node(node, &[(key, value)])
            .await
            .map_err(|e| SimulateError::Simulator(e.to_string()))?;
    }
    if nodes.is_empty() {
        return Ok(());
    }
    let replicas = 2 * nodes.len();
    let workloads = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web, namespace: default}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 30\n      containers: [{{name: web, image: registry.k8s.io/pause:3.10}}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: node-agent, namespace: kube-system}}\nspec:\n  selector: {{matchLabels: {{app: node-agent}}}}\n  template:\n    metadata: {{labels: {{app: node-agent}}}}\n    spec:\n      terminationGracePeriodSeconds: 5\n      containers: [{{name: agent, image: registry.k8s.io/pause:3.10}}]\n---\n{WEB_PDB}"
    );
    apply_to_cluster(client, "the generated workloads", &workloads).await
}

/// Install nmo's CRDs through the API and wait until they are served.
pub async fn install_crds_on_cluster(client: &Client) -> Result<(), SimulateError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("nmo-simulate").force();
    for crd in crate::api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .map_err(|source| SimulateError::Api {
                operation: format!("applying CRD {name}"),
                source,
            })?;
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(std::time::Duration::from_secs(60), established)
            .await
            .map_err(|_| {
                SimulateError::Unsupported(format!("CRD {name} was not established within 60 s"))
            })?
            .map_err(|e| SimulateError::Simulator(format!("waiting for CRD {name}: {e}")))?;
    }
    Ok(())
}

/// Server-side apply every document of `yaml` (any kind the API server serves), as
/// `kubectl apply --server-side` would. `what` names the source in errors.
pub async fn apply_to_cluster(
    client: &Client,
    what: &str,
    yaml: &str,
) -> Result<(), SimulateError> {
    use kube::api::DynamicObject;
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| SimulateError::Unsupported(format!("{what}: invalid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value)
            .map_err(|e| SimulateError::Unsupported(format!("{what}: not an object: {e}")))?;
        let types = obj.types.clone().ok_or_else(|| {
            SimulateError::Unsupported(format!("{what}: a document without apiVersion and kind"))
        })?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)
            .map_err(|e| SimulateError::Unsupported(format!("{what}: {e}")))?;
        let (resource, caps) =
            kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|source| SimulateError::Api {
                    operation: format!("{what}: finding {}/{}", types.api_version, types.kind),
                    source,
                })?;
        let name = obj.name_any();
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply("nmo-simulate").force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|source| SimulateError::Api {
            operation: format!("{what}: applying {} {name}", types.kind),
            source,
        })?;
    }
    Ok(())
}

/// Seed the sandbox.
pub fn seed(sandbox: &Sandbox, seed: &Seed) -> Result<(), SimulateError> {
    match seed {
        Seed::Snapshot(yaml) => {
            sandbox.apply_yaml(yaml)?;
        }
        Seed::Generated { workers, gpus } => {
            let nodes = generated_nodes(*workers, *gpus);
            for (node, key, value) in nodes {
                sandbox.add_node(&node, &[(key, value)])?;
                for _ in 0..2 {
                    sandbox.create_pod(
                        NewPod::new("")
                            .on_node(&node)
                            .label("app", "web")
                            .replica_set("web")
                            .grace_period(30),
                    )?;
                }
                sandbox.create_pod(
                    NewPod::new("")
                        .namespace("kube-system")
                        .on_node(&node)
                        .label("app", "node-agent")
                        .daemon_set("node-agent")
                        .grace_period(5),
                )?;
            }
            if workers + gpus > 0 {
                sandbox.apply_yaml(WEB_PDB)?;
            }
        }
    }
    Ok(())
}

/// A scenario run's settings.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Virtual start instant.
    pub start: DateTime<Utc>,
    /// Virtual time span to play.
    pub span: Duration,
    /// Virtual seconds per real second while something is happening.
    pub speed: f64,
    /// How long after a NodeMaintenance succeeded the reboot agent reboots the node.
    pub reboot_after: Duration,
    /// Controller settings.
    pub controllers: ControllerConfig,
}

/// Per-window figures collected during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowSummary {
    /// Windows opened.
    pub windows_opened: u32,
    /// Rounds completed.
    pub rounds_completed: u32,
    /// Node maintenances started.
    pub started: u32,
    /// Nodes released.
    pub released: u32,
    /// Nodes failed.
    pub failed: u32,
    /// Most of its selected nodes seen unavailable at once.
    pub max_unavailable: usize,
    /// The budget resolved against its selected nodes.
    pub budget: usize,
    /// Its selected nodes.
    pub selected: usize,
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Figures per MaintenanceWindow.
    pub windows: BTreeMap<String, WindowSummary>,
    /// Virtual time covered.
    pub virtual_span: Duration,
    /// Real time taken.
    pub real: std::time::Duration,
    /// Events printed.
    pub events: usize,
}

impl Summary {
    /// Windows whose budget was exceeded (should never happen).
    pub fn budget_violations(&self) -> Vec<&str> {
        self.windows
            .iter()
            .filter(|(_, w)| w.max_unavailable > w.budget)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Observed {
    windows: BTreeMap<String, WindowSummary>,
    events: usize,
    seen_events: BTreeSet<(String, i32)>,
}

/// Run a scenario on an already seeded sandbox whose manifests are applied. Prints Events as
/// they happen to `out` and returns the summary.
pub async fn run_scenario(
    target: &Target,
    clock: &VirtualClock,
    scenario: &Scenario,
    out: &mut (dyn FnMut(String) + Send),
) -> Result<Summary, SimulateError> {
    let real_start = std::time::Instant::now();
    let client = target.client()?;
    let end = scenario.start + scenario.span;
    // Evictions need a client that reports a PDB's 429 at once (see controller::Clients).
    let clients = controller::Clients::from_config(target.client_config()?).map_err(|source| {
        SimulateError::Api {
            operation: "building the controllers' clients".into(),
            source,
        }
    })?;
    let handle = controller::start(
        clients,
        Arc::new(clock.clone()),
        scenario.controllers.clone(),
    );
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (printer_tx, mut printer_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (reboot_tx, mut reboot_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watchers = vec![
        tokio::spawn(watch_events(
            client.clone(),
            clock.clone(),
            observed.clone(),
            printer_tx.clone(),
        )),
        tokio::spawn(reboot_agent(
            client.clone(),
            reboot_tx,
            clock.clone(),
            scenario.reboot_after,
        )),
        tokio::spawn(watch_unavailability(client.clone(), observed.clone())),
    ];

    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    let nms: Api<NodeMaintenance> = Api::all(client.clone());
    let mut tick = 0u64;
    while clock.now() < end {
        while let Ok(line) = printer_rx.try_recv() {
            out(line);
        }
        while let Ok(node) = reboot_rx.try_recv() {
            if target.reboot_node(&node).await {
                out(format!(
                    "{}  {node:<20} rebooted by the simulated node agent",
                    stamp(clock.now())
                ));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // Skip ahead when nothing is happening.
        let busy = !list_all(&nms).await?.is_empty();
        if busy {
            continue;
        }
        let all = list_all(&windows).await?;
        // Idle: no node in flight, and every window either closed or done with its round
        // (a new round only starts at the next opening). Then the next thing that can happen
        // is a window closing or opening.
        let mut idle = true;
        let mut next: Option<DateTime<Utc>> = None;
        for w in &all {
            let Some(s) = w.status.as_ref() else {
                idle = false;
                continue;
            };
            let round = s.round.as_ref();
            if round.is_some_and(|r| !r.in_progress_nodes.is_empty()) {
                idle = false;
            }
            let open = s.window.as_deref() == Some("open");
            let round_done = round.is_some_and(|r| r.finished.is_some() || r.stalled_at.is_some());
            let suspended = w.spec.suspend == Some(true) || w.spec.dry_run == Some(true);
            if open && !round_done && !suspended {
                idle = false;
            }
            let candidate = if open {
                s.current_window.as_ref().map(|c| from_time(&c.end))
            } else {
                s.next_window.as_ref().map(|n| from_time(&n.start))
            };
            if let Some(c) = candidate {
                next = Some(next.map_or(c, |n: DateTime<Utc>| n.min(c)));
            }
        }
        let now = clock.now();
        let lead = Duration::seconds(30);
        if let (true, Some(next)) = (idle, next)
            && next - lead > now + Duration::minutes(1)
        {
            let target = (next - lead).min(end);
            // Let the Events of the last reconciles arrive before the clock jumps.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            while let Ok(line) = printer_rx.try_recv() {
                out(line);
            }
            clock.advance(target - now);
            out(format!(
                "{}  … nothing to do until {}; skipping ahead",
                stamp(target),
                stamp(next)
            ));
            // Timers of the controllers run in real time: wake every window for the new time.
            tick += 1;
            for w in &all {
                let poke = serde_json::json!({"metadata": {"annotations": {"simulate.nmo/tick": tick.to_string()}}});
                let _ = windows
                    .patch(&w.name_any(), &PatchParams::default(), &Patch::Merge(&poke))
                    .await;
            }
        }
    }
    // Let the last Events arrive, then stop.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    while let Ok(line) = printer_rx.try_recv() {
        out(line);
    }
    handle.stop().await;
    for w in watchers {
        w.abort();
    }

    // Budgets, from the windows and the nodes they select.
    let nodes: Vec<Node> = list_all(&Api::<Node>::all(client)).await?;
    let all = list_all(&windows).await?;
    let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
    for w in &all {
        let selected = nodes
            .iter()
            .filter(|n| selector_matches(&w.spec.node_selector, n.labels()))
            .count();
        let entry = obs.windows.entry(w.name_any()).or_default();
        entry.selected = selected;
        entry.budget = crate::schedule::resolve_max_unavailable(
            &w.spec.max_unavailable_or_default(),
            selected,
        );
    }
    Ok(Summary {
        windows: obs.windows.clone(),
        virtual_span: clock.now() - scenario.start,
        real: real_start.elapsed(),
        events: obs.events,
    })
}

/// Every object of a kind, or an error naming the kind.
async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>, SimulateError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .map_err(|source| SimulateError::Api {
            operation: format!("listing {}", K::plural(&())),
            source,
        })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%a %Y-%m-%d %H:%M UTC").to_string()
}

/// Print MaintenanceWindow Events as they arrive and count them per window.
async fn watch_events(
    client: Client,
    clock: VirtualClock,
    observed: Arc<Mutex<Observed>>,
    out: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let events: Api<Event> = Api::all(client);
    let mut stream = watcher(events, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(Ok(event)) = stream.next().await {
        if event.involved_object.kind.as_deref() != Some("MaintenanceWindow") {
            continue;
        }
        let window = event.involved_object.name.clone().unwrap_or_default();
        let reason = event.reason.clone().unwrap_or_default();
        let count = event.count.unwrap_or(1);
        let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
        if !obs.seen_events.insert((event.name_any(), count)) {
            continue;
        }
        obs.events += 1;
        let w = obs.windows.entry(window.clone()).or_default();
        match reason.as_str() {
            "WindowOpened" => w.windows_opened += 1,
            "RoundCompleted" => w.rounds_completed += 1,
            "NodeMaintenanceStarted" => w.started += 1,
            "NodeReleased" => w.released += 1,
            "NodeFailed" => w.failed += 1,
            _ => {}
        }
        let message = event.message.clone().unwrap_or_default();
        let at = event
            .last_timestamp
            .as_ref()
            .map(from_time)
            .unwrap_or_else(|| clock.now());
        let _ = out.send(format!(
            "{}  {window:<20} {reason:<24} {message}",
            stamp(at)
        ));
    }
}

/// Track, per window, the most selected nodes unavailable (cordoned or NotReady) at once.
async fn watch_unavailability(client: Client, observed: Arc<Mutex<Observed>>) {
    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut stream = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(Ok(event)) = stream.next().await {
        match event {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                nodes.insert(n.name_any(), n);
            }
            watcher::Event::Delete(n) => {
                nodes.remove(&n.name_any());
            }
            _ => continue,
        }
        let Ok(list) = windows.list(&Default::default()).await else {
            continue;
        };
        let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
        for w in list.items {
            let unavailable = nodes
                .values()
                .filter(|n| selector_matches(&w.spec.node_selector, n.labels()))
                .filter(|n| !node_available(n))
                .count();
            let entry = obs.windows.entry(w.name_any()).or_default();
            entry.max_unavailable = entry.max_unavailable.max(unavailable);
        }
    }
}

fn node_available(node: &Node) -> bool {
    let schedulable = !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    schedulable && ready
}

/// Reboot a node `after` its window-generated NodeMaintenance succeeded, when that window
/// releases on reboot.
async fn reboot_agent(
    client: Client,
    reboot: tokio::sync::mpsc::UnboundedSender<String>,
    clock: VirtualClock,
    after: Duration,
) {
    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    let nms: Api<NodeMaintenance> = Api::all(client);
    let mut stream = watcher(nms, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut scheduled: BTreeSet<String> = BTreeSet::new();
    while let Some(Ok(nm)) = stream.next().await {
        let succeeded = nm.status.as_ref().and_then(|s| s.phase)
            == Some(crate::api::MaintenancePhase::Succeeded);
        let Some(window) = nm.labels().get(WINDOW_LABEL).cloned() else {
            continue;
        };
        if !succeeded
            || nm.metadata.deletion_timestamp.is_some()
            || !scheduled.insert(nm.uid().unwrap_or_default())
        {
            continue;
        }
        let on_reboot = windows
            .get(&window)
            .await
            .ok()
            .and_then(|w| w.spec.release.on_reboot)
            .unwrap_or(false);
        if !on_reboot {
            continue;
        }
        let reboot = reboot.clone();
        let node = nm.spec.node_name.clone();
        let delay = clock.real_duration(after);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = reboot.send(node);
        });
    }
}

/// Render the summary as a table.
pub fn render_summary(summary: &Summary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\nSummary: {} of virtual time in {:.1} s real, {} events\n",
        crate::schedule::format_duration(summary.virtual_span),
        summary.real.as_secs_f64(),
        summary.events
    ));
    out.push_str(&format!(
        "  {:<22} {:>8} {:>7} {:>8} {:>9} {:>7} {:>16}\n",
        "WINDOW", "OPENED", "ROUNDS", "STARTED", "RELEASED", "FAILED", "MAX-UNAVAILABLE"
    ));
    for (name, w) in &summary.windows {
        out.push_str(&format!(
            "  {:<22} {:>8} {:>7} {:>8} {:>9} {:>7} {:>16}\n",
            name,
            w.windows_opened,
            w.rounds_completed,
            w.started,
            w.released,
            w.failed,
            format!("{}/{} (of {})", w.max_unavailable, w.budget, w.selected)
        ));
    }
    out
}
