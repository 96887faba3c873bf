//! `nmo run`: the operator, in production shape.
//!
//! One shutdown signal (SIGTERM or SIGINT, [`Shutdown`]) reaches every part: the HTTP servers
//! (metrics, probes, webhook) that run on every replica, the leader elector, the config-file
//! watcher and, on the leader only, the controllers. On that signal the leader stops taking
//! new work, lets the reconciles in flight finish their writes and Events, stops its drains
//! (an eviction already sent is the API server's to complete; the next leader re-lists the
//! node's pods and carries on from the status in the cluster), releases the leader lease so a
//! standby takes over at once, and exits 0. The graceful part is bounded by
//! [`GRACEFUL_STOP`] and the release by [`RELEASE_TIMEOUT`], so the process is gone well
//! within the 10 s a pod is commonly given.
//!
//! A leader that loses its lease (no renewal within the renew deadline, or another holder)
//! aborts its controllers and drains at once, before its lease can expire for the others, and
//! exits 1 so that the Deployment restarts it, as controller-runtime does.

use crate::clock::SystemClock;
use crate::config::{ConfigStatus, ConfigWatcher, FlagOverrides, OperatorConfig};
use crate::controller::leader::{self, LeaderElector, LeaderTimings, LostReason};
use crate::controller::{self, Clients, ControllerConfig, LiveConfig};
use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;
use anyhow::Context as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long the leader's graceful stop (reconciles in flight, drain reports) may take before
/// what is left is aborted.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(6);

/// How long releasing the leader lease may take at shutdown.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the HTTP servers may take to stop after the signal.
const SERVERS_STOP: Duration = Duration::from_secs(1);

/// Run the operator against a cluster: the NodeMaintenance controller (medik8s-compatible
/// cordon, lease and drain) and the MaintenanceWindow controller (rolling maintenance in cron
/// windows), with leader election, a reloadable config file and the metrics, health-probe and
/// webhook servers. Every flag can also be set with an environment variable, `NMO_<FLAG>`
/// (`NMO_LEADER_ELECT=true`); a flag on the command line wins.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to a kubeconfig; defaults to in-cluster config, then $KUBECONFIG, then
    /// ~/.kube/config.
    #[arg(long, env = "NMO_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, env = "NMO_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the leader-election Lease `nmo-leader`. Default: the pod's own namespace
    /// (from its service-account mount), else `nmo-system`.
    #[arg(long, env = "NMO_NAMESPACE", value_name = "NAMESPACE", value_parser = parse_namespace)]
    pub namespace: Option<String>,
    /// Elect a leader among the replicas (Lease `nmo-leader`); only the leader reconciles.
    /// `--leader-elect` alone means true; `--leader-elect=false` is accepted too.
    #[arg(
        long,
        env = "NMO_LEADER_ELECT",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub leader_elect: bool,
    /// Address of the /metrics server: `:PORT`, `HOST:PORT`, or `0` to disable.
    #[arg(
        long,
        env = "NMO_METRICS_BIND_ADDRESS",
        value_name = "ADDR",
        default_value = ":8080"
    )]
    pub metrics_bind_address: BindAddress,
    /// Address of the /healthz and /readyz server: `:PORT`, `HOST:PORT`, or `0` to disable.
    #[arg(
        long,
        env = "NMO_HEALTH_PROBE_BIND_ADDRESS",
        value_name = "ADDR",
        default_value = ":8081"
    )]
    pub health_probe_bind_address: BindAddress,
    /// Address of the validating webhook's HTTPS server: `:PORT`, `HOST:PORT`, or `0` to
    /// disable. Served only with --webhook-cert-dir.
    #[arg(
        long,
        env = "NMO_WEBHOOK_BIND_ADDRESS",
        value_name = "ADDR",
        default_value = ":9443"
    )]
    pub webhook_bind_address: BindAddress,
    /// Directory holding the webhook's `tls.crt` and `tls.key` (a cert-manager secret mount).
    /// Without it, no webhook is served.
    #[arg(long, env = "NMO_WEBHOOK_CERT_DIR", value_name = "DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Operator config file (YAML), reloaded when it changes. Flags win over it.
    #[arg(long, env = "NMO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format. The level comes from $RUST_LOG (default `info`).
    #[arg(long, env = "NMO_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Requests per second this client sends to the API server, on average (all requests,
    /// evictions included).
    #[arg(long, env = "NMO_KUBE_API_QPS", value_name = "QPS", default_value = "20", value_parser = parse_qps, allow_negative_numbers = true)]
    pub kube_api_qps: f64,
    /// Requests this client may send in a burst above --kube-api-qps.
    #[arg(long, env = "NMO_KUBE_API_BURST", value_name = "N", default_value = "30", value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,
    /// The most window-generated NodeMaintenances that may exist at once, all
    /// MaintenanceWindows together (default: the config file's `maxConcurrentMaintenances`,
    /// else no operator-wide cap).
    #[arg(long, env = "NMO_MAX_CONCURRENT_MAINTENANCES", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_maintenances: Option<u32>,
    /// Serve NodeMaintenances only, as medik8s does: do not run the MaintenanceWindow
    /// controller.
    #[arg(long, env = "NMO_NO_MAINTENANCE_WINDOWS")]
    pub no_maintenance_windows: bool,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A server's listen address, as controller-runtime's `--*-bind-address` flags take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindAddress {
    /// `0`: the server is off.
    Disabled,
    /// Listen here. `:8080` means every IPv4 interface (`0.0.0.0:8080`); port 0 picks a free
    /// port.
    Listen(SocketAddr),
}

impl BindAddress {
    /// The address to listen on, unless disabled.
    pub fn socket_addr(self) -> Option<SocketAddr> {
        match self {
            BindAddress::Disabled => None,
            BindAddress::Listen(addr) => Some(addr),
        }
    }
}

impl FromStr for BindAddress {
    type Err = String;

    /// `0` (disabled), `:PORT`, `IPV4:PORT`, `[IPV6]:PORT` or `localhost:PORT`.
    fn from_str(text: &str) -> Result<Self, String> {
        const FORM: &str =
            "expected :PORT, HOST:PORT (such as 0.0.0.0:8080 or 127.0.0.1:0) or 0 to disable";
        if text == "0" {
            return Ok(BindAddress::Disabled);
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("no port; {FORM}"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a number from 0 to 65535; {FORM}"))?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => {
                let literal = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                literal.parse().map_err(|_| {
                    format!("host {host:?} is not an IP address or localhost; {FORM}")
                })?
            }
        };
        if matches!(ip, IpAddr::V6(_)) && !host.starts_with('[') {
            return Err(format!(
                "write an IPv6 host in brackets ([::1]:{port}); {FORM}"
            ));
        }
        Ok(BindAddress::Listen(SocketAddr::new(ip, port)))
    }
}

fn parse_namespace(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(text.to_string())
    } else {
        Err("a namespace is 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

fn parse_qps(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps > 0.0 => Ok(qps),
        _ => {
            Err("expected a number of requests per second greater than 0, such as 20 or 0.5".into())
        }
    }
}

/// The client-side rate limit of every API request: `--kube-api-qps` and `--kube-api-burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApiRateLimit {
    /// Requests per second, on average.
    pub qps: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
}

/// The webhook server's settings, when it is on.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookServing {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The directory with `tls.crt` and `tls.key`.
    pub cert_dir: PathBuf,
}

/// Everything `nmo run` was told, checked: flags, environment and the config file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// The namespace of the leader Lease.
    pub namespace: String,
    /// `--leader-elect`.
    pub leader_elect: bool,
    /// `--metrics-bind-address`, unless `0`.
    pub metrics: Option<SocketAddr>,
    /// `--health-probe-bind-address`, unless `0`.
    pub health_probes: Option<SocketAddr>,
    /// The webhook, when `--webhook-cert-dir` is given and `--webhook-bind-address` is not `0`.
    pub webhook: Option<WebhookServing>,
    /// `--config` and what it held at start-up.
    pub config: Option<(PathBuf, OperatorConfig)>,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--kube-api-qps`, `--kube-api-burst`.
    pub rate_limit: ApiRateLimit,
    /// Flags that win over the config file.
    pub overrides: FlagOverrides,
    /// `--no-maintenance-windows`.
    pub no_maintenance_windows: bool,
}

impl Settings {
    /// Check what the flags name: the config file must load, the certificate directory
    /// exist. Each error is one line naming the flag or file.
    pub fn from_args(args: Args) -> anyhow::Result<Settings> {
        let config = match args.config {
            Some(path) => {
                let loaded = crate::config::load(&path)?;
                Some((path, loaded))
            }
            None => None,
        };
        let webhook = match (
            args.webhook_cert_dir,
            args.webhook_bind_address.socket_addr(),
        ) {
            (Some(dir), Some(addr)) => {
                if !dir.is_dir() {
                    anyhow::bail!("--webhook-cert-dir {}: not a directory", dir.display());
                }
                Some(WebhookServing {
                    addr,
                    cert_dir: dir,
                })
            }
            _ => None,
        };
        Ok(Settings {
            kubeconfig: args.kubeconfig,
            context: args.context,
            namespace: args.namespace.unwrap_or_else(leader::default_namespace),
            leader_elect: args.leader_elect,
            metrics: args.metrics_bind_address.socket_addr(),
            health_probes: args.health_probe_bind_address.socket_addr(),
            webhook,
            config,
            log_format: args.log_format,
            rate_limit: ApiRateLimit {
                qps: args.kube_api_qps,
                burst: args.kube_api_burst,
            },
            overrides: FlagOverrides {
                max_concurrent_maintenances: args.max_concurrent_maintenances,
            },
            no_maintenance_windows: args.no_maintenance_windows,
        })
    }
}

/// Run `nmo run` until SIGINT or SIGTERM (exit 0), or until leadership is lost (exit 1).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(args)?;
    init_logging(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(operate(settings));
    // Whatever is left (an aborted drain's last request) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result.map(|()| ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Load the client configuration: the given kubeconfig (and context), or kube's inference.
pub async fn client_config(
    kubeconfig: Option<&PathBuf>,
    context: Option<&str>,
) -> anyhow::Result<kube::Config> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let what = |path: &str| match context {
        Some(context) => format!("kubeconfig {path} (context {context})"),
        None => format!("kubeconfig {path}"),
    };
    match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("loading {}", what(&path.display().to_string())))
        }
        // A context names a kubeconfig entry: in-cluster configuration has none.
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("loading {}", what("($KUBECONFIG or ~/.kube/config)"))),
        None => kube::Config::infer()
            .await
            .context("finding cluster configuration (in-cluster, $KUBECONFIG or ~/.kube/config)"),
    }
}

/// The API clients, with the client-side rate limit applied to every request: all clients
/// draw from one token bucket, so evictions share it, and the window controller's requests go
/// ahead of those waiting ([`Clients::from_config_with_rate_limit`]).
fn api_clients(config: kube::Config, limit: ApiRateLimit) -> anyhow::Result<Clients> {
    let limit = crate::controller::rate_limit::RateLimit::new(limit.qps, limit.burst)
        .context("--kube-api-qps/--kube-api-burst")?;
    Clients::from_config_with_rate_limit(config, limit).context("building the API client")
}

/// The `/metrics` server (Prometheus text format), on every replica, until `shutdown`.
/// `config_status` carries the outcome of each config-file load into the
/// `nmo_config_last_reload_successful` gauge.
async fn serve_metrics(
    addr: SocketAddr,
    telemetry: Telemetry,
    mut config_status: watch::Receiver<ConfigStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = telemetry.metrics.clone();
    metrics.config_reloaded(config_status.borrow_and_update().last_reload_successful);
    let gauge = tokio::spawn(async move {
        while config_status.changed().await.is_ok() {
            let ok = config_status.borrow_and_update().last_reload_successful;
            metrics.config_reloaded(ok);
        }
    });
    tracing::info!(%addr, "metrics serving");
    let served = crate::telemetry::serve_metrics(addr, telemetry.metrics, shutdown)
        .await
        .with_context(|| format!("metrics server on {addr} (--metrics-bind-address)"));
    gauge.abort();
    served
}

/// The `/healthz` and `/readyz` server, on every replica, until `shutdown`. `/readyz` answers
/// 503 until the leader's controllers have synced their caches; a standby replica (leader
/// election, not leading) is ready, so that it serves the webhook behind its Service and does
/// not hold back a rolling update.
async fn serve_health_probes(
    addr: SocketAddr,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(%addr, "health probes serving");
    crate::telemetry::serve_probes(addr, telemetry.readiness, shutdown)
        .await
        .with_context(|| format!("health-probe server on {addr} (--health-probe-bind-address)"))
}

/// The validating webhook's HTTPS server (`admission::webhook`), on every replica, until
/// `shutdown`; requests in flight are answered before it returns.
async fn serve_webhook(
    webhook: WebhookServing,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = crate::admission::webhook::WebhookConfig {
        bind: webhook.addr,
        cert_dir: webhook.cert_dir.clone(),
    };
    tracing::info!(addr = %webhook.addr, cert_dir = %webhook.cert_dir.display(), "validating webhook serving");
    crate::admission::webhook::serve(config, client, shutdown)
        .await
        .with_context(|| {
            format!(
                "validating webhook on {} with certificates from {}",
                webhook.addr,
                webhook.cert_dir.display()
            )
        })
}

async fn operate(settings: Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.on_signals();

    // The config file (watched) under the flags.
    let (file_config, config_status, _watcher) = match &settings.config {
        Some((path, loaded)) => {
            let watcher = ConfigWatcher::start(path.clone(), loaded.clone(), shutdown.clone())
                .with_context(|| format!("watching config file {}", path.display()))?;
            (watcher.config(), watcher.status(), Some(watcher))
        }
        None => {
            let ok = ConfigStatus {
                last_reload_successful: true,
                ..ConfigStatus::default()
            };
            (
                watch::channel(OperatorConfig::default()).1,
                watch::channel(ok).1,
                None,
            )
        }
    };
    let identity = leader::default_identity();
    let mut base = ControllerConfig {
        reporting_instance: identity.clone(),
        ..ControllerConfig::default()
    };
    base.maintenance_window.enabled = !settings.no_maintenance_windows;
    let (live, timings) = follow_config(file_config, base, settings.overrides.clone());

    let kube_config =
        client_config(settings.kubeconfig.as_ref(), settings.context.as_deref()).await?;
    let cluster = kube_config.cluster_url.to_string();
    let clients = api_clients(kube_config, settings.rate_limit)?;
    tracing::info!(%cluster, %identity, leader_elect = settings.leader_elect, "nmo starting");

    // Every replica serves these, leader or not.
    let telemetry = Telemetry::new();
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = settings.metrics {
        servers.spawn(serve_metrics(
            addr,
            telemetry.clone(),
            config_status.clone(),
            shutdown.wait(),
        ));
    }
    if let Some(addr) = settings.health_probes {
        servers.spawn(serve_health_probes(
            addr,
            telemetry.clone(),
            shutdown.wait(),
        ));
    }
    if let Some(webhook) = settings.webhook.clone() {
        servers.spawn(serve_webhook(webhook, clients.api.clone(), shutdown.wait()));
    }

    let work = async {
        if settings.leader_elect {
            let elector = LeaderElector::new(
                clients.api.clone(),
                &settings.namespace,
                identity.clone(),
                timings,
            );
            lead(elector, clients.clone(), live, telemetry.clone(), &shutdown).await
        } else {
            run_controllers(clients.clone(), live, telemetry.clone(), &shutdown).await;
            Ok(())
        }
    };
    // A server that fails (its address in use, say) stops the operator.
    let failed_server = async {
        while let Some(result) = servers.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return err,
                Err(err) => return anyhow::anyhow!("a server task failed: {err}"),
            }
        }
        std::future::pending().await
    };
    let result = tokio::select! {
        result = work => result,
        err = failed_server => {
            shutdown.trigger();
            Err(err)
        }
    };
    shutdown.trigger();
    let _ = tokio::time::timeout(SERVERS_STOP, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    servers.abort_all();
    // An error is reported by the command line, as the last line on stderr.
    if result.is_ok() {
        tracing::info!("nmo stopped");
    }
    result
}

/// The controllers' live configuration and the leader timings, following the config file.
fn follow_config(
    mut file: watch::Receiver<OperatorConfig>,
    base: ControllerConfig,
    overrides: FlagOverrides,
) -> (LiveConfig, watch::Receiver<LeaderTimings>) {
    let current = file.borrow_and_update().clone();
    let (controllers_tx, controllers) =
        watch::channel(current.controller_config(&base, &overrides));
    let (timings_tx, timings) = watch::channel(current.leader_election);
    tokio::spawn(async move {
        while file.changed().await.is_ok() {
            let current = file.borrow_and_update().clone();
            let wanted = current.controller_config(&base, &overrides);
            controllers_tx.send_if_modified(|c| {
                let changed = *c != wanted;
                *c = wanted;
                changed
            });
            timings_tx.send_if_modified(|t| {
                let changed = *t != current.leader_election;
                *t = current.leader_election;
                changed
            });
        }
    });
    (LiveConfig::new(controllers), timings)
}

/// Without leader election: the controllers run until the signal, then stop gracefully.
async fn run_controllers(
    clients: Clients,
    live: LiveConfig,
    telemetry: Telemetry,
    shutdown: &Shutdown,
) {
    let mut controllers =
        controller::start_with_telemetry(clients, Arc::new(SystemClock), live, telemetry);
    shutdown.wait().await;
    if !controllers.stop_within(GRACEFUL_STOP).await {
        tracing::warn!(budget = ?GRACEFUL_STOP, "graceful stop took too long; aborted the rest");
    }
}

/// How the leader's term ended.
enum TermEnd {
    Shutdown,
    Lost(LostReason),
}

/// With leader election: stand by until this replica leads, run the controllers while it
/// does, and stop them either gracefully (the signal; the lease is then released) or at once
/// (leadership lost; an error, so the process exits 1).
async fn lead(
    mut elector: LeaderElector,
    clients: Clients,
    live: LiveConfig,
    telemetry: Telemetry,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    // A standby is ready (it serves the webhook); leading, readiness waits for the caches.
    telemetry.readiness.set_started();
    tracing::info!(identity = %elector.identity(), lease = %elector.lease_ref(), "waiting to lead");
    let stood_by = tokio::select! {
        _ = shutdown.wait() => true,
        () = elector.acquire() => false,
    };
    if stood_by {
        // An acquiring write cut off by the signal may have landed: give the lease back.
        release(&mut elector).await;
        return Ok(());
    }
    let mut controllers =
        controller::start_with_telemetry(clients, Arc::new(SystemClock), live, telemetry);
    let end = tokio::select! {
        reason = elector.hold() => TermEnd::Lost(reason),
        _ = shutdown.wait() => TermEnd::Shutdown,
    };
    let end = match end {
        TermEnd::Lost(reason) => TermEnd::Lost(reason),
        // Keep renewing while the controllers stop, so that nobody else starts meanwhile.
        TermEnd::Shutdown => tokio::select! {
            reason = elector.hold() => TermEnd::Lost(reason),
            graceful = controllers.stop_within(GRACEFUL_STOP) => {
                if !graceful {
                    tracing::warn!(budget = ?GRACEFUL_STOP, "graceful stop took too long; aborted the rest");
                }
                TermEnd::Shutdown
            }
        },
    };
    match end {
        TermEnd::Lost(reason) => {
            controllers.kill();
            tracing::error!(%reason, identity = %elector.identity(), "leadership lost; stopped the controllers");
            Err(anyhow::anyhow!(
                "leader election lost: {reason} (lease {}, identity {}); exiting so that a restart stands for election again",
                elector.lease_ref(),
                elector.identity()
            ))
        }
        TermEnd::Shutdown => {
            release(&mut elector).await;
            Ok(())
        }
    }
}

/// Release the leader lease if it is ours, within [`RELEASE_TIMEOUT`]; a failure only means
/// that the standby waits for the lease to expire.
async fn release(elector: &mut LeaderElector) {
    match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not release the leader lease; it expires by itself")
        }
        Err(_) => tracing::warn!("releasing the leader lease timed out; it expires by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, String> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    fn listen(text: &str) -> BindAddress {
        BindAddress::Listen(text.parse().unwrap())
    }

    #[test]
    fn bind_addresses_follow_controller_runtime() {
        let table = [
            (":8080", Ok(listen("0.0.0.0:8080"))),
            ("0.0.0.0:8080", Ok(listen("0.0.0.0:8080"))),
            ("127.0.0.1:0", Ok(listen("127.0.0.1:0"))),
            ("localhost:9443", Ok(listen("127.0.0.1:9443"))),
            ("[::1]:8081", Ok(listen("[::1]:8081"))),
            ("[::]:8081", Ok(listen("[::]:8081"))),
            ("0", Ok(BindAddress::Disabled)),
            ("8080", Err("no port")),
            (":80x", Err("port \"80x\" is not a number")),
            (":70000", Err("port \"70000\" is not a number")),
            (
                "example.com:80",
                Err("host \"example.com\" is not an IP address"),
            ),
            ("::1:80", Err("write an IPv6 host in brackets")),
            ("", Err("no port")),
        ];
        for (text, want) in table {
            match (text.parse::<BindAddress>(), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn defaults_are_controller_runtimes() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.metrics_bind_address, listen("0.0.0.0:8080"));
        assert_eq!(args.health_probe_bind_address, listen("0.0.0.0:8081"));
        assert_eq!(args.webhook_bind_address, listen("0.0.0.0:9443"));
        assert_eq!(args.kube_api_qps, 20.0);
        assert_eq!(args.kube_api_burst, 30);
        assert!(!args.leader_elect);
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn leader_elect_takes_the_go_flag_forms() {
        assert!(parse(&["--leader-elect"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect=true"]).unwrap().leader_elect);
        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect=maybe"]).is_err());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let table = [
            (
                vec!["--metrics-bind-address", "8080"],
                "--metrics-bind-address",
            ),
            (
                vec!["--health-probe-bind-address", "x:1"],
                "--health-probe-bind-address",
            ),
            (
                vec!["--webhook-bind-address", ":99999"],
                "--webhook-bind-address",
            ),
            (vec!["--kube-api-qps", "0"], "--kube-api-qps"),
            (vec!["--kube-api-burst", "0"], "--kube-api-burst"),
            (vec!["--namespace", "Not_A_Namespace"], "--namespace"),
            (vec!["--log-format", "xml"], "--log-format"),
            (
                vec!["--max-concurrent-maintenances", "0"],
                "--max-concurrent-maintenances",
            ),
        ];
        for (args, flag) in table {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[tokio::test]
    async fn a_context_picks_its_cluster_from_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: one\n\
clusters:\n- name: one\n  cluster: {server: 'http://127.0.0.1:1111'}\n- name: two\n  cluster: {server: 'http://127.0.0.1:2222'}\n\
users:\n- name: u\n  user: {token: t}\n\
contexts:\n- name: one\n  context: {cluster: one, user: u}\n- name: two\n  context: {cluster: two, user: u}\n",
        )
        .unwrap();
        let current = client_config(Some(&path), None).await.unwrap();
        assert_eq!(current.cluster_url.port_u16(), Some(1111));
        let named = client_config(Some(&path), Some("two")).await.unwrap();
        assert_eq!(named.cluster_url.port_u16(), Some(2222));
        let missing = client_config(Some(&path), Some("three")).await.unwrap_err();
        let message = format!("{missing:#}");
        assert!(message.contains("(context three)"), "{message}");
        assert!(message.contains("three"), "{message}");
    }

    #[test]
    fn the_webhook_is_off_without_a_certificate_directory_or_with_address_0() {
        let off = Settings::from_args(parse(&[]).unwrap()).unwrap();
        assert_eq!(off.webhook, None);
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().to_str().unwrap();
        let on = Settings::from_args(parse(&["--webhook-cert-dir", dir_arg]).unwrap()).unwrap();
        assert_eq!(
            on.webhook,
            Some(WebhookServing {
                addr: "0.0.0.0:9443".parse().unwrap(),
                cert_dir: dir.path().to_path_buf(),
            })
        );
        let disabled = Settings::from_args(
            parse(&["--webhook-cert-dir", dir_arg, "--webhook-bind-address", "0"]).unwrap(),
        )
        .unwrap();
        assert_eq!(disabled.webhook, None);
        let missing =
            Settings::from_args(parse(&["--webhook-cert-dir", "/definitely/missing"]).unwrap())
                .unwrap_err()
                .to_string();
        assert!(
            missing.contains("--webhook-cert-dir /definitely/missing"),
            "{missing}"
        );
    }
}
