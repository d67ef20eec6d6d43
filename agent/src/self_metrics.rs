//! The agent's metrics about itself: build, which probes are attached, the
//! events received and lost at every stage (from the probe table), and what
//! the probes cost in the kernel (the kernel's BPF run-time statistics).

use crate::bpf::KernelCounters;
use crate::k8s::Attribution;
use crate::probes::Started;
use crate::probes::stats::AgentStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The registry of everything the probes and the agent itself export.
/// `bpf_stats`: the kernel counts the programs' run time (see [`BpfStats`]).
pub(crate) fn registry(
    started: &Started,
    attribution: Option<Arc<Attribution>>,
    bpf_stats: Option<&BpfStats>,
) -> Registry {
    let mut r = Registry::with_prefix(crate::PREFIX);
    r.register(
        "build",
        "Agent build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    for c in started.collectors() {
        r.register_collector(c);
    }
    if let Some(a) = attribution {
        r.register_collector(Box::new(crate::k8s::Metrics(a)));
    }
    r.register_collector(Box::new(AgentCollector {
        stats: started.stats.clone(),
        kernel: started.kernel.clone(),
    }));
    r.register_collector(Box::new(crate::stage_cpu::StageCpu));
    if bpf_stats.is_some() {
        r.register_collector(Box::new(ProgramCost::new(started)));
    }
    r
}

#[derive(Debug)]
struct AgentCollector {
    stats: Arc<AgentStats>,
    kernel: Option<Arc<KernelCounters>>,
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let probes = &self.stats.probes;
        let mut m = enc.encode_descriptor(
            "probe_attached",
            "Whether the probe is attached (1) or could not attach on this kernel (0)",
            None,
            MetricType::Gauge,
        )?;
        for (probe, p) in probes.iter().filter(|(_, p)| p.enabled.load(Relaxed)) {
            m.encode_family(&[("probe", probe.name)])?
                .encode_gauge(&i64::from(p.attached.load(Relaxed)))?;
        }
        if let Some(running) = &self.stats.target_running {
            let mut m = enc.encode_descriptor(
                "target_running",
                "With --pid: 1 while the traced process runs; 0 once it exited and the probes were detached",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&i64::from(running.load(Relaxed)))?;
        }
        let mut m = enc.encode_descriptor(
            "events_received",
            "Events read from the kernel and aggregated",
            None,
            MetricType::Counter,
        )?;
        for (probe, p) in probes.iter().filter(|(probe, _)| probe.streams) {
            m.encode_family(&[("probe", probe.name)])?
                .encode_counter::<NoLabelSet, _, u64>(&p.events.load(Relaxed), None)?;
        }
        let mut m = enc.encode_descriptor(
            "events_dropped",
            "Events lost, by probe and the stage that lost them",
            None,
            MetricType::Counter,
        )?;
        for (probe, p) in probes {
            for (stage, loss) in probe.losses {
                let n = loss.count(self.kernel.as_deref(), p);
                m.encode_family(&[("probe", probe.name), ("stage", stage)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        Ok(())
    }
}

/// `--bpf-stats`: whether the probes' kernel cost is exported, and whether
/// the agent turns the kernel's statistics on to export it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsMode {
    /// Exported when the statistics are on already (the sysctl).
    Auto,
    /// Turned on while the agent runs.
    On,
    Off,
}

/// The kernel's BPF run-time statistics (run count and run time of every
/// program), on while this is held. They cost two clock reads per program
/// run, for every program on the node: docs/benchmarks.md has the measurement.
pub(crate) struct BpfStats {
    /// None when the sysctl kernel.bpf_stats_enabled already turned them on.
    _fd: Option<OwnedFd>,
}

impl BpfStats {
    /// Finds the statistics on, or turns them on (BPF_ENABLE_STATS, needs
    /// CAP_SYS_ADMIN) when `mode` says so. When they are off, logs why and
    /// the families are absent.
    pub(crate) fn enable(mode: StatsMode, procfs: &std::path::Path) -> Option<BpfStats> {
        if mode == StatsMode::Off {
            return None;
        }
        let sysctl = procfs.join("sys/kernel/bpf_stats_enabled");
        if std::fs::read_to_string(&sysctl).is_ok_and(|s| s.trim() == "1") {
            return Some(BpfStats { _fd: None });
        }
        if mode == StatsMode::Auto {
            tracing::info!(
                "the probes' kernel cost (ebpf_agent_probe_kernel_*) is not exported: the \
                 kernel's BPF statistics are off; `--bpf-stats on` turns them on while the \
                 agent runs, at a cost per program run (docs/benchmarks.md)"
            );
            return None;
        }
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(BpfStats { _fd: Some(fd) }),
            Err(e) => {
                tracing::warn!(
                    "the probes' kernel cost (ebpf_agent_probe_kernel_*) is not exported: \
                     enabling BPF run-time statistics failed ({e}); it needs CAP_SYS_ADMIN, \
                     or `sysctl kernel.bpf_stats_enabled=1` on the node"
                );
                None
            }
        }
    }
}

/// `probe_kernel_runs_total` and `probe_kernel_seconds_total` per program.
struct ProgramCost {
    /// (probe, program, a duplicate of the program's fd).
    programs: Vec<(&'static str, String, OwnedFd)>,
}

impl std::fmt::Debug for ProgramCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgramCost")
    }
}

impl ProgramCost {
    fn new(started: &Started) -> ProgramCost {
        let programs = started
            .programs
            .iter()
            .filter_map(|(probe, name)| {
                let fd = started.ebpf.as_ref()?.program(name)?.fd().ok()?;
                let fd = fd.as_fd().try_clone_to_owned().ok()?;
                Some((*probe, name.clone(), fd))
            })
            .collect();
        ProgramCost { programs }
    }
}

impl Collector for ProgramCost {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let stats: Vec<_> = self
            .programs
            .iter()
            .filter_map(|(probe, program, fd)| {
                let info = prog_info(fd).ok()?;
                Some(([("probe", *probe), ("program", program.as_str())], info))
            })
            .collect();
        let mut m = enc.encode_descriptor(
            "probe_kernel_runs",
            "Times the kernel ran the probe's program (BPF run-time statistics)",
            None,
            MetricType::Counter,
        )?;
        for (labels, info) in &stats {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&info.run_cnt, None)?;
        }
        let mut m = enc.encode_descriptor(
            "probe_kernel",
            "Time the kernel spent running the probe's program, without the cost of calling it (BPF run-time statistics)",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (labels, info) in &stats {
            let secs = info.run_time_ns as f64 / 1e9;
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, f64>(&secs, None)?;
        }
        Ok(())
    }
}

/// BPF_OBJ_GET_INFO_BY_FD on a program: its `struct bpf_prog_info`.
fn prog_info(fd: &OwnedFd) -> std::io::Result<aya_obj::generated::bpf_prog_info> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: bpf_prog_info is plain integers; all zeroes is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: attr points at a live, writable bpf_prog_info of info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            size_of::<InfoAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info)
}
