//! The eBPF probes' userspace halves, one folder each, and [`PROBES`], the
//! table that lists them. Everything that deals with probes in general reads
//! the table: `--probes` values, start-up, self-stats, the registry, reload
//! and attach mode. Adding a probe: docs/adding-a-probe.md.

pub(crate) mod block;
mod oom;
pub(crate) mod process;
mod program;
mod ring_drain;
pub(crate) mod sched;
pub(crate) mod series;
pub(crate) mod stats;
pub(crate) mod syscalls;
pub(crate) mod tcp;

pub(crate) use program::{
    attach_btf_or_raw, attach_raw_tracepoint, attach_tracepoint, tp_btf_loaded,
};

use crate::attach::snapshot::Snapshot;
use crate::bpf::{KernelCounters, LoadPlan};
use crate::btf::KernelBtf;
use crate::k8s::Attribution;
use crate::probes::stats::{AgentStats, ProbeStats};
use anyhow::{Context as _, Result};
use aya::Ebpf;
use prometheus_client::collector::Collector;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every probe, in the order they start and are reported.
pub(crate) const PROBES: [&Probe; 6] = [
    &syscalls::PROBE,
    &tcp::PROBE,
    &sched::PROBE,
    &oom::PROBE,
    &process::PROBE,
    &block::PROBE,
];

/// A probe, described once.
pub(crate) struct Probe {
    /// Its `--probes` value and its `probe` label.
    pub name: &'static str,
    /// What it measures, one line (`--help`, docs).
    pub about: &'static str,
    /// What it needs from the kernel, one line (docs, and why it may be missing).
    pub needs: &'static str,
    /// It reads tracefs (classic tracepoint formats), which a non-root user
    /// can only do with CAP_DAC_READ_SEARCH.
    pub needs_tracefs: bool,
    /// Streams events to userspace, so `events_received` counts them. A
    /// probe that aggregates in the kernel has its count in its histogram.
    pub streams: bool,
    /// Every stage that can lose its events: (`stage` label, where counted).
    pub losses: &'static [(&'static str, Loss)],
    /// Before the eBPF object loads: read kernel offsets, set the globals and
    /// map sizes it needs. An error leaves the probe unattached.
    pub prepare: fn(&Prepare<'_>, &mut LoadPlan) -> Result<()>,
    /// After loading: attach its programs, spawn its drain tasks.
    pub start: fn(&mut Ebpf, &mut Start<'_>) -> Result<Box<dyn Running>>,
    /// The most series it can export (docs/metrics.md, "How many series").
    pub series: fn(&series::SeriesInputs) -> series::Series,
    /// Its section of the attach view, drawn from the snapshot (None: it
    /// shows nothing there).
    pub render: Option<fn(&mut String, &Snapshot)>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Where a probe's lost events are counted.
pub(crate) enum Loss {
    /// In the kernel, at this `agent_common::counters` index.
    Kernel(u32),
    /// Ring-buffer items that did not decode ([`ProbeStats::decode_errors`]).
    Decode,
    /// In userspace, at this [`ProbeStats::losses`] index.
    Userspace(usize),
}

impl Loss {
    /// Events lost at this stage so far (`kernel` is None when nothing was
    /// loaded, so nothing could be lost there).
    pub(crate) fn count(&self, kernel: Option<&KernelCounters>, stats: &ProbeStats) -> u64 {
        match self {
            Loss::Kernel(index) => kernel.map_or(0, |k| k.get(*index)),
            Loss::Decode => stats.decode_errors.load(Relaxed),
            Loss::Userspace(i) => stats.losses[*i].load(Relaxed),
        }
    }
}

/// What `prepare` can look at.
pub(crate) struct Prepare<'a> {
    pub btf: Result<&'a KernelBtf, &'a anyhow::Error>,
    pub opts: &'a StartOptions,
}

/// What `start` gets: the run's options, where to count, when to stop.
pub(crate) struct Start<'a> {
    pub opts: &'a StartOptions,
    pub stats: Arc<ProbeStats>,
    pub kernel: Arc<KernelCounters>,
    pub stop: watch::Receiver<bool>,
    /// Drain tasks: awaited at shutdown so the last records are drained.
    pub tasks: &'a mut Vec<JoinHandle<()>>,
}

/// A started probe.
pub(crate) trait Running: Send + Sync {
    /// Its metric families, for the agent's registry.
    fn collector(&self) -> Box<dyn Collector>;
    /// Takes the settings a reload may change.
    fn reload(&self, _budgets: &Budgets) {}
    /// What fills its part of the attach view each interval.
    fn attach_view(&self) -> Option<Box<dyn AttachView>> {
        None
    }
}

/// The probes' settings that SIGHUP may change (their label budgets).
pub(crate) struct Budgets {
    pub unknown_syscall: usize,
    pub container_syscall: usize,
    pub tcp_destination: usize,
}

impl Budgets {
    pub(crate) fn of(args: &crate::cli::RunArgs) -> Budgets {
        Budgets {
            unknown_syscall: args.unknown_syscall_budget,
            container_syscall: args.container_syscall_budget,
            tcp_destination: args.tcp_destination_budget,
        }
    }
}

/// A probe's part of `agent attach` (docs/attach.md): fills its fields of
/// each interval's snapshot (it keeps what per-interval rates need).
pub(crate) trait AttachView: Send {
    /// `secs`: length of the interval just ended.
    fn fill(&mut self, snap: &mut Snapshot, secs: f64);
}

/// `--probes`: the table's names (with what each measures, for `--help`),
/// or `none`.
pub(crate) fn names_parser() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    let probes = PROBES.map(|p| PossibleValue::new(p.name).help(p.about));
    let none = PossibleValue::new("none").help("no eBPF probe: only the /proc collectors");
    clap::builder::PossibleValuesParser::new(probes.into_iter().chain([none]))
}

/// The chosen probes (`--probes` names) that read tracefs.
pub(crate) fn reading_tracefs(chosen: &[String]) -> Vec<&'static str> {
    PROBES
        .iter()
        .filter(|p| p.needs_tracefs && chosen.iter().any(|c| c == p.name))
        .map(|p| p.name)
        .collect()
}

/// The default of `--probes`: every probe.
pub(crate) fn all_names() -> &'static str {
    static ALL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| PROBES.map(|p| p.name).join(","));
    ALL.as_str()
}

/// What [`start_all`] needs: the probe-related flags of `run` and `attach`.
#[derive(Debug, Clone)]
pub(crate) struct StartOptions {
    /// Process to trace (tgid); 0 traces every process.
    pub target_tgid: u32,
    /// Also trace processes the target forks afterwards, and theirs (needs
    /// kernel BTF).
    pub follow_children: bool,
    /// `--exec-events`: the process probe's audit stream.
    pub exec_events: Option<process::audit::Settings>,
    /// A probe that cannot attach is an error instead of a warning.
    pub strict: bool,
    pub ring_bytes: u32,
    pub hdr_precision: u8,
    pub flush_interval: Duration,
    pub unknown_syscall_budget: usize,
    /// Distinct syscalls each container's series may name (`other` beyond).
    pub container_syscall_budget: usize,
    pub tcp_destination_budget: usize,
    /// Which probes to start (`--probes` names).
    pub probes: Vec<String>,
    /// Container attribution: records carry cgroup ids, resolved by this.
    pub attribution: Option<Arc<Attribution>>,
}

impl StartOptions {
    fn wants(&self, probe: &Probe) -> bool {
        self.probes.iter().any(|p| p == probe.name)
    }
}

/// The running probes: keep `ebpf` alive while tracing (dropping it detaches
/// every program); flip the shutdown channel passed to [`start_all`], then
/// await `tasks` to get the last records drained.
pub(crate) struct Started {
    /// None when no probe was chosen (`--probes none`): nothing is loaded,
    /// so no BPF privilege is needed.
    pub ebpf: Option<Ebpf>,
    pub kernel: Option<Arc<KernelCounters>>,
    pub stats: Arc<AgentStats>,
    /// The probes that attached, in table order.
    pub running: Vec<(&'static Probe, Box<dyn Running>)>,
    /// Each loaded program's probe, for the kernel's run-time statistics.
    pub programs: Vec<(&'static str, String)>,
    pub tasks: Vec<JoinHandle<()>>,
    /// Probes that did not attach, with the reason (label as in /metrics).
    pub missing: Vec<(&'static str, String)>,
}

impl Started {
    /// Nothing loaded into the kernel (no probe chosen, or none could be
    /// prepared): no BPF privilege is needed.
    fn unloaded(stats: Arc<AgentStats>, missing: Vec<(&'static str, String)>) -> Started {
        stats.ready.store(true, Relaxed);
        Started {
            ebpf: None,
            kernel: None,
            stats,
            running: Vec::new(),
            programs: Vec::new(),
            tasks: Vec::new(),
            missing,
        }
    }

    /// The probes' collectors, for the agent's registry.
    pub fn collectors(&self) -> impl Iterator<Item = Box<dyn Collector>> + '_ {
        self.running.iter().map(|(_, r)| r.collector())
    }
}

/// Loads the eBPF object, attaches every chosen probe (one that cannot attach
/// is logged and listed in `missing`, unless `strict`), and spawns the drain
/// tasks, which run until `stop` flips. Shared by node and attach mode.
pub(crate) fn start_all(opts: &StartOptions, stop: watch::Receiver<bool>) -> Result<Started> {
    let mut stats = AgentStats::new(&PROBES);
    if opts.target_tgid != 0 {
        stats.target_running = Some(AtomicBool::new(true));
    }
    let stats = Arc::new(stats);
    let mut plan = LoadPlan::default();
    plan.global("TARGET_TGID", &opts.target_tgid);
    plan.global("FOLLOW_CHILDREN", &u32::from(opts.follow_children));
    plan.global("CGROUP_IDS", &u32::from(opts.attribution.is_some()));
    plan.global("BUCKET_NS", crate::histogram::layout().padded());
    let wanted: Vec<&'static Probe> = PROBES.into_iter().filter(|p| opts.wants(p)).collect();
    if wanted.is_empty() && !opts.follow_children {
        return Ok(Started::unloaded(stats, Vec::new()));
    }
    // Probes read kernel struct offsets from BTF: parse it once.
    let btf = KernelBtf::read();
    if opts.follow_children {
        let task = crate::btf::task_offsets(btf.as_ref()).map_err(|e| {
            e.context("following children needs task_struct offsets from kernel BTF")
        })?;
        plan.global("TASK_OFFSETS", &task);
        if let Ok(btf) = btf.as_ref() {
            plan.global("EXIT_GROUP_DEAD", &process::exit_group_dead(btf));
        }
    }
    let prep = Prepare {
        btf: btf.as_ref(),
        opts,
    };
    let mut missing = Vec::new();
    let mut chosen = Vec::new();
    for probe in wanted {
        stats.of(probe.name).enabled.store(true, Relaxed);
        match (probe.prepare)(&prep, &mut plan) {
            Ok(()) => chosen.push(probe),
            Err(e) => not_attached(probe, e, opts.strict, &mut missing)?,
        }
    }
    drop(btf);
    if chosen.is_empty() && !opts.follow_children {
        return Ok(Started::unloaded(stats, missing));
    }
    let mut ebpf = crate::bpf::load(&plan)?;
    let kernel = Arc::new(KernelCounters::take(&mut ebpf)?);
    // Descendants must be followed before the target can fork: attach first.
    if opts.follow_children {
        attach_raw_tracepoint(&mut ebpf, "sched_process_fork", "sched_process_fork")
            .context("following children")?;
    }
    let mut running = Vec::new();
    let mut programs = Vec::new();
    let mut tasks = Vec::new();
    for probe in chosen {
        let loaded_before = loaded(&ebpf);
        let mut start = Start {
            opts,
            stats: stats.of(probe.name).clone(),
            kernel: kernel.clone(),
            stop: stop.clone(),
            tasks: &mut tasks,
        };
        match (probe.start)(&mut ebpf, &mut start) {
            Ok(r) => {
                stats.of(probe.name).attached.store(true, Relaxed);
                running.push((probe, r));
                programs.extend(
                    loaded(&ebpf)
                        .into_iter()
                        .filter(|p| !loaded_before.contains(p))
                        .map(|p| (probe.name, p)),
                );
            }
            Err(e) => not_attached(probe, e, opts.strict, &mut missing)?,
        }
    }
    // After the probes: programs on a tracepoint run in attach order, so
    // they see a followed process's exit before it leaves the map.
    if opts.follow_children {
        attach_raw_tracepoint(&mut ebpf, "follow_exit", "sched_process_exit")
            .context("following children (forgetting those that exit)")?;
    }
    stats.ready.store(true, Relaxed);
    // Loading parsed megabytes of kernel BTF that are free now; glibc keeps
    // such a high-water mark unless asked to give it back.
    // SAFETY: malloc_trim only releases memory that is already free.
    unsafe { libc::malloc_trim(0) };
    Ok(Started {
        ebpf: Some(ebpf),
        kernel: Some(kernel),
        stats,
        running,
        programs,
        tasks,
        missing,
    })
}

/// Logs (or, `strict`, returns) why a probe is not attached.
fn not_attached(
    probe: &Probe,
    e: anyhow::Error,
    strict: bool,
    missing: &mut Vec<(&'static str, String)>,
) -> Result<()> {
    if strict {
        return Err(e.context(format!("{} probe (--strict)", probe.name)));
    }
    tracing::warn!(
        "{} probe not attached, continuing without it (it needs {}): {e:#}",
        probe.name,
        probe.needs
    );
    missing.push((probe.name, format!("{e:#}")));
    Ok(())
}

/// Names of the programs loaded into the kernel so far.
fn loaded(ebpf: &Ebpf) -> Vec<String> {
    ebpf.programs()
        .filter(|(_, p)| p.fd().is_ok())
        .map(|(name, _)| name.to_string())
        .collect()
}

/// A lock that a panicked holder did not poison for good: aggregates stay
/// readable (their counters are plain numbers).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::PROBES;

    fn read(doc: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        std::fs::read_to_string(format!("{path}/{doc}")).unwrap()
    }

    /// README's probe table is the table's rows, in its order.
    #[test]
    fn readme_lists_every_probe_as_the_table_describes_it() {
        let readme = read("README.md");
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != "## Probes")
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with("| `"))
            .collect();
        let want: Vec<String> = PROBES
            .iter()
            .map(|p| format!("| `{}` | {} | {} |", p.name, p.about, p.needs))
            .collect();
        assert_eq!(rows.len(), want.len(), "README probe rows: {rows:#?}");
        for (row, want) in rows.iter().zip(&want) {
            assert_eq!(row, want);
        }
    }

    /// docs/metrics.md has a section per probe and explains every drop stage.
    #[test]
    fn metrics_doc_covers_every_probe_and_drop_stage() {
        let doc = read("docs/metrics.md");
        for probe in PROBES {
            let heading = format!("(probe `{}`)", probe.name);
            assert!(doc.contains(&heading), "docs/metrics.md lacks {heading}");
            for (stage, _) in probe.losses {
                let item = format!("- **`{stage}`**");
                assert!(doc.contains(&item), "docs/metrics.md lacks stage {stage}");
            }
        }
    }
}
