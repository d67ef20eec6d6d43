//! /proc/pressure/{cpu,io,memory} (PSI): cumulative stall time, as
//! node_exporter 1.5's pressure collector. Kernels before 4.20, or built
//! without CONFIG_PSI, or booted with psi=0, have no (readable) files: that
//! is reported as no series and success, since there is nothing to fix.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `--collectors pressure`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "pressure",
    default: true,
    build: |a, _| Box::new(Pressure::new(&a.procfs)),
    options: super::no_options,
};

/// (file, line, family, help). The "full" line of cpu (5.13+) is not
/// exported, as node_exporter 1.5 does not.
const SERIES: [(&str, &str, &str, &str); 5] = [
    (
        "cpu",
        "some",
        "node_pressure_cpu_waiting_seconds_total",
        "Total time in seconds that processes have waited for CPU time",
    ),
    (
        "io",
        "some",
        "node_pressure_io_waiting_seconds_total",
        "Total time in seconds that processes have waited due to IO congestion",
    ),
    (
        "io",
        "full",
        "node_pressure_io_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IO congestion",
    ),
    (
        "memory",
        "some",
        "node_pressure_memory_waiting_seconds_total",
        "Total time in seconds that processes have waited for memory",
    ),
    (
        "memory",
        "full",
        "node_pressure_memory_stalled_seconds_total",
        "Total time in seconds no process could make progress due to memory congestion",
    ),
];

/// The `total=` microseconds of a "some" or "full" line.
pub fn total_us(text: &str, kind: &str) -> Result<Option<u64>> {
    let Some(line) = text.lines().find(|l| l.split(' ').next() == Some(kind)) else {
        return Ok(None);
    };
    let total = line
        .split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("total="))
        .with_context(|| format!("no total= in `{line}`"))?;
    let us = total
        .parse()
        .with_context(|| format!("`{total}` is not a number of microseconds"))?;
    Ok(Some(us))
}

#[derive(Debug)]
pub struct Pressure {
    dir: PathBuf,
}

impl Pressure {
    pub fn new(procfs: &Path) -> Pressure {
        Pressure {
            dir: procfs.join("pressure"),
        }
    }

    /// A resource's file, or None when this kernel has no PSI for it.
    fn file(&self, resource: &str) -> Result<Option<String>> {
        let path = self.dir.join(resource);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if psi_unavailable(&e) => {
                tracing::debug!(
                    "no PSI ({}: {e}): needs Linux >= 4.20 with CONFIG_PSI and not psi=0",
                    path.display()
                );
                Ok(None)
            }
            Err(_) => read(&path).map(Some),
        }
    }
}

/// ENOENT: no PSI in this kernel; EOPNOTSUPP: built in but disabled (psi=0).
fn psi_unavailable(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

impl Source for Pressure {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        for resource in ["cpu", "io", "memory"] {
            let Some(text) = self.file(resource)? else {
                continue;
            };
            for &(_, kind, name, help) in SERIES.iter().filter(|s| s.0 == resource) {
                if let Some(us) =
                    total_us(&text, kind).with_context(|| format!("pressure/{resource}"))?
                {
                    out.push(Family::counter(name, help).with(&[], us as f64 / 1e6));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::tests::temp_dir;

    fn collect(procfs: &Path) -> Result<Vec<Family>> {
        let mut out = Vec::new();
        Pressure::new(procfs).collect(&mut out)?;
        Ok(out)
    }

    #[test]
    fn totals_in_seconds() {
        let procfs = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/collectors/fixtures/proc"
        ));
        let f = collect(procfs).unwrap();
        let names: Vec<_> = f.iter().map(|f| f.name.as_ref()).collect();
        assert_eq!(names, SERIES.map(|s| s.2));
        assert_eq!(f[0].samples[0].value, 57.768987);
        assert_eq!(f[4].samples[0].value, 0.00025);
    }

    #[test]
    fn missing_psi_files_are_not_an_error() {
        let procfs = temp_dir("no-psi");
        assert!(collect(&procfs).unwrap().is_empty());
        // Only some resources (e.g. a kernel that lacks one file).
        std::fs::create_dir_all(procfs.join("pressure")).unwrap();
        std::fs::write(
            procfs.join("pressure/io"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=2000000\n",
        )
        .unwrap();
        let f = collect(&procfs).unwrap();
        assert_eq!(f.len(), 1, "no full line, no stalled series: {f:?}");
        assert_eq!(f[0].name, "node_pressure_io_waiting_seconds_total");
        assert_eq!(f[0].samples[0].value, 2.0);
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(total_us("some avg10=0.00\n", "some").is_err());
        assert!(total_us("some total=x\n", "some").is_err());
        assert_eq!(total_us("full total=1\n", "some").unwrap(), None);
    }
}
