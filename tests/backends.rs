//! The same scenarios on both backends: the sandbox, and a real kube-apiserver with
//! kube-controller-manager (`tests/control-plane/`) and the kubelet simulator. kubectl as a
//! user types it; the NodeMaintenance flow with a PDB; restore of a pre-cordoned node; a
//! MaintenanceWindow rolling round with budget 2; deleting a window garbage-collects its
//! NodeMaintenances; the CRDs' CEL rules through kubectl.
//!
//! One test per backend runs every scenario on one cluster (a control plane starts once per
//! test file); each scenario uses nodes and namespaces of its own. kubectl must be on the
//! PATH and the control plane built (`tests/control-plane/build`): without them these fail.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/real_cluster.rs"]
mod real_cluster;

use backend::{Backend, eventually, names};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nmo::api::{
    ConditionType, MaintenancePhase, MaintenanceWindow, NodeMaintenance, NodeMaintenanceSpec,
    WINDOW_LABEL,
};
use nmo::controller::ControllerConfig;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_on_the_sandbox() {
    every_scenario(Backend::sandbox().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_on_a_real_control_plane() {
    every_scenario(Backend::real().await).await;
}

async fn every_scenario(b: Backend) {
    let started = Instant::now();
    let mut times = Vec::new();
    macro_rules! scenario {
        ($name:ident) => {{
            let t = Instant::now();
            $name(&b).await;
            times.push(format!(
                "{}: {:.1}s",
                stringify!($name),
                t.elapsed().as_secs_f64()
            ));
        }};
    }
    scenario!(kubectl_applies_crds_and_examples_client_side_and_server_side);
    scenario!(kubectl_get_shows_the_printer_columns_of_nm_and_mw);
    scenario!(kubectl_apply_of_a_window_that_breaks_a_cel_rule_fails_with_its_message);
    scenario!(kubectl_wait_sees_a_condition_set_on_a_cr);
    scenario!(kubectl_delete_waits_for_the_finalizer_to_go);
    scenario!(kubectl_cordon_shows_scheduling_disabled);
    scenario!(kubectl_drain_evicts_and_waits_on_a_pdb_until_it_allows_a_disruption);
    // The examples leave; the controllers run from here on.
    b.kubectl_ok(&["delete", "-f", &repo("examples/"), "--wait=false"])
        .await;
    scenario!(a_node_maintenance_drains_around_a_pdb_and_its_deletion_restores_the_node);
    scenario!(a_node_cordoned_before_the_maintenance_is_still_cordoned_after_it);
    scenario!(a_rolling_round_of_four_nodes_never_has_more_than_two_in_maintenance);
    scenario!(deleting_a_window_garbage_collects_its_node_maintenances_and_restores_nodes);
    println!(
        "{} backend: every scenario in {:.1}s\n  {}",
        b.name,
        started.elapsed().as_secs_f64(),
        times.join("\n  ")
    );
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// The header and rows of `kubectl get` output, split on runs of spaces.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Quick retries, as the other integration tests use.
fn config() -> ControllerConfig {
    let mut config = ControllerConfig::default();
    let nm = &mut config.node_maintenance;
    nm.lease_retry = Duration::from_millis(300);
    nm.error_retry = Duration::from_millis(300);
    nm.drain.retry_initial = Duration::from_millis(200);
    nm.drain.retry_max = Duration::from_secs(1);
    config
}

// ----- kubectl, as a user types it -----

async fn kubectl_applies_crds_and_examples_client_side_and_server_side(b: &Backend) {
    let out = b.kubectl_ok(&["apply", "-f", &repo("crds/")]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/nodemaintenances.nodemaintenance.medik8s.io created"),
        "{}: {out}",
        b.name
    );
    b.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ])
    .await;
    let out = b.kubectl_ok(&["apply", "-f", &repo("examples/")]).await;
    assert!(
        out.contains("maintenancewindow.nodemaintenance.medik8s.io/weekly-workers created"),
        "{}: {out}",
        b.name
    );
    assert!(
        out.contains("nodemaintenance.nodemaintenance.medik8s.io/worker-3-disk-swap created"),
        "{}: {out}",
        b.name
    );
    let out = b.kubectl_ok(&["apply", "-f", &repo("examples/")]).await;
    assert!(
        out.contains("maintenancewindow.nodemaintenance.medik8s.io/weekly-workers unchanged"),
        "{}: {out}",
        b.name
    );
    let dir = tempfile::tempdir().unwrap();
    let changed = std::fs::read_to_string(repo("examples/weekly-workers-berlin.yaml"))
        .unwrap()
        .replace("Weekly OS patching", "Weekly kernel patching");
    let file = dir.path().join("w.yaml");
    std::fs::write(&file, changed).unwrap();
    let out = b
        .kubectl_ok(&["apply", "-f", &file.display().to_string()])
        .await;
    assert!(
        out.contains("weekly-workers configured"),
        "{}: {out}",
        b.name
    );
    let reason = weekly_reason(b).await;
    assert_eq!(reason, "Weekly kernel patching", "{}", b.name);
    let out = b
        .kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &repo("examples/"),
        ])
        .await;
    assert!(
        out.contains("weekly-workers serverside-applied"),
        "{}: {out}",
        b.name
    );
    let reason = weekly_reason(b).await;
    assert_eq!(reason, "Weekly OS patching", "{}", b.name);
    let managers = b
        .kubectl_ok(&[
            "get",
            "mw",
            "weekly-workers",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(managers.contains("kubectl"), "{}: {managers}", b.name);
}

/// `spec.reason` of the weekly example, as kubectl reads it.
async fn weekly_reason(b: &Backend) -> String {
    b.kubectl_ok(&[
        "get",
        "mw",
        "weekly-workers",
        "-o",
        "jsonpath={.spec.reason}",
    ])
    .await
}

async fn kubectl_get_shows_the_printer_columns_of_nm_and_mw(b: &Backend) {
    let mws: Api<MaintenanceWindow> = Api::all(b.client());
    let status = json!({"status": {"progress": "1/4", "conditions": [{"type": "Ready", "status": "True",
        "reason": "Idle", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    mws.patch_status(
        "weekly-workers",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .unwrap();
    let out = b.kubectl_ok(&["get", "mw"]).await;
    let r = rows(&out);
    assert_eq!(
        r[0],
        [
            "NAME", "SCHEDULE", "TIMEZONE", "WINDOW", "NEXT", "PROGRESS", "READY", "AGE"
        ],
        "{}: {out}",
        b.name
    );
    let weekly = r.iter().find(|row| row[0] == "weekly-workers").unwrap();
    assert_eq!(
        &weekly[1..3],
        ["0 2 * * SAT", "Europe/Berlin"],
        "{}: {out}",
        b.name
    );
    assert!(
        weekly.contains(&"1/4".to_string()) && weekly.contains(&"True".to_string()),
        "{}: {out}",
        b.name
    );
    let out = b.kubectl_ok(&["get", "nm"]).await;
    let r = rows(&out);
    assert_eq!(
        r[0],
        ["NAME", "NODE", "PHASE", "PROGRESS", "REASON", "AGE"],
        "{}: {out}",
        b.name
    );
    assert_eq!(
        &r[1][0..2],
        ["worker-3-disk-swap", "worker-3"],
        "{}: {out}",
        b.name
    );
    assert!(
        weekly.last().unwrap().ends_with('s'),
        "{}: the age column: {out}",
        b.name
    );
    b.kubectl_ok(&["get", "nodemaintenances", "-o", "yaml"])
        .await;
    let out = b.kubectl_ok(&["get", "maintenance"]).await;
    assert!(
        out.contains("weekly-workers") && out.contains("worker-3-disk-swap"),
        "{}: the category lists both kinds: {out}",
        b.name
    );
}

async fn kubectl_apply_of_a_window_that_breaks_a_cel_rule_fails_with_its_message(b: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(repo("examples/weekly-workers-berlin.yaml"))
        .unwrap()
        .replace("maxUnavailable: 2", "maxUnavailable: \"0%\"");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    for args in [
        vec!["apply", "-f", file.to_str().unwrap()],
        vec![
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            file.to_str().unwrap(),
        ],
    ] {
        let out = b.kubectl(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {args:?} accepted", b.name);
        assert!(
            stderr.contains("The MaintenanceWindow \"weekly-workers\" is invalid: spec.maxUnavailable: Invalid value:")
                && stderr.contains("spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"),
            "{}: {args:?}: {stderr}",
            b.name
        );
    }
}

async fn kubectl_wait_sees_a_condition_set_on_a_cr(b: &Backend) {
    let mws: Api<MaintenanceWindow> = Api::all(b.client());
    // No Ready condition yet: kubectl has to wait for one.
    mws.patch_status(
        "weekly-workers",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": null}})),
    )
    .await
    .unwrap();
    // -v=6 logs each request: once the watch is open, kubectl is waiting on it.
    let (wait, stderr) = b
        .kubectl_until(
            &[
                "wait",
                "mw/weekly-workers",
                "--for=condition=Ready",
                "--timeout=60s",
                "-v=6",
            ],
            "watch=true",
        )
        .await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Idle",
        "message": "waiting for the next window", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    mws.patch_status(
        "weekly-workers",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), wait.wait_with_output())
        .await
        .expect("kubectl wait returns")
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        b.name,
        stderr.lock().unwrap()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("condition met"),
        "{}",
        b.name
    );
}

async fn kubectl_delete_waits_for_the_finalizer_to_go(b: &Backend) {
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    let nm: NodeMaintenance = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "held", "finalizers": ["foregroundDeleteNodeMaintenance"]},
        "spec": {"nodeName": "nowhere-1"}}))
    .unwrap();
    nms.create(&PostParams::default(), &nm).await.unwrap();
    let (mut delete, stderr) = b
        .kubectl_until(
            &["delete", "nm", "held", "--timeout=60s", "-v=6"],
            "watch=true",
        )
        .await;
    let held = nms.get("held").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "{}: deleting",
        b.name
    );
    assert!(
        delete.try_wait().unwrap().is_none(),
        "{}: kubectl delete returned while the finalizer was still there",
        b.name
    );
    nms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), delete.wait_with_output())
        .await
        .expect("kubectl delete returns")
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        b.name,
        stderr.lock().unwrap()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("nodemaintenance.nodemaintenance.medik8s.io \"held\" deleted"),
        "{}",
        b.name
    );
    assert!(nms.get_opt("held").await.unwrap().is_none(), "{}", b.name);
}

async fn kubectl_cordon_shows_scheduling_disabled(b: &Backend) {
    b.add_node("cordon-1", &[("node-role.kubernetes.io/worker", "")])
        .await;
    let out = b.kubectl_ok(&["cordon", "cordon-1"]).await;
    assert!(out.contains("node/cordon-1 cordoned"), "{}: {out}", b.name);
    let r = rows(&b.kubectl_ok(&["get", "node", "cordon-1"]).await);
    assert_eq!(
        r[0],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{}",
        b.name
    );
    assert_eq!(
        &r[1][0..3],
        ["cordon-1", "Ready,SchedulingDisabled", "worker"],
        "{}",
        b.name
    );
    b.set_node_ready("cordon-1", false).await;
    b.kubectl_ok(&["uncordon", "cordon-1"]).await;
    let r = rows(&b.kubectl_ok(&["get", "node", "cordon-1"]).await);
    assert_eq!(r[1][1], "NotReady", "{}", b.name);
}

async fn kubectl_drain_evicts_and_waits_on_a_pdb_until_it_allows_a_disruption(b: &Backend) {
    for n in ["drain-1", "drain-2"] {
        b.add_node(n, &[]).await;
    }
    // Both replicas on drain-1: drain-2 is cordoned while they are placed.
    b.kubectl_ok(&["cordon", "drain-2"]).await;
    b.replica_set("drain", "web", 2, 30).await;
    assert_eq!(
        b.nodes_of("drain", "web").await,
        ["drain-1", "drain-1"],
        "{}",
        b.name
    );
    b.kubectl_ok(&["uncordon", "drain-2"]).await;
    b.daemon_set("drain", "agent", &["drain-1"]).await;
    b.pdb("drain", "web", 2).await;
    // kubectl retries a refused eviction every 5 s and says so on stderr.
    let (drain, stderr) = b
        .kubectl_until(
            &["drain", "drain-1", "--ignore-daemonsets", "--timeout=120s"],
            "Cannot evict pod as it would violate the pod's disruption budget",
        )
        .await;
    assert_eq!(
        b.nodes_of("drain", "web").await,
        ["drain-1", "drain-1"],
        "{}: nothing evicted while the PDB forbids it",
        b.name
    );
    b.set_pdb_min_available("drain", "web", 1).await;
    let out = tokio::time::timeout(Duration::from_secs(150), drain.wait_with_output())
        .await
        .expect("kubectl drain finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}\n{}",
        b.name,
        stderr.lock().unwrap()
    );
    assert!(
        stdout.contains("node/drain-1 drained"),
        "{}: {stdout}",
        b.name
    );
    let web = b.wait_running("drain", "web", 2).await;
    assert!(
        web.iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("drain-2")),
        "{}: replacements on drain-2: {:?}",
        b.name,
        b.nodes_of("drain", "web").await
    );
    assert_eq!(
        b.nodes_of("drain", "agent").await,
        ["drain-1"],
        "{}: the DaemonSet pod stays",
        b.name
    );
    let r = rows(&b.kubectl_ok(&["get", "node", "drain-1"]).await);
    assert_eq!(r[1][1], "Ready,SchedulingDisabled", "{}", b.name);
}

// ----- the controllers -----

fn nm(name: &str, node: &str) -> NodeMaintenance {
    NodeMaintenance::new(
        name,
        NodeMaintenanceSpec {
            node_name: node.into(),
            reason: Some("test".into()),
        },
    )
}

fn condition(nm: &NodeMaintenance, kind: ConditionType) -> Option<(String, String)> {
    nm.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind.as_str())
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_nm<T>(
    b: &Backend,
    name: &str,
    what: &str,
    check: impl Fn(&NodeMaintenance) -> Option<T>,
) -> T {
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    let check = &check;
    eventually(&format!("{name}: {what} on {}", b.name), 150, || {
        let nms = nms.clone();
        async move { check(&nms.get(name).await.ok()?) }
    })
    .await
}

async fn wait_nm_gone(b: &Backend, name: &str) {
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    eventually(&format!("{name} gone on {}", b.name), 150, || {
        let nms = nms.clone();
        async move { nms.get_opt(name).await.ok()?.is_none().then_some(()) }
    })
    .await
}

async fn node(b: &Backend, name: &str) -> Node {
    Api::<Node>::all(b.client()).get(name).await.unwrap()
}

fn in_maintenance(n: &Node) -> bool {
    nmo::controller::node::is_in_maintenance(n)
}

fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

async fn a_node_maintenance_drains_around_a_pdb_and_its_deletion_restores_the_node(b: &Backend) {
    for n in ["nm-1", "nm-2"] {
        b.add_node(n, &[]).await;
    }
    b.kubectl_ok(&["cordon", "nm-2"]).await;
    b.replica_set("nm-flow", "web", 2, 2).await;
    b.kubectl_ok(&["uncordon", "nm-2"]).await;
    b.daemon_set("nm-flow", "agent", &["nm-1"]).await;
    b.pdb("nm-flow", "web", 2).await;
    let controllers = b.start_controllers(config()).await;
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    nms.create(&PostParams::default(), &nm("fix-nm-1", "nm-1"))
        .await
        .unwrap();
    // The PDB holds the drain: Running, the pods pending, the budget named.
    let status = wait_nm(b, "fix-nm-1", "the drain held by the PDB", |nm| {
        let s = nm.status.clone()?;
        (s.pending_pods.as_ref()?.len() == 2 && s.last_error.as_deref()?.contains("web"))
            .then_some(s)
    })
    .await;
    assert_eq!(status.phase, Some(MaintenancePhase::Running), "{}", b.name);
    assert!(in_maintenance(&node(b, "nm-1").await), "{}", b.name);
    assert_eq!(
        b.nodes_of("nm-flow", "web").await,
        ["nm-1", "nm-1"],
        "{}: nothing evicted yet",
        b.name
    );
    b.set_pdb_min_available("nm-flow", "web", 1).await;
    let done = wait_nm(b, "fix-nm-1", "Succeeded", |nm| {
        (nm.status.as_ref()?.phase == Some(MaintenancePhase::Succeeded)).then(|| nm.clone())
    })
    .await;
    let s = done.status.clone().unwrap();
    assert_eq!(s.drain_progress, Some(100), "{}", b.name);
    assert!(s.last_error.is_none(), "{}: {s:?}", b.name);
    assert_eq!(
        condition(&done, ConditionType::Ready).map(|c| c.0),
        Some("True".into()),
        "{}",
        b.name
    );
    b.wait_running("nm-flow", "web", 2).await;
    assert_eq!(
        b.nodes_of("nm-flow", "web").await,
        ["nm-2", "nm-2"],
        "{}: the workload moved",
        b.name
    );
    assert_eq!(
        b.nodes_of("nm-flow", "agent").await,
        ["nm-1"],
        "{}: the DaemonSet pod stays",
        b.name
    );
    let lease = Api::<Lease>::namespaced(b.client(), "medik8s-leases")
        .get("node-nm-1")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("node-maintenance"),
        "{}",
        b.name
    );
    nms.delete("fix-nm-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_nm_gone(b, "fix-nm-1").await;
    let n = node(b, "nm-1").await;
    assert!(
        !in_maintenance(&n) && !unschedulable(&n),
        "{}: restored",
        b.name
    );
    let lease = Api::<Lease>::namespaced(b.client(), "medik8s-leases")
        .get_opt("node-nm-1")
        .await
        .unwrap();
    assert!(
        lease.is_none_or(|l| l.spec.and_then(|s| s.holder_identity).is_none()),
        "{}: lease released",
        b.name
    );
    drop(controllers);
}

async fn a_node_cordoned_before_the_maintenance_is_still_cordoned_after_it(b: &Backend) {
    b.add_node("pre-1", &[]).await;
    b.kubectl_ok(&["cordon", "pre-1"]).await;
    let controllers = b.start_controllers(config()).await;
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    nms.create(&PostParams::default(), &nm("fix-pre-1", "pre-1"))
        .await
        .unwrap();
    wait_nm(b, "fix-pre-1", "Succeeded", |nm| {
        (nm.status.as_ref()?.phase == Some(MaintenancePhase::Succeeded)).then_some(())
    })
    .await;
    assert!(in_maintenance(&node(b, "pre-1").await), "{}", b.name);
    nms.delete("fix-pre-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_nm_gone(b, "fix-pre-1").await;
    let n = node(b, "pre-1").await;
    assert!(!in_maintenance(&n), "{}: marks removed", b.name);
    assert!(unschedulable(&n), "{}: still cordoned by its owner", b.name);
    let r = rows(&b.kubectl_ok(&["get", "node", "pre-1"]).await);
    assert_eq!(r[1][1], "Ready,SchedulingDisabled", "{}", b.name);
    drop(controllers);
}

/// What a watch of one window's NodeMaintenances and of its nodes saw.
#[derive(Default, Debug)]
struct RoundLog {
    created: Vec<String>,
    live: BTreeSet<String>,
    max_live: usize,
    unavailable: BTreeSet<String>,
    max_unavailable: usize,
}

fn observe_round(client: Client, window: &str, prefix: &str) -> Arc<Mutex<RoundLog>> {
    let log = Arc::new(Mutex::new(RoundLog::default()));
    let nms: Api<NodeMaintenance> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{WINDOW_LABEL}={window}"));
    let nm_log = log.clone();
    tokio::spawn(async move {
        let mut events = watcher(nms, config).default_backoff().boxed();
        while let Some(Ok(event)) = events.next().await {
            let mut log = nm_log.lock().unwrap();
            match event {
                watcher::Event::Apply(nm) | watcher::Event::InitApply(nm)
                    if nm.metadata.deletion_timestamp.is_none()
                        && log.live.insert(nm.name_any()) =>
                {
                    log.created.push(nm.spec.node_name.clone());
                    log.max_live = log.max_live.max(log.live.len());
                }
                watcher::Event::Delete(nm) => {
                    log.live.remove(&nm.name_any());
                }
                _ => {}
            }
        }
    });
    let prefix = prefix.to_string();
    let node_log = log.clone();
    tokio::spawn(async move {
        let mut events = watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = event {
                if !n.name_any().starts_with(&prefix) {
                    continue;
                }
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let mut log = node_log.lock().unwrap();
                if unschedulable(&n) || !ready {
                    log.unavailable.insert(n.name_any());
                } else {
                    log.unavailable.remove(&n.name_any());
                }
                log.max_unavailable = log.max_unavailable.max(log.unavailable.len());
            }
        }
    });
    log
}

fn window(name: &str, role: &str, release_after: &str) -> MaintenanceWindow {
    serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
        "metadata": {"name": name},
        // New Year only: the run-now annotation opens the window.
        "spec": {"schedule": "0 0 1 1 *", "duration": "2h",
            "nodeSelector": {"matchLabels": {role: ""}},
            "maxUnavailable": 2, "release": {"after": release_after}}
    }))
    .unwrap()
}

async fn run_now(b: &Backend, name: &str) {
    let patch =
        json!({"metadata": {"annotations": {"nodemaintenance.medik8s.io/run-now": "now-1"}}});
    Api::<MaintenanceWindow>::all(b.client())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn a_rolling_round_of_four_nodes_never_has_more_than_two_in_maintenance(b: &Backend) {
    let nodes = ["roll-1", "roll-2", "roll-3", "roll-4"];
    for n in nodes {
        b.add_node(n, &[("pool-roll", "")]).await;
    }
    let log = observe_round(b.client(), "roll", "roll-");
    let controllers = b.start_controllers(config()).await;
    let windows: Api<MaintenanceWindow> = Api::all(b.client());
    windows
        .create(&PostParams::default(), &window("roll", "pool-roll", "2s"))
        .await
        .unwrap();
    run_now(b, "roll").await;
    let done = eventually(&format!("the round on {}", b.name), 180, || {
        let windows = windows.clone();
        async move {
            let w = windows.get("roll").await.ok()?;
            let round = w.status.as_ref()?.round.as_ref()?;
            round.finished.is_some().then_some(w)
        }
    })
    .await;
    let status = done.status.unwrap();
    let round = status.round.unwrap();
    assert_eq!(
        (round.total, round.completed, round.failed),
        (4, 4, 0),
        "{}",
        b.name
    );
    assert_eq!(status.progress.as_deref(), Some("4/4"), "{}", b.name);
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    eventually(
        &format!("the round's NodeMaintenances gone on {}", b.name),
        60,
        || {
            let nms = nms.clone();
            async move {
                let lp = kube::api::ListParams::default().labels(&format!("{WINDOW_LABEL}=roll"));
                nms.list(&lp).await.ok()?.items.is_empty().then_some(())
            }
        },
    )
    .await;
    {
        let log = log.lock().unwrap();
        assert_eq!(log.created, nodes, "{}: once each, in name order", b.name);
        assert_eq!(
            log.max_live, 2,
            "{}: the budget is used, never exceeded",
            b.name
        );
        assert!(
            log.max_unavailable <= 2,
            "{}: at most 2 nodes unavailable, saw {}",
            b.name,
            log.max_unavailable
        );
    }
    for n in nodes {
        let node = node(b, n).await;
        assert!(
            !in_maintenance(&node) && !unschedulable(&node),
            "{}: {n} back in service",
            b.name
        );
    }
    drop(controllers);
}

async fn deleting_a_window_garbage_collects_its_node_maintenances_and_restores_nodes(b: &Backend) {
    let nodes = ["gc-1", "gc-2"];
    for n in nodes {
        b.add_node(n, &[("pool-gc", "")]).await;
    }
    let controllers = b.start_controllers(config()).await;
    let windows: Api<MaintenanceWindow> = Api::all(b.client());
    // Released only after an hour: the NodeMaintenances are still there when the window goes.
    windows
        .create(&PostParams::default(), &window("gc", "pool-gc", "1h"))
        .await
        .unwrap();
    run_now(b, "gc").await;
    let nms: Api<NodeMaintenance> = Api::all(b.client());
    let lp = kube::api::ListParams::default().labels(&format!("{WINDOW_LABEL}=gc"));
    let started = eventually(
        &format!("both NodeMaintenances Succeeded on {}", b.name),
        150,
        || {
            let (nms, lp) = (nms.clone(), lp.clone());
            async move {
                let items = nms.list(&lp).await.ok()?.items;
                (items.len() == 2
                    && items.iter().all(|nm| {
                        nm.status.as_ref().and_then(|s| s.phase)
                            == Some(MaintenancePhase::Succeeded)
                    }))
                .then_some(items)
            }
        },
    )
    .await;
    for nm in &started {
        let owner = nm.owner_references().first().cloned().unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("MaintenanceWindow", "gc", Some(true)),
            "{}",
            b.name
        );
    }
    windows
        .delete("gc", &DeleteParams::background())
        .await
        .unwrap();
    let names = names(&started);
    eventually(&format!("{names:?} collected on {}", b.name), 150, || {
        let nms = nms.clone();
        let names = names.clone();
        async move {
            for n in &names {
                if nms.get_opt(n).await.ok()?.is_some() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    for n in nodes {
        let node = node(b, n).await;
        assert!(
            !in_maintenance(&node) && !unschedulable(&node),
            "{}: {n} restored after its NodeMaintenance was collected",
            b.name
        );
    }
    drop(controllers);
}
