//! `nmo plan`: an offline preview of MaintenanceWindows.

use std::path::PathBuf;
use std::process::ExitCode;

/// Show, for each MaintenanceWindow in FILE…, the next window openings (in its zone and in
/// UTC), which nodes each window would take and in what order, and when the round should end.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files or directories; kinds other than MaintenanceWindow are ignored.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Run `nmo plan`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    super::not_built_yet("plan")
}
