//! The `nmo` command line: argument parsing and dispatch. Each command lives in its own file
//! with its `Args` and a `run` function; errors are reported here as one line on stderr.

pub mod crds;
pub mod plan;
pub mod run;
pub mod simulate;
pub mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// nmo: node maintenance for Kubernetes. A drop-in replacement for the medik8s Node
/// Maintenance Operator, plus scheduled rolling maintenance windows.
#[derive(Debug, Parser)]
#[command(name = "nmo", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The nmo commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against a cluster (in-cluster config or a kubeconfig).
    Run(run::Args),
    /// Print every CRD as YAML (the content of crds/).
    Crds(crds::Args),
    /// Show, offline, when MaintenanceWindows open and which nodes each window takes.
    Plan(plan::Args),
    /// Check manifests with the admission rules, offline; for CI on pull requests.
    Validate(validate::Args),
    /// Run the real controllers against an in-process sandbox cluster on a virtual clock.
    Simulate(simulate::Args),
}

/// Parse the command line, run the command, and turn any error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` renders the whole context chain on one line: "a: b: c".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Report a command-line error: help and version as clap prints them, anything else as one
/// line on stderr (clap's message without its usage block), with clap's exit code (2).
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    eprintln!("{}", one_line(&err.render().to_string()));
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// The first paragraph of a clap message on one line: "error: the following required
/// arguments were not provided:\n  --x <X>" becomes "... provided: --x <X>".
fn one_line(message: &str) -> String {
    message
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_fold_into_one_line() {
        let err = Cli::try_parse_from(["nmo", "run", "--metrics-bind-address", "80"]).unwrap_err();
        let line = one_line(&err.render().to_string());
        assert!(
            line.starts_with(
                "error: invalid value '80' for '--metrics-bind-address <ADDR>': no port"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let err = Cli::try_parse_from(["nmo", "run", "--bogus"]).unwrap_err();
        assert_eq!(
            one_line(&err.render().to_string()),
            "error: unexpected argument '--bogus' found"
        );
    }
}
