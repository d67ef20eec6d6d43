//! The block probe in `agent attach`: the process's block I/O, one row per
//! device and operation, since attach.

use super::Block;
use crate::attach::snapshot::Snapshot;
use crate::attach::view::duration;
use crate::probes::AttachView;
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BlockRow {
    pub device: String,
    pub op: &'static str,
    /// Completed requests since attach, and this interval.
    pub count: u64,
    pub interval_count: u64,
    pub bytes: u64,
    /// Requests with a queue time (inserted before issue), and its total.
    pub queued: u64,
    pub queue_ns: u64,
    pub device_ns: u64,
}

/// Fills `Snapshot::block`.
pub(super) struct BlockView {
    block: Arc<Block>,
    last: std::collections::HashMap<(String, &'static str), u64>,
}

impl BlockView {
    pub(super) fn new(block: Arc<Block>) -> Self {
        BlockView {
            block,
            last: Default::default(),
        }
    }
}

impl AttachView for BlockView {
    fn fill(&mut self, snap: &mut Snapshot, _secs: f64) {
        // Attach mode has no container labels: one row per (device, op).
        let rows = self.block.rows().0.into_iter().map(|r| {
            let count = r.hist.device.count;
            let last = self.last.insert((r.device.clone(), r.op), count);
            BlockRow {
                interval_count: count - last.unwrap_or(0).min(count),
                count,
                bytes: r.hist.size_sum,
                queued: r.hist.queue.count,
                queue_ns: r.hist.queue.sum_ns,
                device_ns: r.hist.device.sum_ns,
                device: r.device,
                op: r.op,
            }
        });
        snap.block = Some(rows.collect());
    }
}

/// A table: device, op, requests, bytes, average queue and device time.
pub(super) fn render(out: &mut String, s: &Snapshot) {
    let Some(rows) = &s.block else { return };
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<12} {:<8} {:>9} {:>8} {:>11} {:>10} {:>10}",
        "BLOCK I/O", "op", "requests", "+interval", "bytes", "avg queue", "avg device"
    );
    if rows.is_empty() {
        let _ = writeln!(out, "(no block I/O yet)");
    }
    for r in rows {
        let avg = |ns: u64, n: u64| ns.checked_div(n).map_or("-".to_string(), duration);
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:>9} {:>8} {:>11} {:>10} {:>10}",
            r.device,
            r.op,
            r.count,
            r.interval_count,
            r.bytes,
            avg(r.queue_ns, r.queued),
            avg(r.device_ns, r.count)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fit_80_columns() {
        let mut s = Snapshot::empty(1, "x".into());
        s.block = Some(vec![BlockRow {
            device: "nvme10n1".into(),
            op: "discard",
            count: 123_456_789,
            interval_count: 12_345_678,
            bytes: 99_999_999_999,
            queued: 0,
            queue_ns: 0,
            device_ns: 123_456_789 * 2_500_000,
        }]);
        let mut out = String::new();
        render(&mut out, &s);
        assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
        assert!(out.contains("nvme10n1     discard  123456789"), "{out}");
        assert!(out.contains(" - "), "no queue time: {out}");
        assert!(out.contains("2.5ms"), "{out}");
    }
}
