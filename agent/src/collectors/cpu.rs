//! /proc/stat: node_exporter's `cpu` and `stat` collectors in one, since both
//! read the same file. Tick counts are in USER_HZ and exported in seconds.

use super::family::Family;
use super::{Registration, Source, read, user_hz};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors cpu`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "cpu",
    default: true,
    build: |a, _| Box::new(Cpu::new(&a.procfs)),
    options: super::no_options,
};

/// /proc/stat's per-CPU columns that node_cpu_seconds_total exports, in order.
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// One `cpuN` line: ticks per column (user ... steal, guest, guest_nice).
/// Older kernels print fewer columns; missing ones are 0, as node_exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTicks {
    pub cpu: String,
    pub ticks: [u64; 10],
}

/// What /proc/stat says, in its own units.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stat {
    pub cpus: Vec<CpuTicks>,
    pub intr: Option<u64>,
    pub ctxt: Option<u64>,
    pub btime: Option<u64>,
    pub processes: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

pub fn parse(text: &str) -> Result<Stat> {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let value = fields.clone().next().and_then(|v| v.parse().ok());
        match key {
            "intr" => stat.intr = value,
            "ctxt" => stat.ctxt = value,
            "btime" => stat.btime = value,
            "processes" => stat.processes = value,
            "procs_running" => stat.procs_running = value,
            "procs_blocked" => stat.procs_blocked = value,
            // "cpu" alone is the sum over CPUs, which node_exporter leaves out.
            _ => {
                if let Some(id) = key.strip_prefix("cpu").filter(|id| is_cpu_id(id)) {
                    stat.cpus.push(cpu_ticks(id, fields)?);
                }
            }
        }
    }
    if stat.cpus.is_empty() {
        bail!("no per-CPU lines in /proc/stat");
    }
    Ok(stat)
}

fn is_cpu_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

fn cpu_ticks<'a>(id: &str, fields: impl Iterator<Item = &'a str>) -> Result<CpuTicks> {
    let mut ticks = [0; 10];
    for (slot, field) in ticks.iter_mut().zip(fields) {
        *slot = super::number(Some(field), format_args!("cpu{id}"))?;
    }
    Ok(CpuTicks {
        cpu: id.to_string(),
        ticks,
    })
}

/// The families node_exporter's cpu and stat collectors export.
pub fn families(stat: &Stat, user_hz: f64) -> Vec<Family> {
    let mut seconds = Family::counter(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    );
    let mut guest = Family::counter(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    );
    for c in &stat.cpus {
        for (mode, ticks) in MODES.iter().zip(c.ticks) {
            seconds.push(&[("cpu", &c.cpu), ("mode", mode)], ticks as f64 / user_hz);
        }
        guest.push(
            &[("cpu", &c.cpu), ("mode", "user")],
            c.ticks[8] as f64 / user_hz,
        );
        guest.push(
            &[("cpu", &c.cpu), ("mode", "nice")],
            c.ticks[9] as f64 / user_hz,
        );
    }
    let mut out = vec![seconds, guest];
    let mut single = |family: Family, value: Option<u64>| {
        if let Some(v) = value {
            out.push(family.with(&[], v as f64));
        }
    };
    single(
        Family::counter("node_intr_total", "Total number of interrupts serviced."),
        stat.intr,
    );
    single(
        Family::counter(
            "node_context_switches_total",
            "Total number of context switches.",
        ),
        stat.ctxt,
    );
    single(
        Family::counter("node_forks_total", "Total number of forks."),
        stat.processes,
    );
    single(
        Family::gauge("node_boot_time_seconds", "Node boot time, in unixtime."),
        stat.btime,
    );
    single(
        Family::gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
        ),
        stat.procs_running,
    );
    single(
        Family::gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
        ),
        stat.procs_blocked,
    );
    out
}

#[derive(Debug)]
pub struct Cpu {
    path: PathBuf,
    user_hz: f64,
}

impl Cpu {
    pub fn new(procfs: &Path) -> Cpu {
        Cpu {
            path: procfs.join("stat"),
            user_hz: user_hz(),
        }
    }
}

impl Source for Cpu {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let stat = parse(&read(&self.path)?)?;
        out.extend(families(&stat, self.user_hz));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const STAT: &str = include_str!("fixtures/proc/stat");

    #[test]
    fn parses_a_modern_proc_stat() {
        let s = parse(STAT).unwrap();
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[1].cpu, "1");
        assert_eq!(
            s.cpus[1].ticks,
            [47619, 14497, 10798, 98523, 407, 0, 84, 1564, 3, 1]
        );
        assert_eq!(s.intr, Some(779426));
        assert_eq!(s.ctxt, Some(712362));
        assert_eq!(s.btime, Some(1795276008));
        assert_eq!(s.processes, Some(18362));
        assert_eq!(s.procs_running, Some(5));
        assert_eq!(s.procs_blocked, Some(0));
    }

    #[test]
    fn converts_ticks_to_seconds_with_node_exporter_names() {
        let f = families(&parse(STAT).unwrap(), 100.0);
        let secs = find(&f, "node_cpu_seconds_total").unwrap();
        assert_eq!(secs.samples.len(), 16);
        assert_eq!(secs.get(&[("cpu", "0"), ("mode", "idle")]), Some(1008.47));
        assert_eq!(secs.get(&[("cpu", "1"), ("mode", "steal")]), Some(15.64));
        let guest = find(&f, "node_cpu_guest_seconds_total").unwrap();
        assert_eq!(guest.get(&[("cpu", "1"), ("mode", "nice")]), Some(0.01));
        assert_eq!(
            find(&f, "node_boot_time_seconds").unwrap().samples[0].value,
            1795276008.0
        );
        assert_eq!(
            find(&f, "node_forks_total").unwrap().samples[0].value,
            18362.0
        );
    }

    #[test]
    fn old_kernels_with_fewer_columns_read_as_zero() {
        // 2.6.0-era: no steal, guest or guest_nice; no procs_* lines.
        let s = parse("cpu  10 0 5 100\ncpu0 10 0 5 100 7\nctxt 9\nbtime 5\n").unwrap();
        assert_eq!(s.cpus[0].ticks, [10, 0, 5, 100, 7, 0, 0, 0, 0, 0]);
        let f = families(&s, 100.0);
        assert!(find(&f, "node_procs_running").is_none());
        assert!(find(&f, "node_context_switches_total").is_some());
    }

    #[test]
    fn rejects_what_is_not_proc_stat() {
        assert!(parse("").is_err());
        assert!(parse("cpu0 1 x 3\n").is_err());
        // "cpufreq"-like keys are not CPUs.
        assert!(parse("cpufreq 1 2 3\n").is_err());
    }
}
