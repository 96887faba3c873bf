//! Which MaintenanceWindows a Node or NodeMaintenance change concerns, and each window's
//! selected nodes, kept up to date from Node events (pure bookkeeping, no API calls).
//!
//! At 5,000 nodes and 100 windows the operator was CPU-bound in a rollout: every change of a
//! Node woke every window selecting it (about 17 idle windows per node here), every
//! NodeMaintenance appearing or going woke all 100, and each plan walked all 5,000 Nodes to
//! find its own. Two things cut that:
//!
//! - **Wake only the windows a change can concern.** A window is *idle* when its cached
//!   status says it is closed, no round is active and no node is in flight; its plan and
//!   status then depend on its selected nodes only through *which* nodes are selected (the
//!   round's `total`/`pending` counts, `planned_nodes` of a dry run, the `NoNodesSelected`
//!   stall), never on their readiness, schedulability or NodeMaintenances (skips are shown
//!   only while a round runs, the budget and the cap only matter when a node may start).
//!   So an idle window hears of a Node change only when the node joins or leaves its
//!   selection (labels, creation, deletion). Every other window ([`Interest::Everything`]:
//!   open, a round active, a node in flight, or no status yet) hears of every change of a
//!   node it selects, as before. Whatever the window's state, it always hears of a node it has
//!   in flight (it may have just left the selector), and of any control-plane node (quorum),
//!   and of a NodeMaintenance it owns or one on a node it has in flight.
//!   A NodeMaintenance appearing or going wakes every non-idle window as well: another
//!   window's node may have been held by it (one NodeMaintenance per node) or the
//!   operator-wide cap may have a free slot.
//! - **A plan's cost proportional to its window's nodes.** [`WindowIndex`] keeps, per window,
//!   the names of the nodes its selector matches, updated from each Node event (one selector
//!   check per window and event) and rebuilt from the Node cache when the window is new to it,
//!   its selector changed or the Node watch relisted. A plan looks up only those nodes, the
//!   control-plane nodes and its in-flight nodes in the cache.
//!
//! Why the cached status is enough to call a window idle: a window stops being idle only
//! through a plan of its own, whose status write reaches the cache through the window watch
//! and reconciles the window again; that reconcile sees every Node change made before it, so
//! a change skipped while the cache still showed the old status is not lost.

use crate::api::{MaintenanceWindow, NodeMaintenance, WINDOW_LABEL};
use crate::controller::quorum::CONTROL_PLANE_LABELS;
use crate::schedule::selector_matches;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What a window needs to hear of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Open, a round active, a node in flight, or no status yet: every change of a node it
    /// selects, and every NodeMaintenance appearing or going.
    Everything,
    /// Idle (closed, no active round, nothing in flight): only nodes joining or leaving its
    /// selection.
    Membership,
}

/// What a window needs to hear of, from its cached status.
pub fn interest(window: &MaintenanceWindow) -> Interest {
    let Some(status) = window.status.as_ref() else {
        return Interest::Everything;
    };
    let closed = status.window.as_deref() == Some("closed");
    let round_idle = status
        .round
        .as_ref()
        .is_none_or(|r| r.finished.is_some() && r.in_progress_nodes.is_empty());
    if closed && round_idle {
        Interest::Membership
    } else {
        Interest::Everything
    }
}

/// Whether `window`'s cached status lists `node` in flight.
pub fn has_in_flight(window: &MaintenanceWindow, node: &str) -> bool {
    window
        .status
        .as_ref()
        .and_then(|s| s.round.as_ref())
        .is_some_and(|r| r.in_progress_nodes.iter().any(|n| n.name == node))
}

/// Whether labels mark a control-plane node.
pub fn control_plane_labels(labels: &BTreeMap<String, String>) -> bool {
    CONTROL_PLANE_LABELS.iter().any(|k| labels.contains_key(*k))
}

/// The windows a NodeMaintenance change concerns. `presence_changed`: it appeared, started
/// terminating or went (see `MaintenancePresence`), rather than only its status changing.
pub fn windows_for_maintenance(
    windows: &[Arc<MaintenanceWindow>],
    nm: &NodeMaintenance,
    presence_changed: bool,
) -> Vec<ObjectRef<MaintenanceWindow>> {
    windows
        .iter()
        .filter(|w| {
            owns(w, nm)
                || has_in_flight(w, &nm.spec.node_name)
                || (presence_changed && interest(w) == Interest::Everything)
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Whether `nm` is `window`'s by its window label or its controller ownerReference.
fn owns(window: &MaintenanceWindow, nm: &NodeMaintenance) -> bool {
    let uid = window.uid();
    nm.labels().get(WINDOW_LABEL) == Some(&window.name_any())
        || nm
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && uid.as_deref() == Some(o.uid.as_str()))
}

/// One window's selected nodes, and the selector they were computed with.
struct Selected {
    selector: LabelSelector,
    nodes: BTreeSet<String>,
}

/// Per window (by uid), the nodes its selector matches; and the control-plane nodes.
#[derive(Default)]
pub struct WindowIndex {
    windows: HashMap<String, Selected>,
    control_plane: Option<BTreeSet<String>>,
}

fn window_key(window: &MaintenanceWindow) -> String {
    window.uid().unwrap_or_else(|| window.name_any())
}

impl WindowIndex {
    /// The window's entry, (re)built from the Node cache when missing or computed with
    /// another selector.
    fn entry(&mut self, window: &MaintenanceWindow, nodes: &Store<Node>) -> &mut Selected {
        let selector = &window.spec.node_selector;
        let entry = self
            .windows
            .entry(window_key(window))
            .or_insert_with(|| Selected {
                selector: selector.clone(),
                nodes: selected_in(nodes, selector),
            });
        if entry.selector != *selector {
            *entry = Selected {
                selector: selector.clone(),
                nodes: selected_in(nodes, selector),
            };
        }
        entry
    }

    fn control_plane(&mut self, nodes: &Store<Node>) -> &mut BTreeSet<String> {
        self.control_plane.get_or_insert_with(|| {
            nodes
                .state_filter(|n| control_plane_labels(n.labels()))
                .iter()
                .map(|n| n.name_any())
                .collect()
        })
    }

    /// The nodes a plan of `window` must see, by name: those its selector matches (as of the
    /// last Node event applied here), the control-plane nodes and `in_flight`. The caller
    /// still checks the selector on the cached Node, which may be newer.
    pub fn plan_nodes<'a>(
        &mut self,
        window: &MaintenanceWindow,
        nodes: &Store<Node>,
        in_flight: impl IntoIterator<Item = &'a String>,
    ) -> BTreeSet<String> {
        let mut names = self.entry(window, nodes).nodes.clone();
        names.extend(self.control_plane(nodes).iter().cloned());
        names.extend(in_flight.into_iter().cloned());
        names
    }

    /// A Node was created, changed (`labels` its labels now) or deleted (`labels` None), and
    /// the Node cache already shows it: update the index and return the windows to wake.
    pub fn node_changed(
        &mut self,
        windows: &[Arc<MaintenanceWindow>],
        nodes: &Store<Node>,
        name: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<ObjectRef<MaintenanceWindow>> {
        let control_plane = self.control_plane(nodes);
        let cp_after = labels.is_some_and(control_plane_labels);
        let cp_before = if cp_after {
            !control_plane.insert(name.to_string())
        } else {
            control_plane.remove(name)
        };
        let cp = cp_before || cp_after;
        let mut wake = Vec::new();
        for window in windows {
            let entry = self.entry(window, nodes);
            let after = labels.is_some_and(|l| selector_matches(&entry.selector, l));
            let before = if after {
                !entry.nodes.insert(name.to_string())
            } else {
                entry.nodes.remove(name)
            };
            let concerned = cp
                || has_in_flight(window, name)
                || match interest(window) {
                    Interest::Everything => before || after,
                    Interest::Membership => before != after,
                };
            if concerned {
                wake.push(ObjectRef::from_obj(window.as_ref()));
            }
        }
        wake
    }

    /// The Node watch relisted (the cache was replaced; a node deleted meanwhile sent no
    /// event): forget everything, to be rebuilt from the cache. Every window is woken.
    pub fn relisted(
        &mut self,
        windows: &[Arc<MaintenanceWindow>],
    ) -> Vec<ObjectRef<MaintenanceWindow>> {
        self.windows.clear();
        self.control_plane = None;
        windows
            .iter()
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect()
    }

    /// Forget the windows for which `live` (given the window's key: its uid) is false.
    pub fn retain_windows(&mut self, live: impl Fn(&str) -> bool) {
        self.windows.retain(|k, _| live(k));
    }

    /// The index key of a window, for [`WindowIndex::retain_windows`].
    pub fn key(window: &MaintenanceWindow) -> String {
        window_key(window)
    }
}

fn selected_in(nodes: &Store<Node>, selector: &LabelSelector) -> BTreeSet<String> {
    nodes
        .state_filter(|n| selector_matches(selector, n.labels()))
        .iter()
        .map(|n| n.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;
    use serde_json::json;

    /// A window selecting `pool=<pool>`, with the given status (`None`: never written).
    fn window(name: &str, pool: &str, status: Option<serde_json::Value>) -> Arc<MaintenanceWindow> {
        let mut w = json!({
            "apiVersion": "nmo.medik8s.io/v1alpha1",
            "kind": "MaintenanceWindow",
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {
                "schedule": "0 2 * * *",
                "duration": "2h",
                "nodeSelector": {"matchLabels": {"pool": pool}},
                "release": {"after": "0s"},
            },
        });
        if let Some(status) = status {
            w["status"] = status;
        }
        Arc::new(serde_json::from_value(w).expect("a valid MaintenanceWindow"))
    }

    fn closed() -> serde_json::Value {
        json!({"window": "closed"})
    }

    fn closed_after_round() -> serde_json::Value {
        json!({"window": "closed", "round": {
            "number": 1, "started": "2026-01-01T02:00:00Z", "finished": "2026-01-01T03:00:00Z",
            "total": 2, "completed": 2, "pending": 0, "inProgress": 0, "failed": 0}})
    }

    fn open() -> serde_json::Value {
        json!({"window": "open"})
    }

    /// Closed (onWindowEnd let the node finish) with `node` still in flight.
    fn closed_in_flight(node: &str) -> serde_json::Value {
        json!({"window": "closed", "round": {
            "number": 1, "started": "2026-01-01T02:00:00Z",
            "total": 2, "completed": 1, "pending": 0, "inProgress": 1, "failed": 0,
            "inProgressNodes": [{"name": node, "started": "2026-01-01T02:30:00Z"}]}})
    }

    /// Closed, the round still active (nodes left for the next window), nothing in flight.
    fn closed_mid_round() -> serde_json::Value {
        json!({"window": "closed", "round": {
            "number": 1, "started": "2026-01-01T02:00:00Z",
            "total": 2, "completed": 1, "pending": 1, "inProgress": 0, "failed": 0}})
    }

    fn node(name: &str, labels: &[(&str, &str)], ready: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    struct Cluster {
        nodes: Store<Node>,
        writer: kube::runtime::reflector::store::Writer<Node>,
        index: WindowIndex,
    }

    impl Cluster {
        fn new(initial: &[Node]) -> Self {
            let (nodes, mut writer) = kube::runtime::reflector::store();
            writer.apply_watcher_event(&watcher::Event::Init);
            for n in initial {
                writer.apply_watcher_event(&watcher::Event::InitApply(n.clone()));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            Cluster {
                nodes,
                writer,
                index: WindowIndex::default(),
            }
        }

        /// Apply a Node change to the cache, then ask the index whom it wakes.
        fn apply(&mut self, windows: &[Arc<MaintenanceWindow>], n: Node) -> Vec<String> {
            self.writer
                .apply_watcher_event(&watcher::Event::Apply(n.clone()));
            names(
                self.index
                    .node_changed(windows, &self.nodes, &n.name_any(), Some(n.labels())),
            )
        }

        fn delete(&mut self, windows: &[Arc<MaintenanceWindow>], n: Node) -> Vec<String> {
            self.writer
                .apply_watcher_event(&watcher::Event::Delete(n.clone()));
            names(
                self.index
                    .node_changed(windows, &self.nodes, &n.name_any(), None),
            )
        }
    }

    fn names(refs: Vec<ObjectRef<MaintenanceWindow>>) -> Vec<String> {
        let mut v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        v.sort();
        v
    }

    #[test]
    fn interest_follows_the_cached_status() {
        assert_eq!(interest(&window("w", "a", None)), Interest::Everything);
        assert_eq!(
            interest(&window("w", "a", Some(open()))),
            Interest::Everything
        );
        assert_eq!(
            interest(&window("w", "a", Some(closed_in_flight("n1")))),
            Interest::Everything
        );
        assert_eq!(
            interest(&window("w", "a", Some(closed_mid_round()))),
            Interest::Everything
        );
        assert_eq!(
            interest(&window("w", "a", Some(closed()))),
            Interest::Membership
        );
        assert_eq!(
            interest(&window("w", "a", Some(closed_after_round()))),
            Interest::Membership
        );
    }

    #[test]
    fn an_idle_window_hears_only_of_nodes_joining_or_leaving_its_selection() {
        let mut c = Cluster::new(&[node("n1", &[("pool", "a")], true)]);
        let idle = vec![window("idle", "a", Some(closed_after_round()))];
        // Readiness and cordons of a selected node cannot change an idle window's status.
        assert!(
            c.apply(&idle, node("n1", &[("pool", "a")], false))
                .is_empty()
        );
        // A new selected node changes its total.
        assert_eq!(c.apply(&idle, node("n2", &[("pool", "a")], true)), ["idle"]);
        // A node of another pool does not concern it.
        assert!(
            c.apply(&idle, node("n3", &[("pool", "b")], true))
                .is_empty()
        );
        // Relabelled into and out of the selection.
        assert_eq!(c.apply(&idle, node("n3", &[("pool", "a")], true)), ["idle"]);
        assert_eq!(c.apply(&idle, node("n3", &[("pool", "b")], true)), ["idle"]);
        // Deleted while selected.
        assert_eq!(
            c.delete(&idle, node("n2", &[("pool", "a")], true)),
            ["idle"]
        );
        // A label change that keeps it selected is nothing to an idle window.
        assert!(
            c.apply(&idle, node("n1", &[("pool", "a"), ("x", "y")], true))
                .is_empty()
        );
        let plan = c.index.plan_nodes(&idle[0], &c.nodes, []);
        assert_eq!(plan.into_iter().collect::<Vec<_>>(), ["n1"]);
    }

    #[test]
    fn an_open_window_hears_of_every_change_of_its_nodes() {
        let mut c = Cluster::new(&[
            node("n1", &[("pool", "a")], true),
            node("n2", &[("pool", "b")], true),
        ]);
        let windows = vec![
            window("open", "a", Some(open())),
            window("mid-round", "a", Some(closed_mid_round())),
            window("new", "a", None),
        ];
        assert_eq!(
            c.apply(&windows, node("n1", &[("pool", "a")], false)),
            ["mid-round", "new", "open"]
        );
        // Not selected before or after: none of their business.
        assert!(
            c.apply(&windows, node("n2", &[("pool", "b")], false))
                .is_empty()
        );
        // Leaving the selection is still a change of a node they selected.
        assert_eq!(
            c.apply(&windows, node("n1", &[("pool", "b")], false)),
            ["mid-round", "new", "open"]
        );
    }

    #[test]
    fn a_window_hears_of_its_node_in_flight_even_outside_its_selection() {
        let mut c = Cluster::new(&[node("n1", &[("pool", "b")], true)]);
        let windows = vec![
            window("w", "a", Some(closed_in_flight("n1"))),
            window("idle", "a", Some(closed())),
        ];
        assert_eq!(
            c.apply(&windows, node("n1", &[("pool", "b")], false)),
            ["w"]
        );
        // Its plan sees the node although the selector does not match it.
        let plan = c
            .index
            .plan_nodes(&windows[0], &c.nodes, [&"n1".to_string()]);
        assert!(plan.contains("n1"));
        assert_eq!(
            c.delete(&windows, node("n1", &[("pool", "b")], true)),
            ["w"]
        );
    }

    #[test]
    fn a_control_plane_node_concerns_every_window() {
        let cp = [
            ("pool", "cp"),
            ("node-role.kubernetes.io/control-plane", ""),
        ];
        let mut c = Cluster::new(&[node("cp1", &cp, true), node("n1", &[("pool", "a")], true)]);
        let windows = vec![
            window("idle", "a", Some(closed())),
            window("open", "b", Some(open())),
        ];
        assert_eq!(c.apply(&windows, node("cp1", &cp, false)), ["idle", "open"]);
        // Losing the control-plane label is heard too (it was one before).
        assert_eq!(
            c.apply(&windows, node("cp1", &[("pool", "cp")], false)),
            ["idle", "open"]
        );
        assert!(
            c.apply(&windows, node("cp1", &[("pool", "cp")], true))
                .is_empty()
        );
        // Plans see control-plane nodes whatever their selector.
        c.apply(&windows, node("cp1", &cp, true));
        let plan = c.index.plan_nodes(&windows[0], &c.nodes, []);
        assert_eq!(plan.into_iter().collect::<Vec<_>>(), ["cp1", "n1"]);
    }

    #[test]
    fn a_changed_selector_or_a_relist_rebuilds_from_the_cache() {
        let mut c = Cluster::new(&[
            node("n1", &[("pool", "a")], true),
            node("n2", &[("pool", "b")], true),
        ]);
        let a = window("w", "a", Some(closed()));
        assert_eq!(
            c.index
                .plan_nodes(&a, &c.nodes, [])
                .into_iter()
                .collect::<Vec<_>>(),
            ["n1"]
        );
        let b = window("w", "b", Some(closed()));
        assert_eq!(
            c.index
                .plan_nodes(&b, &c.nodes, [])
                .into_iter()
                .collect::<Vec<_>>(),
            ["n2"]
        );
        // A relist replaces the cache (n2 went without an event) and wakes every window.
        c.writer.apply_watcher_event(&watcher::Event::Init);
        c.writer
            .apply_watcher_event(&watcher::Event::InitApply(node(
                "n1",
                &[("pool", "b")],
                true,
            )));
        c.writer.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(names(c.index.relisted(std::slice::from_ref(&b))), ["w"]);
        assert_eq!(
            c.index
                .plan_nodes(&b, &c.nodes, [])
                .into_iter()
                .collect::<Vec<_>>(),
            ["n1"]
        );
        // Forgotten windows are rebuilt when they come back.
        c.index.retain_windows(|_| false);
        assert_eq!(c.index.windows.len(), 0);
    }

    fn nm(node: &str, window: Option<&str>, owner_uid: Option<&str>) -> NodeMaintenance {
        let mut v = json!({
            "apiVersion": "nmo.medik8s.io/v1beta1",
            "kind": "NodeMaintenance",
            "metadata": {"name": format!("nm-{node}"), "labels": {}},
            "spec": {"nodeName": node},
        });
        if let Some(w) = window {
            v["metadata"]["labels"][WINDOW_LABEL] = json!(w);
        }
        if let Some(uid) = owner_uid {
            v["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "nmo.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
                "name": "x", "uid": uid, "controller": true}]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_maintenance_going_wakes_its_own_window_those_tracking_its_node_and_every_busy_window() {
        let windows = vec![
            window("own", "a", Some(closed())),
            window("tracking", "b", Some(closed_in_flight("n1"))),
            window("open", "c", Some(open())),
            window("mid-round", "c", Some(closed_mid_round())),
            window("idle", "a", Some(closed_after_round())),
            window("by-owner", "d", Some(closed())),
        ];
        let labelled = nm("n1", Some("own"), None);
        assert_eq!(
            names(windows_for_maintenance(&windows, &labelled, true)),
            ["mid-round", "open", "own", "tracking"]
        );
        // A status write only: its window and the one tracking its node.
        assert_eq!(
            names(windows_for_maintenance(&windows, &labelled, false)),
            ["own", "tracking"]
        );
        // Owned by ownerReference only (label lost).
        let owned = nm("n9", None, Some("uid-by-owner"));
        assert_eq!(
            names(windows_for_maintenance(&windows, &owned, false)),
            ["by-owner"]
        );
        // Someone's ad-hoc NodeMaintenance on another node: busy windows only (the cap,
        // skips), not the idle ones.
        let adhoc = nm("n7", None, None);
        assert_eq!(
            names(windows_for_maintenance(&windows, &adhoc, true)),
            ["mid-round", "open", "tracking"]
        );
        assert!(windows_for_maintenance(&windows, &adhoc, false).is_empty());
    }
}
