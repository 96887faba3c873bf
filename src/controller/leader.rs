//! Leader election of `nmo run` replicas on the coordination Lease `<namespace>/nmo-leader`.
//!
//! Only the leader runs the controllers; every replica serves the webhook and the probes. The
//! rules are client-go's (controller-runtime's), which Kubernetes users know:
//!
//! - `holderIdentity` names the leader (`<hostname>_<random>`), `leaseDurationSeconds` how long
//!   the others wait before taking a lease that stopped changing, and `acquireTime`,
//!   `renewTime` and `leaseTransitions` are kept as the node lease keeps them
//!   ([`lease::lease_spec_for`] writes all of them, for both leases).
//! - A candidate never compares the lease's times with its own clock: those times come from
//!   another replica's clock. It expires a lease `leaseDurationSeconds` after *it* last saw
//!   the record change, on its monotonic clock ([`observe`]). Clock skew between replicas
//!   therefore cannot make two leaders; the price is that a candidate that starts next to an
//!   abandoned lease waits one lease duration before taking it.
//! - The leader renews every retry period. Once it has not renewed for the renew deadline,
//!   counted from when its last successful renewal was *sent*, it is no longer the leader
//!   ([`Step::Lost`]): it stops acting then, `leaseDuration - renewDeadline` before any other
//!   replica can have seen its lease expire. `nmo run` then exits non-zero so that the
//!   Deployment restarts it, as controller-runtime does.
//! - Every write is a replace carrying the resourceVersion read (or a create, which fails if
//!   the lease exists). Of two candidates racing for a free lease, or one deciding from a
//!   lagging read, exactly one write wins; the other gets 409 Conflict, reads again and
//!   decides again.
//! - A leader that shuts down releases the lease ([`LeaderElector::release`]): holder cleared,
//!   duration 1 s, so a standby takes over at its next look instead of waiting out the lease.
//!
//! [`decide`] is the pure decision (what was observed, the identity, the last renewal and
//! `now` give create, acquire, renew, wait or lost); [`LeaderElector`] does the reads and writes.
//! The node lease of [`super::lease`] is another protocol (medik8s's, with wall-clock expiry
//! shared with other operators); the two share only how a lease spec is written.

use super::lease::{self, LeaseDecision};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The name of the leader Lease, in `nmo run --namespace`.
pub const LEADER_LEASE_NAME: &str = "nmo-leader";

/// Where the leader Lease lives when neither `--namespace` nor the in-cluster service-account
/// namespace says otherwise.
pub const DEFAULT_NAMESPACE: &str = "nmo-system";

/// The file a pod's service-account mount names its namespace in.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long leases last and how often they are renewed. The defaults are controller-runtime's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTimings {
    /// How long a candidate waits, after it last saw the lease change, before taking it over.
    /// Whole seconds: it is written to `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate looks at the lease.
    pub retry_period: Duration,
}

impl Default for LeaderTimings {
    fn default() -> Self {
        LeaderTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderTimings {
    /// Check the relations the protocol relies on: all positive, `lease_duration` in whole
    /// seconds, `lease_duration > renew_deadline > retry_period`. The message names the
    /// offending setting by its config-file key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let secs = |d: Duration| crate::schedule::format_duration(chrono_of(d));
        if self.retry_period.is_zero() {
            return Err(("retryPeriod", "must be longer than 0".into()));
        }
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration.is_zero() {
            return Err((
                "leaseDuration",
                format!(
                    "{:?} is not a whole number of seconds of at least 1s: the Lease stores whole seconds",
                    self.lease_duration
                ),
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err((
                "renewDeadline",
                format!(
                    "{} must be shorter than leaseDuration ({}): the leader must stop acting before its lease can expire for the others",
                    secs(self.renew_deadline),
                    secs(self.lease_duration)
                ),
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err((
                "retryPeriod",
                format!(
                    "{} must be shorter than renewDeadline ({}): the leader must get to retry a failed renewal",
                    secs(self.retry_period),
                    secs(self.renew_deadline)
                ),
            ));
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The leader Lease as a candidate last saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Its spec as read (or as we wrote it).
    pub spec: LeaseSpec,
    /// When this candidate first saw the spec as it is, on its own monotonic clock.
    pub since: Instant,
}

impl Observed {
    /// The holder, if any (an empty identity means released).
    pub fn holder(&self) -> Option<&str> {
        self.spec
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
    }
}

/// Fold a read of the lease into what was known: `since` moves to `now` only when the spec
/// changed. A lagging read that shows an older spec also counts as a change, which only makes
/// the candidate wait longer.
pub fn observe(previous: Option<&Observed>, spec: LeaseSpec, now: Instant) -> Observed {
    match previous {
        Some(p) if p.spec == spec => p.clone(),
        _ => Observed { spec, since: now },
    }
}

/// What a candidate does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No lease exists: create it, held by us.
    Create,
    /// The lease is free (released, never held, or not renewed for its duration): take it.
    Acquire,
    /// We lead and still may: renew.
    Renew,
    /// Another replica leads: look again no later than `expires`, when its lease expires
    /// unless it renews it.
    Wait {
        /// Its identity.
        holder: String,
        /// When we may take the lease if it has not changed by then.
        expires: Instant,
    },
    /// We led and no longer may: stop acting now.
    Lost(LostReason),
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// No renewal succeeded within the renew deadline.
    RenewDeadline(Duration),
    /// The lease names another holder.
    TakenOver(String),
    /// The lease was released or deleted by someone else.
    Vanished,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::RenewDeadline(d) => write!(
                f,
                "the lease could not be renewed within the renew deadline ({})",
                crate::schedule::format_duration(chrono_of(*d))
            ),
            LostReason::TakenOver(holder) => write!(f, "the lease is now held by {holder}"),
            LostReason::Vanished => write!(f, "the lease was released or deleted by someone else"),
        }
    }
}

/// Decide the next step of the candidate `identity` from the lease as observed (`None`: it does
/// not exist), its last successful renewal (`Some` while it leads; the instant the renewal was
/// sent) and `now`.
pub fn decide(
    lease: Option<&Observed>,
    identity: &str,
    last_renewal: Option<Instant>,
    now: Instant,
    timings: &LeaderTimings,
) -> Step {
    if let Some(renewed) = last_renewal {
        if now.saturating_duration_since(renewed) >= timings.renew_deadline {
            return Step::Lost(LostReason::RenewDeadline(timings.renew_deadline));
        }
        return match lease.map(|l| l.holder()) {
            Some(Some(holder)) if holder == identity => Step::Renew,
            Some(Some(other)) => Step::Lost(LostReason::TakenOver(other.to_string())),
            Some(None) | None => Step::Lost(LostReason::Vanished),
        };
    }
    let Some(observed) = lease else {
        return Step::Create;
    };
    match observed.holder() {
        None => Step::Acquire,
        Some(holder) if holder == identity => Step::Acquire,
        Some(holder) => {
            let duration = observed
                .spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map_or(timings.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            let expires = observed.since + duration;
            if now >= expires {
                Step::Acquire
            } else {
                Step::Wait {
                    holder: holder.to_string(),
                    expires,
                }
            }
        }
    }
}

/// The identity of this replica: its host name (the pod name, in a cluster) and a random
/// suffix, so that a restarted pod with the same name is a new candidate.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "nmo".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &suffix[..12])
}

/// The namespace of the leader Lease when `--namespace` is not given: the pod's own (from its
/// service-account mount), else [`DEFAULT_NAMESPACE`].
pub fn default_namespace() -> String {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE)
        .ok()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// Failures talking to the API about the leader Lease.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Reading the lease failed.
    #[error("reading lease {lease}: {source}")]
    GetLease {
        /// `namespace/name`.
        lease: String,
        /// The API error.
        source: kube::Error,
    },
    /// Creating the lease failed.
    #[error("creating lease {lease}: {source}")]
    CreateLease {
        /// `namespace/name`.
        lease: String,
        /// The API error.
        source: kube::Error,
    },
    /// The namespace of the lease does not exist.
    #[error(
        "creating lease {lease}: namespace {namespace} does not exist (create it, or name another with --namespace)"
    )]
    MissingNamespace {
        /// `namespace/name`.
        lease: String,
        /// The namespace.
        namespace: String,
    },
    /// Writing the lease failed.
    #[error("updating lease {lease}: {source}")]
    UpdateLease {
        /// `namespace/name`.
        lease: String,
        /// The API error.
        source: kube::Error,
    },
}

impl ElectionError {
    /// A bounded name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ElectionError::GetLease { .. } => "GetLease",
            ElectionError::CreateLease { .. } => "CreateLease",
            ElectionError::MissingNamespace { .. } => "MissingNamespace",
            ElectionError::UpdateLease { .. } => "UpdateLease",
        }
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

/// What one attempt came to.
enum Attempt {
    /// We lead.
    Leading,
    /// Look again at this instant.
    WaitUntil(Instant),
    /// Our write lost a race: read again at once.
    Raced,
    /// We no longer lead.
    Lost(LostReason),
}

/// One replica's side of the election: reads and writes the leader Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    lease_ref: String,
    identity: String,
    timings: watch::Receiver<LeaderTimings>,
    /// The lease as last read or written: its resourceVersion guards our next write.
    lease: Option<Lease>,
    observed: Option<Observed>,
    /// When our last successful renewal was sent; `Some` while we lead.
    last_renewal: Option<Instant>,
    /// The holder last logged, so that a follower logs each new leader once.
    logged_holder: Option<String>,
    /// The error last logged, so that a failing API is not logged every retry period.
    logged_error: Option<String>,
}

impl LeaderElector {
    /// A candidate `identity` for the lease [`LEADER_LEASE_NAME`] in `namespace`, with the
    /// timings in force on `timings` (a config reload may change them).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        identity: impl Into<String>,
        timings: watch::Receiver<LeaderTimings>,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            lease_ref: format!("{namespace}/{LEADER_LEASE_NAME}"),
            identity: identity.into(),
            timings,
            lease: None,
            observed: None,
            last_renewal: None,
            logged_holder: None,
            logged_error: None,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// `namespace/name` of the lease.
    pub fn lease_ref(&self) -> &str {
        &self.lease_ref
    }

    /// Whether this replica leads (as far as it knows).
    pub fn is_leading(&self) -> bool {
        self.last_renewal.is_some()
    }

    fn timings(&self) -> LeaderTimings {
        *self.timings.borrow()
    }

    /// Wait until this replica leads. API failures are logged and retried every retry period.
    /// Cancel it by dropping the future (a shutdown while waiting).
    pub async fn acquire(&mut self) {
        loop {
            let timings = self.timings();
            let wait = match self.try_acquire().await {
                Ok(Attempt::Leading) => {
                    self.logged_error = None;
                    tracing::info!(identity = %self.identity, lease = %self.lease_ref, "became the leader");
                    return;
                }
                Ok(Attempt::Raced) => continue,
                Ok(Attempt::WaitUntil(expires)) => {
                    self.logged_error = None;
                    // Look every retry period (with up to 20% jitter, so that candidates do not
                    // move in step), and exactly when the leader's lease would expire.
                    let jittered = timings
                        .retry_period
                        .mul_f64(1.0 + 0.2 * super::backoff::jitter());
                    expires
                        .saturating_duration_since(Instant::now())
                        .min(jittered)
                }
                Ok(Attempt::Lost(_)) => timings.retry_period,
                Err(err) => {
                    self.log_error(&err);
                    timings.retry_period
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_acquire(&mut self) -> Result<Attempt, ElectionError> {
        let now = Instant::now();
        self.read(now).await?;
        let timings = self.timings();
        match decide(
            self.observed.as_ref(),
            &self.identity,
            self.last_renewal,
            now,
            &timings,
        ) {
            Step::Create => self.create(&timings).await,
            Step::Acquire | Step::Renew => self.write(&timings).await,
            Step::Wait { holder, expires } => {
                if self.logged_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(identity = %self.identity, leader = %holder, lease = %self.lease_ref, "another replica leads; standing by");
                    self.logged_holder = Some(holder);
                }
                Ok(Attempt::WaitUntil(expires))
            }
            Step::Lost(reason) => {
                self.last_renewal = None;
                Ok(Attempt::Lost(reason))
            }
        }
    }

    /// While leading: renew every retry period until leadership ends, and say why. A renewal
    /// that fails is retried every retry period until the renew deadline; a renewal that hangs
    /// is cut off at the deadline.
    pub async fn hold(&mut self) -> LostReason {
        loop {
            let timings = self.timings();
            let Some(renewed) = self.last_renewal else {
                return LostReason::Vanished;
            };
            tokio::time::sleep(timings.retry_period).await;
            let deadline = renewed + timings.renew_deadline;
            let attempt = tokio::time::timeout_at(deadline.into(), self.renew(&timings)).await;
            match attempt {
                Err(_elapsed) => {
                    self.last_renewal = None;
                    return LostReason::RenewDeadline(timings.renew_deadline);
                }
                Ok(Ok(Attempt::Lost(reason))) => {
                    self.last_renewal = None;
                    return reason;
                }
                Ok(Ok(_)) => self.logged_error = None,
                Ok(Err(err)) => self.log_error(&err),
            }
        }
    }

    /// One renewal: from the lease as we last wrote it; after a conflict, from a fresh read.
    async fn renew(&mut self, timings: &LeaderTimings) -> Result<Attempt, ElectionError> {
        for _ in 0..2 {
            let now = Instant::now();
            match decide(
                self.observed.as_ref(),
                &self.identity,
                self.last_renewal,
                now,
                timings,
            ) {
                Step::Renew => {}
                Step::Lost(reason) => return Ok(Attempt::Lost(reason)),
                other => {
                    // Not reachable while leading; treat as lost rather than act on it.
                    tracing::warn!(?other, "unexpected leader election step while leading");
                    return Ok(Attempt::Lost(LostReason::Vanished));
                }
            }
            match self.write(timings).await? {
                Attempt::Raced => self.read(Instant::now()).await?,
                done => return Ok(done),
            }
        }
        Ok(Attempt::Raced)
    }

    /// Give the lease up if it is ours: holder cleared and a one-second duration (as client-go
    /// does), so that a standby takes over at its next look. Also right for a candidate
    /// stopped while its acquiring write was in flight: the write may have landed, so the lease
    /// is read again when the copy at hand does not name us. Returns whether it was released.
    pub async fn release(&mut self) -> Result<bool, ElectionError> {
        self.last_renewal = None;
        let mut fresh = false;
        for _ in 0..3 {
            let ours = self
                .lease
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str());
            let Some(mut lease) = self.lease.clone().filter(|_| ours) else {
                if fresh {
                    return Ok(false);
                }
                self.read(Instant::now()).await?;
                fresh = true;
                continue;
            };
            let now = MicroTime(crate::api::to_time(chrono::Utc::now()).0);
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(String::new());
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            match self
                .api
                .replace(LEADER_LEASE_NAME, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => {
                    self.lease = Some(written);
                    tracing::info!(identity = %self.identity, lease = %self.lease_ref, "released the leader lease");
                    return Ok(true);
                }
                Err(source) if is_conflict(&source) => {
                    self.read(Instant::now()).await?;
                    fresh = true;
                }
                Err(source) => {
                    return Err(ElectionError::UpdateLease {
                        lease: self.lease_ref.clone(),
                        source,
                    });
                }
            }
        }
        Ok(false)
    }

    async fn read(&mut self, now: Instant) -> Result<(), ElectionError> {
        let lease = self
            .api
            .get_opt(LEADER_LEASE_NAME)
            .await
            .map_err(|source| ElectionError::GetLease {
                lease: self.lease_ref.clone(),
                source,
            })?;
        self.observed = lease.as_ref().map(|l| {
            observe(
                self.observed.as_ref(),
                l.spec.clone().unwrap_or_default(),
                now,
            )
        });
        self.lease = lease;
        Ok(())
    }

    fn spec_for(&self, timings: &LeaderTimings, decision: &LeaseDecision) -> LeaseSpec {
        lease::lease_spec_for(
            self.lease.as_ref().and_then(|l| l.spec.as_ref()),
            decision,
            &self.identity,
            chrono::Duration::seconds(i64::from(timings.lease_duration_seconds())),
            chrono::Utc::now(),
        )
    }

    /// Take or renew the lease we read, guarded by its resourceVersion.
    async fn write(&mut self, timings: &LeaderTimings) -> Result<Attempt, ElectionError> {
        let Some(mut lease) = self.lease.clone() else {
            return self.create(timings).await;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        let decision = LeaseDecision::Take {
            acquire: !ours || self.last_renewal.is_none(),
        };
        lease.spec = Some(self.spec_for(timings, &decision));
        let sent = Instant::now();
        match self
            .api
            .replace(LEADER_LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => Ok(self.wrote(written, sent)),
            Err(source) if is_conflict(&source) => Ok(Attempt::Raced),
            Err(source) => Err(ElectionError::UpdateLease {
                lease: self.lease_ref.clone(),
                source,
            }),
        }
    }

    async fn create(&mut self, timings: &LeaderTimings) -> Result<Attempt, ElectionError> {
        let namespace = self.api.namespace().unwrap_or_default().to_string();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEADER_LEASE_NAME.to_string()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(lease::lease_spec_for(
                None,
                &LeaseDecision::Create,
                &self.identity,
                chrono::Duration::seconds(i64::from(timings.lease_duration_seconds())),
                chrono::Utc::now(),
            )),
        };
        let sent = Instant::now();
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => Ok(self.wrote(written, sent)),
            // Another candidate created it first.
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.code == 409 => {
                Ok(Attempt::Raced)
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Err(ElectionError::MissingNamespace {
                lease: self.lease_ref.clone(),
                namespace,
            }),
            Err(source) => Err(ElectionError::CreateLease {
                lease: self.lease_ref.clone(),
                source,
            }),
        }
    }

    fn wrote(&mut self, written: Lease, sent: Instant) -> Attempt {
        self.observed = Some(observe(
            self.observed.as_ref(),
            written.spec.clone().unwrap_or_default(),
            sent,
        ));
        self.lease = Some(written);
        self.last_renewal = Some(sent);
        Attempt::Leading
    }

    fn log_error(&mut self, err: &ElectionError) {
        let message = err.to_string();
        if self.logged_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(identity = %self.identity, category = err.category(), error = %message, "leader election: API call failed; retrying");
            self.logged_error = Some(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "nmo-a_1";
    const OTHER: &str = "nmo-b_2";

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn held(holder: &str, duration: i32, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                crate::api::to_time(
                    chrono::DateTime::from_timestamp(1_800_000_000 + renewed, 0).unwrap(),
                )
                .0,
            )),
            ..Default::default()
        }
    }

    fn seen(spec: LeaseSpec, since: Instant) -> Observed {
        Observed { spec, since }
    }

    #[test]
    fn the_decision_table() {
        let t0 = Instant::now();
        let timings = LeaderTimings::default();
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            ..Default::default()
        };
        let never_held = LeaseSpec::default();
        // (name, lease, last renewal, now, expected)
        type Row = (
            &'static str,
            Option<Observed>,
            Option<Instant>,
            Instant,
            Step,
        );
        let table: Vec<Row> = vec![
            ("a missing lease is created", None, None, t0, Step::Create),
            (
                "a released lease is taken at once",
                Some(seen(released.clone(), t0)),
                None,
                t0,
                Step::Acquire,
            ),
            (
                "a lease nobody ever held is taken",
                Some(seen(never_held, t0)),
                None,
                t0,
                Step::Acquire,
            ),
            (
                "a live lease of another replica is waited for until it would expire",
                Some(seen(held(OTHER, 15, 0), t0)),
                None,
                t0 + s(3),
                Step::Wait {
                    holder: OTHER.into(),
                    expires: t0 + s(15),
                },
            ),
            (
                "its own duration counts, not ours",
                Some(seen(held(OTHER, 40, 0), t0)),
                None,
                t0 + s(20),
                Step::Wait {
                    holder: OTHER.into(),
                    expires: t0 + s(40),
                },
            ),
            (
                "a lease unchanged for its duration since we saw it is taken over",
                Some(seen(held(OTHER, 15, 0), t0)),
                None,
                t0 + s(15),
                Step::Acquire,
            ),
            (
                "a lease naming us while we do not lead (a restart with the same identity) is taken",
                Some(seen(held(ME, 15, 0), t0)),
                None,
                t0,
                Step::Acquire,
            ),
            (
                "the leader renews its lease",
                Some(seen(held(ME, 15, 0), t0)),
                Some(t0),
                t0 + s(2),
                Step::Renew,
            ),
            (
                "the leader renews right up to its deadline",
                Some(seen(held(ME, 15, 0), t0)),
                Some(t0),
                t0 + s(10) - Duration::from_millis(1),
                Step::Renew,
            ),
            (
                "a leader without a renewal for the renew deadline has lost",
                Some(seen(held(ME, 15, 0), t0)),
                Some(t0),
                t0 + s(10),
                Step::Lost(LostReason::RenewDeadline(s(10))),
            ),
            (
                "a leader whose lease names another holder has lost",
                Some(seen(held(OTHER, 15, 0), t0)),
                Some(t0),
                t0 + s(1),
                Step::Lost(LostReason::TakenOver(OTHER.into())),
            ),
            (
                "a leader whose lease was released by someone else has lost",
                Some(seen(released, t0)),
                Some(t0),
                t0 + s(1),
                Step::Lost(LostReason::Vanished),
            ),
            (
                "a leader whose lease was deleted has lost",
                None,
                Some(t0),
                t0 + s(1),
                Step::Lost(LostReason::Vanished),
            ),
        ];
        for (name, lease, renewal, now, want) in table {
            assert_eq!(
                decide(lease.as_ref(), ME, renewal, now, &timings),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn the_leader_stops_before_any_candidate_can_take_its_lease() {
        // The leader's last good renewal was sent at t0; a candidate saw it land no earlier.
        // The leader has lost at t0 + renewDeadline; the candidate acquires no earlier than
        // t0 + leaseDuration.
        let t0 = Instant::now();
        let timings = LeaderTimings::default();
        let lease = seen(held(ME, 15, 0), t0);
        let mut lost_at = None;
        let mut taken_at = None;
        for ms in (0..20_000).step_by(100) {
            let now = t0 + Duration::from_millis(ms);
            if lost_at.is_none()
                && matches!(
                    decide(Some(&lease), ME, Some(t0), now, &timings),
                    Step::Lost(_)
                )
            {
                lost_at = Some(ms);
            }
            if taken_at.is_none()
                && decide(Some(&lease), OTHER, None, now, &timings) == Step::Acquire
            {
                taken_at = Some(ms);
            }
        }
        assert_eq!(lost_at, Some(10_000));
        assert_eq!(taken_at, Some(15_000));
    }

    #[test]
    fn observing_keeps_the_first_sighting_until_the_lease_changes() {
        let t0 = Instant::now();
        let first = observe(None, held(OTHER, 15, 0), t0);
        assert_eq!(first.since, t0);
        let same = observe(Some(&first), held(OTHER, 15, 0), t0 + s(5));
        assert_eq!(
            same.since, t0,
            "an unchanged lease keeps its first sighting"
        );
        let renewed = observe(Some(&same), held(OTHER, 15, 2), t0 + s(6));
        assert_eq!(renewed.since, t0 + s(6), "a renewal restarts the wait");
        let lagging = observe(Some(&renewed), held(OTHER, 15, 0), t0 + s(7));
        assert_eq!(
            lagging.since,
            t0 + s(7),
            "a lagging read (an older renewal) only makes the wait longer"
        );
    }

    #[test]
    fn timings_must_let_the_leader_stop_before_its_lease_expires() {
        let ok = LeaderTimings::default();
        assert_eq!(ok.check(), Ok(()));
        let table = [
            (
                LeaderTimings {
                    renew_deadline: s(15),
                    ..ok
                },
                "renewDeadline",
            ),
            (
                LeaderTimings {
                    retry_period: s(10),
                    ..ok
                },
                "retryPeriod",
            ),
            (
                LeaderTimings {
                    retry_period: Duration::ZERO,
                    ..ok
                },
                "retryPeriod",
            ),
            (
                LeaderTimings {
                    lease_duration: Duration::from_millis(15_500),
                    ..ok
                },
                "leaseDuration",
            ),
        ];
        for (timings, key) in table {
            assert_eq!(timings.check().unwrap_err().0, key, "{timings:?}");
        }
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = default_identity();
        let b = default_identity();
        assert_ne!(a, b);
        assert!(a.contains('_'), "{a}");
    }
}
