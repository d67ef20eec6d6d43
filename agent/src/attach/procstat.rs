//! The traced process as /proc sees it: CPU use, memory, threads, open files.

use crate::collectors::process::parse_stat;
use std::path::{Path, PathBuf};

/// One reading of /proc/<pid>.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub threads: u64,
    /// None when the fd directory cannot be read.
    pub open_fds: Option<u64>,
}

/// What the view and JSON show for an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcStats {
    /// CPU used over the interval, in % of one CPU (can exceed 100).
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: Option<u64>,
}

pub struct ProcStat {
    dir: PathBuf,
    last: Option<(Reading, std::time::Instant)>,
    ticks_per_sec: f64,
    page_size: u64,
}

impl ProcStat {
    pub fn new(procfs: &Path, pid: u32) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        ProcStat {
            dir: procfs.join(pid.to_string()),
            last: None,
            ticks_per_sec: if tck > 0 { tck as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
        }
    }

    /// Reads now; CPU % is over the time since the previous call. None once
    /// the process is gone (or a zombie).
    pub fn sample(&mut self) -> Option<ProcStats> {
        let stat = std::fs::read_to_string(self.dir.join("stat")).ok()?;
        let reading = parse(&stat, self.page_size, || {
            std::fs::read_dir(self.dir.join("fd"))
                .ok()
                .map(|d| d.count() as u64)
        })?;
        let now = std::time::Instant::now();
        let cpu_percent = match self.last {
            Some((prev, at)) => {
                let secs = now.duration_since(at).as_secs_f64();
                let ticks = reading.cpu_ticks.saturating_sub(prev.cpu_ticks) as f64;
                if secs > 0.0 {
                    100.0 * ticks / self.ticks_per_sec / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((reading, now));
        Some(ProcStats {
            cpu_percent,
            rss_bytes: reading.rss_bytes,
            threads: reading.threads,
            open_fds: reading.open_fds,
        })
    }
}

/// Whether the process still runs: it has a /proc entry that is not a zombie.
pub fn alive(procfs: &Path, pid: u32) -> bool {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|s| state(&s))
        .is_some_and(|c| c != 'Z' && c != 'X')
}

/// The state letter of a /proc/<pid>/stat line.
fn state(stat: &str) -> Option<char> {
    parse_stat(stat).ok().map(|s| s.state)
}

/// Parses a stat line; `fds` counts the open files. None for a zombie.
fn parse(stat: &str, page_size: u64, fds: impl FnOnce() -> Option<u64>) -> Option<Reading> {
    let s = parse_stat(stat).ok()?;
    if matches!(s.state, 'Z' | 'X') {
        return None;
    }
    Some(Reading {
        cpu_ticks: s.utime_ticks + s.stime_ticks,
        threads: s.threads,
        rss_bytes: s.rss_pages * page_size,
        open_fds: fds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 50 1000000 256 18446744073709551615";
        let r = parse(line, 4096, || Some(4)).unwrap();
        assert_eq!(
            r,
            Reading {
                cpu_ticks: 12,
                threads: 3,
                rss_bytes: 256 * 4096,
                open_fds: Some(4)
            }
        );
        assert_eq!(state(line), Some('S'));
        assert!(parse(&line.replace(") S", ") Z"), 4096, || None).is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(alive(Path::new("/proc"), me));
        let mut p = ProcStat::new(Path::new("/proc"), me);
        let s = p.sample().unwrap();
        assert!(s.rss_bytes > 0 && s.threads >= 1 && s.open_fds.unwrap() >= 3);
        assert!(!alive(Path::new("/proc"), 999_999_999));
    }
}
