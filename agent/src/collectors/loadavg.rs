//! /proc/loadavg: node_load1, node_load5, node_load15.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `--collectors loadavg`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "loadavg",
    default: true,
    build: |a, _| Box::new(Loadavg::new(&a.procfs)),
    options: super::no_options,
};

/// The 1, 5 and 15 minute load averages.
pub fn parse(text: &str) -> Result<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |what| -> Result<f64> {
        let f = fields
            .next()
            .with_context(|| format!("{what}: field missing"))?;
        f.parse()
            .with_context(|| format!("{what}: `{f}` is not a number"))
    };
    Ok([next("load1")?, next("load5")?, next("load15")?])
}

pub fn families(load: [f64; 3]) -> Vec<Family> {
    vec![
        Family::gauge("node_load1", "1m load average.").with(&[], load[0]),
        Family::gauge("node_load5", "5m load average.").with(&[], load[1]),
        Family::gauge("node_load15", "15m load average.").with(&[], load[2]),
    ]
}

#[derive(Debug)]
pub struct Loadavg {
    path: PathBuf,
}

impl Loadavg {
    pub fn new(procfs: &Path) -> Loadavg {
        Loadavg {
            path: procfs.join("loadavg"),
        }
    }
}

impl Source for Loadavg {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        out.extend(families(parse(&read(&self.path)?)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        let load = parse(include_str!("fixtures/proc/loadavg")).unwrap();
        assert_eq!(load, [1.34, 1.30, 0.94]);
        let f = families(load);
        assert_eq!(f[2].name, "node_load15");
        assert_eq!(f[2].samples[0].value, 0.94);
        assert!(parse("0.1 0.2").is_err());
        assert!(parse("a b c").is_err());
    }
}
