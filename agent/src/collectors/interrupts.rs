//! /proc/interrupts: node_interrupts_total{cpu,type,info,devices}, as
//! node_exporter's interrupts collector, which is off by default there and
//! here (CPUs × interrupt lines is many series): `--collectors
//! default,interrupts` turns it on.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors interrupts`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "interrupts",
    default: false,
    build: |a, _| Box::new(Interrupts::new(&a.procfs)),
    options: super::no_options,
};

/// One line: its name (`24`, `NMI`), per-CPU counts, and node_exporter's
/// split of the rest: for numbered lines the chip (`info`) and the rest
/// (`devices`), for named ones the description as `info`.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub counts: Vec<u64>,
    pub info: String,
    pub devices: String,
}

pub fn parse(text: &str) -> Result<Vec<Line>> {
    let mut lines = text.lines();
    let cpus = lines
        .next()
        .context("empty file")?
        .split_ascii_whitespace()
        .count();
    if cpus == 0 {
        bail!("no CPU header");
    }
    let mut out = Vec::new();
    for line in lines {
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        // Lines without a description (ERR, MIS: one total) are skipped, as
        // node_exporter does.
        if parts.len() < cpus + 2 {
            continue;
        }
        let name = parts[0].trim_end_matches(':');
        let counts = parts[1..=cpus]
            .iter()
            .map(|v| {
                v.parse()
                    .with_context(|| format!("interrupt {name}: `{v}` is not a number"))
            })
            .collect::<Result<_>>()?;
        let (info, devices) = if name.bytes().all(|b| b.is_ascii_digit()) {
            (parts[cpus + 1].to_string(), parts[cpus + 2..].join(" "))
        } else {
            (parts[cpus + 1..].join(" "), String::new())
        };
        out.push(Line {
            name: name.to_string(),
            counts,
            info,
            devices,
        });
    }
    Ok(out)
}

pub fn families(lines: &[Line]) -> Vec<Family> {
    let mut f = Family::counter("node_interrupts_total", "Interrupt details.");
    for l in lines {
        for (cpu, n) in l.counts.iter().enumerate() {
            let cpu = cpu.to_string();
            f.push(
                &[
                    ("cpu", &cpu),
                    ("devices", &l.devices),
                    ("info", &l.info),
                    ("type", &l.name),
                ],
                *n as f64,
            );
        }
    }
    vec![f]
}

#[derive(Debug)]
pub struct Interrupts {
    path: PathBuf,
}

impl Interrupts {
    pub fn new(procfs: &Path) -> Interrupts {
        Interrupts {
            path: procfs.join("interrupts"),
        }
    }
}

impl Source for Interrupts {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        out.extend(families(&parse(&read(&self.path)?)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const INTERRUPTS: &str = "           CPU0       CPU1       \n 24:          2          0  IO-APIC   5-edge      ACPI:Ged\n 28:          2          7 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config\nNMI:          0          3   Non-maskable interrupts\nERR:          0\nMIS:          0\n";

    #[test]
    fn numbered_and_named_lines_split_as_node_exporter() {
        let l = parse(INTERRUPTS).unwrap();
        assert_eq!(l.len(), 3, "ERR and MIS have no per-CPU counts");
        assert_eq!(l[1].info, "PCI-MSIX-0000:00:01.0");
        assert_eq!(l[1].devices, "0-edge virtio0-config");
        assert_eq!(l[2].info, "Non-maskable interrupts");
        assert_eq!(l[2].devices, "");
        let f = families(&l);
        let total = find(&f, "node_interrupts_total").unwrap();
        assert_eq!(total.samples.len(), 6);
        assert_eq!(
            total.get(&[
                ("cpu", "1"),
                ("devices", "0-edge virtio0-config"),
                ("info", "PCI-MSIX-0000:00:01.0"),
                ("type", "28"),
            ]),
            Some(7.0)
        );
    }

    #[test]
    fn cut_and_empty_files() {
        assert!(parse("").is_err());
        assert!(parse("\n").is_err());
        assert!(parse("  CPU0 CPU1\n 1: x 2 IO-APIC 1-edge i8042\n").is_err());
        // A line cut before its description is skipped, not misread.
        assert!(parse("  CPU0 CPU1\n 1: 5\n").unwrap().is_empty());
    }
}
