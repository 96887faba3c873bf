//! `nmo simulate`: the real controllers on an in-process sandbox cluster.
//!
//! This first version serves a seeded sandbox (`--serve`) for kubectl or `nmo run` to point
//! at; scenario running on a virtual clock comes with the simulate issue.

use crate::sandbox::{NewPod, Sandbox};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

/// Start the in-process sandbox API server, seed it with simulated nodes, pods and PDBs, apply
/// the given manifests and run the real controllers on a virtual clock.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve the sandbox until interrupted (SIGINT or SIGTERM).
    #[arg(long)]
    pub serve: bool,
    /// How many worker nodes to seed.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where to write a kubeconfig for the sandbox.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Do not run nmo's controllers (only the API server and its kubelet-like behaviour).
    #[arg(long)]
    pub no_controllers: bool,
    /// Port on 127.0.0.1 (default: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub http: bool,
}

/// Run `nmo simulate`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.serve {
        anyhow::bail!("nothing to do: pass --serve (scenario runs come in a later version of nmo)");
    }
    let kubeconfig = args
        .kubeconfig
        .clone()
        .context("--serve needs --kubeconfig PATH to write the sandbox's kubeconfig to")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, kubeconfig))
}

async fn serve(args: Args, kubeconfig: PathBuf) -> anyhow::Result<ExitCode> {
    let sandbox = Sandbox::builder()
        .https(!args.http)
        .port(args.port)
        .start()
        .await
        .context("cannot start the sandbox")?;
    sandbox
        .install_crds()
        .context("cannot install nmo's CRDs")?;
    seed(&sandbox, args.nodes)?;
    sandbox
        .write_kubeconfig(&kubeconfig)
        .context("cannot write the kubeconfig")?;
    eprintln!(
        "sandbox serving at {} with {} nodes; kubeconfig written to {}",
        sandbox.url(),
        args.nodes,
        kubeconfig.display()
    );
    if args.no_controllers {
        eprintln!("controllers: off (--no-controllers)");
    } else {
        eprintln!("controllers: none run yet in this version of nmo; serving the API only");
    }
    wait_for_signal().await?;
    eprintln!("shutting down");
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Seed `n` worker nodes, each with two pods of the `web` ReplicaSet (under a PDB that allows
/// one disruption) and one pod of the `node-agent` DaemonSet.
fn seed(sandbox: &Sandbox, n: usize) -> anyhow::Result<()> {
    for i in 1..=n {
        let node = format!("worker-{i}");
        sandbox.add_node(&node, &[("node-role.kubernetes.io/worker", "")])?;
        for _ in 0..2 {
            sandbox.create_pod(
                NewPod::new("")
                    .on_node(&node)
                    .label("app", "web")
                    .replica_set("web")
                    .grace_period(30),
            )?;
        }
        sandbox.create_pod(
            NewPod::new("")
                .namespace("kube-system")
                .on_node(&node)
                .label("app", "node-agent")
                .daemon_set("node-agent")
                .grace_period(5),
        )?;
    }
    if n > 0 {
        sandbox.apply_yaml(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: default\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app: web\n",
        )?;
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
