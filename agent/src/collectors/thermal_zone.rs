//! <sysfs>/class/thermal: zone temperatures and cooling device throttle
//! states, as node_exporter's thermal_zone collector. Machines without
//! thermal zones (most VMs) have no series, and that is no error.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `--collectors thermal_zone`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "thermal_zone",
    default: true,
    build: |a, _| Box::new(ThermalZone::new(&a.sysfs)),
    options: super::no_options,
};

/// `<dir>/<prefix>N` entries as (N, path), sorted by N.
fn numbered(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn text(path: &Path) -> Result<String> {
    Ok(read(path)?.trim().to_string())
}

fn int(path: &Path) -> Result<i64> {
    let t = text(path)?;
    t.parse()
        .with_context(|| format!("{}: `{t}` is not a number", path.display()))
}

/// Whether reading a zone failed the way a sensor that is not ready does
/// (EAGAIN, ENODATA, ...): node_exporter skips such zones.
fn sensor_not_ready(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.raw_os_error(),
            Some(libc::EAGAIN | libc::ENODATA | libc::EINVAL | libc::EIO | libc::ENXIO)
        )
    })
}

#[derive(Debug)]
pub struct ThermalZone {
    dir: PathBuf,
}

impl ThermalZone {
    pub fn new(sysfs: &Path) -> ThermalZone {
        ThermalZone {
            dir: sysfs.join("class/thermal"),
        }
    }
}

impl Source for ThermalZone {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mut temp = Family::gauge("node_thermal_zone_temp", "Zone temperature in Celsius");
        for (n, zone) in numbered(&self.dir, "thermal_zone") {
            let millis = match int(&zone.join("temp")) {
                Ok(v) => v,
                Err(e) if sensor_not_ready(&e) => continue,
                Err(e) => return Err(e),
            };
            let kind = text(&zone.join("type"))?;
            temp.push(
                &[("type", &kind), ("zone", &n.to_string())],
                millis as f64 / 1000.0,
            );
        }
        let mut cur = Family::gauge(
            "node_cooling_device_cur_state",
            "Current throttle state of the cooling device",
        );
        let mut max = Family::gauge(
            "node_cooling_device_max_state",
            "Maximum throttle state of the cooling device",
        );
        for (n, dev) in numbered(&self.dir, "cooling_device") {
            let name = n.to_string();
            let kind = text(&dev.join("type"))?;
            let labels = [("name", name.as_str()), ("type", kind.as_str())];
            cur.push(&labels, int(&dev.join("cur_state"))? as f64);
            max.push(&labels, int(&dev.join("max_state"))? as f64);
        }
        out.extend([temp, cur, max]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (f, t) in files {
            std::fs::write(dir.join(f), t).unwrap();
        }
    }

    #[test]
    fn zones_and_cooling_devices() {
        let sysfs = crate::collectors::tests::temp_dir("thermal");
        let class = sysfs.join("class/thermal");
        write(
            &class.join("thermal_zone0"),
            &[("type", "acpitz\n"), ("temp", "27800\n")],
        );
        write(
            &class.join("thermal_zone10"),
            &[("type", "x86_pkg_temp\n"), ("temp", "-500\n")],
        );
        write(
            &class.join("cooling_device0"),
            &[
                ("type", "Processor\n"),
                ("cur_state", "0\n"),
                ("max_state", "3\n"),
            ],
        );
        std::fs::create_dir_all(class.join("something_else")).unwrap();
        let mut out = Vec::new();
        ThermalZone::new(&sysfs).collect(&mut out).unwrap();
        let temp = find(&out, "node_thermal_zone_temp").unwrap();
        assert_eq!(temp.get(&[("type", "acpitz"), ("zone", "0")]), Some(27.8));
        assert_eq!(
            temp.get(&[("type", "x86_pkg_temp"), ("zone", "10")]),
            Some(-0.5)
        );
        let max = find(&out, "node_cooling_device_max_state").unwrap();
        assert_eq!(max.get(&[("name", "0"), ("type", "Processor")]), Some(3.0));

        // A cut file is an error naming it; no sysfs at all is no series.
        std::fs::write(class.join("cooling_device0/max_state"), "").unwrap();
        let e = ThermalZone::new(&sysfs)
            .collect(&mut Vec::new())
            .unwrap_err();
        assert!(format!("{e:#}").contains("max_state"), "{e:#}");
        let mut out = Vec::new();
        ThermalZone::new(&sysfs.join("none"))
            .collect(&mut out)
            .unwrap();
        assert!(out.iter().all(|f| f.samples.is_empty()));
    }
}
