//! `/metrics`, `/healthz` and `/readyz` against the sandbox with the real controllers
//! in-process, and the client-side rate limit measured at the sandbox.

#[path = "node_maintenance_support.rs"]
mod support;

use kube::api::{Api, DeleteParams, PostParams};
use nmo::api::{MaintenancePhase, MaintenanceWindow};
use nmo::clock::SystemClock;
use nmo::controller::{self, Clients, RateLimit};
use nmo::sandbox::{Fault, FaultRule, NewPod, Sandbox};
use nmo::telemetry::{HttpServer, Telemetry};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// `GET path` over plain HTTP/1.1: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("server reachable");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .await
        .expect("response read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Sum of every series of the family `name` whose labels contain `having`.
fn sum_of(text: &str, name: &str, having: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(having))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn serve_metrics(telemetry: &Telemetry) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server =
        HttpServer::bind_metrics("127.0.0.1:0".parse().unwrap(), telemetry.metrics.clone())
            .await
            .expect("metrics server binds");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn window(name: &str, schedule: &str, extra: &str) -> MaintenanceWindow {
    let yaml = format!(
        "apiVersion: nodemaintenance.medik8s.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: {name}}}\nspec:\n  nodeSelector: {{matchLabels: {{pool: spare}}}}\n  schedule: \"{schedule}\"\n  duration: 1m\n  release: {{after: 10m}}\n{extra}"
    );
    serde_yaml::from_str(&yaml).expect("window manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_documented_series_after_a_node_maintenance_succeeds() {
    let c = cluster().await;
    c.sandbox
        .add_node("spare", &[("pool", "spare")])
        .expect("node added");
    c.add_node("worker").await;
    for i in 0..3 {
        c.create_pod(
            NewPod::new(&format!("web-{i}"))
                .on_node("worker")
                .label("app", "web")
                .grace_period(0),
        );
    }
    c.create_pod(
        NewPod::new("agent")
            .on_node("worker")
            .daemon_set("agent")
            .grace_period(0),
    );
    // Every eviction of an `app: web` pod is refused until the budget is relaxed.
    c.pdb("default", "web-pdb", "web", 3).await;
    // An open window (a minute long, opening every minute; suspended, so it starts nothing)
    // and a closed one (the first minute of each 29 February).
    let windows: Api<MaintenanceWindow> = Api::all(c.client.clone());
    for w in [
        window("open-window", "* * * * *", "  suspend: true\n"),
        window("closed-window", "0 0 29 2 *", "  suspend: true\n"),
    ] {
        windows
            .create(&PostParams::default(), &w)
            .await
            .expect("window created");
    }

    let telemetry = Telemetry::new();
    let (addr, _stop) = serve_metrics(&telemetry).await;
    let ctl = controller::start_with_telemetry(
        c.clients.clone(),
        Arc::new(SystemClock),
        test_config(),
        telemetry.clone(),
    );
    c.create_nm("nm-missing", "no-such-node").await;
    c.wait_phase("nm-missing", MaintenancePhase::Failed, WAIT)
        .await;
    c.create_nm("nm-worker", "worker").await;
    c.wait_nm("nm-worker", "blocked by the budget", WAIT, |nm| {
        nm.status
            .as_ref()
            .and_then(|s| s.last_error.as_deref())
            .is_some_and(|e| e.contains("web-pdb"))
    })
    .await;
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let blocked = sample(&text, "nmo_evictions_blocked_by_pdb_total").unwrap();
    assert!(blocked >= 1.0, "a refused eviction is counted: {text}");

    c.set_pdb_min_available("default", "web-pdb", 0).await;
    c.wait_phase("nm-worker", MaintenancePhase::Succeeded, WAIT)
        .await;

    // The gauges come from the caches: wait until they show the last writes.
    let text = eventually("the gauges to show both NodeMaintenances", WAIT, || async {
        let (_, text) = get(addr, "/metrics").await;
        let settled = sample(&text, "nmo_node_maintenances{phase=\"Succeeded\"}") == Some(1.0)
            && sample(&text, "nmo_windows_open{window=\"open-window\"}") == Some(1.0)
            && sample(&text, "nmo_windows_open{window=\"closed-window\"}") == Some(0.0);
        settled.then_some(text)
    })
    .await;
    assert_eq!(
        sample(&text, "nmo_nodes_in_maintenance"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nmo_node_maintenances{phase=\"Failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "nmo_node_maintenances{phase=\"Running\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "nmo_node_maintenances{phase=\"Pending\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "nmo_failures_total{category=\"NodeNotFound\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "nmo_drain_duration_seconds_count"), Some(1.0));
    assert_eq!(
        sample(&text, "nmo_drain_duration_seconds_bucket{le=\"+Inf\"}"),
        Some(1.0)
    );
    // The three web pods were each evicted once; the DaemonSet pod never.
    assert_eq!(
        sample(&text, "nmo_evictions_total{outcome=\"evicted\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nmo_evictions_total{outcome=\"blocked_by_pdb\"}"),
        sample(&text, "nmo_evictions_blocked_by_pdb_total"),
    );
    assert_eq!(
        sample(&text, "nmo_config_last_reload_successful"),
        Some(1.0)
    );
    for name in ["nmo_reconcile_total", "nmo_reconcile_duration_seconds"] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is documented: {text}"
        );
    }
    assert!(
        !text.contains("worker\"") && !text.contains("web-"),
        "no node or pod name is a label value: {text}"
    );

    // A deleted window's series goes with it.
    windows
        .delete("closed-window", &DeleteParams::default())
        .await
        .expect("window deleted");
    eventually("the deleted window's series to go", WAIT, || async {
        let (_, text) = get(addr, "/metrics").await;
        (!text.contains("closed-window")).then_some(())
    })
    .await;

    // Once the controllers have stopped, the counters agree with the controllers' own.
    let running = ctl.running().clone();
    ctl.stop().await;
    let (_, text) = get(addr, "/metrics").await;
    let nm_reconciles = sample(
        &text,
        "nmo_reconcile_total{controller=\"node_maintenance\"}",
    )
    .unwrap();
    assert_eq!(nm_reconciles, running.node_maintenance.total() as f64);
    assert!(nm_reconciles >= 2.0, "{text}");
    assert_eq!(
        sum_of(
            &text,
            "nmo_reconcile_errors_total",
            "controller=\"node_maintenance\""
        ),
        running.node_maintenance.errors() as f64
    );
    assert_eq!(
        sample(
            &text,
            "nmo_reconcile_duration_seconds_count{controller=\"node_maintenance\"}"
        ),
        Some(nm_reconciles)
    );
    let window_reconciles = sample(
        &text,
        "nmo_reconcile_total{controller=\"maintenance_window\"}",
    )
    .unwrap();
    assert_eq!(
        window_reconciles,
        running
            .maintenance_window
            .reconciles
            .load(std::sync::atomic::Ordering::Relaxed) as f64
    );
    assert!(
        !text.contains("nmo_windows_open{"),
        "no window series once the controller is gone: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_until_the_caches_have_synced_and_healthz_is_ok_throughout() {
    let c = cluster().await;
    let telemetry = Telemetry::new();
    let server =
        HttpServer::bind_probes("127.0.0.1:0".parse().unwrap(), telemetry.readiness.clone())
            .await
            .expect("probe server binds");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_string()));
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "no controller yet: {body}");
    assert!(body.contains("[-]controllers started"), "{body}");

    // Every list of NodeMaintenances fails: those caches cannot sync.
    let fault = c
        .sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["list"])
                .resources(&["nodemaintenances"]),
        )
        .expect("fault added");
    let ctl = controller::start_with_telemetry(
        c.clients.clone(),
        Arc::new(SystemClock),
        test_config(),
        telemetry.clone(),
    );
    eventually("a list of NodeMaintenances to fail", WAIT, || async {
        (c.sandbox.faults().hits(fault) >= 2).then_some(())
    })
    .await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("[+]controllers started ok"), "{body}");
    assert!(
        body.contains("[-]cache NodeMaintenance not ready"),
        "{body}"
    );
    assert_eq!(get(addr, "/healthz").await.0, 200);

    c.sandbox.faults().remove(fault);
    eventually("/readyz to succeed", WAIT, || async {
        let (status, body) = get(addr, "/readyz").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(
        get(addr, "/metrics").await.0,
        404,
        "metrics are served apart"
    );

    ctl.stop().await;
    let _ = stop.send(());
    serving.await.expect("the probe server stops");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// A node with 110 pods: 100 ReplicaSet pods, 4 unmanaged, 5 DaemonSet pods and a mirror pod.
fn populate_110(sandbox: &Sandbox, node: &str) {
    for i in 0..110 {
        let p = NewPod::new(&format!("{node}-{i}"))
            .on_node(node)
            .grace_period(0);
        let p = match i {
            0..=99 => p.replica_set("web"),
            100..=103 => p,
            104..=108 => p.daemon_set("agent"),
            _ => p.mirror(),
        };
        sandbox.create_pod(p).expect("pod created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_of_110_pods_at_qps_5_never_sends_more_than_the_limit_allows() {
    const QPS: f64 = 5.0;
    const BURST: u32 = 5;
    // Requests are timed as the sandbox reads them, which is after they were sent: by the
    // connection set-up and however long the server took to get to them. The bound allows a
    // request to have been sent up to this long before it was recorded. Plain HTTP keeps TLS
    // handshakes out of that delay.
    const DELIVERY: f64 = 0.5;
    let sandbox = Sandbox::builder()
        .https(false)
        .start()
        .await
        .expect("sandbox starts");
    sandbox.install_crds().expect("CRDs install");
    sandbox.add_node("spare", &[]).expect("node added");
    sandbox.add_node("worker", &[]).expect("node added");
    populate_110(&sandbox, "worker");
    let config = sandbox.client_config().expect("client config");
    let clients = Clients::from_config_with_rate_limit(
        config,
        RateLimit::new(QPS, BURST).expect("a valid limit"),
    )
    .expect("rate-limited clients");

    // From here on only the operator talks to the sandbox over HTTP: the test seeds and reads
    // in-process, so every recorded request is the operator's.
    sandbox.record_requests();
    let ctl = controller::start(clients, Arc::new(SystemClock), test_config());
    sandbox
        .apply_yaml(
            "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {name: nm-qps}\nspec: {nodeName: worker}\n",
        )
        .expect("NodeMaintenance created");
    eventually("the drain to succeed", Duration::from_secs(300), || async {
        let nm = sandbox.get(
            "nodemaintenance.medik8s.io/v1beta1",
            "NodeMaintenance",
            "",
            "nm-qps",
        )?;
        (nm["status"]["phase"] == "Succeeded").then_some(())
    })
    .await;
    ctl.stop().await;

    let requests = sandbox.recorded_requests();
    let evictions = requests
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "pods/eviction")
        .count();
    assert_eq!(evictions, 104, "each evictable pod is evicted once");
    assert!(requests.len() > BURST as usize * 4, "the limit was tested");
    let first = requests[0].at;
    let elapsed = requests[requests.len() - 1]
        .at
        .duration_since(first)
        .as_secs_f64();
    let allowed = f64::from(BURST) + QPS * (elapsed + DELIVERY);
    assert!(
        requests.len() as f64 <= allowed,
        "{} requests in {elapsed:.2} s, the limit allows {allowed:.1}",
        requests.len()
    );
    for i in 0..requests.len() {
        for j in i..requests.len() {
            let span = requests[j].at.duration_since(requests[i].at).as_secs_f64();
            let sent = (j - i + 1) as f64;
            let allowed = f64::from(BURST) + QPS * (span + DELIVERY);
            assert!(
                sent <= allowed,
                "{sent} requests within {span:.3} s (requests {i} to {j}), the limit allows {allowed:.2}"
            );
        }
    }
    println!(
        "{} requests ({evictions} evictions) in {elapsed:.1} s: {:.2} requests/s at qps {QPS} burst {BURST}",
        requests.len(),
        requests.len() as f64 / elapsed
    );
}

/// Collects what a JSON log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
            .collect()
    }
}

// A current-thread runtime: the controllers, the sandbox and every task they spawn run on this
// thread, where the capturing subscriber is the default.
#[tokio::test]
async fn every_log_line_of_a_reconcile_names_the_controller_and_the_object() {
    let c = cluster().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("nmo=debug"))
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    c.add_node("worker").await;
    c.create_pod(NewPod::new("web").on_node("worker").grace_period(0));
    let ctl = controller::start(c.clients.clone(), Arc::new(SystemClock), test_config());
    c.create_nm("nm-logged", "worker").await;
    c.wait_phase("nm-logged", MaintenancePhase::Succeeded, WAIT)
        .await;
    ctl.stop().await;

    let lines = captured.lines();
    let in_span = |line: &serde_json::Value, span: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == span))
    };
    let decided: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "decided")
        .collect();
    assert!(!decided.is_empty(), "the reconciler logged its plans");
    for line in decided {
        assert_eq!(line["span"]["name"], "reconcile", "{line}");
        assert_eq!(line["span"]["controller"], "node_maintenance", "{line}");
        assert_eq!(line["span"]["object"], "nm-logged", "{line}");
    }
    let drain: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "drain complete")
        .collect();
    assert_eq!(drain.len(), 1, "{lines:#?}");
    assert!(in_span(drain[0], "drain"), "{}", drain[0]);
    assert_eq!(drain[0]["span"]["object"], "nm-logged");
}
