//! One interval's picture of the traced process, built from the aggregates:
//! what the terminal view draws and what `--json` writes (schema in
//! docs/attach.md).

use super::procstat::ProcStats;
use crate::aggregate::{SyscallKey, SyscallsBySlot};
use crate::names;
use crate::tcp::{Outcome, TcpAggregate};
use agent_common::sched::RunqHist;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
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

#[derive(Debug, Clone, Serialize)]
pub struct SyscallRow {
    pub name: String,
    /// The syscall number; None for the folded `other` series.
    pub id: Option<u32>,
    /// Since attach.
    pub count: u64,
    pub errors: u64,
    pub errors_by_errno: BTreeMap<String, u64>,
    /// Completed in this interval, and that per second.
    pub interval_count: u64,
    pub rate_per_s: f64,
    /// Latency since attach, in ns (HDR precision).
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Runqueue {
    /// Waits measured since attach, and their total.
    pub count: u64,
    pub sum_ns: u64,
    pub interval_count: u64,
    /// Non-cumulative counts since attach; the last bucket has `le_ns: null` (+Inf).
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bucket {
    pub le_ns: Option<u64>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tcp {
    pub connects: u64,
    pub interval_connects: u64,
    /// Every outcome (success, refused, timed_out, unreachable, aborted, other_error).
    pub by_outcome: BTreeMap<&'static str, u64>,
    /// Latency of successful connects, in ns.
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Most connects first.
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub destination: String,
    pub outcome: &'static str,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExitInfo {
    /// What the agent exits with: the exit code, or 128 + signal.
    pub code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Builds snapshots, remembering the previous totals for per-interval rates.
pub struct Snapshotter {
    pid: u32,
    comm: String,
    attached_at: Instant,
    last_at: Instant,
    last_wall: SystemTime,
    last_syscalls: HashMap<SyscallKey, u64>,
    last_runq: u64,
    last_tcp: u64,
}

pub struct Sources<'a> {
    /// Attach mode has no container attribution: everything is the host's.
    pub syscalls: &'a std::sync::Mutex<SyscallsBySlot>,
    /// None when the TCP probe is not attached.
    pub tcp: Option<&'a std::sync::Mutex<TcpAggregate>>,
    /// None when the run-queue probe is not attached or cannot be read.
    pub runq: Option<RunqHist>,
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
    pub fn new(pid: u32, comm: String) -> Self {
        Snapshotter {
            pid,
            comm,
            attached_at: Instant::now(),
            last_at: Instant::now(),
            last_wall: SystemTime::now(),
            last_syscalls: HashMap::new(),
            last_runq: 0,
            last_tcp: 0,
        }
    }

    pub fn take(&mut self, src: Sources<'_>, is_final: bool) -> Snapshot {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let secs = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let mut syscalls: Vec<SyscallRow> = {
            let agg = src.syscalls.lock().unwrap_or_else(|p| p.into_inner());
            agg.host()
                .map(|h| h.series())
                .unwrap_or_default()
                .into_iter()
                .map(|(key, s)| {
                    let count = s.latency.count();
                    let prev = self.last_syscalls.insert(key, count).unwrap_or(0);
                    let interval_count = count.saturating_sub(prev);
                    let (name, id) = match key {
                        SyscallKey::Id(id) => (names::syscall(id).into_owned(), Some(id)),
                        SyscallKey::Other => ("other".to_string(), None),
                    };
                    SyscallRow {
                        name,
                        id,
                        count,
                        errors: s.error_count(),
                        errors_by_errno: s
                            .errors
                            .iter()
                            .map(|&(e, n)| (names::errno(e).into_owned(), n))
                            .collect(),
                        interval_count,
                        rate_per_s: interval_count as f64 / secs,
                        p50_ns: s.latency.quantile_ns(0.5),
                        p99_ns: s.latency.quantile_ns(0.99),
                        max_ns: s.latency.max_ns(),
                    }
                })
                .collect()
        };
        syscalls.sort_by(|a, b| {
            (b.interval_count, b.count)
                .cmp(&(a.interval_count, a.count))
                .then_with(|| a.name.cmp(&b.name))
        });
        let runqueue = src.runq.map(|h| {
            let interval_count = h.count.saturating_sub(self.last_runq);
            self.last_runq = h.count;
            Runqueue {
                count: h.count,
                sum_ns: h.sum_ns,
                interval_count,
                buckets: {
                    let bounds = crate::histogram::layout().bounds_ns();
                    h.buckets
                        .iter()
                        .take(bounds.len() + 1) // the bounds, then +Inf
                        .enumerate()
                        .map(|(i, &count)| Bucket {
                            le_ns: bounds.get(i).copied(),
                            count,
                        })
                        .collect()
                },
            }
        });
        let tcp = src.tcp.map(|agg| {
            let agg = agg.lock().unwrap_or_else(|p| p.into_inner());
            let connects: u64 = Outcome::ALL.iter().map(|&o| agg.count(o)).sum();
            let interval_connects = connects.saturating_sub(self.last_tcp);
            self.last_tcp = connects;
            let mut destinations: Vec<Destination> = agg
                .by_destination()
                .into_iter()
                .map(|(d, o, n)| Destination {
                    destination: d.to_string(),
                    outcome: o.label(),
                    count: n,
                })
                .collect();
            destinations.sort_by_key(|d| std::cmp::Reverse(d.count));
            Tcp {
                connects,
                interval_connects,
                by_outcome: Outcome::ALL
                    .iter()
                    .map(|&o| (o.label(), agg.count(o)))
                    .collect(),
                p50_ns: agg.host().latency.quantile_ns(0.5),
                p99_ns: agg.host().latency.quantile_ns(0.99),
                max_ns: agg.host().latency.max_ns(),
                destinations,
            }
        });
        let snap = Snapshot {
            is_final,
            pid: self.pid,
            comm: self.comm.clone(),
            interval_start_unix_ms: unix_ms(self.last_wall),
            interval_end_unix_ms: unix_ms(wall),
            elapsed_s: now.duration_since(self.attached_at).as_secs_f64(),
            probes: src.probes,
            syscalls,
            runqueue,
            tcp,
            process: src.process,
            exit: None,
            events_lost: src.events_lost,
        };
        self.last_at = now;
        self.last_wall = wall;
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::syscalls::SyscallRecord;
    use std::sync::Mutex;

    #[test]
    fn rates_are_per_interval_and_rows_busiest_first() {
        let agg = Mutex::new(SyscallsBySlot::with_host(2, 4));
        let rec = |id, errno| SyscallRecord::new(1_000, id, errno, 0);
        for _ in 0..3 {
            agg.lock()
                .unwrap()
                .record(crate::k8s::Slot::HOST, &rec(110, 0));
        }
        agg.lock()
            .unwrap()
            .record(crate::k8s::Slot::HOST, &rec(81, 9));
        let mut s = Snapshotter::new(1, "x".into());
        let src = |agg| Sources {
            syscalls: agg,
            tcp: None,
            runq: Some(RunqHist::ZERO),
            probes: vec![],
            process: None,
            events_lost: 0,
        };
        let a = s.take(src(&agg), false);
        assert_eq!(a.syscalls[0].name, "getppid");
        assert_eq!(a.syscalls[0].interval_count, 3);
        assert_eq!(a.syscalls[1].errors_by_errno["EBADF"], 1);
        agg.lock()
            .unwrap()
            .record(crate::k8s::Slot::HOST, &rec(81, 9));
        let b = s.take(src(&agg), true);
        assert_eq!(b.syscalls[0].name, "fchdir");
        assert_eq!((b.syscalls[0].count, b.syscalls[0].interval_count), (2, 1));
        assert_eq!(b.syscalls[1].interval_count, 0);
        let rq = b.runqueue.as_ref().unwrap();
        assert_eq!(
            rq.buckets.len(),
            agent_common::buckets::DEFAULT_NS.len() + 1
        );
        assert_eq!(rq.buckets.last().unwrap().le_ns, None);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["final"], true);
        assert_eq!(json["syscalls"][0]["errors_by_errno"]["EBADF"], 2);
    }
}
