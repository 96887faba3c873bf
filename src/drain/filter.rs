//! Which pods a drain evicts, which it leaves alone and which it only waits for. Pure.
//!
//! The rules are kubectl's and medik8s's with `--ignore-daemonsets --delete-emptydir-data
//! --force`: DaemonSet pods and mirror (static) pods stay, everything else goes, including
//! unmanaged pods and pods with emptyDir volumes. Pods that already finished (`Succeeded` or
//! `Failed`) run nothing any more and count as gone. Pods that are already terminating are not
//! evicted again but the drain waits for them to disappear, since their containers may still
//! be running.

use k8s_openapi::api::core::v1::Pod;
use std::fmt;

/// The annotation the kubelet puts on the API-server copy of a static pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Namespace and name of a pod: how a drain identifies a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
}

impl PodKey {
    /// The key of a pod object (empty strings when the API left a field out).
    pub fn of(pod: &Pod) -> Self {
        PodKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// A key from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        PodKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a pod is evicted. Informative only: every reason leads to an eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictReason {
    /// Owned by a controller (ReplicaSet, StatefulSet, Job, ...) that will recreate it elsewhere.
    Managed,
    /// Has no controller: it is gone for good once evicted (kubectl's `--force`).
    Unmanaged,
    /// Uses an emptyDir volume whose data is lost (kubectl's `--delete-emptydir-data`).
    EmptyDir,
}

/// Why a pod stays on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Owned by a DaemonSet, which would recreate it on the same node at once.
    DaemonSet,
    /// The mirror of a static pod: the kubelet owns it, the API cannot remove it.
    Mirror,
}

/// Why a pod needs nothing more from the drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneReason {
    /// The pod ran to completion.
    Succeeded,
    /// The pod failed for good.
    Failed,
}

/// What a drain does with one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodDisposition {
    /// Evict it through the Eviction API.
    Evict(EvictReason),
    /// Already being deleted: do not evict again, but wait until it is gone.
    AwaitTermination,
    /// Leave it on the node; the drain does not wait for it.
    Skip(SkipReason),
    /// It has finished; it counts as gone.
    Done(DoneReason),
}

impl PodDisposition {
    /// Whether the drain is over only once this pod is gone.
    pub fn blocks_completion(self) -> bool {
        matches!(
            self,
            PodDisposition::Evict(_) | PodDisposition::AwaitTermination
        )
    }
}

/// Decide what a drain does with `pod`.
pub fn classify(pod: &Pod) -> PodDisposition {
    if is_mirror(pod) {
        return PodDisposition::Skip(SkipReason::Mirror);
    }
    if is_daemonset_pod(pod) {
        return PodDisposition::Skip(SkipReason::DaemonSet);
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => return PodDisposition::Done(DoneReason::Succeeded),
        Some("Failed") => return PodDisposition::Done(DoneReason::Failed),
        _ => {}
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PodDisposition::AwaitTermination;
    }
    if has_empty_dir(pod) {
        PodDisposition::Evict(EvictReason::EmptyDir)
    } else if controller_kind(pod).is_none() {
        PodDisposition::Evict(EvictReason::Unmanaged)
    } else {
        PodDisposition::Evict(EvictReason::Managed)
    }
}

/// The taint a cordon puts on a node (`node.kubernetes.io/unschedulable`).
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Whether `pod` tolerates the unschedulable taint (by key, or every taint with `Exists` and
/// no key), so that the scheduler may put it, or its replacement, back on a cordoned node.
pub fn tolerates_unschedulable(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
        .iter()
        .any(|t| {
            let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
            let key = t.key.as_deref().unwrap_or("");
            let exists = t.operator.as_deref() == Some("Exists");
            effect_ok && (key == UNSCHEDULABLE_TAINT || (key.is_empty() && exists))
        })
}

/// Where a pod comes from, to tell its replacement: its controller's uid, or its namespace
/// and name for a pod without a controller.
pub fn origin(pod: &Pod) -> String {
    pod.metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|o| o.controller == Some(true)))
        .map(|o| o.uid.clone())
        .unwrap_or_else(|| PodKey::of(pod).to_string())
}

fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
}

fn controller_kind(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.as_str())
}

fn is_daemonset_pod(pod: &Pod) -> bool {
    controller_kind(pod) == Some("DaemonSet")
}

fn has_empty_dir(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()))
}

/// The drain's view of a node's pods at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainPlan {
    /// Pods to evict now, sorted.
    pub evict: Vec<PodKey>,
    /// Pods already terminating that the drain waits for, sorted.
    pub terminating: Vec<PodKey>,
    /// Pods left on the node, with the reason, sorted.
    pub skipped: Vec<(PodKey, SkipReason)>,
    /// Pods that finished and count as gone, sorted.
    pub done: Vec<PodKey>,
}

impl DrainPlan {
    /// Every pod on the node, whatever happens to it.
    pub fn total(&self) -> usize {
        self.evict.len() + self.terminating.len() + self.skipped.len() + self.done.len()
    }

    /// Pods that still have to leave before the drain is over: to evict plus terminating.
    pub fn pending(&self) -> Vec<PodKey> {
        let mut all: Vec<PodKey> = self
            .evict
            .iter()
            .chain(self.terminating.iter())
            .cloned()
            .collect();
        all.sort();
        all
    }

    /// Whether nothing is left to evict or to wait for.
    pub fn is_complete(&self) -> bool {
        self.evict.is_empty() && self.terminating.is_empty()
    }
}

/// Sort a node's pods into a [`DrainPlan`].
pub fn plan_drain<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> DrainPlan {
    let mut plan = DrainPlan::default();
    for pod in pods {
        let key = PodKey::of(pod);
        match classify(pod) {
            PodDisposition::Evict(_) => plan.evict.push(key),
            PodDisposition::AwaitTermination => plan.terminating.push(key),
            PodDisposition::Skip(reason) => plan.skipped.push((key, reason)),
            PodDisposition::Done(_) => plan.done.push(key),
        }
    }
    plan.evict.sort();
    plan.terminating.sort();
    plan.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    plan.done.sort();
    plan
}

/// Percentage of the pods that had to leave which are gone, 0 to 100.
///
/// `to_leave` is how many pods had to leave in all, `pending` how many are still there. medik8s
/// computes this from a count taken once, so it goes negative when pods show up later; here it
/// is clamped, and a drain with nothing to do is 100 % done.
pub fn drain_progress(to_leave: usize, pending: usize) -> i32 {
    if to_leave == 0 {
        return 100;
    }
    let gone = to_leave.saturating_sub(pending);
    ((gone * 100) / to_leave).min(100) as i32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, PodStatus, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use proptest::prelude::*;

    /// A builder for test pods: `pod("a").owned_by("ReplicaSet")`.
    #[derive(Clone)]
    pub(crate) struct PodBuilder(Pod);

    pub(crate) fn pod(name: &str) -> PodBuilder {
        PodBuilder(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        })
    }

    impl PodBuilder {
        pub(crate) fn owned_by(mut self, kind: &str) -> Self {
            self.0.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: "owner".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]);
            self
        }
        pub(crate) fn mirror(mut self) -> Self {
            self.0
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(MIRROR_POD_ANNOTATION.into(), "x".into());
            self
        }
        pub(crate) fn empty_dir(mut self) -> Self {
            self.0.spec.as_mut().unwrap().volumes = Some(vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]);
            self
        }
        pub(crate) fn phase(mut self, phase: &str) -> Self {
            self.0.status.as_mut().unwrap().phase = Some(phase.into());
            self
        }
        pub(crate) fn terminating(mut self) -> Self {
            self.0.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            self
        }
        pub(crate) fn uid(mut self, uid: &str) -> Self {
            self.0.metadata.uid = Some(uid.into());
            self
        }
        pub(crate) fn tolerating_unschedulable(mut self) -> Self {
            self.0.spec.as_mut().unwrap().tolerations =
                Some(vec![k8s_openapi::api::core::v1::Toleration {
                    key: Some(UNSCHEDULABLE_TAINT.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }]);
            self
        }
        pub(crate) fn build(self) -> Pod {
            self.0
        }
    }

    #[test]
    fn each_kind_of_pod_gets_the_kubectl_drain_treatment() {
        let table = [
            (
                pod("rs").owned_by("ReplicaSet"),
                PodDisposition::Evict(EvictReason::Managed),
            ),
            (
                pod("sts").owned_by("StatefulSet"),
                PodDisposition::Evict(EvictReason::Managed),
            ),
            (pod("bare"), PodDisposition::Evict(EvictReason::Unmanaged)),
            (
                pod("scratch").owned_by("ReplicaSet").empty_dir(),
                PodDisposition::Evict(EvictReason::EmptyDir),
            ),
            (
                pod("ds").owned_by("DaemonSet"),
                PodDisposition::Skip(SkipReason::DaemonSet),
            ),
            (
                pod("static").mirror(),
                PodDisposition::Skip(SkipReason::Mirror),
            ),
            (
                pod("static-ds").mirror().owned_by("DaemonSet"),
                PodDisposition::Skip(SkipReason::Mirror),
            ),
            (
                pod("job").owned_by("Job").phase("Succeeded"),
                PodDisposition::Done(DoneReason::Succeeded),
            ),
            (
                pod("crashed").phase("Failed"),
                PodDisposition::Done(DoneReason::Failed),
            ),
            (
                pod("leaving").owned_by("ReplicaSet").terminating(),
                PodDisposition::AwaitTermination,
            ),
            (
                pod("ds-leaving").owned_by("DaemonSet").terminating(),
                PodDisposition::Skip(SkipReason::DaemonSet),
            ),
        ];
        for (builder, want) in table {
            let p = builder.build();
            assert_eq!(classify(&p), want, "pod {:?}", p.metadata.name);
        }
    }

    #[test]
    fn a_pod_owned_but_not_controlled_by_a_daemonset_is_evicted() {
        let mut p = pod("adopted").owned_by("DaemonSet").build();
        p.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert_eq!(classify(&p), PodDisposition::Evict(EvictReason::Unmanaged));
    }

    #[test]
    fn the_plan_lists_pending_pods_sorted_and_knows_when_it_is_complete() {
        let pods = [
            pod("b").owned_by("ReplicaSet").build(),
            pod("a").terminating().build(),
            pod("c").owned_by("DaemonSet").build(),
            pod("d").phase("Succeeded").build(),
        ];
        let plan = plan_drain(&pods);
        assert_eq!(plan.total(), 4);
        assert_eq!(
            plan.pending(),
            vec![PodKey::new("default", "a"), PodKey::new("default", "b")]
        );
        assert!(!plan.is_complete());
        let only_daemons = [pod("c").owned_by("DaemonSet").build()];
        assert!(plan_drain(&only_daemons).is_complete());
        assert!(plan_drain(&[]).is_complete());
    }

    #[test]
    fn progress_is_100_when_there_was_nothing_to_evict() {
        assert_eq!(drain_progress(0, 0), 100);
        assert_eq!(drain_progress(0, 3), 100);
        assert_eq!(drain_progress(4, 1), 75);
        assert_eq!(drain_progress(3, 3), 0);
    }

    proptest! {
        #[test]
        fn progress_never_leaves_0_to_100(to_leave in 0usize..10_000, pending in 0usize..20_000) {
            let p = drain_progress(to_leave, pending);
            prop_assert!((0..=100).contains(&p));
        }

        #[test]
        fn progress_only_grows_as_pods_leave(to_leave in 1usize..500, a in 0usize..600, b in 0usize..600) {
            let (more, fewer) = if a >= b { (a, b) } else { (b, a) };
            prop_assert!(drain_progress(to_leave, fewer) >= drain_progress(to_leave, more));
        }
    }
}
