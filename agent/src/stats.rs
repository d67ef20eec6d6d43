//! The agent's own state that /metrics reports: events received, losses in
//! userspace, which probes are attached, readiness.

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
}

impl ProbeStats {
    pub fn add_events(&self, n: u64) {
        self.events.fetch_add(n, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct AgentStats {
    pub syscalls: ProbeStats,
    pub tcp: ProbeStats,
    pub sched: ProbeStats,
    /// True once every probe that could attach is attached.
    pub ready: AtomicBool,
}

impl AgentStats {
    /// Probes that stream events to userspace (sched aggregates in the kernel:
    /// its event count is `runqueue_latency_seconds_count`).
    pub fn streaming(&self) -> [(&'static str, &ProbeStats); 2] {
        [("syscalls", &self.syscalls), ("tcp", &self.tcp)]
    }

    /// (probe label, stats) for every probe, for uniform export.
    pub fn probes(&self) -> [(&'static str, &ProbeStats); 3] {
        [
            ("syscalls", &self.syscalls),
            ("tcp", &self.tcp),
            ("sched", &self.sched),
        ]
    }
}
