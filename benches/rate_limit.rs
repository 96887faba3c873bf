//! Evictions per second of one drain against the sandbox under the client-side rate limit: at
//! controller-runtime's default (`--kube-api-qps 20 --kube-api-burst 30`) and at a high limit
//! (1000/1000), where the sandbox and the drain's own concurrency (100 evictions in flight)
//! set the pace instead.
//!
//! Run with `cargo bench --bench rate_limit`.

use nmo::clock::SystemClock;
use nmo::controller::{self, Clients, ControllerConfig, RateLimit};
use nmo::sandbox::{NewPod, Sandbox};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pods on the drained node, all evictable.
const PODS: usize = 400;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let high = RateLimit::new(1000.0, 1000).expect("a valid limit");
        for limit in [RateLimit::default(), high] {
            drain_under(limit).await;
        }
    });
}

async fn drain_under(limit: RateLimit) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    sandbox.install_crds().expect("CRDs install");
    sandbox.add_node("worker", &[]).expect("node added");
    for i in 0..PODS {
        sandbox
            .create_pod(
                NewPod::new(&format!("pod-{i}"))
                    .on_node("worker")
                    .grace_period(0),
            )
            .expect("pod created");
    }
    let clients = Clients::from_config_with_rate_limit(
        sandbox.client_config().expect("client config"),
        limit,
    )
    .expect("clients");
    let mut config = ControllerConfig::default();
    config.node_maintenance.drain.retry_initial = Duration::from_millis(100);
    config.node_maintenance.drain.retry_max = Duration::from_millis(400);

    // The bench reads and writes the sandbox in-process: every request recorded is nmo's.
    sandbox.record_requests();
    let ctl = controller::start(clients, Arc::new(SystemClock), config);
    let started = Instant::now();
    sandbox
        .apply_yaml(
            "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {name: bench}\nspec: {nodeName: worker}\n",
        )
        .expect("NodeMaintenance created");
    let deadline = started + Duration::from_secs(600);
    loop {
        let phase = sandbox
            .get(
                "nodemaintenance.medik8s.io/v1beta1",
                "NodeMaintenance",
                "",
                "bench",
            )
            .map(|nm| nm["status"]["phase"].clone());
        if phase.as_ref().and_then(|p| p.as_str()) == Some("Succeeded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not finish in 10 minutes (phase {phase:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    ctl.stop().await;

    let requests = sandbox.recorded_requests();
    let evictions: Vec<Instant> = requests
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "pods/eviction")
        .map(|r| r.at)
        .collect();
    let span = match (evictions.first(), evictions.last()) {
        (Some(first), Some(last)) => last.duration_since(*first),
        _ => Duration::ZERO,
    };
    let rate = if span.is_zero() {
        f64::INFINITY
    } else {
        (evictions.len() - 1) as f64 / span.as_secs_f64()
    };
    println!(
        "client-side limit qps {} burst {}: {} evictions of {PODS} pods at {rate:.1} evictions/s \
         (first to last eviction {:.2} s); drain to Succeeded {:.2} s; {} requests in all",
        limit.qps,
        limit.burst,
        evictions.len(),
        span.as_secs_f64(),
        total.as_secs_f64(),
        requests.len(),
    );
    let mut by_kind: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for r in &requests {
        *by_kind
            .entry((r.verb.clone(), r.resource.clone()))
            .or_default() += 1;
    }
    let mut by_kind: Vec<_> = by_kind.into_iter().collect();
    by_kind.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let top: Vec<String> = by_kind
        .iter()
        .take(4)
        .map(|((verb, resource), n)| format!("{n} {verb} {resource}"))
        .collect();
    println!("  requests by kind: {}", top.join(", "));
    sandbox.shutdown().await;
}
