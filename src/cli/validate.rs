//! `nmo validate`: check manifests offline, for CI on pull requests.

use crate::api::{MaintenanceWindow, NodeMaintenance};
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
    if problems.is_empty() {
        eprintln!("{} document(s) checked, no problems", docs.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} problem(s) found", problems.len());
        Ok(ExitCode::from(1))
    }
}

/// Check one document. Documents outside nmo's API group are not ours and pass.
pub fn check_document(doc: &Document) -> Vec<Problem> {
    let problem = |field: &str, message: String| Problem {
        location: doc.location(),
        field: field.to_string(),
        message,
    };
    let group = doc.api_version().split('/').next().unwrap_or("");
    if group != crate::api::GROUP {
        return Vec::new();
    }
    match (doc.api_version(), doc.kind()) {
        ("nodemaintenance.medik8s.io/v1beta1", "NodeMaintenance") => {
            match serde_json::from_value::<NodeMaintenance>(doc.value.clone()) {
                Ok(_) => Vec::new(),
                Err(e) => vec![problem("spec", format!("cannot be read: {e}"))],
            }
        }
        ("nodemaintenance.medik8s.io/v1alpha1", "MaintenanceWindow") => {
            match serde_json::from_value::<MaintenanceWindow>(doc.value.clone()) {
                Ok(_) => Vec::new(),
                Err(e) => vec![problem("spec", format!("cannot be read: {e}"))],
            }
        }
        (api_version, kind) => vec![problem(
            "kind",
            format!(
                "unknown kind {kind:?} in {api_version:?}: nmo serves NodeMaintenance (nodemaintenance.medik8s.io/v1beta1) and MaintenanceWindow (nodemaintenance.medik8s.io/v1alpha1)"
            ),
        )],
    }
}
