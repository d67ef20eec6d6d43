//! Process probe, userspace side (kernel side: agent-ebpf/src/process.rs;
//! records: agent-common/src/process.rs; test: tests/process.rs). Execs,
//! forks and exits stream through one ring buffer; with `--exec-events`
//! each exec is also written as an NDJSON audit record.

mod aggregate;
pub(crate) mod audit;
mod metrics;
pub(crate) mod view;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start, lock};
use crate::bpf::LoadPlan;
use crate::k8s::cgroupfs::low32;
use crate::k8s::{Attribution, Slot};
use crate::probes::stats::ProbeStats;
use agent_common::counters;
use agent_common::process::{
    EXIT_GROUP_DEAD_ARG, EXIT_LEADER, ExecEvent, KIND_EXEC, KIND_EXIT, KIND_FORK, ProcessEvent,
    ProcessOffsets,
};
use aggregate::ProcessAggregate;
use anyhow::{Context, Result};
use audit::{ExecAudit, Written, text};
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use prometheus_client::collector::Collector;
use std::sync::{Arc, Mutex};
use view::{Recent, RecentLog};

/// `ProbeStats::losses` indices of the audit stream's losses.
const RATE_LIMITED: usize = 0;
const WRITE_FAILED: usize = 1;

pub(crate) const PROBE: Probe = Probe {
    name: "process",
    about: "process execs, forks, exits by exit code or signal, lifetimes; exec audit stream",
    needs: "tracepoint sched:sched_process_exec with tracefs, raw tracepoints sched_process_fork and sched_process_exit, kernel BTF, BPF ring buffers (5.8)",
    needs_tracefs: true,
    streams: true,
    losses: &[
        (
            "ringbuf_full",
            Loss::Kernel(counters::PROCESS_RINGBUF_DROPS),
        ),
        (
            "task_read_failed",
            Loss::Kernel(counters::PROCESS_READ_FAILED),
        ),
        ("follow_map_full", Loss::Kernel(counters::FOLLOW_MAP_FULL)),
        ("decode", Loss::Decode),
        ("rate_limit", Loss::Userspace(RATE_LIMITED)),
        ("audit_write", Loss::Userspace(WRITE_FAILED)),
        (
            "filename_unreadable",
            Loss::Kernel(counters::EXEC_FILENAME_UNREADABLE),
        ),
    ],
    series,
    prepare,
    start,
    render: Some(view::render),
};

/// Per label set: execs, forks, the lifetime histogram, and exits by every
/// `code` label.
fn series(_: &SeriesInputs) -> Series {
    let lifetime = aggregate::LIFETIME_BOUNDS.len() as u64 + 3;
    let per_set = 2 + lifetime + aggregate::EXIT_LABELS;
    Series {
        host: per_set,
        per_container: per_set,
    }
}

/// Whether `sched_process_exit` passes `group_dead` (Linux 6.16+; its
/// tracefs record gained the field in the same change), for the global
/// `EXIT_GROUP_DEAD`. Shared with following children.
pub(crate) fn exit_group_dead(btf: &crate::btf::KernelBtf) -> u32 {
    match btf.member_offset("trace_event_raw_sched_process_exit", "group_dead") {
        Ok(_) => EXIT_GROUP_DEAD_ARG,
        Err(_) => EXIT_LEADER,
    }
}

fn prepare(p: &Prepare<'_>, plan: &mut LoadPlan) -> Result<()> {
    let tracefs = crate::tracefs::ensure_mounted()?;
    let btf = p.btf.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let task = crate::btf::task_offsets(Ok(btf))
        .context("process events need task_struct offsets from kernel BTF")?;
    plan.global("TASK_OFFSETS", &task);
    let member = |m| btf.member_offset("task_struct", m);
    let filename = crate::tracefs::field(&tracefs, "sched", "sched_process_exec", "filename")?;
    plan.global(
        "PROCESS_OFFSETS",
        &ProcessOffsets {
            real_parent: member("real_parent")?,
            exit_code: member("exit_code")?,
            start_time: member("start_time")?,
            filename: filename.offset,
            filenames: u32::from(wants_filenames(p.opts)),
        },
    );
    plan.global("EXIT_GROUP_DEAD", &exit_group_dead(btf));
    plan.map_size("PROCESS_EVENTS", p.opts.ring_bytes);
    Ok(())
}

/// Filenames cost a string read per exec: only for the audit stream and
/// when one process is traced (attach mode's list of recent execs).
fn wants_filenames(opts: &super::StartOptions) -> bool {
    opts.exec_events.is_some() || opts.target_tgid != 0
}

fn start(ebpf: &mut Ebpf, s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    let audit = s
        .opts
        .exec_events
        .as_ref()
        .map(ExecAudit::open)
        .transpose()?;
    super::attach_tracepoint(ebpf, "process_exec", "sched", "sched_process_exec")?;
    super::attach_raw_tracepoint(ebpf, "process_fork", "sched_process_fork")?;
    super::attach_raw_tracepoint(ebpf, "process_exit", "sched_process_exit")?;
    let ring = RingBuf::try_from(
        ebpf.take_map("PROCESS_EVENTS")
            .context("PROCESS_EVENTS missing")?,
    )?;
    let agg = Arc::new(Mutex::new(ProcessAggregate::default()));
    let recent: Option<RecentLog> = (s.opts.target_tgid != 0).then(RecentLog::default);
    let mut drain = Drain {
        agg: agg.clone(),
        recent: recent.clone(),
        attribution: s.opts.attribution.clone(),
        stats: s.stats.clone(),
        audit,
    };
    s.tasks.push(super::ring_drain::spawn(
        "process",
        ring,
        s.opts.flush_interval,
        s.stop.clone(),
        move |ring: &mut RingBuf<MapData>| drain.drain(ring),
        || {},
    )?);
    Ok(Box::new(Process {
        agg,
        recent,
        attribution: s.opts.attribution.clone(),
    }))
}

struct Process {
    agg: Arc<Mutex<ProcessAggregate>>,
    recent: Option<RecentLog>,
    attribution: Option<Arc<Attribution>>,
}

impl Running for Process {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::ProcessCollector {
            agg: self.agg.clone(),
            attribution: self.attribution.clone(),
        })
    }

    fn attach_view(&self) -> Option<Box<dyn super::AttachView>> {
        Some(Box::new(view::ProcessView {
            agg: self.agg.clone(),
            recent: self.recent.clone().unwrap_or_default(),
        }))
    }
}

struct Drain {
    agg: Arc<Mutex<ProcessAggregate>>,
    recent: Option<RecentLog>,
    attribution: Option<Arc<Attribution>>,
    stats: Arc<ProbeStats>,
    audit: Option<ExecAudit>,
}

impl Drain {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let offset = audit::realtime_offset_ns();
        let mut wrote = false;
        while let Some(item) = ring.next() {
            let Some(head) = super::ring_drain::decode::<ProcessEvent>(&item) else {
                self.stats.add_decode_error();
                continue;
            };
            let slot = self
                .attribution
                .as_deref()
                .map_or(Slot::HOST, |a| a.lock().slot(low32(head.cgroup)));
            match head.kind {
                KIND_EXEC => {
                    // Without filenames the record is the header alone.
                    let exec = super::ring_drain::decode::<ExecEvent>(&item);
                    lock(&self.agg).exec(slot);
                    if let Some(exec) = &exec {
                        self.audit_exec(exec, offset, slot);
                        wrote = true;
                    }
                    self.remember(&head, exec.map(|e| text(&e.filename)), None);
                }
                KIND_FORK => lock(&self.agg).fork(slot),
                KIND_EXIT => {
                    lock(&self.agg).exit(slot, head.exit_code, head.ns);
                    self.remember(&head, None, Some(aggregate::exit_label(head.exit_code)));
                }
                _ => {
                    self.stats.add_decode_error();
                    continue;
                }
            }
            self.stats.add_events(1);
        }
        if wrote
            && let Some(audit) = &mut self.audit
            && !audit.flush()
        {
            self.stats.add_loss(WRITE_FAILED, 1);
        }
    }

    fn audit_exec(&mut self, exec: &ExecEvent, offset: i128, slot: Slot) {
        let Some(audit) = &mut self.audit else { return };
        let labels = self
            .attribution
            .as_deref()
            .and_then(|a| a.labeler().labels(slot));
        match audit.write(exec, offset, labels.as_ref()) {
            Written::Yes => {}
            Written::RateLimited => self.stats.add_loss(RATE_LIMITED, 1),
            Written::Failed => self.stats.add_loss(WRITE_FAILED, 1),
        }
    }

    fn remember(&self, head: &ProcessEvent, filename: Option<String>, code: Option<&'static str>) {
        let Some(log) = &self.recent else { return };
        view::remember(
            log,
            Recent {
                event: if code.is_some() { "exit" } else { "exec" },
                pid: head.tgid,
                comm: text(&head.comm),
                filename,
                code,
            },
        );
    }
}
