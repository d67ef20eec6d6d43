//! /proc/schedstat: per-CPU time running and waiting on the run queue, as
//! node_exporter's schedstat collector. Kernels without CONFIG_SCHEDSTATS
//! have no file: no series, and no error.

use super::family::Family;
use super::{Registration, Source, number, read};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors schedstat`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "schedstat",
    default: true,
    build: |a, _| Box::new(Schedstat::new(&a.procfs)),
    options: super::no_options,
};

/// One `cpuN` line: nanoseconds running, nanoseconds waiting, timeslices.
#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    pub cpu: String,
    pub running_ns: u64,
    pub waiting_ns: u64,
    pub timeslices: u64,
}

pub fn parse(text: &str) -> Result<Vec<Cpu>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(cpu) = fields.first().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        // cpuN, 6 legacy counters, then running, waiting, timeslices.
        if fields.len() < 10 {
            bail!("cpu{cpu}: {} fields, want 10", fields.len());
        }
        let field = |i: usize| number(Some(fields[i]), format_args!("cpu{cpu} field {i}"));
        out.push(Cpu {
            cpu: cpu.to_string(),
            running_ns: field(7)?,
            waiting_ns: field(8)?,
            timeslices: field(9)?,
        });
    }
    Ok(out)
}

pub fn families(cpus: &[Cpu]) -> Vec<Family> {
    let mut running = Family::counter(
        "node_schedstat_running_seconds_total",
        "Number of seconds CPU spent running a process.",
    );
    let mut waiting = Family::counter(
        "node_schedstat_waiting_seconds_total",
        "Number of seconds spent by processing waiting for this CPU.",
    );
    let mut slices = Family::counter(
        "node_schedstat_timeslices_total",
        "Number of timeslices executed by CPU.",
    );
    for c in cpus {
        let labels = [("cpu", c.cpu.as_str())];
        running.push(&labels, c.running_ns as f64 / 1e9);
        waiting.push(&labels, c.waiting_ns as f64 / 1e9);
        slices.push(&labels, c.timeslices as f64);
    }
    vec![running, waiting, slices]
}

#[derive(Debug)]
pub struct Schedstat {
    path: PathBuf,
}

impl Schedstat {
    pub fn new(procfs: &Path) -> Schedstat {
        Schedstat {
            path: procfs.join("schedstat"),
        }
    }
}

impl Source for Schedstat {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        out.extend(families(&parse(&read(&self.path)?)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const STAT: &str = "version 15\ntimestamp 4295000000\ncpu0 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306\ndomain0 00000003 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36\ncpu1 0 0 0 0 0 0 1500000000 500000000 7\n";

    #[test]
    fn nanoseconds_become_seconds() {
        let f = families(&parse(STAT).unwrap());
        let run = find(&f, "node_schedstat_running_seconds_total").unwrap();
        assert_eq!(run.get(&[("cpu", "0")]), Some(2045936.778163039));
        assert_eq!(run.get(&[("cpu", "1")]), Some(1.5));
        let wait = find(&f, "node_schedstat_waiting_seconds_total").unwrap();
        assert_eq!(wait.get(&[("cpu", "1")]), Some(0.5));
        let slices = find(&f, "node_schedstat_timeslices_total").unwrap();
        assert_eq!(slices.get(&[("cpu", "0")]), Some(4767485306.0));
    }

    #[test]
    fn cut_lines_are_errors_and_no_file_is_none() {
        assert!(parse("cpu0 0 0 0 0 0 0 1 2\n").is_err());
        assert!(parse("cpu0 0 0 0 0 0 0 1 2 x\n").is_err());
        assert!(parse("version 15\n").unwrap().is_empty());
        let dir = crate::collectors::tests::temp_dir("schedstat");
        let mut out = Vec::new();
        Schedstat::new(&dir).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
