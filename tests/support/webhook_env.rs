//! What the webhook tests share: certificates made with rcgen, nmo's webhook started and
//! registered against a cluster (the sandbox or the real control plane), kubectl with its own
//! HOME, and the scenario of the issue run with kubectl, which returns a transcript so that
//! the sandbox's answers can be compared with the real apiserver's.
#![allow(dead_code)]

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use nmo::admission::webhook::configuration::NODE_MAINTENANCE_WEBHOOK;
use nmo::admission::webhook::{
    Certificates, WebhookConfig, WebhookEndpoint, WebhookServer, validating_webhook_configuration,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// A CA made for one test.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA.
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    /// The CA certificate (PEM), for a caBundle.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A serving certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
    pub fn serving_pair(&self, common_name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Write `tls.crt` and `tls.key` into `dir`.
pub fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

/// nmo's webhook, running on a free port of 127.0.0.1.
pub struct RunningWebhook {
    pub addr: SocketAddr,
    pub pki: Pki,
    pub cert_dir: tempfile::TempDir,
    pub certificates: Arc<Certificates>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWebhook {
    /// Start it, reading the cluster through `client`.
    pub async fn start(client: kube::Client) -> RunningWebhook {
        let pki = Pki::new("nmo webhook test CA");
        let cert_dir = tempfile::tempdir().unwrap();
        write_pair(cert_dir.path(), &pki.serving_pair("nmo-webhook"));
        let server = WebhookServer::bind(&WebhookConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            cert_dir: cert_dir.path().to_path_buf(),
        })
        .await
        .expect("the webhook starts");
        let addr = server.local_addr();
        let certificates = server.certificates();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(client, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the webhook serves");
        });
        RunningWebhook {
            addr,
            pki,
            cert_dir,
            certificates,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Register it with the cluster as `nmo` and wait until the apiserver calls it.
    pub async fn register(&self, client: &kube::Client) {
        let vwc = validating_webhook_configuration(
            "nmo",
            &WebhookEndpoint::Url(self.url()),
            self.pki.ca_pem().as_bytes(),
        );
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &vwc)
            .await
            .expect("register the webhook");
        wait_until_called(client).await;
    }

    /// Stop serving and wait until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// A kube-apiserver picks up a new webhook configuration a moment after it is stored: wait
/// until a dry-run create for a missing node is refused by the webhook.
pub async fn wait_until_called(client: &kube::Client) {
    let api: Api<nmo::api::NodeMaintenance> = Api::all(client.clone());
    let probe = nm("webhook-probe", "webhook-probe-no-such-node");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match api.create(&params, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("no node with name") => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the webhook was not called within 60 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A NodeMaintenance.
pub fn nm(name: &str, node: &str) -> nmo::api::NodeMaintenance {
    nmo::api::NodeMaintenance::new(
        name,
        nmo::api::NodeMaintenanceSpec {
            node_name: node.into(),
            reason: None,
        },
    )
}

/// Create a Ready node (with `control-plane` it gets the control-plane role label).
pub async fn create_node(client: &kube::Client, name: &str, labels: &[(&str, &str)]) {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create node {name}: {e}"));
}

/// kubectl with its own HOME and a copy of a kubeconfig.
pub struct Kubectl {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl for the cluster of `kubeconfig`.
    pub fn new(kubeconfig: &Path) -> Kubectl {
        let home = tempfile::tempdir().unwrap();
        let copy = home.path().join("kubeconfig");
        std::fs::copy(kubeconfig, &copy).unwrap();
        Kubectl {
            home,
            kubeconfig: copy,
        }
    }

    /// Run it; kubectl must be on the PATH.
    pub async fn run(&self, args: &[&str]) -> Output {
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

    /// Run and require success; stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A folder for manifests, inside its HOME.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }
}

/// One kubectl command of the scenario and what it printed, with the temporary folder
/// written as `DIR` so that two clusters' transcripts compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub case: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The scenario of the issue with kubectl, against a cluster whose nodes are
/// `cp-1`..`cp-3` (control plane), `worker-1` and `worker-2` (`role=worker`), with the CRDs
/// installed and nmo's webhook registered. Every step's answer is checked here; the
/// transcript is returned for comparison with another cluster.
pub async fn scenario(kubectl: &Kubectl) -> Vec<Step> {
    let mut steps = Vec::new();
    let dir = kubectl.dir().display().to_string();
    let apply = async |steps: &mut Vec<Step>, case: &str, yaml: &str, extra: &[&str]| -> Step {
        let file = kubectl.dir().join(format!("{case}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let file = file.display().to_string();
        let mut args = vec!["apply", "-f", file.as_str()];
        args.extend_from_slice(extra);
        let out = kubectl.run(&args).await;
        let step = Step {
            case: case.to_string(),
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).replace(&dir, "DIR"),
            stderr: String::from_utf8_lossy(&out.stderr).replace(&dir, "DIR"),
        };
        steps.push(step.clone());
        step
    };
    let nm_yaml = |name: &str, node: &str| {
        format!(
            "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  reason: webhook test\n"
        )
    };
    let window_yaml = |name: &str, schedule: &str, zone: &str| {
        format!(
            "apiVersion: nodemaintenance.medik8s.io/v1alpha1\nkind: MaintenanceWindow\nmetadata:\n  name: {name}\nspec:\n  schedule: \"{schedule}\"\n  timeZone: {zone}\n  duration: 4h\n  nodeSelector:\n    matchLabels:\n      role: worker\n  release:\n    after: 30m\n"
        )
    };
    let refused = |step: &Step, text: &str| {
        assert!(!step.success, "{}: accepted:\n{}", step.case, step.stdout);
        assert!(
            step.stderr.contains(text),
            "{}: the refusal lacks {text:?}:\n{}",
            step.case,
            step.stderr
        );
    };
    let nm_denied = |message: &str| {
        format!("admission webhook \"{NODE_MAINTENANCE_WEBHOOK}\" denied the request: {message}")
    };

    // A missing node, for real and as a server-side dry run.
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let case = if extra.is_empty() {
            "nm-missing-node"
        } else {
            "nm-missing-node-dry-run"
        };
        let step = apply(&mut steps, case, &nm_yaml("maint-ghost", "ghost"), extra).await;
        refused(
            &step,
            &format!(
                "Error from server (Forbidden): error when creating \"DIR/{case}.yaml\": {}",
                nm_denied("invalid nodeName, no node with name ghost found")
            ),
        );
    }

    // A worker, then a second NodeMaintenance for it.
    let step = apply(
        &mut steps,
        "nm-worker-1",
        &nm_yaml("maint-worker-1", "worker-1"),
        &[],
    )
    .await;
    assert!(step.success, "{}", step.stderr);
    assert_eq!(
        step.stdout.trim(),
        "nodemaintenance.nodemaintenance.medik8s.io/maint-worker-1 created"
    );
    for extra in [&["--dry-run=server"][..], &[][..]] {
        let case = if extra.is_empty() {
            "nm-duplicate"
        } else {
            "nm-duplicate-dry-run"
        };
        let step = apply(
            &mut steps,
            case,
            &nm_yaml("again-worker-1", "worker-1"),
            extra,
        )
        .await;
        refused(
            &step,
            &nm_denied("invalid nodeName, a NodeMaintenance for node worker-1 already exists"),
        );
    }

    // nodeName is immutable.
    let step = apply(
        &mut steps,
        "nm-change-node-name",
        &nm_yaml("maint-worker-1", "worker-2"),
        &[],
    )
    .await;
    refused(&step, "updating spec.NodeName isn't allowed");

    // Control-plane quorum: the first of three may go, the second may not.
    let step = apply(&mut steps, "nm-cp-1", &nm_yaml("maint-cp-1", "cp-1"), &[]).await;
    assert!(step.success, "{}", step.stderr);
    for extra in [&["--dry-run=server"][..], &[][..]] {
        let case = if extra.is_empty() {
            "nm-cp-2"
        } else {
            "nm-cp-2-dry-run"
        };
        let step = apply(&mut steps, case, &nm_yaml("maint-cp-2", "cp-2"), extra).await;
        refused(
            &step,
            &nm_denied(
                "can't put control-plane node cp-2 into maintenance: it would leave 1 of 3 control-plane nodes Ready and schedulable, fewer than the quorum of 2",
            ),
        );
    }

    // A valid dry run is accepted and creates nothing.
    let step = apply(
        &mut steps,
        "nm-worker-2-dry-run",
        &nm_yaml("maint-worker-2", "worker-2"),
        &["--dry-run=server"],
    )
    .await;
    assert!(step.success, "{}", step.stderr);
    assert_eq!(
        step.stdout.trim(),
        "nodemaintenance.nodemaintenance.medik8s.io/maint-worker-2 created (server dry run)"
    );
    let listed = kubectl.ok(&["get", "nodemaintenances", "-o", "name"]).await;
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "nodemaintenance.nodemaintenance.medik8s.io/maint-cp-1",
            "nodemaintenance.nodemaintenance.medik8s.io/maint-worker-1",
        ],
        "dry runs and refusals create nothing"
    );

    // An invalid window: one message per field, for real and as a dry run.
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let case = if extra.is_empty() {
            "mw-invalid"
        } else {
            "mw-invalid-dry-run"
        };
        let step = apply(
            &mut steps,
            case,
            &window_yaml("broken", "0 2 * * FUNDAY", "Europe/Berln"),
            extra,
        )
        .await;
        refused(&step, "The MaintenanceWindow \"broken\" is invalid: \n");
        refused(
            &step,
            "* spec.schedule: invalid cron expression \"0 2 * * FUNDAY\": day of week field \"FUNDAY\"",
        );
        refused(
            &step,
            "* spec.timeZone: unknown time zone \"Europe/Berln\", did you mean \"Europe/Berlin\"?",
        );
    }

    // Overlapping windows: accepted, with a warning naming the other window and the nodes.
    let step = apply(
        &mut steps,
        "mw-workers-a",
        &window_yaml("workers-a", "0 2 * * SAT", "Europe/Berlin"),
        &[],
    )
    .await;
    assert!(step.success, "{}", step.stderr);
    assert_eq!(step.stderr, "", "the first window overlaps nothing");
    let step = apply(
        &mut steps,
        "mw-workers-b",
        &window_yaml("workers-b", "0 3 * * SUN", "Europe/Berlin"),
        &[],
    )
    .await;
    assert!(step.success, "{}", step.stderr);
    assert_eq!(
        step.stdout.trim(),
        "maintenancewindow.nodemaintenance.medik8s.io/workers-b created"
    );
    assert_eq!(
        step.stderr.trim(),
        "Warning: spec.nodeSelector overlaps MaintenanceWindow \"workers-a\": both select 2 nodes (worker-1, worker-2)"
    );
    steps
}

/// The nodes the scenario expects.
pub async fn create_scenario_nodes(client: &kube::Client) {
    let cp = ("node-role.kubernetes.io/control-plane", "");
    for name in ["cp-1", "cp-2", "cp-3"] {
        create_node(client, name, &[cp]).await;
    }
    for name in ["worker-1", "worker-2"] {
        create_node(client, name, &[("role", "worker")]).await;
    }
}

/// The repository path of a file.
pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// Install the CRDs with kubectl and wait until they are served.
pub async fn install_crds(kubectl: &Kubectl) {
    kubectl.ok(&["apply", "-f", &repo("crds/")]).await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])
        .await;
}
