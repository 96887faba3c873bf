//! Typed, kstatus-compatible conditions shared by both kinds.
//!
//! On the wire a condition is a plain `metav1.Condition`. These helpers keep the Rust side typed
//! and implement the kstatus rule that `lastTransitionTime` changes only when `status` changes.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::fmt;

/// The condition types nmo writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// NodeMaintenance: maintenance is in effect. MaintenanceWindow: spec valid, schedule followed.
    Ready,
    /// Present only while work is in progress (draining, or nodes being maintained).
    Reconciling,
    /// Present only when progress is impossible without a change (Failed, invalid spec, ...).
    Stalled,
    /// MaintenanceWindow only: a window is open now.
    WindowOpen,
    /// MaintenanceWindow with `spec.healthGate` only: True while new starts may go ahead.
    HealthGate,
}

impl ConditionType {
    /// The wire name of the condition type.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::WindowOpen => "WindowOpen",
            ConditionType::HealthGate => "HealthGate",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// The wire value of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Find a condition by type.
pub fn find(conditions: &[Condition], kind: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == kind.as_str())
}

/// Whether the condition of this type is present with status True.
pub fn is_true(conditions: &[Condition], kind: ConditionType) -> bool {
    find(conditions, kind).is_some_and(|c| c.status == "True")
}

/// Set a condition, keeping `lastTransitionTime` when the status did not change.
///
/// Returns the new list; the input order is kept and new types are appended, so that writing
/// the same conditions twice produces byte-identical status (no churn).
pub fn set(
    conditions: &[Condition],
    kind: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut out = conditions.to_vec();
    let fresh = |transition: Time| Condition {
        type_: kind.as_str().to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: transition,
    };
    match out.iter_mut().find(|c| c.type_ == kind.as_str()) {
        Some(existing) => {
            let transition = if existing.status == status.as_str() {
                existing.last_transition_time.clone()
            } else {
                crate::api::to_time(now)
            };
            *existing = fresh(transition);
        }
        None => out.push(fresh(crate::api::to_time(now))),
    }
    out
}

/// Remove a condition type (kstatus: `Reconciling` and `Stalled` are absent when not in effect).
pub fn remove(conditions: &[Condition], kind: ConditionType) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| c.type_ != kind.as_str())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn transition_time_is_kept_when_status_is_unchanged() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let t1 = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        let c = set(
            &[],
            ConditionType::Ready,
            ConditionStatus::True,
            "A",
            "a",
            Some(1),
            t0,
        );
        let c = set(
            &c,
            ConditionType::Ready,
            ConditionStatus::True,
            "B",
            "b",
            Some(2),
            t1,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(crate::api::from_time(&c[0].last_transition_time), t0);
        assert_eq!(c[0].reason, "B");
        let c = set(
            &c,
            ConditionType::Ready,
            ConditionStatus::False,
            "C",
            "c",
            Some(2),
            t1,
        );
        assert_eq!(crate::api::from_time(&c[0].last_transition_time), t1);
    }

    #[test]
    fn remove_drops_only_the_named_type() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let c = set(
            &[],
            ConditionType::Ready,
            ConditionStatus::True,
            "A",
            "a",
            None,
            t0,
        );
        let c = set(
            &c,
            ConditionType::Stalled,
            ConditionStatus::True,
            "A",
            "a",
            None,
            t0,
        );
        let c = remove(&c, ConditionType::Stalled);
        assert_eq!(c.len(), 1);
        assert!(is_true(&c, ConditionType::Ready));
    }
}
