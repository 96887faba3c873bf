//! `nmo run`: the operator.

use std::path::PathBuf;
use std::process::ExitCode;

/// Run the operator against a cluster: the NodeMaintenance and MaintenanceWindow controllers.
/// Uses in-cluster configuration, or the kubeconfig given with --kubeconfig or $KUBECONFIG.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to a kubeconfig; defaults to in-cluster config, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Run `nmo run`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    super::not_built_yet("run")
}
