//! The kernel's own count of what a tool's BPF programs cost: with
//! `kernel.bpf_stats_enabled` on, each program fd's `/proc/PID/fdinfo` has
//! `run_time_ns` and `run_cnt`. One program can show up under several fds
//! (a duplicated fd; its link's fd names the same `prog_id`, without run
//! time on 6.18), so the readings are keyed by `prog_id` and each program
//! counts once.

use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// Total run time and runs of one program so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    pub ns: u64,
    pub count: u64,
}

/// One reading of every BPF program a process holds, by `prog_id`.
#[derive(Debug, Default)]
pub struct ProgRuns(BTreeMap<u64, Runs>);

impl ProgRuns {
    /// The programs process `pid` holds open now.
    pub fn read(pid: u32) -> Result<ProgRuns> {
        let dir = format!("/proc/{pid}/fdinfo");
        let mut texts = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // An fd closed meanwhile is not one of the tool's programs.
            if let Ok(text) = std::fs::read_to_string(entry?.path()) {
                texts.push(text);
            }
        }
        Ok(ProgRuns::parse(texts.iter().map(String::as_str)))
    }

    /// From fdinfo texts; those without the three fields (maps, links,
    /// files) are skipped.
    fn parse<'a>(fdinfos: impl Iterator<Item = &'a str>) -> ProgRuns {
        ProgRuns(
            fdinfos
                .filter_map(|info| {
                    let field = |name: &str| {
                        info.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    };
                    let runs = Runs {
                        ns: field("run_time_ns:")?,
                        count: field("run_cnt:")?,
                    };
                    Some((field("prog_id:")?, runs))
                })
                .collect(),
        )
    }

    /// Each program's runs since `before` (a program loaded meanwhile counts
    /// from zero).
    fn since<'a>(&'a self, before: &'a ProgRuns) -> impl Iterator<Item = Runs> + 'a {
        self.0.iter().map(|(id, now)| {
            let then = before.0.get(id).copied().unwrap_or_default();
            Runs {
                ns: now.ns.saturating_sub(then.ns),
                count: now.count.saturating_sub(then.count),
            }
        })
    }

    /// Run time of all the programs since `before`.
    pub fn total_ns_since(&self, before: &ProgRuns) -> u64 {
        self.since(before).map(|r| r.ns).sum()
    }

    /// Runs of all the programs since `before`.
    pub fn total_runs_since(&self, before: &ProgRuns) -> u64 {
        self.since(before).map(|r| r.count).sum()
    }

    /// Each program's mean ns per run since `before`, summed: the cost of
    /// one pass through a workload that fires each hook once.
    pub fn per_run_sum_since(&self, before: &ProgRuns) -> f64 {
        self.since(before)
            .filter(|r| r.count > 0)
            .map(|r| r.ns as f64 / r.count as f64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = "pos:\t0\nflags:\t02000002\nprog_type:\t17\nprog_id:\t7\nrun_time_ns:\t1000\nrun_cnt:\t10\n";
    const LINK: &str =
        "link_type:\traw_tracepoint\nlink_id:\t3\nprog_id:\t7\ntp_name:\tblock_rq_issue\n";
    const MAP: &str = "map_type:\t1\nmap_id:\t4\n";

    #[test]
    fn a_program_counts_once_whatever_its_fds() {
        let before = ProgRuns::default();
        let after = ProgRuns::parse([PROG, PROG, LINK, MAP].into_iter());
        assert_eq!(after.total_ns_since(&before), 1000);
        assert_eq!(after.per_run_sum_since(&before), 100.0);
    }

    #[test]
    fn differences_between_readings() {
        let other = "prog_id:\t8\nrun_time_ns:\t50\nrun_cnt:\t1\n";
        let before = ProgRuns::parse([PROG].into_iter());
        let after = ProgRuns::parse(
            [
                "prog_id:\t7\nrun_time_ns:\t3000\nrun_cnt:\t20\n",
                other,
                "prog_id:\t9\nrun_time_ns:\t0\nrun_cnt:\t0\n",
            ]
            .into_iter(),
        );
        assert_eq!(after.total_ns_since(&before), 2050);
        assert_eq!(after.total_runs_since(&before), 11);
        // 2000 ns over 10 runs, plus 50 over 1; the idle program adds nothing.
        assert_eq!(after.per_run_sum_since(&before), 250.0);
    }
}
