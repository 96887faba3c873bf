//! `nmo validate`: check manifests offline, for CI on pull requests.

use crate::manifest::Document;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check every NodeMaintenance and MaintenanceWindow in FILE… and report each problem as
/// `file:document-index: field: message`. Exits 1 when any problem is found, 0 otherwise.
/// Documents of other kinds are ignored, so a whole kustomize directory can be passed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files or directories (read recursively: .yaml, .yml, .json).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// One problem found in a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `file:document-index`.
    pub location: String,
    /// The field path, such as `spec.timeZone`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.field, self.message)
    }
}

/// Run `nmo validate`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let docs = crate::manifest::load_paths(&args.files)?;
    let problems: Vec<Problem> = docs.iter().flat_map(check_document).collect();
    for problem in &problems {
        println!("{problem}");
    }
    let ours = docs
        .iter()
        .filter(|d| d.api_version().split('/').next() == Some(crate::api::GROUP))
        .count();
    if problems.is_empty() {
        eprintln!(
            "{} document(s) read, {ours} NodeMaintenance/MaintenanceWindow checked, no problems",
            docs.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} problem(s) found", problems.len());
        Ok(ExitCode::from(1))
    }
}

/// Check one document with the admission rules ([`crate::admission::validate_manifest`]).
/// Documents outside nmo's API group are not ours and pass.
pub fn check_document(doc: &Document) -> Vec<Problem> {
    crate::admission::validate_manifest(&doc.value)
        .into_iter()
        .map(|e| Problem {
            location: doc.location(),
            field: e.field,
            message: e.message,
        })
        .collect()
}
