//! Block I/O latency probe, userspace side (kernel side: agent-ebpf/src/block.rs;
//! records: agent-common/src/block.rs; test: tests/block.rs). The kernel
//! aggregates per CPU and (device, operation): block I/O can reach a million
//! requests a second, too many to stream. The collector sums the CPUs at
//! scrape time and names devices as /proc/diskstats does.

mod devices;
mod metrics;
pub(crate) mod view;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start, lock};
use crate::bpf::LoadPlan;
use agent_common::block::{
    BlockHist, BlockKey, BlockOffsets, DISK_DIRECT, HIST_ENTRIES, INFLIGHT_ENTRIES, SIZE_BOUNDS,
};
use agent_common::counters;
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{MapData, PerCpuHashMap};
use devices::Devices;
use prometheus_client::collector::Collector;
use std::sync::{Arc, Mutex};

pub(crate) const PROBE: Probe = Probe {
    name: "block",
    about: "block I/O latency (queue and device time) and size, by device and operation",
    needs: "tp_btf or raw tracepoints block_rq_insert, block_rq_issue, block_rq_complete, block_rq_merge, kernel BTF",
    needs_tracefs: false,
    streams: false,
    losses: &[
        ("inflight_full", Loss::Kernel(counters::BLOCK_INFLIGHT_FULL)),
        (
            "complete_without_issue",
            Loss::Kernel(counters::BLOCK_COMPLETE_WITHOUT_ISSUE),
        ),
        (
            "histogram_map_full",
            Loss::Kernel(counters::BLOCK_HIST_FULL),
        ),
        (
            "request_read_failed",
            Loss::Kernel(counters::BLOCK_READ_FAILED),
        ),
    ],
    series,
    prepare,
    start,
    render: Some(view::render),
};

/// Per (device, op) key the kernel's map can hold: two latency histograms
/// and the size histogram (its bounds, +Inf, _sum, _count). No container
/// labels.
fn series(i: &SeriesInputs) -> Series {
    Series {
        host: u64::from(HIST_ENTRIES) * (2 * i.histogram + SIZE_BOUNDS as u64 + 3),
        per_container: 0,
    }
}

fn prepare(p: &Prepare<'_>, plan: &mut LoadPlan) -> Result<()> {
    let btf = p.btf.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let off = |s: &str, m: &str| {
        btf.member_offset(s, m)
            .with_context(|| format!("block probe: kernel BTF has no {s}.{m}"))
    };
    // 5.16 moved the disk from the request (rq_disk) to its queue (q->disk).
    let (rq_q, q_disk) = match btf.member_offset("request", "rq_disk") {
        Ok(rq_disk) => (rq_disk, DISK_DIRECT),
        Err(_) => (off("request", "q")?, off("request_queue", "disk")?),
    };
    let offsets = BlockOffsets {
        rq_q,
        q_disk,
        disk_major: off("gendisk", "major")?,
        disk_first_minor: off("gendisk", "first_minor")?,
        rq_cmd_flags: off("request", "cmd_flags")?,
        rq_data_len: off("request", "__data_len")?,
    };
    plan.global("BLOCK_OFFSETS", &offsets);
    plan.map_size("BLOCK_INFLIGHT", INFLIGHT_ENTRIES);
    plan.map_size("BLOCK_HIST", HIST_ENTRIES);
    Ok(())
}

/// (tracepoint, program). Completion first: a request the probe sees issued
/// must not complete unseen because its completion hook was not attached yet.
const HOOKS: [(&str, &str); 4] = [
    ("block_rq_complete", "block_rq_complete"),
    ("block_rq_merge", "block_rq_merge"),
    ("block_rq_insert", "block_rq_insert"),
    ("block_rq_issue", "block_rq_issue"),
];

fn start(ebpf: &mut Ebpf, _s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    super::attach_btf_or_raw(ebpf, "block", &HOOKS)?;
    let map = ebpf.take_map("BLOCK_HIST").context("BLOCK_HIST missing")?;
    Ok(Box::new(Arc::new(Block {
        map: Mutex::new(PerCpuHashMap::try_from(map)?),
        devices: Mutex::new(Devices::new(std::path::Path::new("/proc"))),
    })))
}

/// The running probe: the kernel's histograms and the device names.
struct Block {
    map: Mutex<PerCpuHashMap<MapData, BlockKey, BlockHist>>,
    devices: Mutex<Devices>,
}

/// One (device, operation) row, CPUs summed.
pub(crate) struct Row {
    pub device: String,
    pub op: &'static str,
    pub hist: BlockHist,
}

impl Block {
    /// Every (device, operation) seen so far, sorted; unreadable entries are
    /// skipped (a scrape racing a new key).
    fn rows(&self) -> Vec<Row> {
        let totals: Vec<(BlockKey, BlockHist)> = lock(&self.map)
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| (k, sum(per_cpu.iter())))
            .collect();
        let mut devices = lock(&self.devices);
        let mut rows: Vec<Row> = totals
            .into_iter()
            .map(|(k, hist)| Row {
                device: devices.name(k.dev),
                op: agent_common::block::OP_NAMES
                    .get(k.op as usize)
                    .copied()
                    .unwrap_or("other"),
                hist,
            })
            .collect();
        rows.sort_by(|a, b| (&a.device, a.op).cmp(&(&b.device, b.op)));
        rows
    }
}

/// Sum of per-CPU histograms.
fn sum<'a>(per_cpu: impl Iterator<Item = &'a BlockHist>) -> BlockHist {
    let mut t = BlockHist::ZERO;
    for h in per_cpu {
        for (into, from) in [(&mut t.queue, &h.queue), (&mut t.device, &h.device)] {
            for (a, b) in into.buckets.iter_mut().zip(from.buckets) {
                *a += b;
            }
            into.count += from.count;
            into.sum_ns += from.sum_ns;
        }
        for (a, b) in t.size.iter_mut().zip(h.size) {
            *a += b;
        }
        t.size_sum += h.size_sum;
    }
    t
}

impl Running for Arc<Block> {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::BlockCollector(self.clone()))
    }

    fn attach_view(&self) -> Option<Box<dyn super::AttachView>> {
        Some(Box::new(view::BlockView::new(self.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_sum_per_field() {
        let mut a = BlockHist::ZERO;
        a.queue.buckets[1] = 2;
        a.queue.count = 2;
        a.device.count = 3;
        a.device.sum_ns = 30;
        a.size[3] = 3;
        a.size_sum = 12288;
        let t = sum([a, a].iter());
        assert_eq!(
            (
                t.queue.buckets[1],
                t.queue.count,
                t.device.count,
                t.device.sum_ns
            ),
            (4, 4, 6, 60)
        );
        assert_eq!((t.size[3], t.size_sum), (6, 24576));
    }
}
