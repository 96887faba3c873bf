//! The node lease shared with the medik8s operators (Node Health Check, Self Node Remediation).
//!
//! Whoever holds the coordination Lease `medik8s-leases/node-<node>` owns the node. The field
//! semantics are medik8s's (`medik8s/common/pkg/lease`): `holderIdentity`,
//! `leaseDurationSeconds`, `acquireTime` (set when the holder changes or a lapsed lease is taken
//! again, with `leaseTransitions` incremented), `renewTime` (set on every renewal). A lease is
//! expired once `renewTime + leaseDurationSeconds` has passed; an expired lease can be taken by
//! anyone. Releasing deletes the lease, as medik8s does, but only when we hold it.
//!
//! Unlike medik8s, nmo renews its lease before it expires: [`decide_lease`] says when.

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

/// The namespace of the node leases.
pub const LEASE_NAMESPACE: &str = "medik8s-leases";

/// The holder identity nmo writes, the same as medik8s NMO, so that NHC and SNR see the node as
/// held by node maintenance whichever of the two operators runs.
pub const LEASE_HOLDER: &str = "node-maintenance";

/// The lease name for a node: `node-<nodeName>`.
pub fn lease_name(node: &str) -> String {
    format!("node-{node}")
}

/// What to do about the node lease, decided from the lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease exists: create it, held by us.
    Create,
    /// Write the lease as ours now. `acquire` is set when ownership (re)starts: the holder
    /// changes or our lease had lapsed, which sets `acquireTime` and bumps `leaseTransitions`.
    Take {
        /// Ownership (re)starts with this write.
        acquire: bool,
    },
    /// We hold it and it needs no renewal before `renew_at`.
    Keep {
        /// When to renew: half-way through the lease.
        renew_at: DateTime<Utc>,
    },
    /// Someone else holds a lease that has not expired.
    HeldByOther {
        /// Their holder identity.
        holder: String,
        /// When their lease expires if they do not renew it.
        expires: DateTime<Utc>,
    },
}

/// When a lease expires: `renewTime` (or `acquireTime`) plus `leaseDurationSeconds`. A lease
/// without either time or duration counts as expired.
pub fn lease_expiry(spec: &LeaseSpec) -> Option<DateTime<Utc>> {
    let last = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let seconds = spec.lease_duration_seconds?;
    Some(micro_to_chrono(last) + Duration::seconds(i64::from(seconds)))
}

/// When a lease we hold should be renewed: half-way through its duration.
pub fn renewal_due(spec: &LeaseSpec, duration: Duration) -> Option<DateTime<Utc>> {
    let last = spec.renew_time.as_ref()?;
    Some(micro_to_chrono(last) + duration / 2)
}

/// Decide what to do about the lease `current` (None: it does not exist) for `holder` wanting
/// it for `duration` at `now`.
pub fn decide_lease(
    current: Option<&LeaseSpec>,
    holder: &str,
    duration: Duration,
    now: DateTime<Utc>,
) -> LeaseDecision {
    let Some(spec) = current else {
        return LeaseDecision::Create;
    };
    let expired = lease_expiry(spec).is_none_or(|e| e <= now);
    match spec.holder_identity.as_deref() {
        Some(h) if h == holder => {
            if expired {
                return LeaseDecision::Take { acquire: true };
            }
            let wants = i32::try_from(duration.num_seconds()).unwrap_or(i32::MAX);
            match renewal_due(spec, duration) {
                Some(due) if due > now && spec.lease_duration_seconds == Some(wants) => {
                    LeaseDecision::Keep { renew_at: due }
                }
                _ => LeaseDecision::Take { acquire: false },
            }
        }
        Some(other) if !other.is_empty() && !expired => LeaseDecision::HeldByOther {
            holder: other.to_string(),
            expires: lease_expiry(spec).unwrap_or(now),
        },
        _ => LeaseDecision::Take { acquire: true },
    }
}

/// The lease spec after we write it according to `decision`.
pub fn lease_spec_for(
    current: Option<&LeaseSpec>,
    decision: &LeaseDecision,
    holder: &str,
    duration: Duration,
    now: DateTime<Utc>,
) -> LeaseSpec {
    let mut spec = current.cloned().unwrap_or_default();
    let now_micro = MicroTime(crate::api::to_time(now).0);
    let acquire = match decision {
        LeaseDecision::Create => {
            spec.lease_transitions = Some(0);
            true
        }
        LeaseDecision::Take { acquire } => {
            if *acquire {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            *acquire
        }
        LeaseDecision::Keep { .. } | LeaseDecision::HeldByOther { .. } => return spec,
    };
    if acquire {
        spec.acquire_time = Some(now_micro.clone());
    }
    spec.holder_identity = Some(holder.to_string());
    spec.lease_duration_seconds = Some(i32::try_from(duration.num_seconds()).unwrap_or(i32::MAX));
    spec.renew_time = Some(now_micro);
    spec
}

fn micro_to_chrono(t: &MicroTime) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.0.as_microsecond()).unwrap_or_default()
}

/// Who holds the node after [`ensure_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseHold {
    /// We hold it; renew it at `renew_at`.
    Ours {
        /// When to come back and renew.
        renew_at: DateTime<Utc>,
    },
    /// Someone else holds it until `expires`.
    Theirs {
        /// Their holder identity.
        holder: String,
        /// When their lease lapses unless renewed.
        expires: DateTime<Utc>,
    },
}

/// Failures talking to the API about the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Reading the lease failed.
    #[error("reading lease {LEASE_NAMESPACE}/{name}: {source}")]
    GetLease {
        /// Lease name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Creating the lease failed.
    #[error("creating lease {LEASE_NAMESPACE}/{name}: {source}")]
    CreateLease {
        /// Lease name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Renewing or taking the lease failed.
    #[error("updating lease {LEASE_NAMESPACE}/{name}: {source}")]
    UpdateLease {
        /// Lease name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Creating the lease namespace failed.
    #[error("creating namespace {LEASE_NAMESPACE}: {source}")]
    CreateNamespace {
        /// The API error.
        source: kube::Error,
    },
    /// Deleting our lease failed.
    #[error("releasing lease {LEASE_NAMESPACE}/{name}: {source}")]
    ReleaseLease {
        /// Lease name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

impl LeaseError {
    /// A bounded name for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            LeaseError::GetLease { .. } => "GetLease",
            LeaseError::CreateLease { .. } => "CreateLease",
            LeaseError::UpdateLease { .. } => "UpdateLease",
            LeaseError::CreateNamespace { .. } => "CreateNamespace",
            LeaseError::ReleaseLease { .. } => "ReleaseLease",
        }
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Take or renew the lease of `node` for `holder`, creating the lease (and its namespace) when
/// missing. Writes are optimistic: a conflicting write is re-read and decided again once.
pub async fn ensure_lease(
    client: &kube::Client,
    node: &Node,
    holder: &str,
    duration: Duration,
    now: DateTime<Utc>,
) -> Result<LeaseHold, LeaseError> {
    let name = lease_name(&node.metadata.name.clone().unwrap_or_default());
    let current = read_lease(client, &name).await?;
    write_lease(client, node, holder, duration, now, current).await
}

/// Read the lease `name` (None: it does not exist).
pub async fn read_lease(client: &kube::Client, name: &str) -> Result<Option<Lease>, LeaseError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    api.get_opt(name)
        .await
        .map_err(|source| LeaseError::GetLease {
            name: name.to_string(),
            source,
        })
}

/// When `holder` last renewed the lease `spec`: its `renewTime` (or `acquireTime`) while
/// `holder` holds it, `None` when someone else does or nobody ever renewed it.
pub fn last_renewal(spec: Option<&LeaseSpec>, holder: &str) -> Option<DateTime<Utc>> {
    let spec = spec?;
    if spec.holder_identity.as_deref() != Some(holder) {
        return None;
    }
    spec.renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(micro_to_chrono)
}

/// [`ensure_lease`] from the lease `current` as already read: the first write is decided from
/// it; a conflict re-reads and decides once more.
pub async fn write_lease(
    client: &kube::Client,
    node: &Node,
    holder: &str,
    duration: Duration,
    now: DateTime<Utc>,
    current: Option<Lease>,
) -> Result<LeaseHold, LeaseError> {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let name = lease_name(&node_name);
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let mut current = current;
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts > 1 {
            current = read_lease(client, &name).await?;
        }
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide_lease(spec, holder, duration, now);
        let new_spec = lease_spec_for(spec, &decision, holder, duration, now);
        let renew_at = now + duration / 2;
        let result = match (&decision, current.take()) {
            (LeaseDecision::Keep { renew_at }, _) => {
                return Ok(LeaseHold::Ours {
                    renew_at: *renew_at,
                });
            }
            (LeaseDecision::HeldByOther { holder, expires }, _) => {
                return Ok(LeaseHold::Theirs {
                    holder: holder.clone(),
                    expires: *expires,
                });
            }
            (_, None) => create_lease(client, &api, node, &name, new_spec).await,
            (_, Some(mut lease)) => {
                lease.spec = Some(new_spec);
                // `replace` carries the resourceVersion we read: a concurrent writer makes it 409.
                api.replace(&name, &post_params(), &lease)
                    .await
                    .map(|_| ())
                    .map_err(|source| LeaseError::UpdateLease {
                        name: name.clone(),
                        source,
                    })
            }
        };
        match result {
            Ok(()) => return Ok(LeaseHold::Ours { renew_at }),
            Err(
                LeaseError::UpdateLease { source, .. } | LeaseError::CreateLease { source, .. },
            ) if attempts < 2 && (is_status(&source, 409)) => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn create_lease(
    client: &kube::Client,
    api: &Api<Lease>,
    node: &Node,
    name: &str,
    spec: LeaseSpec,
) -> Result<(), LeaseError> {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            // Like medik8s: the Node owns its lease, so a removed node leaves no lease behind.
            owner_references: node.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.metadata.name.clone().unwrap_or_default(),
                    uid,
                    controller: None,
                    block_owner_deletion: None,
                }]
            }),
            ..Default::default()
        },
        spec: Some(spec),
    };
    match api.create(&post_params(), &lease).await {
        Ok(_) => Ok(()),
        Err(source) if is_status(&source, 404) => {
            create_namespace(client).await?;
            api.create(&post_params(), &lease)
                .await
                .map(|_| ())
                .map_err(|source| LeaseError::CreateLease {
                    name: name.to_string(),
                    source,
                })
        }
        // Someone created it between our read and our write: report a conflict, re-read.
        Err(source) => Err(LeaseError::CreateLease {
            name: name.to_string(),
            source: if matches!(&source, kube::Error::Api(s) if s.is_already_exists()) {
                kube::Error::Api(
                    kube::core::Status::failure("lease created concurrently", "Conflict")
                        .with_code(409)
                        .boxed(),
                )
            } else {
                source
            },
        }),
    }
}

/// Create and replace with nmo's field manager, as every other write of the controllers.
fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(crate::controller::node::FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

async fn create_namespace(client: &kube::Client) -> Result<(), LeaseError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(LEASE_NAMESPACE.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&post_params(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() || s.code == 409 => Ok(()),
        Err(source) => Err(LeaseError::CreateNamespace { source }),
    }
}

/// What [`release_lease`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// Our lease was deleted.
    Deleted,
    /// There was no lease.
    Absent,
    /// Someone else holds it; it was left alone.
    HeldByOther(String),
}

/// Release the node lease if we hold it, by deleting it with a resourceVersion precondition so
/// that a lease someone else took in the meantime is never deleted.
pub async fn release_lease(
    client: &kube::Client,
    node_name: &str,
    holder: &str,
) -> Result<Released, LeaseError> {
    let name = lease_name(node_name);
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let Some(lease) = api
        .get_opt(&name)
        .await
        .map_err(|source| LeaseError::GetLease {
            name: name.clone(),
            source,
        })?
    else {
        return Ok(Released::Absent);
    };
    match lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
    {
        Some(h) if h != holder && !h.is_empty() => return Ok(Released::HeldByOther(h.to_string())),
        _ => {}
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: lease.metadata.uid.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(Released::Deleted),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Released::Absent),
        Err(source) => Err(LeaseError::ReleaseLease { name, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(secs)
    }

    fn micro(at: DateTime<Utc>) -> MicroTime {
        MicroTime(crate::api::to_time(at).0)
    }

    fn held(holder: &str, renewed: i64, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(micro(t(0))),
            renew_time: Some(micro(t(renewed))),
            lease_transitions: Some(0),
            ..Default::default()
        }
    }

    const HOUR: i64 = 3600;

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(
            decide_lease(None, LEASE_HOLDER, Duration::seconds(HOUR), t(0)),
            LeaseDecision::Create
        );
    }

    #[test]
    fn our_fresh_lease_is_kept_until_half_way_then_renewed() {
        let ours = held(LEASE_HOLDER, 0, 3600);
        assert_eq!(
            decide_lease(Some(&ours), LEASE_HOLDER, Duration::seconds(HOUR), t(100)),
            LeaseDecision::Keep { renew_at: t(1800) }
        );
        assert_eq!(
            decide_lease(Some(&ours), LEASE_HOLDER, Duration::seconds(HOUR), t(1800)),
            LeaseDecision::Take { acquire: false }
        );
    }

    #[test]
    fn our_lapsed_lease_is_acquired_again() {
        let ours = held(LEASE_HOLDER, 0, 3600);
        assert_eq!(
            decide_lease(Some(&ours), LEASE_HOLDER, Duration::seconds(HOUR), t(3601)),
            LeaseDecision::Take { acquire: true }
        );
    }

    #[test]
    fn our_lease_with_another_duration_is_rewritten_with_ours() {
        let ours = held(LEASE_HOLDER, 0, 60);
        assert_eq!(
            decide_lease(Some(&ours), LEASE_HOLDER, Duration::seconds(HOUR), t(1)),
            LeaseDecision::Take { acquire: false }
        );
    }

    #[test]
    fn a_live_lease_of_another_holder_is_respected() {
        let theirs = held("self-node-remediation", 0, 600);
        assert_eq!(
            decide_lease(Some(&theirs), LEASE_HOLDER, Duration::seconds(HOUR), t(599)),
            LeaseDecision::HeldByOther {
                holder: "self-node-remediation".into(),
                expires: t(600)
            }
        );
    }

    #[test]
    fn an_expired_or_unheld_lease_is_taken_over() {
        let theirs = held("self-node-remediation", 0, 600);
        assert_eq!(
            decide_lease(Some(&theirs), LEASE_HOLDER, Duration::seconds(HOUR), t(600)),
            LeaseDecision::Take { acquire: true }
        );
        let unheld = LeaseSpec::default();
        assert_eq!(
            decide_lease(Some(&unheld), LEASE_HOLDER, Duration::seconds(HOUR), t(0)),
            LeaseDecision::Take { acquire: true }
        );
    }

    #[test]
    fn taking_over_sets_acquire_time_and_counts_a_transition() {
        let theirs = held("nhc", 0, 600);
        let d = LeaseDecision::Take { acquire: true };
        let spec = lease_spec_for(
            Some(&theirs),
            &d,
            LEASE_HOLDER,
            Duration::seconds(HOUR),
            t(700),
        );
        assert_eq!(spec.holder_identity.as_deref(), Some(LEASE_HOLDER));
        assert_eq!(spec.lease_duration_seconds, Some(3600));
        assert_eq!(spec.acquire_time, Some(micro(t(700))));
        assert_eq!(spec.renew_time, Some(micro(t(700))));
        assert_eq!(spec.lease_transitions, Some(1));
    }

    #[test]
    fn renewing_moves_only_the_renew_time() {
        let ours = held(LEASE_HOLDER, 0, 3600);
        let d = LeaseDecision::Take { acquire: false };
        let spec = lease_spec_for(
            Some(&ours),
            &d,
            LEASE_HOLDER,
            Duration::seconds(HOUR),
            t(1900),
        );
        assert_eq!(spec.acquire_time, Some(micro(t(0))));
        assert_eq!(spec.renew_time, Some(micro(t(1900))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn a_created_lease_is_ours_from_now() {
        let spec = lease_spec_for(
            None,
            &LeaseDecision::Create,
            LEASE_HOLDER,
            Duration::seconds(HOUR),
            t(5),
        );
        assert_eq!(spec.holder_identity.as_deref(), Some(LEASE_HOLDER));
        assert_eq!(spec.acquire_time, Some(micro(t(5))));
        assert_eq!(lease_expiry(&spec), Some(t(5 + HOUR)));
    }

    #[test]
    fn lease_names_follow_medik8s() {
        assert_eq!(lease_name("worker-1"), "node-worker-1");
    }
}
