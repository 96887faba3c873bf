//! The differential check of the sandbox: one corpus of requests is sent, in the same order, to a
//! real control plane (`tests/control-plane/run`: etcd, kube-apiserver and
//! kube-controller-manager, Kubernetes v1.37.2) and to `Sandbox::builder().start()`, and the
//! answers are compared.
//!
//! - A refusal is compared by status code, `reason`, `message`, `details` and the set of
//!   `details.causes`.
//! - A success is compared by code and the whole returned object, after [`normalise`] has
//!   replaced what is volatile by nature (uids, resourceVersion values, timestamps, continue
//!   tokens, generateName suffixes). It replaces values, never removes fields: a default the
//!   real apiserver adds and the sandbox lacks is a difference.
//! - A watch is compared by its first events, each normalised the same way.
//!
//! Every request whose answers differ is printed with both answers; the test fails on any
//! difference not listed in `tests/control-plane/DIFFERENCES.md` (lines `` - `case`: why ``)
//! and on any listed case that no longer differs, so the list stays true.
//!
//! The real cluster has no kubelet and no scheduler, and its controllers work asynchronously:
//! the corpus binds pods itself (`spec.nodeName`), reports their readiness through `/status`,
//! and waits on conditions (with a deadline, never a sleep) where a controller must catch up
//! before an answer is deterministic. Needs `tests/control-plane/build` (run on first use).

#[path = "support/real_cluster.rs"]
mod real_cluster;

use http_body_util::BodyExt;
use nmo::sandbox::Sandbox;
use real_cluster::RealCluster;
use regex::Regex;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const JSON: &str = "application/json";

const NS: &str = "/api/v1/namespaces";
const NODES: &str = "/api/v1/nodes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/diff/leases";
const PODS: &str = "/api/v1/namespaces/diff/pods";
const PDBS: &str = "/apis/policy/v1/namespaces/diff/poddisruptionbudgets";
const EVENTS: &str = "/api/v1/namespaces/diff-events/events";
const NEW_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/diff-events/events";
const RS: &str = "/apis/apps/v1/namespaces/diff/replicasets";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/diff/deployments";
const DS: &str = "/apis/apps/v1/namespaces/diff/daemonsets";
const NM: &str = "/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances";
const MW: &str = "/apis/nodemaintenance.medik8s.io/v1alpha1/maintenancewindows";

/// How long a wait step gives a controller (the garbage collector, the disruption
/// controller) to catch up on a loaded CI machine.
const WAIT_DEADLINE: Duration = Duration::from_secs(60);
/// How long a watch gets to deliver the events it is expected to.
const WATCH_DEADLINE: Duration = Duration::from_secs(30);

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------

/// A request body.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Raw(&'static str),
}

/// Which backends a wait applies to.
#[derive(Clone, Copy, PartialEq)]
enum Only {
    Both,
    /// A controller the sandbox does not need (it does the same work synchronously, or has
    /// no such object): the wait makes the real answers deterministic.
    Real,
}

/// One step of the corpus.
enum Step {
    /// A request whose answers are compared. `capture` stores the answer's body under that
    /// name, per backend, for `$(name.path)` templates in later paths and bodies.
    Request {
        method: &'static str,
        path: String,
        content_type: &'static str,
        body: Body,
        capture: Option<&'static str>,
    },
    /// A watch whose first `events` events are compared.
    Watch { path: String, events: usize },
    /// Not compared: wait until GET `path` satisfies `until`, within [`WAIT_DEADLINE`].
    Wait {
        path: String,
        until: fn(u16, &Value) -> bool,
        only: Only,
    },
}

struct Case {
    name: String,
    step: Step,
}

/// Builds the corpus in order.
#[derive(Default)]
struct Corpus(Vec<Case>);

impl Corpus {
    fn push(&mut self, name: &str, step: Step) -> &mut Self {
        self.0.push(Case {
            name: name.to_string(),
            step,
        });
        self
    }

    fn send(
        &mut self,
        name: &str,
        method: &'static str,
        path: &str,
        content_type: &'static str,
        body: Body,
    ) -> &mut Self {
        self.push(
            name,
            Step::Request {
                method,
                path: path.to_string(),
                content_type,
                body,
                capture: None,
            },
        )
    }

    fn get(&mut self, name: &str, path: &str) -> &mut Self {
        self.send(name, "GET", path, "", Body::None)
    }

    fn post(&mut self, name: &str, path: &str, body: Value) -> &mut Self {
        self.send(name, "POST", path, JSON, Body::Json(body))
    }

    fn put(&mut self, name: &str, path: &str, body: Value) -> &mut Self {
        self.send(name, "PUT", path, JSON, Body::Json(body))
    }

    fn patch(
        &mut self,
        name: &str,
        path: &str,
        content_type: &'static str,
        body: Value,
    ) -> &mut Self {
        self.send(name, "PATCH", path, content_type, Body::Json(body))
    }

    fn delete(&mut self, name: &str, path: &str) -> &mut Self {
        self.send(name, "DELETE", path, "", Body::None)
    }

    fn delete_with(&mut self, name: &str, path: &str, options: Value) -> &mut Self {
        self.send(name, "DELETE", path, JSON, Body::Json(options))
    }

    fn raw(
        &mut self,
        name: &str,
        method: &'static str,
        path: &str,
        ct: &'static str,
        body: &'static str,
    ) -> &mut Self {
        self.send(name, method, path, ct, Body::Raw(body))
    }

    /// Keep the last request's answer under `key`.
    fn capture(&mut self, key: &'static str) -> &mut Self {
        if let Some(Case {
            step: Step::Request { capture, .. },
            ..
        }) = self.0.last_mut()
        {
            *capture = Some(key);
        }
        self
    }

    fn watch(&mut self, name: &str, path: &str, events: usize) -> &mut Self {
        self.push(
            name,
            Step::Watch {
                path: path.to_string(),
                events,
            },
        )
    }

    fn wait(
        &mut self,
        name: &str,
        path: &str,
        only: Only,
        until: fn(u16, &Value) -> bool,
    ) -> &mut Self {
        self.push(
            name,
            Step::Wait {
                path: path.to_string(),
                until,
                only,
            },
        )
    }
}

fn gone(code: u16, _: &Value) -> bool {
    code == 404
}

fn exists(code: u16, _: &Value) -> bool {
    code == 200
}

/// The object's controller has seen its current generation.
fn observed(code: u16, v: &Value) -> bool {
    code == 200
        && v["status"]["observedGeneration"].as_i64() >= v["metadata"]["generation"].as_i64()
        && v["metadata"]["generation"].is_i64()
}

/// A PDB's status is current and no eviction is still being accounted for.
fn pdb_settled(code: u16, v: &Value) -> bool {
    observed(code, v)
        && v["status"]["disruptedPods"]
            .as_object()
            .is_none_or(Map::is_empty)
}

fn pdb_allows_one(code: u16, v: &Value) -> bool {
    pdb_settled(code, v) && v["status"]["disruptionsAllowed"] == 1
}

fn pdb_allows_none(code: u16, v: &Value) -> bool {
    pdb_settled(code, v)
        && v["status"]["disruptionsAllowed"] == 0
        && v["status"]["currentHealthy"] == 2
}

fn meta(name: &str) -> Value {
    json!({"name": name})
}

/// A node as a kubelet registers it: with its status, which both backends keep, and the
/// `node.kubernetes.io/not-ready` taint that kube-apiserver's TaintNodesByCondition plugin
/// would add (see `node-create-untainted` for a node without it).
fn node(name: &str, labels: Value) -> Value {
    let t = "2026-01-01T00:00:00Z";
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": "diff/initial", "value": "x", "effect": "PreferNoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}],
            "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "boot-1", "kernelVersion": "6.1.0",
                "osImage": "diff", "containerRuntimeVersion": "containerd://1.7.0", "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}})
}

/// A pod bound to `node` (no scheduler runs on the real cluster) that mounts no service
/// account token (the sandbox serves no ServiceAccounts).
fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}})
}

/// The status a kubelet reports for a running, Ready pod, written through `/status`.
fn ready_status() -> Value {
    json!([{"op": "replace", "path": "/status", "value": {"phase": "Running", "qosClass": "BestEffort",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
            {"type": "PodScheduled", "status": "True"}]}}])
}

fn lease(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "labels": labels}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
}

fn template(labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"automountServiceAccountToken": false,
        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}})
}

fn node_maintenance(name: &str, node: &str) -> Value {
    json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": name}, "spec": {"nodeName": node, "reason": "diff"}})
}

fn window(name: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut w = json!({"apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
        "kind": "MaintenanceWindow", "metadata": {"name": name},
        "spec": {"schedule": "0 2 * * *", "duration": "4h",
            "nodeSelector": {"matchLabels": {"a": "b"}}, "release": {"after": "10m"},
            "maxUnavailable": 1}});
    change(&mut w["spec"]);
    w
}

fn corpus() -> Corpus {
    let mut c = Corpus::default();
    namespaces(&mut c);
    nodes(&mut c);
    leases(&mut c);
    pods_and_eviction(&mut c);
    events(&mut c);
    workloads(&mut c);
    custom_resources(&mut c);
    bad_requests(&mut c);
    c
}

fn namespaces(c: &mut Corpus) {
    c.post(
        "ns-create",
        NS,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta("diff")}),
    )
    .post("ns-create-again", NS, json!({"metadata": meta("diff")}))
    .post(
        "ns-create-events",
        NS,
        json!({"metadata": meta("diff-events")}),
    )
    .post(
        "ns-create-bad-name",
        NS,
        json!({"metadata": meta("Bad_NS")}),
    )
    .get("ns-get", &format!("{NS}/diff"))
    .get(
        "ns-list-by-label",
        &format!("{NS}?labelSelector=kubernetes.io%2Fmetadata.name%3Ddiff"),
    )
    .patch(
        "ns-merge-label",
        &format!("{NS}/diff"),
        MERGE,
        json!({"metadata": {"labels": {"team": "a"}}}),
    )
    .post(
        "ns-create-doomed",
        NS,
        json!({"metadata": meta("diff-doomed")}),
    )
    .delete("ns-delete", &format!("{NS}/diff-doomed"))
    .wait(
        "ns-delete-finishes",
        &format!("{NS}/diff-doomed"),
        Only::Both,
        gone,
    )
    .get("ns-get-deleted", &format!("{NS}/diff-doomed"));
}

fn nodes(c: &mut Corpus) {
    let n1 = format!("{NODES}/diff-n1");
    let n2 = format!("{NODES}/diff-n2");
    c.post("node-create", NODES, node("diff-n1", json!({"diff": "yes", "zone": "a"})))
        .capture("n1")
        .post("node-create-second", NODES, node("diff-n2", json!({"diff": "yes", "zone": "b"})))
        .post("node-create-again", NODES, node("diff-n1", json!({})))
        .post("node-create-untainted", NODES, json!({"metadata": meta("diff-n3"), "spec": {}}))
        .delete("node-delete-untainted", &format!("{NODES}/diff-n3"))
        .post("node-create-bad-name", NODES, node("Diff_N", json!({})))
        .post("node-create-no-name", NODES, json!({"metadata": {}}))
        .get("node-get", &n1)
        .get("node-get-missing", &format!("{NODES}/diff-missing"))
        .get("node-list-label", &format!("{NODES}?labelSelector=diff%3Dyes"))
        .get("node-list-label-set", &format!("{NODES}?labelSelector=zone%20in%20(b%2Cc)"))
        .get("node-list-label-not", &format!("{NODES}?labelSelector=diff%2C!nothere"))
        .get("node-list-field-name", &format!("{NODES}?fieldSelector=metadata.name%3Ddiff-n2"))
        .get("node-list-field-unsupported", &format!("{NODES}?fieldSelector=spec.color%3Dred"))
        .patch("node-smp-labels", &n1, STRATEGIC, json!({"metadata": {"labels": {"smp": "1"}}}))
        .patch("node-smp-remove-label", &n1, STRATEGIC, json!({"metadata": {"labels": {"smp": null}}}))
        .patch("node-smp-taints", &n1, STRATEGIC, json!({"spec": {"taints": [
            {"key": "diff/a", "value": "1", "effect": "NoSchedule"},
            {"key": "diff/b", "effect": "NoExecute"}]}}))
        .patch("node-smp-cordon", &n1, STRATEGIC, json!({"spec": {"unschedulable": true}}))
        .get("node-list-field-unschedulable", &format!("{NODES}?fieldSelector=spec.unschedulable%3Dtrue"))
        .patch("node-smp-annotations", &n1, STRATEGIC, json!({"metadata": {"annotations": {"diff/note": "x"}}}))
        .patch("node-merge-labels", &n1, MERGE, json!({"metadata": {"labels": {"merge": "y", "zone": null}}}))
        .patch("node-json-add", &n1, JSON_PATCH, json!([{"op": "add", "path": "/metadata/labels/jp", "value": "z"}]))
        .patch("node-json-test-ok", &n1, JSON_PATCH, json!([{"op": "test", "path": "/metadata/labels/jp", "value": "z"},
            {"op": "replace", "path": "/metadata/labels/jp", "value": "zz"}]))
        .patch("node-json-test-fails", &n1, JSON_PATCH, json!([{"op": "test", "path": "/metadata/labels/jp", "value": "nope"},
            {"op": "remove", "path": "/metadata/labels/jp"}]))
        .patch("node-json-remove-missing", &n1, JSON_PATCH, json!([{"op": "remove", "path": "/metadata/labels/absent"}]))
        .patch("node-json-not-a-list", &n1, JSON_PATCH, json!({"op": "add"}))
        .patch("node-main-ignores-status", &n1, MERGE, json!({"metadata": {"labels": {"main": "1"}},
            "status": {"nodeInfo": {"bootID": "changed"}}}))
        .patch("node-status-ignores-spec", &format!("{n1}/status"), MERGE, json!({"spec": {"unschedulable": false},
            "status": {"nodeInfo": {"bootID": "boot-2"}}}))
        .get("node-get-after-status", &n1)
        .capture("n1")
        .put("node-put-current", &n1, json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "diff-n1", "resourceVersion": "$(n1.metadata.resourceVersion)", "labels": {"put": "1"}},
            "spec": {"unschedulable": true}}))
        .put("node-put-stale", &n1, json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "diff-n1", "resourceVersion": "$(n1.metadata.resourceVersion)"}, "spec": {}}))
        .put("node-put-name-mismatch", &n1, json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-other"}, "spec": {}}))
        .put("node-put-wrong-kind", &n1, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "diff-n1"}}))
        .patch("node-ssa-create-owner", &format!("{n2}?fieldManager=mgr-a"), APPLY,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-n2", "labels": {"owned": "a"}}}))
        .patch("node-ssa-conflict", &format!("{n2}?fieldManager=mgr-b"), APPLY,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-n2", "labels": {"owned": "b"}}}))
        .patch("node-ssa-force", &format!("{n2}?fieldManager=mgr-b&force=true"), APPLY,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-n2", "labels": {"owned": "b"}}}))
        .patch("node-ssa-same-value-shared", &format!("{n2}?fieldManager=mgr-c"), APPLY,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-n2", "labels": {"owned": "b"}}}))
        .patch("node-ssa-no-manager", &n2, APPLY,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-n2", "labels": {"x": "y"}}}))
        .patch("node-ssa-force-without-apply", &format!("{n2}?force=true"), MERGE, json!({"metadata": {"labels": {"f": "1"}}}))
        .patch("node-ssa-json-body", &format!("{n2}?fieldManager=mgr-a"), "application/apply-patch+json",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "diff-n2", "labels": {"owned": "a2"}}}))
        .patch("node-ssa-unknown-kind", &format!("{n2}?fieldManager=mgr-a"), APPLY,
            json!({"apiVersion": "v1", "kind": "Frob", "metadata": {"name": "diff-n2"}}))
        .patch("node-patch-missing", &format!("{NODES}/diff-missing"), MERGE, json!({"metadata": {"labels": {"a": "b"}}}))
        .patch("node-patch-dry-run", &format!("{n2}?dryRun=All"), MERGE, json!({"metadata": {"labels": {"dry": "run"}}}))
        .get("node-get-after-dry-run", &n2)
        .delete("node-delete", &n2)
        .get("node-get-deleted", &n2)
        .delete("node-delete-again", &n2);
}

fn leases(c: &mut Corpus) {
    let l1 = format!("{LEASES}/l1");
    c.post("lease-create", LEASES, lease("l1", json!({"set": "p"})))
        .capture("l1")
        .post("lease-create-2", LEASES, lease("l2", json!({"set": "p"})))
        .post("lease-create-3", LEASES, lease("l3", json!({"set": "p"})))
        .post("lease-create-generate-name", LEASES, json!({"metadata": {"generateName": "gen-", "labels": {"set": "g"}},
            "spec": {"holderIdentity": "g"}}))
        .post("lease-create-no-name", LEASES, json!({"metadata": {}, "spec": {}}))
        .post("lease-create-namespace-mismatch", LEASES, json!({"metadata": {"name": "l9", "namespace": "other"}}))
        .post("lease-create-unknown-namespace", "/apis/coordination.k8s.io/v1/namespaces/nowhere/leases", lease("l1", json!({})))
        .post("lease-create-dry-run", &format!("{LEASES}?dryRun=All"), lease("l-dry", json!({})))
        .get("lease-get-dry-run", &format!("{LEASES}/l-dry"))
        .get("lease-get", &l1)
        .get("lease-list-limit", &format!("{LEASES}?labelSelector=set%3Dp&limit=2"))
        .capture("page1")
        .get("lease-list-continue", &format!("{LEASES}?labelSelector=set%3Dp&limit=2&continue=$(page1.metadata.continue)"))
        .get("lease-list-bad-continue", &format!("{LEASES}?limit=2&continue=garbage"))
        .get("lease-list-all-namespaces", "/apis/coordination.k8s.io/v1/leases?labelSelector=set%3Dg")
        .get("lease-list-field-namespace", "/apis/coordination.k8s.io/v1/leases?fieldSelector=metadata.namespace%3Ddiff%2Cmetadata.name%3Dl2")
        .put("lease-put", &l1, json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l1", "resourceVersion": "$(l1.metadata.resourceVersion)", "labels": {"set": "p"}},
            "spec": {"holderIdentity": "b", "leaseDurationSeconds": 15}}))
        .put("lease-put-stale", &l1, json!({"metadata": {"name": "l1", "resourceVersion": "$(l1.metadata.resourceVersion)"},
            "spec": {"holderIdentity": "c"}}))
        .put("lease-put-without-rv", &l1, json!({"metadata": {"name": "l1", "labels": {"set": "p"}},
            "spec": {"holderIdentity": "d", "leaseDurationSeconds": 15}}))
        .put("lease-put-missing", &format!("{LEASES}/l-missing"), json!({"metadata": {"name": "l-missing"}, "spec": {}}))
        .put("lease-put-invalid-rv", &l1, json!({"metadata": {"name": "l1", "resourceVersion": "abc"}, "spec": {}}))
        .watch("lease-watch-resume", &format!("{LEASES}?watch=true&fieldSelector=metadata.name%3Dl1&resourceVersion=$(l1.metadata.resourceVersion)"), 1)
        .watch("lease-watch-future-rv", &format!("{LEASES}?watch=true&resourceVersion=999999999"), 1)
        .get("lease-watch-invalid-rv", &format!("{LEASES}?watch=true&resourceVersion=abc"))
        .patch("lease-merge", &l1, MERGE, json!({"spec": {"holderIdentity": "e"}}))
        .patch("lease-merge-null-removes", &l1, MERGE, json!({"spec": {"leaseDurationSeconds": null}}))
        .patch("lease-merge-bad-json", &l1, MERGE, json!("not an object"))
        .raw("lease-merge-malformed", "PATCH", &l1, MERGE, "{\"spec\":")
        .patch("lease-smp", &l1, STRATEGIC, json!({"spec": {"holderIdentity": "f"}}))
        .patch("lease-ssa", &format!("{l1}?fieldManager=leader"), APPLY,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l1"}, "spec": {"holderIdentity": "g"}}))
        .patch("lease-ssa-create", &format!("{LEASES}/l-applied?fieldManager=leader"), APPLY,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l-applied"}, "spec": {"holderIdentity": "h"}}))
        .patch("lease-ssa-name-mismatch", &format!("{l1}?fieldManager=leader"), APPLY,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l2"}, "spec": {}}))
        .patch("lease-merge-dry-run", &format!("{l1}?dryRun=All"), MERGE, json!({"spec": {"holderIdentity": "dry"}}))
        .get("lease-get-after-patches", &l1)
        .capture("l1")
        .delete_with("lease-delete-wrong-rv", &l1, json!({"preconditions": {"resourceVersion": "1"}}))
        .delete_with("lease-delete-wrong-uid", &l1, json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}}))
        .delete_with("lease-delete-dry-run", &format!("{l1}?dryRun=All"), json!({}))
        .get("lease-get-after-dry-delete", &l1)
        .delete_with("lease-delete-preconditions-hold", &l1, json!({"preconditions": {"uid": "$(l1.metadata.uid)",
            "resourceVersion": "$(l1.metadata.resourceVersion)"}}))
        .send("lease-deletecollection", "DELETE", &format!("{LEASES}?labelSelector=set%3Dp"), "", Body::None)
        .get("lease-list-after-deletecollection", LEASES);
}

fn pods_and_eviction(c: &mut Corpus) {
    let p = |n: &str| format!("{PODS}/{n}");
    let pdb = format!("{PDBS}/pdb-a");
    let web = json!({"app": "web"});
    c.wait("pod-service-account-ready", "/api/v1/namespaces/diff/serviceaccounts/default", Only::Real, exists)
        .post("pod-create", PODS, pod("p1", "diff-n1", web.clone()))
        .post("pod-create-2", PODS, pod("p2", "diff-n1", web.clone()))
        .post("pod-create-3", PODS, pod("p3", "diff-n1", web.clone()))
        .post("pod-create-unbound", PODS, pod("p-pending", "", json!({"app": "other"})))
        .post("pod-create-no-containers", PODS, json!({"metadata": meta("p-bad"), "spec": {"containers": []}}))
        .patch("pod-status-ready", &format!("{}/status", p("p1")), JSON_PATCH, ready_status())
        .patch("pod-status-ready-2", &format!("{}/status", p("p2")), JSON_PATCH, ready_status())
        .patch("pod-status-ready-3", &format!("{}/status", p("p3")), JSON_PATCH, ready_status())
        .get("pod-get", &p("p1"))
        .get("pod-list-node", &format!("{PODS}?fieldSelector=spec.nodeName%3Ddiff-n1"))
        .get("pod-list-phase", &format!("{PODS}?fieldSelector=status.phase%3DRunning"))
        .get("pod-list-phase-not", &format!("{PODS}?fieldSelector=status.phase!%3DRunning"))
        .get("pod-list-label-and-field", &format!("{PODS}?labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dp2"))
        .patch("pod-smp-container-image", &p("p1"), STRATEGIC,
            json!({"spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]}}))
        .patch("pod-smp-add-toleration", &p("p1"), STRATEGIC,
            json!({"spec": {"tolerations": [{"key": "diff/a", "operator": "Exists", "effect": "NoSchedule"}]}}))
        .patch("pod-smp-labels", &p("p1"), STRATEGIC, json!({"metadata": {"labels": {"tier": "front"}}}))
        .patch("pod-merge-node-name-forbidden", &p("p1"), MERGE, json!({"spec": {"nodeName": "diff-n2"}}))
        .patch("pod-status-ignores-spec", &format!("{}/status", p("p1")), MERGE,
            json!({"spec": {"activeDeadlineSeconds": 5}, "status": {"message": "hello"}}))
        .patch("pod-main-ignores-status", &p("p1"), MERGE, json!({"status": {"message": "bye"}, "metadata": {"labels": {"m": "1"}}}))
        .post("pdb-create", PDBS, json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta("pdb-a"), "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}))
        .post("pdb-create-invalid", PDBS, json!({"metadata": meta("pdb-bad"),
            "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}))
        .wait("pdb-allows-one", &pdb, Only::Both, pdb_allows_one)
        .get("pdb-get", &pdb)
        .post("pod-evict", &format!("{}/eviction", p("p2")), json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "p2", "namespace": "diff"}, "deleteOptions": {"gracePeriodSeconds": 0}}))
        .get("pod-get-evicted", &p("p2"))
        .wait("pdb-allows-none", &pdb, Only::Both, pdb_allows_none)
        .get("pdb-get-blocking", &pdb)
        .post("pod-evict-blocked", &format!("{}/eviction", p("p3")), json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "p3", "namespace": "diff"}}))
        .post("pod-evict-missing", &format!("{}/eviction", p("p-none")), json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "p-none", "namespace": "diff"}}))
        .post("pod-evict-pending", &format!("{}/eviction", p("p-pending")), json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "p-pending", "namespace": "diff"}, "deleteOptions": {"gracePeriodSeconds": 0}}))
        .get("pod-get-pending-evicted", &p("p-pending"))
        .patch("pdb-merge-min-available", &pdb, MERGE, json!({"spec": {"minAvailable": 1}}))
        .wait("pdb-follows-spec", &pdb, Only::Both, pdb_allows_one)
        .get("pdb-get-after-spec-change", &pdb)
        .get("pdb-list", PDBS)
        // Finalizers: a delete marks the pod, removing the last finalizer lets it go.
        .post("pod-create-finalized", PODS, {
            let mut p = pod("p-fin", "diff-n1", json!({"app": "fin"}));
            p["metadata"]["finalizers"] = json!(["diff.example/hold"]);
            p
        })
        .delete_with("pod-delete-finalized", &p("p-fin"), json!({"gracePeriodSeconds": 0}))
        .get("pod-get-finalized", &p("p-fin"))
        .patch("pod-remove-finalizer", &p("p-fin"), JSON_PATCH, json!([{"op": "remove", "path": "/metadata/finalizers"}]))
        .get("pod-get-after-finalizer", &p("p-fin"))
        .delete_with("pod-delete-now", &p("p1"), json!({"gracePeriodSeconds": 0}))
        .get("pod-get-deleted", &p("p1"));
}

fn events(c: &mut Corpus) {
    let t = "2026-01-01T00:00:00Z";
    c.post("event-core-create-namespace-mismatch", EVENTS, json!({"apiVersion": "v1", "kind": "Event",
        "metadata": meta("e0"), "involvedObject": {"kind": "Node", "name": "diff-n1", "apiVersion": "v1"},
        "reason": "Cordon", "message": "cordoned", "type": "Normal"}))
        .post("event-core-create", EVENTS, json!({"apiVersion": "v1", "kind": "Event",
        "metadata": meta("e1"), "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "diff-events", "apiVersion": "v1"},
        "reason": "Cordon", "message": "cordoned", "type": "Normal", "count": 2,
        "firstTimestamp": t, "lastTimestamp": t, "source": {"component": "diff-controller"}}))
        .get("event-core-get", &format!("{EVENTS}/e1"))
        .get("event-core-get-as-new", &format!("{NEW_EVENTS}/e1"))
        .post("event-new-create", NEW_EVENTS, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": meta("e2"), "eventTime": "2026-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p1", "namespace": "diff-events", "apiVersion": "v1"},
            "reason": "Drain", "note": "draining", "type": "Warning", "action": "Drain",
            "reportingController": "diff.example/controller", "reportingInstance": "diff-1"}))
        .post("event-new-create-invalid", NEW_EVENTS, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": meta("e3"), "regarding": {"kind": "Node", "name": "diff-n1"}, "note": "x", "type": "Normal"}))
        .get("event-new-get", &format!("{NEW_EVENTS}/e2"))
        .get("event-new-get-as-core", &format!("{EVENTS}/e2"))
        .get("event-core-list", EVENTS)
        .get("event-new-list", NEW_EVENTS)
        .get("event-core-list-field", &format!("{EVENTS}?fieldSelector=involvedObject.name%3Dp1"))
        .patch("event-core-merge", &format!("{EVENTS}/e1"), MERGE, json!({"count": 3, "message": "cordoned again"}))
        .patch("event-new-merge", &format!("{NEW_EVENTS}/e2"), MERGE, json!({"note": "drained"}))
        .post("event-new-dry-run-other-namespace", &format!("{NEW_EVENTS}?dryRun=All"), json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": meta("e9"), "regarding": {"kind": "Pod", "name": "p1", "namespace": "other"}, "note": "x", "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "diff.example/c", "reportingInstance": "i", "action": "A", "reason": "R"}))
        .delete("event-new-delete", &format!("{NEW_EVENTS}/e1"))
        .get("event-core-get-deleted", &format!("{EVENTS}/e1"));
}

fn workloads(c: &mut Corpus) {
    let none = json!({"app": "none"});
    c.post("rs-create", RS, json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("rs-a"),
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "rs"}}, "template": template(json!({"app": "rs"}))}}))
        .post("rs-create-selector-mismatch", RS, json!({"metadata": meta("rs-bad"),
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "y"}))}}))
        .wait("rs-observed", &format!("{RS}/rs-a"), Only::Real, observed)
        .get("rs-get", &format!("{RS}/rs-a"))
        .patch("rs-smp-template-image", &format!("{RS}/rs-a"), STRATEGIC,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]}}}}))
        .post("deploy-create", DEPLOYS, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "deploy"}}, "template": template(json!({"app": "deploy"}))}}))
        .wait("deploy-observed", &format!("{DEPLOYS}/web"), Only::Real, observed)
        .patch("deploy-ssa", &format!("{DEPLOYS}/web?fieldManager=diff-apply"), APPLY,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"applied": "yes"}}}))
        .post("ds-create", DS, json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent"),
            "spec": {"selector": {"matchLabels": none.clone()}, "template": {
                "metadata": {"labels": none}, "spec": {"nodeSelector": {"diff/never": "true"},
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}]}}}}))
        .delete_with("ds-delete-orphan", &format!("{DS}/agent"), json!({"propagationPolicy": "Orphan"}))
        .delete_with("rs-delete", &format!("{RS}/rs-a"), json!({"propagationPolicy": "Background"}));
}

fn custom_resources(c: &mut Corpus) {
    let nm = |n: &str| format!("{NM}/{n}");
    let mw = |n: &str| format!("{MW}/{n}");
    let create_nm = |node: &str| node_maintenance("nm-bad", node);
    // The refusals of the CRDs' CEL rules and schemas (the first cases of this check).
    c.post("nm-empty-node-name", NM, create_nm(""))
        .post("nm-missing-node-name", NM, json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1",
            "kind": "NodeMaintenance", "metadata": {"name": "nm-bad"}, "spec": {}}))
        .patch("nm-change-node-name", &nm("worker-3-disk-swap"), MERGE, json!({"spec": {"nodeName": "worker-4"}}))
        .post("mw-max-unavailable-zero", MW, window("w-bad", |s| s["maxUnavailable"] = json!("0%")))
        .post("mw-bad-duration", MW, window("w-bad", |s| s["duration"] = json!("4 hours")))
        .post("mw-empty-node-selector", MW, window("w-bad", |s| s["nodeSelector"] = json!({})))
        .post("mw-release-neither-after-nor-on-reboot", MW, window("w-bad", |s| s["release"] = json!({"onReboot": false})))
        .post("mw-blank-schedule", MW, window("w-bad", |s| s["schedule"] = json!("  ")))
        .post("mw-schema-errors", MW, window("w-bad", |s| {
            s["onWindowEnd"] = json!("Never");
            s["minReadySeconds"] = json!(-1);
            s.as_object_mut().unwrap().remove("schedule");
        }))
        .post("mw-schema-errors-order", MW, window("w-bad", |s| {
            s["onWindowEnd"] = json!("Never");
            s.as_object_mut().unwrap().remove("duration");
        }))
        .post("mw-minimum-and-cel", MW, window("w-bad", |s| {
            s["minReadySeconds"] = json!(-1);
            s["duration"] = json!("4 hours");
        }))
        .post("mw-name-too-long", MW, window(&"w".repeat(70), |_| {}))
        .post("mw-wrong-type", MW, window("w-bad", |s| s["duration"] = json!(4)))
        .post("mw-unknown-field-strict", &format!("{MW}?fieldValidation=Strict"), window("w-bad", |s| s["unknownField"] = json!(1)))
        .post("mw-valid-dry-run", &format!("{MW}?dryRun=All"), window("w-dry", |_| {}))
        .get("mw-get-dry-run", &mw("w-dry"))
        // CRUD of NodeMaintenance, with its status subresource.
        .post("nm-create", NM, {
            let mut n = node_maintenance("nm-a", "diff-n1");
            n["status"] = json!({"phase": "Succeeded"});
            n["spec"]["unknown"] = json!("pruned");
            n
        })
        .post("nm-create-again", NM, node_maintenance("nm-a", "diff-n1"))
        .get("nm-get", &nm("nm-a"))
        .get("nm-list", NM)
        .patch("nm-merge-label", &nm("nm-a"), MERGE, json!({"metadata": {"labels": {"team": "a"}}}))
        .patch("nm-smp-unsupported", &nm("nm-a"), STRATEGIC, json!({"metadata": {"labels": {"team": "b"}}}))
        .patch("nm-json-patch", &nm("nm-a"), JSON_PATCH, json!([{"op": "replace", "path": "/spec/reason", "value": "json"}]))
        .patch("nm-main-ignores-status", &nm("nm-a"), MERGE, json!({"status": {"phase": "Failed"}, "spec": {"reason": "main"}}))
        .patch("nm-status-ignores-spec", &format!("{}/status", nm("nm-a")), MERGE,
            json!({"status": {"phase": "Running", "drainProgress": 50}, "spec": {"reason": "status"}}))
        .patch("nm-status-schema-error", &format!("{}/status", nm("nm-a")), MERGE, json!({"status": {"drainProgress": "half"}}))
        .get("nm-get-after-status", &nm("nm-a"))
        .patch("nm-ssa", &format!("{}?fieldManager=diff-apply", nm("nm-a")), APPLY,
            json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
                "metadata": {"name": "nm-a"}, "spec": {"nodeName": "diff-n1", "reason": "applied"}}))
        .patch("nm-ssa-conflict", &format!("{}?fieldManager=other-apply", nm("nm-a")), APPLY,
            json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
                "metadata": {"name": "nm-a"}, "spec": {"nodeName": "diff-n1", "reason": "mine"}}))
        .patch("nm-ssa-status", &format!("{}/status?fieldManager=diff-apply", nm("nm-a")), APPLY,
            json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
                "metadata": {"name": "nm-a"}, "status": {"phase": "Succeeded"}}))
        // Finalizers on a custom resource.
        .patch("nm-add-finalizer", &nm("nm-a"), MERGE, json!({"metadata": {"finalizers": ["diff.example/hold"]}}))
        .delete("nm-delete-finalized", &nm("nm-a"))
        .get("nm-get-terminating", &nm("nm-a"))
        .patch("nm-terminating-new-finalizer", &nm("nm-a"), JSON_PATCH,
            json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "diff.example/late"}]))
        .patch("nm-remove-finalizer", &nm("nm-a"), MERGE, json!({"metadata": {"finalizers": null}}))
        .get("nm-get-after-finalizer", &nm("nm-a"))
        // Owner references: deleting a window collects what it owns.
        .post("mw-create-owner", MW, window("w-owner", |_| {}))
        .capture("owner")
        .post("nm-create-owned", NM, {
            let mut n = node_maintenance("nm-owned", "diff-n1");
            n["metadata"]["ownerReferences"] = json!([{"apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
                "kind": "MaintenanceWindow", "name": "w-owner", "uid": "$(owner.metadata.uid)", "controller": true}]);
            n
        })
        .get("mw-list", MW)
        .delete_with("mw-delete-owner", &mw("w-owner"), json!({"propagationPolicy": "Background"}))
        .wait("nm-owned-collected", &nm("nm-owned"), Only::Both, gone)
        .get("nm-get-collected", &nm("nm-owned"))
        .delete("nm-delete-example", &nm("worker-3-disk-swap"))
        .get("nm-list-at-end", NM);
}

fn bad_requests(c: &mut Corpus) {
    c.get("bad-unknown-resource", "/api/v1/frobs")
        .get("bad-unknown-group", "/apis/nowhere.example/v1/things")
        .get("bad-unknown-version", "/apis/coordination.k8s.io/v9/leases")
        .get(
            "bad-unknown-namespaced-resource",
            "/api/v1/namespaces/diff/frobs/x",
        )
        .raw(
            "bad-malformed-json",
            "POST",
            LEASES,
            JSON,
            "{\"metadata\": {\"name\": ",
        )
        .raw("bad-body-not-object", "POST", LEASES, JSON, "[1, 2]")
        .post(
            "bad-wrong-kind",
            LEASES,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("x")}),
        )
        .post(
            "bad-wrong-api-version",
            LEASES,
            json!({"apiVersion": "coordination.k8s.io/v9", "kind": "Lease", "metadata": meta("x")}),
        )
        .raw("bad-content-type", "POST", LEASES, "text/plain", "hello")
        .raw(
            "bad-patch-type",
            "PATCH",
            &format!("{NODES}/diff-n1"),
            "application/x-frob",
            "{}",
        )
        .get(
            "bad-label-selector",
            &format!("{NODES}?labelSelector=a%20b%20c"),
        )
        .get(
            "bad-label-value",
            &format!("{NODES}?labelSelector=a%3D%25%25"),
        )
        .get(
            "bad-field-selector",
            &format!("{PODS}?fieldSelector=spec.nodeName"),
        )
        .get("bad-limit", &format!("{LEASES}?limit=abc"))
        .send(
            "bad-method-on-collection",
            "PUT",
            LEASES,
            JSON,
            Body::Json(json!({})),
        )
        .get("bad-status-of-lease", &format!("{LEASES}/l2/status"))
        .post(
            "bad-create-on-name",
            &format!("{LEASES}/l2"),
            lease("l2", json!({})),
        );
}

// ---------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------

/// One backend and the answers it has captured.
struct Backend {
    name: &'static str,
    client: kube::Client,
    vars: HashMap<String, Value>,
}

static TEMPLATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\(([A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)\)").unwrap());

impl Backend {
    /// Replaces `$(name.a.b)` by this backend's captured value.
    fn fill(&self, text: &str) -> String {
        TEMPLATE
            .replace_all(text, |c: &regex::Captures| {
                let mut v = self
                    .vars
                    .get(&c[1])
                    .unwrap_or_else(|| panic!("nothing captured as {}", &c[1]));
                for key in c[2].split('.').filter(|k| !k.is_empty()) {
                    v = &v[key];
                }
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            })
            .into_owned()
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Body,
    ) -> (u16, Value) {
        let bytes = match body {
            Body::None => Vec::new(),
            Body::Json(v) => self.fill(&v.to_string()).into_bytes(),
            Body::Raw(s) => s.as_bytes().to_vec(),
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(self.fill(path))
            .header("Accept", "application/json");
        if !content_type.is_empty() {
            req = req.header("Content-Type", content_type);
        }
        let req = req.body(kube::client::Body::from(bytes)).unwrap();
        let res = self
            .client
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name));
        let code = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, body)
    }

    /// The first `n` events of a watch (fewer if it ends or [`WATCH_DEADLINE`] passes).
    async fn watch(&self, path: &str, n: usize) -> (u16, Value) {
        let req = http::Request::get(self.fill(path))
            .header("Accept", "application/json")
            .body(kube::client::Body::empty())
            .unwrap();
        let res = self
            .client
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("{}: watch {path}: {e}", self.name));
        let code = res.status().as_u16();
        let mut body = res.into_body();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WATCH_DEADLINE;
        while events.len() < n {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(f))) => f,
                _ => break,
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            while let Some(at) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=at).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    events.push(v);
                }
            }
        }
        if code != 200 {
            let rest = serde_json::from_slice(&buf).unwrap_or(Value::Null);
            return (code, rest);
        }
        (code, Value::Array(events))
    }

    /// Waits until GET `path` satisfies `until`; false when the deadline passed.
    async fn wait(&self, path: &str, until: fn(u16, &Value) -> bool) -> bool {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let (code, body) = self.request("GET", path, "", &Body::None).await;
            if until(code, &body) {
                return true;
            }
            if start.elapsed() > WAIT_DEADLINE {
                return false;
            }
            // Polling pace, not a proof of anything: the condition decides.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------------------

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap()
});
static TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$").unwrap()
});
/// resourceVersion values quoted in messages (preconditions, too old resource versions).
static MESSAGE_RV: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(resource ?version(?: in precondition| in object meta| in the precondition| in record)?:? \(?)\d+( \(\d+\))?")
        .unwrap()
});

/// Replaces what varies from run to run by nature, keeping every field: uids, resourceVersion
/// values, timestamps, continue tokens and generateName suffixes. Timestamps the corpus sent
/// itself (`2026-01-01...`) are kept: they must come back unchanged.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let x = match (k.as_str(), x) {
                    ("resourceVersion", Value::String(s))
                        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() =>
                    {
                        json!("<rv>")
                    }
                    ("continue", Value::String(s)) if !s.is_empty() => json!("<continue>"),
                    ("message", Value::String(s)) => json!(normalise_message(s)),
                    _ => normalise(x),
                };
                // Keys may hold uids too (`k:{"uid":...}` in managedFields).
                out.insert(UUID.replace_all(k, "<uid>").into_owned(), x);
            }
            // A generated name keeps its prefix.
            if let Some(prefix) = m.get("generateName").and_then(Value::as_str)
                && let Some(name) = m.get("name").and_then(Value::as_str)
                && name.starts_with(prefix)
                && name.len() == prefix.len() + 5
            {
                out.insert("name".into(), json!(format!("{prefix}<suffix>")));
            }
            // Entries of the same operation are ordered by time, which varies: order them by
            // what identifies them.
            if let Some(Value::Array(entries)) = out.get_mut("managedFields") {
                entries.sort_by_key(|e| {
                    (
                        e["operation"].to_string(),
                        e["manager"].to_string(),
                        e["subresource"].to_string(),
                    )
                });
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::String(s) if UUID.is_match(s) && s.len() == 36 => json!("<uid>"),
        Value::String(s) if TIME.is_match(s) && !s.starts_with("2026-01-01T00:00:00") => {
            json!("<time>")
        }
        other => other.clone(),
    }
}

fn normalise_message(s: &str) -> String {
    let s = UUID.replace_all(s, "<uid>");
    let s = MESSAGE_RV.replace_all(&s, |c: &regex::Captures| {
        format!(
            "{}<rv>{}",
            &c[1],
            if c.get(2).is_some() { " (<rv>)" } else { "" }
        )
    });
    s.into_owned()
}

/// kube-apiserver lists a refusal's causes in its message in an order that changes from run to
/// run (Go map iteration): a message `... is invalid: [a, b]` whose list is exactly its causes
/// is rewritten with the causes in a fixed order. Any other message is kept as it is.
fn in_cause_order(message: &str, causes: &[Value]) -> String {
    let Some((head, list)) = message.split_once(" is invalid: [") else {
        return message.to_string();
    };
    let Some(list) = list.strip_suffix(']') else {
        return message.to_string();
    };
    let mut rendered: Vec<String> = causes
        .iter()
        .map(|c| {
            let (field, text) = (
                c["field"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default(),
            );
            if field.is_empty() {
                text.to_string()
            } else {
                format!("{field}: {text}")
            }
        })
        .collect();
    let same_parts = rendered.iter().all(|r| list.contains(r.as_str()))
        && rendered.iter().map(String::len).sum::<usize>() + 2 * rendered.len().saturating_sub(1)
            == list.len();
    if !same_parts {
        return message.to_string();
    }
    rendered.sort();
    format!("{head} is invalid: [{}]", rendered.join(", "))
}

/// What is compared of an answer.
fn comparable(code: u16, body: &Value) -> Value {
    let failure = body["kind"] == "Status" && body["status"] == "Failure";
    if !failure {
        return json!({"code": code, "body": normalise(body)});
    }
    let mut details = body.get("details").cloned().unwrap_or(Value::Null);
    let mut causes: Vec<Value> = details
        .as_object_mut()
        .and_then(|d| d.remove("causes"))
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(normalise)
        .collect();
    causes.sort_by_key(|c| c.to_string());
    causes.dedup();
    let message = in_cause_order(
        &normalise_message(body["message"].as_str().unwrap_or_default()),
        &causes,
    );
    json!({"code": code, "reason": body["reason"], "message": message,
        "details": normalise(&details), "causes": causes})
}

/// The leaves where two values differ, as `path: real | sandbox` lines.
fn differences(path: &str, real: &Value, sandbox: &Value, out: &mut Vec<String>) {
    match (real, sandbox) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let none = Value::Null;
                let (x, y) = (a.get(k), b.get(k));
                if x == y {
                    continue;
                }
                match (x, y) {
                    (Some(x), Some(y)) => differences(&format!("{path}.{k}"), x, y, out),
                    (Some(x), None) => out.push(format!("{path}.{k}: {x} | (absent)")),
                    (None, Some(y)) => out.push(format!("{path}.{k}: (absent) | {y}")),
                    (None, None) => differences(path, &none, &none, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    differences(&format!("{path}[{i}]"), x, y, out);
                }
            }
        }
        _ if real != sandbox => out.push(format!("{path}: {real} | {sandbox}")),
        _ => {}
    }
}

/// The case names listed in DIFFERENCES.md as known differences (lines "- `name`: why").
fn listed_differences() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo("tests/control-plane/DIFFERENCES.md"))
        .expect("tests/control-plane/DIFFERENCES.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_answers_the_corpus_like_a_real_kube_apiserver() {
    let started = Instant::now();
    let corpus = corpus();
    let names: BTreeSet<&str> = corpus.0.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), corpus.0.len(), "case names must be unique");

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
    let mut config = sandbox.client_config().unwrap();
    config.default_retry = false;
    let mut backends = [
        Backend {
            name: "real",
            client: real.client(),
            vars: HashMap::new(),
        },
        Backend {
            name: "sandbox",
            client: kube::Client::try_from(config).unwrap(),
            vars: HashMap::new(),
        },
    ];
    let (_, version) = backends[0]
        .request("GET", "/version", "", &Body::None)
        .await;
    println!("real kube-apiserver {}", version["gitVersion"]);

    let listed = listed_differences();
    let mut requests = 0;
    let mut matched = 0;
    let mut differing = Vec::new();
    for case in &corpus.0 {
        let mut answers = Vec::new();
        match &case.step {
            Step::Wait { path, until, only } => {
                for b in &backends {
                    if *only == Only::Real && b.name != "real" {
                        continue;
                    }
                    let reached = b.wait(path, *until).await;
                    assert!(
                        reached || b.name != "real",
                        "{}: the real cluster did not reach the condition within {WAIT_DEADLINE:?}",
                        case.name
                    );
                    if !reached {
                        println!("{}: the sandbox did not reach the condition", case.name);
                        differing.push(case.name.clone());
                    }
                }
                continue;
            }
            Step::Request {
                method,
                path,
                content_type,
                body,
                capture,
            } => {
                for b in backends.iter_mut() {
                    let (code, answer) = b.request(method, path, content_type, body).await;
                    if let Some(key) = capture {
                        b.vars.insert(key.to_string(), answer.clone());
                    }
                    answers.push(comparable(code, &answer));
                }
            }
            Step::Watch { path, events } => {
                for b in &backends {
                    let (code, answer) = b.watch(path, *events).await;
                    answers.push(comparable(code, &answer));
                }
            }
        }
        requests += 1;
        let (r, s) = (&answers[0], &answers[1]);
        if r == s {
            matched += 1;
            continue;
        }
        let mut lines = Vec::new();
        differences("", r, s, &mut lines);
        println!(
            "{}: DIFFERENT{}\n  real:    {r}\n  sandbox: {s}\n  where (real | sandbox):\n    {}",
            case.name,
            if listed.contains(&case.name) {
                " (listed in DIFFERENCES.md)"
            } else {
                ", NOT LISTED"
            },
            lines.join("\n    ")
        );
        differing.push(case.name.clone());
    }
    println!(
        "{matched} of {requests} requests answered the same by both backends; {} differ; {:.1}s",
        requests - matched,
        started.elapsed().as_secs_f64()
    );
    let differing: BTreeSet<String> = differing.into_iter().collect();
    let unlisted: Vec<&String> = differing.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&differing).collect();
    assert!(
        unlisted.is_empty(),
        "real and sandbox differ on {unlisted:?}, not listed in tests/control-plane/DIFFERENCES.md"
    );
    assert!(
        stale.is_empty(),
        "{stale:?} are listed in tests/control-plane/DIFFERENCES.md but answered the same (or are not in the corpus): remove them"
    );
    assert!(
        requests >= 150,
        "the corpus must hold at least 150 requests, it holds {requests}"
    );
    sandbox.shutdown().await;
}
