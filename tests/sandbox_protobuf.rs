//! Protobuf bodies (`application/vnd.kubernetes.protobuf`) through the sandbox: raw HTTP
//! round trips (create, get, list, watch) through a real kube client, the refusals for custom
//! resources, and the real kubectl, whose typed `kubectl create` commands send protobuf.
//! kubectl must be on the PATH: the kubectl tests fail without it.

use futures::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use nmo::sandbox::Sandbox;
use nmo::sandbox::protobuf::{self, MEDIA_TYPE};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Output;
use tokio::process::Command;

async fn sandbox() -> (Sandbox, kube::Client) {
    let s = Sandbox::builder().start().await.unwrap();
    s.install_crds().unwrap();
    let mut config = s.client_config().unwrap();
    config.default_retry = false;
    let c = kube::Client::try_from(config).unwrap();
    (s, c)
}

/// A raw request; returns (status, Content-Type, body).
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .header("Accept", accept)
        .body(kube::client::Body::from(body))
        .unwrap();
    let res = client.send(req).await.unwrap();
    let code = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (code, ct, bytes.to_vec())
}

fn lease(name: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "default", "labels": {"team": "a"}},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
            "renewTime": "2026-01-02T03:04:05.123456Z"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_created_read_and_listed_in_protobuf_and_reads_back_as_json() {
    let (_s, c) = sandbox().await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let body = protobuf::encode(&lease("pb")).unwrap();
    let (code, ct, out) = send(&c, "POST", path, MEDIA_TYPE, MEDIA_TYPE, body).await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&out));
    assert_eq!(ct, MEDIA_TYPE);
    assert!(out.starts_with(protobuf::MAGIC));
    let created = protobuf::decode(&out).unwrap();
    assert_eq!(created["spec"]["holderIdentity"], "me");
    assert_eq!(created["spec"]["renewTime"], "2026-01-02T03:04:05.123456Z");
    assert!(created["metadata"]["uid"].is_string());
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap();

    // The same object as JSON, the default.
    let (code, ct, out) = send(&c, "GET", &format!("{path}/pb"), "", "", vec![]).await;
    assert_eq!(code, 200);
    assert_eq!(ct, "application/json");
    let json: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["metadata"]["resourceVersion"], rv);
    assert_eq!(json["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(json["metadata"]["labels"], json!({"team": "a"}));

    // kubectl's Accept: protobuf first, JSON second.
    let accept = "application/vnd.kubernetes.protobuf,application/json";
    let (code, ct, out) = send(&c, "GET", &format!("{path}/pb"), "", accept, vec![]).await;
    assert_eq!((code, ct.as_str()), (200, MEDIA_TYPE));
    assert_eq!(protobuf::decode(&out).unwrap(), json);

    let (code, ct, out) = send(&c, "GET", path, "", accept, vec![]).await;
    assert_eq!((code, ct.as_str()), (200, MEDIA_TYPE));
    let list = protobuf::decode(&out).unwrap();
    assert_eq!(list["kind"], "LeaseList");
    assert_eq!(list["items"][0]["metadata"]["name"], "pb");

    // An update in protobuf.
    let mut changed = json.clone();
    changed["spec"]["holderIdentity"] = json!("you");
    let (code, _, out) = send(
        &c,
        "PUT",
        &format!("{path}/pb"),
        MEDIA_TYPE,
        "application/json",
        protobuf::encode(&changed).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
    let updated: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(updated["spec"]["holderIdentity"], "you");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_keeps_its_int_or_string_ports_quantities_and_inlined_fields() {
    let (_s, c) = sandbox().await;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{
            "name": "c", "image": "nginx",
            "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
            "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        }],
        "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}
    });
    let (code, _, out) = send(
        &c,
        "POST",
        "/api/v1/namespaces/default/pods",
        MEDIA_TYPE,
        "application/json",
        protobuf::encode(&pod).unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&out));
    let created: Value = serde_json::from_slice(&out).unwrap();
    let ctr = &created["spec"]["containers"][0];
    assert_eq!(ctr["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(ctr["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(ctr["livenessProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(ctr["env"][0]["valueFrom"]["secretKeyRef"]["name"], "s");
    assert_eq!(created["spec"]["volumes"][0]["configMap"]["name"], "cm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_watch_is_length_prefixed_watch_events() {
    let (_s, c) = sandbox().await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let (code, _, _) = send(
        &c,
        "POST",
        path,
        MEDIA_TYPE,
        "",
        protobuf::encode(&lease("w")).unwrap(),
    )
    .await;
    assert_eq!(code, 201);
    let req = Request::builder()
        .uri(format!("{path}?watch=true"))
        .header(
            "Accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )
        .body(kube::client::Body::empty())
        .unwrap();
    let res = c.send(req).await.unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    // Read until the first whole frame has arrived.
    let mut body = res.into_body().into_data_stream();
    let mut buf = Vec::new();
    loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() >= 4 + len {
                buf.truncate(4 + len);
                break;
            }
        }
        let chunk = body.next().await.expect("the watch stays open").unwrap();
        buf.extend_from_slice(&chunk);
    }
    let events = protobuf::decode_watch_stream(&buf).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Lease");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_json_only_as_in_kube_apiserver() {
    let (_s, c) = sandbox().await;
    let path = "/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances";
    // A protobuf body for a custom resource: 415, naming the accepted types.
    let (code, _, out) = send(&c, "POST", path, MEDIA_TYPE, "", b"k8s\x00\n\x00".to_vec()).await;
    assert_eq!(code, 415);
    let status: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status["reason"], "UnsupportedMediaType");
    // A client that accepts only protobuf: 406, with kube-apiserver's message.
    let (code, _, out) = send(&c, "GET", path, "", MEDIA_TYPE, vec![]).await;
    assert_eq!(code, 406);
    let status: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
    // One that accepts JSON too gets JSON.
    let accept = "application/vnd.kubernetes.protobuf,application/json";
    let (code, ct, _) = send(&c, "GET", path, "", accept, vec![]).await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
}

struct Kubectl {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(sandbox: &Sandbox) -> Self {
        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("kubeconfig");
        sandbox.write_kubeconfig(&kubeconfig).unwrap();
        Kubectl { home, kubeconfig }
    }

    async fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .kill_on_drop(true)
            .output()
            .await
            .expect("kubectl must be installed and on the PATH for these tests")
    }

    /// Run and require success; returns (stdout, stderr).
    async fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        );
        (stdout, stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_and_the_objects_read_back_whole() {
    let (s, _c) = sandbox().await;
    let k = Kubectl::new(&s);
    // -v=8 logs the headers: the typed create is a protobuf request answered in protobuf.
    let (out, log) = k.ok(&["create", "namespace", "team-a", "-v=8"]).await;
    assert!(out.contains("namespace/team-a created"), "{out}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl did not send protobuf:\n{log}"
    );
    assert!(log.contains("Response Status: 201 Created"), "{log}");

    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=3",
        "-n",
        "team-a",
    ])
    .await;
    let (json, _) = k
        .ok(&["get", "deployment", "web", "-n", "team-a", "-o", "json"])
        .await;
    let d: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");

    k.ok(&[
        "create",
        "poddisruptionbudget",
        "web",
        "--selector=app=web",
        "--min-available=2",
        "-n",
        "team-a",
    ])
    .await;
    let (json, _) = k
        .ok(&["get", "pdb", "web", "-n", "team-a", "-o", "json"])
        .await;
    let pdb: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(
        pdb["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );

    // A typed delete sends its DeleteOptions in protobuf too.
    let (_, log) = k
        .ok(&["delete", "namespace", "team-a", "--wait=false", "-v=8"])
        .await;
    assert!(!log.contains("Response Status: 415"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_configmap_secret_and_serviceaccount_keep_their_data() {
    let (s, _c) = sandbox().await;
    let k = Kubectl::new(&s);
    k.ok(&[
        "create",
        "configmap",
        "cm",
        "--from-literal=a=1",
        "--from-literal=empty=",
    ])
    .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=hunter2",
    ])
    .await;
    k.ok(&["create", "serviceaccount", "robot"]).await;
    let cm: Value =
        serde_json::from_str(&k.ok(&["get", "configmap", "cm", "-o", "json"]).await.0).unwrap();
    assert_eq!(cm["data"], json!({"a": "1", "empty": ""}));
    let sec: Value =
        serde_json::from_str(&k.ok(&["get", "secret", "sec", "-o", "json"]).await.0).unwrap();
    // base64 of "hunter2", as the bytes field is written in JSON.
    assert_eq!(sec["data"]["password"], "aHVudGVyMg==");
    // kubectl sends an empty type, which the protobuf form cannot tell from an absent one:
    // absent here, as in JSON (the server may default it to Opaque).
    assert!(sec["type"].is_null() || sec["type"] == "Opaque", "{sec}");
    let (out, _) = k
        .ok(&[
            "get",
            "serviceaccount",
            "robot",
            "-o",
            "jsonpath={.metadata.name}",
        ])
        .await;
    assert_eq!(out, "robot");
}
