//! `nmo simulate`: the real controllers on an in-process sandbox cluster, on a virtual clock.

use crate::api::MaintenanceWindow;
use crate::clock::{Clock, VirtualClock};
use crate::controller::{Clients, ControllerConfig};
use crate::kubelet::{KubeletSimulator, SimulatorConfig};
use crate::sandbox::Sandbox;
use crate::simulate::progress::{PlainDisplay, QuietDisplay, TerminalDisplay};
use crate::simulate::{Display, EMBEDDED_EXAMPLES, Scenario, Seed, Target};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Start the in-process sandbox API server, seed it with simulated nodes, pods and a PDB (or a
/// snapshot of a real cluster), apply the given manifests (by default the embedded example
/// MaintenanceWindows) and run the real controllers on a virtual clock.
///
/// Without --serve it plays --for of virtual time (default a week): the clock runs --speed
/// times faster while nodes are being maintained and skips ahead between windows. It prints
/// every MaintenanceWindow Event as it happens and ends with a summary. It exits 1 if a
/// window's budget was ever exceeded.
///
/// With --serve it keeps the sandbox up until SIGINT or SIGTERM and writes a kubeconfig, so
/// kubectl (or `nmo run --kubeconfig`) can be pointed at it; the clock then runs at --speed
/// (default 1) without skipping.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifests to apply (files or directories). Default without --serve: the embedded
    /// examples' MaintenanceWindows (weekly-workers, nightly-gpu-reboot).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Serve the sandbox until interrupted (SIGINT or SIGTERM) instead of playing a scenario.
    #[arg(long)]
    pub serve: bool,
    /// How many nodes to seed, in all. They are split between the roles the manifests' windows
    /// select (workers and GPU nodes for the examples), with zones, workloads and PDBs.
    #[arg(long, default_value_t = 9)]
    pub nodes: usize,
    /// How many of the nodes are GPU nodes (labelled nvidia.com/gpu.present=true)
    /// [default: --gpu-share of them when a window selects GPU nodes, otherwise none].
    #[arg(long, value_name = "N")]
    pub gpu_nodes: Option<usize>,
    /// The share of the nodes that are GPU nodes when a window selects them and --gpu-nodes is
    /// not given, from 0 to 1.
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0 / 3.0)]
    pub gpu_share: f64,
    /// Pods per generated node, in all: each node gets pods of a `filler` ReplicaSet
    /// (namespace `apps`, grace 30 s, no PDB) besides its usual web, api, batch and DaemonSet
    /// pods, up to this many (for scale runs: `--nodes 5000 --pods-per-node 30` is 150,000
    /// pods). Not with --cluster-kubeconfig.
    #[arg(long, value_name = "N", conflicts_with_all = ["snapshot", "cluster_kubeconfig"])]
    pub pods_per_node: Option<usize>,
    /// How long a simulated reboot takes (NotReady, then Ready with a new bootID), as a Go
    /// duration. The node agent reboots every drained node 3 minutes after its drain.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub reboot_time: String,
    /// How long after its drain the simulated person deletes an ad-hoc NodeMaintenance (one
    /// not made by a window), as a Go duration.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub ad_hoc_hold: String,
    /// Output: `text` (live progress and a summary) or `json` (only the report, as JSON).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Seed from a snapshot (`kubectl get nodes,pods,pdb -A -o yaml`) instead of generated nodes.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Where to write a kubeconfig for the sandbox (required with --serve).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Do not run nmo's controllers (only the API server and its kubelet-like behaviour).
    #[arg(long)]
    pub no_controllers: bool,
    /// Virtual seconds per real second [default: 600, or 1 with --serve].
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Virtual start time, RFC 3339 [default: now].
    #[arg(long, value_name = "RFC3339")]
    pub start: Option<String>,
    /// Virtual time to play, as a Go duration (`168h`), without --serve [default: until every
    /// window has finished a round, at most 15 days].
    #[arg(long = "for", value_name = "DURATION")]
    pub span: Option<String>,
    /// Make a fake alert fire for a span of virtual time, as `START/END`, so that windows with
    /// a `healthGate` are seen to wait: every gate query then returns one series between START
    /// and END, and none outside. Each side is an RFC 3339 time or a Go duration after --start
    /// (`--fake-alert 26h/27h30m`). Repeatable. Without it, a window's `healthGate` blocks with
    /// PrometheusNotConfigured, as `nmo run` does with no `prometheus.url`.
    #[arg(long = "fake-alert", value_name = "START/END")]
    pub fake_alerts: Vec<String>,
    /// Operator-wide cap on window-generated NodeMaintenances.
    #[arg(long, value_name = "N")]
    pub max_concurrent_maintenances: Option<u32>,
    /// Port on 127.0.0.1 (default: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub http: bool,
    /// Play the scenario on the API server of this kubeconfig instead of the sandbox, with the
    /// kubelet simulator registering the generated nodes and playing their kubelets. Meant for
    /// a test control plane without kubelets (`tests/control-plane/run`): it creates Nodes,
    /// workloads, nmo's CRDs and the manifests there.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["serve", "snapshot", "kubeconfig", "no_controllers", "port", "http"])]
    pub cluster_kubeconfig: Option<PathBuf>,
}

/// The output format of a scenario run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Live progress, then a summary.
    Text,
    /// Only the report, as JSON.
    Json,
}

/// One `--fake-alert START/END`: each side an RFC 3339 time or a Go duration after `start`.
fn fake_alert_span(
    span: &str,
    start: DateTime<Utc>,
) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let side = |text: &str| -> anyhow::Result<DateTime<Utc>> {
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(at.with_timezone(&Utc));
        }
        let after = crate::schedule::parse_go_duration(text).map_err(|_| {
            anyhow::anyhow!(
                "--fake-alert {span:?}: {text:?} is neither an RFC 3339 time nor a Go duration after --start"
            )
        })?;
        Ok(start + after)
    };
    let (from, to) = span
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--fake-alert {span:?}: expected START/END"))?;
    let (from, to) = (side(from)?, side(to)?);
    anyhow::ensure!(to > from, "--fake-alert {span:?}: END must be after START");
    Ok((from, to))
}

/// How long a scenario plays at most without --for.
const DEFAULT_LIMIT_HOURS: i64 = 15 * 24;

/// Run `nmo simulate`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let speed = args.speed.unwrap_or(if args.serve { 1.0 } else { 600.0 });
    if !(speed.is_finite() && speed > 0.0) {
        anyhow::bail!("--speed {speed}: must be a number greater than 0");
    }
    let start: DateTime<Utc> = match &args.start {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| {
                format!("--start {s:?}: not an RFC 3339 time such as 2026-11-28T00:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let (span, until_rounds_done) = match &args.span {
        Some(text) => (
            crate::schedule::parse_go_duration(text).with_context(|| format!("--for {text:?}"))?,
            false,
        ),
        None => (chrono::Duration::hours(DEFAULT_LIMIT_HOURS), true),
    };
    let reboot_time = crate::schedule::parse_go_duration(&args.reboot_time)
        .with_context(|| format!("--reboot-time {:?}", args.reboot_time))?;
    let ad_hoc_hold = crate::schedule::parse_go_duration(&args.ad_hoc_hold)
        .with_context(|| format!("--ad-hoc-hold {:?}", args.ad_hoc_hold))?;
    if !(0.0..=1.0).contains(&args.gpu_share) {
        anyhow::bail!("--gpu-share {}: must be between 0 and 1", args.gpu_share);
    }
    let kubeconfig = match (args.serve, &args.kubeconfig) {
        (true, None) => {
            anyhow::bail!("--serve needs --kubeconfig PATH to write the sandbox's kubeconfig to")
        }
        (_, k) => k.clone(),
    };
    // Read the manifests before starting anything, so bad input fails fast.
    // A scenario with no manifests plays the embedded examples; a served sandbox starts empty
    // of windows, for the user to apply their own with kubectl.
    let manifests: Vec<(String, String)> = if args.files.is_empty() && !args.serve {
        EMBEDDED_EXAMPLES
            .iter()
            .map(|(n, y)| (n.to_string(), y.to_string()))
            .collect()
    } else {
        let docs = crate::manifest::load_paths(&args.files)?;
        // The same rules as `nmo validate`, so a bad window is named before anything starts.
        let problems: Vec<String> = docs
            .iter()
            .flat_map(|d| {
                crate::admission::validate_manifest(&d.value)
                    .into_iter()
                    .map(move |p| format!("{}: {p}", d.location()))
            })
            .collect();
        if let Some(first) = problems.first() {
            anyhow::bail!(
                "{first}{}",
                match problems.len() {
                    1 => String::new(),
                    n => format!(
                        " (and {} more problem(s); `nmo validate` lists them all)",
                        n - 1
                    ),
                }
            );
        }
        docs.into_iter()
            .map(|d| {
                (
                    d.location(),
                    serde_yaml::to_string(&d.value).unwrap_or_default(),
                )
            })
            .collect()
    };
    let seed = match &args.snapshot {
        Some(path) => Seed::Snapshot(read_snapshot(path)?),
        None => {
            let windows = windows_of(&manifests);
            let roles = crate::simulate::seed::roles_of(&windows);
            let split = crate::simulate::seed::split_nodes(
                &roles,
                args.nodes,
                args.gpu_nodes,
                args.gpu_share,
            );
            let mut nodes = crate::simulate::seed::generated_nodes(&split);
            if let Some(per_node) = args.pods_per_node {
                crate::simulate::seed::fill_pods(&mut nodes, per_node);
            }
            Seed::Generated(nodes)
        }
    };
    let agent = (reboot_time, ad_hoc_hold, args.output);
    let mut controllers = ControllerConfig::default();
    if !args.fake_alerts.is_empty() {
        let gate = crate::gate::ScriptedGate::new();
        for span in &args.fake_alerts {
            let (from, to) = fake_alert_span(span, start)?;
            gate.firing_between(from, to);
        }
        controllers.maintenance_window.gate = crate::gate::GateBackend::Scripted(gate);
    }
    controllers.maintenance_window.max_concurrent_maintenances = args.max_concurrent_maintenances;
    scale_drain_timers(&mut controllers, speed);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(path) = args.cluster_kubeconfig.clone() {
        return runtime.block_on(play_on_cluster(
            path,
            seed,
            manifests,
            (start, span, speed, until_rounds_done),
            agent,
            controllers,
        ));
    }
    runtime.block_on(async move {
        let clock = VirtualClock::new(start, speed);
        // Virtual time stands still while the cluster is seeded (5,000 nodes take seconds,
        // hours at 600x); the scenario or --serve starts it.
        clock.set_pace(0.0);
        let sandbox = Sandbox::builder()
            .https(!args.http)
            .port(args.port)
            .speed(speed)
            .clock(Arc::new(clock.clone()))
            .start()
            .await
            .context("cannot start the sandbox")?;
        sandbox
            .install_crds()
            .context("cannot install nmo's CRDs")?;
        crate::simulate::seed(&sandbox, &seed).context("cannot seed the sandbox")?;
        for (location, yaml) in &manifests {
            // `{e}` alone: the sandbox's message already carries its cause.
            sandbox
                .apply_yaml(yaml)
                .map_err(|e| anyhow::anyhow!("{location}: rejected by the API server: {e}"))?;
        }
        if let Some(path) = &kubeconfig {
            sandbox
                .write_kubeconfig(path)
                .context("cannot write the kubeconfig")?;
        }
        if args.serve {
            let code = serve(&sandbox, &clock, &args, controllers, kubeconfig.as_ref()).await?;
            sandbox.shutdown().await;
            return Ok(code);
        }
        if args.no_controllers {
            anyhow::bail!(
                "--no-controllers only makes sense with --serve: a scenario runs the controllers"
            );
        }
        let target = Target::Sandbox(sandbox);
        let code = play(
            &target,
            &clock,
            (start, span, speed, until_rounds_done),
            agent,
            controllers,
        )
        .await?;
        if let Target::Sandbox(sandbox) = target {
            sandbox.shutdown().await;
        }
        Ok(code)
    })
}

/// The scenario on another API server: the kubelet simulator registers the generated nodes,
/// then nmo's CRDs, the workloads and the manifests are applied there.
async fn play_on_cluster(
    path: PathBuf,
    seed: Seed,
    manifests: Vec<(String, String)>,
    (start, span, speed, until_rounds_done): Span,
    agent: Agent,
    controllers: ControllerConfig,
) -> anyhow::Result<ExitCode> {
    let config = crate::cli::run::client_config(Some(&path), None).await?;
    let client = kube::Client::try_from(config.clone())
        .with_context(|| format!("{}: cannot build a client", path.display()))?;
    let simulator = KubeletSimulator::new(
        client.clone(),
        SimulatorConfig {
            speed,
            ..Default::default()
        },
    );
    let loops = simulator.start();
    crate::simulate::install_crds_on_cluster(&client)
        .await
        .context("cannot install nmo's CRDs")?;
    crate::simulate::seed_cluster(&client, &simulator, &seed)
        .await
        .context("cannot seed the cluster")?;
    for (location, yaml) in &manifests {
        crate::simulate::apply_to_cluster(&client, location, yaml).await?;
    }
    println!(
        "nmo simulate: on {} with {} simulated nodes",
        config.cluster_url,
        simulator.nodes().len()
    );
    let clock = VirtualClock::new(start, speed);
    let target = Target::Cluster {
        config: Box::new(config),
        simulator,
        loops,
    };
    play(
        &target,
        &clock,
        (start, span, speed, until_rounds_done),
        agent,
        controllers,
    )
    .await
}

async fn serve(
    sandbox: &Sandbox,
    clock: &VirtualClock,
    args: &Args,
    controllers: ControllerConfig,
    kubeconfig: Option<&PathBuf>,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "sandbox serving at {} with {} nodes; kubeconfig written to {}",
        sandbox.url(),
        sandbox.list("v1", "Node").len(),
        kubeconfig
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    eprintln!(
        "fault injection: kubectl create --raw /sandbox/faults -f RULE.json, kubectl get --raw /sandbox/faults, kubectl delete --raw /sandbox/faults (see the README)"
    );
    clock.set_pace(1.0);
    let handle = if args.no_controllers {
        eprintln!("controllers: off (--no-controllers)");
        None
    } else {
        let clients = Clients::from_config(sandbox.client_config()?)
            .context("cannot build the controllers' clients")?;
        eprintln!(
            "controllers: NodeMaintenance and MaintenanceWindow, clock at {}x from {}",
            clock.speed(),
            clock.now().to_rfc3339()
        );
        Some(crate::controller::start(
            clients,
            Arc::new(clock.clone()),
            controllers,
        ))
    };
    wait_for_signal().await?;
    eprintln!("shutting down");
    if let Some(handle) = handle {
        handle.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The drain's retry and re-eviction timers run in real time; on the virtual clock they must
/// last as long in virtual time as they do in a cluster, or a PDB's refusal at 600x would
/// wait ten virtual minutes before its retry.
fn scale_drain_timers(controllers: &mut ControllerConfig, speed: f64) {
    let drain = &mut controllers.node_maintenance.drain;
    let scale = |d: std::time::Duration| {
        std::time::Duration::from_secs_f64(d.as_secs_f64() / speed)
            .max(std::time::Duration::from_millis(5))
    };
    drain.retry_initial = scale(drain.retry_initial);
    drain.retry_max = scale(drain.retry_max);
    drain.reevict_after = scale(drain.reevict_after);
}

/// Start, span, speed, and whether to stop once every window finished a round.
type Span = (DateTime<Utc>, chrono::Duration, f64, bool);
/// Reboot time, ad-hoc hold, output.
type Agent = (chrono::Duration, chrono::Duration, Output);

async fn play(
    target: &Target,
    clock: &VirtualClock,
    (start, span, speed, until_rounds_done): Span,
    (reboot_time, ad_hoc_hold, output): Agent,
    controllers: ControllerConfig,
) -> anyhow::Result<ExitCode> {
    let mut display: Box<dyn Display> = match output {
        Output::Json => Box::new(QuietDisplay),
        Output::Text if std::io::stdout().is_terminal() => Box::new(TerminalDisplay::default()),
        Output::Text => Box::new(PlainDisplay),
    };
    display.line(format!(
        "nmo simulate: {} from {}, {speed}x while nodes are in maintenance",
        if until_rounds_done {
            format!(
                "until every window has finished a round (at most {})",
                crate::schedule::format_duration(span)
            )
        } else {
            format!("{} of virtual time", crate::schedule::format_duration(span))
        },
        start.format("%Y-%m-%d %H:%M UTC")
    ));
    let scenario = Scenario {
        start,
        span,
        until_rounds_done,
        speed,
        reboot_after: chrono::Duration::minutes(3),
        reboot_time,
        ad_hoc_hold,
        controllers,
    };
    let report = crate::simulate::run_scenario(target, clock, &scenario, display.as_mut()).await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot write the report")?
        ),
        Output::Text => print!("{}", crate::simulate::render_report(&report)),
    }
    if report.budget_violations.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: budget exceeded by {}",
            report.budget_violations.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

/// The MaintenanceWindows among the manifests (the others, and any that do not parse, are
/// left to the API server to judge).
fn windows_of(manifests: &[(String, String)]) -> Vec<MaintenanceWindow> {
    manifests
        .iter()
        .flat_map(|(_, yaml)| {
            crate::manifest::parse_documents(std::path::Path::new("<manifest>"), yaml)
                .unwrap_or_default()
        })
        .filter(|d| d.value.get("kind").and_then(|k| k.as_str()) == Some("MaintenanceWindow"))
        .filter_map(|d| serde_json::from_value(d.value).ok())
        .collect()
}

/// Read a snapshot and check that it is Kubernetes objects with at least one Node, naming the
/// file and document of the first problem.
fn read_snapshot(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let docs = crate::manifest::parse_documents(path, &text)?;
    for d in &docs {
        let field = |f: &str| d.value.get(f).and_then(|v| v.as_str()).unwrap_or("");
        if field("apiVersion").is_empty() || field("kind").is_empty() {
            anyhow::bail!(
                "{}: not a Kubernetes object (no apiVersion and kind); a snapshot is the output of `kubectl get nodes,pods,pdb -A -o yaml`",
                d.location()
            );
        }
        if d.value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .is_none()
        {
            anyhow::bail!(
                "{}: a {} without metadata.name",
                d.location(),
                field("kind")
            );
        }
    }
    if !docs
        .iter()
        .any(|d| d.value.get("kind").and_then(|k| k.as_str()) == Some("Node"))
    {
        anyhow::bail!(
            "{}: no Node in the snapshot; make it with `kubectl get nodes,pods,pdb -A -o yaml`",
            path.display()
        );
    }
    Ok(text)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
