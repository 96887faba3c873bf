//! The CRDs on a real control plane: kubectl applies `crds/` and `examples/` to a real
//! kube-apiserver, whose own CEL and schema validation refuse bad NodeMaintenances and
//! MaintenanceWindows with our CRDs' messages; the same requests are sent to the sandbox, and
//! every answer that differs must be listed in `tests/control-plane/DIFFERENCES.md`.
//!
//! Needs `tests/control-plane/build` to have been run: without the binaries this fails.

#[path = "support/real_cluster.rs"]
mod real_cluster;

use http_body_util::BodyExt;
use nmo::sandbox::Sandbox;
use real_cluster::RealCluster;
use serde_json::{Value, json};
use std::path::Path;

const NM: &str = "/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances";
const MW: &str = "/apis/nodemaintenance.medik8s.io/v1alpha1/maintenancewindows";

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// Runs kubectl against one backend with its own HOME; requires success, returns stdout.
async fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("kubectl")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl must be on the PATH");
    assert!(
        out.status.success(),
        "kubectl {} failed:\nstdout: {}\nstderr: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What kubectl does first on a new cluster: the CRDs, wait until they are served, then the
/// examples.
async fn apply_crds_and_examples(home: &Path, kubeconfig: &Path) {
    let out = kubectl(home, kubeconfig, &["apply", "-f", &repo("crds/")]).await;
    assert!(
        out.contains("nodemaintenances.nodemaintenance.medik8s.io"),
        "{out}"
    );
    kubectl(
        home,
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
    )
    .await;
    let out = kubectl(home, kubeconfig, &["apply", "-f", &repo("examples/")]).await;
    assert!(out.contains("worker-3-disk-swap created"), "{out}");
    assert!(out.contains("weekly-workers created"), "{out}");
}

/// Sends a raw request; returns the status code and the body as JSON.
async fn send(client: &kube::Client, method: &str, path: &str, ct: &str, body: &Value) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .unwrap();
    let res = client.send(req).await.unwrap();
    let code = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        code,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

struct Answer {
    code: u16,
    body: Value,
}

impl Answer {
    /// The parts of a refusal that clients read: code, reason, message and the causes.
    fn refusal(&self) -> Value {
        let mut causes: Vec<Value> = self.body["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        causes.sort_by_key(|c| c.to_string());
        json!({
            "code": self.code,
            "reason": self.body["reason"],
            "message": self.body["message"],
            "causes": causes,
        })
    }
}

/// One request sent to both backends.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Value,
    /// What the real apiserver must answer: the code and a part of the message.
    code: u16,
    message: &'static str,
}

fn node_maintenance(node: &str) -> Value {
    json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "nm-bad"}, "spec": {"nodeName": node}})
}

fn window(change: impl FnOnce(&mut Value)) -> Value {
    let mut w = json!({"apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
        "kind": "MaintenanceWindow", "metadata": {"name": "w-bad"},
        "spec": {"schedule": "0 2 * * *", "duration": "4h",
            "nodeSelector": {"matchLabels": {"a": "b"}}, "release": {"after": "10m"},
            "maxUnavailable": 1}});
    change(&mut w["spec"]);
    w
}

fn cases() -> Vec<Case> {
    let create = |name, path: &str, body, code, message| Case {
        name,
        method: "POST",
        path: path.to_string(),
        content_type: "application/json",
        body,
        code,
        message,
    };
    vec![
        create(
            "nm-empty-node-name",
            NM,
            node_maintenance(""),
            422,
            "spec.nodeName must not be empty: set it to the name of a node",
        ),
        create(
            "nm-missing-node-name",
            NM,
            json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
                "metadata": {"name": "nm-bad"}, "spec": {}}),
            422,
            "spec.nodeName: Required value",
        ),
        Case {
            name: "nm-change-node-name",
            method: "PATCH",
            path: format!("{NM}/worker-3-disk-swap"),
            content_type: "application/merge-patch+json",
            body: json!({"spec": {"nodeName": "worker-4"}}),
            code: 422,
            message: "updating spec.NodeName isn't allowed",
        },
        create(
            "mw-max-unavailable-zero",
            MW,
            window(|s| s["maxUnavailable"] = json!("0%")),
            422,
            "spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%",
        ),
        create(
            "mw-bad-duration",
            MW,
            window(|s| s["duration"] = json!("4 hours")),
            422,
            "spec.duration must be a Go duration",
        ),
        create(
            "mw-empty-node-selector",
            MW,
            window(|s| s["nodeSelector"] = json!({})),
            422,
            "spec.nodeSelector must not be empty",
        ),
        create(
            "mw-release-neither-after-nor-on-reboot",
            MW,
            window(|s| s["release"] = json!({"onReboot": false})),
            422,
            "spec.release must set after",
        ),
        create(
            "mw-blank-schedule",
            MW,
            window(|s| s["schedule"] = json!("  ")),
            422,
            "spec.schedule must be a 5-field cron expression",
        ),
        create(
            "mw-schema-errors",
            MW,
            window(|s| {
                s["onWindowEnd"] = json!("Never");
                s["minReadySeconds"] = json!(-1);
                s.as_object_mut().unwrap().remove("schedule");
            }),
            422,
            "spec.schedule: Required value",
        ),
        Case {
            path: format!("{MW}?fieldValidation=Strict"),
            ..create(
                "mw-unknown-field-strict",
                MW,
                window(|s| s["unknownField"] = json!(1)),
                400,
                "unknown field \"spec.unknownField\"",
            )
        },
        Case {
            path: format!("{MW}?dryRun=All"),
            ..create("mw-valid-dry-run", MW, window(|_| {}), 201, "")
        },
    ]
}

/// The case names listed in DIFFERENCES.md as known differences (lines "- `name`: why").
fn listed_differences() -> Vec<String> {
    let text = std::fs::read_to_string(repo("tests/control-plane/DIFFERENCES.md"))
        .expect("tests/control-plane/DIFFERENCES.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cel_and_schema_refusals_match_the_sandbox() {
    let real = RealCluster::start().await;
    let sandbox = Sandbox::builder().start().await.unwrap();
    let homes = tempfile::tempdir().unwrap();
    let sandbox_kubeconfig = homes.path().join("sandbox-kubeconfig");
    sandbox.write_kubeconfig(&sandbox_kubeconfig).unwrap();
    for (name, kubeconfig) in [
        ("real", real.kubeconfig().to_path_buf()),
        ("sandbox", sandbox_kubeconfig),
    ] {
        let home = homes.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        apply_crds_and_examples(&home, &kubeconfig).await;
    }
    let version: Value = serde_json::from_str(
        &real
            .client()
            .request_text(http::Request::get("/version").body(Vec::new()).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    println!("real kube-apiserver {}", version["gitVersion"]);

    let real_client = real.client();
    let mut config = sandbox.client_config().unwrap();
    config.default_retry = false;
    let sandbox_client = kube::Client::try_from(config).unwrap();
    let listed = listed_differences();
    let mut unlisted = Vec::new();
    let mut matched = 0;
    for case in cases() {
        let r = send(
            &real_client,
            case.method,
            &case.path,
            case.content_type,
            &case.body,
        )
        .await;
        let s = send(
            &sandbox_client,
            case.method,
            &case.path,
            case.content_type,
            &case.body,
        )
        .await;
        assert_eq!(r.code, case.code, "{}: real answer {}", case.name, r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(case.message),
            "{}: real message {message:?} lacks {:?}",
            case.name,
            case.message
        );
        // A successful answer is compared by code only: its object is the differential
        // corpus's business.
        let same = if case.code < 400 {
            r.code == s.code
        } else {
            r.refusal() == s.refusal()
        };
        println!(
            "{}: {}\n  real:    {}\n  sandbox: {}",
            case.name,
            match (same, listed.iter().any(|n| n == case.name)) {
                (true, _) => "same",
                (false, true) => "DIFFERENT (listed in DIFFERENCES.md)",
                (false, false) => "DIFFERENT, NOT LISTED",
            },
            r.refusal(),
            s.refusal()
        );
        if same {
            matched += 1;
        } else if !listed.iter().any(|n| n == case.name) {
            unlisted.push(case.name);
        }
    }
    println!(
        "{matched} of {} requests answered the same by both backends",
        cases().len()
    );
    assert!(
        unlisted.is_empty(),
        "real and sandbox differ on {unlisted:?}, not listed in tests/control-plane/DIFFERENCES.md"
    );
    sandbox.shutdown().await;
}
