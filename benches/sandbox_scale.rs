//! Sandbox store at scale: N nodes and 30 realistic pods (about 1.2 KB of JSON each) per node,
//! seeded into the in-process sandbox. Prints the resident memory after seeding (VmRSS, and the
//! peak VmHWM), the total JSON size of the objects, their ratio, and the latency of LIST of
//! every pod over HTTPS: the raw body (server and transfer), and decoded into k8s-openapi
//! types as a kube client does.
//!
//! `cargo bench --bench sandbox_scale` runs 1,000 nodes (30,000 pods);
//! `NMO_SCALE_NODES=5000 cargo bench --bench sandbox_scale` runs 5,000 nodes (150,000 pods).
//! NMO_SCALE_RUNS sets the number of LISTs timed (default 9).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nmo::sandbox::Sandbox;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of /proc/self/status (`VmRSS`, `VmHWM`), in MiB.
fn proc_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A node as a kubelet registers it.
fn node(i: usize) -> Value {
    let name = format!("node-{i:05}");
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/worker": "",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "spec": {"podCIDR": format!("10.{}.{}.0/24", i / 256, i % 256)},
    })
}

/// A ReplicaSet's pod, shaped like one a real cluster returns (about 1.2 KB of JSON).
fn pod(i: usize, node: &str) -> Value {
    let app = format!("app-{:03}", i % 500);
    let ns = format!("ns-{:02}", i % 20);
    let name = format!("{app}-7d9f8b6c5d-{i:06}");
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "generateName": format!("{app}-7d9f8b6c5d-"),
            "labels": {"app": app, "pod-template-hash": "7d9f8b6c5d", "tier": "backend"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{app}-7d9f8b6c5d"), "uid": "3f1c9a52-8a7e-4c1b-9d3e-5b2f6a7c8d90",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "containers": [{"name": "app", "image": format!("registry.example.com/{app}:1.4.2"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "256Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{"name": "kube-api-access", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420,
                "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
            "nodeName": node, "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"},
        "status": {
            "phase": "Running", "qosClass": "Burstable",
            "hostIP": "10.0.0.1", "podIP": format!("10.244.{}.{}", (i / 250) % 250, i % 250),
            "startTime": "2026-01-01T00:00:00Z",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "started": true,
                "image": format!("registry.example.com/{app}:1.4.2"),
                "imageID": "registry.example.com/app@sha256:4b3c2d1e0f",
                "state": {"running": {"startedAt": "2026-01-01T00:00:03Z"}}}]}
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {label:<44} p50 {:>8.1} ms   p99 {:>8.1} ms   ({} runs)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        samples.len()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nodes = env_or("NMO_SCALE_NODES", 1_000);
    let per_node = env_or("NMO_SCALE_PODS_PER_NODE", 30);
    let runs = env_or("NMO_SCALE_RUNS", 9).max(1);
    let pods = nodes * per_node;
    println!("sandbox scale: {nodes} nodes, {pods} pods");
    let rss0 = proc_mib("VmRSS");
    // No workload controllers: the seeded pods stay as they are.
    let s = Sandbox::builder()
        .workload_controllers(false)
        .start()
        .await
        .expect("sandbox starts");
    let t = Instant::now();
    let mut json_bytes = 0usize;
    for i in 0..nodes {
        let stored = s.seed(node(i)).expect("a node seeds");
        json_bytes += serde_json::to_vec(&stored).expect("serialises").len();
    }
    let mut pod_bytes = 0usize;
    for i in 0..pods {
        let stored = s
            .seed(pod(i, &format!("node-{:05}", i % nodes)))
            .expect("a pod seeds");
        pod_bytes += serde_json::to_vec(&stored).expect("serialises").len();
    }
    json_bytes += pod_bytes;
    let seed = t.elapsed();
    let rss1 = proc_mib("VmRSS");
    let hwm1 = proc_mib("VmHWM");
    println!(
        "seeding: {:.1} s ({:.0} objects/s)",
        seed.as_secs_f64(),
        (nodes + pods) as f64 / seed.as_secs_f64()
    );
    println!(
        "objects' JSON: {:.1} MiB ({} B per pod on average)",
        mib(json_bytes),
        pod_bytes / pods.max(1)
    );
    println!(
        "memory after seeding: VmRSS {rss1:.1} MiB ({:.1} MiB held; {rss0:.1} MiB before), VmHWM {hwm1:.1} MiB",
        rss1 - rss0
    );
    println!(
        "ratio resident / JSON: {:.2} (held / JSON: {:.2})",
        rss1 / mib(json_bytes),
        (rss1 - rss0) / mib(json_bytes)
    );

    let client = s.client().expect("a client");
    let raw = || {
        http::Request::get("/api/v1/pods")
            .body(Vec::new())
            .expect("a request")
    };
    let mut samples = Vec::new();
    let mut body_len = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let body = client.request_text(raw()).await.expect("list works");
        samples.push(t.elapsed());
        body_len = body.len();
    }
    println!("LIST all pods over HTTPS ({:.1} MiB body):", mib(body_len));
    report("raw body (server + transfer)", samples);
    let typed: Api<Pod> = Api::all(client.clone());
    let typed_runs = runs.min(5);
    let mut samples = Vec::new();
    let mut n = 0;
    for _ in 0..typed_runs {
        let t = Instant::now();
        let l = typed
            .list(&ListParams::default())
            .await
            .expect("list works");
        samples.push(t.elapsed());
        n = l.items.len();
    }
    assert_eq!(n, pods, "LIST returns every pod");
    report("decoded into Vec<Pod> (kube Api::list)", samples);
    let mut samples = Vec::new();
    for i in 0..runs * 10 {
        let lp = ListParams::default().fields(&format!("spec.nodeName=node-{:05}", i % nodes));
        let t = Instant::now();
        let l = typed.list(&lp).await.expect("list works");
        samples.push(t.elapsed());
        assert_eq!(l.items.len(), per_node, "a node's pods");
    }
    report("one node's pods (fieldSelector spec.nodeName)", samples);
    println!(
        "memory after the LISTs: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        proc_mib("VmRSS"),
        proc_mib("VmHWM")
    );
    s.shutdown().await;
}
