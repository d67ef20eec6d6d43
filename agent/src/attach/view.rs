//! The terminal view: a top-like table of syscalls, the run-queue latency
//! distribution as runqlat draws it, TCP connects and the process's /proc
//! figures, in at most 80 columns.

use super::snapshot::Snapshot;
use std::fmt::Write;

/// Screen width the view fits in.
pub(crate) const WIDTH: usize = 80;
/// Width of the histogram bars.
pub(crate) const BAR: usize = 36;

/// ANSI: clear the screen and move the cursor home.
pub const CLEAR: &str = "\x1b[2J\x1b[H";

/// `1.5ms`-style durations, at most 7 characters.
pub(crate) fn duration(ns: u64) -> String {
    let ns = ns as f64;
    match ns {
        n if n < 1e3 => format!("{n:.0}ns"),
        n if n < 1e6 => format!("{:.1}us", n / 1e3),
        n if n < 1e9 => format!("{:.1}ms", n / 1e6),
        n => format!("{:.2}s", n / 1e9),
    }
}

/// Bucket bound labels: 0, 1us, 2.5us, ..., 10s.
pub(crate) fn bound(ns: u64) -> String {
    let trim = |v: f64, unit: &str| {
        let s = format!("{v:.1}");
        format!("{}{unit}", s.trim_end_matches(".0"))
    };
    match ns {
        0 => "0".into(),
        n if n < 1_000_000 => trim(n as f64 / 1e3, "us"),
        n if n < 1_000_000_000 => trim(n as f64 / 1e6, "ms"),
        n => trim(n as f64 / 1e9, "s"),
    }
}

/// A count in at most `width` characters: exact when it fits, else 12.3M-style.
pub(crate) fn compact(n: f64, width: usize) -> String {
    let exact = format!("{n:.0}");
    if exact.len() <= width {
        return exact;
    }
    let mut v = n;
    for unit in ["k", "M", "G", "T", "P", "E"] {
        v /= 1000.0;
        let s = format!("{v:.1}{unit}");
        if s.len() <= width {
            return s;
        }
    }
    "huge".into()
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1 << 20 => format!("{:.0}KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1}MiB", n as f64 / (1 << 20) as f64),
        n => format!("{:.2}GiB", n as f64 / (1 << 30) as f64),
    }
}

pub(crate) fn clip(s: &str) -> String {
    s.chars().take(WIDTH).collect()
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let title = if s.is_final {
        "summary"
    } else {
        "agent attach"
    };
    let head = format!(
        "{title}: PID {} ({})  {:.1}s since attach",
        s.pid, s.comm, s.elapsed_s
    );
    let _ = writeln!(out, "{}", clip(&head));
    let proc_line = match (&s.process, &s.exit) {
        (_, Some(exit)) => match exit.signal {
            Some(sig) => format!("process: killed by signal {sig} (exit code {})", exit.code),
            None => format!("process: exited with code {}", exit.code),
        },
        (Some(p), None) => format!(
            "process: cpu {:.1}%  rss {}  threads {}  fds {}",
            p.cpu_percent,
            bytes(p.rss_bytes),
            p.threads,
            p.open_fds.map_or("?".to_string(), |n| n.to_string())
        ),
        (None, None) => "process: exited".to_string(),
    };
    let _ = writeln!(out, "{}", clip(&proc_line));
    for p in s.probes.iter().filter(|p| !p.attached) {
        let reason = p.reason.as_deref().unwrap_or("unknown reason");
        let _ = writeln!(
            out,
            "{}",
            clip(&format!("{}: not available: {reason}", p.probe))
        );
    }
    if s.events_lost > 0 {
        let _ = writeln!(out, "lost events (ring buffer full): {}", s.events_lost);
    }
    out.push('\n');
    for render in crate::probes::PROBES.iter().filter_map(|p| p.render) {
        render(&mut out, s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::ProbeState;
    use super::*;
    use crate::probes::sched::view::{Bucket, Runqueue};
    use crate::probes::syscalls::view::SyscallRow;

    fn snapshot() -> Snapshot {
        let mut buckets: Vec<Bucket> = agent_common::buckets::DEFAULT_NS
            .iter()
            .map(|&b| Bucket {
                le_ns: Some(b),
                count: 0,
            })
            .chain([Bucket {
                le_ns: None,
                count: 0,
            }])
            .collect();
        buckets[1].count = 10;
        buckets[3].count = 5;
        Snapshot {
            is_final: false,
            pid: 42,
            comm: "demo".into(),
            interval_start_unix_ms: 0,
            interval_end_unix_ms: 1000,
            elapsed_s: 1.0,
            probes: vec![
                ProbeState {
                    probe: "syscalls",
                    attached: true,
                    reason: None,
                },
                ProbeState {
                    probe: "tcp",
                    attached: false,
                    reason: Some("no tracefs ".repeat(20)),
                },
            ],
            syscalls: vec![SyscallRow {
                name: "a_very_long_syscall_name_indeed".into(),
                id: Some(1),
                count: u64::MAX,
                errors: 3,
                errors_by_errno: Default::default(),
                interval_count: 5,
                rate_per_s: 1e12,
                p50_ns: 999,
                p99_ns: 12_345_678,
                max_ns: 99_000_000_000,
            }],
            runqueue: Some(Runqueue {
                count: 15,
                sum_ns: 30_000,
                interval_count: 15,
                buckets,
            }),
            tcp: None,
            processes: Some(crate::probes::process::view::Processes {
                execs: 2,
                forks: 3,
                exits: [("0", 1), ("SIGKILL", 1)].into_iter().collect(),
                recent: vec![crate::probes::process::view::Recent {
                    event: "exec",
                    pid: 4_194_304,
                    comm: "a-sixteen-chars".into(),
                    filename: Some(format!("/{}", "long/".repeat(30))),
                    code: None,
                }],
            }),
            block: None,
            process: None,
            exit: None,
            events_lost: 0,
        }
    }

    #[test]
    fn fits_80_columns_and_says_what_is_missing() {
        let text = render(&snapshot());
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        assert!(text.contains("tcp: not available: no tracefs"), "{text}");
        assert!(text.contains("SYSCALL"));
        assert!(text.contains("1us -> 2.5us : 10"), "{text}");
        assert!(text.contains(&format!("|{}|", "*".repeat(BAR))));
        assert!(text.contains("5us -> 10us : 5"), "{text}");
        assert!(
            !text.contains("10us -> 25us"),
            "stops at the last non-empty bucket"
        );
    }

    #[test]
    fn durations_and_bounds() {
        assert_eq!(duration(999), "999ns");
        assert_eq!(duration(1_500), "1.5us");
        assert_eq!(duration(2_500_000), "2.5ms");
        assert_eq!(bound(2_500), "2.5us");
        assert_eq!(bound(1_000_000), "1ms");
        assert_eq!(bound(10_000_000_000), "10s");
        assert_eq!(compact(1234.0, 10), "1234");
        assert_eq!(compact(12_345_678.0, 6), "12.3M");
        assert_eq!(compact(u64::MAX as f64, 10), "18446.7P");
    }
}
