//! The kube-runtime controllers.
