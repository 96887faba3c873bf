//! nmo's webhook server on its own: certificate rotation the way cert-manager does it,
//! graceful shutdown with a review in flight, and the HTTP answers to AdmissionReviews sent
//! directly (what the apiserver would send), including when the cluster cannot be read.

#[path = "support/recording_webhook.rs"]
mod recording_webhook;
#[path = "support/webhook_env.rs"]
mod webhook_env;

use nmo::admission::webhook::{WebhookConfig, WebhookServer};
use nmo::sandbox::{Fault, FaultRule, Sandbox};
use recording_webhook::{post, served_certificate};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use webhook_env::{Pki, RunningWebhook};

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Wait for `condition`, up to 30 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lay out a certificate directory as a Kubernetes secret volume does: the files live in a
/// timestamped folder, `..data` points at it, and `tls.crt`/`tls.key` point through `..data`.
/// Rotating writes a new folder and swaps `..data` with a rename.
fn secret_volume_update(dir: &Path, generation: u32, (cert, key): &(String, String)) {
    let folder = format!("..2026_12_02_00_00_0{generation}");
    std::fs::create_dir(dir.join(&folder)).unwrap();
    std::fs::write(dir.join(&folder).join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join(&folder).join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&folder, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(file)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_presented_on_the_next_handshake_without_a_restart() {
    let pki = Pki::new("rotation CA");
    let dir = tempfile::tempdir().unwrap();
    let first = pki.serving_pair("first");
    secret_volume_update(dir.path(), 1, &first);
    let server = WebhookServer::bind(&WebhookConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let certificates = server.certificates();
    let sandbox = Sandbox::builder().start().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(sandbox.client().unwrap(), async {
        let _ = stopped.await;
    }));
    assert_eq!(served_certificate(addr, &pki.ca_pem()).await, der(&first.0));

    let second = pki.serving_pair("second");
    secret_volume_update(dir.path(), 2, &second);
    eventually("a new handshake presents the new certificate", async || {
        served_certificate(addr, &pki.ca_pem()).await == der(&second.0)
    })
    .await;
    assert_eq!(certificates.state().loads, 2);

    // A broken pair (the key of another certificate) is refused and the last good one stays.
    let stranger = pki.serving_pair("stranger");
    secret_volume_update(dir.path(), 3, &(pki.serving_pair("third").0, stranger.1));
    // A reload may also catch the two files half-way through the swap (one read before it,
    // one after): wait for the state after the last event, which reads the broken pair.
    eventually("the broken pair is refused", async || {
        certificates
            .state()
            .last_error
            .is_some_and(|e| e.contains("do not make a pair"))
    })
    .await;
    let state = certificates.state();
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("do not make a pair")),
        "{state:?}"
    );
    assert_eq!(
        served_certificate(addr, &pki.ca_pem()).await,
        der(&second.0)
    );

    // The next good pair is served, and the error is cleared.
    let fourth = pki.serving_pair("fourth");
    secret_volume_update(dir.path(), 4, &fourth);
    eventually("the next good pair is served", async || {
        served_certificate(addr, &pki.ca_pem()).await == der(&fourth.0)
    })
    .await;
    assert_eq!(certificates.state().last_error, None);

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_certificate_rewritten_in_place_is_reloaded() {
    let pki = Pki::new("in-place CA");
    let dir = tempfile::tempdir().unwrap();
    let first = pki.serving_pair("first");
    webhook_env::write_pair(dir.path(), &first);
    let sandbox = Sandbox::builder().start().await.unwrap();
    let server = WebhookServer::bind(&WebhookConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let running = tokio::spawn(server.run(sandbox.client().unwrap(), std::future::pending()));
    assert_eq!(served_certificate(addr, &pki.ca_pem()).await, der(&first.0));
    let second = pki.serving_pair("second");
    webhook_env::write_pair(dir.path(), &second);
    eventually("the rewritten pair is served", async || {
        served_certificate(addr, &pki.ca_pem()).await == der(&second.0)
    })
    .await;
    running.abort();
}

#[tokio::test]
async fn the_server_refuses_to_start_without_a_usable_pair() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let err = WebhookServer::bind(&WebhookConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.path().to_path_buf(),
    })
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.starts_with("webhook: no usable certificate in "),
        "{err}"
    );
    assert!(err.contains("tls.crt holds no certificate"), "{err}");
}

/// An AdmissionReview as kube-apiserver sends it.
fn review(operation: &str, object: Value, old: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "7c1b6a44-0000-4000-8000-000000000001",
        "kind": {"group": "nodemaintenance.medik8s.io", "version": "v1beta1", "kind": "NodeMaintenance"},
        "resource": {"group": "nodemaintenance.medik8s.io", "version": "v1beta1", "resource": "nodemaintenances"},
        "name": object["metadata"]["name"].as_str().or(old["metadata"]["name"].as_str()).unwrap_or(""),
        "operation": operation,
        "userInfo": {"username": "admin"},
        "object": object, "oldObject": old, "dryRun": false}})
}

fn nm_json(name: &str, node: &str) -> Value {
    json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": name}, "spec": {"nodeName": node}})
}

#[tokio::test]
async fn reviews_sent_directly_get_admission_responses() {
    let sandbox = Sandbox::builder().start().await.unwrap();
    sandbox.install_crds().unwrap();
    let webhook = RunningWebhook::start(sandbox.client().unwrap()).await;
    let ca = webhook.pki.ca_pem();

    // nodeName is immutable: the webhook refuses it too, for CRDs without the CEL rule.
    let (code, body) = post(
        webhook.addr,
        &ca,
        "POST",
        "/validate-nodemaintenance",
        &review("UPDATE", nm_json("m", "worker-2"), nm_json("m", "worker-1")),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        "7c1b6a44-0000-4000-8000-000000000001"
    );
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["status"],
        json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "updating spec.NodeName isn't allowed"})
    );

    // A delete is always allowed.
    let (code, body) = post(
        webhook.addr,
        &ca,
        "POST",
        "/validate-nodemaintenance",
        &review("DELETE", Value::Null, nm_json("m", "ghost")),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["response"]["allowed"],
        true
    );

    // Not a review, another path, another method.
    let (code, body) = post(
        webhook.addr,
        &ca,
        "POST",
        "/validate-nodemaintenance",
        &json!({"a": 1}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("cannot decode the AdmissionReview"), "{body}");
    let (code, _) = post(webhook.addr, &ca, "POST", "/validate-pods", &json!({})).await;
    assert_eq!(code, 404);
    let (code, _) = post(
        webhook.addr,
        &ca,
        "GET",
        "/validate-maintenancewindow",
        &json!({}),
    )
    .await;
    assert_eq!(code, 405);

    // When the cluster cannot be read the webhook cannot decide: 503 with a Status naming the
    // read, for the apiserver's failurePolicy.
    sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["get"])
                .resources(&["nodes"]),
        )
        .unwrap();
    let (code, body) = post(
        webhook.addr,
        &ca,
        "POST",
        "/validate-nodemaintenance",
        &review("CREATE", nm_json("m", "worker-1"), Value::Null),
    )
    .await;
    assert_eq!(code, 503, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "ServiceUnavailable");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot check the NodeMaintenance: cannot get the node: "),
        "{message}"
    );
    webhook.stop().await;
}

#[tokio::test]
async fn shutdown_answers_the_review_in_flight_and_then_stops_accepting() {
    let sandbox = Sandbox::builder().start().await.unwrap();
    sandbox.install_crds().unwrap();
    // The webhook's read of the node is slow, so the review is in flight at shutdown.
    sandbox
        .faults()
        .add(
            FaultRule::new(Fault::latency(Duration::from_millis(1500)))
                .verbs(&["get"])
                .resources(&["nodes"]),
        )
        .unwrap();
    let pki = Pki::new("shutdown CA");
    let dir = tempfile::tempdir().unwrap();
    webhook_env::write_pair(dir.path(), &pki.serving_pair("webhook"));
    let server = WebhookServer::bind(&WebhookConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(sandbox.client().unwrap(), async {
        let _ = stopped.await;
    }));
    let ca = pki.ca_pem();
    let in_flight = tokio::spawn(async move {
        post(
            addr,
            &ca,
            "POST",
            "/validate-nodemaintenance",
            &review("CREATE", nm_json("m", "ghost"), Value::Null),
        )
        .await
    });
    eventually("the webhook is reading the node", async || {
        sandbox.request_count("get", "nodes") > 0
    })
    .await;
    stop.send(()).unwrap();
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["response"]["status"]["message"],
        "invalid nodeName, no node with name ghost found"
    );
    running.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed once the server has stopped"
    );
}
