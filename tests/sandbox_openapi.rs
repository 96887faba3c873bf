//! `/openapi/v3` of the sandbox, read by the real kubectl: `kubectl explain` of custom and
//! built-in kinds (compared with the real kube-apiserver in `target/control-plane`), a CRD that
//! appears when applied, and `--validate=strict`, which kubectl leaves to the server once the
//! document says the PATCH operation takes `fieldValidation`. kubectl must be on the PATH, and
//! the control-plane binaries built (`tests/control-plane/build`): these tests fail without.

#[path = "support/real_cluster.rs"]
mod real_cluster;

use nmo::sandbox::Sandbox;
use real_cluster::RealCluster;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use tokio::process::Command;

struct Kubectl {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(kubeconfig: &Path) -> Self {
        let home = tempfile::tempdir().unwrap();
        let own = home.path().join("kubeconfig");
        std::fs::copy(kubeconfig, &own).unwrap();
        Kubectl {
            home,
            kubeconfig: own,
        }
    }

    fn of(sandbox: &Sandbox) -> Self {
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

    /// Run and require failure; returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "kubectl {} succeeded:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

async fn sandbox() -> Sandbox {
    let s = Sandbox::builder().start().await.expect("sandbox starts");
    s.install_crds().unwrap();
    s
}

fn crds_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/crds").to_string()
}

/// `kubectl explain` of each field on the sandbox and on the real kube-apiserver with the same
/// CRD applied: the same text.
async fn explain_matches_the_real_kube_apiserver(crd_file: &str, kind: &str, fields: &[&str]) {
    let s = sandbox().await;
    let sandbox = Kubectl::of(&s);
    let cluster = RealCluster::start().await;
    let real = Kubectl::new(cluster.kubeconfig());
    let crd = format!("{}/{crd_file}", crds_dir());
    real.ok(&["apply", "-f", &crd]).await;
    real.ok(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ])
    .await;
    // Established comes before kube-apiserver's discovery and OpenAPI serve the CRD: poll
    // until kubectl finds the kind (each miss makes kubectl read discovery again).
    let mut tries = 0;
    while !real.run(&["explain", kind]).await.status.success() {
        tries += 1;
        assert!(
            tries < 150,
            "the real cluster never served {kind}'s OpenAPI"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for field in fields {
        let ours = sandbox.ok(&["explain", field]).await;
        let theirs = real.ok(&["explain", field]).await;
        assert_eq!(ours, theirs, "kubectl explain {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_of_node_maintenance_is_the_real_kube_apiservers() {
    explain_matches_the_real_kube_apiserver(
        "nodemaintenances.nodemaintenance.medik8s.io.yaml",
        "nodemaintenance",
        &[
            "nm.spec",
            "nodemaintenance",
            "nm.status",
            "nm.status.conditions",
        ],
    )
    .await;
    let s = sandbox().await;
    let k = Kubectl::of(&s);
    let nm = k.ok(&["explain", "nm.spec"]).await;
    assert!(nm.contains("nodeName\t<string> -required-"), "{nm}");
    // Through the reference to ObjectMeta.
    let meta = k.ok(&["explain", "nm.metadata.labels"]).await;
    assert!(meta.contains("FIELD: labels <map[string]string>"), "{meta}");
}

/// Fails while the real kube-apiserver refuses crds/maintenancewindows (the CEL rules on
/// `spec.exclusions[].start/end` exceed its cost budget: no maxItems/maxLength); it passed
/// before those fields were added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_of_maintenance_window_is_the_real_kube_apiservers() {
    explain_matches_the_real_kube_apiserver(
        "maintenancewindows.nodemaintenance.medik8s.io.yaml",
        "maintenancewindow",
        &["mw.spec.release", "maintenancewindow.spec"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_built_in_kinds_from_k8s_openapi() {
    let s = sandbox().await;
    let k = Kubectl::of(&s);
    let out = k.ok(&["explain", "pod.spec.nodeName"]).await;
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("FIELD: nodeName <string>"), "{out}");
    let out = k.ok(&["explain", "lease.spec"]).await;
    assert!(out.contains("holderIdentity\t<string>"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.strategy"]).await;
    assert!(
        out.contains("rollingUpdate\t<RollingUpdateDeployment>"),
        "{out}"
    );
    // Unknown fields are named.
    let err = k.fails(&["explain", "pod.spec.nope"]).await;
    assert!(err.contains("field \"nope\" does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_applied_to_the_sandbox_appears_in_openapi_v3() {
    let s = sandbox().await;
    let k = Kubectl::of(&s);
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {plural: widgets, singular: widget, kind: Widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What a widget should be.
            properties:
              size: {type: integer, description: How big the widget is.}
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crd.yaml");
    std::fs::write(&file, crd).unwrap();
    let index: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v3"]).await).unwrap();
    assert!(index["paths"].get("apis/example.com/v1").is_none());
    k.ok(&["apply", "-f", file.to_str().unwrap()]).await;
    let index: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v3"]).await).unwrap();
    let url = index["paths"]["apis/example.com/v1"]["serverRelativeURL"]
        .as_str()
        .expect("the new group-version is listed");
    assert!(
        url.starts_with("/openapi/v3/apis/example.com/v1?hash="),
        "{url}"
    );
    let out = k.ok(&["explain", "widget.spec.size"]).await;
    assert!(out.contains("How big the widget is."), "{out}");
    // A group-version that is not served: 404.
    let err = k
        .fails(&["get", "--raw", "/openapi/v3/apis/nothing.example.com/v1"])
        .await;
    assert!(err.contains("NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_validation_refuses_unknown_fields_of_custom_and_built_in_kinds() {
    let s = sandbox().await;
    let k = Kubectl::of(&s);
    let dir = tempfile::tempdir().unwrap();
    let nm = dir.path().join("nm.yaml");
    std::fs::write(
        &nm,
        "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {name: nm-bad}\nspec: {nodeName: worker-0, reason: x, bogus: 1}\n",
    )
    .unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: c, image: nginx, imagen: x}]}\n",
    )
    .unwrap();
    let err = k
        .fails(&["apply", "--validate=strict", "-f", nm.to_str().unwrap()])
        .await;
    assert!(
        err.contains("strict decoding error: unknown field \"spec.bogus\""),
        "{err}"
    );
    let err = k
        .fails(&["apply", "--validate=strict", "-f", pod.to_str().unwrap()])
        .await;
    assert!(
        err.contains(
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].imagen\""
        ),
        "{err}"
    );
    // Nothing was written.
    let err = k.fails(&["get", "pod", "p", "-n", "default"]).await;
    assert!(err.contains("NotFound"), "{err}");
    // Without strict, the unknown field is dropped and the pod created.
    k.ok(&["apply", "--validate=false", "-f", pod.to_str().unwrap()])
        .await;
    let json: Value = serde_json::from_str(
        &k.ok(&["get", "pod", "p", "-n", "default", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(json["spec"]["containers"][0]["image"], "nginx");
}
