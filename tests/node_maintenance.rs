//! The NodeMaintenance controller end to end: the sandbox API server, the real controller
//! in-process, and kube-rs as the client, as in the "Done when" list of issue 5.

#[path = "node_maintenance_support.rs"]
mod support;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use nmo::api::conditions::{self, ConditionType};
use nmo::api::{MaintenancePhase, NodeMaintenance, PodReference};
use nmo::controller::node::{DRAIN_TAINT, UNSCHEDULABLE_TAINT};
use nmo::controller::node_maintenance::reasons;
use nmo::sandbox::NewPod;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

fn condition(nm: &NodeMaintenance, kind: ConditionType) -> Option<String> {
    conditions::find(
        nm.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or(&[]),
        kind,
    )
    .map(|c| c.status.clone())
}

fn phase(nm: &NodeMaintenance) -> Option<MaintenancePhase> {
    nm.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_twenty_pods_of_all_sorts_is_drained_except_daemonset_and_mirror_pods() {
    let c = cluster().await;
    let node = c.add_node("worker-1").await;
    c.add_node("spare").await; // where the ReplicaSet puts replacements
    // 16 ReplicaSet pods, one DaemonSet pod, one mirror pod, one unmanaged pod with an emptyDir,
    // one unmanaged pod.
    for i in 0..16 {
        c.create_pod(
            NewPod::new(&format!("web-{i}"))
                .on_node("worker-1")
                .label("app", "web")
                .replica_set("web")
                .grace_period(1),
        );
    }
    c.create_pod(
        NewPod::new("agent-x")
            .namespace("kube-system")
            .on_node("worker-1")
            .daemon_set("agent"),
    );
    c.create_pod(
        NewPod::new("etcd-worker-1")
            .namespace("kube-system")
            .on_node("worker-1")
            .mirror(),
    );
    c.create_pod(NewPod::new("bare").on_node("worker-1").grace_period(1));
    c.run_pod(pod("default", "scratch", "worker-1").empty_dir())
        .await;
    assert_eq!(c.pods_on("worker-1").await.len(), 20);

    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    let nm = c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;

    let status = nm.status.clone().unwrap();
    assert_eq!(status.drain_progress, Some(100));
    assert_eq!(status.total_pods, Some(20));
    assert_eq!(status.eviction_pods, Some(18));
    assert_eq!(status.pending_pods, Some(vec![]));
    assert_eq!(status.last_error, None);
    assert_eq!(
        condition(&nm, ConditionType::Ready).as_deref(),
        Some("True")
    );
    assert_eq!(condition(&nm, ConditionType::Reconciling), None);
    assert_eq!(condition(&nm, ConditionType::Stalled), None);
    assert_eq!(status.observed_generation, nm.metadata.generation);
    assert!(
        nm.finalizers()
            .contains(&"foregroundDeleteNodeMaintenance".to_string())
    );

    let node_now = c.nodes().get("worker-1").await.unwrap();
    assert!(in_maintenance(&node_now), "cordoned, tainted and labelled");
    assert_eq!(
        c.pods_on("worker-1").await,
        vec!["agent-x".to_string(), "etcd-worker-1".to_string()]
    );

    // The ad-hoc NodeMaintenance is owned by its Node (not as controller).
    let owner = &nm.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", "worker-1")
    );
    assert_eq!(owner.uid, node.uid().unwrap());
    assert_eq!(owner.controller, Some(false));

    let lease = c.leases().get("node-worker-1").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("node-maintenance"));
    assert_eq!(spec.lease_duration_seconds, Some(3600));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());

    eventually("one SucceedMaintenance event", T, || async {
        (c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await == 1).then_some(())
    })
    .await;
    // More reconciles (a label change wakes the controller) emit nothing new.
    let before = ctl.stats().of("nm-1");
    c.nms()
        .patch(
            "nm-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    eventually("another reconcile to finish", T, || async {
        (ctl.stats().finished_of("nm-1") > before).then_some(())
    })
    .await;
    assert_eq!(c.events("nm-1", reasons::BEGIN_MAINTENANCE).await, 1);
    assert_eq!(c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await, 1);
    assert_eq!(c.events("nm-1", reasons::FAILED_MAINTENANCE).await, 0);
    ctl.stop().await;
}

/// The field managers in `managed`.
fn managers(managed: Option<&Vec<ManagedFieldsEntry>>) -> BTreeSet<String> {
    managed
        .into_iter()
        .flatten()
        .map(|m| m.manager.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_of_nmo_is_recorded_under_the_field_manager_nmo() {
    let c = cluster().await;
    let before = c.add_node("worker-1").await;
    let others_on_node = managers(before.metadata.managed_fields.as_ref());
    assert!(!others_on_node.contains("nmo"), "{others_on_node:?}");
    let ctl = c.start_controller(test_config());
    // The user's own create, under a manager of its own.
    let nm = NodeMaintenance::new(
        "nm-1",
        nmo::api::NodeMaintenanceSpec {
            node_name: "worker-1".into(),
            reason: None,
        },
    );
    let by_user = PostParams {
        field_manager: Some("e2e-user".into()),
        ..Default::default()
    };
    c.nms().create(&by_user, &nm).await.unwrap();
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;

    // The finalizer (added by kube-runtime's finalizer() without a fieldManager, so named
    // after the User-Agent) and the status are nmo's.
    let nm = c.nms().get("nm-1").await.unwrap();
    let on_nm = managers(nm.metadata.managed_fields.as_ref());
    let expected: BTreeSet<String> = ["e2e-user", "nmo"].map(String::from).into();
    assert_eq!(on_nm, expected, "{:#?}", nm.metadata.managed_fields);
    let lease = c.leases().get("node-worker-1").await.unwrap();
    let on_lease = managers(lease.metadata.managed_fields.as_ref());
    assert_eq!(on_lease, ["nmo".to_string()].into(), "{on_lease:?}");
    let node = c.nodes().get("worker-1").await.unwrap();
    let on_node = managers(node.metadata.managed_fields.as_ref());
    let nmo_only: Vec<&String> = on_node.difference(&others_on_node).collect();
    assert_eq!(nmo_only, ["nmo"], "{:#?}", node.metadata.managed_fields);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_allowing_no_disruption_holds_the_drain_until_it_allows_one() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    c.add_node("worker-2").await;
    for (name, node) in [("db-0", "worker-1"), ("db-1", "worker-2")] {
        c.create_pod(
            NewPod::new(name)
                .namespace("shop")
                .on_node(node)
                .label("app", "db")
                .replica_set("db")
                .grace_period(0),
        );
    }
    c.pdb("shop", "db-pdb", "db", 2).await;

    let ctl = c.start_controller(test_config());
    c.create_nm("nm-pdb", "worker-1").await;
    let nm = c
        .wait_nm("nm-pdb", "blocked by the PDB", T, |nm| {
            nm.status
                .as_ref()
                .and_then(|s| s.last_error.as_deref())
                .is_some_and(|e| e.contains("db-pdb"))
        })
        .await;
    let status = nm.status.clone().unwrap();
    assert_eq!(status.phase, Some(MaintenancePhase::Running));
    assert_eq!(
        status.pending_pods_refs,
        Some(vec![PodReference {
            namespace: Some("shop".into()),
            name: Some("db-0".into())
        }])
    );
    assert_eq!(status.pending_pods, Some(vec!["db-0".to_string()]));
    assert_eq!(status.drain_progress, Some(0));
    assert_eq!(
        condition(&nm, ConditionType::Reconciling).as_deref(),
        Some("True")
    );
    assert_eq!(
        condition(&nm, ConditionType::Ready).as_deref(),
        Some("False")
    );
    assert!(c.pods_on("worker-1").await.contains(&"db-0".to_string()));

    c.set_pdb_min_available("shop", "db-pdb", 1).await;
    let nm = c.wait_phase("nm-pdb", MaintenancePhase::Succeeded, T).await;
    assert_eq!(nm.status.unwrap().last_error, None, "lastError is cleared");
    assert!(c.pods_on("worker-1").await.is_empty());
    eventually("one SucceedMaintenance event", T, || async {
        (c.events("nm-pdb", reasons::SUCCEED_MAINTENANCE).await == 1).then_some(())
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_maintenance_restores_the_node_and_releases_the_lease() {
    let c = cluster().await;
    let before = c.add_node("worker-1").await;
    // An unrelated taint must survive.
    c.nodes()
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    let inside = c.nodes().get("worker-1").await.unwrap();
    assert_eq!(
        taint_keys(&inside),
        ["gpu", UNSCHEDULABLE_TAINT, DRAIN_TAINT]
    );

    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    let after = c.nodes().get("worker-1").await.unwrap();
    assert!(!unschedulable(&after));
    assert_eq!(taint_keys(&after), ["gpu"]);
    assert!(
        !after
            .labels()
            .contains_key("remediation.medik8s.io/exclude-from-remediation")
    );
    assert!(
        !after
            .annotations()
            .contains_key("nodemaintenance.medik8s.io/was-unschedulable")
    );
    assert_eq!(after.labels(), before.labels());
    assert_eq!(c.leases().get_opt("node-worker-1").await.unwrap(), None);
    // Events are published before the finalizer goes, so they are all there by now.
    assert_eq!(c.events("nm-1", reasons::REMOVED_MAINTENANCE).await, 1);
    assert_eq!(c.events("worker-1", reasons::UNCORDON_NODE).await, 1);
    assert_eq!(c.events("nm-1", reasons::BEGIN_MAINTENANCE).await, 1);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cordoned_before_the_maintenance_is_still_cordoned_after_it() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    c.nodes()
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    let after = c.nodes().get("worker-1").await.unwrap();
    assert!(unschedulable(&after), "someone else's cordon is kept");
    assert!(!taint_keys(&after).contains(&DRAIN_TAINT.to_string()));
    assert!(
        !after
            .labels()
            .contains_key("remediation.medik8s.io/exclude-from-remediation")
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_node_fails_and_stalls_without_a_hot_loop_and_carries_on_when_it_appears() {
    let c = cluster().await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-ghost", "ghost").await;
    let nm = c.wait_phase("nm-ghost", MaintenancePhase::Failed, T).await;
    assert_eq!(
        nm.status.as_ref().unwrap().last_error.as_deref(),
        Some("nodes \"ghost\" not found")
    );
    assert_eq!(
        condition(&nm, ConditionType::Stalled).as_deref(),
        Some("True")
    );
    assert_eq!(
        condition(&nm, ConditionType::Ready).as_deref(),
        Some("False")
    );
    assert_eq!(condition(&nm, ConditionType::Reconciling), None);
    eventually("the FailedMaintenance event", T, || async {
        (c.events("nm-ghost", reasons::FAILED_MAINTENANCE).await == 1).then_some(())
    })
    .await;

    // Reconciled again (poked twice), the failed object is left alone: its status is not
    // written again and no second FailedMaintenance is published.
    let failed = c.nms().get("nm-ghost").await.unwrap().status;
    c.settle_nm(&ctl, "nm-ghost", "1").await;
    c.settle_nm(&ctl, "nm-ghost", "2").await;
    assert_eq!(
        c.nms().get("nm-ghost").await.unwrap().status,
        failed,
        "the status of a failed maintenance is written again"
    );
    // No hot loop: a handful of reconciles in all (creation, finalizer, status, two pokes).
    assert!(
        ctl.stats().of("nm-ghost") < 10,
        "{} reconciles in all",
        ctl.stats().of("nm-ghost")
    );
    assert_eq!(c.events("nm-ghost", reasons::FAILED_MAINTENANCE).await, 1);

    // The node appears: the Node watch wakes the maintenance, which carries on.
    c.add_node("ghost").await;
    let nm = c
        .wait_phase("nm-ghost", MaintenancePhase::Succeeded, T)
        .await;
    assert_eq!(condition(&nm, ConditionType::Stalled), None);
    assert_eq!(nm.status.unwrap().last_error, None);
    ctl.stop().await;
}

fn foreign_lease(holder: &str, seconds: i32) -> Lease {
    let now = MicroTime(jiff::Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some("node-worker-1".into()),
            namespace: Some("medik8s-leases".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_another_holder_keeps_it_running_until_released() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "medik8s-leases"}})).unwrap(),
        )
        .await
        .unwrap();
    c.leases()
        .create(
            &PostParams::default(),
            &foreign_lease("self-node-remediation", 3600),
        )
        .await
        .unwrap();

    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    let nm = c
        .wait_nm("nm-1", "waiting for the lease", T, |nm| {
            nm.status
                .as_ref()
                .and_then(|s| s.last_error.as_deref())
                .is_some_and(|e| e.contains("self-node-remediation"))
        })
        .await;
    assert_eq!(phase(&nm), Some(MaintenancePhase::Running));
    let err = nm.status.unwrap().last_error.unwrap();
    assert!(err.contains("medik8s-leases/node-worker-1"), "{err}");
    let node = c.nodes().get("worker-1").await.unwrap();
    assert!(!unschedulable(&node), "not cordoned without the lease");

    // The other holder releases the node (medik8s deletes the lease).
    c.leases()
        .delete("node-worker-1", &Default::default())
        .await
        .unwrap();
    let nm = c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    assert_eq!(nm.status.unwrap().last_error, None);
    let lease = c.leases().get("node-worker-1").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("node-maintenance")
    );

    // Deletion leaves a lease someone else took alone.
    c.leases()
        .replace("node-worker-1", &PostParams::default(), &{
            let mut l = foreign_lease("node-healthcheck", 3600);
            l.metadata.resource_version = c
                .leases()
                .get("node-worker-1")
                .await
                .unwrap()
                .metadata
                .resource_version;
            l
        })
        .await
        .unwrap();
    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    let lease = c.leases().get("node-worker-1").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("node-healthcheck")
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_before_it_expires() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let config = test_config().with_lease_duration(Duration::from_secs(2));
    let ctl = c.start_controller(config);
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    let first = c.leases().get("node-worker-1").await.unwrap().spec.unwrap();
    assert_eq!(first.lease_duration_seconds, Some(2));
    // Renewed twice, each time before the 2 s lease could lapse.
    let mut renewals = Vec::new();
    let mut last = first.renew_time.clone().unwrap();
    while renewals.len() < 2 {
        let spec = eventually("a lease renewal", Duration::from_secs(5), || async {
            let spec = c.leases().get("node-worker-1").await.ok()?.spec?;
            (spec.renew_time.as_ref() != Some(&last)).then_some(spec)
        })
        .await;
        let renewed = spec.renew_time.clone().unwrap();
        let gap = renewed.0.duration_since(last.0);
        assert!(
            gap < jiff::SignedDuration::from_secs(2),
            "renewed {gap:?} after the last renewal: the lease had lapsed"
        );
        assert_eq!(spec.acquire_time, first.acquire_time, "still the same hold");
        assert_eq!(spec.holder_identity.as_deref(), Some("node-maintenance"));
        renewals.push(renewed.clone());
        last = renewed;
    }
    let nm = c.nms().get("nm-1").await.unwrap();
    assert_eq!(phase(&nm), Some(MaintenancePhase::Succeeded));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_created_by_a_window_gets_no_node_owner() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    // Only the NodeMaintenance controller: the window controller would (rightly) delete a
    // NodeMaintenance its suspended window does not track.
    let mut config = test_config();
    config.maintenance_window.enabled = false;
    let ctl = c.start_controller(config);
    let mut nm = NodeMaintenance::new(
        "w-worker-1",
        nmo::api::NodeMaintenanceSpec {
            node_name: "worker-1".into(),
            reason: None,
        },
    );
    // Its controller owner is a MaintenanceWindow (no window controller runs here).
    let windows: Api<nmo::api::MaintenanceWindow> = Api::all(c.client.clone());
    let window: nmo::api::MaintenanceWindow = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
        "metadata": {"name": "w"},
        "spec": {"schedule": "0 2 * * 6", "duration": "4h",
                 "nodeSelector": {"matchLabels": {"pool": "a"}},
                 "release": {"after": "10m"}, "suspend": true}
    }))
    .unwrap();
    let window = windows
        .create(&PostParams::default(), &window)
        .await
        .unwrap();
    nm.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "nodemaintenance.medik8s.io/v1alpha1".into(),
            kind: "MaintenanceWindow".into(),
            name: "w".into(),
            uid: window.uid().unwrap(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    c.nms().create(&PostParams::default(), &nm).await.unwrap();
    let nm = c
        .wait_phase("w-worker-1", MaintenancePhase::Succeeded, T)
        .await;
    assert_eq!(nm.owner_references().len(), 1);
    assert_eq!(nm.owner_references()[0].kind, "MaintenanceWindow");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_node_garbage_collects_its_ad_hoc_maintenance_and_cleans_the_lease() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_nm("nm-1", "owned by its node", T, |nm| {
        nm.owner_references().iter().any(|o| o.kind == "Node")
            && nm.status.as_ref().and_then(|s| s.phase) == Some(MaintenancePhase::Succeeded)
    })
    .await;
    assert!(c.leases().get_opt("node-worker-1").await.unwrap().is_some());
    c.sandbox.remove_node("worker-1").expect("node removed");
    // Kubernetes collects the NodeMaintenance; the finalizer lets nmo clean up first.
    wait_gone(&c.nms(), "nm-1", T).await;
    assert_eq!(c.leases().get_opt("node-worker-1").await.unwrap(), None);
    eventually("the RemovedMaintenance event", T, || async {
        (c.events("nm-1", reasons::REMOVED_MAINTENANCE).await == 1).then_some(())
    })
    .await;
    ctl.stop().await;
}
