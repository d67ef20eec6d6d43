//! /proc/vmstat: node_vmstat_<field> for the fields matching --vmstat-fields
//! (node_exporter's default: page-ins/outs, swap-ins/outs, faults, OOM kills).
//! Untyped, as node_exporter exports them (the file mixes counters and gauges).

use super::family::{Family, Kind};
use super::{Registration, Source, read};
use anyhow::Result;
use regex::Regex;
use std::path::{Path, PathBuf};

/// `--collectors vmstat`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "vmstat",
    default: true,
    build: |a, _| Box::new(Vmstat::new(&a.procfs, a.options.vmstat_fields.clone())),
    options: |o| o.vmstat_fields.as_str().to_string(),
};

/// `name value` pairs whose name matches `fields`, in file order.
pub fn parse<'a>(text: &'a str, fields: &Regex) -> Result<Vec<(&'a str, u64)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(name), value) = (parts.next(), parts.next()) else {
            continue;
        };
        if fields.is_match(name) {
            out.push((name, super::number(value, name)?));
        }
    }
    Ok(out)
}

pub fn families(fields: &[(&str, u64)]) -> Vec<Family> {
    fields
        .iter()
        .map(|&(name, value)| {
            Family::new(
                format!("node_vmstat_{name}"),
                format!("/proc/vmstat information field {name}."),
                Kind::Untyped,
            )
            .with(&[], value as f64)
        })
        .collect()
}

#[derive(Debug)]
pub struct Vmstat {
    path: PathBuf,
    fields: Regex,
}

impl Vmstat {
    pub fn new(procfs: &Path, fields: Regex) -> Vmstat {
        Vmstat {
            path: procfs.join("vmstat"),
            fields,
        }
    }
}

impl Source for Vmstat {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let text = read(&self.path)?;
        out.extend(families(&parse(&text, &self.fields)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::VMSTAT_FIELDS;

    #[test]
    fn default_fields_are_node_exporters() {
        let re = Regex::new(VMSTAT_FIELDS).unwrap();
        let f = parse(include_str!("fixtures/proc/vmstat"), &re).unwrap();
        let names: Vec<_> = f.iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "pgpgin",
                "pgpgout",
                "pswpin",
                "pswpout",
                "pgfault",
                "pgmajfault",
                "oom_kill"
            ]
        );
        let fam = families(&f);
        assert_eq!(fam[4].name, "node_vmstat_pgfault");
        assert_eq!(fam[4].help, "/proc/vmstat information field pgfault.");
        assert_eq!(fam[4].kind, Kind::Untyped);
        assert_eq!(fam[4].samples[0].value, 24207474.0);
    }

    #[test]
    fn custom_fields_and_bad_values() {
        let re = Regex::new("^nr_dirty$").unwrap();
        assert_eq!(
            parse("nr_dirty 5\nnr_dirtied 6\n", &re).unwrap(),
            [("nr_dirty", 5)]
        );
        assert!(parse("nr_dirty x\n", &re).is_err());
    }
}
