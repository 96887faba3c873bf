//! NodeMaintenance benchmarks against the sandbox, printing their figures:
//!
//! 1. latency from NodeMaintenance creation to node cordoned (target: p50 under 100 ms);
//! 2. drain time of a node with 110 pods, nmo versus
//!    `kubectl drain --ignore-daemonsets --delete-emptydir-data --force` of an identical node on
//!    the same sandbox (target: nmo no slower).
//!
//! Run with `cargo bench --bench node_maintenance`.

#[path = "../tests/node_maintenance_support.rs"]
mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use nmo::api::MaintenancePhase;
use nmo::sandbox::NewPod;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const CORDON_SAMPLES: usize = 40;
const PODS: usize = 110;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let kubectl_ok = runtime.block_on(async {
        cordon_latency().await;
        drain_110_pods(0).await & drain_110_pods(2).await
    });
    if !kubectl_ok {
        // The figures above are printed; the comparison is incomplete.
        std::process::exit(1);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn cordon_latency() {
    let c = cluster().await;
    let ctl = c.start_controller(test_config());
    let mut samples = Vec::with_capacity(CORDON_SAMPLES);
    for i in 0..CORDON_SAMPLES {
        let name = format!("cordon-{i}");
        c.add_node(&name).await;
        // Watch the node before creating the NodeMaintenance, so no change is missed.
        let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut nodes = watcher(c.nodes(), wc).applied_objects().boxed();
        let _ = nodes.next().await; // the node as listed
        let started = Instant::now();
        c.create_nm(&format!("nm-{i}"), &name).await;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), nodes.next()).await {
                Ok(Some(Ok(node))) if cordoned(&node) => break,
                Ok(Some(_)) => continue,
                _ => panic!("node {name} was not cordoned within 10 s"),
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "NodeMaintenance creation -> node cordoned ({CORDON_SAMPLES} samples): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (target p50 < 100 ms)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(*samples.last().unwrap()),
    );
    ctl.stop().await;
}

fn cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A node with 110 pods: 100 ReplicaSet pods, 4 unmanaged, 5 DaemonSet pods and a mirror pod,
/// each with the given grace period.
async fn populate(c: &Cluster, node: &str, grace: i64) {
    c.add_node(node).await;
    for i in 0..PODS {
        let name = format!("{node}-{i}");
        let p = NewPod::new(&name).on_node(node).grace_period(grace);
        match i {
            0..=99 => c.create_pod(p.replica_set(&format!("rs-{node}"))),
            100..=103 => c.create_pod(p),
            104..=108 => c.create_pod(p.daemon_set(&format!("ds-{node}"))),
            _ => c.create_pod(p.mirror()),
        }
    }
}

/// Returns whether kubectl could drain its node.
async fn drain_110_pods(grace: i64) -> bool {
    let c = cluster().await;
    c.add_node("spare").await; // where the ReplicaSets put replacements
    populate(&c, "nmo-node", grace).await;
    populate(&c, "kubectl-node", grace).await;

    // nmo
    let ctl = c.start_controller(test_config());
    let started = Instant::now();
    c.create_nm("nm-bench", "nmo-node").await;
    c.wait_phase(
        "nm-bench",
        MaintenancePhase::Succeeded,
        Duration::from_secs(120),
    )
    .await;
    let nmo_time = started.elapsed();
    ctl.stop().await;
    let left = c.pods_on("nmo-node").await.len();

    // kubectl drain on the same sandbox, with its own HOME and kubeconfig.
    let home = tempfile::tempdir().expect("temp HOME");
    let kubeconfig = home.path().join("kubeconfig");
    c.sandbox
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let out = Command::new("kubectl")
            .args([
                "drain",
                "kubectl-node",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--force",
                "--timeout=120s",
            ])
            .env("HOME", home.path())
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("kubectl is on the PATH");
        drop(home);
        out
    })
    .await
    .expect("kubectl ran");
    let kubectl_time = started.elapsed();
    if !out.status.success() {
        println!(
            "drain of {PODS} pods (grace {grace} s): nmo {:.0} ms ({left} pods left); kubectl drain FAILED against the sandbox after {:.0} ms: {}",
            ms(nmo_time),
            ms(kubectl_time),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return false;
    }
    let kubectl_left = c.pods_on("kubectl-node").await.len();
    println!(
        "drain of {PODS} pods (grace {grace} s): nmo {:.0} ms ({left} pods left), kubectl drain {:.0} ms ({kubectl_left} pods left); nmo/kubectl = {:.2} (target <= 1)",
        ms(nmo_time),
        ms(kubectl_time),
        nmo_time.as_secs_f64() / kubectl_time.as_secs_f64()
    );
    true
}
