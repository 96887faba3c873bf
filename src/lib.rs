//! nmo: a Kubernetes operator for node maintenance.
//!
//! It reconciles medik8s-compatible `NodeMaintenance` objects (cordon and drain one node) and
//! `MaintenanceWindow` objects (cron windows that roll NodeMaintenances over a node selector,
//! never more than a budget at once). See the README for the tour.

pub mod admission;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod drain;
pub mod gate;
pub mod kubelet;
pub mod manifest;
pub mod rollout;
pub mod sandbox;
pub mod schedule;
pub mod shutdown;
pub mod simulate;
pub mod telemetry;
