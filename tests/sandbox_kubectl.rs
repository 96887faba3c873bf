//! The sandbox driven by the real kubectl, the way a person uses a cluster. Each test has its
//! own HOME and KUBECONFIG. kubectl must be on the PATH: these tests fail without it.
//!
//! What kubectl does on any cluster (apply, get columns, a CEL refusal, wait, delete on a
//! finalizer, cordon, drain held by a PDB) runs on the sandbox and on the real control plane
//! in `tests/backends.rs`; this file keeps what only the sandbox has (snapshot seeding, fault
//! injection through `kubectl --raw`).

use nmo::sandbox::{NewPod, Sandbox};
use std::path::PathBuf;
use std::process::Output;
use tokio::process::Command;

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

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .await
            .expect("kubectl must be installed and on the PATH for these tests")
    }

    /// Run and require success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn sandbox() -> Sandbox {
    Sandbox::builder()
        .speed(100.0)
        .start()
        .await
        .expect("sandbox starts")
}

/// The header and rows of `kubectl get` output, split on runs of spaces.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_snapshot_seeds_another_sandbox() {
    let a = sandbox().await;
    for n in ["worker-1", "worker-2"] {
        a.add_node(n, &[("node-role.kubernetes.io/worker", "")])
            .unwrap();
        for _ in 0..2 {
            a.create_pod(
                NewPod::new("")
                    .on_node(n)
                    .label("app", "web")
                    .replica_set("web"),
            )
            .unwrap();
        }
    }
    a.apply_yaml("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: default}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n").unwrap();
    let k = Kubectl::new(&a);
    let snapshot = k.ok(&["get", "nodes,pods,pdb", "-A", "-o", "yaml"]).await;
    let b = sandbox().await;
    let seeded = b.apply_yaml(&snapshot).unwrap();
    assert_eq!(seeded.len(), 2 + 4 + 1);
    let (pa, pb) = (a.list("v1", "Pod"), b.list("v1", "Pod"));
    assert_eq!(pb.len(), 4);
    for p in &pa {
        let q = pb
            .iter()
            .find(|q| q["metadata"]["name"] == p["metadata"]["name"])
            .unwrap();
        assert_eq!(q["metadata"]["uid"], p["metadata"]["uid"]);
        assert_eq!(
            q["metadata"]["ownerReferences"],
            p["metadata"]["ownerReferences"]
        );
        assert_eq!(q["spec"]["nodeName"], p["spec"]["nodeName"]);
    }
    let kb = Kubectl::new(&b);
    let r = rows(&kb.ok(&["get", "pdb", "web"]).await);
    assert_eq!(r[1][3], "1", "{r:?}");
    let r = rows(&kb.ok(&["get", "nodes"]).await);
    assert_eq!(r.len(), 3);
}

#[tokio::test]
async fn faults_are_switched_with_kubectl_raw_requests_and_kubectl_sees_them() {
    let sandbox = sandbox().await;
    let k = Kubectl::new(&sandbox);
    let rule = k.home.path().join("rule.json");
    std::fs::write(
        &rule,
        r#"{"fault": {"status": 503}, "verbs": ["list"], "resources": ["nodes"]}"#,
    )
    .unwrap();
    let created = k
        .ok(&[
            "create",
            "--raw",
            "/sandbox/faults",
            "-f",
            rule.to_str().unwrap(),
        ])
        .await;
    assert!(created.contains("\"id\""), "{created}");
    let out = k.run(&["get", "nodes"]).await;
    assert!(!out.status.success(), "the listing is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unable to handle the request"),
        "kubectl shows the 503 message: {stderr}"
    );
    let listed = k.ok(&["get", "--raw", "/sandbox/faults"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed["rules"][0]["hits"].as_u64().unwrap() >= 1,
        "{listed}"
    );
    k.ok(&["delete", "--raw", "/sandbox/faults"]).await;
    k.ok(&["get", "nodes"]).await;
}
