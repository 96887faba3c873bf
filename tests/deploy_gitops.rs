//! The GitOps contract with Argo CD and Flux: a MaintenanceWindow applied the way they apply
//! it (server-side apply under their field managers, with their tracking labels and
//! annotations) gets NodeMaintenances that carry a controller ownerReference to the window
//! and none of those tracking marks, so neither tool adopts or prunes them; and nmo never
//! writes the window's spec: its managedFields hold no entry of nmo's field manager on `spec`.
//! The sandbox API server and both real controllers, on a virtual clock.

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nmo::api::{MaintenanceWindow, NodeMaintenance};
use nmo::clock::VirtualClock;
use nmo::sandbox::Sandbox;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SPEED: f64 = 600.0;

/// Label and annotation keys that tie an object to an Argo CD Application or a Flux
/// Kustomization: a generated object carrying one would be adopted (and pruned) by it.
fn is_tracking_key(key: &str) -> bool {
    key.starts_with("argocd.argoproj.io/")
        || key == "app.kubernetes.io/instance"
        || key.starts_with("kustomize.toolkit.fluxcd.io/")
}

async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Apply `window` with server-side apply under `manager`, as Argo CD (`argocd-controller`) and
/// Flux (`kustomize-controller`) do.
async fn apply(client: &Client, manager: &str, window: &Value) {
    let name = window["metadata"]["name"].as_str().unwrap();
    Api::<MaintenanceWindow>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(window),
        )
        .await
        .unwrap_or_else(|e| panic!("{manager} applies {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_node_maintenances_are_owned_by_their_window_and_carry_no_gitops_tracking() {
    let clock = VirtualClock::new(chrono::Utc::now(), SPEED);
    let sandbox = Sandbox::builder()
        .speed(SPEED)
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .expect("sandbox starts");
    sandbox.install_crds().unwrap();
    for node in ["git-1", "git-2", "git-3"] {
        sandbox.add_node(node, &[("pool", "git")]).unwrap();
    }
    let client = sandbox.client().unwrap();
    let controllers = nmo::controller::start(
        client.clone(),
        Arc::new(clock.clone()),
        nmo::controller::ControllerConfig::default(),
    );

    // Every version of every NodeMaintenance, as a watcher sees it.
    let seen: Arc<Mutex<Vec<NodeMaintenance>>> = Arc::default();
    let log = seen.clone();
    let nms: Api<NodeMaintenance> = Api::all(client.clone());
    let watch = tokio::spawn(
        watcher(nms.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |nm| {
                if let Ok(nm) = nm {
                    log.lock().unwrap().push(nm);
                }
                std::future::ready(())
            }),
    );

    // Argo CD's tracking (annotation and the legacy instance label) and Flux's labels, a
    // sync wave, and run-now to open a window at once.
    let argo = json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
        "metadata": {"name": "git-argo",
            "labels": {"app.kubernetes.io/instance": "maintenance-windows"},
            "annotations": {
                "argocd.argoproj.io/tracking-id": "maintenance-windows:nodemaintenance.medik8s.io/MaintenanceWindow:/git-argo",
                "argocd.argoproj.io/sync-wave": "1",
                "nodemaintenance.medik8s.io/run-now": "argo-1"}},
        "spec": {"schedule": "0 3 * * SUN", "timeZone": "Europe/Berlin", "duration": "2h",
            "nodeSelector": {"matchLabels": {"pool": "git"}},
            "maxUnavailable": 1, "release": {"after": "5m"}, "reason": "GitOps test"}
    });
    let flux = json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
        "metadata": {"name": "git-flux",
            "labels": {"kustomize.toolkit.fluxcd.io/name": "maintenance-windows",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
            "annotations": {"kustomize.toolkit.fluxcd.io/checksum": "0123abcd",
                "nodemaintenance.medik8s.io/run-now": "flux-1"}},
        "spec": {"schedule": "0 4 * * SUN", "duration": "2h",
            "nodeSelector": {"matchLabels": {"pool": "git"}},
            "maxUnavailable": 1, "release": {"after": "5m"}}
    });
    apply(&client, "argocd-controller", &argo).await;
    apply(&client, "kustomize-controller", &flux).await;

    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    // Both windows finish a round over the three nodes (one node at a time across both).
    for name in ["git-argo", "git-flux"] {
        wait_for(&format!("{name}'s round over 3 nodes"), 120, || async {
            let window = windows.get(name).await.ok()?;
            let round = window.status?.round?;
            (round.completed == 3).then_some(())
        })
        .await;
    }

    let seen = seen.lock().unwrap().clone();
    // Only the windows make NodeMaintenances here: every one seen is a generated one.
    let generated: Vec<&NodeMaintenance> = seen.iter().collect();
    assert!(
        generated.len() >= 6,
        "each window made a NodeMaintenance per node (saw {})",
        generated.len()
    );
    for nm in &generated {
        let owner = nm
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .unwrap_or_else(|| panic!("{} has a controller ownerReference", nm.name_any()));
        assert_eq!(owner.kind, "MaintenanceWindow");
        assert_eq!(owner.api_version, "nodemaintenance.medik8s.io/v1alpha1");
        let window = windows.get(&owner.name).await.expect("owner exists");
        assert_eq!(Some(&owner.uid), window.metadata.uid.as_ref(), "owner uid");
        assert!(
            nm.owner_references().iter().all(|o| o.kind != "Node"),
            "{}: no Node owner (it would keep the window's NodeMaintenances alive)",
            nm.name_any()
        );
        let marks: Vec<&String> = nm
            .labels()
            .keys()
            .chain(nm.annotations().keys())
            .filter(|k| is_tracking_key(k))
            .collect();
        assert!(
            marks.is_empty(),
            "{} carries GitOps tracking {marks:?}",
            nm.name_any()
        );
        assert_eq!(
            nm.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("nmo")
        );
    }

    // nmo wrote status (many times) but never the spec: no managedFields entry of nmo outside
    // the status subresource, none touching spec, and the spec is what was applied.
    for (name, applied, manager) in [
        ("git-argo", &argo, "argocd-controller"),
        ("git-flux", &flux, "kustomize-controller"),
    ] {
        let window = windows.get(name).await.unwrap();
        let entries = window.metadata.managed_fields.clone().unwrap_or_default();
        let spec_owner = entries
            .iter()
            .find(|e| {
                e.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.get("f:spec").is_some())
            })
            .expect("the spec has a field manager");
        assert_eq!(spec_owner.manager.as_deref(), Some(manager));
        let nmo_entries: Vec<_> = entries
            .iter()
            .filter(|e| e.manager.as_deref() == Some("nmo"))
            .collect();
        assert!(
            !nmo_entries.is_empty(),
            "{name}: nmo's status writes are recorded under its field manager"
        );
        for entry in nmo_entries {
            assert_eq!(
                entry.subresource.as_deref(),
                Some("status"),
                "{name}: nmo writes only through the status subresource: {entry:?}"
            );
            let fields = entry.fields_v1.as_ref().map(|f| &f.0);
            assert!(
                fields.is_none_or(|f| f.get("f:spec").is_none()),
                "{name}: nmo owns no spec field: {entry:?}"
            );
        }
        let live = serde_json::to_value(&window.spec).unwrap();
        assert_eq!(
            live, applied["spec"],
            "{name}: the spec is exactly what was applied"
        );
        assert_eq!(
            window.metadata.generation,
            Some(1),
            "{name}: never rewritten"
        );
        assert_eq!(
            window.status.and_then(|s| s.observed_generation),
            Some(1),
            "{name}: observed"
        );
    }

    watch.abort();
    controllers.stop().await;
    sandbox.shutdown().await;
}
