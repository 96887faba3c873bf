//! The NodeMaintenance controller under contention and faults (issue 9): two NodeMaintenances
//! for one node, drift after `Succeeded`, lease renewals failing, the control-plane quorum, and
//! the node marks others made.

#[path = "node_maintenance_support.rs"]
mod support;

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use nmo::api::conditions::{self, ConditionType};
use nmo::api::{MaintenancePhase, NodeMaintenance};
use nmo::clock::{Clock, VirtualClock};
use nmo::controller::node_maintenance::reasons;
use nmo::sandbox::{Fault, FaultRule, NewPod};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);
const EXCLUDE: &str = "remediation.medik8s.io/exclude-from-remediation";

fn phase(nm: &NodeMaintenance) -> Option<MaintenancePhase> {
    nm.status.as_ref().and_then(|s| s.phase)
}

fn reason(nm: &NodeMaintenance, kind: ConditionType) -> Option<String> {
    conditions::find(
        nm.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or(&[]),
        kind,
    )
    .map(|c| c.reason.clone())
}

async fn lease_holder(c: &Cluster, node: &str) -> Option<String> {
    c.leases()
        .get_opt(&format!("node-{node}"))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_maintenances_of_one_node_keep_it_in_maintenance_until_the_last_is_deleted() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-a", "worker-1").await;
    c.create_nm("nm-b", "worker-1").await;
    c.wait_phase("nm-a", MaintenancePhase::Succeeded, T).await;
    c.wait_phase("nm-b", MaintenancePhase::Succeeded, T).await;

    c.delete_nm("nm-a").await;
    wait_gone(&c.nms(), "nm-a", T).await;
    let node = c.nodes().get("worker-1").await.unwrap();
    assert!(in_maintenance(&node), "the other one still holds the node");
    assert!(
        node.annotations()
            .contains_key("nodemaintenance.medik8s.io/was-unschedulable")
    );
    assert_eq!(
        lease_holder(&c, "worker-1").await.as_deref(),
        Some("node-maintenance")
    );
    assert_eq!(c.events("worker-1", reasons::UNCORDON_NODE).await, 0);
    let b = c.nms().get("nm-b").await.unwrap();
    assert_eq!(phase(&b), Some(MaintenancePhase::Succeeded));
    assert_eq!(
        reason(&b, ConditionType::Ready).as_deref(),
        Some("NodeDrained")
    );

    c.delete_nm("nm-b").await;
    wait_gone(&c.nms(), "nm-b", T).await;
    let node = c.nodes().get("worker-1").await.unwrap();
    assert!(!unschedulable(&node));
    assert!(nmo::controller::node::is_free_of_maintenance(&node));
    assert_eq!(c.leases().get_opt("node-worker-1").await.unwrap(), None);
    assert_eq!(c.events("worker-1", reasons::UNCORDON_NODE).await, 1);
    // Nothing of either is left in memory: counters, drains and pod watches.
    eventually("counters, drains and pod watches pruned", T, || async {
        let running = ctl.running();
        (ctl.stats().tracked() == 0 && running.active_drains() == 0 && running.pod_watches() == 0)
            .then_some(())
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_refused_by_its_budget_is_evicted_later_not_left_on_the_node() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    // Two replicas of a node agent that tolerates every taint, and a budget that lets only one
    // go at a time. With no other node, the replacement of the first stays Pending, so the
    // second is refused until a node for the replacement appears.
    for name in ["agent-a", "agent-b"] {
        c.create_pod(
            NewPod::new(name)
                .namespace("ops")
                .on_node("worker-1")
                .label("app", "agent")
                .replica_set("agent")
                .tolerating_everything()
                .grace_period(0),
        );
    }
    c.pdb("ops", "agent-pdb", "agent", 1).await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    let nm = c
        .wait_nm("nm-1", "blocked by the budget", T, |nm| {
            nm.status
                .as_ref()
                .and_then(|s| s.last_error.as_deref())
                .is_some_and(|e| e.contains("agent-pdb"))
        })
        .await;
    assert_eq!(phase(&nm), Some(MaintenancePhase::Running));
    let still = c.pods_on("worker-1").await;
    assert_eq!(still.len(), 1, "one replica left, refused: {still:?}");

    // A node for the replacement: the budget allows the second eviction.
    c.add_node("worker-2").await;
    let nm = c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    assert_eq!(
        c.pods_on("worker-1").await,
        Vec::<String>::new(),
        "Succeeded with a workload pod still on the node: {:?}",
        nm.status
    );
    assert_eq!(c.pods_on("worker-2").await.len(), 2);
    ctl.stop().await;
}

/// A watch of `name` from its current resourceVersion, opened before the change under test,
/// so that a short-lived state (Running between two Succeeded) cannot be missed.
async fn watch_from_now(
    c: &Cluster,
    name: &str,
) -> impl futures::Stream<Item = kube::Result<WatchEvent<NodeMaintenance>>> + use<> {
    let rv = c.nms().get(name).await.unwrap().resource_version().unwrap();
    let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
    c.nms().watch(&wp, &rv).await.expect("watch opens").boxed()
}

/// Wait on `events` until the NodeMaintenance went back to Running with Reconciling reason
/// Drifted.
async fn wait_drifted(
    mut events: impl futures::Stream<Item = kube::Result<WatchEvent<NodeMaintenance>>> + Unpin,
) -> NodeMaintenance {
    let found = tokio::time::timeout(T, async {
        while let Some(event) = events.try_next().await.expect("watch works") {
            if let WatchEvent::Modified(nm) = event
                && phase(&nm) == Some(MaintenancePhase::Running)
                && reason(&nm, ConditionType::Reconciling).as_deref() == Some("Drifted")
            {
                return Some(nm);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(nm)) => nm,
        other => panic!("no drift seen within {T:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncordoned_node_is_put_back_and_drained_again_with_one_more_succeed_event() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    eventually("the first SucceedMaintenance", T, || async {
        (c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await == 1).then_some(())
    })
    .await;

    // Someone uncordons the node, as `kubectl uncordon` does.
    let events = watch_from_now(&c, "nm-1").await;
    c.nodes()
        .patch(
            "worker-1",
            &PatchParams {
                field_manager: Some("kubectl-cordon".into()),
                ..Default::default()
            },
            &Patch::Strategic(json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();
    let nm = wait_drifted(events).await;
    let message = nm.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(format!("{message:?}").contains("uncordoned"), "{message:?}");
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    assert!(in_maintenance(&c.nodes().get("worker-1").await.unwrap()));
    eventually("a second SucceedMaintenance", T, || async {
        (c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await == 2).then_some(())
    })
    .await;
    // And no third for the same completion: another reconcile finds nothing to announce.
    let before = ctl.stats().finished_of("nm-1");
    c.nms()
        .patch(
            "nm-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    eventually("another reconcile", T, || async {
        (ctl.stats().finished_of("nm-1") > before).then_some(())
    })
    .await;
    assert_eq!(c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await, 2);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_to_a_succeeded_node_is_drained_again_with_one_more_succeed_event() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    eventually("the first SucceedMaintenance", T, || async {
        (c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await == 1).then_some(())
    })
    .await;

    // A pod bound straight to the node (nodeName set, no scheduler).
    let events = watch_from_now(&c, "nm-1").await;
    c.create_pod(NewPod::new("stray").on_node("worker-1").grace_period(0));
    wait_drifted(events).await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    assert!(
        c.pods_on("worker-1").await.is_empty(),
        "the pod was evicted"
    );
    eventually("a second SucceedMaintenance", T, || async {
        (c.events("nm-1", reasons::SUCCEED_MAINTENANCE).await == 2).then_some(())
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_failing_while_the_lease_is_still_valid_do_not_release_the_node() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    // A virtual clock at real speed and the medik8s lease of an hour: once the clock is moved
    // past the renewal point (half-way), four renewals in a row fail (more than the 3
    // tolerated) with about half an hour of the lease left, however slow the machine.
    let clock = VirtualClock::new(chrono::Utc::now(), 1.0);
    let config = test_config().with_lease_duration(Duration::from_secs(3600));
    let ctl = c.start_controller_on(config, Arc::new(clock.clone()));
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    c.sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["update"])
                .resources(&["leases"])
                .names(&["node-worker-1"])
                .limit(4),
        )
        .unwrap();
    clock.advance(chrono::Duration::minutes(31));
    // The controller sleeps until the renewal point in real time: a poke wakes it now.
    c.nms()
        .patch(
            "nm-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"nmo.test/poke": "renew"}}})),
        )
        .await
        .unwrap();
    let nm = c
        .wait_nm("nm-1", "four failed renewals", T, |nm| {
            nm.status.as_ref().and_then(|s| s.error_on_lease_count) == Some(4)
        })
        .await;
    assert_eq!(phase(&nm), Some(MaintenancePhase::Succeeded));
    assert!(in_maintenance(&c.nodes().get("worker-1").await.unwrap()));
    let nm = c
        .wait_nm("nm-1", "renewed again", T, |nm| {
            nm.status.as_ref().and_then(|s| s.error_on_lease_count) == Some(0)
        })
        .await;
    assert_eq!(phase(&nm), Some(MaintenancePhase::Succeeded));
    assert!(in_maintenance(&c.nodes().get("worker-1").await.unwrap()));
    let lease = c.leases().get("node-worker-1").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("node-maintenance"));
    // The renewal that finally went through was made on the moved clock.
    let renewed = lease.renew_time.unwrap().0.as_microsecond();
    let moved = (clock.now() - chrono::Duration::minutes(30)).timestamp_micros();
    assert!(
        renewed >= moved,
        "renewed at {renewed} µs, before the clock moved"
    );
    assert_eq!(c.events("nm-1", reasons::FAILED_MAINTENANCE).await, 0);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_lease_acquisition_failing_is_not_counted_as_a_lost_lease() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    let rule = c
        .sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["create"])
                .resources(&["leases"])
                .names(&["node-worker-1"])
                .limit(5),
        )
        .unwrap();
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    let nm = c
        .wait_nm("nm-1", "reporting the lease error", T, |nm| {
            nm.status
                .as_ref()
                .and_then(|s| s.last_error.as_deref())
                .is_some_and(|e| e.contains("failed to take the node lease"))
        })
        .await;
    assert_eq!(phase(&nm), Some(MaintenancePhase::Running));
    let nm = c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    assert_eq!(c.sandbox.faults().hits(rule), 5);
    assert_eq!(nm.status.unwrap().error_on_lease_count, Some(0));
    assert_eq!(c.events("nm-1", reasons::FAILED_MAINTENANCE).await, 0);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_node_waits_while_its_maintenance_would_break_the_quorum() {
    let c = cluster().await;
    for name in ["cp-1", "cp-2", "cp-3"] {
        c.sandbox
            .add_node(name, &[("node-role.kubernetes.io/control-plane", "")])
            .unwrap();
    }
    c.sandbox.set_node_ready("cp-2", false).unwrap();
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-cp", "cp-1").await;
    let nm = c
        .wait_nm("nm-cp", "refused for the quorum", T, |nm| {
            reason(nm, ConditionType::Reconciling).as_deref() == Some("QuorumWouldBeLost")
        })
        .await;
    assert_eq!(phase(&nm), Some(MaintenancePhase::Running));
    let err = nm.status.as_ref().unwrap().last_error.clone().unwrap();
    assert!(err.contains("control-plane node cp-1"), "{err}");
    assert_eq!(
        reason(&nm, ConditionType::Ready).as_deref(),
        Some("QuorumWouldBeLost")
    );
    assert!(!unschedulable(&c.nodes().get("cp-1").await.unwrap()));
    assert_eq!(lease_holder(&c, "cp-1").await, None, "not even leased");

    // The other control-plane node comes back: that change wakes the maintenance.
    c.sandbox.set_node_ready("cp-2", true).unwrap();
    let nm = c.wait_phase("nm-cp", MaintenancePhase::Succeeded, T).await;
    assert_eq!(nm.status.unwrap().last_error, None);
    assert!(in_maintenance(&c.nodes().get("cp-1").await.unwrap()));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_control_plane_maintenance_does_not_hold_back_one_the_quorum_allows() {
    let c = cluster().await;
    for name in ["cp-1", "cp-2", "cp-3"] {
        c.sandbox
            .add_node(name, &[("node-role.kubernetes.io/control-plane", "")])
            .unwrap();
    }
    c.sandbox.set_node_ready("cp-3", false).unwrap();
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-cp-1", "cp-1").await;
    c.wait_nm("nm-cp-1", "refused for the quorum", T, |nm| {
        reason(nm, ConditionType::Reconciling).as_deref() == Some("QuorumWouldBeLost")
    })
    .await;
    // cp-3 is down already: maintaining it leaves cp-1 and cp-2, a majority.
    c.create_nm("nm-cp-3", "cp-3").await;
    c.wait_phase("nm-cp-3", MaintenancePhase::Succeeded, T)
        .await;
    assert!(unschedulable(&c.nodes().get("cp-3").await.unwrap()));
    assert!(!unschedulable(&c.nodes().get("cp-1").await.unwrap()));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_plane_maintenances_allowed_by_one_change_never_both_cordon() {
    let c = cluster().await;
    let control_plane = ["cp-1", "cp-2", "cp-3"];
    for name in control_plane {
        c.sandbox
            .add_node(name, &[("node-role.kubernetes.io/control-plane", "")])
            .unwrap();
    }
    c.sandbox.set_node_ready("cp-3", false).unwrap();
    let cordons = follow_cordons(&c.sandbox, &control_plane);
    let ctl = c.start_controller(test_config());
    for (nm, node) in [("nm-cp-1", "cp-1"), ("nm-cp-2", "cp-2")] {
        c.create_nm(nm, node).await;
        c.wait_nm(nm, "refused for the quorum", T, |nm| {
            reason(nm, ConditionType::Reconciling).as_deref() == Some("QuorumWouldBeLost")
        })
        .await;
    }
    // cp-3 comes back: each maintenance alone would now keep a majority, both would not. The
    // change wakes both at once, and each sees the other refused.
    c.sandbox.set_node_ready("cp-3", true).unwrap();
    let first = eventually("one of the two to succeed", T, || async {
        for name in ["nm-cp-1", "nm-cp-2"] {
            let nm = c.nms().get(name).await.ok()?;
            if phase(&nm) == Some(MaintenancePhase::Succeeded) {
                return Some(name);
            }
        }
        None
    })
    .await;
    let second = if first == "nm-cp-1" {
        "nm-cp-2"
    } else {
        "nm-cp-1"
    };
    c.settle_nm(&ctl, second, "after-first").await;
    let nm = c.nms().get(second).await.unwrap();
    assert_eq!(
        reason(&nm, ConditionType::Reconciling).as_deref(),
        Some("QuorumWouldBeLost"),
        "{second} must wait while {first} holds its node: {:?}",
        nm.status
    );
    // The first is done: the second goes.
    c.delete_nm(first).await;
    wait_gone(&c.nms(), first, T).await;
    c.wait_phase(second, MaintenancePhase::Succeeded, T).await;
    let (lagged, most) = {
        let log = cordons.lock().unwrap();
        (log.lagged, log.most)
    };
    assert!(!lagged, "the node feed lagged: states were missed");
    assert_eq!(most, 1, "two control-plane nodes cordoned at once");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordon_made_during_the_maintenance_and_an_exclusion_label_from_before_are_kept() {
    let c = cluster().await;
    c.add_node("worker-1").await;
    c.nodes()
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {EXCLUDE: "true"}}})),
        )
        .await
        .unwrap();
    let ctl = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    ctl.stop().await;

    // While the operator is away, an admin uncordons and cordons again, as kubectl does
    // (strategic merge patches, field manager kubectl-cordon).
    let kubectl = PatchParams {
        field_manager: Some("kubectl-cordon".into()),
        ..Default::default()
    };
    for value in [json!(null), json!(true)] {
        c.nodes()
            .patch(
                "worker-1",
                &kubectl,
                &Patch::Strategic(json!({"spec": {"unschedulable": value}})),
            )
            .await
            .unwrap();
    }
    let ctl = c.start_controller(test_config());
    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    let node = c.nodes().get("worker-1").await.unwrap();
    assert!(unschedulable(&node), "the admin's cordon is kept");
    assert_eq!(
        node.labels().get(EXCLUDE).map(String::as_str),
        Some("true"),
        "the label was there before"
    );
    assert!(nmo::controller::node::is_free_of_maintenance(&{
        let mut n = node.clone();
        n.metadata.labels.as_mut().unwrap().remove(EXCLUDE);
        n
    }));
    assert!(!taint_keys(&node).contains(&"medik8s.io/drain".to_string()));
    ctl.stop().await;
}
