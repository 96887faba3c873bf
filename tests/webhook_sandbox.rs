//! The sandbox calling registered ValidatingWebhookConfigurations, checked with a webhook
//! that records what it gets: which writes reach which webhook (rules, subresources,
//! `matchPolicy: Equivalent`, selectors), dry runs and side effects, refusals and warnings as
//! clients see them, and the failure policy when a webhook cannot be reached, times out or
//! presents a certificate the caBundle does not vouch for.

#[path = "support/recording_webhook.rs"]
mod recording_webhook;
#[path = "support/webhook_env.rs"]
mod webhook_env;

use http_body_util::BodyExt;
use nmo::sandbox::{NewPod, Sandbox};
use recording_webhook::{Answer, RecordingWebhook};
use serde_json::{Value, json};
use webhook_env::Pki;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const VWCS: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

/// One answer of the sandbox: code, `Warning` headers and body.
struct Answered {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

async fn send(client: &kube::Client, method: &str, path: &str, body: Option<&Value>) -> Answered {
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(kube::client::Body::from(
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        ))
        .unwrap();
    let resp = client.send(req).await.expect("the sandbox answers");
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answered {
        code,
        warnings,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn lease(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "labels": labels}, "spec": {"holderIdentity": "test"}})
}

/// Register one webhook (replacing the previous registration).
async fn register(client: &kube::Client, ca_pem: &str, webhook: Value) {
    let _ = send(client, "DELETE", &format!("{VWCS}/test"), None).await;
    let mut w = json!({
        "name": "recorder.example.com",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"caBundle": base64(ca_pem)},
    });
    for (k, v) in webhook.as_object().unwrap() {
        w[k] = v.clone();
    }
    let vwc = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "test"}, "webhooks": [w]});
    let a = send(client, "POST", VWCS, Some(&vwc)).await;
    assert_eq!(a.code, 201, "{}", a.body);
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn rule(operations: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!([{"operations": operations, "apiGroups": groups, "apiVersions": ["*"], "resources": resources}])
}

struct Env {
    sandbox: Sandbox,
    client: kube::Client,
    pki: Pki,
    webhook: RecordingWebhook,
}

async fn env() -> Env {
    let sandbox = Sandbox::builder().start().await.unwrap();
    let client = sandbox.client().unwrap();
    let pki = Pki::new("recorder CA");
    let webhook = RecordingWebhook::start(&pki.serving_pair("recorder")).await;
    Env {
        sandbox,
        client,
        pki,
        webhook,
    }
}

#[tokio::test]
async fn dry_runs_reach_webhooks_without_side_effects_and_are_refused_for_others() {
    let e = env().await;
    let url = e.webhook.url();
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": base64(&e.pki.ca_pem())},
        "rules": rule(&["CREATE"], &["coordination.k8s.io"], &["leases"])}),
    )
    .await;
    let a = send(
        &e.client,
        "POST",
        &format!("{LEASES}?dryRun=All"),
        Some(&lease("l1", json!({}))),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    let seen = e.webhook.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0]["request"];
    assert_eq!(req["dryRun"], true);
    assert_eq!(req["options"]["dryRun"], json!(["All"]));
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["object"]["metadata"]["name"], "l1");
    assert_eq!(req["object"]["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(req["namespace"], "default");
    assert_eq!(
        send(&e.client, "GET", &format!("{LEASES}/l1"), None)
            .await
            .code,
        404,
        "a dry run stores nothing"
    );

    // admissionregistration/v1 takes only webhooks without side effects, as kube-apiserver
    // does; one stored otherwise (seeded, as from an older cluster) is refused dry runs.
    let legacy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "legacy"}, "webhooks": [{
            "name": "recorder.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "Some",
            "clientConfig": {"url": url, "caBundle": base64(&e.pki.ca_pem())},
            "rules": rule(&["CREATE"], &["coordination.k8s.io"], &["leases"])}]});
    let a = send(&e.client, "POST", VWCS, Some(&legacy)).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "ValidatingWebhookConfiguration.admissionregistration.k8s.io \"legacy\" is invalid: webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""
    );
    assert_eq!(
        send(&e.client, "DELETE", &format!("{VWCS}/test"), None)
            .await
            .code,
        200
    );
    e.sandbox.seed(legacy).unwrap();
    let a = send(
        &e.client,
        "POST",
        &format!("{LEASES}?dryRun=All"),
        Some(&lease("l1", json!({}))),
    )
    .await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "admission webhook \"recorder.example.com\" does not support dry run"
    );
    assert_eq!(
        e.webhook.requests().len(),
        1,
        "not called for the refused dry run"
    );
    let a = send(&e.client, "POST", LEASES, Some(&lease("l1", json!({})))).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(e.webhook.requests().len(), 2, "called for the real create");
    assert_eq!(e.webhook.requests()[1]["request"]["dryRun"], false);
}

#[tokio::test]
async fn refusals_and_warnings_reach_the_client() {
    let e = env().await;
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": e.webhook.url(), "caBundle": base64(&e.pki.ca_pem())},
        "rules": rule(&["CREATE", "UPDATE"], &["*"], &["leases"])}),
    )
    .await;
    e.webhook.answer(Answer::Allow(vec![
        "first \"warning\"".into(),
        "second".into(),
    ]));
    let a = send(&e.client, "POST", LEASES, Some(&lease("l1", json!({})))).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.warnings,
        ["299 - \"first \\\"warning\\\"\"", "299 - \"second\""]
    );

    e.webhook.answer(Answer::Deny(
        403,
        "leases are frozen".into(),
        vec!["frozen until Monday".into()],
    ));
    let a = send(
        &e.client,
        "PATCH",
        &format!("{LEASES}/l1"),
        Some(&json!({"spec": {"holderIdentity": "other"}})),
    )
    .await;
    assert_eq!(a.code, 403, "{}", a.body);
    assert_eq!(a.body["reason"], "Forbidden");
    assert_eq!(
        a.body["message"],
        "admission webhook \"recorder.example.com\" denied the request: leases are frozen"
    );
    assert_eq!(
        a.warnings,
        ["299 - \"frozen until Monday\""],
        "warnings come with a refusal too"
    );
    let req = &e.webhook.requests()[1]["request"];
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(req["oldObject"]["spec"]["holderIdentity"], "test");
    assert_eq!(req["object"]["spec"]["holderIdentity"], "other");
    let stored = send(&e.client, "GET", &format!("{LEASES}/l1"), None).await;
    assert_eq!(
        stored.body["spec"]["holderIdentity"], "test",
        "a refused patch changes nothing"
    );

    // A code below 400 is raised to 400, as kube-apiserver does.
    e.webhook.answer(Answer::Deny(200, "odd".into(), vec![]));
    let a = send(&e.client, "POST", LEASES, Some(&lease("l2", json!({})))).await;
    assert_eq!(a.code, 400, "{}", a.body);
}

#[tokio::test]
async fn the_failure_policy_decides_when_a_webhook_cannot_answer() {
    let e = env().await;
    let ca = base64(&e.pki.ca_pem());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreachable = format!("https://127.0.0.1:{closed}/check");
    let rules = rule(&["CREATE"], &["*"], &["leases"]);

    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": unreachable, "caBundle": ca}, "rules": rules}),
    )
    .await;
    let a = send(&e.client, "POST", LEASES, Some(&lease("l1", json!({})))).await;
    assert_eq!(a.code, 500, "{}", a.body);
    assert_eq!(a.body["reason"], "InternalError");
    assert_eq!(
        a.body["message"],
        format!(
            "Internal error occurred: failed calling webhook \"recorder.example.com\": failed to call webhook: Post \"https://127.0.0.1:{closed}/check?timeout=10s\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )
    );

    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": unreachable, "caBundle": ca},
        "failurePolicy": "Ignore", "rules": rules}),
    )
    .await;
    let a = send(&e.client, "POST", LEASES, Some(&lease("l1", json!({})))).await;
    assert_eq!(
        a.code, 201,
        "failurePolicy Ignore lets it through: {}",
        a.body
    );

    e.webhook.answer(Answer::Hang);
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": e.webhook.url(), "caBundle": ca},
        "timeoutSeconds": 1, "rules": rules}),
    )
    .await;
    let a = send(&e.client, "POST", LEASES, Some(&lease("l2", json!({})))).await;
    assert_eq!(a.code, 500, "{}", a.body);
    assert_eq!(
        a.body["message"],
        format!(
            "Internal error occurred: failed calling webhook \"recorder.example.com\": failed to call webhook: Post \"{}?timeout=1s\": context deadline exceeded",
            e.webhook.url()
        )
    );

    let other_ca = Pki::new("some other CA");
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": e.webhook.url(), "caBundle": base64(&other_ca.ca_pem())},
        "rules": rules}),
    )
    .await;
    let a = send(&e.client, "POST", LEASES, Some(&lease("l2", json!({})))).await;
    assert_eq!(a.code, 500, "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().ends_with(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        ),
        "{}",
        a.body
    );

    register(&e.client, &e.pki.ca_pem(), json!({"clientConfig": {"service": {"namespace": "nmo-system", "name": "nmo-webhook", "path": "/check"}, "caBundle": ca},
        "rules": rules})).await;
    let a = send(&e.client, "POST", LEASES, Some(&lease("l2", json!({})))).await;
    assert_eq!(a.code, 500, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "Internal error occurred: failed calling webhook \"recorder.example.com\": failed to call webhook: Post \"https://nmo-webhook.nmo-system.svc:443/check?timeout=10s\": service \"nmo-webhook\" not found"
    );
}

#[tokio::test]
async fn rules_select_subresources_equivalent_versions_namespaces_objects_deletes_and_evictions() {
    let e = env().await;
    let ca = base64(&e.pki.ca_pem());
    let url = e.webhook.url();
    let called = || e.webhook.requests().len();

    // The status subresource only.
    e.sandbox.add_node("n1", &[]).unwrap();
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": ca},
        "rules": rule(&["UPDATE"], &[""], &["nodes/status"])}),
    )
    .await;
    let a = send(
        &e.client,
        "PATCH",
        "/api/v1/nodes/n1",
        Some(&json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await;
    assert_eq!(
        (a.code, called()),
        (200, 0),
        "the main resource is not nodes/status"
    );
    let a = send(
        &e.client,
        "PATCH",
        "/api/v1/nodes/n1/status",
        Some(&json!({"status": {"phase": "Running"}})),
    )
    .await;
    assert_eq!((a.code, called()), (200, 1), "{}", a.body);
    assert_eq!(e.webhook.requests()[0]["request"]["subResource"], "status");

    // events.k8s.io/v1 Events are v1 Events in another API: with matchPolicy Equivalent a
    // rule for one gets the other, in the version it asked for.
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": ca},
        "rules": rule(&["CREATE"], &["events.k8s.io"], &["events"])}),
    )
    .await;
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Test", "message": "hello", "type": "Normal"});
    let a = send(
        &e.client,
        "POST",
        "/api/v1/namespaces/default/events",
        Some(&event),
    )
    .await;
    assert_eq!((a.code, called()), (201, 2), "{}", a.body);
    let req = &e.webhook.requests()[1]["request"];
    assert_eq!(
        req["resource"],
        json!({"group": "events.k8s.io", "version": "v1", "resource": "events"})
    );
    assert_eq!(
        req["requestResource"],
        json!({"group": "", "version": "v1", "resource": "events"})
    );
    assert_eq!(req["object"]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(req["object"]["note"], "hello");
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": ca},
        "matchPolicy": "Exact", "rules": rule(&["CREATE"], &["events.k8s.io"], &["events"])}),
    )
    .await;
    let event2 = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e2"},
        "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Test", "message": "hi", "type": "Normal"});
    let a = send(
        &e.client,
        "POST",
        "/api/v1/namespaces/default/events",
        Some(&event2),
    )
    .await;
    assert_eq!(
        (a.code, called()),
        (201, 2),
        "Exact leaves the other API out"
    );

    // namespaceSelector and objectSelector.
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"env": "prod"}}});
    assert_eq!(
        send(&e.client, "POST", "/api/v1/namespaces", Some(&ns))
            .await
            .code,
        201
    );
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": ca},
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
        "objectSelector": {"matchExpressions": [{"key": "checked", "operator": "Exists"}]},
        "rules": rule(&["CREATE", "DELETE"], &["coordination.k8s.io"], &["leases"])}),
    )
    .await;
    let labelled = lease("l1", json!({"checked": "yes"}));
    let a = send(&e.client, "POST", LEASES, Some(&labelled)).await;
    assert_eq!(
        (a.code, called()),
        (201, 2),
        "default is not a prod namespace"
    );
    let prod = "/apis/coordination.k8s.io/v1/namespaces/prod/leases";
    let a = send(&e.client, "POST", prod, Some(&lease("plain", json!({})))).await;
    assert_eq!((a.code, called()), (201, 2), "no `checked` label");
    let a = send(&e.client, "POST", prod, Some(&labelled)).await;
    assert_eq!((a.code, called()), (201, 3), "{}", a.body);

    // A delete sends the old object and no object.
    e.webhook
        .answer(Answer::Deny(403, "keep it".into(), vec![]));
    let a = send(&e.client, "DELETE", &format!("{prod}/l1"), None).await;
    assert_eq!(a.code, 403, "{}", a.body);
    let req = &e.webhook.requests()[3]["request"];
    assert_eq!(req["operation"], "DELETE");
    assert_eq!(req["object"], Value::Null);
    assert_eq!(req["oldObject"]["metadata"]["name"], "l1");
    assert_eq!(req["options"]["kind"], "DeleteOptions");
    assert_eq!(
        send(&e.client, "GET", &format!("{prod}/l1"), None)
            .await
            .code,
        200,
        "still there"
    );
    let a = send(&e.client, "DELETE", prod, None).await;
    assert_eq!(
        a.code, 403,
        "a delete of the collection is refused item by item: {}",
        a.body
    );

    // An eviction is a CREATE of pods/eviction with the Eviction as the object.
    e.sandbox
        .create_pod(NewPod::new("p1").on_node("n1"))
        .unwrap();
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": ca},
        "rules": rule(&["CREATE"], &[""], &["pods/eviction"])}),
    )
    .await;
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p1", "namespace": "default"}});
    let a = send(
        &e.client,
        "POST",
        "/api/v1/namespaces/default/pods/p1/eviction",
        Some(&eviction),
    )
    .await;
    assert_eq!(a.code, 403, "{}", a.body);
    let req = &e.webhook.requests()[5]["request"];
    assert_eq!(
        req["kind"],
        json!({"group": "policy", "version": "v1", "kind": "Eviction"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(req["subResource"], "eviction");
    assert_eq!(req["name"], "p1");
    assert_eq!(req["object"]["kind"], "Eviction");
    e.webhook.answer(Answer::Allow(vec![]));
    let a = send(
        &e.client,
        "POST",
        "/api/v1/namespaces/default/pods/p1/eviction",
        Some(&eviction),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);

    // Webhook configurations themselves are never sent to webhooks.
    register(
        &e.client,
        &e.pki.ca_pem(),
        json!({"clientConfig": {"url": url, "caBundle": ca},
        "rules": rule(&["*"], &["*"], &["*"])}),
    )
    .await;
    let before = called();
    let a = send(&e.client, "DELETE", &format!("{VWCS}/test"), None).await;
    assert_eq!((a.code, called()), (200, before));
}

#[tokio::test]
async fn a_binding_is_admitted_as_a_create_of_pods_binding() {
    let sandbox = Sandbox::builder()
        .workload_controllers(false)
        .start()
        .await
        .unwrap();
    let client = sandbox.client().unwrap();
    let pki = Pki::new("recorder CA");
    let webhook = RecordingWebhook::start(&pki.serving_pair("recorder")).await;
    sandbox.add_node("n1", &[]).unwrap();
    sandbox.create_pod(NewPod::new("pending")).unwrap();
    register(
        &client,
        &pki.ca_pem(),
        json!({"clientConfig": {"url": webhook.url(), "caBundle": base64(&pki.ca_pem())},
        "rules": rule(&["CREATE"], &[""], &["pods/binding"])}),
    )
    .await;
    webhook.answer(Answer::Deny(403, "not there".into(), vec![]));
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "pending"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}});
    let path = "/api/v1/namespaces/default/pods/pending/binding";
    let a = send(&client, "POST", path, Some(&binding)).await;
    assert_eq!(a.code, 403, "{}", a.body);
    let req = &webhook.requests()[0]["request"];
    assert_eq!(
        req["kind"],
        json!({"group": "", "version": "v1", "kind": "Binding"})
    );
    assert_eq!(req["subResource"], "binding");
    assert_eq!(req["object"]["target"]["name"], "n1");
    webhook.answer(Answer::Allow(vec![]));
    let a = send(&client, "POST", path, Some(&binding)).await;
    assert_eq!(a.code, 201, "{}", a.body);
    let pod = send(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/pending",
        None,
    )
    .await;
    assert_eq!(pod.body["spec"]["nodeName"], "n1");
}
