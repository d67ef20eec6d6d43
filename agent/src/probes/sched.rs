//! Run-queue latency probe, userspace side (kernel side: agent-ebpf/src/sched.rs).
//! The kernel aggregates per CPU; the collector sums the CPUs at scrape time.

use crate::btf::KernelBtf;
use crate::histogram::{ns_to_seconds, seconds_buckets};
use agent_common::sched::{RunqHist, TaskOffsets};
use anyhow::{Context, Result, bail};
use aya::maps::{MapData, PerCpuArray};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::Mutex;

/// `task_struct` offsets from kernel BTF. The kernel reads pid and tgid in one
/// 8-byte read, so they must be adjacent (they have been for decades).
pub fn offsets(btf: Result<&KernelBtf, &anyhow::Error>) -> Result<TaskOffsets> {
    let btf = btf.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let pid = btf.member_offset("task_struct", "pid")?;
    let tgid = btf.member_offset("task_struct", "tgid")?;
    if tgid != pid + 4 {
        bail!("task_struct.tgid ({tgid}) does not follow pid ({pid}) on this kernel");
    }
    Ok(TaskOffsets { pid, _pad: 0 })
}

const HOOKS: [&str; 3] = ["sched_wakeup", "sched_wakeup_new", "sched_switch"];

/// Attaches the BTF tracepoint programs (direct loads of task ids: cheaper),
/// or the raw tracepoint ones (a helper call per read) if those cannot load.
pub fn attach(ebpf: &mut Ebpf) -> Result<RunqCollector> {
    match load_btf(ebpf) {
        Ok(()) => {
            for tp in HOOKS {
                let prog: &mut BtfTracePoint = ebpf
                    .program_mut(&format!("{tp}_btf"))
                    .context("tp_btf program missing")?
                    .try_into()?;
                prog.attach()
                    .with_context(|| format!("attaching tp_btf/{tp}"))?;
            }
            tracing::debug!("run-queue probe on tp_btf");
        }
        Err(e) => {
            tracing::info!("run-queue probe on raw tracepoints (tp_btf unavailable: {e:#})");
            for tp in HOOKS {
                super::attach_raw_tracepoint(ebpf, tp, tp)?;
            }
        }
    }
    let map = ebpf.take_map("RUNQ_HIST").context("RUNQ_HIST missing")?;
    Ok(RunqCollector {
        map: Mutex::new(PerCpuArray::try_from(map)?),
    })
}

/// Loads all three tp_btf programs, so that either all or none attach.
fn load_btf(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    for tp in HOOKS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(&format!("{tp}_btf"))
            .context("tp_btf program missing")?
            .try_into()?;
        prog.load(tp, &btf)
            .with_context(|| format!("loading tp_btf/{tp}"))?;
    }
    Ok(())
}

/// Sum of the per-CPU histograms; `None` if the map cannot be read.
pub fn read(map: &PerCpuArray<MapData, RunqHist>) -> Option<RunqHist> {
    let per_cpu = map.get(&0, 0).ok()?;
    let mut total = RunqHist::ZERO;
    for h in per_cpu.iter() {
        for (t, v) in total.buckets.iter_mut().zip(h.buckets) {
            *t += v;
        }
        total.count += h.count;
        total.sum_ns += h.sum_ns;
    }
    Some(total)
}

pub struct RunqCollector {
    map: Mutex<PerCpuArray<MapData, RunqHist>>,
}

impl RunqCollector {
    pub fn snapshot(&self) -> Option<RunqHist> {
        read(&*self.map.lock().ok()?)
    }
}

impl std::fmt::Debug for RunqCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunqCollector")
    }
}

impl Collector for RunqCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(h) = self.snapshot() else {
            tracing::warn!("cannot read the run-queue histogram map");
            return Ok(());
        };
        let mut m = enc.encode_descriptor(
            "runqueue_latency",
            "Time runnable threads waited for a CPU (node-wide, or the target's threads with --pid)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let sum = ns_to_seconds(u128::from(h.sum_ns));
        m.encode_histogram::<NoLabelSet>(sum, h.count, &seconds_buckets(&h.buckets), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::buckets::COUNT;

    #[test]
    fn buckets_pair_bounds_with_counts() {
        let mut h = RunqHist::ZERO;
        h.buckets[0] = 3;
        h.buckets[COUNT - 1] = 1;
        let b = seconds_buckets(&h.buckets);
        assert_eq!(b.len(), COUNT);
        assert_eq!(b[0], (1e-6, 3));
        assert_eq!(b[COUNT - 1], (f64::INFINITY, 1));
    }

    #[test]
    fn this_kernel_has_adjacent_pid_and_tgid() {
        let btf = KernelBtf::read().expect("BTF on this machine");
        let off = offsets(Ok(&btf)).unwrap();
        assert!(off.pid > 0);
    }
}
