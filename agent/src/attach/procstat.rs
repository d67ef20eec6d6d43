//! The traced process as /proc sees it: CPU use, memory, threads, open files.

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
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .and_then(|s| s.chars().next())
}

/// Parses a stat line (fields counted after the last ')', as comm may hold
/// anything); `fds` counts the open files. None for a zombie.
fn parse(stat: &str, page_size: u64, fds: impl FnOnce() -> Option<u64>) -> Option<Reading> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    Some(Reading {
        cpu_ticks: num(14)? + num(15)?,
        threads: num(20)?,
        rss_bytes: num(24)? * page_size,
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
