//! `nmo plan`: an offline preview of MaintenanceWindows, for pull requests.
//!
//! For each MaintenanceWindow: the next openings in its zone and in UTC, and, given a node
//! snapshot (`kubectl get nodes -o yaml`), the nodes it selects in round order with the
//! opening each is expected in. Warns when a round cannot finish inside one window and when
//! two windows select the same node. Reading nodes from a live cluster (`--cluster`) is not
//! offered yet: save a snapshot with `kubectl get nodes -o yaml > nodes.yaml` instead.

use crate::admission::validate_manifest;
use crate::api::MaintenanceWindow;
use crate::manifest::Document;
use crate::schedule::{WindowOccurrence, WindowPolicy, format_duration, round_order};
use anyhow::Context;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show, for each MaintenanceWindow in FILE…, the next window openings (in its zone and in
/// UTC), which nodes each window would take and in what order, and when the round should end.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files or directories; kinds other than MaintenanceWindow are ignored.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Node snapshot, as written by `kubectl get nodes -o yaml` (a List or single Nodes).
    #[arg(long, value_name = "SNAPSHOT.yaml")]
    pub nodes: Option<PathBuf>,
    /// Plan from this instant (RFC 3339, such as 2025-06-01T00:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
    /// How many openings to show per window.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Output formats of `nmo plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// JSON, for CI.
    Json,
    /// YAML, for CI.
    Yaml,
}

/// The whole plan, as printed with `-o json` / `-o yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The instant the plan starts from.
    pub from: DateTime<Utc>,
    /// One entry per MaintenanceWindow, in file order.
    pub windows: Vec<WindowPlan>,
    /// Warnings about several windows together (a node selected by two windows).
    pub warnings: Vec<String>,
}

/// The plan for one MaintenanceWindow.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowPlan {
    /// `metadata.name`.
    pub name: String,
    /// `file:document-index`.
    pub source: String,
    /// `spec.schedule`.
    pub schedule: String,
    /// The zone, defaulted.
    pub time_zone: String,
    /// `spec.duration`, normalised.
    pub duration: String,
    /// Estimated time a node holds a slot (release plus minReadySeconds).
    pub per_node_estimate: String,
    /// The window open at `from`, if any.
    pub current_window: Option<Opening>,
    /// The next openings after `from`.
    pub openings: Vec<Opening>,
    /// Only with `--nodes`: the selected nodes, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodePlan>>,
    /// Only with `--nodes`: how many nodes may be unavailable at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<usize>,
    /// Only with `--nodes`: estimated length of a whole round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_estimate: Option<String>,
    /// Openings (between `from` and the last opening shown) that exclusions removed.
    pub skipped_openings: Vec<SkippedOpeningPlan>,
    /// `spec.topologyKey`, if set: nodes are taken one domain at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,
    /// `spec.healthGate`, if set, described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<String>,
    /// Warnings about this window.
    pub warnings: Vec<String>,
}

/// An opening an exclusion removed.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedOpeningPlan {
    /// Would have opened, UTC.
    pub start: DateTime<Utc>,
    /// Would have opened, in the window's zone.
    pub start_local: String,
    /// The exclusion that removed it, described (`spec.exclusions[0] "reason" (...)`).
    pub exclusion: String,
}

/// One opening of a window.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Opening {
    /// Opens, UTC.
    pub start: DateTime<Utc>,
    /// Closes, UTC.
    pub end: DateTime<Utc>,
    /// Opens, in the window's zone.
    pub start_local: String,
    /// Closes, in the window's zone.
    pub end_local: String,
}

/// Where one node is expected to be maintained.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// Node name.
    pub name: String,
    /// 1-based number of the opening in `openings` (0 is the current window), or none if it
    /// is not reached within the openings shown.
    pub window: Option<usize>,
    /// Estimated start, UTC.
    pub start: Option<DateTime<Utc>>,
    /// Estimated time its slot frees up, UTC.
    pub end: Option<DateTime<Utc>>,
    /// With `spec.topologyKey`: the node's domain ("" without the label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Run `nmo plan`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let from = match &args.from {
        None => Utc::now(),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                anyhow::anyhow!(
                    "--from {text:?}: not an RFC 3339 time such as 2025-06-01T00:00:00Z ({e})"
                )
            })?,
    };
    let docs = crate::manifest::load_paths(&args.files)?;
    let nodes = match &args.nodes {
        None => None,
        Some(path) => Some(load_nodes(path)?),
    };
    let mut windows = Vec::new();
    let mut invalid = 0;
    for doc in docs.iter().filter(|d| is_window(d)) {
        let problems = validate_manifest(&doc.value);
        if !problems.is_empty() {
            for p in problems {
                eprintln!("{}: {p}", doc.location());
            }
            invalid += 1;
            continue;
        }
        let window: MaintenanceWindow = serde_json::from_value(doc.value.clone())
            .with_context(|| format!("{}: cannot read MaintenanceWindow", doc.location()))?;
        let policy = WindowPolicy::from_spec(&window.spec)
            .map_err(|errors| anyhow::anyhow!("{}: {}", doc.location(), errors[0]))?;
        windows.push(plan_window(
            doc,
            &window,
            &policy,
            nodes.as_ref(),
            from,
            usize::from(args.count),
        ));
    }
    if windows.is_empty() && invalid == 0 {
        anyhow::bail!(
            "no MaintenanceWindow ({}/v1alpha1) found in {}",
            crate::api::GROUP,
            args.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let warnings = overlap_warnings(&windows);
    let plan = Plan {
        from,
        windows,
        warnings,
    };
    match args.output {
        Format::Table => print!("{}", render_table(&plan, nodes.is_some())),
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&plan)?),
    }
    if invalid > 0 {
        eprintln!("{invalid} MaintenanceWindow(s) skipped: invalid (see above)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn is_window(doc: &Document) -> bool {
    doc.kind() == "MaintenanceWindow"
        && doc.api_version().split('/').next() == Some(crate::api::GROUP)
}

/// Node names and labels from a snapshot.
fn load_nodes(
    path: &std::path::Path,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let docs = crate::manifest::load_paths(&[path])?;
    let mut nodes = BTreeMap::new();
    for doc in docs.iter().filter(|d| d.kind() == "Node") {
        let node: Node = serde_json::from_value(doc.value.clone())
            .with_context(|| format!("{}: cannot read Node", doc.location()))?;
        let name = node.metadata.name.unwrap_or_default();
        nodes.insert(name, node.metadata.labels.unwrap_or_default());
    }
    if nodes.is_empty() {
        anyhow::bail!(
            "{}: no Node objects found (expected the output of `kubectl get nodes -o yaml`)",
            path.display()
        );
    }
    Ok(nodes)
}

fn opening(policy: &WindowPolicy, o: &WindowOccurrence) -> Opening {
    Opening {
        start: o.start,
        end: o.end,
        start_local: policy.local_string(o.start),
        end_local: policy.local_string(o.end),
    }
}

/// The plan of one window: pure, from the parsed policy, the snapshot and `from`.
fn plan_window(
    doc: &Document,
    window: &MaintenanceWindow,
    policy: &WindowPolicy,
    nodes: Option<&BTreeMap<String, BTreeMap<String, String>>>,
    from: DateTime<Utc>,
    count: usize,
) -> WindowPlan {
    let current = policy.current_window(from);
    let next = policy.next_windows(from, count);
    let mut warnings = Vec::new();
    let per_node = policy.per_node_estimate();
    if policy.on_window_end == crate::api::OnWindowEnd::Abort && per_node > policy.duration {
        warnings.push(format!(
            "with onWindowEnd: Abort no node can finish inside a window: a node needs about {} but a window lasts {}",
            format_duration(per_node),
            format_duration(policy.duration)
        ));
    }
    if policy.suspend {
        warnings.push("suspend is true: no node will be started".to_string());
    }
    let (mut node_plans, mut max_unavailable, mut round_estimate) = (None, None, None);
    if let Some(nodes) = nodes {
        let selected = round_order(
            nodes
                .iter()
                .filter(|(_, labels)| {
                    crate::schedule::selector_matches(&window.spec.node_selector, labels)
                })
                .map(|(name, _)| name.clone()),
        );
        let budget = policy.budget(selected.len());
        let round = policy.round_estimate(selected.len());
        if selected.is_empty() {
            warnings.push("the node selector matches no node in the snapshot".to_string());
        } else if round > policy.duration {
            warnings.push(format!(
                "a round cannot finish inside one window: {} nodes, {} at a time, about {} each, take about {} but a window lasts {}; the round continues in the next window(s)",
                selected.len(),
                budget,
                format_duration(per_node),
                format_duration(round),
                format_duration(policy.duration)
            ));
        }
        // Openings in plan order: the current window (numbered 0) and then 1..=count.
        let mut openings: Vec<WindowOccurrence> = current.into_iter().collect();
        openings.extend(next.iter().copied());
        let offset = usize::from(current.is_none());
        let (placed, domains) = match &policy.topology_key {
            None => (policy.plan_round(&selected, &openings, from), None),
            Some(key) => plan_by_domain(policy, key, &selected, nodes, &openings, from),
        };
        let unplaced = placed.iter().filter(|p| p.window.is_none()).count();
        if unplaced > 0 {
            warnings.push(format!(
                "{unplaced} node(s) are not reached within the {} opening(s) shown",
                openings.len()
            ));
        }
        node_plans = Some(
            placed
                .into_iter()
                .map(|p| NodePlan {
                    domain: domains.as_ref().and_then(|d| d.get(&p.name).cloned()),
                    name: p.name,
                    window: p.window.map(|w| w + offset),
                    start: p.start,
                    end: p.end,
                })
                .collect(),
        );
        max_unavailable = Some(budget);
        round_estimate = Some(format_duration(round));
    }
    WindowPlan {
        name: window.metadata.name.clone().unwrap_or_default(),
        source: doc.location(),
        schedule: window.spec.schedule.clone(),
        time_zone: policy.time_zone.name().to_string(),
        duration: format_duration(policy.duration),
        per_node_estimate: format_duration(per_node),
        current_window: current.map(|o| opening(policy, &o)),
        openings: next.iter().map(|o| opening(policy, o)).collect(),
        nodes: node_plans,
        max_unavailable,
        round_estimate,
        skipped_openings: {
            let until = next.last().map_or(from, |o| o.start);
            policy
                .skipped_openings(from, until, 100)
                .into_iter()
                .map(|s| SkippedOpeningPlan {
                    start: s.start,
                    start_local: policy.local_string(s.start),
                    exclusion: policy
                        .exclusions
                        .iter()
                        .find(|e| e.index == s.exclusion)
                        .map(|e| e.describe())
                        .unwrap_or_default(),
                })
                .collect()
        },
        topology_key: policy.topology_key.clone(),
        health_gate: policy.health_gate.as_ref().map(|g| {
            format!(
                "before each node: PromQL {:?} must return nothing (for {} after it fired)",
                g.query,
                format_duration(g.clear_for)
            )
        }),
        warnings,
    }
}

/// With a topology key: the nodes domain by domain (name order, unlabelled last), each domain
/// planned with the budget resolved against its own size and starting once the previous
/// domain's last node is expected to free its slot.
fn plan_by_domain(
    policy: &WindowPolicy,
    key: &str,
    selected: &[String],
    nodes: &BTreeMap<String, BTreeMap<String, String>>,
    openings: &[WindowOccurrence],
    from: DateTime<Utc>,
) -> (
    Vec<crate::schedule::PlannedNode>,
    Option<BTreeMap<String, String>>,
) {
    let domain_of: BTreeMap<String, String> = selected
        .iter()
        .map(|n| {
            let d = nodes
                .get(n)
                .and_then(|l| l.get(key))
                .cloned()
                .unwrap_or_default();
            (n.clone(), d)
        })
        .collect();
    let mut domains: Vec<String> = domain_of.values().cloned().collect();
    domains.sort_by(crate::rollout::domain_order);
    domains.dedup();
    let mut placed = Vec::new();
    let mut cursor = from;
    for domain in domains {
        let members: Vec<String> = selected
            .iter()
            .filter(|n| domain_of[*n] == domain)
            .cloned()
            .collect();
        let part = policy.plan_round(&members, openings, cursor);
        if let Some(end) = part.iter().filter_map(|p| p.end).max() {
            cursor = end;
        }
        placed.extend(part);
    }
    (placed, Some(domain_of))
}

/// A warning for every node that more than one window selects.
fn overlap_warnings(windows: &[WindowPlan]) -> Vec<String> {
    let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in windows {
        for n in w.nodes.iter().flatten() {
            by_node.entry(&n.name).or_default().push(&w.name);
        }
    }
    by_node
        .into_iter()
        .filter(|(_, ws)| ws.len() > 1)
        .map(|(node, ws)| {
            format!(
                "node {node} is selected by {} windows: {} (while one window maintains it, the other skips it and retries)",
                ws.len(),
                ws.join(", ")
            )
        })
        .collect()
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Left-aligned columns, two spaces apart, each line indented.
fn table(indent: &str, rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_string();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_table(plan: &Plan, have_nodes: bool) -> String {
    let mut out = format!("Plan from {}\n", utc(plan.from));
    for w in &plan.windows {
        out.push_str(&format!(
            "\nMaintenanceWindow {} ({})\n  schedule {:?} in {}, open {} each time, about {} per node\n",
            w.name, w.source, w.schedule, w.time_zone, w.duration, w.per_node_estimate
        ));
        let mut rows = vec![vec![
            "#".to_string(),
            format!("OPENS ({})", w.time_zone),
            format!("CLOSES ({})", w.time_zone),
            "OPENS (UTC)".to_string(),
            "CLOSES (UTC)".to_string(),
        ]];
        let numbered = w
            .current_window
            .iter()
            .map(|o| ("0 (open)".to_string(), o))
            .chain(
                w.openings
                    .iter()
                    .enumerate()
                    .map(|(i, o)| ((i + 1).to_string(), o)),
            );
        for (n, o) in numbered {
            rows.push(vec![
                n,
                o.start_local.clone(),
                o.end_local.clone(),
                utc(o.start),
                utc(o.end),
            ]);
        }
        out.push_str(&table("  ", &rows));
        if !w.skipped_openings.is_empty() {
            out.push_str(
                "  skipped openings:
",
            );
            for s in &w.skipped_openings {
                out.push_str(&format!(
                    "    {} ({}): removed by {}
",
                    s.start_local,
                    utc(s.start),
                    s.exclusion
                ));
            }
        }
        if let Some(gate) = &w.health_gate {
            out.push_str(&format!(
                "  health gate: {gate}
"
            ));
        }
        if let Some(key) = &w.topology_key {
            out.push_str(&format!(
                "  one {key} domain at a time, in name order (nodes without the label last)\n"
            ));
        }
        match &w.nodes {
            Some(nodes) if !nodes.is_empty() => {
                out.push_str(&format!(
                    "  {} node(s), {} at a time, round about {}:\n",
                    nodes.len(),
                    w.max_unavailable.unwrap_or(1),
                    w.round_estimate.as_deref().unwrap_or("?")
                ));
                let mut rows = vec![vec![
                    "ORDER".to_string(),
                    "NODE".to_string(),
                    "WINDOW".to_string(),
                    "EXPECTED START (UTC)".to_string(),
                    "SLOT FREE (UTC)".to_string(),
                ]];
                for (i, n) in nodes.iter().enumerate() {
                    rows.push(vec![
                        (i + 1).to_string(),
                        n.name.clone(),
                        n.window.map_or("later".to_string(), |w| w.to_string()),
                        n.start.map_or("-".to_string(), utc),
                        n.end.map_or("-".to_string(), utc),
                    ]);
                }
                if w.topology_key.is_some() {
                    rows[0].push("DOMAIN".to_string());
                    for (row, n) in rows.iter_mut().skip(1).zip(nodes) {
                        let d = n.domain.as_deref().unwrap_or_default();
                        row.push(if d.is_empty() { "(none)" } else { d }.to_string());
                    }
                }
                out.push_str(&table("    ", &rows));
            }
            Some(_) => {}
            None if !have_nodes => {
                out.push_str("  (pass --nodes SNAPSHOT.yaml to see which nodes it takes)\n")
            }
            None => {}
        }
        for warning in &w.warnings {
            out.push_str(&format!("  warning: {warning}\n"));
        }
    }
    if !plan.warnings.is_empty() {
        out.push('\n');
        for warning in &plan.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
    }
    out
}
