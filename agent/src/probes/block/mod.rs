//! Block I/O latency probe, userspace side (kernel side: agent-ebpf/src/block.rs;
//! records: agent-common/src/block.rs; test: tests/block.rs). The kernel
//! aggregates per CPU and (device, operation, cgroup): block I/O can reach a
//! million requests a second, too many to stream. The collector sums the
//! CPUs at scrape time, adds the growth to each container's rows (rows.rs)
//! and names devices as /proc/diskstats does.

mod devices;
mod metrics;
mod rows;
pub(crate) mod view;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start, lock};
use crate::bpf::LoadPlan;
use crate::k8s::Labels;
use agent_common::block::{
    BlockHist, BlockKey, BlockOffsets, CGROUP_HIST_ENTRIES, DISK_DIRECT, HIST_ENTRIES,
    INFLIGHT_ENTRIES, SIZE_BOUNDS,
};
use agent_common::counters;
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{MapData, PerCpuHashMap};
use devices::Devices;
use prometheus_client::collector::Collector;
use rows::{Attributed, CONTAINER_ROWS, DEV_OTHER, HOST_ROWS, Rows};
use std::sync::{Arc, Mutex};

pub(crate) const PROBE: Probe = Probe {
    name: "block",
    about: "block I/O latency (queue and device time) and size, by device, operation and container (the submitter's)",
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

/// Per (device, op) row (the host's: as many as the kernel's map holds
/// without attribution; a container's: CONTAINER_ROWS, the folded one
/// included): two latency histograms and the size histogram (its bounds,
/// +Inf, _sum, _count). The host's also has the folded-completions counter.
fn series(i: &SeriesInputs) -> Series {
    let row = 2 * i.histogram + SIZE_BOUNDS as u64 + 3;
    Series {
        host: HOST_ROWS as u64 * row + 1,
        per_container: CONTAINER_ROWS as u64 * row,
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
    let keys = match p.opts.attribution {
        Some(_) => CGROUP_HIST_ENTRIES,
        None => HIST_ENTRIES,
    };
    plan.per_cpu_map_size("BLOCK_HIST", keys, size_of::<BlockHist>(), HIST_MEMORY);
    Ok(())
}

/// Most memory the per-CPU histograms may take (at most CGROUP_HIST_ENTRIES
/// or HIST_ENTRIES keys of 688 bytes on each possible CPU: 762 keys on a
/// 64-CPU node instead of 2048, which would take 86 MiB).
const HIST_MEMORY: usize = 32 << 20;

/// (tracepoint, program). Completion first: a request the probe sees issued
/// must not complete unseen because its completion hook was not attached yet.
const HOOKS: [(&str, &str); 4] = [
    ("block_rq_complete", "block_rq_complete"),
    ("block_rq_merge", "block_rq_merge"),
    ("block_rq_insert", "block_rq_insert"),
    ("block_rq_issue", "block_rq_issue"),
];

fn start(ebpf: &mut Ebpf, s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    super::attach_btf_or_raw(ebpf, "block", &HOOKS)?;
    let map = ebpf.take_map("BLOCK_HIST").context("BLOCK_HIST missing")?;
    Ok(Box::new(Arc::new(Block {
        map: Mutex::new(PerCpuHashMap::try_from(map)?),
        devices: Mutex::new(Devices::new(std::path::Path::new("/proc"))),
        attributed: s.opts.attribution.as_ref().map(|a| Attributed {
            gone: a.track_gone(),
            attribution: a.clone(),
        }),
        rows: Mutex::default(),
    })))
}

/// The running probe: the kernel's histograms, the rows they grew into and
/// the device names.
struct Block {
    map: Mutex<PerCpuHashMap<MapData, BlockKey, BlockHist>>,
    devices: Mutex<Devices>,
    attributed: Option<Attributed>,
    rows: Mutex<Rows>,
}

/// One (container, device, operation) row, CPUs summed.
pub(crate) struct Row {
    /// Container labels (none without attribution).
    pub labels: Labels,
    pub device: String,
    pub op: &'static str,
    pub hist: BlockHist,
}

impl Block {
    /// Every row of a live label set, sorted; unreadable entries are
    /// skipped (a scrape racing a new key). Also the completions folded so far.
    fn rows(&self) -> (Vec<Row>, u64) {
        let mut map = lock(&self.map);
        let totals: Vec<(BlockKey, BlockHist)> = map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| (k, rows::sum(per_cpu.iter())))
            .collect();
        let mut rows = lock(&self.rows);
        for key in rows.update(totals, self.attributed.as_ref()) {
            let _ = map.remove(&key);
        }
        drop(map);
        let labeler = crate::k8s::labeler(self.attributed.as_ref().map(|a| &*a.attribution));
        let mut devices = lock(&self.devices);
        let mut out = Vec::new();
        for (slot, by_key) in rows.iter() {
            let Some(labels) = labeler.labels(slot) else {
                continue; // retired label set
            };
            for (&(dev, op), hist) in by_key {
                out.push(Row {
                    labels: labels.clone(),
                    device: match dev {
                        DEV_OTHER => "other".to_string(),
                        dev => devices.name(dev),
                    },
                    op: agent_common::block::OP_NAMES
                        .get(op as usize)
                        .copied()
                        .unwrap_or("other"),
                    hist: *hist,
                });
            }
        }
        out.sort_by(|a, b| (&a.labels, &a.device, a.op).cmp(&(&b.labels, &b.device, b.op)));
        (out, rows.folded())
    }
}

impl Running for Arc<Block> {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::BlockCollector(self.clone()))
    }

    fn attach_view(&self) -> Option<Box<dyn super::AttachView>> {
        Some(Box::new(view::BlockView::new(self.clone())))
    }
}
