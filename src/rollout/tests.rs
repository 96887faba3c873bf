//! Table tests for the planner, one rule each, named as sentences.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn window(start: i64, end: i64) -> WindowOccurrence {
    WindowOccurrence {
        start: t(start),
        end: t(end),
    }
}

struct NodeBuilder(NodeView);

fn node(name: &str) -> NodeBuilder {
    NodeBuilder(NodeView {
        name: name.to_string(),
        selected: true,
        ready: true,
        schedulable: true,
        cordoned_by_others: false,
        boot_id: Some(format!("{name}-boot-1")),
        control_plane: false,
        domain: None,
    })
}

impl NodeBuilder {
    fn not_ready(mut self) -> Self {
        self.0.ready = false;
        self
    }
    fn cordoned(mut self) -> Self {
        self.0.schedulable = false;
        self.0.cordoned_by_others = true;
        self
    }
    /// Cordoned by this window's NodeMaintenance.
    fn in_maintenance(mut self) -> Self {
        self.0.schedulable = false;
        self
    }
    fn unselected(mut self) -> Self {
        self.0.selected = false;
        self
    }
    fn control_plane(mut self) -> Self {
        self.0.control_plane = true;
        self
    }
    fn rebooted(mut self) -> Self {
        self.0.boot_id = Some(format!("{}-boot-2", self.0.name));
        self
    }
}

struct NmBuilder(MaintenanceView);

/// A NodeMaintenance of window `w`, Running, created at t(0).
fn nm(node: &str) -> NmBuilder {
    NmBuilder(MaintenanceView {
        name: nm_name("w", node),
        node: node.to_string(),
        owned: true,
        phase: Some(MaintenancePhase::Running),
        created: t(0),
        drain_succeeded: None,
        deleting: false,
        seen: true,
    })
}

impl NmBuilder {
    fn ad_hoc(mut self, name: &str) -> Self {
        self.0.owned = false;
        self.0.name = name.to_string();
        self
    }
    fn succeeded_at(mut self, minute: i64) -> Self {
        self.0.phase = Some(MaintenancePhase::Succeeded);
        self.0.drain_succeeded = Some(t(minute));
        self
    }
    fn deleting(mut self) -> Self {
        self.0.deleting = true;
        self
    }
    /// Created by nmo moments ago, not in the cache yet.
    fn unseen(mut self) -> Self {
        self.0.seen = false;
        self.0.phase = None;
        self
    }
    /// Not this window's, named `name`, for `node`.
    fn foreign_named(mut self, name: &str) -> Self {
        self.0.owned = false;
        self.0.name = name.to_string();
        self
    }
}

/// Window `w` open from t(0) to t(60), next one at t(1440), default policy, `now` = t(0).
struct Scenario(PlanInput);

fn scenario() -> Scenario {
    Scenario(PlanInput {
        window: "w".to_string(),
        policy: RolloutPolicy {
            release_after: Some(Duration::minutes(10)),
            ..RolloutPolicy::default()
        },
        schedule_window: Some(window(0, 60)),
        next_window: Some(window(1440, 1500)),
        run_now: None,
        nodes: Vec::new(),
        maintenances: Vec::new(),
        state: RolloutState::default(),
        cap_headroom: None,
        freeze: None,
        next_freeze: None,
        gate: Gate::Open,
        now: t(0),
    })
}

impl Scenario {
    fn with(&self, edit: impl FnOnce(&mut PlanInput)) -> Scenario {
        let mut input = self.0.clone();
        edit(&mut input);
        Scenario(input)
    }
    fn nodes(&self, nodes: impl IntoIterator<Item = NodeBuilder>) -> Self {
        self.with(|i| i.nodes = nodes.into_iter().map(|n| n.0).collect())
    }
    fn nms(&self, nms: impl IntoIterator<Item = NmBuilder>) -> Self {
        self.with(|i| i.maintenances = nms.into_iter().map(|n| n.0).collect())
    }
    fn policy(&self, edit: impl FnOnce(&mut RolloutPolicy)) -> Self {
        self.with(|i| edit(&mut i.policy))
    }
    fn at(&self, minute: i64) -> Self {
        self.with(|i| {
            i.now = t(minute);
            if !i.schedule_window.is_some_and(|w| w.contains(t(minute))) {
                i.schedule_window = None;
            }
        })
    }
    fn schedule(&self, open: Option<WindowOccurrence>, next: Option<WindowOccurrence>) -> Self {
        self.with(|i| {
            i.schedule_window = open;
            i.next_window = next;
        })
    }
    fn after(&self, plan: &RolloutPlan) -> Self {
        self.with(|i| i.state = plan.state.clone())
    }
    fn cap(&self, headroom: u32) -> Self {
        self.with(|i| i.cap_headroom = Some(headroom))
    }
    fn run_now(&self, value: &str) -> Self {
        self.with(|i| i.run_now = Some(value.to_string()))
    }
    fn state(&self, state: RolloutState) -> Self {
        self.with(|i| i.state = state)
    }
    fn plan(&self) -> RolloutPlan {
        plan(&self.0)
    }
}

fn created(plan: &RolloutPlan) -> Vec<&str> {
    plan.create.iter().map(|c| c.node.as_str()).collect()
}

fn deleted(plan: &RolloutPlan) -> Vec<(&str, DeleteReason)> {
    plan.delete
        .iter()
        .map(|d| (d.node.as_str(), d.reason))
        .collect()
}

fn reasons(plan: &RolloutPlan) -> Vec<EventReason> {
    plan.events.iter().map(|e| e.reason).collect()
}

/// Plan once to start `a` (budget 1), then show its NodeMaintenance as seen.
fn with_a_in_flight() -> (Scenario, RolloutPlan) {
    let s = scenario().nodes([node("a"), node("b")]);
    let first = s.plan();
    assert_eq!(created(&first), ["a"]);
    let s = s
        .after(&first)
        .nodes([node("a").in_maintenance(), node("b")])
        .nms([nm("a")]);
    let seen = s.plan();
    (s, seen)
}

#[test]
fn an_opening_window_starts_round_one_and_creates_up_to_the_budget_in_name_order() {
    let plan = scenario()
        .nodes([node("c"), node("a"), node("b")])
        .policy(|p| p.budget = Budget::Count(2))
        .plan();
    assert_eq!(created(&plan), ["a", "b"]);
    assert_eq!(plan.create[0].name, nm_name("w", "a"));
    assert!(plan.create[0].name.starts_with("w-a-"));
    assert_eq!(plan.state.round.number, 1);
    assert_eq!(plan.state.round.started, Some(t(0)));
    assert_eq!(
        reasons(&plan),
        [
            EventReason::WindowOpened,
            EventReason::NodeMaintenanceStarted,
            EventReason::NodeMaintenanceStarted
        ]
    );
    assert_eq!(plan.summary.counts.in_progress, 2);
    assert_eq!(plan.summary.counts.pending, 1);
    assert!(plan.summary.reconciling.is_some());
}

#[test]
fn nothing_is_created_while_no_window_is_open() {
    let plan = scenario().nodes([node("a")]).at(90).plan();
    assert!(plan.create.is_empty());
    assert_eq!(plan.state.round.number, 0);
    assert!(!plan.summary.window_open);
    assert_eq!(plan.requeue_at, Some(t(1440)));
}

#[test]
fn replanning_with_unchanged_inputs_emits_nothing_and_keeps_the_state() {
    let (s, seen) = with_a_in_flight();
    let again = s.after(&seen).plan();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.state, seen.state);
    assert!(again.create.is_empty() && again.delete.is_empty());
}

#[test]
fn the_budget_counts_selected_nodes_already_not_ready_or_cordoned() {
    let plan = scenario()
        .nodes([
            node("a").not_ready(),
            node("b").cordoned(),
            node("c"),
            node("d"),
        ])
        .policy(|p| p.budget = Budget::Count(3))
        .plan();
    assert_eq!(created(&plan), ["c"]);
    assert_eq!(plan.summary.unavailable, 3);
}

#[test]
fn an_unselected_not_ready_node_does_not_count_against_the_budget() {
    let plan = scenario()
        .nodes([node("x").not_ready().unselected(), node("a")])
        .plan();
    assert_eq!(created(&plan), ["a"]);
}

#[test]
fn a_percentage_budget_is_resolved_against_the_selected_nodes() {
    let nodes: Vec<_> = (0..10).map(|i| node(&format!("n{i}"))).collect();
    let plan = scenario()
        .nodes(nodes)
        .policy(|p| p.budget = Budget::Percent(25))
        .plan();
    assert_eq!(plan.create.len(), 3);
    assert_eq!(plan.summary.budget, 3);
}

#[test]
fn release_after_deletes_the_node_maintenance_that_long_after_the_drain_succeeded() {
    let (s, seen) = with_a_in_flight();
    let s = s.after(&seen).nms([nm("a").succeeded_at(5)]).at(6);
    let drained = s.plan();
    assert!(drained.delete.is_empty());
    assert_eq!(drained.requeue_at, Some(t(15)));
    let released = s.after(&drained).at(15).plan();
    assert_eq!(deleted(&released), [("a", DeleteReason::ReleaseAfter)]);
    assert_eq!(reasons(&released), [EventReason::NodeReleased]);
    assert_eq!(released.state.round.in_flight["a"].released, Some(t(15)));
}

#[test]
fn on_reboot_releases_a_node_whose_boot_id_changed_once_it_is_ready() {
    let (s, seen) = with_a_in_flight();
    let s = s.after(&seen).policy(|p| {
        p.release_after = None;
        p.release_on_reboot = true;
    });
    let rebooting = s
        .nodes([node("a").in_maintenance().rebooted().not_ready(), node("b")])
        .at(5)
        .plan();
    assert!(rebooting.delete.is_empty());
    let back = s
        .after(&rebooting)
        .nodes([node("a").in_maintenance().rebooted(), node("b")])
        .at(6)
        .plan();
    assert_eq!(deleted(&back), [("a", DeleteReason::Rebooted)]);
}

#[test]
fn someone_else_deleting_the_node_maintenance_releases_the_node() {
    let (s, seen) = with_a_in_flight();
    let plan = s.after(&seen).nms([nm("a").deleting()]).at(3).plan();
    assert!(plan.delete.is_empty());
    assert_eq!(
        plan.state.round.in_flight["a"].ending,
        Some(Ending::DeletedByOthers)
    );
    let gone = s
        .after(&seen)
        .nodes([node("a"), node("b")])
        .nms([])
        .at(3)
        .plan();
    assert_eq!(gone.state.round.in_flight.get("a"), None);
    assert!(gone.state.round.completed.contains("a"));
}

#[test]
fn a_slot_frees_only_after_min_ready_seconds_of_ready_and_schedulable() {
    let (s, seen) = with_a_in_flight();
    let s = s.policy(|p| p.min_ready = Duration::seconds(60));
    let released = s.after(&seen).nms([nm("a").succeeded_at(1)]).at(11).plan();
    assert_eq!(deleted(&released), [("a", DeleteReason::ReleaseAfter)]);
    // The NodeMaintenance is gone but the node is still cordoned: no soak yet.
    let cordoned = s.after(&released).nms([]).at(12).plan();
    assert_eq!(cordoned.state.round.in_flight["a"].ready_since, None);
    assert!(cordoned.create.is_empty());
    let s = s.nodes([node("a"), node("b")]).nms([]);
    let soaking = s.after(&cordoned).at(13).plan();
    assert_eq!(soaking.state.round.in_flight["a"].ready_since, Some(t(13)));
    assert!(soaking.create.is_empty());
    assert_eq!(soaking.requeue_at, Some(t(14)));
    // NotReady during the soak starts it over.
    let flap = s
        .after(&soaking)
        .nodes([node("a").not_ready(), node("b")])
        .at(13)
        .plan();
    assert_eq!(flap.state.round.in_flight["a"].ready_since, None);
    let done = s.after(&soaking).at(14).plan();
    assert_eq!(created(&done), ["b"]);
    assert!(done.state.round.completed.contains("a"));
}

#[test]
fn a_node_past_its_timeout_is_released_and_counted_as_failed() {
    let (s, seen) = with_a_in_flight();
    let s = s.policy(|p| p.max_failures = 1);
    let plan = s.after(&seen).at(120).schedule(None, None).plan();
    assert_eq!(deleted(&plan), [("a", DeleteReason::Timeout)]);
    assert!(plan.state.round.failed["a"].contains("nodeTimeout 2h"));
    assert!(reasons(&plan).contains(&EventReason::NodeFailed));
    assert_eq!(plan.summary.counts.failed, 1);
    assert_eq!(plan.summary.stalled, None);
}

#[test]
fn more_failures_than_max_failures_stall_the_rollout_until_the_next_window() {
    let (s, seen) = with_a_in_flight();
    let s = s.policy(|p| p.node_timeout = Duration::minutes(30));
    let failed = s.after(&seen).at(30).plan();
    assert_eq!(
        reasons(&failed),
        [EventReason::NodeFailed, EventReason::RolloutStalled]
    );
    assert_eq!(
        failed.summary.stalled.as_ref().unwrap().reason,
        "MaxFailuresExceeded"
    );
    // The NodeMaintenance is gone and a is Ready: still no start while stalled.
    let s = s.nodes([node("a"), node("b")]).nms([]);
    let stalled = s.after(&failed).at(31).plan();
    assert!(stalled.create.is_empty());
    assert!(stalled.summary.stalled.is_some());
    let next = s
        .after(&stalled)
        .schedule(Some(window(1440, 1500)), Some(window(2880, 2940)))
        .at(1440)
        .plan();
    assert_eq!(next.summary.stalled, None);
    assert_eq!(created(&next), ["b"]);
    assert_eq!(next.state.round.number, 1);
}

#[test]
fn finish_in_flight_lets_in_flight_nodes_finish_after_the_window_but_starts_none() {
    let (s, seen) = with_a_in_flight();
    let s = s.policy(|p| p.budget = Budget::Count(2));
    let closed = s.after(&seen).at(60).plan();
    assert_eq!(reasons(&closed), [EventReason::WindowClosed]);
    assert!(closed.create.is_empty() && closed.delete.is_empty());
    let released = s
        .after(&closed)
        .nms([nm("a").succeeded_at(55)])
        .at(65)
        .plan();
    assert_eq!(deleted(&released), [("a", DeleteReason::ReleaseAfter)]);
    assert!(released.create.is_empty());
}

#[test]
fn abort_deletes_in_flight_node_maintenances_at_window_end_and_retries_the_node_next_window() {
    let (s, seen) = with_a_in_flight();
    let s = s.policy(|p| p.on_window_end = OnWindowEnd::Abort);
    let ended = s.after(&seen).at(60).plan();
    assert_eq!(deleted(&ended), [("a", DeleteReason::Abort)]);
    let gone = s
        .after(&ended)
        .nodes([node("a"), node("b")])
        .nms([])
        .at(61)
        .plan();
    assert!(gone.state.round.in_flight.is_empty());
    assert!(!gone.state.round.completed.contains("a"));
    assert_eq!(gone.summary.counts.pending, 2);
    let next = s
        .after(&gone)
        .nodes([node("a"), node("b")])
        .nms([])
        .schedule(Some(window(1440, 1500)), None)
        .at(1440)
        .plan();
    assert_eq!(created(&next), ["a"]);
}

#[test]
fn suspend_starts_no_new_node_but_in_flight_ones_continue() {
    let (s, seen) = with_a_in_flight();
    let s = s
        .after(&seen)
        .policy(|p| {
            p.suspend = true;
            p.budget = Budget::Count(2)
        })
        .nms([nm("a").succeeded_at(0)])
        .at(10);
    let plan = s.plan();
    assert!(plan.create.is_empty());
    assert_eq!(deleted(&plan), [("a", DeleteReason::ReleaseAfter)]);
}

#[test]
fn dry_run_creates_nothing_and_shows_the_planned_order() {
    let plan = scenario()
        .nodes([node("b"), node("a"), node("c")])
        .policy(|p| p.dry_run = true)
        .plan();
    assert!(plan.create.is_empty());
    assert_eq!(plan.planned_order, ["a", "b", "c"]);
    assert_eq!(plan.state.round.number, 0);
}

#[test]
fn a_node_under_another_node_maintenance_is_skipped_and_picked_up_once_it_is_deleted() {
    let s = scenario()
        .nodes([node("a").cordoned(), node("b")])
        .policy(|p| p.budget = Budget::Count(2));
    let held = s.nms([nm("a").ad_hoc("fix-a")]).plan();
    assert_eq!(created(&held), ["b"]);
    assert!(
        held.skipped
            .contains(&("a".to_string(), SkipReason::HeldBy("fix-a".into())))
    );
    let free = s
        .after(&held)
        .nodes([node("a"), node("b").in_maintenance()])
        .nms([nm("b")])
        .at(5)
        .plan();
    assert_eq!(created(&free), ["a"]);
}

#[test]
fn the_operator_wide_cap_bounds_the_creates() {
    let plan = scenario()
        .nodes([node("a"), node("b"), node("c")])
        .policy(|p| p.budget = Budget::Count(3))
        .cap(1)
        .plan();
    assert_eq!(created(&plan), ["a"]);
    let none = scenario().nodes([node("a")]).cap(0).plan();
    assert!(none.create.is_empty());
}

#[test]
fn a_round_carries_over_between_windows_without_redoing_done_nodes() {
    let s = scenario().nodes([node("a"), node("b"), node("c")]);
    let state = RolloutState {
        round: Round {
            number: 4,
            started: Some(t(-1440)),
            completed: ["a".to_string()].into(),
            ..Round::default()
        },
        ..RolloutState::default()
    };
    let plan = s.state(state).plan();
    assert_eq!(created(&plan), ["b"]);
    assert_eq!(plan.state.round.number, 4);
    assert_eq!(plan.summary.counts.completed, 1);
}

#[test]
fn a_new_round_starts_at_the_first_window_opening_after_a_round_finished() {
    let s = scenario().nodes([node("a")]);
    let first = s.plan();
    let s = s.nms([]).after(&first);
    // a released by someone else and back: round 1 done at t(20).
    let s2 = s.nms([nm("a")]).at(10);
    let seen = s2.plan();
    let done = s.after(&seen).at(20).plan();
    assert!(reasons(&done).contains(&EventReason::RoundCompleted));
    assert_eq!(done.state.round.finished, Some(t(20)));
    let same_window = s.after(&done).at(30).plan();
    assert!(same_window.create.is_empty());
    assert_eq!(same_window.state.round.number, 1);
    let next = s
        .after(&same_window)
        .schedule(Some(window(1440, 1500)), None)
        .at(1440)
        .plan();
    assert_eq!(next.state.round.number, 2);
    assert_eq!(created(&next), ["a"]);
}

#[test]
fn nodes_joining_mid_round_are_added_and_leaving_ones_are_dropped_after_finishing() {
    let (s, seen) = with_a_in_flight();
    let s = s
        .after(&seen)
        .nodes([
            node("a").in_maintenance().unselected(),
            node("b"),
            node("z"),
        ])
        .policy(|p| p.budget = Budget::Count(2));
    let plan = s.plan();
    assert!(
        plan.delete.is_empty(),
        "an in-flight node is finished first"
    );
    assert_eq!(created(&plan), ["b"]);
    assert_eq!(plan.summary.counts.total, 3);
    assert_eq!(plan.planned_order, ["z"]);
}

#[test]
fn run_now_opens_one_window_of_duration_and_is_echoed_once() {
    let s = scenario()
        .nodes([node("a")])
        .schedule(None, Some(window(1440, 1500)))
        .at(300);
    let s = s.run_now("go-1");
    let plan = s.plan();
    assert_eq!(created(&plan), ["a"]);
    assert_eq!(plan.state.last_handled_run_now.as_deref(), Some("go-1"));
    assert_eq!(plan.current_window, Some(window(300, 360)));
    assert_eq!(reasons(&plan)[0], EventReason::WindowOpened);
    // Later in the run-now window, the same value keeps it open and opens nothing new.
    let later = s
        .after(&plan)
        .nodes([node("a").in_maintenance()])
        .nms([nm("a")])
        .at(330)
        .plan();
    assert_eq!(later.current_window, Some(window(300, 360)));
    assert!(later.events.is_empty());
    let closed = s
        .after(&later)
        .nodes([node("a").in_maintenance()])
        .nms([nm("a")])
        .at(360)
        .plan();
    assert_eq!(reasons(&closed), [EventReason::WindowClosed]);
}

#[test]
fn an_untracked_node_maintenance_of_this_window_is_adopted_or_deleted() {
    let s = scenario()
        .nodes([node("a").in_maintenance(), node("b").unselected()])
        .nms([nm("a"), nm("b")]);
    let plan = s.plan();
    assert!(plan.state.round.in_flight["a"].observed);
    assert_eq!(deleted(&plan), [("b", DeleteReason::NodeLeftSelector)]);
    assert!(plan.create.is_empty(), "a takes the only slot");
}

#[test]
fn a_create_not_yet_visible_is_requested_again_rather_than_taken_as_deleted() {
    let s = scenario().nodes([node("a")]);
    let first = s.plan();
    let again = s.after(&first).at(1).plan();
    assert_eq!(created(&again), ["a"]);
    assert!(again.events.is_empty());
    assert_eq!(again.state, first.state);
}

#[test]
fn a_selector_matching_no_node_stalls_without_starting_a_round() {
    let plan = scenario().nodes([node("x").unselected()]).plan();
    assert_eq!(plan.summary.stalled.unwrap().reason, "NoNodesSelected");
    assert_eq!(plan.state.round.number, 0);
}

#[test]
fn requeue_is_the_earliest_of_window_end_and_node_timeout() {
    let (_, seen) = with_a_in_flight();
    assert_eq!(seen.requeue_at, Some(t(60)));
    let (s, seen) = with_a_in_flight();
    let short = s
        .after(&seen)
        .policy(|p| p.node_timeout = Duration::minutes(20))
        .plan();
    assert_eq!(short.requeue_at, Some(t(20)));
}

#[test]
fn an_in_flight_node_deleted_from_the_cluster_is_released_and_dropped() {
    let (s, seen) = with_a_in_flight();
    let plan = s.after(&seen).nodes([node("b")]).at(5).plan();
    assert_eq!(deleted(&plan), [("a", DeleteReason::NodeGone)]);
    let gone = s.after(&plan).nodes([node("b")]).nms([]).at(6).plan();
    assert!(!gone.state.round.in_flight.contains_key("a"));
    assert!(!gone.state.round.completed.contains("a"));
    assert_eq!(created(&gone), ["b"]);
}

#[test]
fn dry_run_during_a_round_lists_only_the_nodes_still_to_do() {
    let (s, seen) = with_a_in_flight();
    let plan = s
        .after(&seen)
        .nodes([node("a").in_maintenance(), node("b"), node("c")])
        .policy(|p| {
            p.dry_run = true;
            p.budget = Budget::Count(3)
        })
        .plan();
    assert!(plan.create.is_empty());
    assert_eq!(plan.planned_order, ["b", "c"]);
}

#[test]
fn window_opened_and_closed_are_emitted_once_each() {
    let s = scenario().nodes([node("a").not_ready()]);
    let opened = s.plan();
    assert_eq!(reasons(&opened), [EventReason::WindowOpened]);
    assert!(s.after(&opened).at(30).plan().events.is_empty());
    let closed = s.after(&opened).at(60).plan();
    assert_eq!(reasons(&closed), [EventReason::WindowClosed]);
    assert!(s.after(&closed).at(61).plan().events.is_empty());
}

#[test]
fn a_closed_window_requeues_at_the_next_opening() {
    let plan = scenario().nodes([node("a")]).at(61).plan();
    assert_eq!(plan.requeue_at, Some(t(1440)));
}

#[test]
fn a_create_never_seen_in_the_cluster_times_out_like_any_other_node() {
    // A 4-hour window; the create of `a` keeps failing, so the entry is never observed.
    let s = scenario()
        .schedule(Some(window(0, 240)), Some(window(1440, 1680)))
        .policy(|p| p.max_failures = 1)
        .nodes([node("a"), node("b")]);
    let first = s.plan();
    assert_eq!(created(&first), ["a"]);
    let later = s.after(&first).at(119).plan();
    assert_eq!(created(&later), ["a"], "asked again before the timeout");
    let timed_out = s.after(&later).at(120).plan();
    assert!(timed_out.state.round.failed["a"].contains("nodeTimeout 2h"));
    assert!(reasons(&timed_out).contains(&EventReason::NodeFailed));
    assert!(timed_out.delete.is_empty(), "there is nothing to delete");
    // Its slot frees (no object, node Ready) and the next node goes.
    assert_eq!(created(&timed_out), ["b"]);
}

#[test]
fn a_create_still_in_the_cache_pipeline_is_neither_repeated_nor_taken_as_seen() {
    let s = scenario().nodes([node("a")]);
    let first = s.plan();
    let pending = s.after(&first).nms([nm("a").unseen()]).at(1).plan();
    assert!(pending.create.is_empty(), "not created twice");
    assert!(!pending.state.round.in_flight["a"].observed);
    // The placeholder went away without the object ever showing: not "deleted by others",
    // just asked again.
    let gone = s.after(&pending).at(2).plan();
    assert_eq!(created(&gone), ["a"]);
    assert!(gone.events.is_empty(), "{:?}", gone.events);
}

/// Found by the chaos harness (`tests/chaos.rs`, `docs/chaos.md`): the status said `a` was in
/// flight, but its create never landed (the API failed it, then the leader was lost), and by
/// the time the window reopened a person had cordoned `b` and `c`. Asking again for `a` without
/// the budget check took a third node out with `maxUnavailable` 1.
#[test]
fn an_unobserved_create_is_asked_again_only_while_the_budget_and_window_allow() {
    let s = scenario().nodes([node("a"), node("b"), node("c")]);
    let first = s.plan();
    assert_eq!(created(&first), ["a"]);
    // The next window (within `a`'s nodeTimeout of 2h): `a`'s object never appeared, `b` and
    // `c` are cordoned by someone else.
    let reopened = s
        .after(&first)
        .schedule(Some(window(90, 150)), None)
        .nodes([node("a"), node("b").cordoned(), node("c").cordoned()])
        .at(95)
        .with(|i| i.schedule_window = Some(window(90, 150)));
    let plan = reopened.plan();
    assert!(plan.create.is_empty(), "budget used up: {:?}", plan.create);
    assert!(
        !plan.state.round.in_flight.contains_key("a"),
        "back to pending"
    );
    assert!(
        plan.state.round.failed.is_empty(),
        "not timed out: {:?}",
        plan.state.round
    );
    // Once the others are back, `a` goes again, keeping its start (and nodeTimeout) and
    // without a second NodeMaintenanceStarted Event.
    let free = reopened
        .nodes([node("a"), node("b"), node("c")])
        .at(96)
        .with(|i| i.schedule_window = Some(window(90, 150)))
        .plan();
    assert_eq!(created(&free), ["a"]);
    assert_eq!(
        free.state.round.in_flight["a"].started, first.state.round.in_flight["a"].started,
        "the same start, so the same nodeTimeout"
    );
    // Suspended, it is not asked again either.
    let suspended = reopened
        .nodes([node("a"), node("b"), node("c")])
        .policy(|p| p.suspend = true)
        .plan();
    assert!(suspended.create.is_empty(), "{:?}", suspended.create);
}

#[test]
fn an_unobserved_create_asked_again_keeps_its_start_and_sends_no_second_event() {
    let s = scenario().nodes([node("a")]);
    let first = s.plan();
    assert_eq!(created(&first), ["a"]);
    let again = s.after(&first).at(5).plan();
    assert_eq!(created(&again), ["a"]);
    assert_eq!(
        again.state.round.in_flight["a"].started,
        first.state.round.in_flight["a"].started
    );
    assert!(
        !reasons(&again).contains(&EventReason::NodeMaintenanceStarted),
        "{:?}",
        again.events
    );
}

#[test]
fn a_node_whose_generated_name_is_taken_by_someone_else_is_skipped_with_one_warning() {
    let squatter = nm("z").foreign_named(&nm_name("w", "a"));
    let s = scenario()
        .nodes([node("a"), node("b"), node("z")])
        .policy(|p| p.budget = Budget::Count(3))
        .nms([squatter]);
    let plan = s.plan();
    assert_eq!(created(&plan), ["b"]);
    let reason = &plan.state.round.skipped["a"];
    assert!(
        reason.starts_with("NameTaken: NodeMaintenance w-a-"),
        "{reason}"
    );
    let blocked: Vec<_> = plan
        .events
        .iter()
        .filter(|e| e.reason == EventReason::NodeBlocked)
        .collect();
    assert_eq!(blocked.len(), 1, "{:?}", plan.events);
    assert!(blocked[0].warning);
    assert!(blocked[0].message.contains("node a is blocked"));
    let again = s.after(&plan).at(1).plan();
    assert!(
        !reasons(&again).contains(&EventReason::NodeBlocked),
        "once per transition"
    );
    assert_eq!(again.state.round.skipped, plan.state.round.skipped);
}

#[test]
fn an_unobserved_create_whose_name_turns_out_taken_gives_the_node_back() {
    let s = scenario().nodes([node("a"), node("z")]);
    let first = s.plan();
    assert_eq!(created(&first), ["a"]);
    // The create got 409 from someone else's object, which the cache now shows.
    let after = s
        .after(&first)
        .nms([nm("z").foreign_named(&nm_name("w", "a"))])
        .at(1)
        .plan();
    assert!(!after.state.round.in_flight.contains_key("a"));
    assert!(after.state.round.skipped["a"].starts_with("NameTaken"));
    assert!(!created(&after).contains(&"a"));
}

#[test]
fn skips_are_listed_in_the_round_and_cleared_when_they_end() {
    let s = scenario()
        .nodes([node("a").not_ready(), node("b").cordoned(), node("c")])
        .policy(|p| p.budget = Budget::Count(3));
    let plan = s.plan();
    assert_eq!(
        plan.state.round.skipped,
        BTreeMap::from([
            (
                "a".to_string(),
                "NotReady: the node is not Ready".to_string()
            ),
            (
                "b".to_string(),
                "Cordoned: the node was cordoned by someone else".to_string()
            ),
        ])
    );
    let healed = s
        .after(&plan)
        .nodes([node("a"), node("b"), node("c").in_maintenance()])
        .nms([nm("c")])
        .at(1)
        .plan();
    assert!(healed.state.round.skipped.is_empty());
    assert_eq!(created(&healed), ["a", "b"]);
}

#[test]
fn control_plane_nodes_start_only_while_a_majority_stays_available() {
    let cp = |n: &str| node(n).control_plane();
    type Case = (
        &'static str,
        Vec<NodeBuilder>,
        Vec<NmBuilder>,
        Vec<&'static str>,
    );
    let table: Vec<Case> = vec![
        (
            "one of three healthy goes, the second would break quorum",
            vec![cp("cp-1"), cp("cp-2"), cp("cp-3")],
            vec![],
            vec!["cp-1"],
        ),
        (
            "a NotReady peer outside the selector leaves no room",
            vec![cp("cp-1"), cp("cp-2"), cp("cp-3").not_ready().unselected()],
            vec![],
            vec![],
        ),
        (
            "a peer under an ad-hoc NodeMaintenance counts as unavailable",
            vec![cp("cp-1"), cp("cp-2"), cp("cp-3").unselected()],
            vec![nm("cp-3").ad_hoc("fix-cp-3")],
            vec![],
        ),
        (
            "five control-plane nodes allow two at once",
            vec![cp("cp-1"), cp("cp-2"), cp("cp-3"), cp("cp-4"), cp("cp-5")],
            vec![],
            vec!["cp-1", "cp-2"],
        ),
        (
            "workers are not held back",
            vec![cp("cp-1"), node("w-1"), node("w-2")],
            vec![],
            vec!["w-1", "w-2"],
        ),
    ];
    for (case, nodes, nms, want) in table {
        let plan = scenario()
            .nodes(nodes)
            .nms(nms)
            .policy(|p| p.budget = Budget::Count(5))
            .plan();
        assert_eq!(created(&plan), want, "{case}");
    }
}

#[test]
fn a_control_plane_node_held_back_by_quorum_says_why_and_starts_once_a_peer_is_back() {
    let cp = |n: &str| node(n).control_plane();
    let s = scenario()
        .nodes([cp("cp-1"), cp("cp-2"), cp("cp-3").not_ready()])
        .policy(|p| p.budget = Budget::Count(3));
    let held = s.plan();
    assert!(held.create.is_empty());
    let reason = &held.state.round.skipped["cp-1"];
    assert!(
        reason
            .starts_with("ControlPlaneQuorum: can't put control-plane node cp-1 into maintenance"),
        "{reason}"
    );
    assert!(reason.contains("1 of 3"), "{reason}");
    let back = s
        .after(&held)
        .nodes([cp("cp-1"), cp("cp-2"), cp("cp-3")])
        .at(1)
        .plan();
    assert_eq!(created(&back), ["cp-1"]);
    assert!(back.state.round.skipped["cp-2"].starts_with("ControlPlaneQuorum"));
}

// --- Exclusions, topology domains and the health gate (issue 13) ---

fn frozen(until: i64) -> Freeze {
    Freeze {
        description: "spec.exclusions[0] \"Black Friday\"".to_string(),
        end: t(until),
    }
}

#[test]
fn during_an_exclusion_no_window_opens_and_a_run_now_request_is_refused_and_remembered() {
    let s = scenario()
        .nodes([node("a"), node("b")])
        .schedule(None, Some(window(1440, 1500)))
        .run_now("go-1")
        .with(|i| i.freeze = Some(frozen(600)));
    let plan = s.plan();
    assert!(plan.create.is_empty());
    assert!(!plan.summary.window_open);
    assert_eq!(plan.state.last_handled_run_now.as_deref(), Some("go-1"));
    assert_eq!(reasons(&plan), [EventReason::RunNowRefused]);
    assert!(plan.events[0].warning);
    let frozen_msg = plan.summary.frozen.as_deref().unwrap();
    assert!(frozen_msg.contains("Black Friday"), "{frozen_msg}");
    assert!(frozen_msg.contains("run-now included"), "{frozen_msg}");
    assert_eq!(plan.requeue_at, Some(t(600)), "wakes when the freeze ends");
    // Once the freeze is over the same annotation value does not open a window.
    let after = s.after(&plan).with(|i| i.freeze = None).at(601).plan();
    assert!(after.create.is_empty());
    assert!(after.events.is_empty());
}

#[test]
fn an_exclusion_starting_mid_window_closes_it_and_in_flight_nodes_follow_on_window_end() {
    let (s, seen) = with_a_in_flight();
    let freeze = |s: &Scenario| s.at(10).with(|i| i.freeze = Some(frozen(300)));
    // FinishInFlight: a keeps going, b does not start.
    let finish = freeze(&s.after(&seen)).plan();
    assert!(finish.create.is_empty());
    assert!(finish.delete.is_empty());
    assert!(finish.state.round.in_flight.contains_key("a"));
    assert!(reasons(&finish).contains(&EventReason::WindowClosed));
    // Abort: a's NodeMaintenance goes.
    let abort = freeze(
        &s.after(&seen)
            .policy(|p| p.on_window_end = OnWindowEnd::Abort),
    )
    .plan();
    assert_eq!(deleted(&abort), [("a", DeleteReason::Abort)]);
}

#[test]
fn the_planner_wakes_at_the_next_exclusion_start() {
    let plan = scenario()
        .nodes([node("a")])
        .with(|i| i.next_freeze = Some(t(30)))
        .plan();
    assert_eq!(plan.requeue_at, Some(t(10).min(t(30))).max(plan.requeue_at));
    assert!(plan.requeue_at.unwrap() <= t(30));
}

fn zoned(name: &str, zone: Option<&str>) -> NodeBuilder {
    let mut n = node(name);
    n.0.domain = zone.map(str::to_string);
    n
}

#[test]
fn with_a_topology_key_one_domain_at_a_time_in_name_order_and_unlabelled_last() {
    let nodes = || {
        [
            zoned("a1", Some("zone-b")),
            zoned("a2", Some("zone-a")),
            zoned("a3", Some("zone-a")),
            zoned("a4", None),
            zoned("a5", Some("zone-b")),
            zoned("a6", Some("zone-a")),
        ]
    };
    let s = scenario().nodes(nodes()).policy(|p| {
        p.budget = Budget::Count(2);
        p.topology_key = Some("topology.kubernetes.io/zone".into());
    });
    let first = s.plan();
    assert_eq!(
        created(&first),
        ["a2", "a3"],
        "zone-a first, budget 2 within it"
    );
    assert_eq!(first.state.round.domain.as_deref(), Some("zone-a"));
    // While zone-a has nodes in flight, nothing of zone-b starts even with budget left.
    let mut state = first.state.clone();
    state.round.in_flight.remove("a3");
    state.round.completed.insert("a3".into());
    let second = s.state(state).at(1).plan();
    // a2's create is not seen yet, so it is asked again; a6 is the new start.
    assert_eq!(created(&second), ["a2", "a6"]);
    // zone-a done: zone-b next, then the unlabelled node alone.
    let mut state = second.state.clone();
    state.round.in_flight.clear();
    state
        .round
        .completed
        .extend(["a2".to_string(), "a6".to_string()]);
    let third = s.state(state).at(2).plan();
    assert_eq!(created(&third), ["a1", "a5"], "zone-b once zone-a is done");
    assert_eq!(third.state.round.domain.as_deref(), Some("zone-b"));
    let mut state = third.state.clone();
    state.round.in_flight.clear();
    state
        .round
        .completed
        .extend(["a1".to_string(), "a5".to_string()]);
    let last = s.state(state).at(3).plan();
    assert_eq!(created(&last), ["a4"]);
    assert_eq!(last.state.round.domain.as_deref(), Some(""));
}

#[test]
fn a_percentage_budget_is_resolved_against_the_domain() {
    let s = scenario()
        .nodes([
            zoned("a1", Some("z1")),
            zoned("a2", Some("z1")),
            zoned("b1", Some("z2")),
            zoned("b2", Some("z2")),
            zoned("b3", Some("z2")),
            zoned("b4", Some("z2")),
        ])
        .policy(|p| {
            p.budget = Budget::Percent(50);
            p.topology_key = Some("zone".into());
        });
    // 50% of 2 nodes in z1 = 1 (of 6 it would be 3).
    assert_eq!(created(&s.plan()), ["a1"]);
}

#[test]
fn a_domain_whose_nodes_cannot_start_is_passed_over_until_they_can() {
    let s = scenario()
        .nodes([zoned("a1", Some("z1")).not_ready(), zoned("b1", Some("z2"))])
        .policy(|p| p.topology_key = Some("zone".into()));
    let plan = s.plan();
    assert_eq!(created(&plan), ["b1"]);
    assert!(plan.state.round.skipped["a1"].starts_with("NotReady"));
}

#[test]
fn a_blocked_gate_holds_new_starts_and_lets_in_flight_nodes_continue() {
    let (s, seen) = with_a_in_flight();
    let s = s
        .after(&seen)
        .policy(|p| p.budget = Budget::Count(2))
        .with(|i| i.gate = Gate::Blocked("firing".into()));
    let plan = s.at(1).plan();
    assert!(plan.create.is_empty());
    assert!(plan.delete.is_empty());
    assert_eq!(plan.summary.held_by_gate, ["b"]);
    assert!(plan.state.round.in_flight.contains_key("a"));
    let open = s.with(|i| i.gate = Gate::Open).at(2).plan();
    assert_eq!(created(&open), ["b"]);
    assert!(open.summary.held_by_gate.is_empty());
}
