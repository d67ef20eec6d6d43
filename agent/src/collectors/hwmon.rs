//! <sysfs>/class/hwmon: temperatures, voltages, fans, power, as node_exporter
//! 1.5's hwmon collector (lm-sensors' source). Chips are named after their
//! device (`platform_coretemp_0`), which is stable across reboots, unlike
//! hwmonN; node_hwmon_chip_names and node_hwmon_sensor_label carry the
//! human-readable names. No hwmon class (most VMs) is no series, no error.

use super::family::{Family, Kind};
use super::{Registration, Source};
use anyhow::{Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `--collectors hwmon`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "hwmon",
    default: true,
    build: |a, _| Box::new(Hwmon::new(&a.sysfs)),
    options: super::no_options,
};

/// Sensor types node_exporter reads; other files (name, uevent) are not sensors.
const SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// Lower case, every character but [a-z0-9:_] as `_`, `_` trimmed.
pub fn clean(name: &str) -> String {
    let lower: String = name
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | ':' | '_' => c,
            _ => '_',
        })
        .collect();
    lower.trim_matches('_').to_string()
}

/// `temp1_input` as ("temp", 1, "input"); `update_interval` as
/// ("update_interval", 0, ""). None for names that do not fit.
pub fn explode(file: &str) -> Option<(&str, u32, &str)> {
    let type_end = file
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(file.len());
    let (kind, rest) = file.split_at(type_end);
    if kind.is_empty() {
        return None;
    }
    let id_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (id, rest) = rest.split_at(id_end);
    let id = if id.is_empty() { 0 } else { id.parse().ok()? };
    let property = match rest {
        "" => "",
        r => r.strip_prefix('_').filter(|p| !p.is_empty())?,
    };
    Some((kind, id, property))
}

/// sensor (`temp1`) -> property (`input`, `label`, "" for the bare file) -> text.
type SensorData = BTreeMap<String, BTreeMap<String, String>>;

fn sensor_files(dir: &Path, data: &mut SensorData) -> Result<()> {
    let entries = std::fs::read_dir(dir)?;
    for e in entries.flatten() {
        let Some(file) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some((kind, id, property)) = explode(&file) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&kind) {
            continue;
        }
        // Unreadable (write-only, or the driver refuses): skipped, as node_exporter.
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        data.entry(format!("{kind}{id}"))
            .or_default()
            .insert(property.to_string(), text.trim_matches('\n').to_string());
    }
    Ok(())
}

/// The chip's name: from its device (`<bus type>_<device>`), else its
/// `name` file, else `hwmonN`.
pub fn chip_name(dir: &Path) -> Result<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let name = device.file_name().map(|n| clean(&n.to_string_lossy()));
        let kind = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean(&n.to_string_lossy()));
        match (kind, name) {
            (Some(k), Some(n)) if !k.is_empty() && !n.is_empty() => return Ok(format!("{k}_{n}")),
            (_, Some(n)) if !n.is_empty() => return Ok(n),
            _ => {}
        }
    }
    if let Some(n) = readable_name(dir) {
        return Ok(n);
    }
    let real = std::fs::canonicalize(dir)?;
    match real.file_name().map(|n| clean(&n.to_string_lossy())) {
        Some(n) if !n.is_empty() => Ok(n),
        _ => bail!("cannot name the hwmon chip at {}", dir.display()),
    }
}

fn readable_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("name")).ok()?;
    Some(clean(&text)).filter(|n| !n.is_empty())
}

/// Collects families by name as they come.
#[derive(Default)]
struct Out {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Out {
    fn push(
        &mut self,
        name: String,
        help: String,
        kind: Kind,
        labels: &[(&'static str, &str)],
        v: f64,
    ) {
        let i = *self.index.entry(name.clone()).or_insert_with(|| {
            self.families.push(Family::new(name, help, kind));
            self.families.len() - 1
        });
        self.families[i].push(labels, v);
    }
}

fn chip(dir: &Path, out: &mut Out) -> Result<()> {
    let chip = chip_name(dir)?;
    let mut data = SensorData::new();
    sensor_files(dir, &mut data)?;
    let device = dir.join("device");
    if device.exists() {
        sensor_files(&device, &mut data)?;
    }
    if let Some(readable) = readable_name(dir) {
        out.push(
            "node_hwmon_chip_names".into(),
            "Annotation metric for human-readable chip names".into(),
            Kind::Gauge,
            &[("chip", &chip), ("chip_name", &readable)],
            1.0,
        );
    }
    for (sensor, props) in &data {
        let Some((kind, _, _)) = explode(sensor) else {
            continue;
        };
        let labels = [("chip", chip.as_str()), ("sensor", sensor.as_str())];
        if let Some(label) = props.get("label") {
            out.push(
                "node_hwmon_sensor_label".into(),
                "Label for given chip and sensor".into(),
                Kind::Gauge,
                &[("chip", &chip), ("label", label), ("sensor", sensor)],
                1.0,
            );
        }
        let bare = props.get("").map(String::as_str);
        match kind {
            "beep_enable" => {
                let on = if bare == Some("1") { 1.0 } else { 0.0 };
                out.push(
                    "node_hwmon_beep_enabled".into(),
                    "Hardware beep enabled".into(),
                    Kind::Gauge,
                    &labels,
                    on,
                );
                continue;
            }
            "vrm" | "update_interval" => {
                let Some(v) = bare.and_then(|b| b.parse::<f64>().ok()) else {
                    continue;
                };
                let (name, help, v) = match kind {
                    "vrm" => (
                        "node_hwmon_voltage_regulator_version",
                        "Hardware voltage regulator",
                        v,
                    ),
                    _ => (
                        "node_hwmon_update_interval_seconds",
                        "Hardware monitor update interval",
                        v * 0.001,
                    ),
                };
                out.push(name.into(), help.into(), Kind::Gauge, &labels, v);
                continue;
            }
            _ => {}
        }
        for (element, value) in props {
            if element == "label" {
                continue;
            }
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let mut name = format!("node_hwmon_{kind}");
            if element == "input" {
                if bare.is_some() {
                    name.push_str("_input");
                }
            } else if !element.is_empty() {
                name.push('_');
                name.push_str(&clean(element));
            }
            let e = element.as_str();
            let (name, help, kind_, v) = match (kind, e) {
                (_, "fault" | "alarm") => (
                    name,
                    format!("Hardware sensor {e} status ({kind})"),
                    Kind::Gauge,
                    v,
                ),
                (_, "beep") => (
                    name + "_enabled",
                    "Hardware monitor sensor has beeping enabled".into(),
                    Kind::Gauge,
                    v,
                ),
                ("in" | "cpu", _) => (
                    name + "_volts",
                    format!("Hardware monitor for voltage ({e})"),
                    Kind::Gauge,
                    v * 0.001,
                ),
                ("temp", t) if t != "type" => (
                    name + "_celsius",
                    format!("Hardware monitor for temperature ({e})"),
                    Kind::Gauge,
                    v * 0.001,
                ),
                ("curr", _) => (
                    name + "_amps",
                    format!("Hardware monitor for current ({e})"),
                    Kind::Gauge,
                    v * 0.001,
                ),
                ("energy", _) => (
                    name + "_joule_total",
                    format!("Hardware monitor for joules used so far ({e})"),
                    Kind::Counter,
                    v / 1e6,
                ),
                ("power", "accuracy") => (
                    name,
                    "Hardware monitor power meter accuracy, as a ratio".into(),
                    Kind::Gauge,
                    v / 1e6,
                ),
                ("power", "average_interval" | "average_interval_min" | "average_interval_max") => {
                    (
                        name + "_seconds",
                        format!("Hardware monitor power usage update interval ({e})"),
                        Kind::Gauge,
                        v * 0.001,
                    )
                }
                ("power", _) => (
                    name + "_watt",
                    format!("Hardware monitor for power usage in watts ({e})"),
                    Kind::Gauge,
                    v / 1e6,
                ),
                ("humidity", _) => (
                    name,
                    format!(
                        "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({e})"
                    ),
                    Kind::Gauge,
                    v / 1e6,
                ),
                ("fan", "input" | "min" | "max" | "target") => (
                    name + "_rpm",
                    format!("Hardware monitor for fan revolutions per minute ({e})"),
                    Kind::Gauge,
                    v,
                ),
                _ => (
                    name,
                    format!("Hardware monitor {kind} element {e}"),
                    Kind::Gauge,
                    v,
                ),
            };
            out.push(name, help, kind_, &labels, v);
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct Hwmon {
    dir: PathBuf,
}

impl Hwmon {
    pub fn new(sysfs: &Path) -> Hwmon {
        Hwmon {
            dir: sysfs.join("class/hwmon"),
        }
    }
}

impl Source for Hwmon {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let mut families = Out::default();
        // One chip that cannot be read fails the collector, after the others.
        let mut failed = None;
        for dir in dirs {
            if let Err(e) = chip(&dir, &mut families) {
                failed = Some(e.context(format!("hwmon chip {}", dir.display())));
            }
        }
        out.extend(families.families);
        failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    #[test]
    fn names_like_node_exporter() {
        assert_eq!(explode("temp1_input"), Some(("temp", 1, "input")));
        assert_eq!(explode("update_interval"), Some(("update_interval", 0, "")));
        assert_eq!(
            explode("power1_average_interval_max"),
            Some(("power", 1, "average_interval_max"))
        );
        assert_eq!(explode("in0"), Some(("in", 0, "")));
        assert_eq!(explode("1temp"), None);
        assert_eq!(explode("temp1_"), None);
        assert_eq!(clean("Package id 0"), "package_id_0");
        assert_eq!(clean("--AMD:K10--"), "amd:k10");
    }

    #[test]
    fn a_chip_with_a_device_and_one_without() {
        let sysfs = crate::collectors::tests::temp_dir("hwmon");
        let devices = sysfs.join("devices/platform/coretemp.0");
        let hwmon0 = devices.join("hwmon/hwmon0");
        std::fs::create_dir_all(&hwmon0).unwrap();
        for (f, t) in [
            ("name", "coretemp\n"),
            ("temp1_input", "45000\n"),
            ("temp1_crit", "100000\n"),
            ("temp1_crit_alarm", "0\n"),
            ("temp1_label", "Package id 0\n"),
            ("fan2_input", "1200\n"),
            ("in0_input", "1250\n"),
            ("power1_average", "15500000\n"),
            ("energy1_input", "2000000\n"),
            ("temp2_input", "busy\n"),
            ("uevent", "x\n"),
        ] {
            std::fs::write(hwmon0.join(f), t).unwrap();
        }
        std::os::unix::fs::symlink(&devices, hwmon0.join("device")).unwrap();
        let class = sysfs.join("class/hwmon");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&hwmon0, class.join("hwmon0")).unwrap();
        let bare = class.join("hwmon1");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::write(bare.join("temp1_input"), "-5000\n").unwrap();

        let mut out = Vec::new();
        Hwmon::new(&sysfs).collect(&mut out).unwrap();
        let get = |name: &str, chip: &str, sensor: &str| {
            find(&out, name)
                .unwrap_or_else(|| panic!("{name}"))
                .get(&[("chip", chip), ("sensor", sensor)])
        };
        let c = "platform_coretemp_0";
        assert_eq!(get("node_hwmon_temp_celsius", c, "temp1"), Some(45.0));
        assert_eq!(get("node_hwmon_temp_crit_celsius", c, "temp1"), Some(100.0));
        assert_eq!(
            get("node_hwmon_temp_crit_alarm_celsius", c, "temp1"),
            Some(0.0)
        );
        assert_eq!(get("node_hwmon_fan_rpm", c, "fan2"), Some(1200.0));
        assert_eq!(get("node_hwmon_in_volts", c, "in0"), Some(1.25));
        assert_eq!(
            get("node_hwmon_power_average_watt", c, "power1"),
            Some(15.5)
        );
        assert_eq!(
            get("node_hwmon_energy_joule_total", c, "energy1"),
            Some(2.0)
        );
        assert_eq!(
            get("node_hwmon_temp_celsius", "hwmon1", "temp1"),
            Some(-5.0)
        );
        assert!(
            get("node_hwmon_temp_celsius", c, "temp2").is_none(),
            "unparsable value skipped"
        );
        let label = find(&out, "node_hwmon_sensor_label").unwrap();
        assert_eq!(
            label.get(&[("chip", c), ("label", "Package id 0"), ("sensor", "temp1")]),
            Some(1.0)
        );
        let names = find(&out, "node_hwmon_chip_names").unwrap();
        assert_eq!(
            names.get(&[("chip", c), ("chip_name", "coretemp")]),
            Some(1.0)
        );
        assert_eq!(
            find(&out, "node_hwmon_temp_celsius").unwrap().help,
            "Hardware monitor for temperature (input)"
        );

        let mut out = Vec::new();
        Hwmon::new(&sysfs.join("none")).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
