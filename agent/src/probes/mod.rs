//! Userspace halves of the eBPF probes: attach, drain, aggregate. One file per
//! probe, named after its kernel counterpart in agent-ebpf.

mod ring;
pub mod sched;
mod sched_cgroups;
pub mod syscalls;
pub mod tcp;

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::programs::{Program, ProgramError, RawTracePoint, TracePoint};

/// Loads and attaches a classic tracepoint program (needs tracefs).
pub fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = find(ebpf, program)?.try_into()?;
    explained(prog.load(), || format!("loading {program}"))?;
    explained(prog.attach(category, name), || {
        format!("attaching to tracepoint {category}/{name}")
    })?;
    Ok(())
}

/// Loads and attaches a raw tracepoint program (no tracefs, no BTF needed).
pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, name: &str) -> Result<()> {
    let prog: &mut RawTracePoint = find(ebpf, program)?.try_into()?;
    explained(prog.load(), || format!("loading {program}"))?;
    explained(prog.attach(name), || {
        format!("attaching to raw tracepoint {name}")
    })?;
    Ok(())
}

fn find<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut Program> {
    ebpf.program_mut(program)
        .with_context(|| format!("program {program} missing from the object"))
}

/// Adds what the user should do (bpf::explain) and what we were doing.
fn explained<T>(r: Result<T, ProgramError>, doing: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| crate::bpf::explain(anyhow::Error::new(e)))
        .with_context(doing)
}

/// What [`start_all`] needs: the probe-related flags of `run` and `attach`.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Process to trace (tgid); 0 traces every process.
    pub target_tgid: u32,
    /// Also trace processes the target forks afterwards (needs kernel BTF).
    pub follow_children: bool,
    /// A probe that cannot attach is an error instead of a warning.
    pub strict: bool,
    pub ring_bytes: u32,
    pub hdr_precision: u8,
    pub flush_interval: std::time::Duration,
    pub unknown_syscall_budget: usize,
    pub tcp_destination_budget: usize,
    /// Which probes to start.
    pub probes: Probes,
    /// Container attribution: records carry cgroup ids, resolved by this.
    pub attribution: Option<std::sync::Arc<crate::k8s::Attribution>>,
}

/// The probes a run starts (`--probes`); the others are neither attached nor
/// reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probes {
    pub syscalls: bool,
    pub tcp: bool,
    pub sched: bool,
}

impl Probes {
    pub const ALL: Probes = Probes {
        syscalls: true,
        tcp: true,
        sched: true,
    };

    /// From names: "syscalls", "tcp", "sched", or "none" alone.
    pub fn from_names(names: &[String]) -> Probes {
        let has = |n: &str| names.iter().any(|x| x == n);
        Probes {
            syscalls: has("syscalls"),
            tcp: has("tcp"),
            sched: has("sched"),
        }
    }
}

/// The running probes: keep `ebpf` alive while tracing (dropping it detaches
/// every program); flip the shutdown channel passed to [`start_all`], then
/// await `tasks` to get the last records drained.
pub struct Started {
    pub ebpf: Ebpf,
    pub kernel: std::sync::Arc<crate::bpf::KernelCounters>,
    pub stats: std::sync::Arc<crate::stats::AgentStats>,
    pub syscalls: std::sync::Arc<std::sync::Mutex<crate::aggregate::SyscallsBySlot>>,
    /// The TCP aggregate (empty when the probe is not attached).
    pub tcp: std::sync::Arc<std::sync::Mutex<crate::tcp::TcpAggregate>>,
    pub tcp_collector: Option<crate::tcp::TcpCollector>,
    pub runq: Option<sched::RunqCollector>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Probes that did not attach, with the reason (label as in /metrics).
    pub missing: Vec<(&'static str, String)>,
}

/// Loads the eBPF object, attaches every probe (a probe that cannot attach is
/// logged and listed in `missing`, unless `strict`), and spawns the drain
/// tasks, which run until `stop` flips. Shared by node and attach mode.
pub fn start_all(opts: &StartOptions, stop: tokio::sync::watch::Receiver<bool>) -> Result<Started> {
    use crate::aggregate::SyscallsBySlot;
    use crate::bpf::{self, KernelCounters, LoadOptions};
    use crate::stats::AgentStats;
    use crate::tcp::{TcpAggregate, TcpCollector};
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Mutex};

    // The TCP probe reads classic tracepoint records: it needs tracefs and this
    // kernel's offsets before loading. Without them it is reported unattached.
    let want = opts.probes;
    // Both probes read kernel struct offsets from BTF: read it once.
    let btf = crate::btf::KernelBtf::read();
    let tcp_offsets = match want.tcp {
        true => crate::tracefs::ensure_mounted().and_then(|root| tcp::offsets(&root, btf.as_ref())),
        false => Err(anyhow::anyhow!("not enabled")),
    };
    // The run-queue probe reads task_struct fields at offsets from kernel BTF.
    let task_offsets = match want.sched || opts.follow_children {
        true => sched::offsets(btf.as_ref()),
        false => Err(anyhow::anyhow!("not enabled")),
    };
    drop(btf);
    if let (true, Err(e)) = (opts.follow_children, &task_offsets) {
        anyhow::bail!("following children needs task_struct offsets from kernel BTF: {e:#}");
    }
    let mut ebpf = bpf::load(&LoadOptions {
        target_tgid: opts.target_tgid,
        follow_children: opts.follow_children,
        tcp_offsets: tcp_offsets.as_ref().copied().unwrap_or_default(),
        task_offsets: task_offsets.as_ref().copied().unwrap_or_default(),
        pid_max: bpf::pid_max(),
        ring_bytes: opts.ring_bytes,
        cgroup_ids: opts.attribution.is_some(),
    })?;
    let kernel = Arc::new(KernelCounters::take(&mut ebpf)?);
    let stats = Arc::new(AgentStats::default());
    let syscalls = Arc::new(Mutex::new(SyscallsBySlot::with_host(
        opts.hdr_precision,
        opts.unknown_syscall_budget,
    )));
    let interval = opts.flush_interval;
    let mut missing = Vec::new();
    let mut tasks = Vec::new();
    // Descendants must be followed before the target can fork: attach first.
    if opts.follow_children {
        attach_raw_tracepoint(&mut ebpf, "sched_process_fork", "sched_process_fork")
            .context("following children (--children)")?;
    }
    stats.syscalls.enabled.store(want.syscalls, Relaxed);
    stats.tcp.enabled.store(want.tcp, Relaxed);
    stats.sched.enabled.store(want.sched, Relaxed);
    match want
        .syscalls
        .then(|| syscalls::attach(&mut ebpf))
        .transpose()
    {
        Ok(None) => {}
        Ok(Some(attached)) => {
            tasks.push(syscalls::spawn(
                attached,
                syscalls.clone(),
                opts.attribution.clone(),
                stats.clone(),
                interval,
                stop.clone(),
            )?);
            stats.syscalls.attached.store(true, Relaxed);
        }
        Err(e) if opts.strict => return Err(e.context("syscall probe (--strict)")),
        Err(e) => {
            tracing::warn!("syscall probe not attached, continuing without it: {e:#}");
            missing.push(("syscalls", format!("{e:#}")));
        }
    }
    let tcp_agg = Arc::new(Mutex::new(TcpAggregate::new(
        opts.hdr_precision,
        opts.tcp_destination_budget,
    )));
    let tcp_collector = match want
        .tcp
        .then(|| tcp_offsets.and_then(|_| tcp::attach(&mut ebpf)))
        .transpose()
    {
        Ok(None) => None,
        Ok(Some(attached)) => {
            let in_flight = attached.in_flight.clone();
            let ring = attached.into_ring();
            tasks.push(tcp::spawn(
                ring,
                tcp_agg.clone(),
                opts.attribution.clone(),
                stats.clone(),
                interval,
                stop.clone(),
            )?);
            stats.tcp.attached.store(true, Relaxed);
            Some(TcpCollector {
                agg: tcp_agg.clone(),
                attribution: opts.attribution.clone(),
                in_flight: Box::new(move || tcp::count_in_flight(&in_flight)),
            })
        }
        Err(e) if opts.strict => return Err(e.context("TCP probe (--strict)")),
        Err(e) => {
            tracing::warn!("TCP probe not attached, continuing without it: {e:#}");
            missing.push(("tcp", format!("{e:#}")));
            None
        }
    };
    let runq = match want
        .sched
        .then(|| task_offsets.and_then(|_| sched::attach(&mut ebpf, opts.attribution.clone())))
        .transpose()
    {
        Ok(None) => None,
        Ok(Some(collector)) => {
            stats.sched.attached.store(true, Relaxed);
            Some(collector)
        }
        Err(e) if opts.strict => return Err(e.context("run-queue probe (--strict)")),
        Err(e) => {
            tracing::warn!("run-queue probe not attached, continuing without it: {e:#}");
            missing.push(("sched", format!("{e:#}")));
            None
        }
    };
    stats.ready.store(true, Relaxed);
    // Loading parsed megabytes of kernel BTF that are free now; glibc keeps
    // such a high-water mark unless asked to give it back.
    // SAFETY: malloc_trim only releases memory that is already free.
    unsafe { libc::malloc_trim(0) };
    Ok(Started {
        ebpf,
        kernel,
        stats,
        syscalls,
        tcp: tcp_agg,
        tcp_collector,
        runq,
        tasks,
        missing,
    })
}
