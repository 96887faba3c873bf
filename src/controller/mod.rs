//! The kube-runtime controllers.

pub mod maintenance_window;
