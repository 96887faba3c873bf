//! The servers of `nmo run`, as the real binary: the validating webhook (`--webhook-cert-dir`),
//! which the sandbox calls for a registered ValidatingWebhookConfiguration and whose refusals
//! kubectl shows; `/metrics`, `/healthz` and `/readyz`. The webhook's certificate is a
//! self-signed one that is its own caBundle, as `openssl req -x509` makes, which
//! kube-apiserver (Go) accepts.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use nmo::sandbox::Sandbox;
use std::process::{Command, Stdio};
use std::time::Duration;

fn kubectl(
    home: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be on the PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn nm(node: &str) -> String {
    format!(
        "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {{generateName: nm-}}\nspec: {{nodeName: {node}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmo_run_serves_the_webhook_that_refuses_bad_node_maintenances() {
    let sandbox = Sandbox::builder().start().await.unwrap();
    sandbox.install_crds().unwrap();
    sandbox.add_node("worker-1", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    // Self-signed and flagged as a CA, like `openssl req -x509 ... -addext subjectAltName=IP:127.0.0.1`.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(certs.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(certs.join("tls.key"), key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--webhook-cert-dir")
        .arg(&certs)
        .args([
            "--webhook-bind-address",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind-address",
            "0",
            "--health-probe-bind-address",
            "0",
            "--no-maintenance-windows",
        ])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nmo starts");

    let vwc: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nmo"},
        "webhooks": [{
            "name": "nodemaintenance.nmo.medik8s.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate-nodemaintenance"),
                "caBundle": base64_of(cert.pem().as_bytes())},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["nodemaintenance.medik8s.io"],
                "apiVersions": ["*"], "resources": ["nodemaintenances"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail"}]
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(sandbox.client().unwrap())
        .create(&PostParams::default(), &vwc)
        .await
        .unwrap();

    // Until the webhook listens, the sandbox cannot call it and refuses (failurePolicy Fail);
    // then the webhook's own refusal comes back.
    let home = dir.path();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ghost = loop {
        let (ok, out) = kubectl(home, &kubeconfig, &["create", "-f", "-"], &nm("ghost"));
        assert!(
            !ok,
            "a NodeMaintenance for a missing node was accepted: {out}"
        );
        if out.contains("denied the request") {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook never answered: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        ghost.contains("admission webhook \"nodemaintenance.nmo.medik8s.io\" denied the request: invalid nodeName, no node with name ghost found"),
        "{ghost}"
    );
    let (ok, out) = kubectl(home, &kubeconfig, &["create", "-f", "-"], &nm("worker-1"));
    assert!(ok, "{out}");
    for args in [
        vec!["create", "-f", "-"],
        vec!["create", "--dry-run=server", "-f", "-"],
    ] {
        let (ok, out) = kubectl(home, &kubeconfig, &args, &nm("worker-1"));
        assert!(
            !ok,
            "{args:?}: a second NodeMaintenance was accepted: {out}"
        );
        assert!(
            out.contains("invalid nodeName, a NodeMaintenance for node worker-1 already exists"),
            "{args:?}: {out}"
        );
    }
    let nms = sandbox.list("nodemaintenance.medik8s.io/v1beta1", "NodeMaintenance");
    assert_eq!(nms.len(), 1, "only the first was stored");

    stop_with_sigterm(&mut operator).await;
    sandbox.shutdown().await;
}

/// SIGTERM to `nmo run`, which must exit 0.
async fn stop_with_sigterm(operator: &mut tokio::process::Child) {
    let pid = operator.id().expect("running") as i32;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), operator.wait())
        .await
        .expect("nmo exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A GET over plain HTTP/1.0; returns the status code and the body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmo_run_serves_metrics_and_probes_that_turn_ready_once_its_caches_sync() {
    let sandbox = Sandbox::builder().start().await.unwrap();
    sandbox.install_crds().unwrap();
    sandbox.add_node("worker-1", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    // Every list of NodeMaintenances fails at first: the caches cannot sync.
    let blocked = sandbox
        .faults()
        .add(
            nmo::sandbox::FaultRule::new(nmo::sandbox::Fault::Status(500))
                .verbs(&["list"])
                .resources(&["nodemaintenances"]),
        )
        .expect("a valid fault rule");
    let (metrics, probes) = (free_port(), free_port());
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_nmo"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{metrics}"),
            "--health-probe-bind-address",
            &format!("127.0.0.1:{probes}"),
        ])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nmo starts");
    let wait_for = |what: &'static str, port: u16, path: &'static str, code: u16| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((c, body)) = http_get(port, path).await
                && c == code
            {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let not_ready = wait_for("/readyz 503 while lists fail", probes, "/readyz", 503).await;
    assert!(not_ready.contains("NodeMaintenance"), "{not_ready}");
    let (code, _) = http_get(probes, "/healthz")
        .await
        .expect("/healthz answers");
    assert_eq!(code, 200, "live while not ready");
    sandbox.faults().remove(blocked);
    wait_for("/readyz 200 once the caches sync", probes, "/readyz", 200).await;
    sandbox
        .apply_yaml("apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {name: nm-1}\nspec: {nodeName: worker-1}\n")
        .unwrap();
    let body = wait_for("/metrics", metrics, "/metrics", 200).await;
    for series in [
        "# TYPE nmo_nodes_in_maintenance gauge",
        "# TYPE nmo_drain_duration_seconds histogram",
        "# TYPE nmo_evictions_blocked_by_pdb_total counter",
        "# TYPE nmo_reconcile_errors_total counter",
        "nmo_config_last_reload_successful 1",
    ] {
        assert!(body.contains(series), "missing {series:?} in:\n{body}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(metrics, "/metrics").await.expect("/metrics");
        if body.contains("nmo_nodes_in_maintenance 1")
            && body.contains("nmo_node_maintenances{phase=\"Succeeded\"} 1")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the NodeMaintenance never showed in /metrics:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_with_sigterm(&mut operator).await;
    sandbox.shutdown().await;
}
