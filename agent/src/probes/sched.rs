//! Run-queue latency probe, userspace side (kernel side: agent-ebpf/src/sched.rs).
//! The kernel aggregates per CPU; the collector sums the CPUs at scrape time.

use super::sched_cgroups::{self, CgroupRunq};
use crate::btf::KernelBtf;
use crate::histogram::{ns_to_seconds, seconds_buckets};
use crate::k8s::Attribution;
use agent_common::sched::{RunqHist, TaskOffsets};
use anyhow::{Context, Result, bail};
use aya::maps::PerCpuHashMap;
use aya::maps::{MapData, PerCpuArray};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::{Arc, Mutex};

/// `task_struct` offsets from kernel BTF. The kernel reads pid and tgid in one
/// 8-byte read, so they must be adjacent (they have been for decades).
pub fn offsets(btf: Result<&KernelBtf, &anyhow::Error>) -> Result<TaskOffsets> {
    let btf = btf.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let pid = btf.member_offset("task_struct", "pid")?;
    let tgid = btf.member_offset("task_struct", "tgid")?;
    if tgid != pid + 4 {
        bail!("task_struct.tgid ({tgid}) does not follow pid ({pid}) on this kernel");
    }
    let chain = [
        ("task_struct", "cgroups"),
        ("css_set", "dfl_cgrp"),
        ("cgroup", "kn"),
        ("kernfs_node", "id"),
    ]
    .map(|(s, m)| btf.member_offset(s, m));
    let [cgroups, dfl_cgrp, kn, kn_id] = match chain {
        [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
        _ => {
            // Only per-container run-queue series need it; say so if asked.
            tracing::debug!(
                "no task -> cgroup id chain in kernel BTF: run-queue waits stay node-wide"
            );
            [0; 4]
        }
    };
    Ok(TaskOffsets {
        pid,
        _pad: 0,
        cgroups,
        dfl_cgrp,
        kn,
        kn_id,
    })
}

const HOOKS: [&str; 3] = ["sched_wakeup", "sched_wakeup_new", "sched_switch"];

/// Attaches the BTF tracepoint programs (direct loads of task ids: cheaper),
/// or the raw tracepoint ones (a helper call per read) if those cannot load.
pub fn attach(ebpf: &mut Ebpf, attribution: Option<Arc<Attribution>>) -> Result<RunqCollector> {
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
    let cgroups = match attribution {
        Some(a) => {
            let map = ebpf
                .take_map("RUNQ_CGROUP_HIST")
                .context("RUNQ_CGROUP_HIST missing")?;
            Some(CgroupRunq::new(PerCpuHashMap::try_from(map)?, a))
        }
        None => None,
    };
    Ok(RunqCollector {
        map: Mutex::new(PerCpuArray::try_from(map)?),
        cgroups,
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
    Some(sched_cgroups::sum(map.get(&0, 0).ok()?.iter()))
}

pub struct RunqCollector {
    /// Node-wide (everything, without attribution; with it, waits the
    /// per-cgroup map had no room for).
    map: Mutex<PerCpuArray<MapData, RunqHist>>,
    cgroups: Option<CgroupRunq>,
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
        let Some(node) = self.snapshot() else {
            tracing::warn!("cannot read the run-queue histogram map");
            return Ok(());
        };
        // (labels, histogram) per series: one unlabelled without attribution;
        // with it, one per container and the host's (node-wide map included).
        let series = match &self.cgroups {
            None => vec![(Vec::new(), node)],
            Some(cgroups) => cgroups.series(node),
        };
        let mut m = enc.encode_descriptor(
            "runqueue_latency",
            "Time runnable threads waited for a CPU (node-wide, or the target's threads with --pid)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, h) in &series {
            let sum = ns_to_seconds(u128::from(h.sum_ns));
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                sum,
                h.count,
                &seconds_buckets(&h.buckets),
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::buckets::DEFAULT_NS;

    #[test]
    fn buckets_pair_bounds_with_counts() {
        // The kernel's +Inf bucket is the slot after the last bound; the
        // slots past it are unused and not exported.
        let inf = DEFAULT_NS.len();
        let mut h = RunqHist::ZERO;
        h.buckets[0] = 3;
        h.buckets[inf] = 1;
        let b = seconds_buckets(&h.buckets);
        assert_eq!(b.len(), inf + 1);
        assert_eq!(b[0], (1e-6, 3));
        assert_eq!(b[inf], (f64::INFINITY, 1));
    }

    #[test]
    fn this_kernel_has_adjacent_pid_and_tgid() {
        let btf = KernelBtf::read().expect("BTF on this machine");
        let off = offsets(Ok(&btf)).unwrap();
        assert!(off.pid > 0);
    }
}
