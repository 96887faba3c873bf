//! `nmo simulate`: the real controllers against the in-process sandbox, on a virtual clock.
//!
//! A scenario is: a seeded cluster (generated workers and GPU nodes with pods and a PDB, or a
//! snapshot of a real cluster), the manifests to apply (by default the embedded examples'
//! MaintenanceWindows), and a virtual time span. The clock runs up to `speed` times faster
//! than real time while anything is happening, and jumps ahead to just before the next window
//! opening when nothing is (no NodeMaintenance exists and no window is open), so a week of
//! windows plays out in seconds. A governor ([`pace`]) holds it below `speed` whenever the
//! controllers lag, so a machine that cannot keep up makes the run slower, never wrong: no
//! node fails its `nodeTimeout` because the simulator ran ahead of the controllers. The
//! report gives the effective speed. Every MaintenanceWindow Event is printed as it happens, stamped with
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
use report::Observations;
use std::collections::BTreeMap;
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

pub mod pace;
pub mod progress;
pub mod report;
pub mod seed;

pub use pace::{PaceConfig, PaceStats};
pub use progress::{Display, LiveSpeed, LiveStatus, LiveWindow};
pub use report::{ClockReport, Report, render_report};
pub use seed::{GPU_LABEL, GeneratedNode, WORKER_LABEL};

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
    /// Generated nodes (see [`seed`]), with their pods, DaemonSets and PDBs.
    Generated(Vec<GeneratedNode>),
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

    /// A node goes down for its reboot: NotReady until [`Target::reboot_node`].
    async fn shut_down_node(&self, node: &str) -> bool {
        match self {
            Target::Sandbox(s) => s.set_node_ready(node, false).is_ok(),
            Target::Cluster { simulator, .. } => simulator.set_ready(node, false).await.is_ok(),
        }
    }
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
    let Seed::Generated(nodes) = seed else {
        return Err(SimulateError::Unsupported(
            "--snapshot cannot seed a cluster given by --cluster-kubeconfig; use generated nodes (--nodes, --gpu-nodes)".into(),
        ));
    };
    for node in nodes {
        let labels: Vec<(&str, &str)> = node
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        simulator
            .register_node(&node.name, &labels)
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
        Seed::Generated(nodes) => {
            for (i, node) in nodes.iter().enumerate() {
                let labels: Vec<(&str, &str)> = node
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                sandbox.add_node(&node.name, &labels)?;
                for pod in seed::pods_for_node(i) {
                    let new = NewPod::new("")
                        .namespace(pod.namespace)
                        .on_node(&node.name)
                        .label("app", pod.app)
                        .grace_period(pod.grace);
                    sandbox.create_pod(match pod.owner {
                        seed::Owner::ReplicaSet => new.replica_set(pod.app),
                        seed::Owner::DaemonSet => new.daemon_set(pod.app),
                    })?;
                }
                for _ in 0..node.filler_pods {
                    sandbox.create_pod(
                        NewPod::new("")
                            .namespace("apps")
                            .on_node(&node.name)
                            .label("app", "filler")
                            .grace_period(30)
                            .replica_set("filler"),
                    )?;
                }
            }
            if !nodes.is_empty() {
                sandbox.apply_yaml(seed::PDBS)?;
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
    /// Virtual time span to play at most.
    pub span: Duration,
    /// Stop as soon as every window has finished a round (or stalled) and nothing is in
    /// flight, instead of playing the whole span.
    pub until_rounds_done: bool,
    /// Virtual seconds per real second while something is happening.
    pub speed: f64,
    /// How long after a drain succeeded the simulated node agent reboots the node.
    pub reboot_after: Duration,
    /// How long a reboot takes: the node is NotReady that long, then Ready with a new bootID.
    pub reboot_time: Duration,
    /// How long the simulated person keeps an ad-hoc NodeMaintenance after its drain
    /// succeeded, before deleting it (the work is done).
    pub ad_hoc_hold: Duration,
    /// Controller settings.
    pub controllers: ControllerConfig,
}

/// What the simulated node agent and person do, sent to the run's loop.
#[derive(Clone, Debug)]
enum AgentAction {
    /// The node goes down for a reboot.
    ShutDown(String),
    /// The node is back: new bootID, Ready.
    BootUp(String),
    /// The person deletes an ad-hoc NodeMaintenance.
    Delete { nm: String, node: String },
}

/// Run a scenario on an already seeded target whose manifests are applied. Shows progress on
/// `display` and returns the report.
pub async fn run_scenario(
    target: &Target,
    clock: &VirtualClock,
    scenario: &Scenario,
    display: &mut dyn Display,
) -> Result<Report, SimulateError> {
    let real_start = std::time::Instant::now();
    let client = target.client()?;
    // The clock may have been held while the cluster was seeded; from here it plays, at the
    // pace the governor allows (see [`pace`]).
    clock.set_pace(1.0);
    let played_before = clock.played();
    let pace_stats = Arc::new(PaceStats::default());
    let governor = {
        let clock = clock.clone();
        let stats = pace_stats.clone();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        tokio::spawn(async move {
            pace::govern(clock, PaceConfig::default(), &stats, || {
                let namespaces = namespaces.clone();
                async move {
                    let _ = namespaces.get_opt("default").await;
                }
            })
            .await
        })
    };
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
    let observed = Arc::new(Mutex::new(Observations::default()));
    let (printer_tx, mut printer_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (agent_tx, mut agent_rx) = tokio::sync::mpsc::unbounded_channel::<AgentAction>();
    // Agent actions scheduled and not yet done: the clock does not skip past them.
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watchers = vec![
        tokio::spawn(watch_events(
            client.clone(),
            clock.clone(),
            observed.clone(),
            printer_tx.clone(),
        )),
        tokio::spawn(watch_maintenances(
            client.clone(),
            clock.clone(),
            observed.clone(),
            Agent {
                tx: agent_tx,
                pending: pending.clone(),
                scenario: scenario.clone(),
            },
        )),
        tokio::spawn(watch_unavailability(
            client.clone(),
            clock.clone(),
            observed.clone(),
        )),
    ];

    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    let nms: Api<NodeMaintenance> = Api::all(client.clone());
    let mut tick = 0u64;
    let mut rounds_seen: BTreeMap<String, bool> = BTreeMap::new();
    while clock.now() < end {
        while let Ok(line) = printer_rx.try_recv() {
            display.line(line);
        }
        while let Ok(action) = agent_rx.try_recv() {
            let now = stamp(clock.now());
            let line = match &action {
                AgentAction::ShutDown(node) => target
                    .shut_down_node(node)
                    .await
                    .then(|| format!("{now}  {node:<20} rebooting (NotReady)")),
                AgentAction::BootUp(node) => target
                    .reboot_node(node)
                    .await
                    .then(|| format!("{now}  {node:<20} rebooted: new bootID, Ready")),
                AgentAction::Delete { nm, node } => nms
                    .delete(nm, &Default::default())
                    .await
                    .is_ok()
                    .then(|| {
                        format!("{now}  {node:<20} ad-hoc NodeMaintenance {nm} deleted: the work is done")
                    }),
            };
            pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(line) = line {
                display.line(line);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        let all_nms = list_all(&nms).await?;
        let all = list_all(&windows).await?;
        {
            let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
            for w in &all {
                obs.window_status(w);
            }
        }
        let mut live = live_status(clock.now(), &all, &all_nms, &observed);
        live.speed = Some(LiveSpeed {
            now: (scenario.speed * clock.pace()).round() as u64,
            overall: pace::effective_speed(clock.played() - played_before, real_start.elapsed())
                .round() as u64,
            nominal: scenario.speed.round() as u64,
        });
        display.status(&live);
        for w in &all {
            let Some(r) = w.status.as_ref().and_then(|s| s.round.as_ref()) else {
                continue;
            };
            if r.finished.is_some() || r.stalled_at.is_some() {
                rounds_seen.insert(w.name_any(), true);
            }
        }
        // In flight: a window's node, an ad-hoc NodeMaintenance still draining, or an agent
        // action still to come.
        // (A Failed ad-hoc one, say for a node that does not exist, is as stable as a
        // Succeeded one.)
        let in_flight = all_nms.iter().any(|nm| {
            nm.labels().contains_key(WINDOW_LABEL)
                || matches!(
                    nm.status.as_ref().and_then(|s| s.phase),
                    None | Some(crate::api::MaintenancePhase::Running)
                )
        }) || pending.load(std::sync::atomic::Ordering::SeqCst) > 0;
        if scenario.until_rounds_done
            && !in_flight
            && !all.is_empty()
            && all.iter().all(|w| {
                rounds_seen.contains_key(&w.name_any())
                    || w.spec.suspend == Some(true)
                    || w.spec.dry_run == Some(true)
            })
        {
            display.line(format!(
                "{}  … every window finished a round; stopping",
                stamp(clock.now())
            ));
            break;
        }
        if in_flight {
            continue;
        }
        // Idle: nothing in flight, and every window either closed or done with its round
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
                display.line(line);
            }
            clock.advance(target - now);
            display.line(format!(
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
        display.line(line);
    }
    let finished_at = clock.now();
    governor.abort();
    clock.set_limit(None);
    let played = clock.played() - played_before;
    handle.stop().await;
    for w in watchers {
        w.abort();
    }
    display.finish();

    let nodes: Vec<Node> = list_all(&Api::<Node>::all(client)).await?;
    let all = list_all(&windows).await?;
    let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
    for w in &all {
        obs.window_status(w);
    }
    let real = real_start.elapsed();
    let mut report = report::build_report(&obs, &all, &nodes, (scenario.start, finished_at), real);
    report.clock = ClockReport::new(scenario.speed, played, real, &pace_stats.summary());
    Ok(report)
}

/// The live display's view of the windows and NodeMaintenances.
fn live_status(
    now: DateTime<Utc>,
    windows: &[MaintenanceWindow],
    nms: &[NodeMaintenance],
    observed: &Mutex<Observations>,
) -> LiveStatus {
    let live_windows = windows
        .iter()
        .map(|w| {
            let s = w.status.clone().unwrap_or_default();
            let open = s.window.as_deref() == Some("open");
            let r = s.round.clone().unwrap_or_default();
            LiveWindow {
                name: w.name_any(),
                state: if w.spec.suspend == Some(true) {
                    "suspended".into()
                } else if open {
                    "open".into()
                } else {
                    "closed".into()
                },
                until: if open {
                    s.current_window.as_ref().map(|c| from_time(&c.end))
                } else {
                    s.next_window.as_ref().map(|n| from_time(&n.start))
                },
                round: r.number,
                done: r.completed + r.failed,
                total: r.total,
                in_progress: r.in_progress,
                finished: r.finished.is_some(),
            }
        })
        .collect();
    let obs = observed.lock().unwrap_or_else(|e| e.into_inner());
    let mut blocked = Vec::new();
    for nm in nms {
        if let Some(pdb) = nm
            .status
            .as_ref()
            .and_then(|s| s.last_error.as_deref())
            .and_then(report::blocking_pdb)
        {
            blocked.push((nm.spec.node_name.clone(), pdb));
        }
    }
    drop(obs);
    let mut in_maintenance: Vec<String> = nms.iter().map(|nm| nm.spec.node_name.clone()).collect();
    in_maintenance.sort();
    in_maintenance.dedup();
    LiveStatus {
        now: Some(now),
        windows: live_windows,
        in_maintenance,
        blocked,
        speed: None,
    }
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
    observed: Arc<Mutex<Observations>>,
    out: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let events: Api<Event> = Api::all(client);
    let mut stream = watcher(events, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = stream.next().await {
        // The watcher retries with backoff; an error is one failed attempt, not the end.
        let Ok(event) = event else { continue };
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
        let c = obs.counts.entry(window.clone()).or_default();
        match reason.as_str() {
            "WindowOpened" => c.opened += 1,
            "RoundCompleted" => c.rounds_completed += 1,
            "NodeMaintenanceStarted" => c.started += 1,
            "NodeReleased" => c.released += 1,
            "NodeFailed" => c.failed += 1,
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

/// Track node availability: per window, the most selected nodes unavailable (cordoned or
/// NotReady) at once; per node, how long it stayed unavailable.
async fn watch_unavailability(
    client: Client,
    clock: VirtualClock,
    observed: Arc<Mutex<Observations>>,
) {
    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut selectors: Vec<MaintenanceWindow> = Vec::new();
    let mut refreshed: Option<std::time::Instant> = None;
    let mut stream = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        // The watcher retries with backoff; an error is one failed attempt, not the end.
        let Ok(event) = event else { continue };
        let now = clock.now();
        match event {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                observed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .node_availability(&n.name_any(), node_available(&n), now);
                nodes.insert(n.name_any(), n);
            }
            watcher::Event::Delete(n) => {
                nodes.remove(&n.name_any());
            }
            _ => continue,
        }
        // The windows change rarely and nodes often (1,000 nodes make thousands of events):
        // list them at most every 200 ms, not once per node event.
        if refreshed.is_none_or(|t: std::time::Instant| t.elapsed().as_millis() >= 200)
            && let Ok(list) = windows.list(&Default::default()).await
        {
            selectors = list.items;
            refreshed = Some(std::time::Instant::now());
        }
        let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
        for w in &selectors {
            let unavailable = nodes
                .values()
                .filter(|n| selector_matches(&w.spec.node_selector, n.labels()))
                .filter(|n| !node_available(n))
                .count();
            let peak = obs.peak_unavailable.entry(w.name_any()).or_default();
            *peak = (*peak).max(unavailable);
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

/// The simulated node agent and person: where their actions go, and their timing.
struct Agent {
    tx: tokio::sync::mpsc::UnboundedSender<AgentAction>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    scenario: Scenario,
}

impl Agent {
    /// Send `action` after `after` of virtual time. The clock's pace may change meanwhile
    /// (see [`pace`]): a sleep computed at full speed ends at or before the instant, so the
    /// clock is read again until it is reached.
    fn schedule(&self, clock: &VirtualClock, after: Duration, action: AgentAction) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let at = clock.now() + after;
        let clock = clock.clone();
        let tx = self.tx.clone();
        let pending = self.pending.clone();
        tokio::spawn(async move {
            loop {
                let left = at - clock.now();
                if left <= Duration::zero() {
                    break;
                }
                // At least 10 ms: while the clock is held, a sleep computed at full speed
                // is short, and hundreds of pending actions must not spin.
                tokio::time::sleep(
                    clock
                        .real_duration(left)
                        .max(std::time::Duration::from_millis(10)),
                )
                .await;
            }
            if tx.send(action).is_err() {
                pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
}

/// Record every NodeMaintenance (start, drain, release, the PDBs that blocked it), and play
/// what happens around a drained node: the node agent reboots it `reboot_after` later (NotReady
/// for `reboot_time`, then Ready with a new bootID), and for an ad-hoc NodeMaintenance the
/// person who made it deletes it `ad_hoc_hold` after the drain.
async fn watch_maintenances(
    client: Client,
    clock: VirtualClock,
    observed: Arc<Mutex<Observations>>,
    agent: Agent,
) {
    let nms: Api<NodeMaintenance> = Api::all(client);
    let mut stream = watcher(nms, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        // The watcher retries with backoff; an error is one failed attempt, not the end.
        let Ok(event) = event else { continue };
        let now = clock.now();
        let (nm, deleted) = match event {
            watcher::Event::Apply(nm) | watcher::Event::InitApply(nm) => (nm, false),
            watcher::Event::Delete(nm) => (nm, true),
            _ => continue,
        };
        let uid = nm.uid().unwrap_or_default();
        let node = nm.spec.node_name.clone();
        let succeeded = nm.status.as_ref().and_then(|s| s.phase)
            == Some(crate::api::MaintenancePhase::Succeeded);
        let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
        let m = obs
            .maintenances
            .entry(uid)
            .or_insert_with(|| report::Maintenance {
                name: nm.name_any(),
                window: nm.labels().get(WINDOW_LABEL).cloned(),
                node: node.clone(),
                // Virtual time: a real API server stamps creationTimestamp with the wall clock.
                started: Some(now),
                ..Default::default()
            });
        if deleted {
            m.released.get_or_insert(now);
            continue;
        }
        if let Some(pdb) = nm
            .status
            .as_ref()
            .and_then(|s| s.last_error.as_deref())
            .and_then(report::blocking_pdb)
        {
            m.blocked_by.insert(pdb);
        }
        if !succeeded || nm.metadata.deletion_timestamp.is_some() || m.drained.is_some() {
            continue;
        }
        m.drained = Some(now);
        let ad_hoc = m.window.is_none();
        drop(obs);
        let s = &agent.scenario;
        agent.schedule(&clock, s.reboot_after, AgentAction::ShutDown(node.clone()));
        agent.schedule(
            &clock,
            s.reboot_after + s.reboot_time,
            AgentAction::BootUp(node.clone()),
        );
        if ad_hoc {
            agent.schedule(
                &clock,
                s.ad_hoc_hold,
                AgentAction::Delete {
                    nm: nm.name_any(),
                    node,
                },
            );
        }
    }
}
