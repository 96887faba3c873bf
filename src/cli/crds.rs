//! `nmo crds`: print every CRD as YAML, or write them into a directory.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print the NodeMaintenance and MaintenanceWindow CRDs as one multi-document YAML stream.
///
/// `crds/` in the repository is exactly this output, one file per CRD; a test fails when it
/// drifts. Regenerate it with `nmo crds --write crds/`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one file per CRD (`<plural>.<group>.yaml`) into DIR instead of printing.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// Run `nmo crds`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.write {
        None => print!("{}", crate::api::crds_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create directory", dir.display()))?;
            for (file, yaml) in crate::api::crd_files()? {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
