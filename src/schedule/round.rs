//! Rounds: which nodes a window selects, in which order, how many at once, and how long a
//! round should take. Shared by the MaintenanceWindow controller and `nmo plan`.

use chrono::Duration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Why a `maxUnavailable` value is invalid. Messages say what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// An integer below 1.
    #[error("{0} is not allowed: use an integer >= 1 or a percentage from 1% to 100%")]
    CountTooSmall(i32),
    /// A string that is a plain number.
    #[error(
        "{0:?} is not allowed: a string must be a percentage such as \"25%\"; for a node count write {0} without quotes"
    )]
    NumberAsString(String),
    /// A percentage outside 1%-100%.
    #[error("{0:?} is not allowed: a percentage must be from 1% to 100%")]
    PercentOutOfRange(String),
    /// Neither a number nor a percentage.
    #[error(
        "{0:?} is not allowed: use an integer >= 1 or a percentage from 1% to 100% (whole numbers, such as \"25%\")"
    )]
    Malformed(String),
}

/// A validated `maxUnavailable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// At most this many nodes (>= 1).
    Count(u32),
    /// At most this percentage of the selected nodes (1-100), rounded up, minimum 1.
    Percent(u32),
}

impl Default for Budget {
    /// The default budget (`maxUnavailable` left out) is one node.
    fn default() -> Self {
        Budget::Count(1)
    }
}

impl Budget {
    /// How many of `total` selected nodes may be unavailable at once: never below 1.
    pub fn resolve(self, total_nodes: usize) -> usize {
        match self {
            Budget::Count(n) => n as usize,
            Budget::Percent(p) => (total_nodes * p as usize).div_ceil(100).max(1),
        }
    }
}

/// Parse `maxUnavailable` with the same rules as the CRD's CEL rule: an integer >= 1, or a
/// string `N%` with N from 1 to 100 written without leading zeros or decimals.
pub fn parse_max_unavailable(value: &IntOrString) -> Result<Budget, BudgetError> {
    match value {
        IntOrString::Int(n) if *n >= 1 => Ok(Budget::Count(*n as u32)),
        IntOrString::Int(n) => Err(BudgetError::CountTooSmall(*n)),
        IntOrString::String(s) => {
            let Some(number) = s.strip_suffix('%') else {
                return Err(if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                    BudgetError::NumberAsString(s.clone())
                } else {
                    BudgetError::Malformed(s.clone())
                });
            };
            let well_formed = !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && (number == "0" || !number.starts_with('0'));
            match number.parse::<u32>() {
                Ok(p) if well_formed && (1..=100).contains(&p) => Ok(Budget::Percent(p)),
                Ok(_) if well_formed => Err(BudgetError::PercentOutOfRange(s.clone())),
                _ => Err(BudgetError::Malformed(s.clone())),
            }
        }
    }
}

/// How many of `total_nodes` may be unavailable at once: percentages round up, and the
/// result is at least 1. An invalid value (which admission rejects) counts as 1, the default.
pub fn resolve_max_unavailable(value: &IntOrString, total_nodes: usize) -> usize {
    parse_max_unavailable(value).map_or(1, |b| b.resolve(total_nodes))
}

/// The order in which a round maintains nodes: by name (byte order), without duplicates.
/// Deterministic, so every replica and every restart agrees.
pub fn round_order<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
    names.sort();
    names.dedup();
    names
}

/// How long a round of `nodes` should take when `budget` run at once and each takes
/// `per_node_time`: the number of batches (`nodes / budget`, rounded up) times the per-node
/// time. Zero nodes take no time; a budget of 0 counts as 1.
pub fn estimate_round(nodes: usize, budget: usize, per_node_time: Duration) -> Duration {
    let batches = nodes.div_ceil(budget.max(1));
    per_node_time * i32::try_from(batches).unwrap_or(i32::MAX)
}

/// Whether a node's labels match a LabelSelector, with Kubernetes semantics: every
/// `matchLabels` pair and every `matchExpressions` requirement must hold (`In`, `NotIn`,
/// `Exists`, `DoesNotExist`). An empty selector matches every node (admission refuses empty
/// selectors on MaintenanceWindows); an unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn int(n: i32) -> IntOrString {
        IntOrString::Int(n)
    }
    fn string(s: &str) -> IntOrString {
        IntOrString::String(s.to_string())
    }

    #[test]
    fn percentages_round_up_with_a_minimum_of_one() {
        let cases = [
            (string("20%"), 10, 2),
            (string("20%"), 11, 3),
            (string("1%"), 3, 1),
            (string("100%"), 7, 7),
            (string("50%"), 0, 1),
            (int(2), 10, 2),
            (int(5), 3, 5),
        ];
        for (value, total, expected) in cases {
            assert_eq!(
                resolve_max_unavailable(&value, total),
                expected,
                "{value:?} of {total}"
            );
        }
    }

    #[test]
    fn invalid_budgets_are_refused_with_their_own_message() {
        let cases = [
            (int(0), "0 is not allowed: use an integer >= 1"),
            (int(-3), "-3 is not allowed"),
            (string("5"), "for a node count write 5 without quotes"),
            (string("150%"), "a percentage must be from 1% to 100%"),
            (string("0%"), "a percentage must be from 1% to 100%"),
            (string("05%"), "whole numbers"),
            (string("2.5%"), "whole numbers"),
            (string("all"), "whole numbers"),
        ];
        for (value, expected) in cases {
            let err = parse_max_unavailable(&value).unwrap_err().to_string();
            assert!(err.contains(expected), "{value:?}: {err}");
            assert_eq!(resolve_max_unavailable(&value, 10), 1);
        }
    }

    #[test]
    fn a_round_takes_whole_batches_of_the_budget() {
        let per = Duration::minutes(30);
        assert_eq!(estimate_round(5, 2, per), Duration::minutes(90));
        assert_eq!(estimate_round(4, 2, per), Duration::minutes(60));
        assert_eq!(estimate_round(0, 2, per), Duration::zero());
        assert_eq!(estimate_round(3, 0, per), Duration::minutes(90));
    }

    #[test]
    fn round_order_is_by_name_without_duplicates() {
        assert_eq!(
            round_order(["worker-2", "worker-10", "gpu-1", "worker-2"]),
            ["gpu-1", "worker-10", "worker-2"]
        );
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("role".to_string(), "worker".to_string())].into();
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "role".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&req("In", &["worker", "gpu"]), &labels));
        assert!(!selector_matches(&req("NotIn", &["worker"]), &labels));
        assert!(selector_matches(&req("Exists", &[]), &labels));
        assert!(!selector_matches(&req("DoesNotExist", &[]), &labels));
        assert!(!selector_matches(&req("Matches", &["worker"]), &labels));
        let by_label = LabelSelector {
            match_labels: Some([("role".to_string(), "gpu".to_string())].into()),
            ..Default::default()
        };
        assert!(!selector_matches(&by_label, &labels));
    }
}
