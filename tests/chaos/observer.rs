//! The invariant checker. It is fed every committed state of the scenario's Nodes and
//! NodeMaintenances in order (on the sandbox from its change feed, which faults do not touch;
//! on a real control plane from watches) and checks, on every change:
//!
//! - **budget**: the selected nodes under a window's NodeMaintenances never outnumber its
//!   `maxUnavailable`;
//! - **window**: a window creates NodeMaintenances only while it is open; with
//!   `onWindowEnd: Abort` they are being deleted soon after it closes (while a leader runs);
//! - **person's cordon**: a node a person cordoned is not uncordoned by anyone else;
//! - **nothing lost**: a NodeMaintenance a person created disappears only when a person
//!   deleted it or its node left.
//!
//! The harness checks the rest (clean nodes and convergence) once the chaos stops.

use super::plan::{POOL_LABEL, SCENARIO_LABEL, WindowPlan};
use chrono::{DateTime, Duration, Utc};
use nmo::api::WINDOW_LABEL;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// At most this many violations are kept (the first ones tell the story).
const KEEP: usize = 40;

/// Which kind a change is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Node,
    Nm,
    Window,
}

/// One committed state.
#[derive(Clone, Debug)]
pub struct Seen {
    pub kind: Kind,
    pub deleted: bool,
    pub rv: u64,
    pub object: Value,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub changes: u64,
    /// Changes of the scenario's MaintenanceWindows seen.
    pub window_changes: u64,
    /// Window NodeMaintenances created.
    pub window_nms: u64,
    /// The most selected nodes under one window's NodeMaintenances at once, per window.
    pub most: BTreeMap<String, usize>,
}

pub struct Observer {
    id: String,
    windows: Vec<WindowPlan>,
    /// Creation times are the API server's, on the virtual clock (the sandbox); otherwise the
    /// time a change is observed stands in for it.
    exact_creation: bool,
    /// How late (virtual) an action may land after the decision that made it.
    pub slack: Duration,
    nodes: BTreeMap<String, Value>,
    /// Per node: (resourceVersion, unschedulable, step) of every state seen.
    history: BTreeMap<String, Vec<(u64, bool, usize)>>,
    nms: BTreeMap<String, Value>,
    /// First sight (virtual) of each NodeMaintenance uid: its creation as far as we know.
    created: BTreeMap<String, DateTime<Utc>>,
    /// Per node: intervals of resourceVersions in which a person's cordon is in force.
    person: BTreeMap<String, Vec<(u64, Option<u64>)>>,
    pub user_created: BTreeSet<String>,
    pub user_deleted: BTreeSet<String>,
    pub removed_nodes: BTreeSet<String>,
    pub violations: Vec<String>,
    pub step: usize,
    pub counters: Counters,
    /// The NodeMaintenances seen with a phase (the controller began them).
    pub begun: BTreeSet<String>,
    /// Per window: its last status, and when it was seen (for the messages).
    window_status: BTreeMap<String, (Value, DateTime<Utc>)>,
    /// Per node: since when (virtual, as first observed) it is NotReady or cordoned.
    unavailable_since: BTreeMap<String, DateTime<Utc>>,
    /// Feed gaps: a lagging receiver or a relisting watch (states may have been missed).
    pub gaps: u64,
}

fn name(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn unschedulable(node: &Value) -> bool {
    node["spec"]["unschedulable"].as_bool().unwrap_or(false)
}

impl Observer {
    pub fn new(id: &str, windows: Vec<WindowPlan>, exact_creation: bool, slack: Duration) -> Self {
        Observer {
            id: id.to_string(),
            windows,
            exact_creation,
            slack,
            nodes: BTreeMap::new(),
            history: BTreeMap::new(),
            nms: BTreeMap::new(),
            created: BTreeMap::new(),
            person: BTreeMap::new(),
            user_created: BTreeSet::new(),
            user_deleted: BTreeSet::new(),
            removed_nodes: BTreeSet::new(),
            violations: Vec::new(),
            step: 0,
            counters: Counters::default(),
            unavailable_since: BTreeMap::new(),
            window_status: BTreeMap::new(),
            begun: BTreeSet::new(),
            gaps: 0,
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < KEEP {
            self.violations.push(format!("step {}: {what}", self.step));
        }
    }

    fn ours(&self, o: &Value, kind: Kind) -> bool {
        let prefix = format!("{}-", self.id);
        match kind {
            Kind::Node => name(o).starts_with(&prefix),
            Kind::Window => name(o).starts_with(&prefix),
            Kind::Nm => {
                name(o).starts_with(&prefix)
                    || o["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&prefix))
            }
        }
    }

    /// The scenario's NodeMaintenances now, by name.
    pub fn nms(&self) -> &BTreeMap<String, Value> {
        &self.nms
    }

    /// The scenario's Nodes now, by name.
    pub fn nodes(&self) -> &BTreeMap<String, Value> {
        &self.nodes
    }

    /// Apply one committed change, seen at virtual time `now`, and check the invariants.
    pub fn apply(&mut self, seen: Seen, now: DateTime<Utc>) {
        if !self.ours(&seen.object, seen.kind) {
            return;
        }
        self.counters.changes += 1;
        let n = name(&seen.object);
        match seen.kind {
            Kind::Window => {
                self.counters.window_changes += 1;
                self.window_status
                    .insert(n, (seen.object["status"].clone(), now));
                return;
            }
            Kind::Node => {
                if seen.deleted {
                    self.nodes.remove(&n);
                    self.unavailable_since.remove(&n);
                    // A node that left takes a person's cordon with it.
                    for interval in self.person.get_mut(&n).into_iter().flatten() {
                        interval.1.get_or_insert(seen.rv);
                    }
                } else {
                    let cordoned = unschedulable(&seen.object);
                    if cordoned || !ready(&seen.object) {
                        self.unavailable_since.entry(n.clone()).or_insert(now);
                    } else {
                        self.unavailable_since.remove(&n);
                    }
                    self.history
                        .entry(n.clone())
                        .or_default()
                        .push((seen.rv, cordoned, self.step));

                    self.nodes.insert(n, seen.object);
                }
            }
            Kind::Nm => {
                let uid = seen.object["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if seen.deleted {
                    self.nms.remove(&n);
                    let node = seen.object["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if self.user_created.contains(&n)
                        && !self.user_deleted.contains(&n)
                        && !self.removed_nodes.contains(&node)
                    {
                        self.violation(format!(
                            "NodeMaintenance {n} (created by a person for {node}) is gone, \
                             but no person deleted it and its node did not leave"
                        ));
                    }
                } else {
                    if !self.created.contains_key(&uid) {
                        let at = if self.exact_creation {
                            seen.object["metadata"]["creationTimestamp"]
                                .as_str()
                                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                                .map(|t| t.with_timezone(&Utc))
                                .unwrap_or(now)
                        } else {
                            now
                        };
                        self.created.insert(uid, at);
                        self.check_created(&seen.object, at);
                    }
                    if seen.object["status"]["phase"].is_string() {
                        self.begun.insert(n.clone());
                    }
                    self.nms.insert(n, seen.object);
                }
            }
        }
        self.check_budgets();
    }

    fn window_of(&self, nm: &Value) -> Option<&WindowPlan> {
        let w = nm["metadata"]["labels"][WINDOW_LABEL].as_str()?;
        self.windows.iter().find(|p| p.name == w)
    }

    /// Every window's last status, for the failure report.
    pub fn window_statuses(&self) -> String {
        self.windows
            .iter()
            .map(|w| format!("{}: {}", w.name, self.status_of(&w.name)))
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    /// The window's last status, for a message.
    fn status_of(&self, window: &str) -> String {
        match self.window_status.get(window) {
            Some((status, at)) => format!(
                "window status as of {}: round {} currentWindow {} conditions {}",
                at.format("%H:%M:%S"),
                status["round"],
                status["currentWindow"],
                status["conditions"]
            ),
            None => "window status not seen".into(),
        }
    }

    fn check_created(&mut self, nm: &Value, at: DateTime<Utc>) {
        let Some(w) = self.window_of(nm).cloned() else {
            return;
        };
        self.counters.window_nms += 1;
        // The decision came at most `slack` before the create (exact creation times are
        // whole seconds; observed ones are later than the create).
        let (lo, hi) = if self.exact_creation {
            (at - self.slack, at + Duration::seconds(1))
        } else {
            (at - self.slack - self.slack, at)
        };
        self.check_start(&w, nm, at);
        if !w.open_during(lo, hi) {
            self.violation(format!(
                "window {} created NodeMaintenance {} at {} while closed (opens every {} min \
                 for {} min); {}",
                w.name,
                name(nm),
                at.format("%H:%M:%S"),
                w.every_min,
                w.open_min,
                self.status_of(&w.name)
            ));
        }
    }

    /// When window `w` starts a node (its NodeMaintenance `nm` appears, created `at`): the node
    /// was not under another NodeMaintenance, and the budget held counting the selected nodes
    /// that were NotReady, cordoned or under another NodeMaintenance. Only what had been so for
    /// a while counts (`slack`): the operator's caches may lag the feed by that much.
    fn check_start(&mut self, w: &WindowPlan, nm: &Value, at: DateTime<Utc>) {
        let settled = at - self.slack;
        let target = nm["spec"]["nodeName"].as_str().unwrap_or_default();
        let foreign = |node: &str| self.foreign_nm(w, node, settled);
        let mut found = Vec::new();
        if let Some(other) = foreign(target) {
            found.push(format!(
                "window {} started {target} while NodeMaintenance {other} held it",
                w.name
            ));
        }
        let mut held: BTreeSet<String> = self
            .nms
            .values()
            .filter(|o| o["metadata"]["labels"][WINDOW_LABEL].as_str() == Some(&w.name))
            .filter_map(|o| o["spec"]["nodeName"].as_str())
            .map(str::to_string)
            .collect();
        held.insert(target.to_string());
        let others: Vec<String> = self
            .nodes
            .iter()
            .filter(|(n, node)| !held.contains(*n) && self.selected(w, node))
            .filter(|(n, _)| {
                self.unavailable_since
                    .get(*n)
                    .is_some_and(|s| *s <= settled)
                    || foreign(n).is_some()
            })
            .map(|(n, _)| n.clone())
            .collect();
        let held: Vec<String> = held
            .into_iter()
            .filter(|n| self.nodes.get(n).is_some_and(|node| self.selected(w, node)))
            .collect();
        if held.len() + others.len() > w.max_unavailable as usize {
            found.push(format!(
                "window {} started {target} with {} of its nodes in its maintenance {held:?} \
                 and {} unavailable otherwise {others:?}: maxUnavailable {}",
                w.name,
                held.len(),
                others.len(),
                w.max_unavailable
            ));
        }
        for v in found {
            self.violation(v);
        }
    }

    /// Another NodeMaintenance than `w`'s on `node`, not being deleted, created by `settled`.
    fn foreign_nm(&self, w: &WindowPlan, node: &str, settled: DateTime<Utc>) -> Option<String> {
        self.nms
            .values()
            .filter(|o| o["spec"]["nodeName"].as_str() == Some(node))
            .filter(|o| o["metadata"]["labels"][WINDOW_LABEL].as_str() != Some(&w.name))
            .filter(|o| !o["metadata"]["deletionTimestamp"].is_string())
            .filter(|o| {
                let uid = o["metadata"]["uid"].as_str().unwrap_or_default();
                self.created.get(uid).is_some_and(|c| *c <= settled)
            })
            .map(name)
            .next()
    }

    fn selected(&self, w: &WindowPlan, node: &Value) -> bool {
        let labels = &node["metadata"]["labels"];
        labels[SCENARIO_LABEL].as_str() == Some(self.id.as_str())
            && w.pool
                .is_none_or(|p| labels[POOL_LABEL].as_str() == Some(p))
    }

    fn check_budgets(&mut self) {
        for w in self.windows.clone() {
            let held: BTreeSet<String> = self
                .nms
                .values()
                .filter(|nm| nm["metadata"]["labels"][WINDOW_LABEL].as_str() == Some(&w.name))
                .filter_map(|nm| nm["spec"]["nodeName"].as_str())
                .filter(|node| self.nodes.get(*node).is_some_and(|n| self.selected(&w, n)))
                .map(str::to_string)
                .collect();
            let most = self.counters.most.entry(w.name.clone()).or_default();
            *most = (*most).max(held.len());
            if held.len() > w.max_unavailable as usize {
                self.violation(format!(
                    "window {} has {} selected nodes in maintenance at once, maxUnavailable {}: \
                     {held:?}",
                    w.name,
                    held.len(),
                    w.max_unavailable
                ));
            }
        }
    }

    /// A person cordoned `node`; the write's resourceVersion is `rv`.
    pub fn person_cordoned(&mut self, node: &str, rv: u64) {
        self.person
            .entry(node.to_string())
            .or_default()
            .push((rv, None));
    }

    /// Check every node state seen against the person's cordons. Run once the person's writes
    /// have all returned: the feed may show a state before the write that made it returns, so
    /// an interval is only complete then.
    pub fn check_person_cordons(&mut self) {
        let mut found = Vec::new();
        for (node, states) in &self.history {
            for (rv, cordoned, step) in states {
                if *cordoned {
                    continue;
                }
                let in_force = self
                    .person
                    .get(node)
                    .into_iter()
                    .flatten()
                    .any(|(from, until)| rv > from && until.is_none_or(|u| *rv < u));
                if in_force {
                    found.push(format!(
                        "step {step}: node {node} was uncordoned (resourceVersion {rv}) while \
                         a person's cordon was in force"
                    ));
                }
            }
        }
        for v in found {
            if self.violations.len() < KEEP {
                self.violations.push(v);
            }
        }
    }

    /// A person uncordoned `node` with the write at `rv`: their cordon ends there.
    pub fn person_uncordoned(&mut self, node: &str, rv: u64) {
        for interval in self.person.get_mut(node).into_iter().flatten() {
            if interval.1.is_none() {
                interval.1 = Some(rv);
            }
        }
    }

    /// Whether a person's cordon of `node` is in force (at the end of the feed).
    pub fn person_cordon_in_force(&self, node: &str) -> bool {
        self.person
            .get(node)
            .into_iter()
            .flatten()
            .any(|(_, until)| until.is_none())
    }

    /// Whether a person ever cordoned `node`.
    pub fn person_ever_cordoned(&self, node: &str) -> bool {
        self.person.contains_key(node)
    }

    /// `onWindowEnd: Abort`: a window's NodeMaintenance still not being deleted `slack` after
    /// its window closed, while a leader has run all that time (`leading_since`).
    pub fn check_abort(&mut self, now: DateTime<Utc>, leading_since: Option<DateTime<Utc>>) {
        let Some(since) = leading_since else {
            return;
        };
        let mut late = Vec::new();
        for nm in self.nms.values() {
            let Some(w) = self.window_of(nm) else {
                continue;
            };
            if !w.abort || nm["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let uid = nm["metadata"]["uid"].as_str().unwrap_or_default();
            let Some(created) = self.created.get(uid) else {
                continue;
            };
            // Open now (again): its in-flight nodes go on. A window that closed while no
            // leader ran and reopened before one could act keeps them (nmo finds it open).
            if w.closes_after(now).is_some() {
                continue;
            }
            // The last close, at or before `now`, of an occurrence since the create.
            let closed = w.occurrence_start(now) + w.open_for();
            if closed < *created {
                continue;
            }
            let due = closed.max(since) + self.slack * 2;
            if now > due {
                late.push(format!(
                    "window {} (onWindowEnd: Abort) closed at {} but its NodeMaintenance {} \
                     is not being deleted at {} (a leader ran since {}); its status {}; {}",
                    w.name,
                    closed.format("%H:%M:%S"),
                    name(nm),
                    now.format("%H:%M:%S"),
                    since.format("%H:%M:%S"),
                    nm["status"],
                    self.status_of(&w.name)
                ));
            }
        }
        for v in late {
            // Once per NodeMaintenance.
            let key = v
                .split(" is not being deleted")
                .next()
                .unwrap_or_default()
                .to_string();
            if !self.violations.iter().any(|x| x.contains(&key)) {
                self.violation(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The checker itself, on made-up feeds: each invariant fires on the state that breaks it
    //! and stays quiet on the allowed cases (a negative control for the chaos runs).

    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn window(abort: bool) -> WindowPlan {
        WindowPlan {
            name: "s-w0".into(),
            pool: None,
            every_min: 6,
            open_min: 2,
            max_unavailable: 1,
            release_after_secs: 30,
            on_reboot: false,
            abort,
            min_ready_secs: 0,
            node_timeout_secs: None,
        }
    }

    fn at(m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 2, m, s).unwrap()
    }

    fn observer(abort: bool) -> Observer {
        Observer::new("s", vec![window(abort)], true, Duration::seconds(30))
    }

    fn node(name: &str, rv: u64, cordoned: bool) -> Seen {
        Seen {
            kind: Kind::Node,
            deleted: false,
            rv,
            object: json!({"metadata": {"name": name, "labels": {SCENARIO_LABEL: "s"}},
                "spec": {"unschedulable": cordoned}}),
        }
    }

    fn nm(name: &str, node: &str, window: Option<&str>, created: DateTime<Utc>) -> Seen {
        let mut labels = json!({});
        if let Some(w) = window {
            labels[WINDOW_LABEL] = json!(w);
        }
        Seen {
            kind: Kind::Nm,
            deleted: false,
            rv: 0,
            object: json!({"metadata": {"name": name, "uid": format!("uid-{name}"),
                "labels": labels, "creationTimestamp": created.to_rfc3339()},
                "spec": {"nodeName": node}}),
        }
    }

    #[test]
    fn a_second_window_maintenance_at_once_breaks_a_budget_of_one() {
        let mut o = observer(false);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.apply(node("s-n1", 2, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(0, 10)), at(0, 10));
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        // An ad-hoc one on another node is not the window's.
        o.apply(nm("s-adhoc-1", "s-n1", None, at(0, 20)), at(0, 20));
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        o.apply(nm("s-w0-s-n1", "s-n1", Some("s-w0"), at(0, 30)), at(0, 30));
        assert!(
            o.violations
                .iter()
                .any(|v| v.contains("2 selected nodes in maintenance at once")),
            "{:?}",
            o.violations
        );
    }

    #[test]
    fn a_start_counts_nodes_that_were_not_ready_or_held_by_another_maintenance_for_a_while() {
        let not_ready = |name: &str, rv| {
            let mut n = node(name, rv, false);
            n.object["status"] = json!({"conditions": [{"type": "Ready", "status": "False"}]});
            n
        };
        // A node NotReady since 02:00 counts against a start at 02:01:30, not one at 02:00:20.
        let mut o = observer(false);
        o.apply(not_ready("s-n1", 1), at(0, 0));
        o.apply(node("s-n0", 2, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(0, 20)), at(0, 20));
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        let mut o = observer(false);
        o.apply(not_ready("s-n1", 1), at(0, 0));
        o.apply(node("s-n0", 2, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(1, 30)), at(1, 30));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("1 unavailable otherwise"));
        // A node under a person's NodeMaintenance is not the window's to start.
        let mut o = observer(false);
        o.windows[0].max_unavailable = 2;
        o.apply(node("s-n0", 2, false), at(0, 0));
        o.apply(nm("s-adhoc-1", "s-n0", None, at(0, 0)), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(1, 30)), at(1, 30));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("while NodeMaintenance s-adhoc-1 held it"));
    }

    #[test]
    fn a_window_maintenance_created_while_the_window_is_closed_is_reported() {
        let mut o = observer(false);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(2, 20)), at(2, 20));
        assert!(o.violations.is_empty(), "within the slack after closing");
        let mut o = observer(false);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(4, 0)), at(4, 0));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("while closed"));
    }

    #[test]
    fn an_abort_window_maintenance_left_after_the_close_is_reported_only_while_a_leader_runs() {
        let mut o = observer(true);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(1, 0)), at(1, 0));
        o.check_abort(at(5, 0), None);
        assert!(o.violations.is_empty(), "no leader: nobody could act");
        o.check_abort(at(2, 30), Some(at(0, 0)));
        assert!(o.violations.is_empty(), "within the slack");
        o.check_abort(at(5, 0), Some(at(0, 0)));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);

        // A leader from 02:05:30 had until the window opened again at 02:06 (less than the
        // slack): the reopened window keeps the node in flight, until its own close.
        let mut o = observer(true);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.apply(nm("s-w0-s-n0", "s-n0", Some("s-w0"), at(1, 0)), at(1, 0));
        let since = Some(at(5, 30));
        for quiet in [at(6, 10), at(7, 50), at(8, 30)] {
            o.check_abort(quiet, since);
            assert!(o.violations.is_empty(), "{quiet}: {:?}", o.violations);
        }
        o.check_abort(at(9, 30), since);
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("closed at 02:08:00"));
    }

    #[test]
    fn an_uncordon_during_a_persons_cordon_is_reported_but_their_own_is_not() {
        let mut o = observer(false);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.apply(node("s-n0", 5, true), at(0, 0));
        o.apply(node("s-n0", 9, false), at(0, 0));
        o.person_cordoned("s-n0", 5);
        o.person_uncordoned("s-n0", 9);
        o.check_person_cordons();
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        o.apply(node("s-n0", 12, true), at(0, 0));
        o.person_cordoned("s-n0", 12);
        o.apply(node("s-n0", 15, false), at(0, 0));
        o.check_person_cordons();
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("resourceVersion 15"));
    }

    #[test]
    fn a_persons_maintenance_that_vanishes_unasked_is_lost() {
        let mut o = observer(false);
        o.apply(node("s-n0", 1, false), at(0, 0));
        o.user_created.insert("s-adhoc-1".into());
        o.user_created.insert("s-adhoc-2".into());
        for name in ["s-adhoc-1", "s-adhoc-2"] {
            o.apply(nm(name, "s-n0", None, at(0, 5)), at(0, 5));
        }
        o.user_deleted.insert("s-adhoc-1".into());
        for name in ["s-adhoc-1", "s-adhoc-2"] {
            let mut gone = nm(name, "s-n0", None, at(0, 5));
            gone.deleted = true;
            o.apply(gone, at(0, 9));
        }
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].contains("s-adhoc-2"));
    }
}
