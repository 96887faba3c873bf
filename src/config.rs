//! Operator configuration: the optional `nmo run --config FILE` (YAML), the flags on top of
//! it, and its live reload.
//!
//! The file holds operator defaults; every key is optional and a missing key keeps the
//! built-in default:
//!
//! ```yaml
//! maxConcurrentMaintenances: 3      # operator-wide cap of window-generated NodeMaintenances
//! drainRetryBackoff:                # how a drain retries a refused or failed eviction
//!   initial: 1s                     #   first wait, doubled per retry of a pod...
//!   max: 10s                        #   ...up to this
//! defaultNodeTimeout: 2h            # nodeTimeout of MaintenanceWindows that set none
//! prometheus:                       # for MaintenanceWindows' spec.healthGate
//!   url: http://prometheus.monitoring:9090
//! leaderElection:                   # controller-runtime's defaults
//!   leaseDuration: 15s
//!   renewDeadline: 10s
//!   retryPeriod: 2s
//! ```
//!
//! Durations are Go durations (`90s`, `1h30m`). Parsing is strict: an unknown key is an error
//! naming the key and the file, so a typo never silently does nothing.
//!
//! Precedence: a flag (or its `NMO_*` environment variable) wins over the file, and the file
//! over the built-in default. Only `--max-concurrent-maintenances` overlaps today; while it is
//! given, the file's `maxConcurrentMaintenances` is ignored (and a reload cannot change it).
//!
//! Reload: [`ConfigWatcher`] watches the file's *directory* with `notify` (a ConfigMap mount
//! replaces the file by swapping the `..data` symlink, which a watch on the file itself would
//! miss) and reloads on any change there. A file that fails to load keeps the last good
//! configuration and logs one error naming the file and the problem; the outcome of every
//! load is published as a [`ConfigStatus`] (for the `nmo_config_last_reload_successful`
//! gauge).

use crate::controller::ControllerConfig;
use crate::controller::leader::LeaderTimings;
use crate::schedule::{MAX_WINDOW_DURATION, format_duration, parse_go_duration};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// The operator configuration from the file, validated, with built-in defaults for what it
/// does not set.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    /// `maxConcurrentMaintenances`: the operator-wide cap of window-generated
    /// NodeMaintenances; `None`, no cap.
    pub max_concurrent_maintenances: Option<u32>,
    /// `drainRetryBackoff`: a drain's first wait before retrying an eviction, and the longest.
    pub drain_retry: DrainRetry,
    /// `defaultNodeTimeout`: the `nodeTimeout` of windows that set none.
    pub default_node_timeout: chrono::Duration,
    /// `leaderElection`: lease duration, renew deadline, retry period.
    pub leader_election: LeaderTimings,
    /// `prometheus.url`: the Prometheus that windows' health gates query (checked).
    pub prometheus: Option<crate::gate::PrometheusClient>,
}

/// How a drain retries an eviction that was refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainRetry {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait; the wait doubles up to it.
    pub max: Duration,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        let drain = crate::drain::DrainSettings::default();
        OperatorConfig {
            max_concurrent_maintenances: None,
            drain_retry: DrainRetry {
                initial: drain.retry_initial,
                max: drain.retry_max,
            },
            default_node_timeout: crate::schedule::default_node_timeout(),
            leader_election: LeaderTimings::default(),
            prometheus: None,
        }
    }
}

/// Settings given as flags; they win over the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlagOverrides {
    /// `--max-concurrent-maintenances`.
    pub max_concurrent_maintenances: Option<u32>,
}

impl OperatorConfig {
    /// The controllers' configuration: `base` (built-in defaults, and what only flags set)
    /// with this file's settings, then the flags' overrides.
    pub fn controller_config(
        &self,
        base: &ControllerConfig,
        flags: &FlagOverrides,
    ) -> ControllerConfig {
        let mut config = base.clone();
        let window = &mut config.maintenance_window;
        window.max_concurrent_maintenances = flags
            .max_concurrent_maintenances
            .or(self.max_concurrent_maintenances);
        window.default_node_timeout = self.default_node_timeout;
        if let Some(client) = &self.prometheus {
            window.gate = crate::gate::GateBackend::Prometheus(client.clone());
        }
        let drain = &mut config.node_maintenance.drain;
        drain.retry_initial = self.drain_retry.initial;
        drain.retry_max = self.drain_retry.max;
        config
    }
}

/// The file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    max_concurrent_maintenances: Option<u32>,
    drain_retry_backoff: Option<FileBackoff>,
    default_node_timeout: Option<String>,
    leader_election: Option<FileLeaderElection>,
    prometheus: Option<FilePrometheus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilePrometheus {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileBackoff {
    initial: Option<String>,
    max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileLeaderElection {
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
}

/// Why a config file could not be used. Each names the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: cannot read: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// The file is not valid YAML, or has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the key and the line.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`leaderElection.renewDeadline`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Read and check the config file at `path`.
pub fn load(path: &Path) -> Result<OperatorConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse(&text, path)
}

/// Parse and check config-file text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<OperatorConfig, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    // An empty file (or one with only comments) is a valid file that sets nothing.
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
    let file: File = if value.is_null() {
        File::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))?
    };
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let duration = |key: &str, text: &Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(text) => {
            let d = parse_go_duration(text).map_err(|e| {
                invalid(
                    key,
                    format!("{e} (use a Go duration such as \"10s\" or \"1m30s\")"),
                )
            })?;
            d.to_std().ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                invalid(
                    key,
                    format!("{text:?} is not allowed: it must be longer than 0"),
                )
            })
        }
    };

    let defaults = OperatorConfig::default();
    if file.max_concurrent_maintenances == Some(0) {
        return Err(invalid(
            "maxConcurrentMaintenances",
            "0 is not allowed: it must be at least 1 (leave the key out for no cap)".into(),
        ));
    }
    let backoff = file.drain_retry_backoff.unwrap_or_default();
    let drain_retry = DrainRetry {
        initial: duration(
            "drainRetryBackoff.initial",
            &backoff.initial,
            defaults.drain_retry.initial,
        )?,
        max: duration(
            "drainRetryBackoff.max",
            &backoff.max,
            defaults.drain_retry.max,
        )?,
    };
    if drain_retry.max < drain_retry.initial {
        return Err(invalid(
            "drainRetryBackoff.max",
            format!(
                "{} is shorter than drainRetryBackoff.initial ({})",
                human(drain_retry.max),
                human(drain_retry.initial)
            ),
        ));
    }
    let default_node_timeout = duration(
        "defaultNodeTimeout",
        &file.default_node_timeout,
        defaults.default_node_timeout.to_std().unwrap_or_default(),
    )?;
    let default_node_timeout = chrono::Duration::from_std(default_node_timeout)
        .ok()
        .filter(|d| *d <= MAX_WINDOW_DURATION)
        .ok_or_else(|| {
            invalid(
                "defaultNodeTimeout",
                format!(
                    "{} is too long: the maximum is 744h (31 days)",
                    human(default_node_timeout)
                ),
            )
        })?;
    let election = file.leader_election.unwrap_or_default();
    let d = defaults.leader_election;
    let leader_election = LeaderTimings {
        lease_duration: duration(
            "leaderElection.leaseDuration",
            &election.lease_duration,
            d.lease_duration,
        )?,
        renew_deadline: duration(
            "leaderElection.renewDeadline",
            &election.renew_deadline,
            d.renew_deadline,
        )?,
        retry_period: duration(
            "leaderElection.retryPeriod",
            &election.retry_period,
            d.retry_period,
        )?,
    };
    leader_election
        .check()
        .map_err(|(key, message)| invalid(&format!("leaderElection.{key}"), message))?;
    let prometheus = match file.prometheus.and_then(|p| p.url) {
        None => None,
        Some(url) => Some(
            crate::gate::PrometheusClient::new(&url)
                .map_err(|e| invalid("prometheus.url", e.to_string()))?,
        ),
    };
    Ok(OperatorConfig {
        prometheus,
        max_concurrent_maintenances: file.max_concurrent_maintenances,
        drain_retry,
        default_node_timeout,
        leader_election,
    })
}

fn human(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{d:?}");
    }
    format_duration(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

/// The outcome of the last load of the config file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigStatus {
    /// Whether the last load (at start-up, or after the file changed) succeeded. The
    /// `nmo_config_last_reload_successful` gauge.
    pub last_reload_successful: bool,
    /// The last load's error, when it failed.
    pub last_error: Option<String>,
    /// How many times the file was loaded after start-up (successfully or not).
    pub reloads: u64,
    /// How many of those reloads changed the configuration.
    pub changes: u64,
}

/// How long to let a burst of file-system events settle before reloading (an editor's write,
/// a ConfigMap's symlink swap).
const SETTLE: Duration = Duration::from_millis(150);

/// Watches the config file and publishes each good configuration and each load's outcome.
/// Dropping it (or the shutdown signal) stops the watch.
pub struct ConfigWatcher {
    config: watch::Receiver<OperatorConfig>,
    status: watch::Receiver<ConfigStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl ConfigWatcher {
    /// Watch `path`, whose content `initial` was loaded from at start-up. Fails when the
    /// directory cannot be watched.
    pub fn start(
        path: PathBuf,
        initial: OperatorConfig,
        shutdown: crate::shutdown::Shutdown,
    ) -> Result<ConfigWatcher, notify::Error> {
        use notify::Watcher as _;
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = events_tx.send(());
                }
            })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let (config_tx, config) = watch::channel(initial);
        let (status_tx, status) = watch::channel(ConfigStatus {
            last_reload_successful: true,
            ..ConfigStatus::default()
        });
        let stopped = shutdown.wait();
        let task = tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    event = events.recv() => if event.is_none() { return },
                }
                // Fold the rest of the burst into one reload.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(SETTLE) => break,
                        event = events.recv() => if event.is_none() { return },
                    }
                }
                reload(&path, &config_tx, &status_tx);
            }
        });
        Ok(ConfigWatcher {
            config,
            status,
            task,
        })
    }

    /// The configuration in force: the last one that loaded.
    pub fn config(&self) -> watch::Receiver<OperatorConfig> {
        self.config.clone()
    }

    /// The outcome of each load, for metrics.
    pub fn status(&self) -> watch::Receiver<ConfigStatus> {
        self.status.clone()
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Load the file again: publish it if it loads and differs, keep the last good one if not.
/// Each distinct outcome is logged once.
fn reload(
    path: &Path,
    config: &watch::Sender<OperatorConfig>,
    status: &watch::Sender<ConfigStatus>,
) {
    match load(path) {
        Ok(loaded) => {
            let changed = config.send_if_modified(|current| {
                if *current == loaded {
                    return false;
                }
                *current = loaded.clone();
                true
            });
            let was_failing = !status.borrow().last_reload_successful;
            if changed {
                tracing::info!(file = %path.display(), config = ?loaded, "config file reloaded");
            } else if was_failing {
                tracing::info!(file = %path.display(), "config file loads again; configuration unchanged");
            }
            status.send_modify(|s| {
                s.last_reload_successful = true;
                s.last_error = None;
                s.reloads += 1;
                s.changes += u64::from(changed);
            });
        }
        Err(err) => {
            let message = err.to_string();
            if status.borrow().last_error.as_deref() != Some(message.as_str()) {
                tracing::error!(error = %message, "config reload failed; keeping the last good configuration");
            }
            status.send_modify(|s| {
                s.last_reload_successful = false;
                s.last_error = Some(message);
                s.reloads += 1;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<OperatorConfig, ConfigError> {
        parse(text, Path::new("/etc/nmo/config.yaml"))
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(p("").unwrap(), OperatorConfig::default());
        assert_eq!(p("# only a comment\n").unwrap(), OperatorConfig::default());
        assert_eq!(p("{}").unwrap(), OperatorConfig::default());
    }

    #[test]
    fn every_key_is_read() {
        let config = p("maxConcurrentMaintenances: 3
drainRetryBackoff: {initial: 500ms, max: 1m}
defaultNodeTimeout: 4h
leaderElection: {leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 5s}
prometheus: {url: http://prometheus.monitoring:9090}
")
        .unwrap();
        assert_eq!(
            config,
            OperatorConfig {
                max_concurrent_maintenances: Some(3),
                drain_retry: DrainRetry {
                    initial: Duration::from_millis(500),
                    max: Duration::from_secs(60),
                },
                default_node_timeout: chrono::Duration::hours(4),
                leader_election: LeaderTimings {
                    lease_duration: Duration::from_secs(30),
                    renew_deadline: Duration::from_secs(20),
                    retry_period: Duration::from_secs(5),
                },
                prometheus: Some(
                    crate::gate::PrometheusClient::new("http://prometheus.monitoring:9090")
                        .unwrap()
                ),
            }
        );
        let err = p("prometheus: {url: \"https://p:9090\"}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "prometheus.url: prometheus.url \"https://p:9090\": https is not supported"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_key() {
        let table = [
            (
                "maxConcurrentMaintenancs: 3",
                "unknown field `maxConcurrentMaintenancs`",
            ),
            (
                "leaderElection: {leaseDuraton: 15s}",
                "unknown field `leaseDuraton`",
            ),
            (
                "drainRetryBackoff: {initial: 1s, maximum: 5s}",
                "unknown field `maximum`",
            ),
            (
                "maxConcurrentMaintenances: many",
                "maxConcurrentMaintenances: invalid type",
            ),
            (
                "maxConcurrentMaintenances: 0",
                "maxConcurrentMaintenances: 0 is not allowed",
            ),
            (
                "maxConcurrentMaintenances: [",
                "did not find expected node content",
            ),
            ("defaultNodeTimeout: 2 hours", "defaultNodeTimeout: "),
            (
                "defaultNodeTimeout: 0s",
                "defaultNodeTimeout: \"0s\" is not allowed: it must be longer than 0",
            ),
            (
                "defaultNodeTimeout: -1h",
                "defaultNodeTimeout: \"-1h\" is not allowed",
            ),
            (
                "defaultNodeTimeout: 800h",
                "defaultNodeTimeout: 800h is too long",
            ),
            (
                "drainRetryBackoff: {initial: 20s}",
                "drainRetryBackoff.max: 10s is shorter than drainRetryBackoff.initial (20s)",
            ),
            (
                "leaderElection: {renewDeadline: 20s}",
                "leaderElection.renewDeadline: 20s must be shorter than leaseDuration (15s)",
            ),
            (
                "leaderElection: {retryPeriod: 10s}",
                "leaderElection.retryPeriod: 10s must be shorter than renewDeadline (10s)",
            ),
            (
                "leaderElection: {leaseDuration: 15500ms}",
                "leaderElection.leaseDuration: ",
            ),
            ("- a list", "invalid type: sequence"),
        ];
        for (text, want) in table {
            let got = err(text);
            assert!(
                got.starts_with("config file /etc/nmo/config.yaml: "),
                "{text}: {got}"
            );
            assert!(got.contains(want), "{text}: {got}");
            assert_eq!(got.lines().count(), 1, "{text}: {got}");
        }
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let got = err("maxConcurrentMaintenances: 2\nbogus: 1\n");
        assert!(got.contains("unknown field `bogus`"), "{got}");
        assert!(got.contains("line 2"), "{got}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let got = load(Path::new("/definitely/missing/nmo.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            got.starts_with("config file /definitely/missing/nmo.yaml: cannot read:"),
            "{got}"
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let file = p("maxConcurrentMaintenances: 3\ndefaultNodeTimeout: 5h\ndrainRetryBackoff: {initial: 2s, max: 20s}").unwrap();
        let base = ControllerConfig::default();
        let from_file = file.controller_config(&base, &FlagOverrides::default());
        assert_eq!(
            from_file.maintenance_window.max_concurrent_maintenances,
            Some(3)
        );
        assert_eq!(
            from_file.maintenance_window.default_node_timeout,
            chrono::Duration::hours(5)
        );
        assert_eq!(
            from_file.node_maintenance.drain.retry_initial,
            Duration::from_secs(2)
        );
        assert_eq!(
            from_file.node_maintenance.drain.retry_max,
            Duration::from_secs(20)
        );
        let flagged = file.controller_config(
            &base,
            &FlagOverrides {
                max_concurrent_maintenances: Some(7),
            },
        );
        assert_eq!(
            flagged.maintenance_window.max_concurrent_maintenances,
            Some(7)
        );
        let defaults =
            OperatorConfig::default().controller_config(&base, &FlagOverrides::default());
        assert_eq!(defaults, base, "an empty file changes nothing");
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "maxConcurrentMaintenances: 1\n").unwrap();
        let shutdown = crate::shutdown::Shutdown::new();
        let watcher =
            ConfigWatcher::start(path.clone(), load(&path).unwrap(), shutdown.clone()).unwrap();
        let mut config = watcher.config();
        let mut status = watcher.status();
        let deadline = Duration::from_secs(20);

        std::fs::write(&path, "maxConcurrentMaintenances: 2\n").unwrap();
        tokio::time::timeout(
            deadline,
            config.wait_for(|c| c.max_concurrent_maintenances == Some(2)),
        )
        .await
        .expect("the change is picked up")
        .unwrap();

        std::fs::write(&path, "maxConcurrentMaintenances: 2\nbogus: true\n").unwrap();
        let failed = tokio::time::timeout(deadline, status.wait_for(|s| !s.last_reload_successful))
            .await
            .expect("the broken file is noticed")
            .unwrap()
            .clone();
        assert!(failed.last_error.unwrap().contains("unknown field `bogus`"));
        assert_eq!(
            config.borrow().max_concurrent_maintenances,
            Some(2),
            "the last good config stays"
        );

        // A ConfigMap-style swap: the file is replaced by a rename, not written in place.
        let staged = dir.path().join("..data_tmp");
        std::fs::write(&staged, "maxConcurrentMaintenances: 4\n").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        tokio::time::timeout(
            deadline,
            config.wait_for(|c| c.max_concurrent_maintenances == Some(4)),
        )
        .await
        .expect("the swapped file is picked up")
        .unwrap();
        assert!(status.borrow().last_reload_successful);
        shutdown.trigger();
    }
}
