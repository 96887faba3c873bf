//! Running one scenario: set the cluster up, start two replicas, play the steps while the
//! observer checks every state, then stop the chaos and check that everything converges.

use super::observer::{Kind, Observer, Seen};
use super::operator::Operator;
use super::plan::{Action, POOL_LABEL, SCENARIO_LABEL, SPEED, Scenario};
use crate::backend::Backend;
use chrono::Duration as ChronoDuration;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use nmo::api::{MaintenanceWindow, NodeMaintenance, NodeMaintenanceSpec};
use nmo::clock::{Clock, VirtualClock};
use nmo::controller::lease::{LEASE_HOLDER, LEASE_NAMESPACE};
use nmo::controller::node::{DRAIN_TAINT, UNSCHEDULABLE_TAINT};
use nmo::sandbox::{Fault, FaultRule, NewPod, Sandbox};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the cluster gets to converge once the chaos stops (real time).
const SETTLE: Duration = Duration::from_secs(120);
const WRITES: [&str; 4] = ["create", "update", "patch", "delete"];

/// What a scenario did, for the summary.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub steps: usize,
    pub faults: u64,
    pub changes: u64,
    pub window_changes: u64,
    pub window_nms: u64,
    pub leader_changes: usize,
    pub gaps: u64,
    /// NodeMaintenances that began (had a phase) but have no BeginMaintenance Event: the
    /// operator was killed between the status write and the Event (sandbox only).
    pub begin_events_missing: u64,
    pub seconds: f64,
}

/// Where a scenario runs.
pub enum Target<'a> {
    Sandbox(&'a Sandbox),
    Real(&'a Backend),
}

/// The cluster of one scenario and the harness's hands on it.
struct Run<'a> {
    target: Target<'a>,
    scenario: &'a Scenario,
    client: Client,
    clock: VirtualClock,
    observer: Arc<Mutex<Observer>>,
    operator: Operator,
    log: Vec<String>,
}

/// Run a scenario on a sandbox of its own, with faults.
pub async fn on_sandbox(seed: u64) -> Result<Outcome, String> {
    let scenario = Scenario::generate(seed, true);
    let clock = VirtualClock::new(scenario.start, SPEED);
    let sandbox = Sandbox::builder()
        .speed(SPEED)
        .clock(Arc::new(clock.clone()))
        .fault_seed(seed)
        .start()
        .await
        .map_err(|e| format!("seed {seed}: sandbox: {e}"))?;
    sandbox.install_crds().expect("CRDs install");
    for ns in ["nmo-system", LEASE_NAMESPACE] {
        sandbox
            .apply_yaml(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
            ))
            .expect("namespace");
    }
    let result = drive(
        Target::Sandbox(&sandbox),
        &scenario,
        clock,
        sandbox.kubeconfig(),
    )
    .await;
    sandbox.shutdown().await;
    result
}

/// Run a scenario on a real control plane (shared, one scenario at a time), without faults.
pub async fn on_real(backend: &Backend, seed: u64) -> Result<Outcome, String> {
    let scenario = Scenario::generate(seed, false);
    let clock = VirtualClock::new(scenario.start, SPEED);
    backend.namespace(&scenario.id).await;
    backend.namespace(LEASE_NAMESPACE).await;
    let kubeconfig = std::fs::read_to_string(backend.kubeconfig()).expect("kubeconfig");
    drive(Target::Real(backend), &scenario, clock, kubeconfig).await
}

/// Retry an API call through injected faults (a person re-runs a failed kubectl).
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = String::new();
    for _ in 0..100 {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what}: kept failing: {last}"))
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn rv_of(o: &impl kube::Resource) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn drive(
    target: Target<'_>,
    scenario: &Scenario,
    clock: VirtualClock,
    kubeconfig: String,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let client = match &target {
        Target::Sandbox(s) => s.client().expect("client"),
        Target::Real(b) => b.client(),
    };
    let exact = matches!(target, Target::Sandbox(_));
    // How much later (real time) than the decision that made it a write may land, or a
    // change reach the operator's caches: a 429 is retried by the API client after about a
    // second, twice in a row now and then, and the machine is loaded.
    let slack = ChronoDuration::milliseconds((3000.0 * SPEED) as i64);
    let observer = Arc::new(Mutex::new(Observer::new(
        &scenario.id,
        scenario.windows.clone(),
        exact,
        slack,
    )));
    let namespace = match &target {
        Target::Sandbox(_) => "nmo-system".to_string(),
        Target::Real(_) => scenario.id.clone(),
    };
    let mut run = Run {
        operator: Operator::new(kubeconfig, &namespace, clock.clone()),
        target,
        scenario,
        client,
        clock,
        observer,
        log: Vec::new(),
    };
    let feed = run.follow().await;
    let result = run.play().await;
    let mut ticker_and_feed = feed;
    let outcome = match result {
        Ok(()) => run.settle().await,
        Err(e) => Err(e),
    };
    run.operator.kill_all();
    for t in ticker_and_feed.drain(..) {
        t.abort();
    }
    run.teardown().await;
    let mut obs = run.observer.lock().unwrap();
    obs.check_person_cordons();
    let mut violations = obs.violations.clone();
    if let Err(e) = &outcome {
        violations.push(e.clone());
    }
    if violations.is_empty() {
        let (faults, begin_events_missing) = match &run.target {
            Target::Sandbox(s) => {
                let began: std::collections::BTreeSet<String> = s
                    .list("v1", "Event")
                    .iter()
                    .filter(|e| e["reason"] == "BeginMaintenance")
                    .filter_map(|e| e["involvedObject"]["name"].as_str().map(str::to_string))
                    .collect();
                let missing = obs.begun.iter().filter(|n| !began.contains(*n)).count();
                (s.faults().injected(), missing as u64)
            }
            Target::Real(_) => (0, 0),
        };
        return Ok(Outcome {
            steps: scenario.steps.len(),
            faults,
            changes: obs.counters.changes,
            window_changes: obs.counters.window_changes,
            window_nms: obs.counters.window_nms,
            leader_changes: run
                .operator
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.ends_with(" leads"))
                .count(),
            gaps: obs.gaps,
            begin_events_missing,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let windows: Vec<String> = scenario
        .windows
        .iter()
        .map(|w| w.yaml(&scenario.id))
        .collect();
    Err(format!(
        "chaos scenario FAILED, seed {seed} on the {target} (replay: NMO_CHAOS_SEED={seed} \
         NMO_CHAOS_SCENARIOS=1{real})\nviolations:\n  {v}\nwindows:\n{w}\nstep log:\n  {log}\n\
         leader log:\n  {leaders}\nwindows at the end:\n  {statuses}\n",
        seed = scenario.seed,
        target = if exact {
            "sandbox"
        } else {
            "real control plane"
        },
        real = if exact {
            ""
        } else {
            " (the real-control-plane test adds 1000)"
        },
        v = violations.join("\n  "),
        w = windows.join("---\n"),
        log = run.log.join("\n  "),
        leaders = run.operator.log.lock().unwrap().join("\n  "),
        statuses = obs.window_statuses(),
    ))
}

impl Run<'_> {
    /// Feed the observer every state, and tick it for the time-based checks.
    async fn follow(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        match &self.target {
            Target::Sandbox(s) => {
                for (api_version, kind, k) in [
                    ("v1", "Node", Kind::Node),
                    (
                        "nodemaintenance.medik8s.io/v1beta1",
                        "NodeMaintenance",
                        Kind::Nm,
                    ),
                ] {
                    let mut observation = s.observe(api_version, kind).expect("observable");
                    {
                        let mut obs = self.observer.lock().unwrap();
                        for o in observation.objects.drain(..) {
                            let rv = o["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|r| r.parse().ok())
                                .unwrap_or(0);
                            obs.apply(
                                Seen {
                                    kind: k,
                                    deleted: false,
                                    rv,
                                    object: o,
                                },
                                self.clock.now(),
                            );
                        }
                    }
                    let (observer, clock) = (self.observer.clone(), self.clock.clone());
                    tasks.push(tokio::spawn(async move {
                        use nmo::sandbox::store::ChangeType;
                        use tokio::sync::broadcast::error::RecvError;
                        loop {
                            match observation.changes.recv().await {
                                Ok(change) => observer.lock().unwrap().apply(
                                    Seen {
                                        kind: k,
                                        deleted: change.kind == ChangeType::Deleted,
                                        rv: change.rv,
                                        object: (*change.object).clone(),
                                    },
                                    clock.now(),
                                ),
                                Err(RecvError::Lagged(_)) => {
                                    observer.lock().unwrap().gaps += 1;
                                }
                                Err(RecvError::Closed) => return,
                            }
                        }
                    }));
                }
            }
            Target::Real(_) => {
                tasks.push(self.watch::<Node>(Kind::Node));
                tasks.push(self.watch::<NodeMaintenance>(Kind::Nm));
            }
        }
        // The windows' status only goes into messages, so a watch does (through the faults).
        tasks.push(self.watch::<MaintenanceWindow>(Kind::Window));
        let (observer, clock, leading) = (
            self.observer.clone(),
            self.clock.clone(),
            self.operator.leading.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (count, since) = *leading.lock().unwrap();
                let mut obs = observer.lock().unwrap();
                if count > 1 {
                    let step = obs.step;
                    obs.violations
                        .push(format!("step {step}: {count} replicas lead at once"));
                }
                obs.check_abort(clock.now(), since);
            }
        }));
        tasks
    }

    fn watch<K>(&self, kind: Kind) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize
            + Send
            + Sync
            + 'static,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let (observer, clock) = (self.observer.clone(), self.clock.clone());
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            let mut listed = 0u32;
            while let Some(event) = stream.next().await {
                let (object, deleted) = match event {
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => (o, false),
                    Ok(watcher::Event::Delete(o)) => (o, true),
                    Ok(watcher::Event::Init) => {
                        listed += 1;
                        // A relist may skip states; the windows' feed only serves messages.
                        if listed > 1 && kind != Kind::Window {
                            observer.lock().unwrap().gaps += 1;
                        }
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => continue,
                    Err(_) => continue,
                };
                let rv = rv_of(&object);
                let object = serde_json::to_value(&object).expect("serialisable");
                observer.lock().unwrap().apply(
                    Seen {
                        kind,
                        deleted,
                        rv,
                        object,
                    },
                    clock.now(),
                );
            }
        })
    }

    fn note(&mut self, line: String) {
        let at = self.clock.now().format("%H:%M:%S");
        self.log.push(format!("[{at}] {line}"));
    }

    async fn add_node(&self, name: &str, pool: &str) {
        let labels = [
            (SCENARIO_LABEL, self.scenario.id.as_str()),
            (POOL_LABEL, pool),
        ];
        match &self.target {
            Target::Sandbox(s) => {
                s.add_node(name, &labels).expect("node added");
                for p in 0..2 {
                    s.create_pod(
                        NewPod::new(&format!("{name}-app-{p}-{}", self.log.len()))
                            .namespace(&self.scenario.id)
                            .on_node(name)
                            .replica_set("app")
                            .grace_period(5),
                    )
                    .expect("pod created");
                }
                s.create_pod(
                    NewPod::new(&format!("{name}-agent-{}", self.log.len()))
                        .namespace(&self.scenario.id)
                        .on_node(name)
                        .daemon_set("agent"),
                )
                .expect("daemon pod created");
            }
            Target::Real(b) => b.add_node(name, &labels).await,
        }
    }

    /// Set up, start two replicas and the windows, then play the steps.
    async fn play(&mut self) -> Result<(), String> {
        for (name, pool) in self.scenario.nodes.clone() {
            self.add_node(&name, pool).await;
        }
        if let Target::Real(b) = &self.target {
            b.replica_set(&self.scenario.id, "app", self.scenario.nodes.len(), 1)
                .await;
        }
        if let (Target::Sandbox(s), true) = (&self.target, self.scenario.faults) {
            // Writes fail one in ten (500, 409 and 429 mixed), reads one in fifty, a fifth
            // of the requests wait 20 ms, and watches end after one and a half seconds.
            let faults = s.faults();
            for fault in [
                Fault::Status(500),
                Fault::Status(409),
                Fault::TooManyRequests {
                    retry_after_secs: 1,
                },
            ] {
                faults
                    .add(FaultRule::new(fault).verbs(&WRITES).share(0.035))
                    .unwrap();
            }
            faults
                .add(
                    FaultRule::new(Fault::Status(500))
                        .verbs(&["get", "list"])
                        .share(0.02),
                )
                .unwrap();
            faults
                .add(FaultRule::new(Fault::latency(Duration::from_millis(20))).share(0.2))
                .unwrap();
            faults
                .add(
                    FaultRule::new(Fault::end_watch(Duration::from_millis(1500))).verbs(&["watch"]),
                )
                .unwrap();
        }
        for _ in 0..2 {
            let id = self.operator.start(false).await;
            self.note(format!("start {id}"));
        }
        let windows: Api<MaintenanceWindow> = Api::all(self.client.clone());
        for w in self.scenario.windows.clone() {
            let obj: MaintenanceWindow =
                serde_yaml::from_str(&w.yaml(&self.scenario.id)).expect("a window");
            retry("create window", || {
                let (windows, obj) = (windows.clone(), obj.clone());
                async move {
                    match windows.create(&PostParams::default(), &obj).await {
                        Err(e)
                            if is_code(&e, 409)
                                && windows.get_opt(&obj.name_any()).await?.is_some() =>
                        {
                            Ok(())
                        }
                        other => other.map(|_| ()),
                    }
                }
            })
            .await?;
            self.note(format!("window {} created", w.name));
        }
        for (i, step) in self.scenario.steps.clone().into_iter().enumerate() {
            self.observer.lock().unwrap().step = i + 1;
            let what = self.act(&step.action).await?;
            self.note(format!("step {}: {} -> {what}", i + 1, step.action));
            tokio::time::sleep(Duration::from_millis(step.pause_ms)).await;
        }
        Ok(())
    }

    async fn act(&mut self, action: &Action) -> Result<String, String> {
        let nms: Api<NodeMaintenance> = Api::all(self.client.clone());
        let nodes: Api<Node> = Api::all(self.client.clone());
        Ok(match action {
            Action::CreateNm { name, node } => {
                self.observer
                    .lock()
                    .unwrap()
                    .user_created
                    .insert(name.clone());
                let nm = NodeMaintenance::new(
                    name,
                    NodeMaintenanceSpec {
                        node_name: node.clone(),
                        reason: Some("chaos: a person".into()),
                    },
                );
                retry("create NodeMaintenance", || {
                    let (nms, nm) = (nms.clone(), nm.clone());
                    async move {
                        match nms.create(&PostParams::default(), &nm).await {
                            Err(e)
                                if is_code(&e, 409)
                                    && nms.get_opt(&nm.name_any()).await?.is_some() =>
                            {
                                Ok(())
                            }
                            other => other.map(|_| ()),
                        }
                    }
                })
                .await?;
                "created".into()
            }
            Action::DeleteNm { pick } => {
                let present: Vec<String> = self
                    .observer
                    .lock()
                    .unwrap()
                    .nms()
                    .iter()
                    .filter(|(_, nm)| !nm["metadata"]["deletionTimestamp"].is_string())
                    .map(|(n, _)| n.clone())
                    .collect();
                if present.is_empty() {
                    return Ok("none to delete".into());
                }
                let name = present[(*pick % present.len() as u64) as usize].clone();
                self.observer
                    .lock()
                    .unwrap()
                    .user_deleted
                    .insert(name.clone());
                retry("delete NodeMaintenance", || {
                    let (nms, name) = (nms.clone(), name.clone());
                    async move {
                        match nms.delete(&name, &DeleteParams::default()).await {
                            Err(e) if is_code(&e, 404) => Ok(()),
                            other => other.map(|_| ()),
                        }
                    }
                })
                .await?;
                format!("deleted {name}")
            }
            Action::NodeDown(n) | Action::NodeUp(n) => {
                let ready = matches!(action, Action::NodeUp(_));
                match &self.target {
                    Target::Sandbox(s) => s.set_node_ready(n, ready).expect("readiness"),
                    Target::Real(b) => b.set_node_ready(n, ready).await,
                }
                "done".into()
            }
            Action::Reboot(n) => {
                match &self.target {
                    Target::Sandbox(s) => s.reboot_node(n).expect("reboot"),
                    Target::Real(b) => b.reboot_node(n).await,
                }
                "done".into()
            }
            Action::AddNode { name, pool } => {
                self.add_node(name, pool).await;
                "joined".into()
            }
            Action::RemoveNode(n) => {
                self.observer
                    .lock()
                    .unwrap()
                    .removed_nodes
                    .insert(n.clone());
                match &self.target {
                    Target::Sandbox(s) => s.remove_node(n).expect("node removed"),
                    Target::Real(b) => b.remove_node(n).await,
                }
                "left".into()
            }
            Action::Cordon(n) | Action::Uncordon(n) => {
                let cordon = matches!(action, Action::Cordon(_));
                // As kubectl: read, and write only if it changes something, guarded by the
                // resourceVersion read (a conflict is read again).
                for _ in 0..100 {
                    let node = match nodes.get(n).await {
                        Ok(node) => node,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let now = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false);
                    if now == cordon {
                        return Ok(format!(
                            "already {}",
                            if cordon { "cordoned" } else { "uncordoned" }
                        ));
                    }
                    let patch = json!({
                        "metadata": {"resourceVersion": node.resource_version()},
                        "spec": {"unschedulable": cordon},
                    });
                    let pp = PatchParams {
                        field_manager: Some("kubectl-cordon".into()),
                        ..Default::default()
                    };
                    match nodes.patch(n, &pp, &Patch::Merge(&patch)).await {
                        Ok(written) => {
                            let rv = rv_of(&written);
                            let mut obs = self.observer.lock().unwrap();
                            if cordon {
                                obs.person_cordoned(n, rv);
                            } else {
                                obs.person_uncordoned(n, rv);
                            }
                            return Ok(format!("written at resourceVersion {rv}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                return Err(format!("cordon={cordon} of {n}: kept failing"));
            }
            Action::KillLeader => match self.operator.kill_leader() {
                Some(id) => format!("killed {id}"),
                None => "no leader".into(),
            },
            Action::KillReplica { pick } => match self.operator.kill(*pick) {
                Some(id) => format!("killed {id}"),
                None => "no replica".into(),
            },
            Action::StartReplica { reuse_identity } => {
                if self.operator.running() >= 2 {
                    "two run already".into()
                } else {
                    format!("started {}", self.operator.start(*reuse_identity).await)
                }
            }
            Action::LoseLeaderLease => {
                let Target::Sandbox(s) = &self.target else {
                    return Ok("not on this backend".into());
                };
                let id = s
                    .faults()
                    .add(
                        FaultRule::new(Fault::Status(500))
                            .verbs(&["update", "patch"])
                            .resources(&["leases"])
                            .names(&[nmo::controller::leader::LEADER_LEASE_NAME]),
                    )
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(4000)).await;
                s.faults().remove(id);
                "renewals failed for 4 s".into()
            }
            Action::ExpireHistory => {
                if let Target::Sandbox(s) = &self.target {
                    s.expire_watch_history();
                }
                "done".into()
            }
            Action::CloseWatches => {
                if let Target::Sandbox(s) = &self.target {
                    s.close_watches();
                }
                "done".into()
            }
        })
    }

    /// Stop the chaos and check that the cluster converges: faults off, every node Ready, a
    /// leader, the windows suspended and the person's NodeMaintenances deleted; then every
    /// NodeMaintenance goes, and the nodes are left clean and the leases released.
    async fn settle(&mut self) -> Result<(), String> {
        self.observer.lock().unwrap().step = self.scenario.steps.len() + 1;
        if let Target::Sandbox(s) = &self.target {
            s.faults().clear();
        }
        let present: Vec<String> = self
            .observer
            .lock()
            .unwrap()
            .nodes()
            .keys()
            .cloned()
            .collect();
        for n in &present {
            match &self.target {
                Target::Sandbox(s) => s.set_node_ready(n, true).expect("readiness"),
                Target::Real(b) => b.set_node_ready(n, true).await,
            }
        }
        if self.operator.running() == 0 {
            let id = self.operator.start(false).await;
            self.note(format!("settle: start {id}"));
        }
        let windows: Api<MaintenanceWindow> = Api::all(self.client.clone());
        for w in &self.scenario.windows {
            retry("suspend window", || {
                let windows = windows.clone();
                async move {
                    windows
                        .patch(
                            &w.name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"suspend": true}})),
                        )
                        .await
                }
            })
            .await?;
        }
        let nms: Api<NodeMaintenance> = Api::all(self.client.clone());
        let adhoc: Vec<String> = {
            let obs = self.observer.lock().unwrap();
            obs.nms()
                .keys()
                .filter(|n| obs.user_created.contains(*n))
                .cloned()
                .collect()
        };
        for name in adhoc {
            self.observer
                .lock()
                .unwrap()
                .user_deleted
                .insert(name.clone());
            retry("delete NodeMaintenance", || {
                let (nms, name) = (nms.clone(), name.clone());
                async move {
                    match nms.delete(&name, &DeleteParams::default()).await {
                        Err(e) if is_code(&e, 404) => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .await?;
        }
        self.note(
            "settle: chaos stopped, windows suspended, ad-hoc NodeMaintenances deleted".into(),
        );
        let deadline = Instant::now() + SETTLE;
        loop {
            let left: Vec<String> = {
                let obs = self.observer.lock().unwrap();
                obs.nms()
                    .iter()
                    .map(|(n, nm)| format!("{n} {}", nm["status"]))
                    .collect()
            };
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no convergence: NodeMaintenances still there {}s after the chaos stopped: {left:#?}",
                    SETTLE.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let dirty = self.dirty_nodes().await;
            if dirty.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nodes left with nmo's marks after every NodeMaintenance was gone: {dirty:#?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.note("settle: converged".into());
        Ok(())
    }

    /// The nodes that still carry a mark of nmo (or a cordon no person asked for), and the
    /// node leases still held.
    async fn dirty_nodes(&self) -> Vec<String> {
        let (mut dirty, names) = self.marked_nodes();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        if let Ok(list) = leases.list(&ListParams::default()).await {
            for l in list.items {
                let node = l.name_any().trim_start_matches("node-").to_string();
                let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                if names.contains(&node) && holder == LEASE_HOLDER {
                    dirty.push(format!("lease of {node} still held"));
                }
            }
        }
        dirty
    }

    /// The nodes with marks, and the names of all nodes.
    fn marked_nodes(&self) -> (Vec<String>, Vec<String>) {
        let obs = self.observer.lock().unwrap();
        let mut dirty = Vec::new();
        for (name, node) in obs.nodes() {
            let node: Node = serde_json::from_value(node.clone()).expect("a Node");
            let mut marks = Vec::new();
            let cordon_ok = obs.person_ever_cordoned(name);
            let spec = node.spec.clone().unwrap_or_default();
            if spec.unschedulable == Some(true) && !cordon_ok {
                marks.push("unschedulable".to_string());
            }
            if spec.unschedulable != Some(true) && obs.person_cordon_in_force(name) {
                marks.push("uncordoned, but a person's cordon is in force".to_string());
            }
            for t in spec.taints.unwrap_or_default() {
                if t.key == DRAIN_TAINT || (t.key == UNSCHEDULABLE_TAINT && !cordon_ok) {
                    marks.push(format!("taint {}", t.key));
                }
            }
            for k in node.labels().keys().chain(node.annotations().keys()) {
                if k.starts_with("remediation.medik8s.io/")
                    || k.starts_with("nodemaintenance.medik8s.io/")
                {
                    marks.push(k.clone());
                }
            }
            if !marks.is_empty() {
                dirty.push(format!("{name}: {marks:?}"));
            }
        }
        let names: Vec<String> = obs.nodes().keys().cloned().collect();
        (dirty, names)
    }

    /// Leave a shared (real) cluster as it was: the scenario's windows, nodes and
    /// NodeMaintenances go.
    async fn teardown(&mut self) {
        let Target::Real(b) = &self.target else {
            return;
        };
        let windows: Api<MaintenanceWindow> = Api::all(self.client.clone());
        for w in &self.scenario.windows {
            let _ = windows.delete(&w.name, &DeleteParams::default()).await;
        }
        let nms: Api<NodeMaintenance> = Api::all(self.client.clone());
        let left: Vec<String> = self
            .observer
            .lock()
            .unwrap()
            .nms()
            .keys()
            .cloned()
            .collect();
        for n in left {
            let _ = nms.delete(&n, &DeleteParams::default()).await;
            let _ = nms
                .patch(
                    &n,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
        let nodes: Vec<String> = self
            .observer
            .lock()
            .unwrap()
            .nodes()
            .keys()
            .cloned()
            .collect();
        for n in nodes {
            b.remove_node(&n).await;
        }
        let _ = Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(
            self.client.clone(),
            &self.scenario.id,
        )
        .delete("app", &DeleteParams::default())
        .await;
    }
}
