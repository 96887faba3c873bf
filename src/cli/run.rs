//! `nmo run`: the operator.

use crate::clock::SystemClock;
use crate::controller::{self, Clients, ControllerConfig};
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Run the operator against a cluster: the NodeMaintenance controller (medik8s-compatible
/// cordon, lease and drain) and the MaintenanceWindow controller (rolling maintenance in cron
/// windows). Uses the kubeconfig given with --kubeconfig, or else the usual inference:
/// in-cluster configuration, then $KUBECONFIG, then ~/.kube/config.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to a kubeconfig; defaults to in-cluster config, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format: `text` (human-readable) or `json`. The level comes from $RUST_LOG (default
    /// `info`).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The most window-generated NodeMaintenances that may exist at once, all
    /// MaintenanceWindows together (default: no operator-wide cap).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_maintenances: Option<u32>,
    /// Serve NodeMaintenances only, as medik8s does: do not run the MaintenanceWindow
    /// controller.
    #[arg(long)]
    pub no_maintenance_windows: bool,
}

/// Run `nmo run` until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(&args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(operate(args))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Load the client configuration: the given kubeconfig, or kube's inference.
pub async fn client_config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("finding cluster configuration (in-cluster, $KUBECONFIG or ~/.kube/config)"),
    }
}

async fn operate(args: Args) -> anyhow::Result<()> {
    let config = client_config(args.kubeconfig.as_ref()).await?;
    let cluster = config.cluster_url.to_string();
    let clients = Clients::from_config(config).context("building the API client")?;
    tracing::info!(%cluster, "nmo starting");
    let mut config = ControllerConfig::default();
    config.maintenance_window.max_concurrent_maintenances = args.max_concurrent_maintenances;
    config.maintenance_window.enabled = !args.no_maintenance_windows;
    controller::run_all(clients, Arc::new(SystemClock), config, shutdown_signal()).await;
    tracing::info!("nmo stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
