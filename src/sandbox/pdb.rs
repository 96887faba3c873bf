//! PodDisruptionBudget arithmetic, as the disruption controller does it. Pure.

use serde_json::Value;

/// What the budget needs to know about one matching pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Ready and not terminating.
    pub healthy: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// The uid of its controller, when the controller's scale is known.
    pub scaled_controller: Option<String>,
}

/// The computed budget status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Pods the controllers want.
    pub expected_pods: i64,
    /// Healthy pods.
    pub current_healthy: i64,
    /// Healthy pods needed.
    pub desired_healthy: i64,
    /// Evictions allowed now.
    pub disruptions_allowed: i64,
}

/// An `IntOrString` field: an integer or a percentage of `total`, rounded up.
pub fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.trim().parse::<i64>().ok().map(|p| (p * total + 99) / 100),
            None => s.trim().parse().ok(),
        },
        _ => None,
    }
}

/// Compute a budget from the PDB spec, its matching pods and the scales of their
/// controllers (`(controller uid, replicas)`).
pub fn budget(spec: &Value, pods: &[PodView], scales: &[(String, i64)]) -> Budget {
    let mut expected: i64 = scales.iter().map(|(_, r)| *r).sum();
    expected += pods
        .iter()
        .filter(|p| p.scaled_controller.is_none() && !p.terminating)
        .count() as i64;
    let healthy = pods.iter().filter(|p| p.healthy).count() as i64;
    let desired = if let Some(min) = spec.get("minAvailable").filter(|v| !v.is_null()) {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        0
    };
    Budget {
        expected_pods: expected,
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: (healthy - desired).max(0),
    }
}

/// Is a pod Ready (its `Ready` condition True) and not terminating?
pub fn pod_healthy(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

/// The 429 cause message of a blocked eviction.
pub fn blocked_message(name: &str, b: &Budget) -> String {
    format!(
        "The disruption budget {name} needs {} healthy pods and has {} currently",
        b.desired_healthy, b.current_healthy
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods(healthy: usize, terminating: usize, rs: Option<&str>) -> Vec<PodView> {
        let mut v = vec![];
        for _ in 0..healthy {
            v.push(PodView {
                healthy: true,
                terminating: false,
                scaled_controller: rs.map(str::to_string),
            });
        }
        for _ in 0..terminating {
            v.push(PodView {
                healthy: false,
                terminating: true,
                scaled_controller: rs.map(str::to_string),
            });
        }
        v
    }

    #[test]
    fn budgets_follow_min_available_and_max_unavailable() {
        let scale = vec![("rs".to_string(), 3)];
        let cases = [
            (json!({"minAvailable": 2}), pods(3, 0, Some("rs")), 1),
            (json!({"minAvailable": 3}), pods(3, 0, Some("rs")), 0),
            (json!({"minAvailable": "50%"}), pods(3, 0, Some("rs")), 1),
            (json!({"maxUnavailable": 1}), pods(3, 0, Some("rs")), 1),
            // One evicted pod still counts as expected: nothing more may go.
            (json!({"maxUnavailable": 1}), pods(2, 1, Some("rs")), 0),
            (json!({"maxUnavailable": "34%"}), pods(3, 0, Some("rs")), 2),
            (json!({}), pods(3, 0, Some("rs")), 3),
        ];
        for (spec, p, want) in cases {
            assert_eq!(
                budget(&spec, &p, &scale).disruptions_allowed,
                want,
                "{spec}"
            );
        }
    }

    #[test]
    fn pods_without_a_known_controller_count_themselves() {
        let b = budget(&json!({"maxUnavailable": 1}), &pods(2, 1, None), &[]);
        assert_eq!(
            (b.expected_pods, b.current_healthy, b.desired_healthy),
            (2, 2, 1)
        );
        assert_eq!(
            blocked_message("web", &b),
            "The disruption budget web needs 1 healthy pods and has 2 currently"
        );
    }

    #[test]
    fn a_pod_is_healthy_when_ready_and_not_terminating() {
        let ready = json!({"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(pod_healthy(&ready));
        let mut term = ready.clone();
        term["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(!pod_healthy(&term));
        assert!(!pod_healthy(&json!({"status": {"phase": "Pending"}})));
    }

    proptest::proptest! {
        #[test]
        fn allowed_disruptions_never_exceed_healthy_pods_nor_go_negative(
            healthy in 0usize..20, terminating in 0usize..5, replicas in 0i64..25,
            min in proptest::option::of(0i64..25), max_pct in proptest::option::of(0i64..101),
        ) {
            let spec = match (min, max_pct) {
                (Some(m), _) => json!({"minAvailable": m}),
                (None, Some(p)) => json!({"maxUnavailable": format!("{p}%")}),
                (None, None) => json!({}),
            };
            let b = budget(&spec, &pods(healthy, terminating, Some("rs")), &[("rs".to_string(), replicas)]);
            proptest::prop_assert!(b.disruptions_allowed >= 0);
            proptest::prop_assert!(b.disruptions_allowed <= b.current_healthy);
            proptest::prop_assert_eq!(b.current_healthy, healthy as i64);
            if let Some(m) = min {
                proptest::prop_assert_eq!(b.disruptions_allowed, (healthy as i64 - m).max(0));
            }
        }
    }
}
