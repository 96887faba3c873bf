//! Regression tests for what the chaos harness (`tests/chaos.rs`, `docs/chaos.md`) found, each
//! replaying the failure on its own against the sandbox.

use k8s_openapi::api::core::v1::ObjectReference;
use nmo::clock::SystemClock;
use nmo::controller::events::{EventPublisher, EventType, PUBLISH_ATTEMPTS};
use nmo::sandbox::{Fault, FaultRule, Sandbox};
use std::sync::Arc;

fn nm(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("nodemaintenance.medik8s.io/v1beta1".into()),
        kind: Some("NodeMaintenance".into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

fn begin_events(sandbox: &Sandbox, nm: &str) -> usize {
    sandbox
        .list("v1", "Event")
        .iter()
        .filter(|e| e["reason"] == "BeginMaintenance" && e["involvedObject"]["name"] == nm)
        .count()
}

/// Found by the chaos harness: with one write in ten failing, NodeMaintenances began without
/// their BeginMaintenance Event, because a failed Event create was dropped at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_create_fails_in_passing_is_published_once_by_the_retry() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let publisher = EventPublisher::new(sandbox.client().unwrap(), Arc::new(SystemClock));
    // 500, then a 409 Conflict, then it goes through.
    let faults = sandbox.faults();
    for fault in [Fault::Status(500), Fault::Status(409)] {
        faults
            .add(
                FaultRule::new(fault)
                    .verbs(&["create"])
                    .resources(&["events"])
                    .limit(1),
            )
            .unwrap();
    }
    publisher
        .publish(&nm("nm-1"), EventType::Normal, "BeginMaintenance", "began")
        .await
        .expect("published after the retries");
    assert_eq!(faults.injected(), 2, "both faults were in the way");
    assert_eq!(begin_events(&sandbox, "nm-1"), 1, "once, not doubled");

    // A failure that lasts gives up after PUBLISH_ATTEMPTS tries, with the last error.
    faults.clear();
    let id = faults
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["create"])
                .resources(&["events"]),
        )
        .unwrap();
    let err = publisher
        .publish(&nm("nm-2"), EventType::Normal, "BeginMaintenance", "began")
        .await
        .expect_err("the API keeps failing");
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(faults.hits(id), u64::from(PUBLISH_ATTEMPTS));
    assert_eq!(begin_events(&sandbox, "nm-2"), 0);

    // A refusal for good is not retried: the namespace of a namespaced object is missing.
    faults.clear();
    let mut pod = nm("p");
    pod.namespace = Some("no-such-namespace".into());
    let creates = sandbox.request_count("create", "events");
    let refused = publisher
        .publish(&pod, EventType::Normal, "BeginMaintenance", "began")
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        sandbox.request_count("create", "events"),
        creates + 1,
        "sent once"
    );
}
