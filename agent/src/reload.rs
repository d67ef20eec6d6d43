//! SIGHUP: re-read the config file (flags and environment stay as at start),
//! apply what can change live, and warn about the rest. A bad file changes
//! nothing. Nothing is rebuilt that did not change: the eBPF aggregates keep
//! their counts, unaffected collectors keep their state.

use crate::cli::RunArgs;
use crate::collectors::live::NodeSet;
use crate::config::{Change, Loaded, Settings};
use crate::probes::Running;
use anyhow::{Context, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// A key a reload applies, and how its value is taken from the new
/// configuration. Every other key, including any flag added later, needs a
/// restart: a key becomes live by a line here (and code that applies it).
pub struct LiveKey {
    pub key: &'static str,
    take: fn(&mut RunArgs, &RunArgs),
}

/// Every live key: the collectors' settings, the probes' budgets, logging.
pub const LIVE: &[LiveKey] = &[
    LiveKey {
        key: "collectors",
        take: |to, from| to.collectors.collectors = from.collectors.collectors.clone(),
    },
    LiveKey {
        key: "no-collector",
        take: |to, from| to.collectors.no_collector = from.collectors.no_collector.clone(),
    },
    LiveKey {
        key: "netdev-virtual",
        take: |to, from| {
            to.collectors.options.netdev_virtual = from.collectors.options.netdev_virtual
        },
    },
    LiveKey {
        key: "netdev-exclude",
        take: |to, from| {
            to.collectors.options.netdev_exclude = from.collectors.options.netdev_exclude.clone()
        },
    },
    LiveKey {
        key: "diskstats-exclude",
        take: |to, from| {
            to.collectors.options.diskstats_exclude =
                from.collectors.options.diskstats_exclude.clone()
        },
    },
    LiveKey {
        key: "filesystem-mount-exclude",
        take: |to, from| {
            to.collectors.options.filesystem_mount_exclude =
                from.collectors.options.filesystem_mount_exclude.clone()
        },
    },
    LiveKey {
        key: "filesystem-type-exclude",
        take: |to, from| {
            to.collectors.options.filesystem_type_exclude =
                from.collectors.options.filesystem_type_exclude.clone()
        },
    },
    LiveKey {
        key: "filesystem-timeout-ms",
        take: |to, from| {
            to.collectors.options.filesystem_timeout_ms =
                from.collectors.options.filesystem_timeout_ms
        },
    },
    LiveKey {
        key: "vmstat-fields",
        take: |to, from| {
            to.collectors.options.vmstat_fields = from.collectors.options.vmstat_fields.clone()
        },
    },
    LiveKey {
        key: "netstat-fields",
        take: |to, from| {
            to.collectors.options.netstat_fields = from.collectors.options.netstat_fields.clone()
        },
    },
    LiveKey {
        key: "textfile-directory",
        take: |to, from| {
            to.collectors.options.textfile_directory =
                from.collectors.options.textfile_directory.clone()
        },
    },
    LiveKey {
        key: "powersupply-ignored-supplies",
        take: |to, from| {
            to.collectors.options.powersupply_ignored_supplies =
                from.collectors.options.powersupply_ignored_supplies.clone()
        },
    },
    LiveKey {
        key: "unknown-syscall-budget",
        take: |to, from| to.unknown_syscall_budget = from.unknown_syscall_budget,
    },
    LiveKey {
        key: "container-syscall-budget",
        take: |to, from| to.container_syscall_budget = from.container_syscall_budget,
    },
    LiveKey {
        key: "tcp-destination-budget",
        take: |to, from| to.tcp_destination_budget = from.tcp_destination_budget,
    },
    LiveKey {
        key: "log-level",
        take: |to, from| to.config.log_level = from.config.log_level.clone(),
    },
];

pub fn is_live(key: &str) -> bool {
    LIVE.iter().any(|k| k.key == key)
}

/// Copies the live keys' values from `new` into `running`.
fn take_live(running: &mut RunArgs, new: &RunArgs) {
    for k in LIVE {
        (k.take)(running, new);
    }
}

/// Until the handler below is installed, SIGHUP's default action would kill
/// the agent: ignore it from the very start of node mode.
pub fn ignore_hangup() {
    // SAFETY: setting a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
}

/// The SIGHUP stream (installing it replaces the ignore above).
pub struct Hangup(Signal);

impl Hangup {
    /// Needs a running tokio runtime.
    pub fn install() -> Result<Hangup> {
        Ok(Hangup(
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        ))
    }
}

/// What a reload can change in the running agent.
pub(crate) struct Live {
    pub node: NodeSet,
    /// The running probes: each takes its live keys (budgets).
    pub probes: Vec<Box<dyn Running>>,
    /// Container label sets that can have series (0 without container
    /// labels): budgets are checked against `--max-series` with it.
    pub label_sets: u64,
}

/// `ebpf_agent_config_*`, as Prometheus exports about its own config.
#[derive(Debug, Default)]
pub struct Metrics {
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
    last_successful: Gauge,
    last_success_time: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// The start-up load counts as the first successful one.
    pub fn new() -> Arc<Metrics> {
        let m = Metrics::default();
        for result in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&[("result", result)]);
        }
        m.last_successful.set(1);
        m.last_success_time.set(now());
        Arc::new(m)
    }

    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix(crate::PREFIX);
        r.register(
            "config_reloads",
            "Config reloads (SIGHUP), by result",
            self.reloads.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "Whether the last config reload succeeded (1) or was rejected (0)",
            self.last_successful.clone(),
        );
        r.register_with_unit(
            "config_last_reload_success_timestamp",
            "When the configuration was last loaded successfully (start-up or reload)",
            Unit::Seconds,
            self.last_success_time.clone(),
        );
        r
    }

    fn record(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&[("result", result)]).inc();
        self.last_successful.set(i64::from(ok));
        if ok {
            self.last_success_time.set(now());
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reloads on every SIGHUP until `stop` flips.
pub(crate) async fn run(
    mut hangup: Hangup,
    mut running: Loaded,
    mut live: Live,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = hangup.0.recv() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        let what = running.file().map_or(
            "no config file (--config): flags and environment are as at start".into(),
            |f| format!("re-reading {f}"),
        );
        tracing::info!("SIGHUP: reloading the configuration: {what}");
        let result = running
            .reload()
            .map_err(|e| e.to_string())
            .and_then(|new| apply(&mut running, new, &mut live));
        match &result {
            Ok(()) => {}
            Err(e) => {
                tracing::error!("config reload failed, keeping the running configuration: {e}")
            }
        }
        metrics.record(result.is_ok());
    }
}

/// Applies `new`'s live changes, warns about the others, and records what
/// now runs in `running`. On error nothing has changed.
fn apply(running: &mut Loaded, new: Loaded, live: &mut Live) -> Result<(), String> {
    let changes = running.settings.changes(&new.settings);
    let (now, later): (Vec<Change>, Vec<Change>) =
        changes.into_iter().partition(|c| is_live(&c.key));
    let mut args = running.args.clone();
    take_live(&mut args, &new.args);
    // The steps that can fail go first, so a failure changes nothing.
    crate::probes::series::check_run(&args, live.label_sets).map_err(|e| format!("{e:#}"))?;
    let collectors = live
        .node
        .reconfigure(&args.collectors)
        .map_err(|e| format!("{e:#}"))?;
    let budgets = crate::probes::Budgets::of(&args);
    for probe in &live.probes {
        probe.reload(&budgets);
    }
    if now.iter().any(|c| c.key == "log-level")
        && let Err(e) = crate::logging::set_level(&args.config.log_level)
    {
        tracing::warn!("log-level not changed: {e}");
    }
    for c in &now {
        tracing::info!("{} changed from {} to {}", c.key, c.from, c.to);
    }
    for c in collectors {
        tracing::info!("{c}");
    }
    for c in &later {
        tracing::warn!(
            "{} changed from {} to {}: takes effect after a restart",
            c.key,
            c.from,
            c.to
        );
    }
    tracing::info!(
        "configuration reloaded: {} change(s) applied, {} waiting for a restart",
        now.len(),
        later.len()
    );
    running.settings = merged(&running.settings, &new.settings);
    running.args = args;
    Ok(())
}

/// The settings now in force: live keys from `new`, the rest as they were.
fn merged(old: &Settings, new: &Settings) -> Settings {
    Settings(
        new.0
            .iter()
            .map(|n| match old.get(&n.key) {
                Some(o) if !is_live(&n.key) => o.clone(),
                _ => n.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
