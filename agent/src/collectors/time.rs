//! The clock, as node_exporter's time collector: the current time, the
//! local time zone's offset, and the clocksources from
//! <sysfs>/devices/system/clocksource (absent in some containers: then only
//! the time).

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `--collectors time`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "time",
    default: true,
    build: |a, _| Box::new(Time::new(&a.sysfs)),
    options: super::no_options,
};

/// The local zone's abbreviation and offset east of UTC, in seconds, now
/// (from TZ or /etc/localtime, as the C library resolves them).
pub fn zone(unix_secs: i64) -> (String, i64) {
    let t = unix_secs as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`; tm_zone points at static
    // storage of the C library (or is null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return ("UTC".into(), 0);
    }
    let name = if tm.tm_zone.is_null() {
        String::new()
    } else {
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    (name, tm.tm_gmtoff)
}

/// One clocksourceN directory: the available sources, the current one.
pub fn clocksource(dir: &Path) -> Result<(Vec<String>, String)> {
    let available = read(&dir.join("available_clocksource"))?;
    let current = read(&dir.join("current_clocksource"))?;
    let available = available
        .split_ascii_whitespace()
        .map(String::from)
        .collect();
    Ok((available, current.trim().to_string()))
}

#[derive(Debug)]
pub struct Time {
    clocksources: PathBuf,
}

impl Time {
    pub fn new(sysfs: &Path) -> Time {
        Time {
            clocksources: sysfs.join("devices/system/clocksource"),
        }
    }

    fn clocksources(&self, out: &mut Vec<Family>) -> Result<()> {
        let Ok(dir) = std::fs::read_dir(&self.clocksources) else {
            return Ok(());
        };
        let mut devices: Vec<(u32, PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let n = name.to_str()?.strip_prefix("clocksource")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        devices.sort();
        let mut available = Family::gauge(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
        );
        let mut current = Family::gauge(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
        );
        for (n, path) in devices {
            let device = n.to_string();
            let (sources, now) = clocksource(&path)?;
            for s in &sources {
                available.push(&[("clocksource", s), ("device", &device)], 1.0);
            }
            current.push(&[("clocksource", &now), ("device", &device)], 1.0);
        }
        out.push(available);
        out.push(current);
        Ok(())
    }
}

impl Source for Time {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        out.push(
            Family::gauge(
                "node_time_seconds",
                "System time in seconds since epoch (1970).",
            )
            .with(&[], now.as_secs_f64()),
        );
        let (name, offset) = zone(now.as_secs() as i64);
        out.push(
            Family::gauge(
                "node_time_zone_offset_seconds",
                "System time zone offset in seconds.",
            )
            .with(&[("time_zone", &name)], offset as f64),
        );
        self.clocksources(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    #[test]
    fn clocksources_per_device_and_none_without_sysfs() {
        let sysfs = crate::collectors::tests::temp_dir("time");
        let dir = sysfs.join("devices/system/clocksource");
        for (n, avail, cur) in [(0, "tsc kvm-clock \n", "tsc\n"), (1, "hpet\n", "hpet\n")] {
            let d = dir.join(format!("clocksource{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("available_clocksource"), avail).unwrap();
            std::fs::write(d.join("current_clocksource"), cur).unwrap();
        }
        std::fs::create_dir_all(dir.join("power")).unwrap();
        let mut out = Vec::new();
        Time::new(&sysfs).collect(&mut out).unwrap();
        let avail = find(&out, "node_time_clocksource_available_info").unwrap();
        assert_eq!(avail.samples.len(), 3);
        assert_eq!(
            avail.get(&[("clocksource", "kvm-clock"), ("device", "0")]),
            Some(1.0)
        );
        let cur = find(&out, "node_time_clocksource_current_info").unwrap();
        assert_eq!(
            cur.get(&[("clocksource", "hpet"), ("device", "1")]),
            Some(1.0)
        );
        let t = find(&out, "node_time_seconds").unwrap().samples[0].value;
        assert!(t > 1.7e9, "{t}");

        let mut out = Vec::new();
        Time::new(&sysfs.join("missing")).collect(&mut out).unwrap();
        assert_eq!(out.len(), 2);
        // A cut clocksource directory is an error, naming the file.
        std::fs::remove_file(dir.join("clocksource1/current_clocksource")).unwrap();
        let e = Time::new(&sysfs).collect(&mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("current_clocksource"), "{e:#}");
    }

    #[test]
    fn zone_of_the_machine() {
        let (name, offset) = zone(1_800_000_000);
        assert!(offset.abs() <= 14 * 3600, "{offset}");
        assert!(!name.is_empty());
    }
}
