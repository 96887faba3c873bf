//! Least privilege, proven against real RBAC: on the real control plane
//! (`tests/control-plane/`, kube-apiserver with `--authorization-mode Node,RBAC` and an audit
//! log), the real `nmo run` binary runs as the ServiceAccount of `deploy/kustomize/base`, with
//! exactly its ClusterRole and Roles and a token from the TokenRequest API, two replicas with
//! leader election, one of them serving the validating webhook that kube-apiserver calls for
//! every create below (it reads the cluster as the ServiceAccount too). It goes through the
//! NodeMaintenance flow (a stale lease of another holder
//! taken over, a drain held by a PodDisruptionBudget and then let through, the node put back),
//! the MaintenanceWindow flow (a run-now window rolling over two nodes) and a SIGTERM stop that
//! releases the leader lease, with Events all along.
//!
//! Then, from the audit log: no request of the ServiceAccount got a 403, and every verb of
//! every rule was used by an allowed request. Finally each verb is removed from its rule in
//! the live cluster, one at a time, and kube-apiserver's own authorizer (a
//! SubjectAccessReview) refuses a request nmo made with it: no rule is dead weight.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/deploy.rs"]
mod deploy;
#[path = "support/real_cluster.rs"]
mod real_cluster;
#[path = "support/webhook_env.rs"]
mod webhook_env;

use backend::{Backend, eventually};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use nmo::api::{MaintenanceWindow, NodeMaintenance};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "nmo-system";
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:nmo-system:nmo";

/// A running `nmo run`; killed on drop if the test fails half-way.
struct Operator {
    child: std::process::Child,
    log: PathBuf,
}

impl Operator {
    fn start(dir: &Path, name: &str, kubeconfig: &Path, config: &Path, extra: &[&str]) -> Operator {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_nmo"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--leader-elect", "--namespace", NAMESPACE])
            .arg("--config")
            .arg(config)
            .args([
                "--metrics-bind-address",
                "0",
                "--health-probe-bind-address",
                "0",
            ])
            .args(extra)
            .env("HOSTNAME", name)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn nmo run");
        Operator { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "nmo did not exit after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request of the audit log.
#[derive(Clone, Debug)]
struct Request {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    code: i64,
    uri: String,
}

impl Request {
    fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The ServiceAccount's requests in the audit log (stage ResponseComplete; a watch that is
/// still open has ResponseStarted with its code).
fn service_account_requests(audit: &Path) -> Vec<Request> {
    let text = std::fs::read_to_string(audit).expect("audit log");
    let mut seen = BTreeSet::new();
    let mut requests = Vec::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("audit line is JSON");
        if event["user"]["username"] != SERVICE_ACCOUNT_USER {
            continue;
        }
        let stage = event["stage"].as_str().unwrap_or_default();
        if stage != "ResponseComplete" && stage != "ResponseStarted" {
            continue;
        }
        // One entry per request (a watch has both stages).
        if !seen.insert(event["auditID"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        let object = &event["objectRef"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        requests.push(Request {
            verb: text(&event["verb"]),
            group: text(&object["apiGroup"]),
            resource: text(&object["resource"]),
            subresource: text(&object["subresource"]),
            namespace: text(&object["namespace"]),
            name: text(&object["name"]),
            code: event["responseStatus"]["code"].as_i64().unwrap_or_default(),
            uri: text(&event["requestURI"]),
        });
    }
    requests
}

/// One verb of one rule of a Role or ClusterRole of deploy/.
#[derive(Clone, Debug)]
struct Grant {
    kind: String,
    role: String,
    /// The Role's namespace; empty for the ClusterRole.
    namespace: String,
    rule: usize,
    verb: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = if self.namespace.is_empty() {
            String::new()
        } else {
            format!(" in {}", self.namespace)
        };
        write!(
            f,
            "{} {}{scope}, rule {}, verb {}",
            self.kind, self.role, self.rule, self.verb
        )
    }
}

fn rules_of(doc: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(doc["rules"].clone()).expect("rules")
}

/// Does `rule` (of a role scoped to `namespace`, empty for cluster-wide) allow `request`?
fn rule_allows(rule: &PolicyRule, namespace: &str, verb: &str, request: &Request) -> bool {
    let has = |list: &Option<Vec<String>>, value: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|v| v == value || v == "*"))
    };
    request.verb == verb
        && rule.verbs.iter().any(|v| v == verb)
        && has(&rule.api_groups, &request.group)
        && has(&rule.resources, &request.resource_path())
        && (namespace.is_empty() || request.namespace == namespace)
        && rule
            .resource_names
            .as_ref()
            .is_none_or(|names| names.is_empty() || names.contains(&request.name))
}

/// kube-apiserver's answer: may the ServiceAccount make `request`?
async fn allowed(client: &Client, request: &Request) -> bool {
    // The authorizer sees a name for requests on one object (not for create, list or watch).
    let named = matches!(request.verb.as_str(), "get" | "update" | "patch" | "delete")
        || !request.subresource.is_empty();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(SERVICE_ACCOUNT_USER.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:nmo-system".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(request.verb.clone()),
                group: Some(request.group.clone()),
                resource: Some(request.resource.clone()),
                subresource: (!request.subresource.is_empty()).then(|| request.subresource.clone()),
                namespace: (!request.namespace.is_empty()).then(|| request.namespace.clone()),
                name: named.then(|| request.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// Replace the rules of the Role or ClusterRole `grant` names.
async fn set_rules(client: &Client, grant: &Grant, rules: Vec<PolicyRule>) {
    if grant.kind == "ClusterRole" {
        let api: Api<ClusterRole> = Api::all(client.clone());
        let mut role = api.get(&grant.role).await.expect("ClusterRole");
        role.rules = Some(rules);
        api.replace(&grant.role, &PostParams::default(), &role)
            .await
            .expect("ClusterRole replaced");
    } else {
        let api: Api<Role> = Api::namespaced(client.clone(), &grant.namespace);
        let mut role = api.get(&grant.role).await.expect("Role");
        role.rules = Some(rules);
        api.replace(&grant.role, &PostParams::default(), &role)
            .await
            .expect("Role replaced");
    }
}

/// Wait until the authorizer's answer for `request` is `want` (RBAC follows role changes
/// through an informer, within moments).
async fn wait_allowed(client: &Client, request: &Request, want: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while allowed(client, request).await != want {
        assert!(
            Instant::now() < deadline,
            "{what}: the authorizer never answered allowed={want} for {request:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kubeconfig_with_token(admin: &Path, token: &str, to: &Path) {
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).expect("admin kubeconfig"))
            .expect("kubeconfig YAML");
    config["users"][0]["name"] = "nmo".into();
    config["users"][0]["user"] = serde_yaml::to_value(json!({ "token": token })).unwrap();
    config["contexts"][0]["context"]["user"] = "nmo".into();
    std::fs::write(to, serde_yaml::to_string(&config).unwrap()).expect("write kubeconfig");
}

fn condition_true(status: &Value, type_: &str) -> bool {
    status["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmo_runs_as_its_service_account_with_no_403_and_no_rule_is_dead_weight() {
    let work = tempfile::tempdir().expect("temp dir");
    let audit = work.path().join("audit.log");
    // Read by tests/control-plane/run when the control plane starts, just below; this test
    // binary runs no other test, and nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("CONTROL_PLANE_AUDIT_LOG", &audit) };
    let cluster = Backend::real().await;
    let admin = cluster.client();

    // deploy/'s namespaces, CRDs, ServiceAccount, RBAC and config, exactly as rendered.
    let docs = deploy::render("deploy/kustomize/base");
    let installed: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "Namespace"
                        | "CustomResourceDefinition"
                        | "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                        | "ConfigMap"
                )
            )
        })
        .collect();
    let manifest = work.path().join("rbac.yaml");
    let yaml: Vec<String> = installed
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect();
    std::fs::write(&manifest, yaml.join("---\n")).unwrap();
    cluster
        .kubectl_ok(&["apply", "--server-side", "-f", manifest.to_str().unwrap()])
        .await;
    cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/nodemaintenances.nodemaintenance.medik8s.io",
            "crd/maintenancewindows.nodemaintenance.medik8s.io",
        ])
        .await;

    // A token for the ServiceAccount from the TokenRequest API, as the kubelet would mount.
    let token = cluster
        .kubectl_ok(&[
            "create",
            "token",
            "nmo",
            "--namespace",
            NAMESPACE,
            "--duration",
            "2h",
        ])
        .await;
    let sa_kubeconfig = work.path().join("nmo.kubeconfig");
    kubeconfig_with_token(cluster.kubeconfig(), token.trim(), &sa_kubeconfig);
    // The ConfigMap's config file, as mounted.
    let config_map = installed
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "nmo-config")
        .expect("the nmo-config ConfigMap");
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        config_map["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
    )
    .unwrap();

    // The cluster: nodes, a ReplicaSet under a PDB that first holds the drain.
    for node in ["rbac-1", "rbac-2"] {
        cluster.add_node(node, &[("pool", "adhoc")]).await;
    }
    for node in ["mw-1", "mw-2"] {
        cluster.add_node(node, &[("pool", "window")]).await;
    }
    cluster.replica_set("apps", "web", 4, 1).await;
    cluster.pdb("apps", "web", 4).await;

    // nmo-a also serves the validating webhook (reading the cluster as the ServiceAccount),
    // registered with kube-apiserver: every create below goes through it.
    let pki = webhook_env::Pki::new("nmo RBAC test CA");
    let cert_dir = work.path().join("certs");
    std::fs::create_dir(&cert_dir).unwrap();
    webhook_env::write_pair(&cert_dir, &pki.serving_pair("nmo-webhook"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let webhook_addr = format!("127.0.0.1:{port}");
    let mut operators = vec![
        Operator::start(
            work.path(),
            "nmo-a",
            &sa_kubeconfig,
            &config,
            &[
                "--webhook-bind-address",
                &webhook_addr,
                "--webhook-cert-dir",
                cert_dir.to_str().unwrap(),
            ],
        ),
        Operator::start(work.path(), "nmo-b", &sa_kubeconfig, &config, &[]),
    ];
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let leader = eventually("a leader on the Lease nmo-leader", 60, || async {
        let lease = leases.get_opt("nmo-leader").await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    })
    .await;
    eprintln!("leader: {leader}");
    let vwc = nmo::admission::webhook::validating_webhook_configuration(
        "nmo",
        &nmo::admission::webhook::WebhookEndpoint::Url(format!("https://{webhook_addr}")),
        pki.ca_pem().as_bytes(),
    );
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
        admin.clone(),
    )
    .create(&PostParams::default(), &vwc)
    .await
    .expect("register the webhook");
    // Refused with "no node with name": the webhook read the cluster as the ServiceAccount.
    webhook_env::wait_until_called(&admin).await;

    // NodeMaintenance: the target node holds a web pod; its lease is a stale one of another
    // holder, which nmo takes over (an update).
    let target = cluster.nodes_of("apps", "web").await[0].clone();
    let stale: Lease = serde_json::from_value(json!({
        "metadata": {"name": format!("node-{target}"), "namespace": "medik8s-leases"},
        "spec": {"holderIdentity": "self-node-remediation", "leaseDurationSeconds": 1,
            "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    Api::<Lease>::namespaced(admin.clone(), "medik8s-leases")
        .create(&PostParams::default(), &stale)
        .await
        .expect("stale lease");
    let nms: Api<NodeMaintenance> = Api::all(admin.clone());
    let nm: NodeMaintenance = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "rbac-adhoc"},
        "spec": {"nodeName": target, "reason": "RBAC test"}
    }))
    .unwrap();
    nms.create(&PostParams::default(), &nm)
        .await
        .expect("NodeMaintenance");
    let blocked = eventually("the drain held by the PodDisruptionBudget", 120, || async {
        let status = serde_json::to_value(nms.get("rbac-adhoc").await.ok()?.status?).ok()?;
        let error = status["lastError"].as_str()?.to_string();
        error.contains("web").then_some(error)
    })
    .await;
    eprintln!("blocked: {blocked}");
    cluster.set_pdb_min_available("apps", "web", 1).await;
    eventually("the NodeMaintenance Succeeded", 120, || async {
        let status = serde_json::to_value(nms.get("rbac-adhoc").await.ok()?.status?).ok()?;
        (status["phase"] == "Succeeded" && condition_true(&status, "Ready")).then_some(())
    })
    .await;
    let lease = Api::<Lease>::namespaced(admin.clone(), "medik8s-leases")
        .get(&format!("node-{target}"))
        .await
        .expect("node lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("node-maintenance"),
        "nmo took the stale lease over"
    );
    nms.delete("rbac-adhoc", &DeleteParams::default())
        .await
        .expect("delete");
    let nodes: Api<Node> = Api::all(admin.clone());
    eventually(
        "the node put back and the NodeMaintenance gone",
        120,
        || async {
            let gone = nms.get_opt("rbac-adhoc").await.ok()?.is_none();
            let node = nodes.get(&target).await.ok()?;
            let schedulable = !node.spec?.unschedulable.unwrap_or(false);
            (gone && schedulable).then_some(())
        },
    )
    .await;

    // MaintenanceWindow: a run-now window rolls over the two window nodes.
    let windows: Api<MaintenanceWindow> = Api::all(admin.clone());
    let window: MaintenanceWindow = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
        "metadata": {"name": "rbac-window",
            "annotations": {"nodemaintenance.medik8s.io/run-now": "rbac-test"}},
        "spec": {"schedule": "0 0 1 1 *", "duration": "1h",
            "nodeSelector": {"matchLabels": {"pool": "window"}},
            "maxUnavailable": 1, "release": {"after": "0s"}}
    }))
    .unwrap();
    windows
        .create(&PostParams::default(), &window)
        .await
        .expect("MaintenanceWindow");
    eventually(
        "the window's round over both nodes completed",
        180,
        || async {
            let status =
                serde_json::to_value(windows.get("rbac-window").await.ok()?.status?).ok()?;
            let done = status["round"]["completed"].as_i64() == Some(2);
            (done && condition_true(&status, "Ready")).then_some(())
        },
    )
    .await;
    eventually("the window's NodeMaintenances gone", 120, || async {
        let left = nms.list(&Default::default()).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;

    // Stop: the leader releases its lease (an update), both exit 0.
    for operator in &mut operators {
        let status = operator.terminate().await;
        assert!(
            status.success(),
            "nmo exited with {status}:\n{}",
            operator.log()
        );
    }
    let released = leases.get("nmo-leader").await.expect("leader lease");
    assert!(
        released
            .spec
            .and_then(|s| s.holder_identity)
            .is_none_or(|h| h.is_empty()),
        "the leader released its lease at SIGTERM"
    );
    for operator in &operators {
        let log = operator.log();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "nmo logged a refusal:\n{log}"
        );
    }

    // The audit log: no 403, and every verb of every rule used by an allowed request.
    let requests = service_account_requests(&audit);
    assert!(
        requests.len() > 20,
        "the audit log holds the ServiceAccount's requests"
    );
    let refused: Vec<&Request> = requests.iter().filter(|r| r.code == 403).collect();
    assert!(
        refused.is_empty(),
        "requests of nmo refused by RBAC:\n{refused:#?}"
    );
    let mut used: BTreeSet<String> = BTreeSet::new();
    for r in &requests {
        used.insert(format!(
            "{} {}/{} ns={} ({})",
            r.verb,
            r.group,
            r.resource_path(),
            r.namespace,
            r.code
        ));
    }
    eprintln!(
        "requests of nmo by kind:\n{}",
        used.into_iter().collect::<Vec<_>>().join("\n")
    );

    let roles: Vec<&Value> = installed
        .iter()
        .copied()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .collect();
    let mut grants: Vec<(Grant, Request)> = Vec::new();
    let mut unused = Vec::new();
    for doc in &roles {
        let kind = doc["kind"].as_str().unwrap().to_string();
        let role = doc["metadata"]["name"].as_str().unwrap().to_string();
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for (i, rule) in rules_of(doc).iter().enumerate() {
            assert!(
                !rule.verbs.iter().any(|v| v == "*")
                    && !rule
                        .resources
                        .iter()
                        .flatten()
                        .any(|r| r == "*" || r == "secrets"),
                "{kind} {role} rule {i}: no `*` and no Secrets"
            );
            for verb in &rule.verbs {
                let grant = Grant {
                    kind: kind.clone(),
                    role: role.clone(),
                    namespace: namespace.clone(),
                    rule: i,
                    verb: verb.clone(),
                };
                match requests
                    .iter()
                    .find(|r| r.code < 400 && rule_allows(rule, &namespace, verb, r))
                {
                    Some(request) => grants.push((grant, request.clone())),
                    None => unused.push(grant.to_string()),
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "rules no request of nmo used (dead weight):\n{}",
        unused.join("\n")
    );

    // Remove each verb in turn: the authorizer then refuses a request nmo made.
    for (grant, request) in &grants {
        let doc = roles
            .iter()
            .find(|d| {
                d["kind"] == grant.kind.as_str()
                    && d["metadata"]["name"] == grant.role.as_str()
                    && d["metadata"]["namespace"].as_str().unwrap_or_default() == grant.namespace
            })
            .unwrap();
        let full = rules_of(doc);
        let mut reduced = full.clone();
        reduced[grant.rule].verbs.retain(|v| v != &grant.verb);
        if reduced[grant.rule].verbs.is_empty() {
            reduced.remove(grant.rule);
        }
        wait_allowed(&admin, request, true, &grant.to_string()).await;
        set_rules(&admin, grant, reduced).await;
        wait_allowed(&admin, request, false, &format!("without {grant}")).await;
        set_rules(&admin, grant, full).await;
        eprintln!("without {grant}: {} {} refused", request.verb, request.uri);
    }
    eprintln!(
        "{} verbs in {} roles, each needed; {} requests of nmo, none refused",
        grants.len(),
        roles.len(),
        requests.len()
    );
}
