//! The node side of a cluster, simulated: what kubelets, the scheduler and the node lifecycle
//! controller do.
//!
//! - [`model`]: the pure decisions (node and pod status, Ready, reboot, scheduling), shared by
//!   the sandbox's built-in kubelet and the simulator.
//! - [`simulator`]: a kubelet simulator that drives any API server through kube-rs, so nmo
//!   can be run and tested on a real kube-apiserver where no kubelet can run.

pub mod model;
pub mod simulator;

pub use simulator::{KubeletSimulator, SimulatorConfig, SimulatorHandle};
