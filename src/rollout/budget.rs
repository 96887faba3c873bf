//! `maxUnavailable`: a count or a percentage of the selected nodes.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// How many selected nodes may be unavailable at once, before resolving percentages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// A fixed number of nodes.
    Count(u32),
    /// A percentage of the selected nodes, rounded up, minimum 1.
    Percent(u32),
}

/// `spec.maxUnavailable` is not a positive integer or a percentage from 1% to 100%.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.maxUnavailable {value:?} must be an integer >= 1 or a percentage from 1% to 100%")]
pub struct BudgetError {
    /// The rejected value, as written.
    pub value: String,
}

impl Default for Budget {
    /// The default budget is one node.
    fn default() -> Self {
        Budget::Count(1)
    }
}

impl Budget {
    /// Read `spec.maxUnavailable` (`3`, `"3"` or `"25%"`).
    pub fn from_int_or_string(value: &IntOrString) -> Result<Budget, BudgetError> {
        let error = |v: String| BudgetError { value: v };
        match value {
            IntOrString::Int(n) if *n >= 1 => Ok(Budget::Count(*n as u32)),
            IntOrString::Int(n) => Err(error(n.to_string())),
            IntOrString::String(s) => {
                if let Some(digits) = s.strip_suffix('%') {
                    match digits.parse::<u32>() {
                        Ok(p) if (1..=100).contains(&p) && !digits.starts_with(['0', '+']) => {
                            Ok(Budget::Percent(p))
                        }
                        _ => Err(error(s.clone())),
                    }
                } else {
                    match s.parse::<u32>() {
                        Ok(n) if n >= 1 => Ok(Budget::Count(n)),
                        _ => Err(error(s.clone())),
                    }
                }
            }
        }
    }

    /// The number of nodes this budget allows out of `selected` nodes: percentages round up,
    /// and the result is never below 1.
    pub fn resolve(self, selected: usize) -> usize {
        match self {
            Budget::Count(n) => (n as usize).max(1),
            Budget::Percent(p) => (selected * p as usize).div_ceil(100).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(Budget::Percent(25).resolve(10), 3);
        assert_eq!(Budget::Percent(50).resolve(10), 5);
        assert_eq!(Budget::Percent(100).resolve(7), 7);
    }

    #[test]
    fn a_percentage_never_resolves_below_one() {
        assert_eq!(Budget::Percent(1).resolve(10), 1);
        assert_eq!(Budget::Percent(10).resolve(0), 1);
    }

    #[test]
    fn a_count_is_taken_as_is() {
        assert_eq!(Budget::Count(2).resolve(10), 2);
        assert_eq!(Budget::Count(20).resolve(3), 20);
    }

    #[test]
    fn integers_numeric_strings_and_percentages_are_read() {
        let read = |v: IntOrString| Budget::from_int_or_string(&v);
        assert_eq!(read(IntOrString::Int(3)), Ok(Budget::Count(3)));
        assert_eq!(read(IntOrString::String("3".into())), Ok(Budget::Count(3)));
        assert_eq!(
            read(IntOrString::String("25%".into())),
            Ok(Budget::Percent(25))
        );
    }

    #[test]
    fn zero_negative_and_out_of_range_values_are_rejected_with_the_value() {
        for bad in [
            IntOrString::Int(0),
            IntOrString::Int(-1),
            IntOrString::String("0%".into()),
            IntOrString::String("101%".into()),
            IntOrString::String("05%".into()),
            IntOrString::String("ten".into()),
        ] {
            let err = Budget::from_int_or_string(&bad).unwrap_err();
            assert!(err.to_string().contains("spec.maxUnavailable"), "{err}");
        }
    }
}
