//! What the rest of a cluster does around the API server: garbage collection, CRD
//! establishment, PDB status (the disruption controller), eviction, pod termination (the
//! kubelet), pod re-creation and scheduling (ReplicaSet/DaemonSet controllers, scheduler),
//! namespace cleanup and the node operations of the Rust API.

use super::error::{ApiError, success_status};
use super::pdb::{self, PodView};
use super::resources;
use super::selectors::LabelSelector;
use super::store::{
    Change, ChangeType, DeleteOpts, ObjKey, Store, finalizers, gr, name_of, namespace_of,
    node_ready, owner_uids, running_status, set_meta, uid_of,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

impl Store {
    /// Run the reactions to every queued change, until none is left.
    pub fn react(&mut self) {
        while let Some(c) = self.next_change() {
            self.react_to(&c);
            self.react_workloads(&c);
        }
    }

    fn react_to(&mut self, c: &Change) {
        let (group, plural) = (c.gr.0.as_str(), c.gr.1.as_str());
        let obj = &*c.object;
        let old = c.old.as_deref();
        match c.kind {
            ChangeType::Deleted => {
                if let Some(uid) = uid_of(obj) {
                    self.collect_dependents(uid);
                }
                for owner in owner_uids(obj) {
                    self.finish_foreground(&owner);
                }
            }
            ChangeType::Modified => {
                let newly_deleting = obj.pointer("/metadata/deletionTimestamp").is_some()
                    && old.is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_none());
                if newly_deleting
                    && finalizers(obj).iter().any(|f| f == "foregroundDeletion")
                    && let Some(uid) = uid_of(obj)
                {
                    let uid = uid.to_string();
                    for dep in self.dependents(&uid) {
                        self.delete_dependent(&dep, Some("Foreground"));
                    }
                    self.finish_foreground(&uid);
                }
            }
            ChangeType::Added => {}
        }
        match (group, plural) {
            ("apiextensions.k8s.io", "customresourcedefinitions") => self.react_crd(c),
            ("", "pods") => self.react_pod(c),
            ("policy", "poddisruptionbudgets") if c.kind != ChangeType::Deleted => {
                let spec_same = old.is_some_and(|o| o.get("spec") == obj.get("spec"));
                if !spec_same {
                    self.refresh_pdb(namespace_of(obj), name_of(obj));
                }
            }
            ("", "nodes") => self.react_node(c),
            ("", "namespaces") if c.kind == ChangeType::Deleted => {
                let ns = name_of(obj).to_string();
                self.empty_namespace(&ns);
            }
            _ => {}
        }
    }

    fn react_crd(&mut self, c: &Change) {
        let obj = &*c.object;
        if c.kind == ChangeType::Deleted {
            if let (Some(g), Some(p)) = (
                obj.pointer("/spec/group").and_then(Value::as_str),
                obj.pointer("/spec/names/plural").and_then(Value::as_str),
            ) {
                let (g, p) = (g.to_string(), p.to_string());
                self.unregister_type(&g, &p);
            }
            return;
        }
        let Ok(rt) = resources::from_crd(obj) else {
            return;
        };
        self.register_type(rt.clone());
        let established = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("type").and_then(Value::as_str) == Some("Established"))
            });
        if !established {
            let now = self.now();
            let mut o = obj.clone();
            let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": now});
            o["status"] = json!({
                "conditions": [cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                    cond("Established", "InitialNamesAccepted", "the initial names have been accepted")],
                "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or(json!({})),
                "storedVersions": [rt.preferred_version()],
            });
            let key = ObjKey {
                gr: c.gr.clone(),
                ns: String::new(),
                name: name_of(obj).to_string(),
            };
            self.commit(&key, Some(o));
        }
    }

    /// Garbage collection: a dependent goes once all its owners are gone; references to owners
    /// that are gone are dropped while others remain.
    fn collect_dependents(&mut self, uid: &str) {
        for dep in self.dependents(uid) {
            let Some(d) = self.get(&dep.gr, &dep.ns, &dep.name) else {
                continue;
            };
            let owners = owner_uids(&d);
            let alive: Vec<&String> = owners.iter().filter(|o| self.uid_exists(o)).collect();
            if alive.is_empty() {
                self.delete_dependent(&dep, None);
            } else if alive.len() < owners.len() {
                let mut d = (*d).clone();
                let live: Vec<String> = alive.into_iter().cloned().collect();
                if let Some(refs) = d
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| live.iter().any(|l| l == u))
                    });
                }
                self.commit(&dep, Some(d));
            }
        }
    }

    fn delete_dependent(&mut self, dep: &ObjKey, propagation: Option<&str>) {
        let Some(d) = self.get(&dep.gr, &dep.ns, &dep.name) else {
            return;
        };
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let Some(rt) = self.type_of(&dep.gr.0, &dep.gr.1) else {
            return;
        };
        let opts = DeleteOpts {
            propagation: propagation.map(str::to_string),
            ..Default::default()
        };
        self.delete_key(&rt, dep, &d, &opts);
    }

    /// An owner in foreground deletion loses its `foregroundDeletion` finalizer once its
    /// dependents are gone.
    fn finish_foreground(&mut self, owner_uid: &str) {
        if self.has_dependents(owner_uid) {
            return;
        }
        let Some(key) = self.key_of_uid(owner_uid) else {
            return;
        };
        let Some(o) = self.get(&key.gr, &key.ns, &key.name) else {
            return;
        };
        let fins = finalizers(&o);
        if o.pointer("/metadata/deletionTimestamp").is_none()
            || !fins.iter().any(|f| f == "foregroundDeletion")
        {
            return;
        }
        let rest: Vec<String> = fins
            .into_iter()
            .filter(|f| f != "foregroundDeletion")
            .collect();
        if rest.is_empty() {
            self.commit(&key, None);
        } else {
            let mut o = (*o).clone();
            set_meta(&mut o, "finalizers", json!(rest));
            self.commit(&key, Some(o));
        }
    }

    fn empty_namespace(&mut self, ns: &str) {
        let keys: Vec<ObjKey> = self
            .tables
            .iter()
            .flat_map(|(g, t)| {
                t.in_namespace(ns)
                    .map(|((n, name), _)| ObjKey {
                        gr: g.clone(),
                        ns: n.clone(),
                        name: name.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|k| !k.ns.is_empty())
            .collect();
        for k in keys {
            self.commit(&k, None);
        }
    }

    fn react_pod(&mut self, c: &Change) {
        let obj = &*c.object;
        let ns = namespace_of(obj).to_string();
        let mut changed: Vec<&Value> = vec![obj];
        if let Some(o) = c.old.as_deref() {
            changed.push(o);
        }
        self.refresh_pdbs_for(&ns, &changed);
        for p in &changed {
            if let Some(owner) = Self::controller_ref(p) {
                let uid = owner
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                self.refresh_workload_status(&uid);
            }
        }
        let was_terminating = c
            .old
            .as_deref()
            .is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some());
        let now_terminating =
            c.kind == ChangeType::Deleted || obj.pointer("/metadata/deletionTimestamp").is_some();
        if self.workload_controllers && now_terminating && !was_terminating {
            self.replace_pod(obj, c.kind == ChangeType::Deleted);
        } else if self.workload_controllers && c.kind == ChangeType::Deleted {
            self.replace_daemon_pod(obj);
        }
    }

    /// Keep a ReplicaSet's, StatefulSet's or DaemonSet's status counts current, as their
    /// controllers do.
    fn refresh_workload_status(&mut self, owner_uid: &str) {
        let Some(key) = self.key_of_uid(owner_uid) else {
            return;
        };
        if key.gr.0 != "apps" {
            return;
        }
        let Some(owner) = self.get(&key.gr, &key.ns, &key.name) else {
            return;
        };
        let counts = self.owned_pods(owner_uid);
        let (total, ready) = (counts.live as i64, counts.ready as i64);
        let generation = owner
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let mut status = owner
            .get("status")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or(json!({}));
        match key.gr.1.as_str() {
            "replicasets" | "statefulsets" => {
                status["replicas"] = json!(total);
                status["readyReplicas"] = json!(ready);
                status["availableReplicas"] = json!(ready);
                if key.gr.1 == "replicasets" {
                    status["fullyLabeledReplicas"] = json!(total);
                } else {
                    status["currentReplicas"] = json!(total);
                    status["updatedReplicas"] = json!(total);
                }
            }
            "daemonsets" => {
                status["currentNumberScheduled"] = json!(total);
                status["desiredNumberScheduled"] = json!(total);
                status["numberReady"] = json!(ready);
                status["numberAvailable"] = json!(ready);
                status["updatedNumberScheduled"] = json!(total);
                status["numberMisscheduled"] = json!(0);
            }
            _ => return,
        }
        status["observedGeneration"] = generation;
        if owner.get("status") != Some(&status) {
            let mut o = (*owner).clone();
            o["status"] = status;
            self.commit(&key, Some(o));
        }
    }

    fn controller_ref(pod: &Value) -> Option<&Value> {
        pod.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .iter()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
    }

    /// The ReplicaSet controller: a pod that starts terminating is replaced on another
    /// schedulable node.
    fn replace_pod(&mut self, pod: &Value, gone: bool) {
        let Some(owner) = Self::controller_ref(pod) else {
            return;
        };
        match owner.get("kind").and_then(Value::as_str) {
            Some("ReplicaSet") => {}
            Some("DaemonSet") if gone => {
                self.replace_daemon_pod(pod);
                return;
            }
            _ => return,
        }
        let owner_uid = owner.get("uid").and_then(Value::as_str).unwrap_or_default();
        if !self.uid_exists(owner_uid) || !self.replica_set_wants_more(owner_uid) {
            return;
        }
        let ns = namespace_of(pod).to_string();
        let avoid = pod.pointer("/spec/nodeName").and_then(Value::as_str);
        let mut fresh = fresh_pod_from(pod);
        let base = owner.get("name").and_then(Value::as_str).unwrap_or("pod");
        let suffix = self.name_suffix();
        set_meta(&mut fresh, "name", json!(format!("{base}-{suffix}")));
        match self.pick_node(&fresh, avoid) {
            Some(n) => {
                fresh["spec"]["nodeName"] = json!(n);
                fresh["status"] = running_status(&self.now());
            }
            None => {
                if let Some(s) = fresh.get_mut("spec").and_then(Value::as_object_mut) {
                    s.remove("nodeName");
                }
                fresh["status"] = json!({"phase": "Pending"});
            }
        }
        let rt = self.type_of("", "pods").expect("built in");
        let _ = self.create_prepared(&rt, &ns, fresh);
    }

    /// The DaemonSet controller: a daemon pod that is gone comes back on its node.
    fn replace_daemon_pod(&mut self, pod: &Value) {
        let Some(owner) = Self::controller_ref(pod) else {
            return;
        };
        if owner.get("kind").and_then(Value::as_str) != Some("DaemonSet") {
            return;
        }
        let owner_uid = owner.get("uid").and_then(Value::as_str).unwrap_or_default();
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !self.uid_exists(owner_uid)
            || node.is_empty()
            || self.get(&gr("", "nodes"), "", node).is_none()
        {
            return;
        }
        let mut fresh = fresh_pod_from(pod);
        let base = owner.get("name").and_then(Value::as_str).unwrap_or("pod");
        let suffix = self.name_suffix();
        set_meta(&mut fresh, "name", json!(format!("{base}-{suffix}")));
        fresh["status"] = running_status(&self.now());
        let rt = self.type_of("", "pods").expect("built in");
        let ns = namespace_of(pod).to_string();
        let _ = self.create_prepared(&rt, &ns, fresh);
    }

    fn create_prepared(
        &mut self,
        rt: &resources::ResourceType,
        ns: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        self.prepare_create(rt, ns, &mut obj)?;
        let key = self.key_of(rt, ns, &obj);
        if self.get_object(&key.gr, &key.ns, &key.name).is_some() {
            return Err(ApiError::already_exists(rt, &key.name));
        }
        Ok(self.commit(&key, Some(obj)).expect("a write commits"))
    }

    fn react_node(&mut self, c: &Change) {
        let node = &*c.object;
        let name = name_of(node).to_string();
        if c.kind == ChangeType::Deleted {
            // Pod GC: pods bound to a node that is gone are removed at once.
            let pods = self.pods_on_node(&name);
            for (ns, pod) in pods {
                self.commit(
                    &ObjKey {
                        gr: gr("", "pods"),
                        ns,
                        name: pod,
                    },
                    None,
                );
            }
            return;
        }
        let was_ready = c.old.as_deref().is_some_and(node_ready);
        if node_ready(node) && !was_ready {
            // The kubelet is back: it finishes the terminations it could not do.
            for (ns, pod) in self.pods_on_node(&name) {
                if let Some(p) = self.get(&gr("", "pods"), &ns, &pod)
                    && p.pointer("/metadata/deletionTimestamp").is_some()
                {
                    let left = p
                        .pointer("/metadata/deletionTimestamp")
                        .and_then(Value::as_str)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| {
                            (t.with_timezone(&chrono::Utc) - self.clock.now())
                                .num_milliseconds()
                                .max(0)
                        })
                        .unwrap_or(0);
                    self.schedule(super::store::Timer::FinishPodTermination {
                        ns,
                        name: pod,
                        uid: uid_of(&p).unwrap_or_default().to_string(),
                        after: std::time::Duration::from_secs_f64(
                            left as f64 / 1000.0 / self.speed,
                        ),
                    });
                }
            }
        }
        let schedulable = |n: &Value| {
            node_ready(n) && n.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true)
        };
        let became_schedulable =
            schedulable(node) && c.old.as_deref().is_none_or(|o| !schedulable(o));
        if self.workload_controllers && became_schedulable {
            self.schedule_pending();
        }
    }

    /// (namespace, name) of the pods bound to a node.
    pub fn pods_on_node(&self, node: &str) -> Vec<(String, String)> {
        self.pods_by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The scheduler: bind pending pods to schedulable nodes.
    fn schedule_pending(&mut self) {
        let pending: Vec<Arc<Value>> = self
            .pending_pods
            .iter()
            .filter_map(|(ns, name)| self.get(&gr("", "pods"), ns, name))
            .collect();
        for p in pending {
            if let Some(n) = self.pick_node(&p, None) {
                let mut p2 = (*p).clone();
                p2["spec"]["nodeName"] = json!(n);
                p2["status"] = running_status(&self.now());
                let key = ObjKey {
                    gr: gr("", "pods"),
                    ns: namespace_of(&p).to_string(),
                    name: name_of(&p).to_string(),
                };
                self.commit(&key, Some(p2));
            }
        }
    }

    fn refresh_pdbs_for(&mut self, ns: &str, pods: &[&Value]) {
        let Some(t) = self.tables.get(&gr("policy", "poddisruptionbudgets")) else {
            return;
        };
        let names: Vec<String> = t
            .in_namespace(ns)
            .filter(|(_, pdb)| {
                LabelSelector::from_object(pdb.value().pointer("/spec/selector"))
                    .ok()
                    .flatten()
                    .is_some_and(|s| pods.iter().any(|p| s.matches_object(p)))
            })
            .map(|((_, n), _)| n.clone())
            .collect();
        for n in names {
            self.refresh_pdb(ns, &n);
        }
    }

    /// The budget of a PDB, from the pods it selects now.
    pub fn pdb_budget(&self, pdb: &Value) -> pdb::Budget {
        let ns = namespace_of(pdb);
        let selector = LabelSelector::from_object(pdb.pointer("/spec/selector"))
            .ok()
            .flatten();
        let mut views = Vec::new();
        let mut scales: Vec<(String, i64)> = Vec::new();
        if let (Some(sel), Some(pods)) = (selector, self.tables.get(&gr("", "pods"))) {
            // The scale of each controller met, by (kind, name, uid): None when it is not
            // a ReplicaSet or StatefulSet that exists.
            let mut known: HashMap<(&str, &str, &str), Option<i64>> = HashMap::new();
            for (_, p) in pods.in_namespace(ns) {
                // Selected by the stored labels and read from the stored facts: no pod is
                // parsed.
                if !sel.matches_with(|k| p.label(k)) {
                    continue;
                }
                let mut scaled = None;
                if let Some(c) = p.controller()
                    && matches!(&*c.kind, "ReplicaSet" | "StatefulSet")
                {
                    let scale = *known.entry((&c.kind, &c.name, &c.uid)).or_insert_with(|| {
                        let plural = if &*c.kind == "ReplicaSet" {
                            "replicasets"
                        } else {
                            "statefulsets"
                        };
                        self.get(&gr("apps", plural), ns, &c.name)
                            .filter(|o| uid_of(o) == Some(&*c.uid))
                            .map(|o| {
                                o.pointer("/spec/replicas")
                                    .and_then(Value::as_i64)
                                    .unwrap_or(1)
                            })
                    });
                    if let Some(r) = scale {
                        if !scales.iter().any(|(u, _)| **u == *c.uid) {
                            scales.push((c.uid.to_string(), r));
                        }
                        scaled = Some(c.uid.to_string());
                    }
                }
                views.push(PodView {
                    healthy: p.healthy(),
                    terminating: p.terminating(),
                    scaled_controller: scaled,
                });
            }
        }
        pdb::budget(pdb.get("spec").unwrap_or(&Value::Null), &views, &scales)
    }

    /// Recompute and store a PDB's status when it changed.
    pub fn refresh_pdb(&mut self, ns: &str, name: &str) {
        let key = ObjKey {
            gr: gr("policy", "poddisruptionbudgets"),
            ns: ns.to_string(),
            name: name.to_string(),
        };
        let Some(pdb) = self.get(&key.gr, ns, name) else {
            return;
        };
        let b = self.pdb_budget(&pdb);
        let allowed = b.disruptions_allowed > 0;
        let old_cond = pdb
            .pointer("/status/conditions/0")
            .cloned()
            .unwrap_or(Value::Null);
        let same_cond = old_cond.get("status").and_then(Value::as_str)
            == Some(if allowed { "True" } else { "False" });
        let generation = pdb
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let cond = if same_cond {
            old_cond
        } else {
            json!({"type": "DisruptionAllowed", "status": if allowed {"True"} else {"False"},
                "reason": if allowed {"SufficientPods"} else {"InsufficientPods"}, "message": "",
                "observedGeneration": generation, "lastTransitionTime": self.now()})
        };
        let status = json!({
            "observedGeneration": generation,
            "disruptionsAllowed": b.disruptions_allowed,
            "currentHealthy": b.current_healthy,
            "desiredHealthy": b.desired_healthy,
            "expectedPods": b.expected_pods,
            "conditions": [cond],
        });
        if pdb.get("status") != Some(&status) {
            let mut p = (*pdb).clone();
            p["status"] = status;
            self.commit(&key, Some(p));
        }
    }

    /// `POST pods/<name>/binding`: the scheduler binds a pending pod to a node (`target`),
    /// and the sandbox's kubelet starts it. A pod already bound is a 409, worded as
    /// kube-apiserver words it.
    pub fn bind(&mut self, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let rt = self.type_of("", "pods").expect("built in");
        let pod = self
            .get(&gr("", "pods"), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt, name))?;
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "BadRequest",
                    "Binding.target.name: Required value: a Binding names its node in target.name",
                )
            })?;
        if let Some(bound) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{bound}\""
                ),
            );
            e.details = json!({"name": name, "kind": "pods/binding"});
            return Err(e);
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict_with(
                &rt,
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        let mut p = (*pod).clone();
        p["spec"]["nodeName"] = json!(node);
        p["status"] = running_status(&self.now());
        let key = ObjKey {
            gr: gr("", "pods"),
            ns: ns.to_string(),
            name: name.to_string(),
        };
        self.commit(&key, Some(p));
        self.react();
        Ok(success_status(201))
    }

    /// `POST pods/NAME/eviction`: delete the pod unless a PDB forbids it.
    pub fn evict(&mut self, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let rt = self.type_of("", "pods").expect("built in");
        let pod = self
            .get(&gr("", "pods"), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt, name))?;
        let opts = DeleteOpts {
            grace_period: body
                .pointer("/deleteOptions/gracePeriodSeconds")
                .and_then(Value::as_i64),
            uid: body
                .pointer("/deleteOptions/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            resource_version: body
                .pointer("/deleteOptions/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            dry_run: body
                .pointer("/deleteOptions/dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
            ..Default::default()
        };
        let ignores_pdb = pod.pointer("/metadata/deletionTimestamp").is_some()
            || matches!(
                pod.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed" | "Pending")
            );
        if !ignores_pdb {
            let pdbs: Vec<Arc<Value>> = self
                .tables
                .get(&gr("policy", "poddisruptionbudgets"))
                .map(|t| {
                    t.in_namespace(ns)
                        .map(|(_, pdb)| pdb.value())
                        .filter(|pdb| {
                            LabelSelector::from_object(pdb.pointer("/spec/selector"))
                                .ok()
                                .flatten()
                                .is_some_and(|s| !s.is_empty() && s.matches_object(&pod))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if pdbs.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(p) = pdbs.first() {
                let b = self.pdb_budget(p);
                let healthy = pdb::pod_healthy(&pod);
                let unhealthy_ok =
                    !healthy && b.current_healthy >= b.desired_healthy && b.desired_healthy > 0;
                if !unhealthy_ok && b.disruptions_allowed <= 0 {
                    let mut e = ApiError::new(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    );
                    e.details = json!({"causes": [{"reason": "DisruptionBudget",
                        "message": pdb::blocked_message(name_of(p), &b)}]});
                    return Err(e);
                }
            }
        }
        self.delete(&rt, ns, name, &opts)?;
        Ok(success_status(201))
    }

    /// The kubelet finishes a pod's termination once its grace period is over (if its node is
    /// up).
    pub fn finish_pod_termination(&mut self, ns: &str, name: &str, uid: &str) {
        let key = ObjKey {
            gr: gr("", "pods"),
            ns: ns.to_string(),
            name: name.to_string(),
        };
        let Some(p) = self.get(&key.gr, ns, name) else {
            return;
        };
        if uid_of(&p) != Some(uid) || p.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(n) = self.get(&gr("", "nodes"), "", node)
            && !node_ready(&n)
        {
            return; // The kubelet is down: the pod stays Terminating.
        }
        if finalizers(&p).is_empty() {
            self.commit(&key, None);
        } else {
            let mut p2 = (*p).clone();
            set_meta(&mut p2, "deletionGracePeriodSeconds", json!(0));
            p2["status"]["phase"] = json!("Failed");
            self.commit(&key, Some(p2));
        }
        self.react();
    }

    /// Add a Ready node with labels.
    pub fn add_node(
        &mut self,
        name: &str,
        labels: &serde_json::Map<String, Value>,
    ) -> Result<Arc<Value>, ApiError> {
        let rt = self.type_of("", "nodes").expect("built in");
        let obj = crate::kubelet::model::node_object(name, labels, &self.now());
        self.create_raw(&rt, "", obj)
    }

    /// Remove a node (its pods go with it).
    pub fn remove_node(&mut self, name: &str) -> Result<(), ApiError> {
        let rt = self.type_of("", "nodes").expect("built in");
        let key = ObjKey {
            gr: gr("", "nodes"),
            ns: String::new(),
            name: name.to_string(),
        };
        if self.commit(&key, None).is_none() {
            return Err(ApiError::not_found(&rt, name));
        }
        self.react();
        Ok(())
    }

    /// Change a node through a function of its object.
    pub fn modify_node(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Value, &str),
    ) -> Result<Arc<Value>, ApiError> {
        let rt = self.type_of("", "nodes").expect("built in");
        let key = ObjKey {
            gr: gr("", "nodes"),
            ns: String::new(),
            name: name.to_string(),
        };
        let node = self
            .get(&key.gr, "", name)
            .ok_or_else(|| ApiError::not_found(&rt, name))?;
        let mut n = (*node).clone();
        let now = self.now();
        f(&mut n, &now);
        let out = self.commit(&key, Some(n)).expect("a write commits");
        self.react();
        Ok(out)
    }
}

pub use crate::kubelet::model::set_ready;

fn fresh_pod_from(pod: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for k in ["labels", "annotations", "ownerReferences", "generateName"] {
        if let Some(v) = pod.pointer(&format!("/metadata/{k}")) {
            meta.insert(k.into(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod.get("spec").cloned().unwrap_or(json!({}))})
}
