//! <sysfs>/devices/system/cpu/cpuN/cpufreq: CPU frequencies in hertz, as
//! node_exporter 1.5's cpufreq collector (the files are in kHz). VMs
//! usually have no cpufreq: no series, and no error. `cpuinfo_cur_freq` is
//! root-only on most kernels: without it, only the other families.

use super::family::Family;
use super::{Registration, Source};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `--collectors cpufreq`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "cpufreq",
    default: true,
    build: |a, _| Box::new(Cpufreq::new(&a.sysfs)),
    options: super::no_options,
};

/// (file, family, help), kHz in each file.
const FILES: [(&str, &str, &str); 6] = [
    (
        "cpuinfo_cur_freq",
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_max_freq",
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_min_freq",
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "scaling_cur_freq",
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_max_freq",
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_min_freq",
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
];

#[derive(Debug)]
pub struct Cpufreq {
    dir: PathBuf,
}

impl Cpufreq {
    pub fn new(sysfs: &Path) -> Cpufreq {
        Cpufreq {
            dir: sysfs.join("devices/system/cpu"),
        }
    }
}

/// A file's kHz, or None when the file is absent or not readable to us.
fn khz(path: &Path) -> Result<Option<u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let t = text.trim();
    t.parse()
        .map(Some)
        .with_context(|| format!("{}: `{t}` is not a number of kHz", path.display()))
}

impl Source for Cpufreq {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut cpus: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
                Some((n, e.path().join("cpufreq")))
            })
            .filter(|(_, p)| p.is_dir())
            .collect();
        cpus.sort();
        let mut families = FILES.map(|(_, name, help)| Family::gauge(name, help));
        for (n, dir) in &cpus {
            let cpu = n.to_string();
            for ((file, _, _), family) in FILES.iter().zip(&mut families) {
                if let Some(v) = khz(&dir.join(file))? {
                    family.push(&[("cpu", &cpu)], v as f64 * 1000.0);
                }
            }
        }
        out.extend(families);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    #[test]
    fn khz_become_hertz_and_missing_files_are_skipped() {
        let sysfs = crate::collectors::tests::temp_dir("cpufreq");
        let cpu = sysfs.join("devices/system/cpu");
        for n in [0, 1] {
            let d = cpu.join(format!("cpu{n}/cpufreq"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("scaling_cur_freq"), "2400000\n").unwrap();
            std::fs::write(d.join("cpuinfo_max_freq"), "3600000\n").unwrap();
        }
        std::fs::create_dir_all(cpu.join("cpu2")).unwrap(); // offline: no cpufreq
        std::fs::create_dir_all(cpu.join("cpuidle")).unwrap();
        let mut out = Vec::new();
        Cpufreq::new(&sysfs).collect(&mut out).unwrap();
        let cur = find(&out, "node_cpu_scaling_frequency_hertz").unwrap();
        assert_eq!(cur.get(&[("cpu", "1")]), Some(2.4e9));
        assert_eq!(cur.samples.len(), 2);
        let max = find(&out, "node_cpu_frequency_max_hertz").unwrap();
        assert_eq!(max.get(&[("cpu", "0")]), Some(3.6e9));
        assert!(
            find(&out, "node_cpu_frequency_hertz")
                .unwrap()
                .samples
                .is_empty()
        );

        std::fs::write(cpu.join("cpu0/cpufreq/scaling_min_freq"), "fast\n").unwrap();
        let e = Cpufreq::new(&sysfs).collect(&mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("scaling_min_freq"), "{e:#}");
        let mut out = Vec::new();
        Cpufreq::new(&sysfs.join("none")).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
