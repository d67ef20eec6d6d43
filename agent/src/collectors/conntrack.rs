//! Netfilter connection tracking: the table's fill and limit
//! (/proc/sys/net/netfilter/nf_conntrack_{count,max}) and the per-CPU event
//! counts of /proc/net/stat/nf_conntrack summed over CPUs, as node_exporter
//! 1.5's conntrack collector (gauges, as it types them). Without the
//! nf_conntrack module there is nothing to report, and that is no error.

use super::family::Family;
use super::{Registration, Source, number, read};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors conntrack`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "conntrack",
    default: true,
    build: |a, _| Box::new(Conntrack::new(&a.procfs)),
    options: super::no_options,
};

/// (column of /proc/net/stat/nf_conntrack, family, help).
const STATS: [(&str, &str, &str); 8] = [
    (
        "found",
        "node_nf_conntrack_stat_found",
        "Number of searched entries which were successful.",
    ),
    (
        "invalid",
        "node_nf_conntrack_stat_invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        "ignore",
        "node_nf_conntrack_stat_ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    (
        "insert",
        "node_nf_conntrack_stat_insert",
        "Number of entries inserted into the list.",
    ),
    (
        "insert_failed",
        "node_nf_conntrack_stat_insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        "drop",
        "node_nf_conntrack_stat_drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        "early_drop",
        "node_nf_conntrack_stat_early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        "node_nf_conntrack_stat_search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// Sums each of [`STATS`]' columns over the CPU lines (hexadecimal), finding
/// columns by the header's names. A column this kernel lacks reads None.
pub fn parse_stat(text: &str) -> Result<[Option<u64>; 8]> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("empty file")?
        .split_ascii_whitespace()
        .collect();
    if header.first() != Some(&"entries") {
        bail!("no `entries ...` header");
    }
    let index = STATS.map(|(col, _, _)| header.iter().position(|h| *h == col));
    let mut sums = index.map(|i| i.map(|_| 0u64));
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() != header.len() {
            bail!(
                "CPU line {}: {} columns, the header has {}",
                n + 1,
                fields.len(),
                header.len()
            );
        }
        for (sum, i) in sums.iter_mut().zip(index) {
            if let (Some(sum), Some(i)) = (sum.as_mut(), i) {
                let v = u64::from_str_radix(fields[i], 16).with_context(|| {
                    format!("CPU line {}: `{}` is not hexadecimal", n + 1, fields[i])
                })?;
                *sum = sum.wrapping_add(v);
            }
        }
    }
    Ok(sums)
}

#[derive(Debug)]
pub struct Conntrack {
    count: PathBuf,
    max: PathBuf,
    stat: PathBuf,
}

impl Conntrack {
    pub fn new(procfs: &Path) -> Conntrack {
        let netfilter = procfs.join("sys/net/netfilter");
        Conntrack {
            count: netfilter.join("nf_conntrack_count"),
            max: netfilter.join("nf_conntrack_max"),
            stat: procfs.join("net/stat/nf_conntrack"),
        }
    }
}

fn single(path: &Path) -> Result<f64> {
    let text = read(path)?;
    Ok(number(text.split_ascii_whitespace().next(), path.display())? as f64)
}

impl Source for Conntrack {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        if !self.count.exists() {
            return Ok(());
        }
        out.push(
            Family::gauge(
                "node_nf_conntrack_entries",
                "Number of currently allocated flow entries for connection tracking.",
            )
            .with(&[], single(&self.count)?),
        );
        out.push(
            Family::gauge(
                "node_nf_conntrack_entries_limit",
                "Maximum size of connection tracking table.",
            )
            .with(&[], single(&self.max)?),
        );
        if !self.stat.exists() {
            return Ok(());
        }
        let sums =
            parse_stat(&read(&self.stat)?).with_context(|| format!("{}", self.stat.display()))?;
        for ((_, name, help), sum) in STATS.iter().zip(sums) {
            if let Some(v) = sum {
                out.push(Family::gauge(name, help).with(&[], v as f64));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const STAT: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n0000001e  00000000 00000010 00000000 00000001 0000000a 00000000 00000000 00000003 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000002\n0000001e  00000000 00000001 00000000 00000000 00000005 00000000 00000000 00000004 00000001 00000002 00000003 00000000  00000000 00000000 00000000 00000000\n";

    #[test]
    fn sums_columns_over_cpus_by_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            [17, 1, 15, 7, 1, 2, 3, 2].map(Some),
            "found invalid ignore insert insert_failed drop early_drop search_restart"
        );
        // An older layout without search_restart.
        let s = parse_stat("entries found invalid\n1 2 3\n").unwrap();
        assert_eq!(s[0], Some(2));
        assert_eq!(s[7], None);
    }

    #[test]
    fn cut_and_foreign_files_are_errors() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("garbage\n").is_err());
        let e = parse_stat("entries found\n1\n").unwrap_err().to_string();
        assert!(e.contains("1 columns"), "{e}");
        assert!(parse_stat("entries found\n1 zz\n").is_err());
    }

    #[test]
    fn without_the_module_there_is_nothing_and_no_error() {
        let dir = crate::collectors::tests::temp_dir("conntrack");
        let c = Conntrack::new(&dir);
        let mut out = Vec::new();
        c.collect(&mut out).unwrap();
        assert!(out.is_empty());
        let nf = dir.join("sys/net/netfilter");
        std::fs::create_dir_all(&nf).unwrap();
        std::fs::create_dir_all(dir.join("net/stat")).unwrap();
        std::fs::write(nf.join("nf_conntrack_count"), "30\n").unwrap();
        std::fs::write(nf.join("nf_conntrack_max"), "262144\n").unwrap();
        std::fs::write(dir.join("net/stat/nf_conntrack"), STAT).unwrap();
        c.collect(&mut out).unwrap();
        let get = |n| find(&out, n).unwrap().samples[0].value;
        assert_eq!(get("node_nf_conntrack_entries"), 30.0);
        assert_eq!(get("node_nf_conntrack_entries_limit"), 262144.0);
        assert_eq!(get("node_nf_conntrack_stat_ignore"), 15.0);
        assert_eq!(out.len(), 10);
    }
}
