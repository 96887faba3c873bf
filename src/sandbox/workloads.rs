//! The controllers a user expects to see act on the built-in workload kinds, run from the
//! store's reactions (when the sandbox's workload controllers are on, the default):
//!
//! - **Deployment**: keeps one ReplicaSet per pod template (`<name>-<pod-template-hash>`,
//!   revision annotation, owner reference), scales the current one to `spec.replicas` and
//!   the older ones to 0 at once (a rollout takes one step), and reports `replicas`,
//!   `updatedReplicas`, `readyReplicas`, `availableReplicas`, `observedGeneration` and the
//!   `Available`/`Progressing` conditions, so `kubectl rollout status` completes.
//! - **ReplicaSet**: creates pods from its template until `spec.replicas` are active (bound
//!   to a schedulable node and Running, or Pending when none fits), deletes the newest extra
//!   ones on scale-down; pods that terminate are replaced by the kubelet module.
//! - **Job**: defaults the selector and template labels as kube-apiserver does, runs up to
//!   `parallelism` pods at a time; the simulated kubelet runs each pod to completion at once
//!   (Running, then Succeeded with exit code 0), and the Job gets `succeeded`, `startTime`,
//!   `completionTime` and the `SuccessCriteriaMet` and `Complete` conditions.
//! - **Service**: a ClusterIP (or NodePort/LoadBalancer) Service without a cluster IP gets
//!   one from 10.96.0.0/12 at creation ([`service_defaults`]); headless (`None`) and
//!   ExternalName Services get none.
//!
//! ServiceAccounts get no token Secret (as in Kubernetes 1.24+), and a deleted Namespace takes
//! its contents with it (see the kubelet module).

use super::store::{
    Change, ChangeType, DeleteOpts, ObjKey, Store, gr, name_of, namespace_of, running_status,
    set_meta, uid_of,
};
use serde_json::{Value, json};
use std::sync::Arc;

/// Fill a Service's cluster IP and the defaults kube-apiserver gives it on create.
pub fn service_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let type_ = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    spec.entry("type").or_insert(json!(type_));
    if type_ == "ExternalName" {
        return;
    }
    spec.entry("sessionAffinity").or_insert(json!("None"));
    spec.entry("internalTrafficPolicy")
        .or_insert(json!("Cluster"));
    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("protocol").is_none() {
                p["protocol"] = json!("TCP");
            }
            if p.get("targetPort").is_none()
                && let Some(port) = p.get("port").cloned()
            {
                p["targetPort"] = port;
            }
        }
    }
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if ip.is_empty() {
        // A random address of 10.96.0.0/12 above .0.1 (kube-apiserver's allocator is random
        // too).
        let b = *uuid::Uuid::new_v4().as_bytes();
        let n =
            (u32::from(b[0]) << 12 | u32::from(b[1]) << 4 | u32::from(b[2] >> 4)) % 0xF_FFFD + 2;
        let ip = format!("10.{}.{}.{}", 96 + (n >> 16), (n >> 8) & 0xFF, n & 0xFF);
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    } else if spec.get("clusterIPs").is_none() {
        spec.insert("clusterIPs".into(), json!([ip]));
    }
}

/// A stable short hash of a pod template (`pod-template-hash`).
fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    // FNV-1a over the canonical JSON (serde_json keeps maps sorted).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in serde_json::to_vec(&t).unwrap_or_default() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn controller_of(obj: &Value) -> Option<(&str, &str)> {
    let r = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    Some((
        r.get("kind").and_then(Value::as_str)?,
        r.get("uid").and_then(Value::as_str)?,
    ))
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn owner_ref(obj: &Value, api_version: &str, kind: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name_of(obj),
        "uid": uid_of(obj).unwrap_or_default(), "controller": true, "blockOwnerDeletion": true}])
}

impl Store {
    /// The workload controllers' reaction to one change (see the module docs).
    pub fn react_workloads(&mut self, c: &Change) {
        if !self.workload_controllers {
            return;
        }
        let obj = &*c.object;
        match (c.gr.0.as_str(), c.gr.1.as_str()) {
            ("apps", "deployments") if c.kind != ChangeType::Deleted && !deleting(obj) => {
                self.reconcile_deployment(namespace_of(obj), name_of(obj));
            }
            ("apps", "replicasets") => {
                if c.kind != ChangeType::Deleted && !deleting(obj) {
                    let spec_changed = c
                        .old
                        .as_deref()
                        .is_none_or(|o| o.get("spec") != obj.get("spec"));
                    if spec_changed {
                        self.reconcile_replica_set(namespace_of(obj), name_of(obj));
                    }
                }
                if let Some(("Deployment", uid)) = controller_of(obj)
                    && let Some(k) = self.key_of_uid(uid)
                {
                    self.deployment_status(&k.ns, &k.name);
                }
            }
            ("batch", "jobs") if c.kind != ChangeType::Deleted && !deleting(obj) => {
                self.reconcile_job(namespace_of(obj), name_of(obj));
            }
            ("", "pods") => {
                if let Some(("Job", uid)) = controller_of(obj) {
                    let uid = uid.to_string();
                    self.run_job_pod(c);
                    if let Some(k) = self.key_of_uid(&uid) {
                        self.reconcile_job(&k.ns, &k.name);
                    }
                }
            }
            _ => {}
        }
    }

    /// Does this ReplicaSet have fewer active pods than it wants? (The kubelet module asks
    /// before replacing a terminating pod, so a scale-down is not undone.)
    pub fn replica_set_wants_more(&self, rs_uid: &str) -> bool {
        let Some(k) = self.key_of_uid(rs_uid) else {
            return false;
        };
        let Some(rs) = self.get(&k.gr, &k.ns, &k.name) else {
            return false;
        };
        (self.owned_pods(rs_uid).active as i64) < replicas(&rs)
    }

    fn owned(&self, uid: &str, group: &str, plural: &str) -> Vec<Arc<Value>> {
        self.dependents(uid)
            .into_iter()
            .filter(|k| k.gr.0 == group && k.gr.1 == plural)
            .filter_map(|k| self.get(&k.gr, &k.ns, &k.name))
            .filter(|o| controller_of(o).is_some_and(|(_, u)| u == uid))
            .collect()
    }

    fn active_pods(&self, uid: &str) -> Vec<Arc<Value>> {
        self.owned(uid, "", "pods")
            .into_iter()
            .filter(|p| {
                !deleting(p)
                    && !matches!(
                        p.pointer("/status/phase").and_then(Value::as_str),
                        Some("Succeeded" | "Failed")
                    )
            })
            .collect()
    }

    fn create_owned(&mut self, group: &str, plural: &str, ns: &str, mut obj: Value) {
        let Some(rt) = self.type_of(group, plural) else {
            return;
        };
        if self.prepare_create(&rt, ns, &mut obj).is_err() {
            return;
        }
        let key = self.key_of(&rt, ns, &obj);
        if self.get_object(&key.gr, &key.ns, &key.name).is_none() {
            self.commit(&key, Some(obj));
        }
    }

    /// A pod from a template, bound to a schedulable node (Running) or Pending.
    fn pod_from_template(&self, owner: &Value, kind: &str, api_version: &str) -> Value {
        let template = owner.pointer("/spec/template").cloned().unwrap_or_default();
        let mut meta = template
            .get("metadata")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or(json!({}));
        meta["name"] = json!(format!("{}-{}", name_of(owner), self.name_suffix()));
        meta["generateName"] = json!(format!("{}-", name_of(owner)));
        meta["ownerReferences"] = owner_ref(owner, api_version, kind);
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": template.get("spec").cloned().unwrap_or(json!({}))});
        super::defaults::scheme_defaults("", "pods", &mut pod);
        super::defaults::admit_pod(&mut pod);
        match self.pick_node(&pod, None) {
            Some(n) => {
                pod["spec"]["nodeName"] = json!(n);
                pod["status"] = running_status(&self.now());
            }
            None => pod["status"] = json!({"phase": "Pending"}),
        }
        pod
    }

    fn reconcile_replica_set(&mut self, ns: &str, name: &str) {
        let Some(rs) = self.get(&gr("apps", "replicasets"), ns, name) else {
            return;
        };
        let uid = uid_of(&rs).unwrap_or_default().to_string();
        let count = self.owned_pods(&uid).active;
        let want = replicas(&rs).max(0) as usize;
        for _ in count..want {
            let pod = self.pod_from_template(&rs, "ReplicaSet", "apps/v1");
            self.create_owned("", "pods", ns, pod);
        }
        if count > want {
            // Only a scale-down reads the pods themselves.
            let mut active = self.active_pods(&uid);
            let extra = active.len().saturating_sub(want);
            // The newest go first.
            active.sort_by(|a, b| {
                let t = |p: &Value| {
                    p.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                t(b).cmp(&t(a)).then_with(|| name_of(b).cmp(name_of(a)))
            });
            let rt = self.type_of("", "pods").expect("built in");
            for p in active.into_iter().take(extra) {
                let _ = self.delete(&rt, ns, name_of(&p), &DeleteOpts::default());
            }
        }
    }

    fn reconcile_deployment(&mut self, ns: &str, name: &str) {
        let Some(d) = self.get(&gr("apps", "deployments"), ns, name) else {
            return;
        };
        let uid = uid_of(&d).unwrap_or_default().to_string();
        let template = d.pointer("/spec/template").cloned().unwrap_or_default();
        let hash = template_hash(&template);
        let sets = self.owned(&uid, "apps", "replicasets");
        let revision = |rs: &Value| {
            rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let max_revision = sets.iter().map(|s| revision(s)).max().unwrap_or(0);
        let want = replicas(&d);
        let current = sets.iter().find(|s| {
            s.pointer("/metadata/labels/pod-template-hash")
                .and_then(Value::as_str)
                == Some(&hash)
        });
        match current {
            None => {
                let mut t = template.clone();
                t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let labels = t.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
                let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": format!("{name}-{hash}"), "labels": labels,
                        "annotations": {"deployment.kubernetes.io/revision": (max_revision + 1).to_string(),
                            "deployment.kubernetes.io/desired-replicas": want.to_string()},
                        "ownerReferences": owner_ref(&d, "apps/v1", "Deployment")},
                    "spec": {"replicas": want, "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
                        "selector": selector, "template": t}});
                let mut rs = rs;
                super::defaults::scheme_defaults("apps", "replicasets", &mut rs);
                self.create_owned("apps", "replicasets", ns, rs);
            }
            Some(rs) if replicas(rs) != want => {
                let mut rs2 = (**rs).clone();
                rs2["spec"]["replicas"] = json!(want);
                self.commit_with_generation(&rs2);
            }
            Some(_) => {}
        }
        for old in sets.iter().filter(|s| {
            s.pointer("/metadata/labels/pod-template-hash")
                .and_then(Value::as_str)
                != Some(&hash)
                && replicas(s) != 0
        }) {
            let mut o = (**old).clone();
            o["spec"]["replicas"] = json!(0);
            self.commit_with_generation(&o);
        }
        self.deployment_status(ns, name);
    }

    /// Commit a spec change made by a controller, bumping `metadata.generation`.
    fn commit_with_generation(&mut self, obj: &Value) {
        let mut o = obj.clone();
        let g = o
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        set_meta(&mut o, "generation", json!(g + 1));
        let key = ObjKey {
            gr: gr("apps", "replicasets"),
            ns: namespace_of(&o).to_string(),
            name: name_of(&o).to_string(),
        };
        self.commit(&key, Some(o));
    }

    fn deployment_status(&mut self, ns: &str, name: &str) {
        let Some(d) = self.get(&gr("apps", "deployments"), ns, name) else {
            return;
        };
        let uid = uid_of(&d).unwrap_or_default().to_string();
        let hash = template_hash(&d.pointer("/spec/template").cloned().unwrap_or_default());
        let sets = self.owned(&uid, "apps", "replicasets");
        let n = |s: &Value, f: &str| {
            s.pointer(&format!("/status/{f}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let sum = |f: &str| sets.iter().map(|s| n(s, f)).sum::<i64>();
        let current = sets.iter().find(|s| {
            s.pointer("/metadata/labels/pod-template-hash")
                .and_then(Value::as_str)
                == Some(&hash)
        });
        let want = replicas(&d);
        let total = sum("replicas");
        let available = sum("availableReplicas");
        let updated = current.map(|s| n(s, "replicas")).unwrap_or(0);
        let mut status = json!({"observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": total, "updatedReplicas": updated, "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available});
        if want - available > 0 {
            status["unavailableReplicas"] = json!(want - available);
        }
        // Zero counts are omitted on the wire, as kube-apiserver omits them.
        if let Some(m) = status.as_object_mut() {
            m.retain(|k, v| k == "observedGeneration" || v.as_i64() != Some(0));
        }
        let old_conds = d
            .pointer("/status/conditions")
            .cloned()
            .unwrap_or(json!([]));
        let now = self.now();
        let cond = |t: &str, ok: bool, reason: &str, msg: String| {
            let s = if ok { "True" } else { "False" };
            let since = old_conds
                .as_array()
                .and_then(|cs| {
                    cs.iter().find(|c| {
                        c.get("type").and_then(Value::as_str) == Some(t)
                            && c.get("status").and_then(Value::as_str) == Some(s)
                    })
                })
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or(json!(now));
            json!({"type": t, "status": s, "reason": reason, "message": msg,
                "lastUpdateTime": since, "lastTransitionTime": since})
        };
        let rs_name = current.map(|s| name_of(s).to_string()).unwrap_or_default();
        let done = updated == want && total == want && available >= want;
        status["conditions"] = json!([
            if available >= want {
                cond(
                    "Available",
                    true,
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                cond(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            },
            if done {
                cond(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                )
            } else {
                cond(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                )
            },
        ]);
        if d.get("status") != Some(&status) {
            let mut d2 = (*d).clone();
            d2["status"] = status;
            let key = ObjKey {
                gr: gr("apps", "deployments"),
                ns: ns.to_string(),
                name: name.to_string(),
            };
            self.commit(&key, Some(d2));
        }
    }

    fn reconcile_job(&mut self, ns: &str, name: &str) {
        let Some(job) = self.get(&gr("batch", "jobs"), ns, name) else {
            return;
        };
        let uid = uid_of(&job).unwrap_or_default().to_string();
        let key = ObjKey {
            gr: gr("batch", "jobs"),
            ns: ns.to_string(),
            name: name.to_string(),
        };
        // kube-apiserver's defaults: the selector and the template labels.
        if job.pointer("/spec/selector").is_none() {
            let mut j = (*job).clone();
            let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                "controller-uid": uid, "job-name": name});
            j["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            for (k, v) in labels.as_object().into_iter().flatten() {
                j["spec"]["template"]["metadata"]["labels"][k] = v.clone();
            }
            for (k, v) in [
                ("backoffLimit", json!(6)),
                ("completionMode", json!("NonIndexed")),
                ("parallelism", json!(1)),
                ("completions", json!(1)),
                ("suspend", json!(false)),
                ("podReplacementPolicy", json!("TerminatingOrFailed")),
                ("manualSelector", json!(false)),
            ] {
                if j["spec"].get(k).is_none() {
                    j["spec"][k] = v;
                }
            }
            self.commit(&key, Some(j));
            return; // The change of the job brings us back.
        }
        if job.pointer("/status/completionTime").is_some()
            || job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        {
            return;
        }
        let pods = self.owned(&uid, "", "pods");
        let phase = |p: &Value| {
            p.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let active = self.owned_pods(&uid).active as i64;
        let completions = job
            .pointer("/spec/completions")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let parallelism = job
            .pointer("/spec/parallelism")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let now = self.now();
        let mut status = job
            .get("status")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or(json!({}));
        if status.get("startTime").is_none() {
            status["startTime"] = json!(now);
        }
        status["succeeded"] = json!(succeeded);
        if failed > 0 {
            status["failed"] = json!(failed);
        }
        status["ready"] = json!(0);
        status["terminating"] = json!(0);
        if succeeded >= completions {
            status["active"] = json!(0);
            let c = |t: &str, reason: &str, msg: &str| {
                json!({"type": t, "status": "True", "reason": reason,
                "message": msg, "lastProbeTime": now, "lastTransitionTime": now})
            };
            status["conditions"] = json!([
                c(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods"
                ),
                c(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods"
                )
            ]);
            status["completionTime"] = json!(now);
            if let Some(m) = status.as_object_mut() {
                m.remove("active");
            }
        } else {
            let start = (parallelism.min(completions - succeeded) - active).max(0);
            for _ in 0..start {
                let pod = self.pod_from_template(&job, "Job", "batch/v1");
                self.create_owned("", "pods", ns, pod);
            }
            status["active"] = json!(active + start);
        }
        status["uncountedTerminatedPods"] = json!({});
        if job.get("status") != Some(&status) {
            let mut j = (*job).clone();
            j["status"] = status;
            self.commit(&key, Some(j));
        }
    }

    /// The simulated kubelet runs a Job's pod to completion as soon as it runs.
    fn run_job_pod(&mut self, c: &Change) {
        let pod = &*c.object;
        if c.kind == ChangeType::Deleted
            || deleting(pod)
            || pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running")
        {
            return;
        }
        let now = self.now();
        let mut p = pod.clone();
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|ct| json!({"name": ct.get("name").cloned().unwrap_or_default(),
                "image": ct.get("image").cloned().unwrap_or_default(), "ready": false, "restartCount": 0,
                "started": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": now, "finishedAt": now}}}))
            .collect();
        p["status"]["phase"] = json!("Succeeded");
        p["status"]["containerStatuses"] = json!(containers);
        if let Some(cs) = p
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            for cond in cs.iter_mut() {
                if matches!(
                    cond.get("type").and_then(Value::as_str),
                    Some("Ready" | "ContainersReady")
                ) {
                    cond["status"] = json!("False");
                    cond["reason"] = json!("PodCompleted");
                }
            }
        }
        let key = ObjKey {
            gr: gr("", "pods"),
            ns: namespace_of(pod).to_string(),
            name: name_of(pod).to_string(),
        };
        self.commit(&key, Some(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_get_a_cluster_ip_of_the_service_range_unless_headless() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        service_defaults(&mut s);
        let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
        let parts: Vec<u32> = ip.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts[0], 10);
        assert!((96..112).contains(&parts[1]), "{ip}");
        assert_eq!(s["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        let mut h = json!({"spec": {"clusterIP": "None"}});
        service_defaults(&mut h);
        assert_eq!(h["spec"]["clusterIP"], "None");
        let mut e = json!({"spec": {"type": "ExternalName", "externalName": "x.io"}});
        service_defaults(&mut e);
        assert!(e["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn the_template_hash_ignores_its_own_label() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {}});
        let b = json!({"metadata": {"labels": {"app": "x", "pod-template-hash": "q"}}, "spec": {}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&json!({"spec": {"x": 1}})));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
