//! The planning steps, in order: window, in-flight nodes, stall, round end, round start,
//! untracked NodeMaintenances, new starts, wake-up time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::*;

/// Decide what to do now. See the module documentation for the contract.
pub fn plan(input: &PlanInput) -> RolloutPlan {
    let now = input.now;
    let policy = &input.policy;
    let mut state = input.state.clone();
    let mut events = Vec::new();
    let mut create = Vec::new();
    let mut delete = Vec::new();

    let nodes: BTreeMap<&str, &NodeView> =
        input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let selected: BTreeSet<&str> = input
        .nodes
        .iter()
        .filter(|n| n.selected)
        .map(|n| n.name.as_str())
        .collect();
    let mut owned: BTreeMap<&str, &MaintenanceView> = BTreeMap::new();
    let mut foreign: BTreeMap<&str, &MaintenanceView> = BTreeMap::new();
    for nm in &input.maintenances {
        let map = if nm.owned { &mut owned } else { &mut foreign };
        // Prefer the live object over one being deleted if there are two.
        match map.get(nm.node.as_str()) {
            Some(existing) if !existing.deleting => {}
            _ => {
                map.insert(nm.node.as_str(), nm);
            }
        }
    }

    // A NodeMaintenance that has the name this window would give `node` but is not its own
    // for that node: creating would fail with AlreadyExists, and it is not ours to adopt.
    let by_name: BTreeMap<&str, &MaintenanceView> = input
        .maintenances
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let name_taken = |node: &str| -> Option<String> {
        by_name
            .get(nm_name(&input.window, node).as_str())
            .filter(|m| !(m.owned && m.node == node))
            .map(|m| m.name.clone())
    };

    // 1. The window. An exclusion in force wins over the schedule and over run-now.
    let frozen = input.freeze.as_ref().map(|freeze| {
        if let Some(value) = &input.run_now
            && state.last_handled_run_now.as_ref() != Some(value)
        {
            state.last_handled_run_now = Some(value.clone());
            events.push(warning(
                EventReason::RunNowRefused,
                format!(
                    "run-now {value:?} refused: {} is in force until {}",
                    freeze.description,
                    freeze.end.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ));
        }
        format!(
            "{} is in force until {}: no window opens and no node starts, run-now included",
            freeze.description,
            freeze.end.format("%Y-%m-%d %H:%M:%S UTC")
        )
    });
    let window = if frozen.is_some() {
        None
    } else {
        resolve_window(input, &mut state)
    };
    let open = window.map(|w| w.occurrence);
    if state.window != window {
        if let Some(old) = state.window {
            events.push(event(
                EventReason::WindowClosed,
                format!("window {} closed", span(&old.occurrence)),
            ));
        }
        if let Some(new) = window {
            let kind = if new.run_now {
                "run-now window"
            } else {
                "window"
            };
            events.push(event(
                EventReason::WindowOpened,
                format!("{kind} {} opened", span(&new.occurrence)),
            ));
            // A stall lasts until the next window opens.
            if state.round.stalled_at.take().is_some() {
                state.round.forgiven_failures = state.round.failed.len() as u32;
            }
        }
        state.window = window;
    }

    // 2. In-flight nodes.
    let abort = open.is_none() && policy.on_window_end == OnWindowEnd::Abort;
    // In-flight nodes whose create never showed: candidates to start again (step 7).
    let mut unobserved: BTreeMap<String, InFlight> = BTreeMap::new();
    let round = &mut state.round;
    let names: Vec<String> = round.in_flight.keys().cloned().collect();
    for name in names {
        let node = nodes.get(name.as_str()).copied();
        let nm = owned.get(name.as_str()).copied();
        let mut entry = round.in_flight[&name].clone();
        if nm.is_some_and(|m| m.seen) {
            entry.observed = true;
        }
        if entry.ending.is_none() {
            match (node, nm) {
                (None, _) => end(&mut entry, Ending::NodeGone, now),
                // Never seen in the cluster, however long: nodeTimeout still applies, so a
                // create that keeps failing cannot hold a slot forever.
                (Some(_), _) if !entry.observed && entry.started + policy.node_timeout <= now => {
                    end(&mut entry, Ending::TimedOut, now)
                }
                (Some(_), Some(_)) if !entry.observed => {
                    // Created moments ago and not cached yet: wait for it.
                    round.in_flight.insert(name, entry);
                    continue;
                }
                (Some(_), None) if !entry.observed => {
                    // Our create never showed (it failed, or the operator stopped before
                    // sending it): the node goes back to pending, and starts again below only
                    // if it may start now, by the same rules as any other (open window, not
                    // suspended, budget, skips). The entry is kept aside so that a repeat keeps
                    // its start time, and with it its nodeTimeout. Repeating the create without
                    // those checks let a window that reopened later exceed maxUnavailable.
                    round.in_flight.remove(&name);
                    unobserved.insert(name, entry);
                    continue;
                }
                (Some(_), None) => end(&mut entry, Ending::DeletedByOthers, now),
                (Some(_), Some(nm)) if nm.deleting => end(&mut entry, Ending::DeletedByOthers, now),
                (Some(node), Some(nm)) => {
                    if nm.phase == Some(MaintenancePhase::Succeeded) && entry.drained.is_none() {
                        entry.drained = Some(nm.drain_succeeded.unwrap_or(now).min(now));
                    }
                    let timeout_at = entry.started + policy.node_timeout;
                    let after_at = match (policy.release_after, entry.drained) {
                        (Some(after), Some(drained)) => Some(drained + after),
                        _ => None,
                    };
                    let rebooted = policy.release_on_reboot
                        && node.ready
                        && entry.boot_id.is_some()
                        && node.boot_id.is_some()
                        && node.boot_id != entry.boot_id;
                    if rebooted {
                        end(&mut entry, Ending::Rebooted, now);
                    } else if after_at.is_some_and(|at| at <= now && at <= timeout_at) {
                        end(&mut entry, Ending::ReleaseAfter, now);
                    } else if timeout_at <= now {
                        end(&mut entry, Ending::TimedOut, now);
                    } else if abort {
                        end(&mut entry, Ending::Aborted, now);
                    }
                }
            }
            if let Some(ending) = entry.ending {
                events.push(ending_event(&name, ending, policy));
                if ending == Ending::TimedOut {
                    round.failed.insert(
                        name.clone(),
                        format!(
                            "NodeTimeout: not released within nodeTimeout {}",
                            human(policy.node_timeout)
                        ),
                    );
                }
            }
        }
        let Some(ending) = entry.ending else {
            round.in_flight.insert(name, entry);
            continue;
        };
        // Ended: make sure the NodeMaintenance goes, then soak.
        match nm {
            Some(nm) => {
                entry.ready_since = None;
                if !nm.deleting
                    && let Some(reason) = delete_reason(ending)
                {
                    delete.push(NodeMaintenanceToDelete {
                        name: nm.name.clone(),
                        node: name.clone(),
                        reason,
                    });
                }
                round.in_flight.insert(name, entry);
            }
            None => match node {
                None => {
                    round.in_flight.remove(&name);
                }
                Some(node) if node.ready && (node.schedulable || node.cordoned_by_others) => {
                    let since = *entry.ready_since.get_or_insert(now);
                    if since + policy.min_ready <= now {
                        round.in_flight.remove(&name);
                        if ending.is_success() {
                            round.completed.insert(name);
                        }
                    } else {
                        round.in_flight.insert(name, entry);
                    }
                }
                Some(_) => {
                    entry.ready_since = None;
                    round.in_flight.insert(name, entry);
                }
            },
        }
    }

    // 3. Too many failures stall the rollout until the next window.
    let failures = (round.failed.len() as u32).saturating_sub(round.forgiven_failures);
    if round.is_active() && round.stalled_at.is_none() && failures > policy.max_failures {
        round.stalled_at = Some(now);
        events.push(warning(
            EventReason::RolloutStalled,
            format!(
                "{failures} node(s) failed in round {}, more than maxFailures {}: {}; no new node starts until the next window",
                round.number,
                policy.max_failures,
                join(round.failed.keys().map(String::as_str))
            ),
        ));
    }

    // 4. The round ends once every selected node is done and nothing is in flight.
    if round.is_active()
        && round.in_flight.is_empty()
        && selected
            .iter()
            .all(|n| round.completed.contains(*n) || round.failed.contains_key(*n))
    {
        round.finished = Some(now);
        events.push(event(
            EventReason::RoundCompleted,
            format!(
                "round {} completed: {} node(s) maintained, {} failed",
                round.number,
                round.completed.len(),
                round.failed.len()
            ),
        ));
    }

    // 5. A new round starts at the first window opening after the last one finished.
    let may_start = !policy.suspend && !policy.dry_run && round.stalled_at.is_none();
    if let Some(open) = open {
        let due = round.number == 0 || round.finished.is_some_and(|f| open.start > f);
        if due && may_start && !selected.is_empty() {
            *round = Round {
                number: round.number + 1,
                started: Some(now),
                ..Round::default()
            };
        }
    }

    // 6. Owned NodeMaintenances the round does not track: adopt or delete.
    for (node_name, nm) in &owned {
        if round.in_flight.contains_key(*node_name) || nm.deleting {
            continue;
        }
        let node = nodes.get(node_name).copied();
        let is_selected = selected.contains(node_name);
        let done = round.completed.contains(*node_name) || round.failed.contains_key(*node_name);
        if round.is_active() && is_selected && !done {
            // Status was lost after the create (a restart): carry on with it.
            let drained = (nm.phase == Some(MaintenancePhase::Succeeded))
                .then(|| nm.drain_succeeded.unwrap_or(now).min(now));
            round.in_flight.insert(
                node_name.to_string(),
                InFlight {
                    started: nm.created,
                    observed: true,
                    boot_id: node.and_then(|n| n.boot_id.clone()),
                    drained,
                    released: None,
                    ending: None,
                    ready_since: None,
                },
            );
            events.push(event(
                EventReason::NodeMaintenanceStarted,
                format!("adopted NodeMaintenance {} for node {node_name}", nm.name),
            ));
        } else {
            let reason = if node.is_none() {
                DeleteReason::NodeGone
            } else if !is_selected {
                DeleteReason::NodeLeftSelector
            } else {
                DeleteReason::Stale
            };
            delete.push(NodeMaintenanceToDelete {
                name: nm.name.clone(),
                node: node_name.to_string(),
                reason,
            });
        }
    }

    // 7. Start nodes while the budget, the cap and the window allow.
    let budget = policy.budget.resolve(selected.len());
    let mut unavailable: BTreeSet<String> = round.in_flight.keys().cloned().collect();
    unavailable.extend(owned.keys().map(|n| n.to_string()));
    for name in &selected {
        let node = nodes[name];
        if !node.ready || !node.schedulable || foreign.contains_key(name) {
            unavailable.insert(name.to_string());
        }
    }
    let pending: Vec<&str> = selected
        .iter()
        .copied()
        .filter(|n| {
            !round.completed.contains(*n)
                && !round.failed.contains_key(*n)
                && !round.in_flight.contains_key(*n)
        })
        .collect();
    let mut skipped = Vec::new();
    let mut headroom = input.cap_headroom.unwrap_or(u32::MAX);
    let mut started = Vec::new();
    let starting = open.is_some() && may_start && round.is_active();
    // Nodes in maintenance for the quorum rule: under any NodeMaintenance, in flight in this
    // round (soaking included), or started by this plan.
    let mut in_maintenance: BTreeSet<String> = owned
        .keys()
        .chain(foreign.keys())
        .map(|n| n.to_string())
        .chain(round.in_flight.keys().cloned())
        .collect();
    let control_plane = control_plane_nodes(&input.nodes);
    // One topology domain at a time: the domain of the nodes in flight, else the first
    // domain (in name order, unlabelled last) with a node that could start.
    let domain = policy.topology_key.as_ref().and_then(|_| {
        let domain_of = |n: &str| {
            nodes
                .get(n)
                .and_then(|v| v.domain.clone())
                .unwrap_or_default()
        };
        let in_flight: Vec<String> = round.in_flight.keys().map(|n| domain_of(n)).collect();
        let startable: Vec<String> = pending
            .iter()
            .filter(|n| {
                let node = nodes[**n];
                node.ready
                    && node.schedulable
                    && !foreign.contains_key(**n)
                    && !owned.contains_key(**n)
                    && name_taken(n).is_none()
            })
            .map(|n| domain_of(n))
            .collect();
        in_flight
            .into_iter()
            .min_by(domain_order)
            .or_else(|| startable.into_iter().min_by(domain_order))
    });
    let in_domain = |n: &str| {
        domain
            .as_ref()
            .is_none_or(|d| nodes.get(n).and_then(|v| v.domain.as_deref()).unwrap_or("") == d)
    };
    // The budget applies within the domain.
    let budget = match &domain {
        Some(_) => policy
            .budget
            .resolve(selected.iter().filter(|n| in_domain(n)).count()),
        None => budget,
    };
    if domain.is_some() {
        unavailable.retain(|n| in_domain(n));
    }
    let mut held_by_gate = Vec::new();
    for name in &pending {
        let node = nodes[name];
        let skip = if let Some(other) = foreign.get(name) {
            Some(SkipReason::HeldBy(other.name.clone()))
        } else if owned.contains_key(name) {
            // Our own object is still being deleted.
            Some(SkipReason::HeldBy(owned[name].name.clone()))
        } else if let Some(other) = name_taken(name) {
            Some(SkipReason::NameTaken(other))
        } else if !node.ready {
            Some(SkipReason::NotReady)
        } else if !node.schedulable {
            Some(SkipReason::Cordoned)
        } else if node.control_plane {
            crate::controller::quorum::check_quorum(name, &control_plane, &in_maintenance)
                .err()
                .map(|violation| SkipReason::ControlPlaneQuorum(violation.to_string()))
        } else {
            None
        };
        if let Some(skip) = skip {
            skipped.push((name.to_string(), skip));
            continue;
        }
        if !starting || unavailable.len() >= budget || headroom == 0 || !in_domain(name) {
            continue;
        }
        if let Gate::Blocked(_) = input.gate {
            held_by_gate.push(name.to_string());
            unavailable.insert(name.to_string());
            continue;
        }
        headroom -= 1;
        unavailable.insert(name.to_string());
        in_maintenance.insert(name.to_string());
        started.push(*name);
    }
    // Skips are shown in status while the round runs; a NodeMaintenance squatting on the
    // generated name needs a person, so it gets a Warning Event once, when it starts blocking.
    let skips: BTreeMap<String, String> = if round.is_active() {
        skipped
            .iter()
            .map(|(name, skip)| (name.clone(), skip.message()))
            .collect()
    } else {
        BTreeMap::new()
    };
    for (name, skip) in &skipped {
        if let SkipReason::NameTaken(other) = skip
            && round.is_active()
            && round.skipped.get(name) != skips.get(name)
        {
            events.push(warning(
                EventReason::NodeBlocked,
                format!(
                    "node {name} is blocked: NodeMaintenance {other} already exists and is not this window's; rename or delete it"
                ),
            ));
        }
    }
    round.skipped = skips;
    round.domain = if round.is_active() {
        domain.clone()
    } else {
        None
    };
    for name in started {
        let node = nodes[name];
        let nm = to_create(input, name);
        let entry = match unobserved.remove(name) {
            // A create asked again: same start (and nodeTimeout), no second Event.
            Some(entry) => entry,
            None => {
                events.push(event(
                    EventReason::NodeMaintenanceStarted,
                    format!("created NodeMaintenance {} for node {name}", nm.name),
                ));
                InFlight {
                    started: now,
                    observed: false,
                    boot_id: node.boot_id.clone(),
                    drained: None,
                    released: None,
                    ending: None,
                    ready_since: None,
                }
            }
        };
        round.in_flight.insert(name.to_string(), entry);
        create.push(nm);
    }

    // 8. Summary, order and wake-up time.
    let planned_order: Vec<String> = if round.is_active() {
        pending
            .iter()
            .filter(|n| !round.in_flight.contains_key(**n))
            .map(|n| n.to_string())
            .collect()
    } else {
        selected.iter().map(|n| n.to_string()).collect()
    };
    let counts = counts(round, &selected);
    let stalled = if let Some(at) = round.stalled_at {
        Some(Stall {
            reason: "MaxFailuresExceeded",
            message: format!(
                "{} node(s) failed in round {} ({}), more than maxFailures {}, at {}; waiting for the next window",
                round.failed.len(),
                round.number,
                join(round.failed.keys().map(String::as_str)),
                policy.max_failures,
                at.to_rfc3339()
            ),
        })
    } else if selected.is_empty() {
        Some(Stall {
            reason: "NoNodesSelected",
            message: "spec.nodeSelector matches no node".to_string(),
        })
    } else {
        None
    };
    let reconciling = (!round.in_flight.is_empty()).then(|| {
        format!(
            "round {}: maintaining {}",
            round.number,
            join(round.in_flight.keys().map(String::as_str))
        )
    });
    let requeue_at = requeue_at(input, &state, open);
    RolloutPlan {
        create,
        delete,
        summary: Summary {
            window_open: open.is_some(),
            reconciling,
            stalled,
            counts,
            budget: budget as u32,
            unavailable: unavailable.len() as u32,
            frozen,
            held_by_gate,
        },
        events,
        skipped,
        planned_order,
        current_window: open,
        requeue_at,
        state,
    }
}

/// The order of topology domains: by name, with "" (nodes without the label) last.
pub fn domain_order(a: &String, b: &String) -> std::cmp::Ordering {
    (a.is_empty(), a).cmp(&(b.is_empty(), b))
}

/// The open window: the latest-ending of the persisted run-now window (while it lasts), the
/// schedule's window, and a fresh run-now window. Ties keep the one already persisted, so
/// the window's identity (and its events) stays stable.
fn resolve_window(input: &PlanInput, state: &mut RolloutState) -> Option<OpenWindow> {
    let now = input.now;
    let mut candidates = Vec::new();
    if let Some(w) = state.window
        && w.occurrence.contains(now)
        && (w.run_now || Some(w.occurrence) == input.schedule_window)
    {
        candidates.push(w);
    }
    if let Some(occurrence) = input.schedule_window.filter(|w| w.contains(now)) {
        candidates.push(OpenWindow {
            occurrence,
            run_now: false,
        });
    }
    if let Some(value) = &input.run_now
        && state.last_handled_run_now.as_ref() != Some(value)
    {
        state.last_handled_run_now = Some(value.clone());
        let occurrence = WindowOccurrence {
            start: now,
            end: now + input.policy.window_duration,
        };
        if occurrence.contains(now) {
            candidates.push(OpenWindow {
                occurrence,
                run_now: true,
            });
        }
    }
    let mut best: Option<OpenWindow> = None;
    for c in candidates {
        if best.is_none_or(|b| c.occurrence.end > b.occurrence.end) {
            best = Some(c);
        }
    }
    best
}

fn requeue_at(
    input: &PlanInput,
    state: &RolloutState,
    open: Option<WindowOccurrence>,
) -> Option<DateTime<Utc>> {
    let now = input.now;
    let policy = &input.policy;
    let mut times = Vec::new();
    if let Some(open) = open {
        times.push(open.end);
    }
    if let Some(next) = input.next_window {
        times.push(next.start);
    }
    if let Some(freeze) = &input.freeze {
        times.push(freeze.end);
    }
    if let Some(at) = input.next_freeze {
        times.push(at);
    }
    for entry in state.round.in_flight.values() {
        match entry.ending {
            None => {
                times.push(entry.started + policy.node_timeout);
                if let (Some(after), Some(drained)) = (policy.release_after, entry.drained) {
                    times.push(drained + after);
                }
            }
            Some(_) => {
                if let Some(since) = entry.ready_since {
                    times.push(since + policy.min_ready);
                }
            }
        }
    }
    times.into_iter().filter(|t| *t > now).min()
}

fn counts(round: &Round, selected: &BTreeSet<&str>) -> RoundCounts {
    let mut c = RoundCounts::default();
    let universe: BTreeSet<&str> = selected
        .iter()
        .copied()
        .chain(round.in_flight.keys().map(String::as_str))
        .collect();
    for name in universe {
        c.total += 1;
        if round.completed.contains(name) {
            c.completed += 1;
        } else if round.failed.contains_key(name) {
            c.failed += 1;
        } else if round.in_flight.contains_key(name) {
            c.in_progress += 1;
        } else {
            c.pending += 1;
        }
    }
    c
}

fn end(entry: &mut InFlight, ending: Ending, now: DateTime<Utc>) {
    entry.ending = Some(ending);
    entry.released = Some(now);
    entry.ready_since = None;
}

fn delete_reason(ending: Ending) -> Option<DeleteReason> {
    match ending {
        Ending::ReleaseAfter => Some(DeleteReason::ReleaseAfter),
        Ending::Rebooted => Some(DeleteReason::Rebooted),
        Ending::TimedOut => Some(DeleteReason::Timeout),
        Ending::Aborted => Some(DeleteReason::Abort),
        Ending::NodeGone => Some(DeleteReason::NodeGone),
        // Someone else is deleting it already.
        Ending::DeletedByOthers => None,
    }
}

fn ending_event(node: &str, ending: Ending, policy: &RolloutPolicy) -> RolloutEvent {
    match ending {
        Ending::ReleaseAfter => event(
            EventReason::NodeReleased,
            format!(
                "released node {node}: release.after {} elapsed after the drain",
                human(policy.release_after.unwrap_or_default())
            ),
        ),
        Ending::Rebooted => event(
            EventReason::NodeReleased,
            format!("released node {node}: it rebooted and is Ready"),
        ),
        Ending::DeletedByOthers => event(
            EventReason::NodeReleased,
            format!("released node {node}: its NodeMaintenance was deleted by someone else"),
        ),
        Ending::TimedOut => warning(
            EventReason::NodeFailed,
            format!(
                "node {node} failed: not released within nodeTimeout {}",
                human(policy.node_timeout)
            ),
        ),
        Ending::Aborted => event(
            EventReason::NodeReleased,
            format!(
                "released node {node}: window ended with onWindowEnd Abort; it will be retried in the next window"
            ),
        ),
        Ending::NodeGone => event(
            EventReason::NodeReleased,
            format!("released node {node}: the Node was deleted"),
        ),
    }
}

/// The control-plane nodes of the input as the quorum rule reads them: the role label, the
/// Ready condition and `spec.unschedulable`.
fn control_plane_nodes(nodes: &[NodeView]) -> Vec<k8s_openapi::api::core::v1::Node> {
    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    nodes
        .iter()
        .filter(|n| n.control_plane)
        .map(|n| Node {
            metadata: ObjectMeta {
                name: Some(n.name.clone()),
                labels: Some(BTreeMap::from([(
                    crate::controller::quorum::CONTROL_PLANE_LABELS[0].to_string(),
                    String::new(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(!n.schedulable),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".to_string(),
                    status: if n.ready { "True" } else { "False" }.to_string(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        })
        .collect()
}

fn to_create(input: &PlanInput, node: &str) -> NodeMaintenanceToCreate {
    NodeMaintenanceToCreate {
        name: nm_name(&input.window, node),
        node: node.to_string(),
        reason: input.policy.reason.clone(),
    }
}

fn event(reason: EventReason, message: String) -> RolloutEvent {
    RolloutEvent {
        reason,
        message,
        warning: false,
    }
}

fn warning(reason: EventReason, message: String) -> RolloutEvent {
    RolloutEvent {
        reason,
        message,
        warning: true,
    }
}

fn span(w: &WindowOccurrence) -> String {
    // UTC to the second: Events are read by people, and the zone is in the spec.
    let fmt = "%Y-%m-%d %H:%M:%S UTC";
    format!("{} - {}", w.start.format(fmt), w.end.format(fmt))
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// A duration the way a spec writes it (`1h30m`, `45s`).
fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs == 0 {
        return "0s".to_string();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}
