//! The Prometheus health gate (`spec.healthGate`).
//!
//! Before a new node starts, and at most every [`RECHECK`] while nodes wait, the window
//! controller runs the gate's PromQL query through a [`GateBackend`]: the Prometheus named in
//! the operator config (`prometheus.url`, never in a window's spec, so a window's author
//! cannot make the operator call an arbitrary address), or a [`ScriptedGate`] for `nmo
//! simulate` and tests. [`evaluate`] (pure) turns the answer and the gate's memory into a
//! verdict:
//!
//! - a non-empty result blocks new starts; in-flight nodes continue;
//! - once the result has been empty for `for` after blocking, starts resume;
//! - an unreachable Prometheus, or an error answer, blocks too and says so (fail closed:
//!   the point of the gate is not to continue while something may be wrong).

mod prometheus;
mod scripted;

pub use prometheus::PrometheusClient;
pub use scripted::ScriptedGate;

use chrono::{DateTime, Duration, Utc};

use crate::api::{HealthGateStatus, from_time, to_time};
use crate::rollout::Gate;

/// How often a blocked gate is asked again while nodes wait (and the shortest interval
/// between two queries of one window while it blocks).
pub const RECHECK: Duration = Duration::seconds(15);

/// Where the gate's queries go. Set in the operator config; the lead's `nmo simulate
/// --fake-alert` uses [`GateBackend::Scripted`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GateBackend {
    /// No Prometheus configured: a window with a `healthGate` blocks and says so.
    #[default]
    Unconfigured,
    /// The Prometheus HTTP API at this base URL (`prometheus.url`).
    Prometheus(PrometheusClient),
    /// Answers from a script over the (virtual) clock.
    Scripted(ScriptedGate),
}

impl GateBackend {
    /// Run `query` at `now` (the scripted backend reads `now`; Prometheus evaluates at its own
    /// current time).
    pub async fn query(&self, query: &str, now: DateTime<Utc>) -> Result<QueryResult, GateError> {
        match self {
            GateBackend::Unconfigured => Err(GateError::Unconfigured),
            GateBackend::Prometheus(client) => client.query(query).await,
            GateBackend::Scripted(gate) => Ok(gate.query(now)),
        }
    }
}

/// A query's result: the series it returned, each as `{label="value",...}` text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// One entry per series (or one for a scalar or string result).
    pub series: Vec<String>,
}

impl QueryResult {
    /// Whether nothing came back.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// At most three series, and how many more.
    pub fn summary(&self) -> String {
        let shown: Vec<&str> = self.series.iter().take(3).map(String::as_str).collect();
        let more = self.series.len().saturating_sub(shown.len());
        let mut out = format!("{} series: {}", self.series.len(), shown.join(", "));
        if more > 0 {
            out.push_str(&format!(" and {more} more"));
        }
        out
    }
}

/// Why the gate could not get an answer. Each blocks the gate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// No backend configured.
    #[error("no Prometheus is configured: set prometheus.url in the operator config (--config)")]
    Unconfigured,
    /// The URL in the config cannot be used.
    #[error("prometheus.url {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection, or no answer in time.
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The error.
        reason: String,
    },
    /// Prometheus answered with an error (a bad query, an overloaded server).
    #[error("Prometheus at {url} answered {status}: {message}")]
    QueryFailed {
        /// The base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Prometheus' `error`, or the body.
        message: String,
    },
}

impl GateError {
    /// A bounded category, for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            GateError::Unconfigured => "PrometheusNotConfigured",
            GateError::BadUrl { .. } => "PrometheusNotConfigured",
            GateError::Unreachable { .. } => "PrometheusUnreachable",
            GateError::QueryFailed { .. } => "QueryFailed",
        }
    }
}

/// What the gate remembers between reconciles (persisted as `status.healthGate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateMemory {
    /// The gate blocks new starts.
    pub blocking: bool,
    /// Since when the result has been empty after it blocked.
    pub clear_since: Option<DateTime<Utc>>,
}

impl GateMemory {
    /// Read back from status.
    pub fn from_status(status: Option<&HealthGateStatus>) -> GateMemory {
        status.map_or_else(GateMemory::default, |s| GateMemory {
            blocking: s.blocking,
            clear_since: s.clear_since.as_ref().map(from_time),
        })
    }

    /// As `status.healthGate`.
    pub fn to_status(self) -> HealthGateStatus {
        HealthGateStatus {
            blocking: self.blocking,
            clear_since: self.clear_since.map(to_time),
        }
    }
}

/// The gate's decision at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateDecision {
    /// The new memory.
    pub memory: GateMemory,
    /// For the planner.
    pub gate: Gate,
    /// The `HealthGate` condition: True when starts may go ahead.
    pub passing: bool,
    /// CamelCase reason: `QueryEmpty`, `QueryFiring`, `Clearing`, or a [`GateError::category`].
    pub reason: &'static str,
    /// Human message, with the query's result summarised.
    pub message: String,
    /// When to ask again while blocked (the end of `for`, or [`RECHECK`] from now).
    pub recheck_at: Option<DateTime<Utc>>,
}

/// Decide from the last memory and a fresh answer. Pure.
pub fn evaluate(
    memory: GateMemory,
    answer: &Result<QueryResult, GateError>,
    clear_for: Duration,
    now: DateTime<Utc>,
) -> GateDecision {
    let blocked = |memory, reason, message: String| GateDecision {
        memory,
        gate: Gate::Blocked(message.clone()),
        passing: false,
        reason,
        message,
        recheck_at: Some(now + RECHECK),
    };
    match answer {
        Err(e) => blocked(
            GateMemory {
                blocking: true,
                clear_since: None,
            },
            e.category(),
            format!("{e}; no new node starts until it answers"),
        ),
        Ok(result) if !result.is_empty() => blocked(
            GateMemory {
                blocking: true,
                clear_since: None,
            },
            "QueryFiring",
            format!(
                "the health gate query returned {}; no new node starts",
                result.summary()
            ),
        ),
        Ok(_) if memory.blocking => {
            let since = memory.clear_since.unwrap_or(now);
            let resume = since + clear_for;
            if resume <= now {
                GateDecision {
                    memory: GateMemory::default(),
                    gate: Gate::Open,
                    passing: true,
                    reason: "QueryEmpty",
                    message: format!(
                        "the health gate query has returned nothing since {}",
                        since.to_rfc3339()
                    ),
                    recheck_at: None,
                }
            } else {
                let mut d = blocked(
                    GateMemory {
                        blocking: true,
                        clear_since: Some(since),
                    },
                    "Clearing",
                    format!(
                        "the health gate query has returned nothing since {}; starts resume at {} (for {})",
                        since.to_rfc3339(),
                        resume.to_rfc3339(),
                        crate::schedule::format_duration(clear_for)
                    ),
                );
                d.recheck_at = Some(resume.min(now + RECHECK));
                d
            }
        }
        Ok(_) => GateDecision {
            memory: GateMemory::default(),
            gate: Gate::Open,
            passing: true,
            reason: "QueryEmpty",
            message: "the health gate query returned nothing".to_string(),
            recheck_at: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 2, 0, 0).unwrap() + Duration::seconds(s)
    }
    fn firing() -> Result<QueryResult, GateError> {
        Ok(QueryResult {
            series: vec!["{alertname=\"NodeDown\"}".into()],
        })
    }
    fn empty() -> Result<QueryResult, GateError> {
        Ok(QueryResult::default())
    }

    #[test]
    fn an_empty_result_passes_when_the_gate_never_blocked() {
        let d = evaluate(GateMemory::default(), &empty(), Duration::minutes(5), t(0));
        assert_eq!(d.gate, Gate::Open);
        assert!(d.passing);
        assert_eq!(d.reason, "QueryEmpty");
    }

    #[test]
    fn a_firing_result_blocks_and_is_summarised() {
        let d = evaluate(GateMemory::default(), &firing(), Duration::minutes(5), t(0));
        assert!(matches!(d.gate, Gate::Blocked(_)));
        assert_eq!(d.reason, "QueryFiring");
        assert!(
            d.message.contains("1 series: {alertname=\"NodeDown\"}"),
            "{}",
            d.message
        );
        assert_eq!(d.recheck_at, Some(t(15)));
    }

    #[test]
    fn starts_resume_only_after_the_result_stayed_empty_for_for() {
        let clear_for = Duration::seconds(40);
        let blocked = evaluate(GateMemory::default(), &firing(), clear_for, t(0)).memory;
        let d1 = evaluate(blocked, &empty(), clear_for, t(15));
        assert_eq!(d1.reason, "Clearing");
        assert_eq!(d1.memory.clear_since, Some(t(15)));
        assert_eq!(d1.recheck_at, Some(t(30)));
        let d2 = evaluate(d1.memory, &empty(), clear_for, t(45));
        assert_eq!(d2.reason, "Clearing");
        assert_eq!(
            d2.recheck_at,
            Some(t(55)),
            "the end of for comes before the next recheck"
        );
        // Firing again restarts the count.
        let d3 = evaluate(d2.memory, &firing(), clear_for, t(50));
        assert_eq!(d3.memory.clear_since, None);
        let d4 = evaluate(d2.memory, &empty(), clear_for, t(55));
        assert_eq!(d4.gate, Gate::Open);
        assert_eq!(d4.memory, GateMemory::default());
    }

    #[test]
    fn an_unreachable_prometheus_blocks_and_says_so() {
        let err = Err(GateError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        });
        let d = evaluate(GateMemory::default(), &err, Duration::minutes(1), t(0));
        assert_eq!(d.reason, "PrometheusUnreachable");
        assert!(
            d.message
                .starts_with("Prometheus at http://127.0.0.1:1 is unreachable: connection refused")
        );
        assert!(d.memory.blocking);
        let d = evaluate(
            GateMemory::default(),
            &Err(GateError::Unconfigured),
            Duration::minutes(1),
            t(0),
        );
        assert_eq!(d.reason, "PrometheusNotConfigured");
    }

    #[test]
    fn memory_round_trips_through_status() {
        let m = GateMemory {
            blocking: true,
            clear_since: Some(t(3)),
        };
        assert_eq!(GateMemory::from_status(Some(&m.to_status())), m);
        assert_eq!(GateMemory::from_status(None), GateMemory::default());
    }
}
