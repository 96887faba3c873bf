//! `nmo simulate`: the real controllers on an in-process sandbox cluster, on a virtual clock.

use crate::clock::{Clock, VirtualClock};
use crate::controller::{Clients, ControllerConfig};
use crate::kubelet::{KubeletSimulator, SimulatorConfig};
use crate::sandbox::Sandbox;
use crate::simulate::{EMBEDDED_EXAMPLES, Scenario, Seed, Target};
use anyhow::Context;
use chrono::{DateTime, Utc};
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
    /// How many worker nodes to seed (labelled node-role.kubernetes.io/worker).
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// How many GPU nodes to seed (labelled nvidia.com/gpu.present=true).
    #[arg(long, default_value_t = 3)]
    pub gpu_nodes: usize,
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
    /// Virtual time to play, as a Go duration (`168h`), without --serve.
    #[arg(long = "for", value_name = "DURATION", default_value = "168h")]
    pub span: String,
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
    let span = crate::schedule::parse_go_duration(&args.span)
        .with_context(|| format!("--for {:?}", args.span))?;
    let kubeconfig = match (args.serve, &args.kubeconfig) {
        (true, None) => {
            anyhow::bail!("--serve needs --kubeconfig PATH to write the sandbox's kubeconfig to")
        }
        (_, k) => k.clone(),
    };
    let seed = match &args.snapshot {
        Some(path) => Seed::Snapshot(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?,
        ),
        None => Seed::Generated {
            workers: args.nodes,
            gpus: args.gpu_nodes,
        },
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
    let mut controllers = ControllerConfig::default();
    controllers.maintenance_window.max_concurrent_maintenances = args.max_concurrent_maintenances;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(path) = args.cluster_kubeconfig.clone() {
        return runtime.block_on(play_on_cluster(
            path,
            seed,
            manifests,
            (start, span, speed),
            controllers,
        ));
    }
    runtime.block_on(async move {
        let clock = VirtualClock::new(start, speed);
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
        let code = play(&target, &clock, start, span, speed, controllers).await?;
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
    (start, span, speed): (DateTime<Utc>, chrono::Duration, f64),
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
    play(&target, &clock, start, span, speed, controllers).await
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
        args.nodes + args.gpu_nodes,
        kubeconfig
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    eprintln!(
        "fault injection: kubectl create --raw /sandbox/faults -f RULE.json, kubectl get --raw /sandbox/faults, kubectl delete --raw /sandbox/faults (see the README)"
    );
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

async fn play(
    target: &Target,
    clock: &VirtualClock,
    start: DateTime<Utc>,
    span: chrono::Duration,
    speed: f64,
    controllers: ControllerConfig,
) -> anyhow::Result<ExitCode> {
    println!(
        "nmo simulate: {} of virtual time from {}, {speed}x while nodes are in maintenance",
        crate::schedule::format_duration(span),
        start.format("%Y-%m-%d %H:%M UTC")
    );
    let scenario = Scenario {
        start,
        span,
        speed,
        reboot_after: chrono::Duration::minutes(3),
        controllers,
    };
    let mut print = |line: String| println!("{line}");
    let summary = crate::simulate::run_scenario(target, clock, &scenario, &mut print).await?;
    print!("{}", crate::simulate::render_summary(&summary));
    let violations = summary.budget_violations();
    if violations.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: budget exceeded by {}", violations.join(", "));
        Ok(ExitCode::from(1))
    }
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
