//! The NodeMaintenance controller under concurrency and crashes: drains of different nodes do
//! not wait for one another, and an operator killed mid-drain converges after a restart.

#[path = "node_maintenance_support.rs"]
mod support;

use nmo::api::MaintenancePhase;
use nmo::controller::node;
use nmo::sandbox::NewPod;
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_maintenances_with_five_second_pods_drain_at_the_same_time() {
    let c = cluster().await;
    c.add_node("spare").await; // where the ReplicaSet puts replacements
    for i in 0..10 {
        c.add_node(&format!("node-{i}")).await;
        c.create_pod(
            NewPod::new(&format!("slow-{i}"))
                .on_node(&format!("node-{i}"))
                .label("app", "app")
                .replica_set("app")
                .grace_period(5),
        );
    }
    let ctl = c.start_controller(test_config());
    let started = Instant::now();
    for i in 0..10 {
        c.create_nm(&format!("nm-{i}"), &format!("node-{i}")).await;
    }
    // Concurrent drains: all ten pods are terminating at one moment. Drains one after another
    // would have at most one pod in its 5 s grace period at any time.
    eventually("all ten pods terminating at once", T, || async {
        let terminating = c
            .sandbox
            .list("v1", "Pod")
            .iter()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("slow-"))
                    && p["metadata"]["deletionTimestamp"].is_string()
            })
            .count();
        (terminating == 10).then_some(())
    })
    .await;
    for i in 0..10 {
        c.wait_phase(&format!("nm-{i}"), MaintenancePhase::Succeeded, T)
            .await;
    }
    let elapsed = started.elapsed();
    println!("10 drains of a pod with a 5 s grace period took {elapsed:?}");
    // A lower bound only: Succeeded waited for the pods to be gone.
    assert!(
        elapsed >= Duration::from_secs(4),
        "the drains did not wait for the pods to terminate: {elapsed:?}"
    );
    for i in 0..10 {
        assert!(c.pods_on(&format!("node-{i}")).await.is_empty());
    }
    ctl.stop().await;
}

/// A node with pods that take 3 s to terminate, so a drain is slow enough to be interrupted.
async fn slow_node(c: &Cluster, name: &str, pods: usize) {
    c.add_node(name).await;
    c.add_node("spare").await; // where the ReplicaSet puts replacements
    for i in 0..pods {
        c.create_pod(
            NewPod::new(&format!("{name}-p{i}"))
                .on_node(name)
                .replica_set(&format!("rs-{name}"))
                .grace_period(3),
        );
    }
}

async fn wait_mid_drain(c: &Cluster, nm: &str) {
    c.wait_nm(nm, "mid-drain", T, |nm| {
        nm.status.as_ref().is_some_and(|s| {
            s.phase == Some(MaintenancePhase::Running)
                && s.pending_pods.as_ref().is_some_and(|p| !p.is_empty())
        })
    })
    .await;
    // Evictions were accepted: pods are terminating.
    eventually("a terminating pod", T, || async {
        let pods = c.pods("default").list(&Default::default()).await.ok()?;
        pods.items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

async fn assert_node_clean(c: &Cluster, name: &str) {
    let n = c.nodes().get(name).await.unwrap();
    assert!(
        node::is_free_of_maintenance(&n),
        "leaked marks: {:?}",
        n.metadata
    );
    assert!(!unschedulable(&n), "left cordoned");
    assert!(
        taint_keys(&n).is_empty(),
        "leaked taints {:?}",
        taint_keys(&n)
    );
    assert_eq!(
        c.leases().get_opt(&format!("node-{name}")).await.unwrap(),
        None,
        "leaked lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_drain_converges_after_a_restart() {
    let c = cluster().await;
    slow_node(&c, "worker-1", 6).await;
    let first = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    wait_mid_drain(&c, "nm-1").await;
    first.kill();

    let second = c.start_controller(test_config());
    let nm = c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    let status = nm.status.unwrap();
    assert_eq!(status.drain_progress, Some(100));
    assert_eq!(status.eviction_pods, Some(6), "counts survive the restart");
    assert!(c.pods_on("worker-1").await.is_empty());
    // The Event follows the status write that the watch just showed.
    eventually("one SucceedMaintenance event", T, || async {
        (c.events("nm-1", "SucceedMaintenance").await == 1).then_some(())
    })
    .await;
    assert_eq!(c.events("nm-1", "BeginMaintenance").await, 1);

    c.delete_nm("nm-1").await;
    wait_gone(&c.nms(), "nm-1", T).await;
    assert_node_clean(&c, "worker-1").await;
    // Still once each, now that both operators are done with it.
    assert_eq!(c.events("nm-1", "SucceedMaintenance").await, 1);
    assert_eq!(c.events("nm-1", "BeginMaintenance").await, 1);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_deleted_while_the_operator_is_down_is_cleaned_up_on_restart() {
    let c = cluster().await;
    slow_node(&c, "worker-1", 4).await;
    let first = c.start_controller(test_config());
    c.create_nm("nm-1", "worker-1").await;
    wait_mid_drain(&c, "nm-1").await;
    first.kill();

    c.delete_nm("nm-1").await;
    let stuck = c.nms().get("nm-1").await.unwrap();
    assert!(
        stuck.metadata.deletion_timestamp.is_some(),
        "the finalizer holds it"
    );
    let second = c.start_controller(test_config());
    wait_gone(&c.nms(), "nm-1", T).await;
    assert_node_clean(&c, "worker-1").await;
    second.stop().await;
}
