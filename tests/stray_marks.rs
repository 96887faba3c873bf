//! Stray marks (`src/controller/node_maintenance/stray.rs`): nmo's marks or node lease left on
//! a node that no NodeMaintenance names — a write of a killed operator landing after the
//! cleanup — are removed, and only then. Found by the chaos harness (docs/chaos.md).

#[path = "node_maintenance_support.rs"]
mod support;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use nmo::api::MaintenancePhase;
use nmo::controller::lease::LEASE_HOLDER;
use nmo::controller::node::{self, FIELD_MANAGER};
use serde_json::json;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(30);

/// Write what a killed operator's `enter_maintenance` patch writes, as nmo, guarded by the
/// resourceVersion read: the late write of the regression.
async fn late_enter_patch(nodes: &Api<Node>, name: &str) {
    let current = nodes.get(name).await.expect("node readable");
    let mut patch = node::enter_maintenance(&current).expect("the node is not in maintenance");
    patch["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    nodes
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .expect("the late patch lands");
}

/// The lease a killed operator's late renewal leaves behind.
async fn late_lease(leases: &Api<Lease>, node: &str) {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(format!("node-{node}")),
            namespace: Some("medik8s-leases".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(LEASE_HOLDER.into()),
            lease_duration_seconds: Some(3600),
            acquire_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("lease created");
}

async fn wait_clean(c: &Cluster, name: &str) -> Node {
    let nodes = c.nodes();
    let leases = c.leases();
    eventually(
        &format!("node {name} free of nmo's marks and lease"),
        T,
        || async {
            let node = nodes.get(name).await.ok()?;
            let lease = leases.get_opt(&format!("node-{name}")).await.ok()?;
            (node::is_free_of_maintenance(&node) && lease.is_none()).then_some(node)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_written_after_the_cleanup_of_the_last_node_maintenance_are_removed() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let ctl = c.start_controller(test_config());

    // A maintenance runs its course and is deleted: the node is put back.
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    let node = wait_clean(&c, "worker-1").await;
    assert!(!unschedulable(&node));

    // Then the killed replica's writes land: the node is cordoned, tainted, labelled and leased
    // by nmo with no NodeMaintenance left to undo it.
    late_lease(&c.leases(), "worker-1").await;
    late_enter_patch(&c.nodes(), "worker-1").await;

    let node = wait_clean(&c, "worker-1").await;
    assert!(!unschedulable(&node), "put back into service: {node:?}");
    assert!(taint_keys(&node).is_empty(), "{:?}", taint_keys(&node));
    assert!(
        c.events("worker-1", "UncordonNode").await >= 2,
        "the sweep says what it did on the node"
    );
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_stray_marks_are_removed_but_a_persons_cordon_and_live_maintenances_stay() {
    let c = cluster().await;
    for name in ["stray", "cordoned", "held"] {
        c.add_node(name).await;
    }
    c.sandbox
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: medik8s-leases\n")
        .expect("lease namespace");
    // `cordoned`: a person cordoned it before nmo's (stray) marks; the cordon is theirs.
    c.nodes()
        .patch(
            "cordoned",
            &PatchParams {
                field_manager: Some("kubectl-cordon".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .expect("cordoned");
    for name in ["stray", "cordoned"] {
        late_enter_patch(&c.nodes(), name).await;
        late_lease(&c.leases(), name).await;
    }
    // `held`: in maintenance for a live NodeMaintenance.
    c.create_nm("nm-held", "held").await;

    let ctl = c.start_controller(test_config());
    c.wait_phase("nm-held", MaintenancePhase::Succeeded, T)
        .await;

    let stray = wait_clean(&c, "stray").await;
    assert!(!unschedulable(&stray));
    let cordoned = wait_clean(&c, "cordoned").await;
    assert!(unschedulable(&cordoned), "the person's cordon is kept");

    // The live maintenance keeps its node and lease: settle a reconcile after the sweeps.
    c.settle_nm(&ctl, "nm-held", "after-sweep").await;
    let held = c.nodes().get("held").await.unwrap();
    assert!(in_maintenance(&held), "{held:?}");
    let lease = c.leases().get("node-held").await.expect("its lease stays");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(LEASE_HOLDER)
    );
    drop(ctl);
}

/// Found by the chaos harness (seed 11769): the cleanup of the last reconciled NodeMaintenance
/// of a node left the node to a second one created moments before and not reconciled yet (no
/// finalizer). Deleted at once, that one went with no cleanup of its own, and the node stayed
/// cordoned, tainted and leased. A NodeMaintenance without nmo's finalizer is no heir now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_not_yet_reconciled_does_not_keep_the_node_for_itself() {
    use nmo::sandbox::{Fault, FaultRule};
    let c = cluster().await;
    c.add_node("worker-1").await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;

    // nm-2 names the same node, but nmo cannot reconcile it: its finalizer is never added.
    let held = c
        .sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["patch", "update"])
                .resources(&["nodemaintenances"])
                .names(&["nm-2"]),
        )
        .unwrap();
    c.create_nm("nm-2", "worker-1").await;
    eventually("nmo to try adding nm-2's finalizer", T, || async {
        (c.sandbox.faults().hits(held) >= 1).then_some(())
    })
    .await;
    let nm2 = c.nms().get("nm-2").await.unwrap();
    assert!(nm2.metadata.finalizers.unwrap_or_default().is_empty());

    // nm-1 goes, then nm-2 (at once: it has no finalizer). Nothing is left to put the node back
    // but nm-1's cleanup.
    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    c.delete_nm("nm-2").await;
    wait_gone(&c.nms(), "nm-2", T).await;
    let node = wait_clean(&c, "worker-1").await;
    assert!(!unschedulable(&node), "put back into service: {node:?}");
    assert!(taint_keys(&node).is_empty(), "{:?}", taint_keys(&node));
    drop(ctl);
}
