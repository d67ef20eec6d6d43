//! /proc/net/dev: node_network_{receive,transmit}_*_total{device}, one family
//! per column, as node_exporter's netdev collector. Virtual devices (no
//! <sysfs>/class/net/DEV/device link: lo, bridges, veth, tunnels, bonds) are
//! left out unless --netdev-virtual: on container hosts they are hundreds of
//! series that repeat the physical devices' traffic.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Result, bail};
use regex::Regex;
use std::path::{Path, PathBuf};

/// `--collectors netdev`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "netdev",
    default: true,
    build: |a, _| {
        let o = &a.options;
        Box::new(Netdev::new(
            &a.procfs,
            &a.sysfs,
            o.netdev_virtual,
            o.netdev_exclude.clone(),
        ))
    },
    options: |o| {
        format!(
            "{} {:?}",
            o.netdev_virtual,
            o.netdev_exclude.as_ref().map(Regex::as_str)
        )
    },
};

/// /proc/net/dev's columns, receive then transmit, as node_exporter names them.
pub const COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub name: String,
    pub stats: [u64; 16],
}

/// Parses /proc/net/dev. Names are right-aligned to 6 columns (longer ones
/// start the line) and cannot contain ':' or whitespace: the name is what
/// precedes the ':', trimmed.
pub fn parse(text: &str) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, values)) = line.rsplit_once(':') else {
            continue;
        };
        let name = name.trim();
        let mut stats = [0; 16];
        let mut fields = values.split_ascii_whitespace();
        for (slot, column) in stats.iter_mut().zip(COLUMNS) {
            *slot = super::number(fields.next(), format_args!("{name} {column}"))?;
        }
        devices.push(Device {
            name: name.to_string(),
            stats,
        });
    }
    if devices.is_empty() && !text.starts_with("Inter-|") {
        bail!("not /proc/net/dev: no header");
    }
    Ok(devices)
}

/// One counter family per column; `nohandler` (not in /proc/net/dev, from
/// sysfs) is added by the caller when present.
pub fn families(devices: &[Device]) -> Vec<Family> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let mut f = column_family(column);
            for d in devices {
                f.push(&[("device", &d.name)], d.stats[i] as f64);
            }
            f
        })
        .collect()
}

fn column_family(column: &str) -> Family {
    Family::new(
        format!("node_network_{column}_total"),
        format!("Network device statistic {column}."),
        super::family::Kind::Counter,
    )
}

#[derive(Debug)]
pub struct Netdev {
    path: PathBuf,
    class_net: PathBuf,
    include_virtual: bool,
    exclude: Option<Regex>,
}

impl Netdev {
    pub fn new(
        procfs: &Path,
        sysfs: &Path,
        include_virtual: bool,
        exclude: Option<Regex>,
    ) -> Netdev {
        Netdev {
            path: procfs.join("net/dev"),
            class_net: sysfs.join("class/net"),
            include_virtual,
            exclude,
        }
    }

    fn wanted(&self, name: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|re| re.is_match(name)) {
            return false;
        }
        self.include_virtual || !self.is_virtual(name)
    }

    /// Without sysfs (a container that does not mount it) nothing can be
    /// told apart, so only the loopback counts as virtual.
    fn is_virtual(&self, name: &str) -> bool {
        if !self.class_net.is_dir() {
            return name == "lo";
        }
        !self.class_net.join(name).join("device").exists()
    }

    /// rx_nohandler (packets no protocol wanted) is what node_exporter's
    /// netlink path adds to the /proc/net/dev columns; sysfs has it too.
    fn nohandler(&self, devices: &[Device]) -> Family {
        let mut f = column_family("receive_nohandler");
        for d in devices {
            let path = self.class_net.join(&d.name).join("statistics/rx_nohandler");
            if let Some(v) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                f.push(&[("device", &d.name)], v as f64);
            }
        }
        f
    }
}

impl Source for Netdev {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mut devices = parse(&read(&self.path)?)?;
        devices.retain(|d| self.wanted(&d.name));
        out.extend(families(&devices));
        out.push(self.nohandler(&devices));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;
    use crate::collectors::tests::temp_dir;

    const DEV: &str = include_str!("fixtures/proc/net/dev");

    #[test]
    fn parses_long_and_odd_names() {
        let d = parse(DEV).unwrap();
        let names: Vec<_> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["lo", "eth0", "verylongname15c", "tap\"q\\x", "δ-dev"]
        );
        assert_eq!(
            d[1].stats,
            [
                246212641, 10267, 1, 2, 3, 4, 5, 6, 593911, 7567, 7, 8, 9, 10, 11, 12
            ]
        );
        assert_eq!(d[2].stats[0], u64::MAX);
        assert_eq!(d[2].stats[8], 1 << 32);
    }

    #[test]
    fn every_column_is_a_family() {
        let f = families(&parse(DEV).unwrap());
        assert_eq!(f.len(), 16);
        let colls = find(&f, "node_network_transmit_colls_total").unwrap();
        assert_eq!(colls.get(&[("device", "eth0")]), Some(10.0));
        assert_eq!(colls.help, "Network device statistic transmit_colls.");
        let rx = find(&f, "node_network_receive_bytes_total").unwrap();
        assert_eq!(rx.get(&[("device", "tap\"q\\x")]), Some(5.0));
    }

    #[test]
    fn truncated_lines_are_errors() {
        let text = "Inter-|\n face |\n  eth0: 1 2 3\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("eth0 receive_drop"), "{e}");
        assert!(parse("garbage").is_err());
    }

    /// A sysfs where only eth0 has a `device` link (is physical).
    fn sysfs_with_eth0(root: &Path) {
        for dev in ["lo", "eth0", "verylongname15c"] {
            std::fs::create_dir_all(root.join("class/net").join(dev).join("statistics")).unwrap();
        }
        std::fs::write(root.join("class/net/eth0/device"), "").unwrap();
        std::fs::write(root.join("class/net/eth0/statistics/rx_nohandler"), "42\n").unwrap();
    }

    fn devices(n: &Netdev) -> Vec<String> {
        let mut out = Vec::new();
        n.collect(&mut out).unwrap();
        let rx = find(&out, "node_network_receive_bytes_total").unwrap();
        rx.samples.iter().map(|s| s.labels[0].1.clone()).collect()
    }

    #[test]
    fn virtual_devices_are_left_out_unless_asked_for() {
        let procfs = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/collectors/fixtures/proc"
        ));
        let sysfs = temp_dir("netdev-sysfs");
        sysfs_with_eth0(&sysfs);
        let physical = Netdev::new(procfs, &sysfs, false, None);
        assert_eq!(devices(&physical), ["eth0"]);
        let mut out = Vec::new();
        physical.collect(&mut out).unwrap();
        let nohandler = find(&out, "node_network_receive_nohandler_total").unwrap();
        assert_eq!(nohandler.get(&[("device", "eth0")]), Some(42.0));

        let all = Netdev::new(procfs, &sysfs, true, Regex::new("^lo$").ok());
        assert_eq!(
            devices(&all),
            ["eth0", "verylongname15c", "tap\"q\\x", "δ-dev"]
        );

        // No sysfs at all: only lo is known to be virtual.
        let blind = Netdev::new(procfs, &sysfs.join("missing"), false, None);
        assert_eq!(devices(&blind).len(), 4);
    }
}
