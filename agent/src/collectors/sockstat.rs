//! /proc/net/sockstat and /proc/net/sockstat6: sockets in use per protocol,
//! as node_exporter's sockstat collector (node_sockstat_<PROTO>_<field>,
//! plus `_mem_bytes` for the fields counted in pages). A kernel without
//! IPv6 has no sockstat6: that is not an error.

use super::family::{Family, Kind};
use super::{Registration, Source, read};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `--collectors sockstat`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "sockstat",
    default: true,
    build: |a, _| Box::new(Sockstat::new(&a.procfs)),
    options: super::no_options,
};

/// One `PROTO: field value ...` pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub proto: String,
    pub field: String,
    pub value: u64,
}

/// Parses either file. `sockets: used N` is kept as proto `sockets`.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        if !fields.len().is_multiple_of(2) {
            anyhow::bail!("{proto}: a field without a value (truncated line?)");
        }
        for pair in fields.chunks(2) {
            let value = pair[1]
                .parse()
                .with_context(|| format!("{proto} {}: `{}` is not a number", pair[0], pair[1]))?;
            out.push(Entry {
                proto: proto.trim().to_string(),
                field: pair[0].to_string(),
                value,
            });
        }
    }
    Ok(out)
}

pub fn families(entries: &[Entry], page_size: u64) -> Vec<Family> {
    let mut out = Vec::new();
    let gauge = |name: String, help: String, value: u64| {
        Family::new(name, help, Kind::Gauge).with(&[], value as f64)
    };
    for e in entries {
        if e.proto == "sockets" {
            if e.field == "used" {
                out.push(gauge(
                    "node_sockstat_sockets_used".into(),
                    "Number of IPv4 sockets in use.".into(),
                    e.value,
                ));
            }
            continue;
        }
        let (p, f) = (&e.proto, &e.field);
        out.push(gauge(
            format!("node_sockstat_{p}_{f}"),
            format!("Number of {p} sockets in state {f}."),
            e.value,
        ));
        // `mem` is in pages (`memory`, of FRAG, is already bytes).
        if f == "mem" {
            out.push(gauge(
                format!("node_sockstat_{p}_mem_bytes"),
                format!("Number of {p} sockets in state mem_bytes."),
                e.value.saturating_mul(page_size),
            ));
        }
    }
    out
}

#[derive(Debug)]
pub struct Sockstat {
    files: [PathBuf; 2],
    page_size: u64,
}

impl Sockstat {
    pub fn new(procfs: &Path) -> Sockstat {
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        Sockstat {
            files: [procfs.join("net/sockstat"), procfs.join("net/sockstat6")],
            page_size,
        }
    }
}

impl Source for Sockstat {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mut entries = Vec::new();
        for path in &self.files {
            if path.exists() {
                entries.extend(parse(&read(path)?)?);
            }
        }
        out.extend(families(&entries, self.page_size));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    const V4: &str = "sockets: used 24\nTCP: inuse 2 orphan 0 tw 3 alloc 2 mem 147\nUDP: inuse 1 mem 4\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 512\n";
    const V6: &str =
        "TCP6: inuse 5\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n";

    #[test]
    fn v4_and_v6_with_node_exporter_names() {
        let mut e = parse(V4).unwrap();
        e.extend(parse(V6).unwrap());
        let f = families(&e, 4096);
        let value = |n: &str| find(&f, n).unwrap_or_else(|| panic!("{n}")).samples[0].value;
        assert_eq!(value("node_sockstat_sockets_used"), 24.0);
        assert_eq!(value("node_sockstat_TCP_tw"), 3.0);
        assert_eq!(value("node_sockstat_TCP_mem"), 147.0);
        assert_eq!(value("node_sockstat_TCP_mem_bytes"), 147.0 * 4096.0);
        assert_eq!(value("node_sockstat_UDP_mem_bytes"), 4.0 * 4096.0);
        assert_eq!(value("node_sockstat_FRAG_memory"), 512.0);
        assert!(find(&f, "node_sockstat_FRAG_memory_bytes").is_none());
        assert_eq!(value("node_sockstat_TCP6_inuse"), 5.0);
        assert_eq!(
            find(&f, "node_sockstat_TCP_alloc").unwrap().help,
            "Number of TCP sockets in state alloc."
        );
        assert_eq!(f.len(), 20);
    }

    #[test]
    fn truncated_lines_are_errors() {
        assert!(parse("TCP: inuse 2 orphan\n").is_err());
        assert!(parse("TCP: inuse x\n").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn a_kernel_without_ipv6_has_only_v4() {
        let dir = crate::collectors::tests::temp_dir("sockstat");
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("net/sockstat"), V4).unwrap();
        let mut out = Vec::new();
        Sockstat::new(&dir).collect(&mut out).unwrap();
        assert!(find(&out, "node_sockstat_TCP_inuse").is_some());
        assert!(find(&out, "node_sockstat_TCP6_inuse").is_none());
    }
}
