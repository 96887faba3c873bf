//! Readiness: `/readyz` succeeds once the controllers have started and every cache they
//! registered has synced (its first list is complete), as controller-runtime's informer sync
//! check does. Once synced, a cache stays synced: a watch that reconnects later does not make
//! the operator unready.

use futures::FutureExt;
use kube::runtime::reflector::{Lookup, Store};
use std::sync::{Arc, Mutex};

type Check = Box<dyn Fn() -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    /// Every controller has registered its caches.
    started: bool,
    checks: Vec<(String, Check)>,
}

/// Whether the operator is ready, shared by the controllers (which register their caches) and
/// the probe server. Cloning shares it.
#[derive(Clone, Default)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
}

/// One line of the readiness report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// What is checked: `controllers started`, `cache NodeMaintenance`.
    pub name: String,
    /// Whether it passes.
    pub ok: bool,
}

impl Readiness {
    /// Not ready: no controller has started.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Require `store` (a reflector cache) to have synced; `what` names it in the report.
    pub fn track<K>(&self, what: &str, store: Store<K>)
    where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        self.track_check(&format!("cache {what}"), move || {
            // Synced means the writer has seen a complete list; checking never waits.
            matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
        });
    }

    /// Require `check` to pass.
    pub fn track_check(&self, name: &str, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.lock().checks.push((name.to_string(), Box::new(check)));
    }

    /// Every controller has registered its caches: readiness now depends on them alone.
    pub fn set_started(&self) {
        self.lock().started = true;
    }

    /// Each check and whether it passes, starting with `controllers started`.
    pub fn report(&self) -> Vec<CheckResult> {
        let state = self.lock();
        std::iter::once(CheckResult {
            name: "controllers started".to_string(),
            ok: state.started,
        })
        .chain(state.checks.iter().map(|(name, check)| CheckResult {
            name: name.clone(),
            ok: check(),
        }))
        .collect()
    }

    /// Whether every check passes.
    pub fn is_ready(&self) -> bool {
        self.report().iter().all(|c| c.ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn not_ready_until_started_and_every_check_passes() {
        let r = Readiness::new();
        assert!(!r.is_ready(), "nothing started");
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        r.track_check("cache X", move || f.load(Ordering::SeqCst));
        r.set_started();
        assert!(!r.is_ready(), "a cache has not synced");
        assert_eq!(
            r.report(),
            vec![
                CheckResult {
                    name: "controllers started".into(),
                    ok: true
                },
                CheckResult {
                    name: "cache X".into(),
                    ok: false
                },
            ]
        );
        flag.store(true, Ordering::SeqCst);
        assert!(r.is_ready());
    }

    #[test]
    fn a_reflector_cache_is_synced_once_its_first_list_is_complete() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let r = Readiness::new();
        r.track("ConfigMap", store);
        r.set_started();
        writer.apply_watcher_event(&watcher::Event::Init);
        assert!(!r.is_ready(), "listing");
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(r.is_ready());
        writer.apply_watcher_event(&watcher::Event::Init);
        assert!(r.is_ready(), "a relist does not unsync it");
    }
}
