//! The sandbox driven by kube-rs over HTTPS, the way nmo's controllers use a cluster.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use nmo::api::{NodeMaintenance, NodeMaintenanceSpec};
use nmo::sandbox::{NewPod, Sandbox};
use serde_json::json;
use std::time::Duration;

async fn sandbox() -> Sandbox {
    let s = Sandbox::builder()
        .speed(100.0)
        .start()
        .await
        .expect("sandbox starts");
    s.install_crds().expect("CRDs install");
    s
}

/// Poll `f` until it returns Some, or fail after `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nm(name: &str, node: &str) -> NodeMaintenance {
    NodeMaintenance::new(
        name,
        NodeMaintenanceSpec {
            node_name: node.into(),
            reason: Some("test".into()),
        },
    )
}

#[tokio::test]
async fn crud_keeps_resource_versions_uids_and_generations() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    let created = api
        .create(&PostParams::default(), &nm("a", "n1"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.creation_timestamp.is_some());
    let got = api.get("a").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    // A label change does not bump the generation; a spec change does.
    let p = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    assert_ne!(
        p.metadata.resource_version,
        created.metadata.resource_version
    );
    let p = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"reason": "other"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    // A stale replace conflicts.
    let err = api
        .replace("a", &PostParams::default(), &created)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    // Creating it twice conflicts too.
    let err = api
        .create(&PostParams::default(), &nm("a", "n1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api.get("a").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_status_subresource_is_isolated_from_the_main_resource() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    api.create(&PostParams::default(), &nm("a", "n1"))
        .await
        .unwrap();
    // Status in a main-resource write is ignored.
    let p = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert!(p.status.is_none());
    // Status writes ignore everything else.
    let p = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"reason": "x"}, "status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.unwrap().as_str(), "Running");
    assert_eq!(p.spec.reason.as_deref(), Some("test"));
    assert_eq!(p.metadata.generation, Some(1));
}

#[tokio::test]
async fn server_side_apply_owns_fields_conflicts_and_forces() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    let obj = json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "a"}, "spec": {"nodeName": "n1", "reason": "one"}});
    let a = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&obj))
        .await
        .unwrap();
    assert_eq!(a.spec.reason.as_deref(), Some("one"));
    let mf = a.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let bob = json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "a"}, "spec": {"nodeName": "n1", "reason": "two"}});
    let err = api
        .patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("conflict with \"alice\""),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let b = api
        .patch("a", &PatchParams::apply("bob").force(), &Patch::Apply(&bob))
        .await
        .unwrap();
    assert_eq!(b.spec.reason.as_deref(), Some("two"));
    // Status through SSA on the status subresource.
    let st = json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "a"}, "status": {"phase": "Succeeded", "drainProgress": 100}});
    let c = api
        .patch_status("a", &PatchParams::apply("ctrl").force(), &Patch::Apply(&st))
        .await
        .unwrap();
    assert_eq!(c.status.unwrap().drain_progress, Some(100));
    // Merge patch and JSON patch with test.
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/reason", "value": "two"},
        {"op": "replace", "path": "/spec/reason", "value": "three"}]))
    .unwrap();
    let d = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(d.spec.reason.as_deref(), Some("three"));
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/reason", "value": "nope"}]))
            .unwrap();
    let err = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(bad))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_finalizer_holds_a_delete_until_it_is_removed() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    let mut o = nm("a", "n1");
    o.metadata.finalizers = Some(vec!["nmo/test".into()]);
    api.create(&PostParams::default(), &o).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let held = api.get("a").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": ["nmo/test"]},
        {"op": "remove", "path": "/metadata/finalizers/0"}]))
    .unwrap();
    api.patch("a", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    let err = api.get("a").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn owned_objects_are_collected_once_all_their_owners_are_gone() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    let a = api
        .create(&PostParams::default(), &nm("owner-a", "n1"))
        .await
        .unwrap();
    let b = api
        .create(&PostParams::default(), &nm("owner-b", "n1"))
        .await
        .unwrap();
    let refs = |o: &NodeMaintenance| {
        json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "name": o.metadata.name, "uid": o.metadata.uid})
    };
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(s.client().unwrap(), "default");
    let lease = serde_json::from_value(
        json!({"metadata": {"name": "l", "ownerReferences": [refs(&a), refs(&b)]}}),
    )
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    api.delete("owner-a", &DeleteParams::default())
        .await
        .unwrap();
    let l = leases.get("l").await.unwrap();
    assert_eq!(
        l.metadata.owner_references.unwrap().len(),
        1,
        "the dangling reference is dropped"
    );
    api.delete("owner-b", &DeleteParams::background())
        .await
        .unwrap();
    assert!(leases.get_opt("l").await.unwrap().is_none());
}

#[tokio::test]
async fn watches_resume_and_a_forced_410_makes_the_watcher_relist() {
    let s = sandbox().await;
    let client = s.client().unwrap();
    let api: Api<NodeMaintenance> = Api::all(client.clone());
    api.create(&PostParams::default(), &nm("a", "n1"))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &nm("b", "n1"))
        .await
        .unwrap();
    // Resume: the watch replays what came after rv.
    let mut w = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("b")),
        other => panic!("{other:?}"),
    }
    // Too old: 410 as an ERROR event.
    s.expire_watch_history();
    let mut w = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("{other:?}"),
    }
    // A kube-runtime watcher survives it: it relists and sees everything.
    let (reader, writer) = reflector::store::<NodeMaintenance>();
    let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .applied_objects();
    let task = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    eventually(10, "reflector sees a and b", || {
        let n = reader.state().len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    s.expire_watch_history();
    api.create(&PostParams::default(), &nm("c", "n1"))
        .await
        .unwrap();
    eventually(10, "reflector sees c", || {
        let n = reader.state().len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_reflector_stays_in_sync_through_a_thousand_writes() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    let (reader, writer) = reflector::store::<NodeMaintenance>();
    let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .applied_objects();
    let task = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.unwrap();
    for i in 0..20 {
        api.create(&PostParams::default(), &nm(&format!("nm-{i}"), "n1"))
            .await
            .unwrap();
    }
    for round in 0..49 {
        for i in 0..20 {
            let patch = json!({"spec": {"reason": format!("round-{round}")}});
            api.patch(
                &format!("nm-{i}"),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .unwrap();
        }
    }
    for i in 0..5 {
        api.delete(&format!("nm-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let want = api.list(&ListParams::default()).await.unwrap();
    eventually(20, "the reflector to match the server", || {
        let state = reader.state();
        let ok = state.len() == want.items.len()
            && want.items.iter().all(|w| {
                state.iter().any(|r| {
                    r.metadata.name == w.metadata.name
                        && r.metadata.resource_version == w.metadata.resource_version
                })
            });
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(reader.state().len(), 15);
    task.abort();
}

#[tokio::test]
async fn eviction_honours_a_pdb_and_replaced_pods_land_on_another_node() {
    let s = sandbox().await;
    s.add_node("n1", &[]).unwrap();
    s.add_node("n2", &[]).unwrap();
    for i in 0..2 {
        s.create_pod(
            NewPod::new(&format!("web-{i}"))
                .on_node("n1")
                .label("app", "web")
                .replica_set("web")
                .grace_period(1),
        )
        .unwrap();
    }
    // Without kube's default retries, which would retry the 429 for minutes as against a
    // real apiserver.
    let mut config = s.client_config().unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})).unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let got = pdbs.get("web").await.unwrap();
    let st = got.status.unwrap();
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed
        ),
        (2, 2, 0)
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names.len(), 2);
    let err = pods
        .evict(&names[0], &Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(st) => {
            assert_eq!(st.code, 429);
            assert_eq!(
                st.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
            let cause = &st.details.unwrap().causes[0];
            assert_eq!(cause.reason, "DisruptionBudget");
            assert_eq!(
                cause.message,
                "The disruption budget web needs 2 healthy pods and has 2 currently"
            );
        }
        other => panic!("{other:?}"),
    }
    // Loosen the budget: one disruption allowed.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    assert_eq!(
        pdbs.get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        1
    );
    let _: Eviction;
    pods.evict(&names[0], &Default::default()).await.unwrap();
    let terminating = pods.get(&names[0]).await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // The ReplicaSet's replacement runs on n2; the evicted pod goes after its grace period.
    eventually(10, "the evicted pod to be gone", || {
        let pods = pods.clone();
        let n = names[0].clone();
        async move { pods.get_opt(&n).await.unwrap().is_none().then_some(()) }
    })
    .await;
    let on_n2 = pods
        .list(&ListParams::default().fields("spec.nodeName=n2"))
        .await
        .unwrap();
    assert_eq!(on_n2.items.len(), 1);
    assert_eq!(
        pdbs.get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .current_healthy,
        2
    );
    // The ReplicaSet's status counts its pods, as its controller would.
    let rs = s.get("apps/v1", "ReplicaSet", "default", "web").unwrap();
    assert_eq!(
        (
            rs["spec"]["replicas"].as_i64(),
            rs["status"]["readyReplicas"].as_i64()
        ),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn nodes_can_be_cordoned_made_not_ready_rebooted_and_removed() {
    let s = sandbox().await;
    s.add_node("n1", &[("node-role.kubernetes.io/worker", "")])
        .unwrap();
    s.create_pod(NewPod::new("p").on_node("n1")).unwrap();
    let nodes: Api<Node> = Api::all(s.client().unwrap());
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(n.spec.clone().unwrap().unschedulable, Some(true));
    let boot = |n: &Node| {
        n.status
            .as_ref()
            .unwrap()
            .node_info
            .as_ref()
            .unwrap()
            .boot_id
            .clone()
    };
    let before = boot(&n);
    s.set_node_ready("n1", false).unwrap();
    let n = nodes.get("n1").await.unwrap();
    let ready = n
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .status
        .clone();
    assert_eq!(ready, "Unknown");
    s.reboot_node("n1").unwrap();
    let n = nodes.get("n1").await.unwrap();
    assert_ne!(boot(&n), before);
    s.remove_node("n1").unwrap();
    assert!(nodes.get_opt("n1").await.unwrap().is_none());
    let pods: Api<Pod> = Api::namespaced(s.client().unwrap(), "default");
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

#[tokio::test]
async fn events_written_through_one_api_are_read_through_the_other() {
    let s = sandbox().await;
    let client = s.client().unwrap();
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    let e = serde_json::from_value(json!({"metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reason": "Drained", "note": "node drained", "type": "Normal", "action": "Drain",
        "reportingController": "nmo", "reportingInstance": "nmo-0", "regarding": {"kind": "Node", "name": "n1"}})).unwrap();
    new.create(&PostParams::default(), &e).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let c = core.get("e1").await.unwrap();
    assert_eq!(c.message.as_deref(), Some("node drained"));
    assert_eq!(c.involved_object.name.as_deref(), Some("n1"));
    assert_eq!(c.source.unwrap().component.as_deref(), Some("nmo"));
    let back = new.list(&ListParams::default()).await.unwrap();
    assert_eq!(back.items[0].note.as_deref(), Some("node drained"));
}

#[tokio::test]
async fn watches_send_bookmarks_and_end_after_their_timeout() {
    let s = Sandbox::builder()
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    s.install_crds().unwrap();
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut w = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let mut bookmarks = 0;
    while let Some(e) = w.try_next().await.unwrap() {
        if let WatchEvent::Bookmark(b) = e {
            assert!(!b.metadata.resource_version.is_empty());
            bookmarks += 1;
        }
    }
    assert!(bookmarks >= 3, "{bookmarks} bookmarks");
    // A lower bound only: the watch lasted its timeout (an upper bound would be a wall-clock
    // limit that a loaded machine can break).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents_and_orphan_keeps_them() {
    let s = sandbox().await;
    let client = s.client().unwrap();
    let api: Api<NodeMaintenance> = Api::all(client.clone());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "default");
    let owned_lease = |name: &str, owner: &NodeMaintenance, finalizer: bool| {
        let mut l = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "nodemaintenance.medik8s.io/v1beta1",
            "kind": "NodeMaintenance", "name": owner.metadata.name, "uid": owner.metadata.uid, "blockOwnerDeletion": true}]}});
        if finalizer {
            l["metadata"]["finalizers"] = json!(["test/hold"]);
        }
        serde_json::from_value::<k8s_openapi::api::coordination::v1::Lease>(l).unwrap()
    };
    // Foreground: the owner stays (with the foregroundDeletion finalizer) until its dependent
    // is gone.
    let fg = api
        .create(&PostParams::default(), &nm("fg", "n1"))
        .await
        .unwrap();
    leases
        .create(&PostParams::default(), &owned_lease("held", &fg, true))
        .await
        .unwrap();
    api.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let o = api.get("fg").await.unwrap();
    assert!(
        o.metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    assert!(
        leases
            .get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    leases
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(api.get_opt("fg").await.unwrap().is_none());
    // Orphan: the dependent stays, without the reference.
    let or = api
        .create(&PostParams::default(), &nm("or", "n1"))
        .await
        .unwrap();
    leases
        .create(&PostParams::default(), &owned_lease("kept", &or, false))
        .await
        .unwrap();
    api.delete("or", &DeleteParams::orphan()).await.unwrap();
    let kept = leases.get("kept").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    // dryRun deletes nothing.
    api.create(&PostParams::default(), &nm("dry", "n1"))
        .await
        .unwrap();
    api.delete(
        "dry",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get_opt("dry").await.unwrap().is_some());
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_its_initial_events_and_then_changes() {
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    api.create(&PostParams::default(), &nm("a", "n1"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<NodeMaintenance>();
    let stream = reflector::reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().streaming_lists()),
    )
    .applied_objects();
    let task = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);
    api.create(&PostParams::default(), &nm("b", "n1"))
        .await
        .unwrap();
    eventually(10, "the streamed reflector to see b", || {
        let n = reader.state().len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn kube_runtimes_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    use std::sync::Arc;
    let s = sandbox().await;
    let api: Api<NodeMaintenance> = Api::all(s.client().unwrap());
    api.create(&PostParams::default(), &nm("a", "n1"))
        .await
        .unwrap();
    let reconcile = |event: Event<NodeMaintenance>| async move {
        match event {
            Event::Apply(_) | Event::Cleanup(_) => Ok::<_, kube::Error>(Action::await_change()),
        }
    };
    // First pass adds the finalizer (JSON patch: test absent, add).
    let obj = Arc::new(api.get("a").await.unwrap());
    finalizer(&api, "nmo.test/cleanup", obj, reconcile)
        .await
        .unwrap();
    let obj = api.get("a").await.unwrap();
    assert_eq!(
        obj.metadata.finalizers.as_deref(),
        Some(&["nmo.test/cleanup".to_string()][..])
    );
    // Second pass applies.
    finalizer(&api, "nmo.test/cleanup", Arc::new(obj), reconcile)
        .await
        .unwrap();
    // Delete: the object waits; cleanup removes the finalizer and the object goes.
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let obj = Arc::new(api.get("a").await.unwrap());
    finalizer(&api, "nmo.test/cleanup", obj, reconcile)
        .await
        .unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn kube_runtimes_event_recorder_creates_then_counts_a_series() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let s = sandbox().await;
    s.add_node("n1", &[]).unwrap();
    let client = s.client().unwrap();
    let node: Node = Api::<Node>::all(client.clone()).get("n1").await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "nmo".into(),
            instance: Some("nmo-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Cordoned".into(),
        note: Some("node cordoned for maintenance".into()),
        action: "Cordon".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&node, &());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=n1"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Cordoned"));
    assert_eq!(e.count, Some(2));
    assert_eq!(e.source.as_ref().unwrap().component.as_deref(), Some("nmo"));
}

#[tokio::test]
async fn seeding_an_object_again_replaces_it_and_keeps_its_identity() {
    let s = sandbox().await;
    let doc = |reason: &str| {
        format!(
            "apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {{name: a}}\nspec: {{nodeName: n1, reason: {reason}}}\n"
        )
    };
    let first = s.apply_yaml(&doc("one")).unwrap().remove(0);
    let second = s.apply_yaml(&doc("two")).unwrap().remove(0);
    assert_eq!(first["metadata"]["uid"], second["metadata"]["uid"]);
    assert_eq!(second["metadata"]["generation"], 2);
    assert_eq!(second["spec"]["reason"], "two");
    // Unknown kinds and invalid objects are refused with the document named.
    let err = s
        .apply_yaml("apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n")
        .unwrap_err();
    assert!(err.to_string().contains("Gadget"), "{err}");
    let err = s.apply_yaml("apiVersion: nodemaintenance.medik8s.io/v1beta1\nkind: NodeMaintenance\nmetadata: {name: b}\nspec: {}\n").unwrap_err();
    assert!(
        err.to_string().contains("spec.nodeName: Required value"),
        "{err}"
    );
}

#[tokio::test]
async fn pod_helpers_make_mirror_daemon_and_replica_set_pods_like_a_cluster_would() {
    let s = sandbox().await;
    s.add_node("n1", &[]).unwrap();
    let mirror = s
        .create_pod(
            NewPod::new("etcd-n1")
                .namespace("kube-system")
                .on_node("n1")
                .mirror(),
        )
        .unwrap();
    assert_eq!(
        mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"],
        "mirror"
    );
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    let ds = s
        .create_pod(
            NewPod::new("")
                .namespace("kube-system")
                .on_node("n1")
                .daemon_set("agent"),
        )
        .unwrap();
    assert_eq!(ds["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    assert!(
        ds["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("agent-")
    );
    let rs = s
        .create_pod(
            NewPod::new("")
                .on_node("n1")
                .replica_set("web")
                .grace_period(7)
                .not_ready(),
        )
        .unwrap();
    assert_eq!(rs["spec"]["terminationGracePeriodSeconds"], 7);
    assert!(s.get("apps/v1", "ReplicaSet", "default", "web").is_some());
    let pods: Api<Pod> = Api::namespaced(s.client().unwrap(), "default");
    let p = pods
        .get(rs["metadata"]["name"].as_str().unwrap())
        .await
        .unwrap();
    let ready = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
}
