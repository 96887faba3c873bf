//! The in-process Kubernetes API server (see SANDBOX-API.md).
