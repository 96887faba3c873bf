//! The drain tasks (one per NodeMaintenance, keyed by uid) and the pod watches that notice a
//! pod bound to the node of a `Succeeded` NodeMaintenance.

use super::act::write_status;
use super::status::Stage;
use super::{Context, nm_api};
use crate::api::{MaintenancePhase, NodeMaintenance};
use crate::drain::{
    DrainContext, DrainReport, DrainSeed, classify, drain_node, tolerates_unschedulable,
};
use crate::telemetry::metrics;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What the drain task of one NodeMaintenance has said last.
#[derive(Clone, Debug, PartialEq)]
pub enum DrainProgress {
    /// Still draining; the last report.
    Running(DrainReport),
    /// Finished: nothing evictable is left.
    Complete(DrainReport),
    /// Ended with an error.
    Ended(String),
}

struct DrainTask {
    progress: watch::Receiver<DrainProgress>,
    handle: JoinHandle<()>,
}

/// The running drain tasks, and the pod watches of `Succeeded` NodeMaintenances, keyed by
/// NodeMaintenance uid. Dropping it stops them all.
#[derive(Default)]
pub struct Drains {
    tasks: Mutex<HashMap<String, DrainTask>>,
    watches: Mutex<HashMap<String, JoinHandle<()>>>,
    reports: Reports,
}

/// The progress reports of drains (a status write and the Events it calls for) in flight, and
/// whether new ones may start: `(in flight, closed)`. A report runs as a task of its own so
/// that stopping a drain never cuts a status write off from its Events; a graceful stop
/// closes this gate and waits for the reports already running.
#[derive(Default)]
struct Reports(watch::Sender<(usize, bool)>);

/// One report in flight; dropping it counts the report as done.
struct ReportPermit(watch::Sender<(usize, bool)>);

impl Drop for ReportPermit {
    fn drop(&mut self) {
        self.0.send_modify(|(n, _)| *n = n.saturating_sub(1));
    }
}

impl Reports {
    /// A permit for one report, unless the gate is closed.
    fn begin(&self) -> Option<ReportPermit> {
        self.0
            .send_if_modified(|(n, closed)| {
                if *closed {
                    return false;
                }
                *n += 1;
                true
            })
            .then(|| ReportPermit(self.0.clone()))
    }

    /// Close the gate, run `stop`, then wait until no report runs.
    async fn close_and_wait_after(&self, stop: impl FnOnce()) {
        self.0.send_modify(|(_, closed)| *closed = true);
        stop();
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|(n, _)| *n == 0).await;
    }
}

impl Drains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DrainTask>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest progress of the drain for `uid`, if one exists.
    pub(super) fn peek(&self, uid: &str) -> Option<DrainProgress> {
        self.lock().get(uid).map(|t| t.progress.borrow().clone())
    }

    /// Start a drain for `uid` with `start` unless one exists.
    pub(super) fn start(
        &self,
        uid: &str,
        start: impl FnOnce(watch::Sender<DrainProgress>) -> JoinHandle<()>,
    ) {
        let mut tasks = self.lock();
        if tasks.contains_key(uid) {
            return;
        }
        let (tx, rx) = watch::channel(DrainProgress::Running(DrainReport::default()));
        let handle = start(tx);
        tasks.insert(
            uid.to_string(),
            DrainTask {
                progress: rx,
                handle,
            },
        );
    }

    /// Stop and forget the drain of `uid` (finished or not) and its pod watch, if any.
    pub(super) fn cancel(&self, uid: &str) {
        if let Some(task) = self.lock().remove(uid) {
            task.handle.abort();
        }
        self.unwatch(uid);
    }

    /// Forget the drain of `uid` (it finished), leaving its pod watch.
    pub(super) fn forget_drain(&self, uid: &str) {
        if let Some(task) = self.lock().remove(uid) {
            task.handle.abort();
        }
    }

    /// Stop every drain and pod watch the way a graceful shutdown wants it: no new progress
    /// report starts, every drain and pod watch stops where it is (an eviction already sent is
    /// the API server's to finish; the next operator re-lists the node's pods and carries on),
    /// and the reports already running (a status write and its Events) finish.
    pub async fn stop_all(&self) {
        self.reports
            .close_and_wait_after(|| self.cancel_all())
            .await;
    }

    /// Stop every drain and pod watch.
    pub fn cancel_all(&self) {
        for (_, task) in self.lock().drain() {
            task.handle.abort();
        }
        for (_, handle) in self.watches().drain() {
            handle.abort();
        }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watch the pods of a `Succeeded` NodeMaintenance's node with `start`, unless watched.
    pub(super) fn watch(&self, uid: &str, start: impl FnOnce() -> JoinHandle<()>) {
        let mut watches = self.watches();
        if !watches.contains_key(uid) {
            watches.insert(uid.to_string(), start());
        }
    }

    /// Stop the pod watch of `uid`, if any.
    pub(super) fn unwatch(&self, uid: &str) {
        if let Some(handle) = self.watches().remove(uid) {
            handle.abort();
        }
    }

    /// How many pod watches of `Succeeded` NodeMaintenances run.
    pub fn watched(&self) -> usize {
        self.watches().len()
    }

    /// How many drains are running or waiting to be collected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no drain is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Drains {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// Called by a drain task: write its progress, unless the object moved on meanwhile (deleted,
/// failed, or already succeeded), in which case the reconciler is in charge.
async fn report_drain(ctx: &Context, name: &str, uid: &str, stage: Stage) {
    let nm = match nm_api(ctx).get_opt(name).await {
        Ok(Some(nm)) => nm,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(%name, error = %err, "drain could not read its NodeMaintenance");
            return;
        }
    };
    let phase = nm.status.as_ref().and_then(|s| s.phase);
    if nm.uid().as_deref() != Some(uid)
        || nm.metadata.deletion_timestamp.is_some()
        || !matches!(phase, None | Some(MaintenancePhase::Running))
    {
        return;
    }
    if let Err(err) = write_status(ctx, &nm, &stage, false).await {
        tracing::warn!(%name, error = %err, "drain could not write its progress");
    }
}

/// [`report_drain`] as a task of its own, awaited: aborting the drain (it completed, failed, or
/// its NodeMaintenance went away) must not cut a status write off from the Events it calls for,
/// or a `SucceedMaintenance` already written to status would never be published.
///
/// During a graceful stop no new report starts (the next operator reports from the cluster).
async fn report_drain_detached(ctx: &Arc<Context>, name: &str, uid: &str, stage: Stage) {
    let Some(permit) = ctx.drains.reports.begin() else {
        return;
    };
    let (ctx, name, uid) = (ctx.clone(), name.to_string(), uid.to_string());
    let report = tokio::spawn(async move {
        report_drain(&ctx, &name, &uid, stage).await;
        drop(permit);
    });
    if let Err(err) = report.await {
        tracing::warn!(error = %err, "drain progress report failed");
    }
}

/// The task that drains the node of `nm`, from `seed`. It writes its progress to status
/// itself, and its completion.
pub(super) fn start_drain(
    ctx: &Arc<Context>,
    nm: &NodeMaintenance,
    seed: DrainSeed,
) -> impl FnOnce(watch::Sender<DrainProgress>) -> JoinHandle<()> + use<> {
    let ctx = ctx.clone();
    let name = nm.name_any();
    let uid = nm.uid().unwrap_or_default();
    let node = nm.spec.node_name.clone();
    // The task outlives the reconcile that started it: it gets a span of its own, at ERROR
    // level for the reason given at `telemetry::reconcile_span`.
    let span =
        tracing::error_span!("drain", controller = metrics::NODE_MAINTENANCE, object = %name);
    move |progress| {
        tokio::spawn(
            async move {
                tracing::info!(%node, "drain started");
                let began = ctx.clock.now();
                let (latest_tx, mut latest) = watch::channel(None::<DrainReport>);
                let progress_ref = &progress;
                let ctx_ref = &ctx;
                let drain = async move {
                    let io = DrainContext {
                        client: ctx_ref.client.clone(),
                        evictions: ctx_ref.evictions.clone(),
                        clock: ctx_ref.clock.clone(),
                        metrics: &ctx_ref.telemetry.metrics,
                    };
                    let result = drain_node(
                        io,
                        &node,
                        ctx_ref.config().drain,
                        seed,
                        |report: &DrainReport| {
                            progress_ref.send_replace(DrainProgress::Running(report.clone()));
                            latest_tx.send_replace(Some(report.clone()));
                        },
                    )
                    .await;
                    drop(latest_tx);
                    (result, node)
                };
                // Progress is written while the drain goes on; reports that arrive during a write
                // are folded into the next one.
                let (name_ref, uid_ref) = (&name, &uid);
                let writer = async move {
                    while latest.changed().await.is_ok() {
                        let report = latest.borrow_and_update().clone();
                        if let Some(report) = report.filter(|r| r.listed && !r.complete) {
                            let stage = Stage::Draining {
                                drain: Some(report),
                            };
                            report_drain_detached(ctx_ref, name_ref, uid_ref, stage).await;
                        }
                    }
                };
                let ((result, node), ()) = tokio::join!(drain, writer);
                let stage = match result {
                    Ok(report) => {
                        tracing::info!(%node, "drain complete");
                        let took = (ctx.clock.now() - began).to_std().unwrap_or_default();
                        ctx.telemetry.metrics.drain_completed(took);
                        progress.send_replace(DrainProgress::Complete(report.clone()));
                        Stage::Drained {
                            drain: Some(report),
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%node, error = %err, "drain ended");
                        ctx.telemetry.metrics.failed(err.category());
                        progress.send_replace(DrainProgress::Ended(err.to_string()));
                        Stage::DrainRestarting {
                            error: err.to_string(),
                        }
                    }
                };
                report_drain_detached(&ctx, &name, &uid, stage).await;
            }
            .instrument(span),
        )
    }
}

/// The task that watches the pods bound to the node of the `Succeeded` `nm` (fieldSelector
/// `spec.nodeName`, never a cluster-wide cache) and wakes its reconciler when one a drain would
/// evict appears, which is drift.
pub(super) fn watch_pods(
    ctx: &Arc<Context>,
    nm: &NodeMaintenance,
) -> impl FnOnce() -> JoinHandle<()> + use<> {
    let wake = ctx.wake.clone();
    let client = ctx.client.clone();
    let node = nm.spec.node_name.clone();
    let target = ObjectRef::from_obj(nm);
    let span = tracing::error_span!("pod_watch", controller = metrics::NODE_MAINTENANCE, object = %nm.name_any());
    move || {
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(client);
            let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
            let mut events = watcher(pods, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            loop {
                match events.try_next().await {
                    Ok(Some(pod)) => {
                        if classify(&pod).blocks_completion() && !tolerates_unschedulable(&pod) {
                            tracing::debug!(%node, pod = %pod.name_any(), "pod bound to a node in maintenance");
                            if wake.unbounded_send(target.clone()).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => return,
                    Err(err) => {
                        tracing::debug!(%node, error = %err, "pod watch of a node in maintenance")
                    }
                }
            }
        }.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_graceful_stop_refuses_new_reports_and_waits_for_the_running_ones() {
        let reports = Arc::new(Reports::default());
        let running = reports.begin().expect("the gate is open");
        let (stopped_tx, mut stopped) = tokio::sync::oneshot::channel();
        let closing = reports.clone();
        tokio::spawn(async move {
            closing.close_and_wait_after(|| {}).await;
            let _ = stopped_tx.send(());
        });
        // Closed: no new report starts, while the running one keeps the stop waiting.
        let mut rx = reports.0.subscribe();
        rx.wait_for(|(_, closed)| *closed).await.unwrap();
        assert!(reports.begin().is_none());
        assert!(stopped.try_recv().is_err(), "the stop waits for the report");
        drop(running);
        stopped
            .await
            .expect("the stop ends once the report is done");
    }
}
