//! `--exec-events`: one NDJSON record per exec, rate limited; records past
//! the rate, and writes that fail, are counted as losses.

use agent_common::process::ExecEvent;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Where and how fast (`--exec-events PATH|-`, `--exec-events-rate N/s`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `-` is stdout.
    pub path: std::path::PathBuf,
    pub per_second: u32,
}

/// `--exec-events-rate`: `N` or `N/s`, at least 1.
pub(crate) fn parse_rate(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a rate: give records per second, such as 1000 or 1000/s (at least 1)"
        )),
    }
}

/// A token bucket: up to one second's worth at once, refilled continuously.
#[derive(Debug)]
struct Limiter {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Limiter {
    fn new(per_second: u32) -> Self {
        Limiter {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            at: Instant::now(),
        }
    }

    fn admit(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + secs * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(super) struct ExecAudit {
    out: Box<dyn Write + Send>,
    limiter: Limiter,
}

/// How the record went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    Yes,
    RateLimited,
    Failed,
}

impl ExecAudit {
    pub fn open(s: &Settings) -> anyhow::Result<ExecAudit> {
        let out: Box<dyn Write + Send> = if s.path == Path::new("-") {
            Box::new(std::io::LineWriter::new(std::io::stdout()))
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&s.path)
                .map_err(|e| {
                    anyhow::anyhow!("--exec-events: cannot open {}: {e}", s.path.display())
                })?;
            Box::new(std::io::BufWriter::new(file))
        };
        Ok(ExecAudit {
            out,
            limiter: Limiter::new(s.per_second),
        })
    }

    /// Writes one record (buffered: call `flush` after a batch).
    /// `realtime_offset_ns`: CLOCK_REALTIME minus CLOCK_MONOTONIC.
    pub fn write(
        &mut self,
        ev: &ExecEvent,
        realtime_offset_ns: i128,
        labels: Option<&crate::k8s::Labels>,
    ) -> Written {
        if !self.limiter.admit(Instant::now()) {
            return Written::RateLimited;
        }
        let line = record(ev, realtime_offset_ns, labels);
        match writeln!(self.out, "{line}") {
            Ok(()) => Written::Yes,
            Err(_) => Written::Failed,
        }
    }

    pub fn flush(&mut self) -> bool {
        self.out.flush().is_ok()
    }
}

/// A NUL-terminated kernel string.
pub(super) fn text(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

/// RFC 3339 UTC with nanoseconds.
fn rfc3339(unix_ns: i128) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// The JSON record of an exec.
pub(super) fn record(
    ev: &ExecEvent,
    realtime_offset_ns: i128,
    labels: Option<&crate::k8s::Labels>,
) -> Value {
    let h = &ev.head;
    let mut m = Map::new();
    m.insert(
        "time".into(),
        rfc3339(i128::from(h.ns) + realtime_offset_ns).into(),
    );
    m.insert("pid".into(), h.tgid.into());
    m.insert("ppid".into(), h.ppid.into());
    m.insert("uid".into(), h.uid.into());
    m.insert("comm".into(), text(&h.comm).into());
    m.insert("filename".into(), text(&ev.filename).into());
    for (name, value) in labels.into_iter().flatten() {
        m.insert((*name).to_string(), value.to_string().into());
    }
    Value::Object(m)
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC (what bpf_ktime_get_ns reads), in ns.
pub(super) fn realtime_offset_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a timespec to fill.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::process::{FILENAME_LEN, KIND_EXEC, ProcessEvent};

    #[test]
    fn rates_parse_with_or_without_per_second() {
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("5/s"), Ok(5));
        assert!(parse_rate("0").unwrap_err().contains("at least 1"));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5/m").is_err());
    }

    #[test]
    fn limiter_admits_a_second_of_burst_then_refills() {
        let mut l = Limiter::new(3);
        let t0 = l.at;
        assert!((0..3).all(|_| l.admit(t0)));
        assert!(!l.admit(t0));
        assert!(l.admit(t0 + std::time::Duration::from_millis(400)));
        assert!(!l.admit(t0 + std::time::Duration::from_millis(400)));
    }

    #[test]
    fn records_are_json_with_nanosecond_times() {
        let mut filename = [0u8; FILENAME_LEN];
        filename[..9].copy_from_slice(b"/bin/true");
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"true");
        let ev = ExecEvent {
            head: ProcessEvent {
                kind: KIND_EXEC,
                tgid: 42,
                ppid: 1,
                uid: 1000,
                exit_code: 0,
                _pad: 0,
                ns: 5,
                cgroup: 0,
                comm,
            },
            filename,
        };
        let labels: crate::k8s::Labels = vec![("pod", "web-1".to_string().into())];
        let r = record(&ev, 1_795_280_050_000_000_000, Some(&labels));
        assert_eq!(r["time"], "2026-11-21T16:54:10.000000005Z");
        assert_eq!(r["pid"], 42);
        assert_eq!(r["ppid"], 1);
        assert_eq!(r["uid"], 1000);
        assert_eq!(r["comm"], "true");
        assert_eq!(r["filename"], "/bin/true");
        assert_eq!(r["pod"], "web-1");
    }
}
