//! The sandbox driven by the real kubectl, the way a person uses a cluster. Each test has its
//! own HOME and KUBECONFIG. kubectl must be on the PATH: these tests fail without it.

use kube::api::{Api, Patch, PatchParams};
use nmo::api::{MaintenanceWindow, NodeMaintenance};
use nmo::sandbox::{NewPod, Sandbox};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tokio::process::{Child, Command};

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

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl must be installed and on the PATH for these tests")
    }
}

async fn sandbox() -> Sandbox {
    Sandbox::builder()
        .speed(100.0)
        .start()
        .await
        .expect("sandbox starts")
}

async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
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
async fn kubectl_applies_crds_and_examples_client_side_and_server_side() {
    let s = sandbox().await;
    let k = Kubectl::new(&s);
    let out = k.ok(&["apply", "-f", &repo("crds/")]).await;
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/nodemaintenances.nodemaintenance.medik8s.io created"), "{out}");
    let out = k.ok(&["apply", "-f", &repo("examples/")]).await;
    assert!(
        out.contains("maintenancewindow.nodemaintenance.medik8s.io/weekly-workers created"),
        "{out}"
    );
    assert!(
        out.contains("nodemaintenance.nodemaintenance.medik8s.io/worker-3-disk-swap created"),
        "{out}"
    );
    // Re-applied unchanged: nothing to do.
    let out = k.ok(&["apply", "-f", &repo("examples/")]).await;
    assert!(
        out.contains("maintenancewindow.nodemaintenance.medik8s.io/weekly-workers unchanged"),
        "{out}"
    );
    // Re-applied after a change (client-side apply: a merge patch with last-applied).
    let dir = tempfile::tempdir().unwrap();
    let changed = std::fs::read_to_string(repo("examples/weekly-workers-berlin.yaml"))
        .unwrap()
        .replace("Weekly OS patching", "Weekly kernel patching");
    std::fs::write(dir.path().join("w.yaml"), changed).unwrap();
    let file = dir.path().join("w.yaml").display().to_string();
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("weekly-workers configured"), "{out}");
    let reason = k
        .ok(&[
            "get",
            "mw",
            "weekly-workers",
            "-o",
            "jsonpath={.spec.reason}",
        ])
        .await;
    assert_eq!(reason, "Weekly kernel patching");
    // And server-side.
    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &repo("examples/"),
        ])
        .await;
    assert!(out.contains("weekly-workers serverside-applied"), "{out}");
    let reason = k
        .ok(&[
            "get",
            "mw",
            "weekly-workers",
            "-o",
            "jsonpath={.spec.reason}",
        ])
        .await;
    assert_eq!(reason, "Weekly OS patching");
    let managers = k
        .ok(&[
            "get",
            "mw",
            "weekly-workers",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(managers.contains("kubectl"), "{managers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_the_printer_columns_of_nm_and_mw() {
    let s = sandbox().await;
    s.install_crds().unwrap();
    let k = Kubectl::new(&s);
    k.ok(&["apply", "-f", &repo("examples/")]).await;
    let mws: Api<MaintenanceWindow> = Api::all(s.client().unwrap());
    let status = json!({"status": {"progress": "1/4", "conditions": [{"type": "Ready", "status": "True",
        "reason": "Idle", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    mws.patch_status(
        "weekly-workers",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .unwrap();
    let out = k.ok(&["get", "mw"]).await;
    let r = rows(&out);
    assert_eq!(
        r[0],
        [
            "NAME", "SCHEDULE", "TIMEZONE", "WINDOW", "NEXT", "PROGRESS", "READY", "AGE"
        ],
        "{out}"
    );
    let weekly = r.iter().find(|row| row[0] == "weekly-workers").unwrap();
    assert_eq!(&weekly[1..3], ["0 2 * * SAT", "Europe/Berlin"], "{out}");
    assert!(
        weekly.contains(&"1/4".to_string()) && weekly.contains(&"True".to_string()),
        "{out}"
    );
    assert!(weekly.last().unwrap().ends_with('s'), "age column: {out}");
    let out = k.ok(&["get", "nm"]).await;
    let r = rows(&out);
    assert_eq!(
        r[0],
        ["NAME", "NODE", "PHASE", "PROGRESS", "REASON", "AGE"],
        "{out}"
    );
    assert_eq!(&r[1][0..2], ["worker-3-disk-swap", "worker-3"], "{out}");
    // Short names, categories and -o wide/yaml work too.
    k.ok(&["get", "nodemaintenances", "-o", "yaml"]).await;
    let out = k.ok(&["get", "maintenance"]).await;
    assert!(
        out.contains("weekly-workers") && out.contains("worker-3-disk-swap"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_cordon_shows_scheduling_disabled() {
    let s = sandbox().await;
    s.add_node("worker-1", &[("node-role.kubernetes.io/worker", "")])
        .unwrap();
    let k = Kubectl::new(&s);
    let out = k.ok(&["cordon", "worker-1"]).await;
    assert!(out.contains("node/worker-1 cordoned"), "{out}");
    let r = rows(&k.ok(&["get", "nodes"]).await);
    assert_eq!(r[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(
        &r[1][0..3],
        ["worker-1", "Ready,SchedulingDisabled", "worker"]
    );
    s.set_node_ready("worker-1", false).unwrap();
    k.ok(&["uncordon", "worker-1"]).await;
    let r = rows(&k.ok(&["get", "nodes"]).await);
    assert_eq!(r[1][1], "NotReady");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_and_waits_on_a_pdb_until_it_allows_a_disruption() {
    let s = sandbox().await;
    for n in ["worker-1", "worker-2"] {
        s.add_node(n, &[]).unwrap();
    }
    for _ in 0..2 {
        s.create_pod(
            NewPod::new("")
                .on_node("worker-1")
                .label("app", "web")
                .replica_set("web")
                .grace_period(30),
        )
        .unwrap();
    }
    s.create_pod(
        NewPod::new("")
            .namespace("kube-system")
            .on_node("worker-1")
            .daemon_set("agent"),
    )
    .unwrap();
    s.apply_yaml("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: default}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: web}}\n").unwrap();
    let k = Kubectl::new(&s);
    let drain = k.spawn(&["drain", "worker-1", "--ignore-daemonsets", "--timeout=90s"]);
    // kubectl retries the 429s every 5 s; wait until it has been refused at least once.
    eventually(30, "a refused eviction", || {
        let n = s.request_count("create", "pods/eviction");
        async move { (n >= 2).then_some(()) }
    })
    .await;
    assert_eq!(
        s.list("v1", "Pod")
            .iter()
            .filter(
                |p| p["spec"]["nodeName"] == "worker-1" && p["metadata"]["labels"]["app"] == "web"
            )
            .count(),
        2
    );
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(s.client().unwrap(), "default");
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), drain.wait_with_output())
        .await
        .expect("drain finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("node/worker-1 drained"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{stderr}"
    );
    let pods = s.list("v1", "Pod");
    let web_on = |n: &str| {
        pods.iter()
            .filter(|p| p["spec"]["nodeName"] == n && p["metadata"]["labels"]["app"] == "web")
            .count()
    };
    assert_eq!((web_on("worker-1"), web_on("worker-2")), (0, 2));
    let r = rows(&k.ok(&["get", "node", "worker-1"]).await);
    assert_eq!(r[1][1], "Ready,SchedulingDisabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_sees_a_condition_set_on_a_cr() {
    let s = sandbox().await;
    s.install_crds().unwrap();
    let k = Kubectl::new(&s);
    k.ok(&["apply", "-f", &repo("examples/weekly-workers-berlin.yaml")])
        .await;
    let wait = k.spawn(&[
        "wait",
        "mw/weekly-workers",
        "--for=condition=Ready",
        "--timeout=60s",
    ]);
    eventually(20, "kubectl wait to watch", || {
        let n = s.request_count("watch", "maintenancewindows")
            + s.request_count("get", "maintenancewindows");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let mws: Api<MaintenanceWindow> = Api::all(s.client().unwrap());
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Idle",
        "message": "waiting for the next window", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    mws.patch_status(
        "weekly-workers",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), wait.wait_with_output())
        .await
        .expect("wait returns")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_waits_for_the_finalizer_to_go() {
    let s = sandbox().await;
    s.install_crds().unwrap();
    s.apply_yaml("apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata:\n  name: nm1\n  finalizers: [foregroundDeleteNodeMaintenance]\nspec:\n  nodeName: worker-1\n").unwrap();
    let k = Kubectl::new(&s);
    let mut delete = k.spawn(&["delete", "nm", "nm1", "--timeout=60s"]);
    eventually(20, "the deletionTimestamp", || {
        let o = s.get(
            "nodemaintenance.medik8s.io/v1beta1",
            "NodeMaintenance",
            "",
            "nm1",
        );
        async move {
            o.filter(|o| o["metadata"]["deletionTimestamp"].is_string())
                .map(|_| ())
        }
    })
    .await;
    // kubectl waits for the deletion by watching the object: once its watch is open, it is
    // waiting, and it must still be running.
    eventually(20, "kubectl to watch the NodeMaintenance", || {
        let watches = s.request_count("watch", "nodemaintenances");
        async move { (watches > 0).then_some(()) }
    })
    .await;
    assert!(
        delete.try_wait().unwrap().is_none(),
        "kubectl delete returned while the finalizer was still there"
    );
    let nms: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    nms.patch(
        "nm1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), delete.wait_with_output())
        .await
        .expect("delete returns")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("nodemaintenance.nodemaintenance.medik8s.io \"nm1\" deleted")
    );
    assert!(
        s.get(
            "nodemaintenance.medik8s.io/v1beta1",
            "NodeMaintenance",
            "",
            "nm1"
        )
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_a_window_that_breaks_a_cel_rule_fails_with_its_message() {
    let s = sandbox().await;
    s.install_crds().unwrap();
    let k = Kubectl::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(repo("examples/weekly-workers-berlin.yaml"))
        .unwrap()
        .replace("maxUnavailable: 2", "maxUnavailable: \"0%\"");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = k.run(&["apply", "-f", &file.display().to_string()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("The MaintenanceWindow \"weekly-workers\" is invalid: spec.maxUnavailable: Invalid value: \"0%\": spec.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"),
        "{stderr}"
    );
    // A schema violation is refused as well, with the apiserver's wording.
    let out = k
        .run(&["apply", "--server-side", "-f", &file.display().to_string()])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.maxUnavailable must be an integer")
    );
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
