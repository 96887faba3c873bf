//! Sandbox store at scale: N nodes and 30 realistic pods (about 1.2 KB of JSON each, printed)
//! per node, seeded into the in-process sandbox. Prints the resident memory after seeding
//! (VmRSS, and the peak VmHWM), the total JSON size of the objects, their ratio, and the
//! latency of LIST of every pod, split into its parts: over one warm HTTP/1.1 connection with
//! hyper alone, the time to the response head and to the whole body, over HTTPS and then
//! over plain HTTP (a second sandbox, seeded the same), and the client's parse of the body
//! into `Vec<Pod>`; then kube's `Api::list` as a controller calls it, and one node's pods.
//!
//! `cargo bench --bench sandbox_scale` runs 1,000 nodes (30,000 pods);
//! `NMO_SCALE_NODES=5000 cargo bench --bench sandbox_scale` runs 5,000 nodes (150,000 pods).
//! NMO_SCALE_RUNS sets the number of LISTs timed (default 9); NMO_SCALE_SHOW_POD=1 prints the
//! first pod as stored.

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

/// A small ReplicaSet's pod as `kubectl get pod -o json` shows it (about 1.2 KB of JSON once
/// stored, with the uid, resourceVersion and creationTimestamp the server adds): labels, an
/// owner reference, one container with resources, a port and probes, and a status with
/// conditions and a container status.
fn pod(i: usize, node: &str) -> Value {
    let app = format!("app-{:03}", i % 500);
    let ns = format!("ns-{:02}", i % 20);
    let name = format!("{app}-7d9f8b6c5d-{i:06}");
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "generateName": format!("{app}-7d9f8b6c5d-"),
            "labels": {"app": app, "pod-template-hash": "7d9f8b6c5d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{app}-7d9f8b6c5d"), "uid": "3f1c9a52-8a7e-4c1b-9d3e-5b2f6a7c8d90",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "containers": [{"name": "app", "image": format!("registry.example.com/{app}:1.4.2"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "nodeName": node, "serviceAccountName": "default"},
        "status": {
            "phase": "Running", "qosClass": "Burstable",
            "hostIP": "10.0.0.1", "podIP": format!("10.244.{}.{}", (i / 250) % 250, i % 250),
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                "image": format!("registry.example.com/{app}:1.4.2"),
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

/// Seed `nodes` nodes and `pods` pods; returns the objects' JSON size and the pods' alone.
fn seed_cluster(s: &Sandbox, nodes: usize, pods: usize) -> (usize, usize) {
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
        if i == 0 && std::env::var("NMO_SCALE_SHOW_POD").is_ok() {
            println!("{}", serde_json::to_string(&stored).expect("serialises"));
        }
        pod_bytes += serde_json::to_vec(&stored).expect("serialises").len();
    }
    (json_bytes + pod_bytes, pod_bytes)
}

/// A rustls client configuration trusting the sandbox's CA, speaking HTTP/1.1.
fn tls_connector(ca_der: &[u8]) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .expect("the sandbox CA");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// An HTTP/1.1 connection (TLS with `tls`) with hyper and nothing else.
async fn connect(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    tcp.set_nodelay(true).expect("nodelay");
    macro_rules! handshake {
        ($io:expr) => {{
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            sender
        }};
    }
    match tls {
        Some(c) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1")
                .expect("a server name");
            let stream = c.connect(name, tcp).await.expect("TLS handshake");
            handshake!(stream)
        }
        None => handshake!(tcp),
    }
}

/// One GET of `path` on `sender`: the time to the response head, the time to the whole body,
/// and the body.
async fn raw_get(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    addr: &str,
    path: &str,
) -> (Duration, Duration, bytes::Bytes) {
    use http_body_util::{BodyExt, Empty};
    let request = http::Request::get(path)
        .header(http::header::HOST, addr)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .expect("a request");
    sender.ready().await.expect("the connection is ready");
    let t = Instant::now();
    let response = sender.send_request(request).await.expect("a response");
    let head = t.elapsed();
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    (head, t.elapsed(), body)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nodes = env_or("NMO_SCALE_NODES", 1_000);
    let per_node = env_or("NMO_SCALE_PODS_PER_NODE", 30);
    let runs = env_or("NMO_SCALE_RUNS", 9).max(1);
    let pods = nodes * per_node;
    println!("sandbox scale: {nodes} nodes, {pods} pods");
    for (first, https) in [(true, true), (false, false)] {
        let scheme = if https { "HTTPS" } else { "HTTP" };
        let rss0 = proc_mib("VmRSS");
        // No workload controllers: the seeded pods stay as they are.
        let s = Sandbox::builder()
            .workload_controllers(false)
            .https(https)
            .start()
            .await
            .expect("sandbox starts");
        let t = Instant::now();
        let (json_bytes, pod_bytes) = seed_cluster(&s, nodes, pods);
        let seed = t.elapsed();
        if first {
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
        }
        let addr = s
            .url()
            .split("://")
            .nth(1)
            .expect("a URL with a scheme")
            .to_string();
        let tls = s.ca_pem().map(|_| {
            let config = s.client_config().expect("a config");
            tls_connector(&config.root_cert.expect("a CA")[0])
        });
        let (mut heads, mut totals, mut parses) = (Vec::new(), Vec::new(), Vec::new());
        let mut body_len = 0;
        let mut sender = connect(&addr, tls.as_ref()).await;
        // One request first: the connection is warm, as a client's pooled one.
        raw_get(&mut sender, &addr, "/api/v1/namespaces/default").await;
        for _ in 0..runs {
            let (head, total, body) = raw_get(&mut sender, &addr, "/api/v1/pods").await;
            heads.push(head);
            totals.push(total);
            body_len = body.len();
            let t = Instant::now();
            let list: k8s_openapi::List<Pod> = serde_json::from_slice(&body).expect("a PodList");
            parses.push(t.elapsed());
            assert_eq!(list.items.len(), pods, "LIST returns every pod");
        }
        println!(
            "LIST all pods over {scheme}, HTTP/1.1 with hyper ({:.1} MiB body):",
            mib(body_len)
        );
        report("response head (server: select, build)", heads);
        report("whole body (server + transfer)", totals);
        report("client parse into Vec<Pod> (serde_json)", parses);
        if first {
            let client = s.client().expect("a client");
            let typed: Api<Pod> = Api::all(client.clone());
            let typed_runs = runs.min(5);
            let mut samples = Vec::new();
            for _ in 0..typed_runs {
                let t = Instant::now();
                let l = typed
                    .list(&ListParams::default())
                    .await
                    .expect("list works");
                samples.push(t.elapsed());
                assert_eq!(l.items.len(), pods, "LIST returns every pod");
            }
            report("kube Api::<Pod>::list (all of it)", samples);
            let mut samples = Vec::new();
            for i in 0..runs * 10 {
                let lp =
                    ListParams::default().fields(&format!("spec.nodeName=node-{:05}", i % nodes));
                let t = Instant::now();
                let l = typed.list(&lp).await.expect("list works");
                samples.push(t.elapsed());
                assert_eq!(l.items.len(), per_node, "a node's pods");
            }
            report("one node's pods (fieldSelector spec.nodeName)", samples);
        }
        println!(
            "memory after the LISTs: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            proc_mib("VmRSS"),
            proc_mib("VmHWM")
        );
        s.shutdown().await;
    }
}
