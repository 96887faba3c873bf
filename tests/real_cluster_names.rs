//! Names on a real control plane, compared with the sandbox: kube-apiserver itself refuses a
//! MaintenanceWindow name over 63 characters with the CRD's CEL message, and it names the field
//! manager of a write that gives none after the User-Agent, as the sandbox does.
//!
//! Needs the control-plane binaries (`tests/control-plane/build`): without them this fails.

#[path = "support/real_cluster.rs"]
mod real_cluster;

use http_body_util::BodyExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use nmo::api::MaintenanceWindow;
use nmo::api::maintenance_window::WINDOW_NAME_TOO_LONG;
use nmo::sandbox::Sandbox;
use real_cluster::RealCluster;
use serde_json::{Value, json};
use std::time::Duration;

/// Install nmo's CRDs and wait until the API server serves them.
async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nmo::api::crds() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        api.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within 60 s"))
        .expect("CRD watch");
    }
}

fn window(name: &str) -> MaintenanceWindow {
    serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
        "kind": "MaintenanceWindow",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 2 * * *",
            "duration": "1h",
            "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/worker": ""}},
            "release": {"after": "5m"},
        },
    }))
    .expect("a valid MaintenanceWindow")
}

/// Create a 64-character window (refused: code and message) and a 63-character one (accepted).
async fn window_names(client: &kube::Client) -> (u16, String) {
    let api: Api<MaintenanceWindow> = Api::all(client.clone());
    let err = api
        .create(&PostParams::default(), &window(&"w".repeat(64)))
        .await
        .expect_err("a 64-character window name is refused");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    api.create(&PostParams::default(), &window(&"w".repeat(63)))
        .await
        .expect("a 63-character window name is accepted");
    (status.code, status.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_name_over_63_characters_is_refused_by_kube_apiserver_with_the_cel_message() {
    let real = RealCluster::start().await;
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let sandbox_client = sandbox.client().expect("sandbox client");
    install_crds(&real.client()).await;
    install_crds(&sandbox_client).await;

    let (code, message) = window_names(&real.client()).await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains(WINDOW_NAME_TOO_LONG),
        "kube-apiserver's refusal lacks the CEL message: {message}"
    );
    // The sandbox refuses in the same words.
    let (sandbox_code, sandbox_message) = window_names(&sandbox_client).await;
    assert_eq!(
        (sandbox_code, sandbox_message.as_str()),
        (code, message.as_str()),
        "the sandbox refuses differently"
    );
    sandbox.shutdown().await;
}

/// Create a Lease named `name` in `default` with no `fieldManager`, sending `agent` as the
/// User-Agent (none for `None`); return the manager its managedFields name (`""` for an
/// entry without one, `"(none)"` for no entry).
async fn manager_of_create(client: &kube::Client, name: &str, agent: Option<&[u8]>) -> String {
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"holderIdentity": "someone"},
    });
    let mut req = http::Request::post("/apis/coordination.k8s.io/v1/namespaces/default/leases")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(agent) = agent {
        req = req.header(
            http::header::USER_AGENT,
            http::HeaderValue::from_bytes(agent).expect("a valid header value"),
        );
    }
    let req = req
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .expect("request");
    let res = client.send(req).await.expect("create sent");
    let code = res.status().as_u16();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let created: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(code, 201, "create of {name}: {created}");
    let fields = created["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(fields.len() <= 1, "{name}: {fields:?}");
    // An entry without a manager is shown as "", no entry as "(none)".
    fields.first().map_or("(none)".to_string(), |f| {
        f["manager"].as_str().unwrap_or_default().to_string()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_field_manager_is_named_after_the_user_agent_as_kube_apiserver_does() {
    let real = RealCluster::start().await;
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let sandbox_client = sandbox.client().expect("sandbox client");
    let long = format!("{}/1.0", "a".repeat(200));
    // (lease name, User-Agent, the manager kube-apiserver records)
    let cases: [(&str, Option<&[u8]>, String); 5] = [
        ("nmo", Some(b"nmo/0.1.0"), "nmo".into()),
        (
            "kubectl",
            Some(b"kubectl/v1.32.0 (linux/amd64) kubernetes/abc"),
            "kubectl".into(),
        ),
        ("no-slash", Some(b"plain agent"), "plain agent".into()),
        ("tab", Some(b"a\tb/1"), "ab".into()),
        ("long", Some(long.as_bytes()), "a".repeat(128)),
    ];
    for (name, agent, expected) in &cases {
        let real_manager = manager_of_create(&real.client(), name, *agent).await;
        assert_eq!(
            &real_manager, expected,
            "kube-apiserver, User-Agent of {name}"
        );
        let sandbox_manager = manager_of_create(&sandbox_client, name, *agent).await;
        assert_eq!(&sandbox_manager, expected, "sandbox, User-Agent of {name}");
    }
    // Nothing before the first `/`, or no User-Agent at all (kube-rs sends none of its own):
    // `unknown`.
    for (name, agent) in [
        ("none", None),
        ("empty", Some(&b""[..])),
        ("slash", Some(&b"/x"[..])),
    ] {
        let real_manager = manager_of_create(&real.client(), name, agent).await;
        assert_eq!(
            real_manager, "unknown",
            "kube-apiserver, User-Agent of {name}"
        );
        let sandbox_manager = manager_of_create(&sandbox_client, name, agent).await;
        assert_eq!(sandbox_manager, "unknown", "sandbox, User-Agent of {name}");
    }
    sandbox.shutdown().await;
}
