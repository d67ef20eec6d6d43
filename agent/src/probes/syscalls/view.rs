//! The syscall probe in `agent attach`: a top-like table of the process's
//! syscalls (count, errors, rate, p50/p99/max latency).

use super::aggregate::{SyscallKey, SyscallsBySlot};
use super::names;
use crate::attach::snapshot::Snapshot;
use crate::attach::view::{compact, duration};
use crate::probes::{AttachView, lock};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Syscall rows in the live view (the final summary shows more).
const LIVE_ROWS: usize = 12;
const FINAL_ROWS: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SyscallRow {
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

/// Fills `Snapshot::syscalls`, busiest first (this interval's count, then the total).
pub(super) struct SyscallView {
    /// Attach mode has no container attribution: everything is the host's.
    agg: Arc<Mutex<SyscallsBySlot>>,
    last: HashMap<SyscallKey, u64>,
}

impl SyscallView {
    pub(super) fn new(agg: Arc<Mutex<SyscallsBySlot>>) -> Self {
        SyscallView {
            agg,
            last: HashMap::new(),
        }
    }
}

impl AttachView for SyscallView {
    fn fill(&mut self, snap: &mut Snapshot, secs: f64) {
        let agg = lock(&self.agg);
        let mut rows: Vec<SyscallRow> = agg
            .host()
            .map(|h| h.series())
            .unwrap_or_default()
            .into_iter()
            .map(|(key, s)| {
                let count = s.latency.count();
                let prev = self.last.insert(key, count).unwrap_or(0);
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
            .collect();
        rows.sort_by(|a, b| {
            (b.interval_count, b.count)
                .cmp(&(a.interval_count, a.count))
                .then_with(|| a.name.cmp(&b.name))
        });
        snap.syscalls = rows;
    }
}

pub(super) fn render(out: &mut String, s: &Snapshot) {
    if !s.probes.iter().any(|p| p.probe == "syscalls" && p.attached) {
        return;
    }
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "SYSCALL", "COUNT", "ERRORS", "RATE/s", "P50", "P99", "MAX"
    );
    let rows = if s.is_final { FINAL_ROWS } else { LIVE_ROWS };
    for r in s.syscalls.iter().take(rows) {
        let name: String = r.name.chars().take(18).collect();
        let _ = writeln!(
            out,
            "{name:<18} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8}",
            compact(r.count as f64, 10),
            compact(r.errors as f64, 8),
            compact(r.rate_per_s, 10),
            duration(r.p50_ns),
            duration(r.p99_ns),
            duration(r.max_ns)
        );
    }
    if s.syscalls.len() > rows {
        let _ = writeln!(out, "... {} more syscalls", s.syscalls.len() - rows);
    }
    if s.syscalls.is_empty() {
        let _ = writeln!(out, "(no syscalls yet)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::Slot;
    use agent_common::syscalls::SyscallRecord;

    #[test]
    fn rates_are_per_interval_and_rows_busiest_first() {
        let agg = Arc::new(Mutex::new(SyscallsBySlot::with_host(2, 4, 8)));
        let rec = |id, errno| SyscallRecord::new(1_000, id, errno, 0);
        for _ in 0..3 {
            lock(&agg).record(Slot::HOST, &rec(110, 0));
        }
        lock(&agg).record(Slot::HOST, &rec(81, 9));
        let mut view = SyscallView::new(agg.clone());
        let mut a = Snapshot::empty(1, "x".into());
        view.fill(&mut a, 1.0);
        assert_eq!(a.syscalls[0].name, "getppid");
        assert_eq!(a.syscalls[0].interval_count, 3);
        assert_eq!(a.syscalls[1].errors_by_errno["EBADF"], 1);
        lock(&agg).record(Slot::HOST, &rec(81, 9));
        let mut b = Snapshot::empty(1, "x".into());
        b.is_final = true;
        view.fill(&mut b, 1.0);
        assert_eq!(b.syscalls[0].name, "fchdir");
        assert_eq!((b.syscalls[0].count, b.syscalls[0].interval_count), (2, 1));
        assert_eq!(b.syscalls[1].interval_count, 0);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["final"], true);
        assert_eq!(json["syscalls"][0]["errors_by_errno"]["EBADF"], 2);
    }
}
