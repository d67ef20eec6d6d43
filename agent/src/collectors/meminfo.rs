//! /proc/meminfo: every field as node_memory_<Field>[_bytes], named by
//! node_exporter's rules, so whatever fields this kernel has are exported.

use super::family::{Family, Kind};
use super::{Registration, Source, read};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors meminfo`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "meminfo",
    default: true,
    build: |a, _| Box::new(Meminfo::new(&a.procfs)),
    options: super::no_options,
};

/// One field: node_exporter's key (`Active_anon_bytes`) and its value
/// (bytes for kB fields, a plain count otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: String,
    pub value: f64,
}

/// Parses /proc/meminfo. Lines that do not parse are skipped rather than
/// failing the collector: one odd field must not hide all the others.
pub fn parse(text: &str) -> Result<Vec<Field>> {
    let fields: Vec<Field> = text.lines().filter_map(field).collect();
    if fields.is_empty() {
        bail!("no fields in /proc/meminfo");
    }
    Ok(fields)
}

/// node_exporter's naming: the trailing colon goes; a parenthesised part
/// becomes `_part` (`Active(anon)` -> `Active_anon`); fields with a unit
/// (always kB) are multiplied by 1024 and get `_bytes`; the HugePages_*
/// counts have no unit and no suffix.
fn field(line: &str) -> Option<Field> {
    let mut parts = line.split_ascii_whitespace();
    let name = parts.next()?.strip_suffix(':')?;
    let value: f64 = parts.next()?.parse().ok()?;
    let unit = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let mut key = unparenthesize(name);
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let value = match unit {
        None => value,
        Some(_) => {
            key.push_str("_bytes");
            value * 1024.0
        }
    };
    Some(Field { key, value })
}

/// `A(b)c` -> `A_bc`, from the first `(` to the last `)` like node_exporter's
/// greedy `\((.*)\)` -> `_$1`.
fn unparenthesize(name: &str) -> String {
    match (name.find('('), name.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            format!(
                "{}_{}{}",
                &name[..open],
                &name[open + 1..close],
                &name[close + 1..]
            )
        }
        _ => name.to_string(),
    }
}

pub fn families(fields: &[Field]) -> Vec<Family> {
    fields
        .iter()
        .map(|f| {
            Family::new(
                format!("node_memory_{}", f.key),
                format!("Memory information field {}.", f.key),
                Kind::Gauge,
            )
            .with(&[], f.value)
        })
        .collect()
}

#[derive(Debug)]
pub struct Meminfo {
    path: PathBuf,
}

impl Meminfo {
    pub fn new(procfs: &Path) -> Meminfo {
        Meminfo {
            path: procfs.join("meminfo"),
        }
    }
}

impl Source for Meminfo {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        out.extend(families(&parse(&read(&self.path)?)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fields: &[Field], key: &str) -> Option<f64> {
        fields.iter().find(|f| f.key == key).map(|f| f.value)
    }

    #[test]
    fn names_follow_node_exporter() {
        let f = parse(include_str!("fixtures/proc/meminfo")).unwrap();
        assert_eq!(f.len(), 54);
        assert_eq!(value(&f, "MemTotal_bytes"), Some(24682416.0 * 1024.0));
        assert_eq!(value(&f, "Active_anon_bytes"), Some(1012.0 * 1024.0));
        assert_eq!(value(&f, "Inactive_file_bytes"), Some(2868564.0 * 1024.0));
        assert_eq!(value(&f, "HugePages_Total"), Some(0.0));
        assert_eq!(value(&f, "Hugepagesize_bytes"), Some(2048.0 * 1024.0));
        assert_eq!(value(&f, "DirectMap1G_bytes"), Some(25165824.0 * 1024.0));
        let fam = families(&f);
        assert!(fam.iter().any(|f| f.name == "node_memory_Active_anon_bytes"
            && f.help == "Memory information field Active_anon_bytes."));
    }

    #[test]
    fn an_old_kernel_with_fewer_fields() {
        let f = parse(include_str!("fixtures/meminfo-2.6.32")).unwrap();
        assert_eq!(f.len(), 30);
        assert_eq!(value(&f, "MemAvailable_bytes"), None);
        assert_eq!(value(&f, "HugePages_Rsvd"), Some(0.0));
        assert_eq!(value(&f, "NFS_Unstable_bytes"), Some(0.0));
        assert_eq!(
            value(&f, "VmallocTotal_bytes"),
            Some(34359738367.0 * 1024.0)
        );
    }

    #[test]
    fn odd_lines_are_skipped_not_fatal() {
        let f = parse(
            "MemTotal: 10 kB\n\nBogus: x kB\nToo: 1 kB extra\nWeird-Name: 1 kB\nNested(a(b)): 2\n",
        )
        .unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(unparenthesize("Nested(a(b))"), "Nested_a(b)");
        assert!(parse("").is_err());
    }
}
