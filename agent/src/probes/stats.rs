//! The agent's own state that /metrics reports: events received, losses in
//! userspace, which probes are attached, readiness.

use super::Probe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ProbeStats {
    /// Chosen with --probes; a probe not enabled is not reported at all.
    pub enabled: AtomicBool,
    pub attached: AtomicBool,
    /// Events decoded and aggregated.
    pub events: AtomicU64,
    /// Ring-buffer items that did not decode (wrong size): their events are lost.
    pub decode_errors: AtomicU64,
    /// Events a probe lost in userspace at its own stages (`Loss::Userspace`).
    pub losses: [AtomicU64; 2],
}

impl ProbeStats {
    pub fn add_events(&self, n: u64) {
        self.events.fetch_add(n, Relaxed);
    }

    pub fn add_loss(&self, stage: usize, n: u64) {
        self.losses[stage].fetch_add(n, Relaxed);
    }

    pub fn add_decode_error(&self) {
        self.decode_errors.fetch_add(1, Relaxed);
    }
}

#[derive(Debug)]
pub struct AgentStats {
    /// Every probe of the table, enabled or not, in table order.
    pub probes: Vec<(&'static Probe, Arc<ProbeStats>)>,
    /// True once every probe that could attach is attached.
    pub ready: AtomicBool,
    /// With --pid: whether the target still runs (else None). Once it has
    /// exited the probes are detached, so nothing more is counted.
    pub target_running: Option<AtomicBool>,
}

impl AgentStats {
    pub(crate) fn new(table: &[&'static Probe]) -> AgentStats {
        AgentStats {
            probes: table.iter().map(|&p| (p, Arc::default())).collect(),
            ready: AtomicBool::new(false),
            target_running: None,
        }
    }

    /// The stats of the probe named `name` (one of the table's).
    pub(crate) fn of(&self, name: &str) -> &Arc<ProbeStats> {
        let (_, stats) = self
            .probes
            .iter()
            .find(|(p, _)| p.name == name)
            .expect("a probe of the table");
        stats
    }
}
