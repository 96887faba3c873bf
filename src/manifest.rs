//! Reading Kubernetes manifests from files and directories, as `nmo plan`, `nmo validate` and
//! `nmo simulate` do.
//!
//! Multi-document YAML and JSON are accepted, and `kind: List` documents (the output of
//! `kubectl get -o yaml`) are expanded into their items. Directories are read recursively,
//! taking `.yaml`, `.yml` and `.json` files in name order.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why manifests could not be read. Each variant renders as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file or directory could not be read.
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        /// Kept out of the error chain so the one-line rendering does not repeat it.
        error: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("{path}:{index}: invalid YAML{location}: {message}")]
    Parse {
        path: PathBuf,
        /// Zero-based index of the document in the file.
        index: usize,
        /// ` at line L column C`, when known.
        location: String,
        message: String,
    },
}

/// One document of a manifest file.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file it came from.
    pub path: PathBuf,
    /// Zero-based index of the document in its file (items of a `List` share their list's index).
    pub index: usize,
    /// The document.
    pub value: Value,
}

impl Document {
    /// `apiVersion` of the document, or "".
    pub fn api_version(&self) -> &str {
        self.value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    /// `kind` of the document, or "".
    pub fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("")
    }
    /// `metadata.name`, or "".
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    /// `file:index`, the way problems are located in messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.path.display(), self.index)
    }
}

/// Read every document from the given files and directories.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|error| ManifestError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        if meta.is_dir() {
            for file in manifest_files(path)? {
                docs.extend(load_file(&file)?);
            }
        } else {
            docs.extend(load_file(path)?);
        }
    }
    Ok(docs)
}

/// Read every document of one file.
pub fn load_file(path: &Path) -> Result<Vec<Document>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse_documents(path, &text)
}

/// Parse a multi-document YAML (or JSON) text; `path` is used only in errors and locations.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            index,
            // serde_yaml's message already ends with "at line L column C".
            location: String::new(),
            message: first_line(&e.to_string()),
        })?;
        match value {
            Value::Null => {} // empty document, e.g. a trailing `---`
            Value::Object(_) if is_list(&value) => {
                let items = value.get("items").and_then(Value::as_array).cloned();
                for item in items.unwrap_or_default() {
                    docs.push(Document {
                        path: path.to_path_buf(),
                        index,
                        value: item,
                    });
                }
            }
            Value::Object(_) => docs.push(Document {
                path: path.to_path_buf(),
                index,
                value,
            }),
            other => {
                return Err(ManifestError::Parse {
                    path: path.to_path_buf(),
                    index,
                    location: String::new(),
                    message: format!(
                        "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                        json_type(&other)
                    ),
                });
            }
        }
    }
    Ok(docs)
}

fn is_list(v: &Value) -> bool {
    v.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_err = |error| ManifestError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(manifest_files(&entry)?);
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_are_expanded() {
        let text = "---\napiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: b}}\n- {apiVersion: v1, kind: Node, metadata: {name: c}}\n";
        let docs = parse_documents(Path::new("x.yaml"), text).unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name().to_string()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(docs[1].location(), "x.yaml:2");
    }

    #[test]
    fn invalid_yaml_names_file_document_and_line() {
        let err =
            parse_documents(Path::new("bad.yaml"), "a: b\n---\nkind: [unclosed\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.yaml:1: invalid YAML: "), "{msg}");
        assert!(msg.contains("at line 3"), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn scalar_document_is_rejected() {
        let err = parse_documents(Path::new("s.yaml"), "just a string\n").unwrap_err();
        assert!(
            err.to_string().contains("expected a Kubernetes object"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load_paths(&["/nonexistent/nmo.yaml"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/nmo.yaml: cannot read:"),
            "{err}"
        );
    }
}
