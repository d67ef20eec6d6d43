//! <sysfs>/class/power_supply: batteries, AC adapters and UPSes, as
//! node_exporter 1.5's powersupplyclass collector: one gauge per numeric
//! property (µA, µV, µWh, µW become A, V, Wh, W; tenths of °C become °C)
//! and node_power_supply_info with the text properties. Servers and VMs
//! usually have none: no series, and no error.

use super::family::Family;
use super::{Registration, Source};
use anyhow::{Context, Result};
use regex::Regex;
use std::path::{Path, PathBuf};

/// `--collectors powersupplyclass`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "powersupplyclass",
    default: true,
    build: |a, _| {
        Box::new(PowerSupply::new(
            &a.sysfs,
            a.options.powersupply_ignored_supplies.clone(),
        ))
    },
    options: |o| o.powersupply_ignored_supplies.as_str().to_string(),
};

/// (sysfs file, metric suffix, divisor).
const NUMERIC: [(&str, &str, f64); 49] = [
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        1e6,
    ),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        1e6,
    ),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// Text properties: labels of node_power_supply_info, alphabetical.
const TEXT: [&str; 11] = [
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "scope",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
];

/// A property file's text; None when absent or when the driver refuses to
/// answer for it (EINVAL, ENODATA, EOPNOTSUPP, EAGAIN: unsupported or not
/// ready), which node_exporter also skips.
fn property(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENODATA | libc::EOPNOTSUPP | libc::EAGAIN)
                ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[derive(Debug)]
pub struct PowerSupply {
    dir: PathBuf,
    ignored: Regex,
}

impl PowerSupply {
    pub fn new(sysfs: &Path, ignored: Regex) -> PowerSupply {
        PowerSupply {
            dir: sysfs.join("class/power_supply"),
            ignored,
        }
    }
}

impl Source for PowerSupply {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut supplies: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
            .filter(|(name, _)| !self.ignored.is_match(name))
            .collect();
        supplies.sort();
        let mut families: Vec<Family> = NUMERIC
            .iter()
            .map(|(_, metric, _)| {
                Family::new(
                    format!("node_power_supply_{metric}"),
                    format!("{metric} value of /sys/class/power_supply/<power_supply>."),
                    super::family::Kind::Gauge,
                )
            })
            .collect();
        let mut info = Family::gauge(
            "node_power_supply_info",
            "info of /sys/class/power_supply/<power_supply>.",
        );
        for (name, dir) in &supplies {
            for ((file, metric, divisor), family) in NUMERIC.iter().zip(&mut families) {
                let Some(text) = property(&dir.join(file))? else {
                    continue;
                };
                let v: i64 = text.parse().with_context(|| {
                    format!("{name} {metric}: `{text}` in {file} is not a number")
                })?;
                family.push(&[("power_supply", name)], v as f64 / divisor);
            }
            let mut texts = Vec::new();
            for key in TEXT {
                if let Some(t) = property(&dir.join(key))?.filter(|t| !t.is_empty()) {
                    texts.push((key, t));
                }
            }
            let mut labels: Vec<(&'static str, &str)> =
                texts.iter().map(|(k, v)| (*k, v.as_str())).collect();
            labels.insert(
                labels.partition_point(|(k, _)| *k < "power_supply"),
                ("power_supply", name),
            );
            info.push(&labels, 1.0);
        }
        out.extend(families);
        out.push(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    #[test]
    fn a_battery_and_an_adapter() {
        let sysfs = crate::collectors::tests::temp_dir("power");
        let class = sysfs.join("class/power_supply");
        let bat = class.join("BAT0");
        std::fs::create_dir_all(&bat).unwrap();
        for (f, t) in [
            ("type", "Battery\n"),
            ("status", "Discharging\n"),
            ("capacity", "87\n"),
            ("energy_now", "41250000\n"),
            ("voltage_now", "12100000\n"),
            ("temp", "312\n"),
            ("cycle_count", "0\n"),
            ("manufacturer", "\n"),
        ] {
            std::fs::write(bat.join(f), t).unwrap();
        }
        let ac = class.join("AC");
        std::fs::create_dir_all(&ac).unwrap();
        std::fs::write(ac.join("type"), "Mains\n").unwrap();
        std::fs::write(ac.join("online"), "1\n").unwrap();
        let mut out = Vec::new();
        PowerSupply::new(&sysfs, Regex::new("^$").unwrap())
            .collect(&mut out)
            .unwrap();
        let v = |n: &str, s: &str| find(&out, n).unwrap().get(&[("power_supply", s)]);
        assert_eq!(v("node_power_supply_capacity", "BAT0"), Some(87.0));
        assert_eq!(v("node_power_supply_energy_watthour", "BAT0"), Some(41.25));
        assert_eq!(v("node_power_supply_voltage_volt", "BAT0"), Some(12.1));
        assert_eq!(v("node_power_supply_temp_celsius", "BAT0"), Some(31.2));
        assert_eq!(v("node_power_supply_cyclecount", "BAT0"), Some(0.0));
        assert_eq!(v("node_power_supply_online", "AC"), Some(1.0));
        assert_eq!(
            find(&out, "node_power_supply_online").unwrap().help,
            "online value of /sys/class/power_supply/<power_supply>."
        );
        let info = find(&out, "node_power_supply_info").unwrap();
        assert_eq!(
            info.get(&[
                ("power_supply", "BAT0"),
                ("status", "Discharging"),
                ("type", "Battery")
            ]),
            Some(1.0),
            "empty manufacturer left out; labels sorted"
        );

        // Ignored supplies, a bad value, no class at all.
        let mut out = Vec::new();
        PowerSupply::new(&sysfs, Regex::new("^BAT").unwrap())
            .collect(&mut out)
            .unwrap();
        assert_eq!(
            find(&out, "node_power_supply_info").unwrap().samples.len(),
            1
        );
        std::fs::write(bat.join("capacity"), "full\n").unwrap();
        let e = PowerSupply::new(&sysfs, Regex::new("^$").unwrap())
            .collect(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("capacity"), "{e}");
        let mut out = Vec::new();
        PowerSupply::new(&sysfs.join("none"), Regex::new("^$").unwrap())
            .collect(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
