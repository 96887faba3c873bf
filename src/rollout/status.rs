//! Mapping the planner's state onto the existing status types of `api::maintenance_window`.
//!
//! Both directions: [`round_status`] / [`open_window_span`] write the planner's state into status,
//! and [`state_from_status`] reads it back on the next reconcile (or after a restart). The
//! round trip is lossless for everything the planner persists.

use crate::api::maintenance_window::{
    MaintenanceWindowStatus, NodeFailure, NodeInProgress, NodeSkipped, RoundStatus, WindowSpan,
};
use crate::api::{from_time, to_time};

use super::{Ending, InFlight, OpenWindow, RolloutState, Round, RoundCounts, WindowOccurrence};

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
        skipped_nodes: round
            .skipped
            .iter()
            .map(|(name, reason)| NodeSkipped {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect(),
        current_domain: round.domain.clone(),
        completed_nodes: round.completed.iter().cloned().collect(),
        stalled_at: round.stalled_at.map(to_time),
        forgiven_failures: (round.forgiven_failures > 0).then_some(round.forgiven_failures as i32),
    }
}

/// `status.currentWindow` for the open window.
pub fn open_window_span(window: &OpenWindow) -> WindowSpan {
    WindowSpan {
        run_now: window.run_now.then_some(true),
        ..window.occurrence.to_span()
    }
}

/// Read the planner's state back from a MaintenanceWindow's status. A missing or foreign
/// status gives the state of a new window.
pub fn state_from_status(status: &MaintenanceWindowStatus) -> RolloutState {
    let round = status
        .round
        .as_ref()
        .map(round_from_status)
        .unwrap_or_default();
    RolloutState {
        round,
        window: status.current_window.as_ref().map(|span| OpenWindow {
            occurrence: WindowOccurrence {
                start: from_time(&span.start),
                end: from_time(&span.end),
            },
            run_now: span.run_now.unwrap_or(false),
        }),
        last_handled_run_now: status.last_handled_run_now.clone(),
    }
}

fn round_from_status(round: &RoundStatus) -> Round {
    Round {
        number: round.number.max(0) as u64,
        started: round.started.as_ref().map(from_time),
        finished: round.finished.as_ref().map(from_time),
        completed: round.completed_nodes.iter().cloned().collect(),
        failed: round
            .failed_nodes
            .iter()
            .map(|f| (f.name.clone(), f.reason.clone()))
            .collect(),
        in_flight: round
            .in_progress_nodes
            .iter()
            .map(|n| {
                let entry = InFlight {
                    started: from_time(&n.started),
                    observed: n.observed,
                    boot_id: n.boot_id.clone(),
                    drained: n.drained.as_ref().map(from_time),
                    released: n.released.as_ref().map(from_time),
                    ending: n.ending.as_deref().and_then(Ending::parse),
                    ready_since: n.ready_since.as_ref().map(from_time),
                };
                (n.name.clone(), entry)
            })
            .collect(),
        stalled_at: round.stalled_at.as_ref().map(from_time),
        forgiven_failures: round.forgiven_failures.unwrap_or(0).max(0) as u32,
        skipped: round
            .skipped_nodes
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect(),
        domain: round.current_domain.clone(),
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
        ending: entry.ending.map(|e| e.as_str().to_string()),
        ready_since: entry.ready_since.map(to_time),
        observed: entry.observed,
        reason: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn state_survives_a_round_trip_through_status() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap();
        let round = Round {
            number: 2,
            started: Some(at),
            finished: None,
            completed: ["a".to_string()].into(),
            failed: [("b".to_string(), "NodeTimeout".to_string())].into(),
            in_flight: [(
                "b".to_string(),
                InFlight {
                    started: at,
                    observed: true,
                    boot_id: Some("boot".into()),
                    drained: None,
                    released: Some(at),
                    ending: Some(Ending::TimedOut),
                    ready_since: None,
                },
            )]
            .into(),
            stalled_at: Some(at),
            domain: Some("zone-a".into()),
            forgiven_failures: 1,
            skipped: [(
                "d".to_string(),
                "NotReady: the node is not Ready".to_string(),
            )]
            .into(),
        };
        let state = RolloutState {
            round: round.clone(),
            window: Some(OpenWindow {
                occurrence: WindowOccurrence {
                    start: at,
                    end: at + chrono::Duration::hours(4),
                },
                run_now: true,
            }),
            last_handled_run_now: Some("x".into()),
        };
        let status = MaintenanceWindowStatus {
            round: Some(round_status(&round, RoundCounts::default())),
            current_window: state.window.as_ref().map(open_window_span),
            last_handled_run_now: state.last_handled_run_now.clone(),
            ..Default::default()
        };
        // Through JSON too, as the API server stores it.
        let json = serde_json::to_value(&status).unwrap();
        let back: MaintenanceWindowStatus = serde_json::from_value(json).unwrap();
        assert_eq!(state_from_status(&back), state);
    }

    #[test]
    fn an_empty_status_reads_as_a_new_window() {
        assert_eq!(
            state_from_status(&MaintenanceWindowStatus::default()),
            RolloutState::default()
        );
    }
}
