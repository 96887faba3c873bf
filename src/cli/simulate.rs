//! `nmo simulate`: the real controllers on an in-process sandbox cluster.

use std::process::ExitCode;

/// Start the in-process sandbox API server, seed it with simulated nodes, pods and PDBs, apply
/// the given manifests and run the real controllers on a virtual clock.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run `nmo simulate`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    super::not_built_yet("simulate")
}
