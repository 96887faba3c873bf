//! Bad requests get 4xx `Status` answers worded like kube-apiserver's, and never crash the
//! sandbox.

use http::Request;
use http_body_util::BodyExt;
use kube::api::{Api, PostParams};
use nmo::api::MaintenanceWindow;
use nmo::sandbox::Sandbox;
use serde_json::{Value, json};

/// Send a raw request through a real kube client; returns (status code, body as JSON).
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(kube::client::Body::from(body.to_vec()))
        .unwrap();
    let res = client.send(req).await.unwrap();
    let code = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn sandbox() -> (Sandbox, kube::Client) {
    let s = Sandbox::builder().start().await.unwrap();
    s.install_crds().unwrap();
    let mut config = s.client_config().unwrap();
    config.default_retry = false;
    let c = kube::Client::try_from(config).unwrap();
    (s, c)
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Method, path, content type, body, expected code and reason.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_status_answers_and_the_server_keeps_serving() {
    let (s, c) = sandbox().await;
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/apis/nowhere.io/v1/things",
            "",
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/missing",
            "",
            vec![],
            404,
            "NotFound",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            b"{not json".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "text/plain",
            b"hello".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/vnd.kubernetes.protobuf",
            // Protobuf is read for built-in kinds; this envelope is cut short (its TypeMeta
            // says 11 bytes, 9 follow): 400, as kube-apiserver answers.
            b"k8s\x00\n\x0b\n\x02v1\x12\x03Pod".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/v1/nodes/missing",
            "application/merge-patch+json",
            b"{}".to_vec(),
            404,
            "NotFound",
        ),
        (
            "PATCH",
            "/api/v1/nodes/missing",
            "application/vnd.kubernetes.protobuf",
            b"\x00".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=a%20b%20c",
            "",
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?continue=%21%21",
            "",
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?limit=abc",
            "",
            vec![],
            400,
            "BadRequest",
        ),
        (
            "PUT",
            "/api/v1/namespaces",
            "application/json",
            b"{}".to_vec(),
            405,
            "MethodNotAllowed",
        ),
        (
            "POST",
            "/api/v1/namespaces/nowhere/pods",
            "application/json",
            br#"{"metadata":{"name":"p"}}"#.to_vec(),
            404,
            "NotFound",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            br#"{"kind":"Node","metadata":{"name":"p"}}"#.to_vec(),
            400,
            "BadRequest",
        ),
    ];
    for (method, path, ct, body, code, reason) in cases {
        let (got, status) = send(&c, method, path, ct, &body).await;
        assert_eq!(got, code, "{method} {path}: {status}");
        assert_status(&status, code, reason);
    }
    let (code, v) = send(&c, "GET", "/version", "", &[]).await;
    assert_eq!((code, v["minor"].as_str()), (200, Some("32")));
    assert_eq!(
        send(
            &c,
            "GET",
            "/api/v1/namespaces/default/pods/missing",
            "",
            &[]
        )
        .await
        .1["message"],
        "pods \"missing\" not found"
    );
    drop(s);
}

#[tokio::test]
async fn a_stale_resource_version_is_a_409_conflict() {
    let (_s, c) = sandbox().await;
    let body = br#"{"metadata":{"name":"l"},"spec":{"holderIdentity":"a"}}"#;
    let (code, created) = send(
        &c,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        "application/json",
        body,
    )
    .await;
    assert_eq!(code, 201);
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["holderIdentity"] = json!("b");
    let (code, status) = send(
        &c,
        "PUT",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
        "application/json",
        stale.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 409);
    assert_status(&status, 409, "Conflict");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"l\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // A delete with a wrong uid precondition conflicts as well.
    let pre = br#"{"preconditions":{"uid":"nope"}}"#;
    let (code, status) = send(
        &c,
        "DELETE",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
        "application/json",
        pre,
    )
    .await;
    assert_eq!(code, 409, "{status}");
}

#[tokio::test]
async fn custom_resources_are_validated_pruned_and_dry_run_does_not_persist() {
    let (s, c) = sandbox().await;
    let window = |max: Value| {
        json!({"apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
            "metadata": {"name": "w"}, "spec": {"schedule": "0 2 * * *", "duration": "4h",
            "nodeSelector": {"matchLabels": {"a": "b"}}, "release": {"after": "10m"},
            "maxUnavailable": max, "unknownField": 1}})
    };
    let path = "/apis/nodemaintenance.medik8s.io/v1alpha1/maintenancewindows";
    let (code, status) = send(
        &c,
        "POST",
        path,
        "application/json",
        window(json!("0%")).to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "MaintenanceWindow.nodemaintenance.medik8s.io \"w\" is invalid: spec.maxUnavailable: Invalid value: \"0%\": spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.maxUnavailable"
    );
    assert_eq!(status["details"]["kind"], "MaintenanceWindow");
    assert_eq!(status["details"]["group"], "nodemaintenance.medik8s.io");
    // Schema: types, required, enum.
    let mut bad = window(json!(1));
    bad["spec"]["onWindowEnd"] = json!("Never");
    bad["spec"]["minReadySeconds"] = json!(-1);
    bad["spec"].as_object_mut().unwrap().remove("schedule");
    let (code, status) = send(
        &c,
        "POST",
        path,
        "application/json",
        bad.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let msg = status["message"].as_str().unwrap();
    assert!(msg.contains("spec.schedule: Required value"), "{msg}");
    assert!(msg.contains("spec.onWindowEnd: Unsupported value: \"Never\": supported values: \"FinishInFlight\", \"Abort\""), "{msg}");
    assert!(msg.contains("spec.minReadySeconds: Invalid value: -1: spec.minReadySeconds in body should be greater than or equal to 0"), "{msg}");
    // fieldValidation=Strict (kubectl's default) refuses unknown fields instead of pruning.
    let (code, status) = send(
        &c,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        "application/json",
        window(json!(1)).to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "MaintenanceWindow in version \"v1alpha1\" cannot be handled as a MaintenanceWindow: strict decoding error: unknown field \"spec.unknownField\""
    );
    // dryRun=All answers like a create but stores nothing.
    let (code, dry) = send(
        &c,
        "POST",
        &format!("{path}?dryRun=All"),
        "application/json",
        window(json!(1)).to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 201, "{dry}");
    assert!(
        dry["spec"].get("unknownField").is_none(),
        "unknown fields are pruned: {dry}"
    );
    assert!(
        s.get(
            "nodemaintenance.medik8s.io/v1alpha1",
            "MaintenanceWindow",
            "",
            "w"
        )
        .is_none()
    );
    // A real create prunes too.
    let api: Api<MaintenanceWindow> = Api::all(c.clone());
    let w: MaintenanceWindow = serde_json::from_value(window(json!(1))).unwrap();
    api.create(&PostParams::default(), &w).await.unwrap();
    let stored = s
        .get(
            "nodemaintenance.medik8s.io/v1alpha1",
            "MaintenanceWindow",
            "",
            "w",
        )
        .unwrap();
    assert!(stored["spec"].get("unknownField").is_none());
}

#[tokio::test]
async fn an_anonymous_client_is_refused_when_a_token_is_required() {
    let s = Sandbox::builder().token("s3cret").start().await.unwrap();
    let good = s.client().unwrap();
    let (code, _) = send(&good, "GET", "/api/v1/nodes", "", &[]).await;
    assert_eq!(code, 200);
    let mut config = s.client_config().unwrap();
    config.headers.clear();
    let anonymous = kube::Client::try_from(config).unwrap();
    let (code, status) = send(&anonymous, "GET", "/api/v1/nodes", "", &[]).await;
    assert_eq!(code, 401);
    assert_status(&status, 401, "Unauthorized");
}

#[tokio::test]
async fn an_unserved_resource_under_a_namespace_is_404_not_the_namespace() {
    let (_s, c) = sandbox().await;
    for path in [
        "/api/v1/namespaces/default/widgets",
        "/api/v1/namespaces/default/secretz",
        "/api/v1/namespaces/default/nodes",
        "/api/v1/namespaces/default/frobs/x",
    ] {
        let (code, body) = send(&c, "GET", path, "", b"").await;
        assert_eq!(code, 404, "{path}: {body}");
        assert_status(&body, 404, "NotFound");
        assert_eq!(
            body["message"], "the server could not find the requested resource",
            "{path}"
        );
    }
    let (code, body) = send(&c, "GET", "/api/v1/namespaces/default", "", b"").await;
    assert_eq!((code, body["kind"].as_str()), (200, Some("Namespace")));
    let (code, body) = send(&c, "GET", "/api/v1/namespaces/default/pods", "", b"").await;
    assert_eq!((code, body["kind"].as_str()), (200, Some("PodList")));
    // ConfigMaps are served (every built-in kind is): a list, never the Namespace.
    let (code, body) = send(&c, "GET", "/api/v1/namespaces/default/configmaps", "", b"").await;
    assert_eq!((code, body["kind"].as_str()), (200, Some("ConfigMapList")));
}
