//! Tests of the pure report and decide steps, and of a status write race.

use super::act::write_status;
use super::*;
use crate::api::conditions::{self, ConditionType};
use crate::api::{MaintenancePhase, NodeMaintenanceSpec, NodeMaintenanceStatus, PodReference};
use crate::controller::node::tests::node;
use crate::drain::DrainReport;
use crate::drain::PodKey;
use chrono::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::Value;

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn step(current: &NodeMaintenanceStatus, stage: Stage, at: i64) -> NodeMaintenanceStatus {
    desired_status(current, &stage, false, "n1", Some(1), t(at))
}

/// A drain whose one pending pod `ns/a` is held by the PDB `pdb`.
fn blocked_by_pdb() -> DrainReport {
    let mut blocked = report(&["a"], 1);
    blocked.blocked.push(crate::drain::BlockedEviction {
        pod: PodKey::new("ns", "a"),
        budget: Some("pdb".into()),
        message: "no".into(),
    });
    blocked
}

pub(super) fn report(pending: &[&str], to_leave: usize) -> DrainReport {
    DrainReport {
        listed: true,
        total_pods: to_leave + 2,
        to_leave,
        pending: pending.iter().map(|p| PodKey::new("ns", p)).collect(),
        complete: pending.is_empty(),
        ..Default::default()
    }
}

fn cond(s: &NodeMaintenanceStatus, kind: ConditionType) -> Option<&str> {
    conditions::find(s.conditions.as_deref().unwrap_or(&[]), kind).map(|c| c.status.as_str())
}

#[test]
fn a_missing_node_fails_with_the_kubernetes_not_found_message_and_stalls() {
    let s = step(&Default::default(), Stage::NodeMissing, 0);
    assert_eq!(s.phase, Some(MaintenancePhase::Failed));
    assert_eq!(s.last_error.as_deref(), Some("nodes \"n1\" not found"));
    assert_eq!(cond(&s, ConditionType::Stalled), Some("True"));
    assert_eq!(cond(&s, ConditionType::Ready), Some("False"));
    assert_eq!(cond(&s, ConditionType::Reconciling), None);
    assert_eq!(s.observed_generation, Some(1));
}

#[test]
fn the_same_stage_twice_gives_the_same_status_so_nothing_is_written() {
    let s1 = step(&Default::default(), Stage::NodeMissing, 0);
    let s2 = step(&s1, Stage::NodeMissing, 60);
    assert_eq!(s1, s2);
    let d = Stage::Draining {
        drain: Some(report(&["a"], 2)),
    };
    let s3 = step(&s2, d.clone(), 70);
    assert_eq!(step(&s3, d, 80), s3);
}

#[test]
fn draining_shows_pending_pods_progress_and_reconciling() {
    let s = step(
        &Default::default(),
        Stage::Draining {
            drain: Some(report(&["a", "b"], 4)),
        },
        0,
    );
    assert_eq!(s.phase, Some(MaintenancePhase::Running));
    assert_eq!(s.drain_progress, Some(50));
    assert_eq!(s.pending_pods, Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(
        s.pending_pods_refs.as_ref().unwrap()[0],
        PodReference {
            namespace: Some("ns".into()),
            name: Some("a".into())
        }
    );
    assert_eq!(s.total_pods, Some(6));
    assert_eq!(s.eviction_pods, Some(4));
    assert_eq!(cond(&s, ConditionType::Reconciling), Some("True"));
    assert_eq!(cond(&s, ConditionType::Ready), Some("False"));
    assert_eq!(cond(&s, ConditionType::Stalled), None);
}

#[test]
fn success_clears_last_error_and_reconciling_and_sets_ready() {
    let blocked = blocked_by_pdb();
    let s = step(
        &Default::default(),
        Stage::Draining {
            drain: Some(blocked),
        },
        0,
    );
    assert!(s.last_error.as_deref().unwrap().contains("pdb"));
    let s = step(
        &s,
        Stage::Drained {
            drain: Some(report(&[], 1)),
        },
        5,
    );
    assert_eq!(s.phase, Some(MaintenancePhase::Succeeded));
    assert_eq!(s.last_error, None);
    assert_eq!(s.drain_progress, Some(100));
    assert_eq!(s.pending_pods, Some(vec![]));
    assert_eq!(cond(&s, ConditionType::Ready), Some("True"));
    assert_eq!(cond(&s, ConditionType::Reconciling), None);
    let patch = status_merge_patch(&step(&s, Stage::NodeMissing, 6), &s);
    assert_eq!(patch["lastError"], Value::Null);
    assert!(patch.as_object().unwrap().contains_key("lastError"));
}

#[test]
fn a_node_that_appears_later_lets_a_failed_maintenance_carry_on() {
    let s = step(&Default::default(), Stage::NodeMissing, 0);
    let s = step(&s, Stage::Draining { drain: None }, 10);
    assert_eq!(s.phase, Some(MaintenancePhase::Running));
    assert_eq!(s.last_error, None);
    assert_eq!(cond(&s, ConditionType::Stalled), None);
    assert_eq!(s.drain_progress, Some(0));
}

#[test]
fn a_resumed_drain_keeps_its_last_error_until_it_reports_again() {
    let blocked = blocked_by_pdb();
    let s = step(
        &Default::default(),
        Stage::Draining {
            drain: Some(blocked),
        },
        0,
    );
    let resumed = step(&s, Stage::Draining { drain: None }, 1);
    assert_eq!(resumed.last_error, s.last_error);
    assert_eq!(resumed.pending_pods, s.pending_pods);
}

#[test]
fn a_lease_held_by_another_holder_keeps_running_and_names_the_holder() {
    let s = step(
        &Default::default(),
        Stage::LeaseHeldByOther {
            holder: "self-node-remediation".into(),
            expires: t(600),
        },
        0,
    );
    assert_eq!(s.phase, Some(MaintenancePhase::Running));
    let err = s.last_error.unwrap();
    assert!(err.contains("self-node-remediation"), "{err}");
    assert!(err.contains("medik8s-leases/node-n1"), "{err}");
}

#[test]
fn lease_failures_are_counted_and_too_many_fail_the_maintenance() {
    let s = step(&Default::default(), Stage::Draining { drain: None }, 0);
    let s = step(
        &s,
        Stage::LeaseFailing {
            error: "boom".into(),
            count: 1,
        },
        1,
    );
    assert_eq!(s.phase, Some(MaintenancePhase::Running));
    assert_eq!(s.error_on_lease_count, Some(1));
    let s = step(
        &s,
        Stage::LeaseLost {
            why: "boom".into(),
            count: 4,
        },
        2,
    );
    assert_eq!(s.phase, Some(MaintenancePhase::Failed));
    assert_eq!(s.error_on_lease_count, Some(4));
    assert_eq!(cond(&s, ConditionType::Stalled), Some("True"));
    let progress = step(&s, Stage::Draining { drain: None }, 3);
    assert_eq!(
        progress.error_on_lease_count,
        Some(4),
        "a progress write resets nothing"
    );
    let renewed = desired_status(
        &s,
        &Stage::Draining { drain: None },
        true,
        "n1",
        Some(1),
        t(3),
    );
    assert_eq!(
        renewed.error_on_lease_count,
        Some(0),
        "reset by a good renewal"
    );
}

#[test]
fn succeed_maintenance_is_due_once_and_begin_maintenance_on_the_first_status() {
    let empty = NodeMaintenanceStatus::default();
    let running = step(&empty, Stage::Draining { drain: None }, 0);
    assert_eq!(events_for(&empty, &running), vec![MaintenanceEvent::Begin]);
    let done = step(&running, Stage::Drained { drain: None }, 1);
    assert_eq!(
        events_for(&running, &done),
        vec![MaintenanceEvent::Succeeded]
    );
    let again = step(&done, Stage::Drained { drain: None }, 2);
    assert_eq!(events_for(&done, &again), vec![]);
}

#[test]
fn a_lease_create_error_keeps_succeeded_so_success_is_announced_once() {
    let empty = NodeMaintenanceStatus::default();
    let lease_error = || Stage::LeaseNotAcquired {
        error: "etcd down".into(),
    };
    let running = step(&empty, Stage::Draining { drain: None }, 0);
    let done = step(&running, Stage::Drained { drain: None }, 1);
    // The lease is gone (deleted by someone) and creating it again fails.
    let failing = step(&done, lease_error(), 2);
    assert_eq!(failing.phase, Some(MaintenancePhase::Succeeded));
    assert_eq!(
        failing.last_error.as_deref(),
        Some("failed to take the node lease: etcd down")
    );
    assert_eq!(cond(&failing, ConditionType::Ready), Some("True"));
    assert_eq!(cond(&failing, ConditionType::Reconciling), None);
    assert_eq!(events_for(&done, &failing), vec![]);
    // The create works again: still the same completion, nothing to announce.
    let held = desired_status(
        &failing,
        &Stage::Drained { drain: None },
        true,
        "n1",
        Some(1),
        t(3),
    );
    assert_eq!(held.phase, Some(MaintenancePhase::Succeeded));
    assert_eq!(held.last_error, None);
    assert_eq!(events_for(&failing, &held), vec![]);

    // Before any success, and after a failure (the node appeared), it is Running.
    let first = step(&empty, lease_error(), 0);
    assert_eq!(first.phase, Some(MaintenancePhase::Running));
    assert_eq!(cond(&first, ConditionType::Reconciling), Some("True"));
    let missing = step(&empty, Stage::NodeMissing, 0);
    let appeared = step(&missing, lease_error(), 1);
    assert_eq!(appeared.phase, Some(MaintenancePhase::Running));
    assert_eq!(cond(&appeared, ConditionType::Stalled), None);
    assert_eq!(events_for(&missing, &appeared), vec![]);
}

#[test]
fn failed_maintenance_is_due_on_entering_failed_only() {
    let empty = NodeMaintenanceStatus::default();
    let failed = step(&empty, Stage::NodeMissing, 0);
    assert_eq!(
        events_for(&empty, &failed),
        vec![
            MaintenanceEvent::Begin,
            MaintenanceEvent::Failed("nodes \"n1\" not found".into())
        ]
    );
    let still = step(&failed, Stage::NodeMissing, 300);
    assert_eq!(events_for(&failed, &still), vec![]);
}

#[test]
fn progress_in_status_is_never_negative() {
    let current = NodeMaintenanceStatus {
        drain_progress: Some(-40),
        ..Default::default()
    };
    let s = step(&current, Stage::Draining { drain: None }, 0);
    assert_eq!(s.drain_progress, Some(0));
}

fn nm(owners: Vec<OwnerReference>) -> NodeMaintenance {
    let mut nm = NodeMaintenance::new(
        "nm",
        NodeMaintenanceSpec {
            node_name: "a".into(),
            reason: None,
        },
    );
    nm.metadata.owner_references = Some(owners);
    nm
}

#[test]
fn an_ad_hoc_maintenance_gets_a_non_controller_node_owner() {
    let n = node("a").build();
    let refs = node_owner_references(&nm(vec![]), &n).unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].kind, "Node");
    assert_eq!(refs[0].api_version, "v1");
    assert_eq!(refs[0].uid, "uid-a");
    assert_eq!(refs[0].controller, Some(false));
    assert_eq!(refs[0].block_owner_deletion, Some(false));
    assert_eq!(node_owner_references(&nm(refs), &n), None, "idempotent");
}

#[test]
fn a_maintenance_owned_by_a_window_gets_no_node_owner() {
    let window = OwnerReference {
        api_version: "nodemaintenance.medik8s.io/v1alpha1".into(),
        kind: "MaintenanceWindow".into(),
        name: "w".into(),
        uid: "w-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    assert_eq!(
        node_owner_references(&nm(vec![window]), &node("a").build()),
        None
    );
}

fn with(uid: &str, phase: Option<MaintenancePhase>, deleting: bool) -> NodeMaintenance {
    let mut n = nm(vec![]);
    n.metadata.uid = Some(uid.into());
    n.status = Some(NodeMaintenanceStatus {
        phase,
        ..Default::default()
    });
    if deleting {
        n.metadata.deletion_timestamp = Some(crate::api::to_time(t(0)));
    }
    n
}

#[test]
fn a_stage_is_retried_after_a_conflict_only_while_the_phase_it_was_decided_from_holds() {
    use MaintenancePhase::{Failed, Running, Succeeded};
    let running = with("u1", Some(Running), false);
    let cases = [
        (
            with("u1", Some(Running), false),
            true,
            "another progress write",
        ),
        (
            with("u1", Some(Succeeded), false),
            false,
            "succeeded meanwhile",
        ),
        (with("u1", Some(Failed), false), false, "failed meanwhile"),
        (with("u1", None, false), false, "status cleared"),
        (with("u1", Some(Running), true), false, "being deleted"),
        (with("u2", Some(Running), false), false, "replaced"),
    ];
    for (fresh, expected, what) in cases {
        assert_eq!(stage_still_applies(&running, &fresh), expected, "{what}");
    }
    let new = with("u1", None, false);
    assert!(stage_still_applies(&new, &with("u1", None, false)));
    assert!(!stage_still_applies(
        &new,
        &with("u1", Some(Running), false)
    ));
}

#[test]
fn a_stale_draining_stage_would_undo_succeeded_and_succeed_again() {
    // Why a conflict retry must not blindly re-apply its stage (see `stage_still_applies`).
    let running = step(
        &Default::default(),
        Stage::Draining {
            drain: Some(report(&["a"], 1)),
        },
        0,
    );
    let done = step(
        &running,
        Stage::Drained {
            drain: Some(report(&[], 1)),
        },
        1,
    );
    let undone = step(
        &done,
        Stage::Draining {
            drain: Some(report(&["a"], 1)),
        },
        2,
    );
    assert_eq!(undone.phase, Some(MaintenancePhase::Running));
    let again = step(&undone, Stage::Drained { drain: None }, 3);
    assert_eq!(
        events_for(&undone, &again),
        vec![MaintenanceEvent::Succeeded]
    );
}

/// The race behind a second `SucceedMaintenance`: a writer (the drain task's progress, or a
/// reconcile that saw the drain still running) read the object while `Running`, and the
/// drain's completion was written first. Its conflict retry must leave `Succeeded` alone.
#[tokio::test]
async fn a_status_write_that_lost_the_race_to_succeeded_neither_undoes_it_nor_emits_again() {
    use crate::sandbox::Sandbox;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{ListParams, PostParams};

    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    sandbox.install_crds().expect("CRDs install");
    let client = sandbox.client().expect("sandbox client");
    let ctx = Context {
        events: crate::controller::events::EventPublisher::new(
            client.clone(),
            Arc::new(crate::clock::SystemClock),
        ),
        client: client.clone(),
        evictions: client.clone(),
        clock: Arc::new(crate::clock::SystemClock),
        config: crate::controller::ControllerConfig::default().into(),
        stats: Arc::default(),
        telemetry: crate::telemetry::Telemetry::new(),
        drains: Arc::default(),
        nms: kube::runtime::reflector::store::Writer::default().as_reader(),
        wake: futures::channel::mpsc::unbounded().0,
        quorum_guard: Default::default(),
    };
    let api = nm_api(&ctx);
    let created = api
        .create(&PostParams::default(), &nm(vec![]))
        .await
        .expect("NodeMaintenance created");
    let draining = Stage::Draining {
        drain: Some(report(&["p"], 1)),
    };
    write_status(&ctx, &created, &draining, false)
        .await
        .unwrap();
    let stale = api.get("nm").await.unwrap();
    let drained = Stage::Drained {
        drain: Some(report(&[], 1)),
    };
    write_status(&ctx, &stale, &drained, false).await.unwrap();

    // The loser of the race holds the `Running` object it read, and news of the drain.
    let progress = Stage::Draining {
        drain: Some(report(&["q"], 1)),
    };
    let outcome = write_status(&ctx, &stale, &progress, false).await.unwrap();
    assert_eq!(outcome, None, "left to the next reconcile");
    let now = api.get("nm").await.unwrap();
    assert_eq!(
        now.status.and_then(|s| s.phase),
        Some(MaintenancePhase::Succeeded)
    );
    // The next reconcile of the `Succeeded` object finds nothing to announce.
    write_status(
        &ctx,
        &api.get("nm").await.unwrap(),
        &Stage::Drained { drain: None },
        false,
    )
    .await
    .unwrap();
    let succeeded: i32 = Api::<Event>::all(client)
        .list(&ListParams::default())
        .await
        .expect("events listed")
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reasons::SUCCEED_MAINTENANCE))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    assert_eq!(succeeded, 1);
}

// ----------------------------------------------------------------------------------------------
// decide: table tests with builders
// ----------------------------------------------------------------------------------------------

mod decide_tests {
    use super::super::decide::*;
    use super::super::drains::DrainProgress;
    use super::super::{NodeMaintenanceConfig, Stage};
    use super::{report, t};
    use crate::api::EXCLUDE_FROM_REMEDIATION_LABEL;
    use crate::api::conditions::{self, ConditionStatus, ConditionType};
    use crate::api::{
        MaintenancePhase, NodeMaintenance, NodeMaintenanceSpec, NodeMaintenanceStatus,
    };
    use crate::controller::lease::{LEASE_HOLDER, LeaseDecision};
    use crate::controller::node::tests::node;
    use crate::controller::node::{DRAIN_TAINT, UNSCHEDULABLE_TAINT, WAS_UNSCHEDULABLE_ANNOTATION};
    use crate::controller::quorum::CONTROL_PLANE_LABELS;
    use crate::drain::filter::tests::pod;
    use chrono::Duration as D;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use std::time::Duration;

    fn config() -> NodeMaintenanceConfig {
        NodeMaintenanceConfig::default()
    }

    /// A NodeMaintenance of node `a`: `nm("m").phase(Succeeded).lease_errors(2)`.
    struct NmB(NodeMaintenance);
    fn nm(name: &str) -> NmB {
        let mut n = NodeMaintenance::new(
            name,
            NodeMaintenanceSpec {
                node_name: "a".into(),
                reason: None,
            },
        );
        n.metadata.uid = Some(format!("uid-{name}"));
        n.metadata.creation_timestamp = Some(crate::api::to_time(t(0)));
        NmB(n)
    }
    impl NmB {
        fn status(&mut self) -> &mut NodeMaintenanceStatus {
            self.0.status.get_or_insert_with(Default::default)
        }
        fn phase(mut self, p: MaintenancePhase) -> Self {
            self.status().phase = Some(p);
            self
        }
        fn on(mut self, node: &str) -> Self {
            self.0.spec.node_name = node.into();
            self
        }
        fn created(mut self, at: i64) -> Self {
            self.0.metadata.creation_timestamp = Some(crate::api::to_time(t(at)));
            self
        }
        fn lease_errors(mut self, n: i32, at: i64) -> Self {
            self.status().error_on_lease_count = Some(n);
            self.status().last_update = Some(crate::api::to_time(t(at)));
            self
        }
        fn condition(mut self, kind: ConditionType, status: ConditionStatus, reason: &str) -> Self {
            let conds = self.status().conditions.clone().unwrap_or_default();
            self.status().conditions = Some(conditions::set(
                &conds,
                kind,
                status,
                reason,
                "",
                None,
                t(0),
            ));
            self
        }
        fn deleting(mut self) -> Self {
            self.0.metadata.deletion_timestamp = Some(crate::api::to_time(t(0)));
            self
        }
        fn finalized(mut self) -> Self {
            self.0.metadata.finalizers = Some(vec![crate::api::FINALIZER.into()]);
            self
        }
        fn build(self) -> NodeMaintenance {
            self.0
        }
    }

    fn in_maintenance(name: &str) -> crate::controller::node::tests::NodeBuilder {
        let mut n = node(name)
            .cordoned()
            .tainted(UNSCHEDULABLE_TAINT)
            .tainted(DRAIN_TAINT)
            .labelled(EXCLUDE_FROM_REMEDIATION_LABEL, "true")
            .build();
        n.metadata.annotations = Some(
            [(
                WAS_UNSCHEDULABLE_ANNOTATION.to_string(),
                "false".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        crate::controller::node::tests::NodeBuilder::from(n)
    }

    fn control_plane(name: &str, ready: bool) -> Node {
        let mut n = node(name).labelled(CONTROL_PLANE_LABELS[0], "").build();
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    fn lease(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(3600),
            acquire_time: Some(MicroTime(crate::api::to_time(t(0)).0)),
            renew_time: Some(MicroTime(crate::api::to_time(t(renewed)).0)),
            ..Default::default()
        }
    }

    fn observed(nm: NmB, node: Option<Node>) -> Observed {
        let mut o = Observed::of(nm.build());
        o.node = node;
        o
    }

    fn drain_step(plan: &Plan) -> Option<&DrainStep> {
        match plan {
            Plan::Maintain { drain, .. } => Some(drain),
            _ => None,
        }
    }

    #[test]
    fn a_succeeded_maintenance_whose_node_was_uncordoned_drains_again() {
        let mut uncordoned = in_maintenance("a").build();
        uncordoned.spec.as_mut().unwrap().unschedulable = None;
        let mut o = observed(nm("m").phase(MaintenancePhase::Succeeded), Some(uncordoned));
        o.lease = Some(lease(LEASE_HOLDER, 0));
        o.pods = Some(vec![]);
        let plan = decide(&o, t(10), &config());
        assert_eq!(
            drain_step(&plan),
            Some(&DrainStep::Drift("uncordoned".into()))
        );
    }

    #[test]
    fn a_succeeded_maintenance_whose_node_lost_a_taint_drains_again() {
        let mut n = in_maintenance("a").build();
        n.spec
            .as_mut()
            .unwrap()
            .taints
            .as_mut()
            .unwrap()
            .retain(|t| t.key != DRAIN_TAINT);
        let mut o = observed(nm("m").phase(MaintenancePhase::Succeeded), Some(n));
        o.pods = Some(vec![]);
        let plan = decide(&o, t(10), &config());
        assert_eq!(
            drain_step(&plan),
            Some(&DrainStep::Drift(format!("taint {DRAIN_TAINT} removed")))
        );
    }

    #[test]
    fn a_pod_bound_to_the_node_of_a_succeeded_maintenance_is_drift_unless_it_may_run_there() {
        let cases = [
            (
                pod("web").owned_by("ReplicaSet").build(),
                true,
                "a ReplicaSet pod",
            ),
            (pod("bare").build(), true, "an unmanaged pod"),
            (
                pod("ds").owned_by("DaemonSet").build(),
                false,
                "a DaemonSet pod",
            ),
            (pod("static").mirror().build(), false, "a mirror pod"),
            (
                pod("done").phase("Succeeded").build(),
                false,
                "a finished pod",
            ),
            (
                pod("agent").tolerating_unschedulable().build(),
                false,
                "a pod tolerating the cordon",
            ),
        ];
        for (p, drifts, what) in cases {
            let mut o = observed(
                nm("m").phase(MaintenancePhase::Succeeded),
                Some(in_maintenance("a").build()),
            );
            o.pods = Some(vec![p]);
            let step = drain_step(&decide(&o, t(10), &config())).cloned();
            assert_eq!(matches!(step, Some(DrainStep::Drift(_))), drifts, "{what}");
            if !drifts {
                assert_eq!(step, Some(DrainStep::Done), "{what}");
            }
        }
    }

    #[test]
    fn a_running_maintenance_follows_its_drain_task() {
        let cases = [
            (None, DrainStep::Start),
            (
                Some(DrainProgress::Running(report(&["p"], 1))),
                DrainStep::Progress(Some(report(&["p"], 1))),
            ),
            (
                Some(DrainProgress::Complete(report(&[], 1))),
                DrainStep::Completed(report(&[], 1)),
            ),
            (
                Some(DrainProgress::Ended("watch ended".into())),
                DrainStep::Restart("watch ended".into()),
            ),
        ];
        for (progress, expected) in cases {
            let mut o = observed(
                nm("m").phase(MaintenancePhase::Running),
                Some(in_maintenance("a").build()),
            );
            o.drain = progress;
            assert_eq!(drain_step(&decide(&o, t(10), &config())), Some(&expected));
        }
    }

    #[test]
    fn a_control_plane_node_that_would_break_the_quorum_waits_with_the_reason() {
        let mut o = observed(nm("m"), Some(control_plane("a", true)));
        o.control_plane = vec![
            control_plane("a", true),
            control_plane("b", false),
            control_plane("c", true),
        ];
        let plan = decide(&o, t(10), &config());
        let Plan::Wait {
            stage: Stage::QuorumWouldBeLost { message },
            retry_at,
        } = plan
        else {
            panic!("refused: {plan:?}");
        };
        assert!(message.contains("control-plane node a"), "{message}");
        assert!(retry_at > t(10));
    }

    #[test]
    fn a_control_plane_node_goes_when_the_others_keep_a_majority() {
        let mut o = observed(nm("m"), Some(control_plane("a", true)));
        o.control_plane = vec![
            control_plane("a", true),
            control_plane("b", true),
            control_plane("c", true),
        ];
        assert_eq!(
            drain_step(&decide(&o, t(10), &config())),
            Some(&DrainStep::Start)
        );
        o.in_maintenance = ["b".to_string()].into_iter().collect();
        assert!(matches!(
            decide(&o, t(10), &config()),
            Plan::Wait {
                stage: Stage::QuorumWouldBeLost { .. },
                ..
            }
        ));
    }

    #[test]
    fn a_control_plane_node_already_in_maintenance_keeps_it_when_the_quorum_drops_later() {
        let mut n = in_maintenance("a").build();
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CONTROL_PLANE_LABELS[0].into(), String::new());
        let mut o = observed(nm("m").phase(MaintenancePhase::Running), Some(n));
        o.control_plane = vec![control_plane("b", false), control_plane("c", false)];
        assert!(matches!(
            decide(&o, t(10), &config()),
            Plan::Maintain { .. }
        ));
    }

    #[test]
    fn older_and_started_maintenances_of_other_nodes_count_as_holding_their_nodes() {
        let this = nm("m").created(10).build();
        let all = vec![
            nm("older").on("b").created(5).build(),
            nm("younger").on("c").created(20).build(),
            nm("younger-draining")
                .on("d")
                .created(20)
                .phase(MaintenancePhase::Running)
                .condition(
                    ConditionType::Reconciling,
                    ConditionStatus::True,
                    "Draining",
                )
                .build(),
            nm("younger-done")
                .on("e")
                .created(20)
                .phase(MaintenancePhase::Succeeded)
                .build(),
            nm("older-failed")
                .on("f")
                .created(5)
                .phase(MaintenancePhase::Failed)
                .build(),
            nm("same-node").created(5).build(),
            this.clone(),
        ];
        let held: Vec<String> = holding_nodes(&this, &all).into_iter().collect();
        assert_eq!(held, ["b", "d", "e"]);
    }

    #[test]
    fn a_refused_control_plane_maintenance_does_not_block_an_allowed_one() {
        // cp-1, cp-2, cp-3; cp-3 NotReady. Maintenance of cp-1 would leave only cp-2: refused.
        // Maintenance of cp-3 (already down) leaves cp-1 and cp-2: allowed, and the older,
        // refused one must not count as holding cp-1.
        let nodes = vec![
            control_plane("cp-1", true),
            control_plane("cp-2", true),
            control_plane("cp-3", false),
        ];
        let refused = nm("nm-cp-1")
            .on("cp-1")
            .created(5)
            .phase(MaintenancePhase::Running)
            .condition(
                ConditionType::Reconciling,
                ConditionStatus::True,
                "QuorumWouldBeLost",
            )
            .build();
        let this = nm("nm-cp-3").on("cp-3").created(10);
        let all = vec![refused.clone(), this.0.clone()];
        let mut o = observed(this, Some(control_plane("cp-3", false)));
        o.control_plane = nodes.clone();
        o.in_maintenance = holding_nodes(&o.nm, &all);
        assert!(o.in_maintenance.is_empty(), "{:?}", o.in_maintenance);
        assert_eq!(
            drain_step(&decide(&o, t(10), &config())),
            Some(&DrainStep::Start),
            "cp-3 proceeds"
        );
        // And the refused one stays refused once cp-3 is under maintenance.
        let mut o = observed(NmB(refused.clone()), Some(control_plane("cp-1", true)));
        o.control_plane = nodes;
        o.in_maintenance = holding_nodes(&refused, &all);
        assert!(matches!(
            decide(&o, t(10), &config()),
            Plan::Wait {
                stage: Stage::QuorumWouldBeLost { .. },
                ..
            }
        ));
    }

    #[test]
    fn a_lease_taken_over_while_the_node_was_ours_releases_it() {
        let mut o = observed(
            nm("m").phase(MaintenancePhase::Succeeded),
            Some(in_maintenance("a").build()),
        );
        o.lease = Some(lease("self-node-remediation", 100));
        let plan = decide(&o, t(110), &config());
        assert!(
            matches!(&plan, Plan::Release { stage: Stage::LeaseLost { why, .. } } if why.contains("self-node-remediation")),
            "{plan:?}"
        );
        // Before the node was ours, another holder is waited for.
        let mut o = observed(nm("m"), Some(node("a").build()));
        o.lease = Some(lease("self-node-remediation", 100));
        assert!(matches!(
            decide(&o, t(110), &config()),
            Plan::Wait {
                stage: Stage::LeaseHeldByOther { .. },
                ..
            }
        ));
    }

    #[test]
    fn a_failed_renewal_is_retried_after_its_backoff_not_when_our_own_status_write_wakes_us() {
        let mut o = observed(
            nm("m")
                .phase(MaintenancePhase::Succeeded)
                .lease_errors(1, 1800),
            Some(in_maintenance("a").build()),
        );
        o.lease = Some(lease(LEASE_HOLDER, 0));
        o.pods = Some(vec![]);
        let c = config();
        let wait = backoff(1, c.lease_retry, c.error_retry_max, seed_of("m"));
        assert_eq!(
            decide(&o, t(1800), &c),
            Plan::Pause {
                retry_at: t(1800) + D::from_std(wait).unwrap()
            }
        );
        let later = t(1800) + D::from_std(wait).unwrap();
        assert!(matches!(
            decide(&o, later, &c),
            Plan::Maintain {
                lease: LeaseDecision::Take { acquire: false },
                ..
            }
        ));
    }

    #[test]
    fn a_maintenance_that_lost_its_lease_stays_finished() {
        let o = observed(
            nm("m").phase(MaintenancePhase::Failed).condition(
                ConditionType::Stalled,
                ConditionStatus::True,
                "LeaseLost",
            ),
            Some(node("a").build()),
        );
        assert_eq!(decide(&o, t(0), &config()), Plan::Finished);
    }

    #[test]
    fn only_live_other_maintenances_of_the_node_keep_it_at_cleanup() {
        let this = nm("m").deleting().finalized().build();
        let all = vec![
            this.clone(),
            nm("other").finalized().build(),
            nm("also-deleting").deleting().finalized().build(),
            nm("elsewhere").on("b").finalized().build(),
            // Not reconciled yet: deleted now, it would go with no cleanup of its own.
            nm("unreconciled").build(),
        ];
        assert_eq!(live_siblings(&this, &all), ["other"]);
        assert!(live_siblings(&this, std::slice::from_ref(&this)).is_empty());
    }

    #[test]
    fn lease_loss_needs_our_renewal_expired_and_too_many_failures() {
        let hour = D::hours(1);
        let renewed = Some(t(0));
        let cases = [
            // (last renewed, failures so far, now, result, verdict, why)
            (
                renewed,
                0,
                t(10),
                Ok(()),
                LeaseVerdict::Held,
                "a good write",
            ),
            (
                None,
                0,
                t(10),
                Err(()),
                LeaseVerdict::NotYetHeld,
                "first acquisition failing",
            ),
            (
                None,
                7,
                t(99_999),
                Err(()),
                LeaseVerdict::NotYetHeld,
                "never ours: nothing counted",
            ),
            (
                renewed,
                0,
                t(1800),
                Err(()),
                LeaseVerdict::Failing { count: 1 },
                "one failed renewal",
            ),
            (
                renewed,
                5,
                t(3599),
                Err(()),
                LeaseVerdict::Failing { count: 6 },
                "many failures, lease still valid",
            ),
            (
                renewed,
                1,
                t(3600),
                Err(()),
                LeaseVerdict::Failing { count: 2 },
                "expired but few failures",
            ),
            (
                renewed,
                3,
                t(3600),
                Err(()),
                LeaseVerdict::Lost { count: 4 },
                "expired and too many failures",
            ),
            (
                renewed,
                9,
                t(3600),
                Ok(()),
                LeaseVerdict::Held,
                "a good write after many failures",
            ),
        ];
        for (last, failures, now, result, verdict, why) in cases {
            assert_eq!(
                lease_verdict(last, hour, failures, 3, now, result),
                verdict,
                "{why}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter_within_half() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        let cases = [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)];
        for (attempt, full) in cases {
            let full = Duration::from_secs(full);
            for seed in [0, 1, 42, u64::MAX] {
                let d = backoff(attempt, base, cap, seed);
                assert!(
                    d <= full && d >= full / 2,
                    "attempt {attempt}, seed {seed}: {d:?}"
                );
                assert_eq!(d, backoff(attempt, base, cap, seed), "deterministic");
            }
        }
        assert_ne!(
            backoff(3, base, cap, seed_of("a")),
            backoff(3, base, cap, seed_of("b")),
            "objects do not retry in step"
        );
    }
}
