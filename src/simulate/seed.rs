//! The generated cluster of `nmo simulate`: how many nodes of which role, and what runs on them.
//!
//! `--nodes N` means N nodes in all. They are split between the roles that the manifests'
//! MaintenanceWindows select: each window's node selector is turned into the labels a node
//! needs to match it ([`role_labels`]), and every distinct label set is one role. GPU roles
//! (the `nvidia.com/gpu.present` label) take `gpu_share` of the nodes, or exactly
//! `gpu_nodes` when given; the other roles share the rest evenly. Without any window, every
//! node is a worker.
//!
//! Each node gets a zone (`topology.kubernetes.io/zone`, three zones round robin), its hostname
//! label, and a realistic mix of pods: two `web` ReplicaSet pods (grace 30 s, a PDB allowing
//! 10% of them down), an `api` pod on every other node (namespace `shop`, grace 60 s, a PDB
//! keeping 50% available), a `batch` pod on every third node (grace 120 s, no PDB), and two
//! DaemonSet pods (`node-agent` and `log-shipper`, which a drain leaves alone).

use crate::api::MaintenanceWindow;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Label of generated worker nodes (what the weekly example selects).
pub const WORKER_LABEL: &str = "node-role.kubernetes.io/worker";
/// Label of generated GPU nodes (what the nightly example selects).
pub const GPU_LABEL: &str = "nvidia.com/gpu.present";
/// The zones generated nodes are spread over.
pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// A kind of generated node: a name prefix and the labels that make windows select it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Node names are `<prefix>-1`, `<prefix>-2`, …
    pub prefix: String,
    /// Labels every node of the role carries.
    pub labels: BTreeMap<String, String>,
}

impl Role {
    /// The default worker role.
    pub fn worker() -> Role {
        Role {
            prefix: "worker".into(),
            labels: BTreeMap::from([(WORKER_LABEL.to_string(), String::new())]),
        }
    }

    /// The GPU role of `--gpu-nodes` without any window selecting GPU nodes.
    pub fn gpu() -> Role {
        Role {
            prefix: "gpu".into(),
            labels: BTreeMap::from([(GPU_LABEL.to_string(), "true".to_string())]),
        }
    }

    fn is_gpu(&self) -> bool {
        self.labels.contains_key(GPU_LABEL)
    }
}

/// The labels a node needs to be selected by `selector`: `matchLabels` as they are, `In` with
/// its first value, `Exists` with an empty value. `NotIn` and `DoesNotExist` need nothing.
pub fn role_labels(selector: &LabelSelector) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        match e.operator.as_str() {
            "In" => {
                let value = e
                    .values
                    .iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_default();
                labels.entry(e.key.clone()).or_insert(value);
            }
            "Exists" => {
                labels.entry(e.key.clone()).or_default();
            }
            _ => {}
        }
    }
    labels
}

/// The name prefix of a role: `worker` for `node-role.kubernetes.io/worker`, `gpu` for GPU
/// nodes, otherwise the last part of its first label key in DNS-1123 form.
fn role_prefix(labels: &BTreeMap<String, String>) -> String {
    if labels.contains_key(GPU_LABEL) {
        return "gpu".into();
    }
    let Some(key) = labels
        .keys()
        .find(|k| k.starts_with("node-role.kubernetes.io/"))
        .or(labels.keys().next())
    else {
        return "node".into();
    };
    let last = key.rsplit('/').next().unwrap_or(key);
    let cleaned: String = last
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() {
        "node".into()
    } else {
        cleaned.chars().take(30).collect()
    }
}

/// The roles the windows select, in window order, one per distinct label set (a selector
/// needing no label adds none). Workers when no window needs a label.
pub fn roles_of(windows: &[MaintenanceWindow]) -> Vec<Role> {
    let mut roles: Vec<Role> = Vec::new();
    for w in windows {
        let labels = role_labels(&w.spec.node_selector);
        if labels.is_empty() || roles.iter().any(|r| r.labels == labels) {
            continue;
        }
        let mut prefix = role_prefix(&labels);
        if roles.iter().any(|r| r.prefix == prefix) {
            prefix = format!("{prefix}{}", roles.len() + 1);
        }
        roles.push(Role { prefix, labels });
    }
    if roles.is_empty() {
        roles.push(Role::worker());
    }
    roles
}

/// How many nodes each role gets out of `total`: GPU roles share `gpu_nodes` (or
/// `gpu_share` of the total, rounded), the other roles share the rest evenly, earlier roles
/// taking the remainder. Every role gets at least one node while there are enough.
pub fn split_nodes(
    roles: &[Role],
    total: usize,
    gpu_nodes: Option<usize>,
    gpu_share: f64,
) -> Vec<(Role, usize)> {
    let mut roles = roles.to_vec();
    if gpu_nodes.is_some_and(|n| n > 0) && !roles.iter().any(Role::is_gpu) {
        roles.push(Role::gpu());
    }
    let gpu_roles = roles.iter().filter(|r| r.is_gpu()).count();
    let other_roles = roles.len() - gpu_roles;
    let gpus = match (gpu_roles, gpu_nodes) {
        (0, _) => 0,
        (_, Some(n)) => n.min(total),
        _ if other_roles == 0 => total,
        _ => ((total as f64 * gpu_share).round() as usize).clamp(gpu_roles.min(total), total),
    };
    let others = total - gpus;
    let share =
        |n: usize, k: usize, i: usize| n.checked_div(k).map_or(0, |q| q + usize::from(i < n % k));
    let (mut gi, mut oi) = (0, 0);
    roles
        .into_iter()
        .map(|r| {
            let n = if r.is_gpu() {
                gi += 1;
                share(gpus, gpu_roles, gi - 1)
            } else {
                oi += 1;
                share(others, other_roles, oi - 1)
            };
            (r, n)
        })
        .collect()
}

/// One generated node: its name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedNode {
    /// Node name.
    pub name: String,
    /// Its labels: the role's, a zone and the hostname.
    pub labels: BTreeMap<String, String>,
    /// Pods of the `filler` ReplicaSet (namespace `apps`, grace 30 s, no PDB) it runs besides
    /// [`pods_for_node`]'s, for `--pods-per-node`.
    pub filler_pods: usize,
}

/// Give every node enough `filler` pods to run `per_node` pods in all (none where
/// [`pods_for_node`] already gives that many).
pub fn fill_pods(nodes: &mut [GeneratedNode], per_node: usize) {
    for (i, node) in nodes.iter_mut().enumerate() {
        node.filler_pods = per_node.saturating_sub(pods_for_node(i).len());
    }
}

/// The nodes of a split, named `<prefix>-<i>` and spread over [`ZONES`].
pub fn generated_nodes(split: &[(Role, usize)]) -> Vec<GeneratedNode> {
    let mut out = Vec::new();
    for (role, n) in split {
        for i in 1..=*n {
            let name = format!("{}-{i}", role.prefix);
            let mut labels = role.labels.clone();
            labels.insert(
                "topology.kubernetes.io/zone".into(),
                ZONES[(i - 1) % ZONES.len()].into(),
            );
            labels.insert("kubernetes.io/hostname".into(), name.clone());
            out.push(GeneratedNode {
                name,
                labels,
                filler_pods: 0,
            });
        }
    }
    out
}

/// A pod to create on a generated node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTemplate {
    /// Namespace.
    pub namespace: &'static str,
    /// The `app` label.
    pub app: &'static str,
    /// The owning ReplicaSet or DaemonSet.
    pub owner: Owner,
    /// terminationGracePeriodSeconds.
    pub grace: i64,
}

/// What owns a generated pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A ReplicaSet (evicted by a drain, re-created elsewhere).
    ReplicaSet,
    /// A DaemonSet (left alone by a drain).
    DaemonSet,
}

/// The pods of the `i`-th generated node (zero-based).
pub fn pods_for_node(i: usize) -> Vec<PodTemplate> {
    let rs = |namespace, app, grace| PodTemplate {
        namespace,
        app,
        owner: Owner::ReplicaSet,
        grace,
    };
    let ds = |app, grace| PodTemplate {
        namespace: "kube-system",
        app,
        owner: Owner::DaemonSet,
        grace,
    };
    let mut pods = vec![rs("default", "web", 30), rs("default", "web", 30)];
    if i.is_multiple_of(2) {
        pods.push(rs("shop", "api", 60));
    }
    if i.is_multiple_of(3) {
        pods.push(rs("batch", "batch", 120));
    }
    pods.push(ds("node-agent", 5));
    pods.push(ds("log-shipper", 10));
    pods
}

/// The PDBs of a generated cluster.
pub const PDBS: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: default\nspec:\n  maxUnavailable: 10%\n  selector:\n    matchLabels:\n      app: web\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  minAvailable: 50%\n  selector:\n    matchLabels:\n      app: api\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn window(yaml: &str) -> MaintenanceWindow {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn examples() -> Vec<MaintenanceWindow> {
        crate::simulate::EMBEDDED_EXAMPLES
            .iter()
            .map(|(_, y)| window(y))
            .collect()
    }

    #[test]
    fn the_examples_select_workers_and_gpu_nodes() {
        let roles = roles_of(&examples());
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0], Role::worker());
        assert_eq!(roles[1], Role::gpu());
    }

    #[test]
    fn nodes_means_nodes_in_all() {
        let roles = roles_of(&examples());
        for total in [0, 1, 2, 4, 9, 1000] {
            let split = split_nodes(&roles, total, None, 1.0 / 3.0);
            assert_eq!(
                split.iter().map(|(_, n)| n).sum::<usize>(),
                total,
                "{total}"
            );
        }
        let split = split_nodes(&roles, 9, None, 1.0 / 3.0);
        assert_eq!(split[0].1, 6);
        assert_eq!(split[1].1, 3);
        let split = split_nodes(&roles, 4, Some(0), 1.0 / 3.0);
        assert_eq!((split[0].1, split[1].1), (4, 0));
    }

    #[test]
    fn a_gpu_count_without_a_gpu_window_adds_gpu_nodes() {
        let split = split_nodes(&[Role::worker()], 5, Some(2), 0.0);
        assert_eq!(split.len(), 2);
        assert_eq!((split[0].1, split[1].1), (3, 2));
    }

    #[test]
    fn other_roles_share_the_rest_evenly() {
        let w = |name: &str, key: &str| {
            window(&format!(
                "apiVersion: nodemaintenance.medik8s.io/v1alpha1\nkind: MaintenanceWindow\nmetadata: {{name: {name}}}\nspec: {{schedule: '0 1 * * *', duration: 1h, nodeSelector: {{matchExpressions: [{{key: {key}, operator: Exists}}]}}, release: {{after: 1m}}}}\n"
            ))
        };
        let roles = roles_of(&[
            w("a", "node-role.kubernetes.io/infra"),
            w("b", "example.com/Storage_Tier"),
        ]);
        assert_eq!(roles[0].prefix, "infra");
        assert_eq!(roles[1].prefix, "storage-tier");
        let split = split_nodes(&roles, 5, None, 0.5);
        assert_eq!((split[0].1, split[1].1), (3, 2));
    }

    #[test]
    fn generated_nodes_carry_role_zone_and_hostname() {
        let nodes = generated_nodes(&[(Role::worker(), 4)]);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[3].name, "worker-4");
        assert_eq!(nodes[3].labels["topology.kubernetes.io/zone"], "zone-a");
        assert_eq!(nodes[1].labels["topology.kubernetes.io/zone"], "zone-b");
        assert_eq!(nodes[1].labels[WORKER_LABEL], "");
        assert_eq!(nodes[1].labels["kubernetes.io/hostname"], "worker-2");
    }

    #[test]
    fn filler_pods_bring_every_node_to_the_count_asked() {
        let mut nodes = generated_nodes(&[(Role::worker(), 3)]);
        fill_pods(&mut nodes, 30);
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(n.filler_pods + pods_for_node(i).len(), 30);
        }
        fill_pods(&mut nodes, 2);
        assert!(nodes.iter().all(|n| n.filler_pods == 0));
    }

    #[test]
    fn every_node_runs_web_and_the_daemon_sets() {
        for i in 0..6 {
            let pods = pods_for_node(i);
            assert_eq!(pods.iter().filter(|p| p.app == "web").count(), 2);
            assert_eq!(
                pods.iter().filter(|p| p.owner == Owner::DaemonSet).count(),
                2
            );
        }
        assert_eq!(pods_for_node(0).len(), 6);
        assert_eq!(pods_for_node(1).len(), 4);
    }
}
