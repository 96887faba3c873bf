//! `deploy/kustomize`: the base and its overlays render with kubectl's kustomize, hold what
//! the operator needs (and what the hardening promises), agree with nmo's own code (the CRDs,
//! the webhook configuration, the config file format, the `nmo run` flags), and apply to the
//! sandbox with kubectl, server dry run first.

#[path = "support/deploy.rs"]
mod deploy;

use clap::Parser;
use deploy::{find, kinds, render, repo};
use nmo::admission::webhook::{WebhookEndpoint, validating_webhook_configuration};
use nmo::sandbox::Sandbox;
use serde_json::{Value, json};
use std::process::Command;

/// `nmo run`'s own flags, parsed by its own clap definition.
#[derive(Debug, Parser)]
struct Run {
    #[command(flatten)]
    args: nmo::cli::run::Args,
}

fn operator(docs: &[Value]) -> &Value {
    find(docs, "Deployment", "nmo")
}

fn container(docs: &[Value]) -> &Value {
    let containers = operator(docs)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn port(container: &Value, name: &str) -> Option<i64> {
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["containerPort"]
        .as_i64()
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> Option<&'a Value> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
}

#[test]
fn the_crds_of_the_base_are_exactly_nmo_crds_output() {
    let files = nmo::api::crd_files().expect("CRDs");
    assert_eq!(files.len(), 2);
    for (file, yaml) in files {
        for dir in ["crds", "deploy/kustomize/base/crds"] {
            let path = repo().join(dir).join(&file);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == yaml,
                "{} differs from `nmo crds`; regenerate with `cargo run -- crds --write {dir}/`",
                path.display()
            );
        }
    }
    let rendered = render("deploy/kustomize/base");
    let crds: Vec<&str> = rendered
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crds,
        [
            "maintenancewindows.nodemaintenance.medik8s.io",
            "nodemaintenances.nodemaintenance.medik8s.io"
        ]
    );
}

#[test]
fn the_base_renders_every_part_of_the_install() {
    let docs = render("deploy/kustomize/base");
    let mut kinds = kinds(&docs);
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Certificate",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "Deployment",
            "Issuer",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        ]
    );
    for ns in ["nmo-system", "medik8s-leases"] {
        find(&docs, "Namespace", ns);
    }
    // Every namespaced object says where it goes (the base sets no kustomize namespace).
    for doc in &docs {
        let cluster_scoped = matches!(
            doc["kind"].as_str(),
            Some(
                "Namespace"
                    | "CustomResourceDefinition"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ValidatingWebhookConfiguration"
            )
        );
        assert_eq!(
            doc["metadata"]["namespace"].is_string(),
            !cluster_scoped,
            "{} {}: namespace",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    let image = container(&docs)["image"].as_str().unwrap();
    assert_eq!(image, "ghcr.io/nmo-operator/nmo:0.1.0");
}

#[test]
fn the_deployment_is_hardened_and_its_flags_are_nmo_run_flags() {
    let docs = render("deploy/kustomize/base");
    let deployment = operator(&docs);
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "nmo");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node-role.kubernetes.io/control-plane"
                && t["operator"] == "Exists")
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(&docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }

    // The arguments parse as `nmo run` flags, and the ports, probes and mounts follow them.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[0], "run",
        "the image's entrypoint is nmo; the command is run"
    );
    let mut argv = vec!["nmo"];
    argv.extend(&args[1..]);
    let run = Run::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the Deployment's args are not valid `nmo run` flags: {e}"))
        .args;
    assert!(run.leader_elect, "--leader-elect with two replicas");
    let health = run
        .health_probe_bind_address
        .socket_addr()
        .expect("probes on");
    let metrics = run.metrics_bind_address.socket_addr().expect("metrics on");
    let webhook = run.webhook_bind_address.socket_addr().expect("webhook on");
    assert_eq!(port(c, "health"), Some(i64::from(health.port())));
    assert_eq!(port(c, "metrics"), Some(i64::from(metrics.port())));
    assert_eq!(port(c, "webhook"), Some(i64::from(webhook.port())));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(
        env_value(c, "NMO_NAMESPACE").expect("NMO_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    // The config file is in the ConfigMap's directory mount (no subPath: edits reach the pod).
    let config = run.config.expect("--config");
    let mount = mount_path(c, "config").expect("config mount");
    assert!(
        mount["subPath"].is_null(),
        "no subPath, or the file never changes"
    );
    assert_eq!(
        config.parent().unwrap().to_str().unwrap(),
        mount["mountPath"].as_str().unwrap()
    );
    let volumes = pod["volumes"].as_array().expect("volumes");
    let config_volume = volumes.iter().find(|v| v["name"] == "config").unwrap();
    let config_map = find(
        &docs,
        "ConfigMap",
        config_volume["configMap"]["name"].as_str().unwrap(),
    );
    let file = config.file_name().unwrap().to_str().unwrap();
    let text = config_map["data"][file]
        .as_str()
        .expect("the config file's key");
    nmo::config::parse(text, &config).expect("the shipped config is valid for nmo");

    // The webhook's certificate directory is the mount of cert-manager's Secret.
    let cert_dir = env_value(c, "NMO_WEBHOOK_CERT_DIR").expect("NMO_WEBHOOK_CERT_DIR")["value"]
        .as_str()
        .unwrap();
    assert_eq!(
        mount_path(c, "webhook-certs").expect("cert mount")["mountPath"],
        cert_dir
    );
    let secret = volumes
        .iter()
        .find(|v| v["name"] == "webhook-certs")
        .unwrap()["secret"]["secretName"]
        .clone();
    assert_eq!(
        find(&docs, "Certificate", "nmo-webhook")["spec"]["secretName"],
        secret
    );

    // One replica may be disrupted at a time.
    let pdb = find(&docs, "PodDisruptionBudget", "nmo");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
}

#[test]
fn the_webhook_configuration_is_the_one_nmo_builds_with_cert_manager_injection() {
    let docs = render("deploy/kustomize/base");
    let mut rendered = find(&docs, "ValidatingWebhookConfiguration", "nmo").clone();
    let annotations = rendered["metadata"]["annotations"].take();
    assert_eq!(
        annotations,
        json!({"cert-manager.io/inject-ca-from": "nmo-system/nmo-webhook"})
    );
    let built = serde_json::to_value(validating_webhook_configuration(
        "nmo",
        &WebhookEndpoint::Service {
            namespace: "nmo-system".into(),
            name: "nmo-webhook".into(),
            port: Some(443),
        },
        b"",
    ))
    .unwrap();
    rendered["metadata"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "name" || k == "labels");
    rendered["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "app.kubernetes.io/name");
    let mut built = built;
    built["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    built["kind"] = json!("ValidatingWebhookConfiguration");
    assert_eq!(rendered, built);
    for hook in built["webhooks"].as_array().unwrap() {
        assert_eq!(hook["sideEffects"], "None");
    }
    // The Service and the Certificate name what the webhook calls.
    let service = find(&docs, "Service", "nmo-webhook");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    let dns = &find(&docs, "Certificate", "nmo-webhook")["spec"]["dnsNames"];
    assert!(
        dns.as_array()
            .unwrap()
            .contains(&json!("nmo-webhook.nmo-system.svc"))
    );
}

#[test]
fn the_no_webhook_overlay_drops_the_webhook_and_its_certificate_only() {
    let base = render("deploy/kustomize/base");
    let docs = render("deploy/kustomize/overlays/no-webhook");
    for kind in ["ValidatingWebhookConfiguration", "Certificate", "Issuer"] {
        assert!(!kinds(&docs).iter().any(|k| k == kind), "no {kind}");
    }
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Service" && d["metadata"]["name"] == "nmo-webhook")
    );
    let c = container(&docs);
    assert!(env_value(c, "NMO_WEBHOOK_CERT_DIR").is_none());
    assert!(mount_path(c, "webhook-certs").is_none());
    assert!(port(c, "webhook").is_none());
    assert!(
        !serde_json::to_string(&docs)
            .unwrap()
            .contains("nmo-webhook-tls"),
        "nothing waits for a Secret cert-manager would make"
    );
    // Everything else is the base's.
    assert_eq!(docs.len(), base.len() - 4);
    assert_eq!(
        find(&docs, "ClusterRole", "nmo"),
        find(&base, "ClusterRole", "nmo")
    );
}

#[test]
fn the_monitoring_overlay_adds_a_service_monitor_of_the_metrics_service() {
    let docs = render("deploy/kustomize/overlays/monitoring");
    let monitor = find(&docs, "ServiceMonitor", "nmo");
    let service = find(&docs, "Service", "nmo-metrics");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
}

/// kubectl against the sandbox, with its own HOME.
struct Kubectl {
    home: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .args(args)
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.home.path().join("kubeconfig"))
            .output()
            .expect("kubectl must be on the PATH");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args);
        assert!(ok, "kubectl {}: {text}", args.join(" "));
        text
    }
}

/// Applies each layout of deploy/kustomize to a fresh sandbox: `--dry-run=server` first
/// (nothing is stored), then for real; everything is then there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_and_overlays_apply_to_the_sandbox_with_kubectl_server_dry_run_first() {
    for layout in ["base", "overlays/no-webhook", "overlays/monitoring"] {
        let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
        let kubectl = Kubectl {
            home: tempfile::tempdir().unwrap(),
        };
        sandbox
            .write_kubeconfig(kubectl.home.path().join("kubeconfig"))
            .expect("kubeconfig");
        // A cluster with cert-manager and the Prometheus Operator has their CRDs.
        let third_party = repo().join("tests/data/deploy/third-party-crds.yaml");
        kubectl.ok(&["apply", "-f", third_party.to_str().unwrap()]);
        kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
            "crd/servicemonitors.monitoring.coreos.com",
        ]);

        let dir = repo().join("deploy/kustomize").join(layout);
        let dir = dir.to_str().unwrap();
        let docs = render(&format!("deploy/kustomize/{layout}"));
        // A server dry run cannot create namespaced objects in a namespace that is not there
        // (kube-apiserver answers NotFound too), so the namespaces go first, for real.
        let namespaces = tempfile::NamedTempFile::new().unwrap();
        let yaml: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] == "Namespace")
            .map(|d| serde_yaml::to_string(d).unwrap())
            .collect();
        std::fs::write(namespaces.path(), yaml.join("---\n")).unwrap();
        kubectl.ok(&["apply", "-f", namespaces.path().to_str().unwrap()]);
        let dry = kubectl.ok(&["apply", "--dry-run=server", "-k", dir]);
        assert!(dry.contains("(server dry run)"), "{layout}: {dry}");
        let (_, listed) = kubectl.run(&["get", "deployment", "nmo", "-n", "nmo-system"]);
        assert!(
            listed.contains("NotFound") || listed.contains("not found"),
            "{layout}: a server dry run stores nothing: {listed}"
        );
        kubectl.ok(&["apply", "-k", dir]);
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            let mut args = vec!["get", kind, name, "-o", "name"];
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                args.extend(["-n", ns]);
            }
            kubectl.ok(&args);
        }
        // Applying again changes nothing. kubectl always resends a PodDisruptionBudget's
        // selector (its patch strategy is `replace`), so it prints "configured" for it, as it
        // does against the real kube-apiserver v1.37; the object itself must stay as it was.
        let versions_before = resource_versions(&kubectl, &docs);
        let again = kubectl.ok(&["apply", "-k", dir]);
        assert!(
            again.lines().all(|l| l.ends_with(" unchanged")
                || (l.starts_with("poddisruptionbudget.policy/") && l.ends_with(" configured"))
                || l.trim().is_empty()),
            "{layout}: a second apply is a no-op:\n{again}"
        );
        assert_eq!(
            resource_versions(&kubectl, &docs),
            versions_before,
            "{layout}: a second apply changes no object"
        );
        sandbox.shutdown().await;
    }
}

#[test]
fn flux_waits_for_the_operator_before_the_windows() {
    let docs = render("deploy/flux");
    let operator = find(&docs, "Kustomization", "operator");
    assert_eq!(operator["spec"]["wait"], true);
    let path = operator["spec"]["path"].as_str().unwrap();
    assert!(
        repo().join(path).join("kustomization.yaml").is_file(),
        "{path} is a kustomization of this repository"
    );
    let source = operator["spec"]["sourceRef"]["name"].as_str().unwrap();
    find(&docs, "GitRepository", source);
    let windows = find(&docs, "Kustomization", "maintenance-windows");
    assert_eq!(
        windows["spec"]["dependsOn"],
        json!([{"name": "operator"}]),
        "the windows wait for the operator"
    );
    assert_eq!(windows["spec"]["prune"], true);
}

#[test]
fn argo_cd_syncs_crds_then_the_operator_then_the_windows() {
    let operator = render("deploy/argocd/operator");
    let wave = |d: &Value| {
        d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
            .as_str()
            .unwrap_or("0")
            .parse::<i32>()
            .unwrap()
    };
    for doc in &operator {
        let expected = if doc["kind"] == "CustomResourceDefinition" {
            -1
        } else {
            0
        };
        assert_eq!(
            wave(doc),
            expected,
            "{} {}",
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
    // The rest is the base, unchanged.
    assert_eq!(operator.len(), render("deploy/kustomize/base").len());

    let apps = deploy::parse_documents(
        &std::fs::read_to_string(repo().join("deploy/argocd/applications.yaml")).unwrap(),
    );
    let nmo = find(&apps, "Application", "nmo");
    let windows = find(&apps, "Application", "maintenance-windows");
    assert_eq!(nmo["spec"]["source"]["path"], "deploy/argocd/operator");
    assert!(
        wave(nmo) < wave(windows),
        "the windows sync after the operator"
    );
    assert_eq!(wave(windows), 1);
}

/// Each rendered object's `metadata.resourceVersion`, read back with kubectl, in document order.
fn resource_versions(kubectl: &Kubectl, docs: &[serde_json::Value]) -> Vec<String> {
    docs.iter()
        .map(|doc| {
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            let mut args = vec![
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ];
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                args.extend(["-n", ns]);
            }
            format!("{kind}/{name}={}", kubectl.ok(&args))
        })
        .collect()
}
