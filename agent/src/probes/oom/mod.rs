//! OOM-kill probe, userspace side (kernel side: agent-ebpf/src/oom.rs;
//! records: agent-common/src/oom.rs; test: tests/oom.rs). One ring-buffer
//! event per victim, each waking the drain.

mod aggregate;
mod metrics;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start, lock};
use crate::bpf::LoadPlan;
use crate::k8s::{Attribution, Slot};
use crate::probes::stats::ProbeStats;
use agent_common::counters;
use agent_common::oom::{OomEvent, VICTIM_IS_PID, VICTIM_IS_TASK};
use aggregate::OomAggregate;
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use prometheus_client::collector::Collector;
use std::sync::{Arc, Mutex};

pub(crate) const PROBE: Probe = Probe {
    name: "oom",
    about: "OOM kills: the victim's command and container",
    needs: "raw tracepoint oom:mark_victim, BPF ring buffers (5.8); kernel BTF on 6.8+ (the victim's task)",
    needs_tracefs: false,
    streams: true,
    losses: &[
        ("ringbuf_full", Loss::Kernel(counters::OOM_RINGBUF_DROPS)),
        ("decode", Loss::Decode),
    ],
    prepare,
    start,
    series,
    render: None,
};

/// Since Linux 6.8 the tracepoint passes the victim's task (and its record
/// gained `comm`, which is how this kernel's BTF tells): then its pid, name
/// and cgroup are read from the task at BTF offsets. Before, it passes the
/// pid only (also assumed without BTF).
/// Kills by command (the budget and "other") per label set, and the folded count.
fn series(_: &SeriesInputs) -> Series {
    let commands = aggregate::COMMAND_BUDGET as u64 + 1;
    Series {
        host: commands + 1,
        per_container: commands,
    }
}

fn prepare(p: &Prepare<'_>, plan: &mut LoadPlan) -> Result<()> {
    let has_task = p.btf.is_ok_and(|btf| {
        btf.member_offset("trace_event_raw_mark_victim", "__data_loc_comm")
            .is_ok()
    });
    let arg = if has_task {
        let task = crate::btf::task_offsets(p.btf)
            .context("reading the OOM victim's task needs task_struct offsets from kernel BTF")?;
        plan.global("TASK_OFFSETS", &task);
        VICTIM_IS_TASK
    } else {
        VICTIM_IS_PID
    };
    plan.global("OOM_VICTIM_ARG", &arg);
    Ok(())
}

fn start(ebpf: &mut Ebpf, s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    super::attach_raw_tracepoint(ebpf, "mark_victim", "mark_victim")?;
    let ring = RingBuf::try_from(ebpf.take_map("OOM_EVENTS").context("OOM_EVENTS missing")?)?;
    let agg = Arc::new(Mutex::new(OomAggregate::default()));
    let (drained, attribution, stats) = (agg.clone(), s.opts.attribution.clone(), s.stats.clone());
    let drain_ring = move |ring: &mut RingBuf<MapData>| {
        drain(ring, &drained, attribution.as_deref(), &stats);
    };
    s.tasks.push(super::ring_drain::spawn(
        "OOM",
        ring,
        s.opts.flush_interval,
        s.stop.clone(),
        drain_ring,
        || {},
    )?);
    Ok(Box::new(Oom {
        agg,
        attribution: s.opts.attribution.clone(),
    }))
}

struct Oom {
    agg: Arc<Mutex<OomAggregate>>,
    attribution: Option<Arc<Attribution>>,
}

impl Running for Oom {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::OomCollector {
            agg: self.agg.clone(),
            attribution: self.attribution.clone(),
        })
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    agg: &Mutex<OomAggregate>,
    attribution: Option<&Attribution>,
    stats: &ProbeStats,
) {
    while let Some(item) = ring.next() {
        let Some(ev) = super::ring_drain::decode::<OomEvent>(&item) else {
            stats.add_decode_error();
            continue;
        };
        let slot = attribution.map_or(Slot::HOST, |a| a.lock().slot(ev.cgroup));
        let command = command(&ev);
        tracing::info!(pid = ev.tgid, command, "OOM kill");
        lock(agg).record(slot, &command);
        stats.add_events(1);
    }
}

/// The victim's name: from the kernel, or (kernels that pass only the pid)
/// from /proc while the victim is still there, else "unknown".
fn command(ev: &OomEvent) -> String {
    let len = ev
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ev.comm.len());
    if len > 0 {
        return String::from_utf8_lossy(&ev.comm[..len]).into_owned();
    }
    std::fs::read_to_string(format!("/proc/{}/comm", ev.tgid))
        .map(|s| s.trim_end().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
