//! Fault injection in the sandbox, driven through the Rust API and the `/sandbox` admin
//! endpoint, and seen through a real kube client: errors worded like kube-apiserver's, 429 with
//! `Retry-After`, added latency, watches ended early, and expired watch history.

use futures::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use nmo::sandbox::{Fault, FaultRule, Sandbox};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Fail the test rather than hang when something never happens.
const DEADLINE: Duration = Duration::from_secs(30);

async fn sandbox() -> (Sandbox, kube::Client) {
    let s = Sandbox::builder().start().await.unwrap();
    let mut config = s.client_config().unwrap();
    // The client's own retry of 429/5xx would hide the injected answers.
    config.default_retry = false;
    let c = kube::Client::try_from(config).unwrap();
    (s, c)
}

/// Send a raw request; returns the response's status, headers and JSON body.
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, http::HeaderMap, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let res = client.send(req).await.unwrap();
    let code = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        code,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn api_code(result: Result<impl Sized, kube::Error>) -> Option<(u16, String)> {
    match result {
        Err(kube::Error::Api(s)) => Some((s.code, s.reason)),
        Err(other) => panic!("not an API error: {other}"),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn a_create_of_one_named_object_fails_as_told_and_others_go_through() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client);
    let id = sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["create"])
                .resources(&["nodes"])
                .names(&["b"])
                .limit(1),
        )
        .unwrap();
    let pp = PostParams::default();
    assert_eq!(api_code(nodes.create(&pp, &node("a")).await), None);
    assert_eq!(
        api_code(nodes.create(&pp, &node("b")).await),
        Some((500, "InternalError".to_string()))
    );
    assert!(
        sandbox.get("v1", "Node", "", "b").is_none(),
        "a failed create stores nothing"
    );
    assert_eq!(sandbox.faults().hits(id), 1);
    assert_eq!(
        api_code(nodes.create(&pp, &node("b")).await),
        None,
        "the limit is spent"
    );
    assert_eq!(sandbox.request_count("injected", "nodes"), 1);
}

#[tokio::test]
async fn a_conflict_and_an_unavailable_server_look_like_kube_apiserver() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("a"))
        .await
        .unwrap();
    sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(409))
                .verbs(&["patch"])
                .limit(1),
        )
        .unwrap();
    sandbox
        .faults()
        .add(FaultRule::new(Fault::Status(503)).verbs(&["get"]).limit(1))
        .unwrap();
    let patch = kube::api::Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    let pp = kube::api::PatchParams::default();
    assert_eq!(
        api_code(nodes.patch("a", &pp, &patch).await),
        Some((409, "Conflict".to_string()))
    );
    assert_eq!(
        api_code(nodes.get("a").await),
        Some((503, "ServiceUnavailable".to_string()))
    );
    // Both spent: the next requests succeed and the patch was not applied the first time.
    let patched = nodes.patch("a", &pp, &patch).await.unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["x"], "y");
}

#[tokio::test]
async fn a_429_carries_retry_after_and_names_no_disruption_budget() {
    let (sandbox, client) = sandbox().await;
    sandbox
        .faults()
        .add(FaultRule::new(Fault::TooManyRequests {
            retry_after_secs: 3,
        }))
        .unwrap();
    let (code, headers, body) = send(&client, "GET", "/api/v1/nodes", Value::Null).await;
    assert_eq!(code, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "3");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["details"]["retryAfterSeconds"], 3);
    assert!(
        !body.to_string().contains("DisruptionBudget"),
        "an API Priority and Fairness 429 is not a PDB refusal: {body}"
    );
}

#[tokio::test]
async fn latency_delays_the_matching_requests() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client);
    sandbox
        .faults()
        .add(
            FaultRule::new(Fault::latency(Duration::from_millis(300)))
                .verbs(&["list"])
                .resources(&["nodes"]),
        )
        .unwrap();
    let started = Instant::now();
    nodes.list(&Default::default()).await.unwrap();
    // A lower bound only: the delay is at least what was asked.
    assert!(started.elapsed() >= Duration::from_millis(300));
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = Result<WatchEvent<Node>, kube::Error>> + Unpin),
) -> Option<WatchEvent<Node>> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("the watch answers before the deadline")
        .map(|e| e.expect("a watch event"))
}

#[tokio::test]
async fn close_watches_ends_every_open_watch_and_a_resumed_watch_sees_later_changes() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client);
    let pp = PostParams::default();
    nodes.create(&pp, &node("a")).await.unwrap();
    let mut stream = nodes
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let Some(WatchEvent::Added(a)) = next_event(&mut stream).await else {
        panic!("the existing node comes first");
    };
    let rv = a.metadata.resource_version.unwrap();
    sandbox.close_watches();
    assert!(next_event(&mut stream).await.is_none(), "the stream ends");
    nodes.create(&pp, &node("b")).await.unwrap();
    let mut resumed = nodes
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let Some(WatchEvent::Added(b)) = next_event(&mut resumed).await else {
        panic!("the resumed watch sees the node created meanwhile");
    };
    assert_eq!(b.metadata.name.as_deref(), Some("b"));
}

#[tokio::test]
async fn an_end_watch_rule_ends_watches_long_before_their_timeout() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client);
    sandbox
        .faults()
        .add(FaultRule::new(Fault::end_watch(Duration::from_millis(50))).resources(&["nodes"]))
        .unwrap();
    // timeoutSeconds 290 as kube's watcher asks; the rule ends it after 50 ms.
    let mut stream = nodes
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .unwrap()
        .boxed();
    assert!(next_event(&mut stream).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn an_expired_history_answers_410_gone_to_a_resuming_watch() {
    let (_sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let a = nodes
        .create(&PostParams::default(), &node("a"))
        .await
        .unwrap();
    // A change after `a`, then the history that holds it is forgotten.
    nodes
        .create(&PostParams::default(), &node("b"))
        .await
        .unwrap();
    let (code, _, _) = send(
        &client,
        "POST",
        "/sandbox/watch-history/expire",
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    let mut stream = nodes
        .watch(
            &WatchParams::default(),
            &a.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let Some(WatchEvent::Error(e)) = next_event(&mut stream).await else {
        panic!("an ERROR event");
    };
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn the_admin_endpoint_adds_lists_and_removes_rules_and_refuses_bad_ones() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let (code, _, body) = send(
        &client,
        "POST",
        "/sandbox/faults",
        json!({"fault": {"status": 503}, "verbs": ["list"], "resources": ["nodes"]}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    assert_eq!(
        api_code(nodes.list(&Default::default()).await),
        Some((503, "ServiceUnavailable".to_string()))
    );
    let (_, _, listed) = send(&client, "GET", "/sandbox/faults", Value::Null).await;
    assert_eq!(listed["rules"][0]["id"], id);
    assert_eq!(listed["rules"][0]["hits"], 1);
    assert_eq!(listed["rules"][0]["rule"]["fault"]["status"], 503);

    let (code, _, body) = send(
        &client,
        "POST",
        "/sandbox/faults",
        json!({"fault": {"status": 500}, "share": 2}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().contains("share"),
        "{body}"
    );
    let (code, _, body) = send(&client, "POST", "/sandbox/faults", json!({"fault": "x"})).await;
    assert_eq!(code, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid fault rule"),
        "{body}"
    );

    let (code, _, _) = send(
        &client,
        "DELETE",
        &format!("/sandbox/faults/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, _) = send(
        &client,
        "DELETE",
        &format!("/sandbox/faults/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 404, "already removed");
    assert!(sandbox.faults().is_empty());
    nodes.list(&Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_share_of_writes_fails_and_the_rest_are_stored() {
    let (sandbox, client) = sandbox().await;
    let nodes: Api<Node> = Api::all(client);
    let id = sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["create"])
                .share(0.3),
        )
        .unwrap();
    let mut failed = 0;
    for i in 0..200 {
        if nodes
            .create(&PostParams::default(), &node(&format!("n{i}")))
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    assert_eq!(failed, sandbox.faults().hits(id));
    assert!((30..90).contains(&failed), "{failed} of 200 failed");
    assert_eq!(sandbox.list("v1", "Node").len() as u64, 200 - failed);
}
