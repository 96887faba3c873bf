//! Property tests: a small cluster simulator drives the planner through random event
//! sequences and checks the three invariants of the rollout.
//!
//! The simulator applies each plan's creates and deletes, plays the NodeMaintenance
//! controller (an NM drains after a few ticks; a deleted NM goes after a tick; a node is
//! cordoned while any NM exists) and re-plans from the persisted state only, as a restarted
//! reconciler would. It keeps its own ground truth of which nodes are unavailable because of
//! the window, independent of the planner's state.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

const NODES: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Advance(i64),
    Tick,
    ToggleReady(usize),
    /// The node is Ready, uncordoned and its ad-hoc NodeMaintenance (if any) deleted.
    Heal(usize),
    Reboot(usize),
    ToggleCordon(usize),
    ToggleSelected(usize),
    ExternalDelete(usize),
    AdHoc(usize),
    RunNow,
    Restart,
    Edit(Edit),
}

#[derive(Clone, Debug)]
enum Edit {
    Budget(Budget),
    Suspend(bool),
    DryRun(bool),
    MinReady(i64),
    Release(Option<i64>, bool),
    OnWindowEnd(OnWindowEnd),
    MaxFailures(u32),
    NodeTimeout(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..NODES;
    prop_oneof![
        10 => (1i64..120).prop_map(Op::Advance),
        10 => Just(Op::Tick),
        3 => i.clone().prop_map(Op::Heal),
        2 => i.clone().prop_map(Op::ToggleReady),
        2 => i.clone().prop_map(Op::Reboot),
        1 => i.clone().prop_map(Op::ToggleCordon),
        1 => i.clone().prop_map(Op::ToggleSelected),
        2 => i.clone().prop_map(Op::ExternalDelete),
        1 => i.prop_map(Op::AdHoc),
        1 => Just(Op::RunNow),
        2 => Just(Op::Restart),
        2 => edit().prop_map(Op::Edit),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (1u32..4).prop_map(|n| Edit::Budget(Budget::Count(n))),
        (1u32..100).prop_map(|p| Edit::Budget(Budget::Percent(p))),
        any::<bool>().prop_map(Edit::Suspend),
        any::<bool>().prop_map(Edit::DryRun),
        prop_oneof![Just(0i64), Just(1), Just(5)].prop_map(Edit::MinReady),
        (
            prop_oneof![Just(None), Just(Some(0i64)), Just(Some(10))],
            any::<bool>()
        )
            .prop_map(|(a, r)| Edit::Release(a, r || a.is_none())),
        prop_oneof![Just(OnWindowEnd::FinishInFlight), Just(OnWindowEnd::Abort)]
            .prop_map(Edit::OnWindowEnd),
        (0u32..3).prop_map(Edit::MaxFailures),
        prop_oneof![Just(30i64), Just(120)].prop_map(Edit::NodeTimeout),
    ]
}

#[derive(Clone, Debug)]
struct SimNode {
    name: String,
    selected: bool,
    ready: bool,
    cordoned: bool,
    boot: u32,
    /// Our NodeMaintenance went away and the node has not yet been Ready for minReady.
    soaking: bool,
    /// Ready (and not cordoned by us) without interruption since.
    ok_since: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
struct SimNm {
    view: MaintenanceView,
    ticks: u32,
}

struct Sim {
    nodes: Vec<SimNode>,
    nms: Vec<SimNm>,
    policy: RolloutPolicy,
    windows: Vec<WindowOccurrence>,
    run_now: Option<String>,
    run_now_windows: Vec<WindowOccurrence>,
    state: RolloutState,
    cap: Option<u32>,
    now: DateTime<Utc>,
    /// Maintenances started (minus aborted) per node in the current round.
    maintained: BTreeMap<String, i32>,
    /// Nodes that left the selector at some point of the current round.
    left: Vec<bool>,
    round: u64,
    rounds_completed: u32,
    requeue_at: Option<DateTime<Utc>>,
}

impl Sim {
    fn new(windows: Vec<(i64, i64)>, cap: Option<u32>) -> Sim {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let mut start = t0;
        let windows = windows
            .into_iter()
            .map(|(gap, len)| {
                start += Duration::minutes(gap);
                let w = WindowOccurrence {
                    start,
                    end: start + Duration::minutes(len),
                };
                start = w.end;
                w
            })
            .collect();
        Sim {
            nodes: (0..NODES)
                .map(|i| SimNode {
                    name: format!("node-{i}"),
                    selected: i < NODES - 1,
                    ready: true,
                    cordoned: false,
                    boot: 1,
                    soaking: false,
                    ok_since: Some(t0),
                })
                .collect(),
            nms: Vec::new(),
            policy: RolloutPolicy {
                budget: Budget::Count(2),
                window_duration: Duration::minutes(60),
                release_after: Some(Duration::minutes(10)),
                ..RolloutPolicy::default()
            },
            windows,
            run_now: None,
            run_now_windows: Vec::new(),
            state: RolloutState::default(),
            cap,
            now: t0,
            maintained: BTreeMap::new(),
            left: vec![false; NODES],
            round: 0,
            rounds_completed: 0,
            requeue_at: None,
        }
    }

    fn nm_on(&self, i: usize) -> Option<usize> {
        self.nms
            .iter()
            .position(|n| n.view.node == self.nodes[i].name)
    }

    fn owned_on(&self, name: &str) -> bool {
        self.nms.iter().any(|n| n.view.owned && n.view.node == name)
    }

    fn foreign_on(&self, name: &str) -> bool {
        self.nms
            .iter()
            .any(|n| !n.view.owned && n.view.node == name)
    }

    /// Keep the ground-truth soak bookkeeping current after any change.
    fn refresh(&mut self) {
        let now = self.now;
        for i in 0..NODES {
            let name = self.nodes[i].name.clone();
            let owned = self.owned_on(&name);
            let node = &mut self.nodes[i];
            let ok = node.ready && !owned;
            if !ok {
                node.ok_since = None;
            } else if node.ok_since.is_none() {
                node.ok_since = Some(now);
            }
            if node.soaking
                && node
                    .ok_since
                    .is_some_and(|s| s + self.policy.min_ready <= now)
            {
                node.soaking = false;
            }
        }
    }

    fn because_of_window(&self, i: usize) -> bool {
        self.owned_on(&self.nodes[i].name) || self.nodes[i].soaking
    }

    fn unavailable_for_others(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.selected && (!n.ready || n.cordoned || self.foreign_on(&n.name))
    }

    fn open(&self, now: DateTime<Utc>) -> bool {
        self.windows
            .iter()
            .chain(&self.run_now_windows)
            .any(|w| w.contains(now))
    }

    fn input(&self) -> PlanInput {
        let now = self.now;
        PlanInput {
            window: "w".to_string(),
            policy: self.policy.clone(),
            schedule_window: self.windows.iter().copied().find(|w| w.contains(now)),
            next_window: self.windows.iter().copied().find(|w| w.start > now),
            run_now: self.run_now.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    let any_nm = self.nms.iter().any(|m| m.view.node == n.name);
                    NodeView {
                        name: n.name.clone(),
                        selected: n.selected,
                        ready: n.ready,
                        schedulable: !n.cordoned && !any_nm,
                        cordoned_by_others: n.cordoned || self.foreign_on(&n.name),
                        boot_id: Some(format!("{}-{}", n.name, n.boot)),
                        control_plane: false,
                        domain: None,
                    }
                })
                .collect(),
            maintenances: self.nms.iter().map(|n| n.view.clone()).collect(),
            state: self.state.clone(),
            cap_headroom: self.cap.map(|c| c.saturating_sub(self.nms.len() as u32)),
            freeze: None,
            next_freeze: None,
            gate: Gate::Open,
            now,
        }
    }

    /// Plan, check the invariants, apply; repeat until the cluster stops changing, then check
    /// that planning again changes nothing.
    fn reconcile(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..6 {
            let plan = plan(&self.input());
            let changed = self.apply(&plan)?;
            if !changed {
                let again = plan_again(&self.input());
                prop_assert!(
                    again.events.is_empty(),
                    "re-plan emitted {:?}",
                    again.events
                );
                prop_assert_eq!(&again.state, &self.state, "re-plan changed the state");
                self.requeue_at = plan.requeue_at;
                return Ok(());
            }
        }
        prop_assert!(false, "the planner did not settle");
        Ok(())
    }

    fn apply(&mut self, plan: &RolloutPlan) -> Result<bool, TestCaseError> {
        let now = self.now;
        // (2) Never create outside an open window, nor while suspended or in dry run.
        if !plan.create.is_empty() {
            prop_assert!(
                self.open(now),
                "created {:?} outside any window",
                plan.create
            );
            prop_assert!(!self.policy.suspend && !self.policy.dry_run);
        }
        if plan.state.round.number != self.round {
            self.round = plan.state.round.number;
            self.maintained.clear();
            for (i, n) in self.nodes.iter().enumerate() {
                self.left[i] = !n.selected;
            }
        }
        let mut changed = false;
        for c in &plan.create {
            if self
                .nms
                .iter()
                .any(|n| n.view.node == c.node || n.view.name == c.name)
            {
                continue; // AlreadyExists, or refused by admission
            }
            self.nms.push(SimNm {
                view: MaintenanceView {
                    name: c.name.clone(),
                    node: c.node.clone(),
                    owned: true,
                    phase: Some(MaintenancePhase::Running),
                    created: now,
                    drain_succeeded: None,
                    deleting: false,
                    seen: true,
                },
                ticks: 0,
            });
            *self.maintained.entry(c.node.clone()).or_default() += 1;
            changed = true;
        }
        for d in &plan.delete {
            if let Some(nm) = self.nms.iter_mut().find(|n| n.view.name == d.name)
                && !nm.view.deleting
            {
                nm.view.deleting = true;
                changed = true;
                if d.reason == DeleteReason::Abort {
                    *self.maintained.entry(d.node.clone()).or_default() -= 1;
                }
            }
        }
        self.refresh();
        // (1) Starting nodes never takes the window past its budget, counting the nodes
        // unavailable for other reasons.
        if !plan.create.is_empty() {
            let selected = self.nodes.iter().filter(|n| n.selected).count();
            let budget = self.policy.budget.resolve(selected);
            let mut out = Vec::new();
            for i in 0..NODES {
                if self.because_of_window(i) || self.unavailable_for_others(i) {
                    out.push(self.nodes[i].name.clone());
                }
            }
            prop_assert!(
                out.len() <= budget,
                "{} unavailable ({:?}) with budget {} after creating {:?}",
                out.len(),
                out,
                budget,
                plan.create
            );
            if let Some(cap) = self.cap {
                prop_assert!(self.nms.len() as u32 <= cap, "cap {} exceeded", cap);
            }
        }
        // (3) Every node maintained exactly once per completed round.
        if plan
            .events
            .iter()
            .any(|e| e.reason == EventReason::RoundCompleted)
        {
            let round = &plan.state.round;
            for (name, count) in &self.maintained {
                prop_assert!(*count <= 1, "{name} maintained {count} times in a round");
            }
            for (i, n) in self.nodes.iter().enumerate() {
                if n.selected {
                    prop_assert!(
                        round.completed.contains(&n.name) || round.failed.contains_key(&n.name),
                        "{} neither completed nor failed at round end",
                        n.name
                    );
                    if !self.left[i] {
                        prop_assert_eq!(
                            self.maintained.get(&n.name).copied().unwrap_or(0),
                            1,
                            "{} not maintained exactly once",
                            &n.name
                        );
                    }
                }
            }
            self.rounds_completed += 1;
        }
        if plan.state != self.state {
            self.state = plan.state.clone();
            changed = true;
        }
        Ok(changed)
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Advance(minutes) => {
                let mut to = self.now + Duration::minutes(*minutes);
                if let Some(at) = self.requeue_at.filter(|at| *at > self.now) {
                    to = to.min(at);
                }
                self.now = to;
            }
            Op::Tick => {
                let now = self.now;
                let mut gone = Vec::new();
                for nm in &mut self.nms {
                    if nm.view.deleting {
                        gone.push(nm.view.clone());
                        continue;
                    }
                    nm.ticks += 1;
                    if nm.ticks >= 2 && nm.view.phase == Some(MaintenancePhase::Running) {
                        nm.view.phase = Some(MaintenancePhase::Succeeded);
                        nm.view.drain_succeeded = Some(now);
                    }
                }
                self.nms.retain(|n| !n.view.deleting);
                for nm in gone.iter().filter(|n| n.owned) {
                    if let Some(node) = self.nodes.iter_mut().find(|n| n.name == nm.node) {
                        node.soaking = true;
                    }
                }
            }
            Op::ToggleReady(i) => self.nodes[*i].ready = !self.nodes[*i].ready,
            Op::Heal(i) => {
                let node = &mut self.nodes[*i];
                node.ready = true;
                node.cordoned = false;
                let name = node.name.clone();
                for nm in &mut self.nms {
                    if !nm.view.owned && nm.view.node == name {
                        nm.view.deleting = true;
                    }
                }
            }
            Op::Reboot(i) => {
                self.nodes[*i].boot += 1;
                self.nodes[*i].ready = false;
            }
            Op::ToggleCordon(i) => self.nodes[*i].cordoned = !self.nodes[*i].cordoned,
            Op::ToggleSelected(i) => {
                self.nodes[*i].selected = !self.nodes[*i].selected;
                if !self.nodes[*i].selected {
                    self.left[*i] = true;
                }
            }
            Op::ExternalDelete(i) => {
                if let Some(k) = self.nm_on(*i) {
                    self.nms[k].view.deleting = true;
                }
            }
            Op::AdHoc(i) => {
                if self.nm_on(*i).is_none() {
                    let node = self.nodes[*i].name.clone();
                    self.nms.push(SimNm {
                        view: MaintenanceView {
                            name: format!("adhoc-{node}"),
                            node,
                            owned: false,
                            phase: Some(MaintenancePhase::Running),
                            created: self.now,
                            drain_succeeded: None,
                            deleting: false,
                            seen: true,
                        },
                        ticks: 0,
                    });
                }
            }
            Op::RunNow => {
                let value = format!("run-{}", self.now.timestamp());
                if self.run_now.as_ref() != Some(&value) {
                    self.run_now_windows.push(WindowOccurrence {
                        start: self.now,
                        end: self.now + self.policy.window_duration,
                    });
                    self.run_now = Some(value);
                }
            }
            Op::Restart => {}
            Op::Edit(edit) => {
                let p = &mut self.policy;
                match edit {
                    Edit::Budget(b) => p.budget = *b,
                    Edit::Suspend(v) => p.suspend = *v,
                    Edit::DryRun(v) => p.dry_run = *v,
                    Edit::MinReady(m) => p.min_ready = Duration::minutes(*m),
                    Edit::Release(after, reboot) => {
                        p.release_after = after.map(Duration::minutes);
                        p.release_on_reboot = *reboot;
                    }
                    Edit::OnWindowEnd(e) => p.on_window_end = *e,
                    Edit::MaxFailures(n) => p.max_failures = *n,
                    Edit::NodeTimeout(m) => p.node_timeout = Duration::minutes(*m),
                }
            }
        }
        self.refresh();
    }
}

/// A second, independent call: the reconciler after a restart has only the persisted state.
fn plan_again(input: &PlanInput) -> RolloutPlan {
    plan(input)
}

fn run(
    windows: Vec<(i64, i64)>,
    cap: Option<u32>,
    spec: Vec<Edit>,
    ops: Vec<Op>,
) -> Result<Sim, TestCaseError> {
    let mut sim = Sim::new(windows, cap);
    for edit in spec {
        sim.step(&Op::Edit(edit));
    }
    sim.reconcile()?;
    for op in &ops {
        sim.step(op);
        sim.reconcile()?;
    }
    Ok(sim)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// (1) budget, (2) only inside open windows, (3) once per completed round, and no churn
    /// when re-planning, over random event sequences.
    #[test]
    fn the_rollout_invariants_hold_over_random_event_sequences(
        windows in prop::collection::vec((0i64..600, 20i64..240), 1..8),
        cap in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        spec in prop::collection::vec(edit(), 0..6),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        run(windows, cap, spec, ops)?;
    }
}

/// Without disturbances a long enough run completes rounds, so property (3) is exercised.
#[test]
fn an_undisturbed_cluster_completes_rounds_with_every_node_once() {
    let mut ops = Vec::new();
    for _ in 0..200 {
        ops.push(Op::Tick);
        ops.push(Op::Advance(15));
    }
    let sim = run(
        vec![(10, 120), (600, 120), (600, 120), (600, 120)],
        None,
        vec![Edit::MinReady(5), Edit::Budget(Budget::Count(2))],
        ops,
    )
    .expect("invariants hold");
    assert!(sim.rounds_completed >= 2, "{} rounds", sim.rounds_completed);
}
