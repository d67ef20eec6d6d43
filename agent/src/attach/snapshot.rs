//! One interval's picture of the traced process, built from the aggregates:
//! what the terminal view draws and what `--json` writes (schema in
//! docs/attach.md).

use super::procstat::ProcStats;
use crate::probes::AttachView;
use crate::probes::block::view::BlockRow;
use crate::probes::process::view::Processes;
use crate::probes::sched::view::Runqueue;
use crate::probes::syscalls::view::SyscallRow;
use crate::probes::tcp::view::Tcp;
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// True on the last object only (the summary).
    #[serde(rename = "final")]
    pub is_final: bool,
    pub pid: u32,
    /// The process name (comm) when the agent attached.
    pub comm: String,
    pub interval_start_unix_ms: u64,
    pub interval_end_unix_ms: u64,
    /// Seconds since the probes were attached.
    pub elapsed_s: f64,
    pub probes: Vec<ProbeState>,
    /// Busiest first (this interval's count, then the total).
    pub syscalls: Vec<SyscallRow>,
    pub runqueue: Option<Runqueue>,
    pub tcp: Option<Tcp>,
    /// Execs, forks and exits of the target and its followed children.
    pub processes: Option<Processes>,
    /// Per device and operation (None when the probe is not attached).
    pub block: Option<Vec<BlockRow>>,
    /// None once the process has exited.
    pub process: Option<ProcStats>,
    /// Set on the final object when the process exited and its status is known.
    pub exit: Option<ExitInfo>,
    /// Events the kernel could not deliver (ring buffer full), since attach.
    pub events_lost: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeState {
    pub probe: &'static str,
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExitInfo {
    /// What the agent exits with: the exit code, or 128 + signal.
    pub code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Snapshot {
    /// The fields every snapshot has; the probes' views fill their own.
    pub(crate) fn empty(pid: u32, comm: String) -> Snapshot {
        Snapshot {
            is_final: false,
            pid,
            comm,
            interval_start_unix_ms: 0,
            interval_end_unix_ms: 0,
            elapsed_s: 0.0,
            probes: Vec::new(),
            syscalls: Vec::new(),
            runqueue: None,
            tcp: None,
            processes: None,
            block: None,
            process: None,
            exit: None,
            events_lost: 0,
        }
    }
}

/// Builds snapshots: the running probes' views fill their parts.
pub struct Snapshotter {
    pid: u32,
    comm: String,
    attached_at: Instant,
    last_at: Instant,
    last_wall: SystemTime,
    views: Vec<Box<dyn AttachView>>,
}

/// What the snapshot takes from outside the probes.
pub struct Sources {
    pub probes: Vec<ProbeState>,
    pub process: Option<ProcStats>,
    pub events_lost: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Snapshotter {
    pub(crate) fn new(pid: u32, comm: String, views: Vec<Box<dyn AttachView>>) -> Self {
        Snapshotter {
            pid,
            comm,
            attached_at: Instant::now(),
            last_at: Instant::now(),
            last_wall: SystemTime::now(),
            views,
        }
    }

    pub fn take(&mut self, src: Sources, is_final: bool) -> Snapshot {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let secs = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let mut snap = Snapshot {
            is_final,
            interval_start_unix_ms: unix_ms(self.last_wall),
            interval_end_unix_ms: unix_ms(wall),
            elapsed_s: now.duration_since(self.attached_at).as_secs_f64(),
            probes: src.probes,
            process: src.process,
            events_lost: src.events_lost,
            ..Snapshot::empty(self.pid, self.comm.clone())
        };
        for view in &mut self.views {
            view.fill(&mut snap, secs);
        }
        self.last_at = now;
        self.last_wall = wall;
        snap
    }
}
