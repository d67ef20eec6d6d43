//! Per-process metrics, named as the Prometheus client libraries name them:
//! the agent's own, unlabeled (exactly what every client library's process
//! collector emits, so standard process panels and alerts work on the agent
//! unchanged), and, in --pid mode, the traced process's with a `pid` label
//! (a second unlabeled series would collide; `{pid=""}` selects the agent).
//!
//! The agent reads itself at /proc/self whatever --procfs says: a host procfs
//! mounted into a container does not know the container's `self`. The
//! traced process is read under --procfs, where its PID was validated.

use super::family::{Family, Labels};
use super::{Registration, Source, number, read, user_hz};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `--collectors process`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "process",
    default: true,
    build: |a, target_pid| Box::new(Process::new(&a.procfs, target_pid)),
    options: super::no_options,
};

/// Fields of /proc/<pid>/stat the metrics need, in the kernel's units.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// R, S, D, Z, ... (field 3).
    pub state: char,
    /// Per-process flags (PF_*, field 9).
    pub flags: u64,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: u64,
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses /proc/<pid>/stat. The command name may hold spaces and
/// parentheses, so fields are counted after the last ')'.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .context("no `)` after the command name")?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    let field = |n: usize, what: &str| number(f.get(n - 3).copied(), what);
    Ok(Stat {
        state: f
            .first()
            .and_then(|s| s.chars().next())
            .context("state: field missing")?,
        flags: field(9, "flags")?,
        utime_ticks: field(14, "utime")?,
        stime_ticks: field(15, "stime")?,
        threads: field(20, "num_threads")?,
        start_ticks: field(22, "starttime")?,
        vsize_bytes: field(23, "vsize")?,
        rss_pages: field(24, "rss")?,
    })
}

/// The machine's boot time, seconds since the epoch (btime of <procfs>/stat).
pub(crate) fn boot_time(procfs: &Path) -> Result<u64> {
    super::cpu::parse(&read(&procfs.join("stat"))?)?
        .btime
        .context("no btime in /proc/stat")
}

/// A soft limit from /proc/<pid>/limits; `unlimited` is RLIM_INFINITY
/// (2^64-1), which is what the client libraries export too.
pub fn soft_limit(limits: &str, name: &str) -> Option<f64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
    match rest.split_ascii_whitespace().next()? {
        "unlimited" => Some(u64::MAX as f64),
        v => v.parse::<u64>().ok().map(|v| v as f64),
    }
}

/// A `key: value` number from /proc/<pid>/io or /proc/<pid>/status.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// One process, in exported units.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub virtual_max_bytes: Option<f64>,
    pub threads: f64,
    pub open_fds: f64,
    pub max_fds: Option<f64>,
    pub start_time_seconds: f64,
    /// read_bytes and write_bytes: storage I/O the process caused. rchar and
    /// wchar would also count page-cache hits, pipes and sockets. None
    /// without CONFIG_TASK_IO_ACCOUNTING.
    pub io_bytes: Option<(f64, f64)>,
    /// Voluntary and involuntary switches summed over live threads: the
    /// kernel keeps them per thread, and an exited thread's are gone (the
    /// counter guard keeps the sum from going back when that happens).
    pub ctx_switches: (f64, f64),
}

/// Where one process is read, and how its series are labelled.
#[derive(Debug, Clone)]
struct Target {
    dir: PathBuf,
    /// procfs root, for btime in <procfs>/stat.
    procfs: PathBuf,
    labels: Labels,
}

/// Units of the machine, fixed for the process's life.
#[derive(Debug, Clone, Copy)]
struct Units {
    user_hz: f64,
    page_size: f64,
}

impl Target {
    fn snapshot(&self, units: Units) -> Result<Snapshot> {
        let stat = parse_stat(&read(&self.dir.join("stat"))?)?;
        let btime = boot_time(&self.procfs)?;
        let limits = read(&self.dir.join("limits"))?;
        let io = read(&self.dir.join("io")).ok();
        Ok(Snapshot {
            cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / units.user_hz,
            resident_bytes: stat.rss_pages as f64 * units.page_size,
            virtual_bytes: stat.vsize_bytes as f64,
            virtual_max_bytes: soft_limit(&limits, "Max address space"),
            threads: stat.threads as f64,
            open_fds: count_entries(&self.dir.join("fd"))? as f64,
            max_fds: soft_limit(&limits, "Max open files"),
            start_time_seconds: btime as f64 + stat.start_ticks as f64 / units.user_hz,
            io_bytes: io.and_then(|io| {
                Some((
                    keyed(&io, "read_bytes")? as f64,
                    keyed(&io, "write_bytes")? as f64,
                ))
            }),
            ctx_switches: self.ctx_switches()?,
        })
    }

    fn ctx_switches(&self) -> Result<(f64, f64)> {
        let tasks = self.dir.join("task");
        let entries = std::fs::read_dir(&tasks)
            .with_context(|| format!("cannot list {}", tasks.display()))?;
        let mut sum = (0.0, 0.0);
        // A thread may exit while we look; its counts are simply missing.
        for status in entries
            .flatten()
            .filter_map(|e| read(&e.path().join("status")).ok())
        {
            sum.0 += keyed(&status, "voluntary_ctxt_switches").unwrap_or(0) as f64;
            sum.1 += keyed(&status, "nonvoluntary_ctxt_switches").unwrap_or(0) as f64;
        }
        Ok(sum)
    }
}

fn count_entries(dir: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .count())
}

pub fn families(processes: &[(Labels, Snapshot)]) -> Vec<Family> {
    let gauge = |name, help, value: fn(&Snapshot) -> Option<f64>| {
        family(Family::gauge(name, help), processes, value)
    };
    let counter = |name, help, value: fn(&Snapshot) -> Option<f64>| {
        family(Family::counter(name, help), processes, value)
    };
    let mut out = vec![
        counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            |s| Some(s.cpu_seconds),
        ),
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            |s| Some(s.resident_bytes),
        ),
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            |s| Some(s.virtual_bytes),
        ),
        gauge(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            |s| s.virtual_max_bytes,
        ),
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            |s| Some(s.start_time_seconds),
        ),
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            |s| Some(s.open_fds),
        ),
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            |s| s.max_fds,
        ),
        gauge(
            "process_threads",
            "Number of OS threads in the process.",
            |s| Some(s.threads),
        ),
        counter(
            "process_read_bytes_total",
            "Bytes the process caused to be read from storage (read_bytes in /proc/PID/io).",
            |s| s.io_bytes.map(|io| io.0),
        ),
        counter(
            "process_write_bytes_total",
            "Bytes the process caused to be written to storage (write_bytes in /proc/PID/io).",
            |s| s.io_bytes.map(|io| io.1),
        ),
    ];
    let mut ctx = Family::counter(
        "process_context_switches_total",
        "Context switches of the process's live threads: voluntary (it blocked) or nonvoluntary (it was preempted).",
    );
    for (labels, s) in processes {
        for (kind, n) in [
            ("voluntary", s.ctx_switches.0),
            ("nonvoluntary", s.ctx_switches.1),
        ] {
            let mut l = labels.clone();
            l.push(("ctxswitch".into(), kind.to_string()));
            ctx.push_labels(l, n);
        }
    }
    out.push(ctx);
    out
}

fn family(
    mut f: Family,
    processes: &[(Labels, Snapshot)],
    value: fn(&Snapshot) -> Option<f64>,
) -> Family {
    for (labels, s) in processes {
        if let Some(v) = value(s) {
            f.push_labels(labels.clone(), v);
        }
    }
    f
}

#[derive(Debug)]
pub struct Process {
    own: Target,
    traced: Option<Target>,
    units: Units,
}

impl Process {
    pub fn new(procfs: &Path, target_pid: Option<u32>) -> Process {
        let traced = target_pid.map(|pid| Target {
            dir: procfs.join(pid.to_string()),
            procfs: procfs.to_path_buf(),
            labels: vec![("pid".into(), pid.to_string())],
        });
        Process {
            own: Target {
                dir: PathBuf::from("/proc/self"),
                procfs: PathBuf::from("/proc"),
                labels: Vec::new(),
            },
            traced,
            units: Units {
                user_hz: user_hz(),
                page_size: page_size(),
            },
        }
    }
}

fn page_size() -> f64 {
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as f64,
        _ => 4096.0,
    }
}

impl Source for Process {
    /// The agent's own series are exported even when the traced process has
    /// exited (then the collector reports failure, with the reason logged).
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mut snapshots = vec![(self.own.labels.clone(), self.own.snapshot(self.units)?)];
        let traced = self.traced.as_ref().map(|t| {
            t.snapshot(self.units)
                .map(|s| snapshots.push((t.labels.clone(), s)))
                .with_context(|| format!("traced process {}", t.dir.display()))
        });
        out.extend(families(&snapshots));
        traced.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const UNITS: Units = Units {
        user_hz: 100.0,
        page_size: 4096.0,
    };

    fn fixture(pid: u32) -> Process {
        let procfs = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/collectors/fixtures/proc"
        ));
        Process {
            units: UNITS,
            ..Process::new(procfs, Some(pid))
        }
    }

    #[test]
    fn reads_a_process_with_an_odd_name() {
        let t = fixture(4242).traced.unwrap();
        let s = t.snapshot(UNITS).unwrap();
        assert_eq!(
            s,
            Snapshot {
                cpu_seconds: 3.0,
                resident_bytes: 2560.0 * 4096.0,
                virtual_bytes: 104857600.0,
                virtual_max_bytes: Some(u64::MAX as f64),
                threads: 2.0,
                open_fds: 4.0,
                max_fds: Some(1024.0),
                start_time_seconds: 1795276008.0 + 3600.0,
                io_bytes: Some((8192.0, 4096.0)),
                ctx_switches: (130.0, 10.0),
            }
        );
    }

    #[test]
    fn own_series_unlabeled_traced_ones_with_pid() {
        let mut out = Vec::new();
        fixture(4242).collect(&mut out).unwrap();
        let threads = find(&out, "process_threads").unwrap();
        assert_eq!(threads.samples.len(), 2);
        assert!(threads.samples[0].labels.is_empty());
        assert_eq!(threads.get(&[("pid", "4242")]), Some(2.0));
        let ctx = find(&out, "process_context_switches_total").unwrap();
        assert_eq!(
            ctx.get(&[("pid", "4242"), ("ctxswitch", "nonvoluntary")]),
            Some(10.0)
        );
        assert!(ctx.get(&[("ctxswitch", "voluntary")]).is_some());
        let fds = find(&out, "process_open_fds").unwrap();
        assert!(
            fds.samples[0].value >= 3.0,
            "stdin, stdout, stderr at least"
        );
    }

    #[test]
    fn a_vanished_target_keeps_the_agents_own_series() {
        let mut out = Vec::new();
        let e = fixture(999_999).collect(&mut out).unwrap_err();
        assert!(format!("{e:#}").contains("999999"), "{e:#}");
        let cpu = find(&out, "process_cpu_seconds_total").unwrap();
        assert_eq!(cpu.samples.len(), 1);
        assert!(cpu.samples[0].labels.is_empty());
    }

    #[test]
    fn parsers() {
        assert!(parse_stat("1 (x) S 1 2").is_err());
        assert!(parse_stat("no parens").is_err());
        assert_eq!(
            soft_limit(
                "Max open files  unlimited  unlimited files",
                "Max open files"
            ),
            Some(u64::MAX as f64)
        );
        assert_eq!(soft_limit("", "Max open files"), None);
        assert_eq!(
            keyed("read_bytes: 5\nwrite_bytes: 6\n", "write_bytes"),
            Some(6)
        );
        assert_eq!(
            keyed(
                "voluntary_ctxt_switches:\t9\nnonvoluntary_ctxt_switches:\t1\n",
                "voluntary_ctxt_switches"
            ),
            Some(9)
        );
    }
}
