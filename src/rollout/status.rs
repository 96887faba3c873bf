//! Mapping the planner's state onto the existing status types of `api::maintenance_window`.
//!
//! This covers the fields that exist today. The planner also persists, and needs read back on
//! the next reconcile, fields that `RoundStatus`, `NodeInProgress` and `WindowSpan` do not have
//! yet (see the module documentation of [`crate::rollout`], "Persisted state").

use crate::api::maintenance_window::{NodeFailure, NodeInProgress, RoundStatus, WindowSpan};
use crate::api::to_time;

use super::{InFlight, Round, RoundCounts, WindowOccurrence};

/// `status.round` for a round and the counts of the plan that produced it.
pub fn round_status(round: &Round, counts: RoundCounts) -> RoundStatus {
    RoundStatus {
        number: round.number as i64,
        started: round.started.map(to_time),
        finished: round.finished.map(to_time),
        total: counts.total as i32,
        completed: counts.completed as i32,
        pending: counts.pending as i32,
        in_progress: counts.in_progress as i32,
        failed: counts.failed as i32,
        in_progress_nodes: round
            .in_flight
            .iter()
            .map(|(name, entry)| node_in_progress(name, entry))
            .collect(),
        failed_nodes: round
            .failed
            .iter()
            .map(|(name, reason)| NodeFailure {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect(),
        completed_nodes: round.completed.iter().cloned().collect(),
    }
}

/// `status.currentWindow` / `status.nextWindow`.
pub fn window_span(window: &WindowOccurrence) -> WindowSpan {
    WindowSpan {
        start: to_time(window.start),
        end: to_time(window.end),
    }
}

fn node_in_progress(name: &str, entry: &InFlight) -> NodeInProgress {
    // Only a function of the entry, so that re-planning writes the same text.
    let reason = match (entry.ending, entry.drained, entry.ready_since) {
        (None, None, _) => "Draining".to_string(),
        (None, Some(_), _) => "Drained: waiting for release".to_string(),
        (Some(e), _, None) => format!(
            "{}: waiting for the node to be Ready and schedulable",
            e.as_str()
        ),
        (Some(e), _, Some(_)) => format!("{}: waiting for minReadySeconds", e.as_str()),
    };
    NodeInProgress {
        name: name.to_string(),
        started: to_time(entry.started),
        drained: entry.drained.map(to_time),
        released: entry.released.map(to_time),
        boot_id: entry.boot_id.clone(),
        reason: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::from_time;
    use crate::rollout::Ending;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_round_maps_to_round_status_with_its_counts_and_nodes() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap();
        let round = Round {
            number: 3,
            started: Some(at),
            completed: ["a".to_string()].into(),
            failed: [("b".to_string(), "NodeTimeout".to_string())].into(),
            in_flight: [(
                "c".to_string(),
                InFlight {
                    started: at,
                    observed: true,
                    boot_id: Some("boot".into()),
                    drained: Some(at),
                    released: Some(at),
                    ending: Some(Ending::ReleaseAfter),
                    ready_since: Some(at),
                },
            )]
            .into(),
            ..Round::default()
        };
        let counts = RoundCounts {
            total: 4,
            completed: 1,
            pending: 1,
            in_progress: 1,
            failed: 1,
        };
        let status = round_status(&round, counts);
        assert_eq!(status.number, 3);
        assert_eq!(status.total, 4);
        assert_eq!(status.completed_nodes, ["a"]);
        assert_eq!(status.failed_nodes[0].reason, "NodeTimeout");
        let c = &status.in_progress_nodes[0];
        assert_eq!(from_time(c.released.as_ref().unwrap()), at);
        assert_eq!(
            c.reason.as_deref(),
            Some("ReleaseAfter: waiting for minReadySeconds")
        );
    }
}
