//! /proc/net/softnet_stat: per-CPU packet processing by the network
//! softirq, as node_exporter 1.5's softnet collector (the cpu label is the
//! line's index; the columns are hexadecimal).

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors softnet`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "softnet",
    default: true,
    build: |a, _| Box::new(Softnet::new(&a.procfs)),
    options: super::no_options,
};

/// Per CPU: packets processed, dropped (backlog full), and times the
/// softirq ran out of budget with work left (time_squeeze).
pub fn parse(text: &str) -> Result<Vec<[u64; 3]>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let columns: Vec<&str> = line.split_ascii_whitespace().collect();
        // Kernels since 2.6 print at least 9 columns; fewer is a cut line.
        if columns.len() < 9 {
            bail!("line {}: {} columns, want at least 9", i + 1, columns.len());
        }
        let mut v = [0; 3];
        for (slot, col) in v.iter_mut().zip(&columns) {
            *slot = u64::from_str_radix(col, 16)
                .with_context(|| format!("line {}: `{col}` is not hexadecimal", i + 1))?;
        }
        out.push(v);
    }
    Ok(out)
}

pub fn families(cpus: &[[u64; 3]]) -> Vec<Family> {
    let mut processed = Family::counter(
        "node_softnet_processed_total",
        "Number of processed packets",
    );
    let mut dropped = Family::counter("node_softnet_dropped_total", "Number of dropped packets");
    let mut squeezed = Family::counter(
        "node_softnet_times_squeezed_total",
        "Number of times processing packets ran out of quota",
    );
    for (cpu, v) in cpus.iter().enumerate() {
        let cpu = cpu.to_string();
        let labels = [("cpu", cpu.as_str())];
        processed.push(&labels, v[0] as f64);
        dropped.push(&labels, v[1] as f64);
        squeezed.push(&labels, v[2] as f64);
    }
    vec![dropped, processed, squeezed]
}

#[derive(Debug)]
pub struct Softnet {
    path: PathBuf,
}

impl Softnet {
    pub fn new(procfs: &Path) -> Softnet {
        Softnet {
            path: procfs.join("net/softnet_stat"),
        }
    }
}

impl Source for Softnet {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        out.extend(families(&parse(&read(&self.path)?)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const STAT: &str = "00286fd7 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n002a9352 0000000a 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000\n";

    #[test]
    fn hex_columns_per_cpu() {
        let f = families(&parse(STAT).unwrap());
        let p = find(&f, "node_softnet_processed_total").unwrap();
        assert_eq!(p.get(&[("cpu", "0")]), Some(0x286fd7 as f64));
        let d = find(&f, "node_softnet_dropped_total").unwrap();
        assert_eq!(d.get(&[("cpu", "1")]), Some(10.0));
        let s = find(&f, "node_softnet_times_squeezed_total").unwrap();
        assert_eq!(s.get(&[("cpu", "1")]), Some(2.0));
    }

    #[test]
    fn old_9_column_lines_and_cut_lines() {
        assert_eq!(parse("1 2 3 0 0 0 0 0 0\n").unwrap(), [[1, 2, 3]]);
        let e = parse("1 2 3 0\n").unwrap_err().to_string();
        assert!(e.contains("4 columns"), "{e}");
        assert!(parse("zz 2 3 0 0 0 0 0 0\n").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
