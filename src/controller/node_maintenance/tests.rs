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

fn t(secs: i64) -> DateTime<Utc> {
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

fn report(pending: &[&str], to_leave: usize) -> DrainReport {
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
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "nmo-test".into(),
                instance: None,
            },
        ),
        client: client.clone(),
        evictions: client.clone(),
        clock: Arc::new(crate::clock::SystemClock),
        config: NodeMaintenanceConfig::default(),
        stats: Arc::default(),
        drains: Arc::default(),
        nms: kube::runtime::reflector::store::Writer::default().as_reader(),
        wake: futures::channel::mpsc::unbounded().0,
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
