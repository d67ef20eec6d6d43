//! Run-queue latency probe, userspace side (kernel side: agent-ebpf/src/sched.rs;
//! records: agent-common/src/sched.rs; test: tests/sched.rs).
//! The kernel aggregates per CPU (a hot path: hundreds of thousands of
//! switches per second); the collector sums the CPUs at scrape time.

mod cgroups;
mod metrics;
pub(crate) mod view;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start};
use crate::bpf::{self, KernelCounters, LoadPlan};
use agent_common::counters;
use agent_common::sched::{CGROUP_HIST_ENTRIES, RunqHist};
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::PerCpuHashMap;
use aya::maps::{MapData, PerCpuArray};
use cgroups::CgroupRunq;
pub(crate) use cgroups::add_growth;
use prometheus_client::collector::Collector;
use std::sync::{Arc, Mutex};

pub(crate) const PROBE: Probe = Probe {
    name: "sched",
    about: "how long runnable threads wait for a CPU (run-queue latency)",
    needs: "tp_btf or raw tracepoints sched_wakeup, sched_wakeup_new, sched_switch, kernel BTF",
    needs_tracefs: false,
    streams: false,
    losses: &[("task_read_failed", Loss::Kernel(counters::RUNQ_READ_FAILED))],
    prepare,
    start,
    series,
    render: Some(view::render),
};

/// One histogram per label set, and the map-full count.
fn series(i: &SeriesInputs) -> Series {
    Series {
        host: i.histogram + 1,
        per_container: i.histogram,
    }
}

/// Most memory the per-cgroup histograms may take (1024 keys of 272 bytes
/// on each possible CPU up to 30 CPUs, fewer above: 240 on 128 CPUs).
const CGROUP_HIST_MEMORY: usize = 8 << 20;

fn prepare(p: &Prepare<'_>, plan: &mut LoadPlan) -> Result<()> {
    plan.global("TASK_OFFSETS", &crate::btf::task_offsets(p.btf)?);
    let switch = Switch::of(p.btf.map_err(|e| anyhow::anyhow!("{e:#}"))?)?;
    if let Switch::TaskState { offset, .. } = switch {
        plan.global("TASK_STATE_OFFSET", &offset);
    }
    *super::lock(&SWITCH) = Some(switch);
    plan.map_size("RUNQ_START", bpf::pid_max());
    // Preallocated per CPU: only worth its memory with attribution on.
    if p.opts.attribution.is_some() {
        plan.per_cpu_map_size(
            "RUNQ_CGROUP_HIST",
            CGROUP_HIST_ENTRIES,
            size_of::<RunqHist>(),
            CGROUP_HIST_MEMORY,
        );
    }
    Ok(())
}

fn start(ebpf: &mut Ebpf, s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    attach(ebpf)?;
    let map = ebpf.take_map("RUNQ_HIST").context("RUNQ_HIST missing")?;
    let cgroups = match &s.opts.attribution {
        Some(a) => {
            let map = ebpf
                .take_map("RUNQ_CGROUP_HIST")
                .context("RUNQ_CGROUP_HIST missing")?;
            Some(CgroupRunq::new(PerCpuHashMap::try_from(map)?, a.clone()))
        }
        None => None,
    };
    Ok(Box::new(Arc::new(Runq {
        map: Mutex::new(PerCpuArray::try_from(map)?),
        cgroups,
        kernel: s.kernel.clone(),
    })))
}

/// How this kernel's sched_switch tells whether prev is still runnable,
/// decided by `prepare` from kernel BTF for `start` (one kernel per process).
static SWITCH: Mutex<Option<Switch>> = Mutex::new(None);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Switch {
    /// 5.18 and later: a 4th argument, `prev_state`.
    PrevStateArg,
    /// Before 5.18 (3 arguments): prev's state field, read from the task.
    TaskState { field: &'static str, offset: u32 },
}

impl Switch {
    /// By what the tracepoint takes (its `btf_trace_sched_switch` prototype),
    /// not by version number: distributions backport.
    fn of(btf: &crate::btf::KernelBtf) -> Result<Switch> {
        match btf.tracepoint_args("sched_switch")? {
            4 => Ok(Switch::PrevStateArg),
            3 => {
                let (field, offset) = btf
                    .first_member_offset("task_struct", &["__state", "state"])
                    .context("sched_switch has no prev_state argument, and task_struct no state")?;
                Ok(Switch::TaskState { field, offset })
            }
            n => anyhow::bail!("sched_switch takes {n} arguments here; the probe knows 3 and 4"),
        }
    }

    /// The sched_switch programs' names (raw tracepoint; `_btf` for tp_btf).
    fn program(self) -> &'static str {
        match self {
            Switch::PrevStateArg => "sched_switch",
            Switch::TaskState { .. } => "sched_switch_task_state",
        }
    }
}

/// (tracepoint, raw tracepoint program) of the three hooks.
fn hooks(switch: Switch) -> [(&'static str, &'static str); 3] {
    [
        ("sched_wakeup", "sched_wakeup"),
        ("sched_wakeup_new", "sched_wakeup_new"),
        ("sched_switch", switch.program()),
    ]
}

/// The tp_btf programs (direct loads of task ids: cheaper), or the raw
/// tracepoint ones (a helper call per read) if those cannot load.
fn attach(ebpf: &mut Ebpf) -> Result<()> {
    let switch = (*super::lock(&SWITCH)).context("run-queue probe not prepared")?;
    if let Switch::TaskState { field, offset } = switch {
        tracing::info!(
            "sched_switch has no prev_state argument (before 5.18): reading task_struct.{field} \
             (offset {offset})"
        );
    }
    super::attach_btf_or_raw(ebpf, "run-queue", &hooks(switch))?;
    Ok(())
}

/// Sum of the per-CPU histograms; `None` if the map cannot be read.
fn read(map: &PerCpuArray<MapData, RunqHist>) -> Option<RunqHist> {
    Some(cgroups::sum(map.get(&0, 0).ok()?.iter()))
}

/// The running probe: the kernel's histograms.
struct Runq {
    /// Node-wide (everything, without attribution; with it, waits the
    /// per-cgroup map had no room for).
    map: Mutex<PerCpuArray<MapData, RunqHist>>,
    cgroups: Option<CgroupRunq>,
    kernel: Arc<KernelCounters>,
}

impl Runq {
    fn snapshot(&self) -> Option<RunqHist> {
        read(&*self.map.lock().ok()?)
    }
}

impl Running for Arc<Runq> {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::RunqCollector(self.clone()))
    }

    fn attach_view(&self) -> Option<Box<dyn super::AttachView>> {
        Some(Box::new(view::RunqView::new(self.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::seconds_buckets;
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
}
