//! /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6: the kernel's
//! protocol counters as node_netstat_<Protocol>_<Field>, for the fields
//! matching --netstat-fields (node_exporter's default: errors, octets, TCP
//! opens/segments/resets/retransmits, listen drops, syncookies, UDP
//! datagrams). Untyped, as node_exporter exports them: the files mix
//! counters with gauges (Tcp CurrEstab) and settings (Ip Forwarding).

use super::family::{Family, Kind};
use super::{Registration, Source, read};
use anyhow::{Context, Result, bail};
use regex::Regex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `--collectors netstat`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "netstat",
    default: true,
    build: |a, _| Box::new(Netstat::new(&a.procfs, a.options.netstat_fields.clone())),
    options: |o| o.netstat_fields.as_str().to_string(),
};

/// One statistic: protocol (`TcpExt`, `Ip6`), field (`ListenDrops`), value
/// as written. Borrowed, and the value parsed only if the field is
/// exported: most of the ~350 fields are not, and this runs every scrape.
pub type Stat<'a> = (&'a str, &'a str, &'a str);

/// netstat and snmp: pairs of lines, `Proto: Name1 Name2` then `Proto: 1 2`.
pub fn parse_pairs<'a>(text: &'a str, out: &mut Vec<Stat<'a>>) -> Result<()> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else {
            bail!("`{names}` has no line of values");
        };
        let (proto, names) = names.split_once(':').context("no `Protocol:` prefix")?;
        let (vproto, values) = values.split_once(':').context("no `Protocol:` prefix")?;
        if proto != vproto {
            bail!("names of {proto} are followed by values of {vproto}");
        }
        let names: Vec<&str> = names.split_ascii_whitespace().collect();
        let values: Vec<&str> = values.split_ascii_whitespace().collect();
        if names.len() != values.len() {
            bail!(
                "{proto}: {} names but {} values (truncated file?)",
                names.len(),
                values.len()
            );
        }
        out.extend(names.into_iter().zip(values).map(|(n, v)| (proto, n, v)));
    }
    Ok(())
}

/// snmp6: one `Ip6InReceives  275` per line; the protocol ends at its "6".
pub fn parse_snmp6<'a>(text: &'a str, out: &mut Vec<Stat<'a>>) -> Result<()> {
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(six) = key.find('6') else { continue };
        let (proto, name) = key.split_at(six + 1);
        out.push((proto, name, value));
    }
    Ok(())
}

fn value_of(proto: &str, name: &str, value: &str) -> Result<f64> {
    value
        .parse::<i64>()
        .map(|v| v as f64)
        .or_else(|_| value.parse::<u64>().map(|v| v as f64))
        .with_context(|| format!("{proto} {name}: `{value}` is not a number"))
}

#[cfg(test)]
pub fn families(stats: &[Stat], fields: &Regex) -> Result<Vec<Family>> {
    families_with(stats, &mut |key| fields.is_match(key))
}

/// `families`, asking `wanted` about each `Protocol_Field`.
fn families_with(stats: &[Stat], wanted: &mut dyn FnMut(&str) -> bool) -> Result<Vec<Family>> {
    let mut out = Vec::new();
    let mut key = String::new();
    for &(proto, name, value) in stats {
        key.clear();
        key.push_str(proto);
        key.push('_');
        key.push_str(name);
        if wanted(&key) {
            out.push(
                Family::new(
                    format!("node_netstat_{key}"),
                    format!("Statistic {proto}{name}."),
                    Kind::Untyped,
                )
                .with(&[], value_of(proto, name, value)?),
            );
        }
    }
    Ok(out)
}

/// Most kernels have ~350 fields and the same ones every scrape: the
/// regex's answer for each is remembered (a hash lookup costs less than the
/// match). Bounded, in case a kernel invents names.
const REMEMBERED: usize = 4096;

#[derive(Debug)]
pub struct Netstat {
    net: PathBuf,
    fields: Regex,
    decisions: Mutex<HashMap<String, bool>>,
}

impl Netstat {
    pub fn new(procfs: &Path, fields: Regex) -> Netstat {
        Netstat {
            net: procfs.join("net"),
            fields,
            decisions: Mutex::new(HashMap::new()),
        }
    }
}

impl Source for Netstat {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let netstat = read(&self.net.join("netstat"))?;
        let snmp = read(&self.net.join("snmp"))?;
        // No snmp6 when IPv6 is off (ipv6.disable=1): only v4 then.
        let snmp6 = self.net.join("snmp6");
        let snmp6 = match snmp6.exists() {
            true => read(&snmp6)?,
            false => String::new(),
        };
        let mut stats = Vec::with_capacity(512);
        parse_pairs(&netstat, &mut stats)?;
        parse_pairs(&snmp, &mut stats)?;
        parse_snmp6(&snmp6, &mut stats)?;
        let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if decisions.len() > REMEMBERED {
            decisions.clear();
        }
        let mut wanted = |key: &str| match decisions.get(key) {
            Some(&yes) => yes,
            None => {
                let yes = self.fields.is_match(key);
                decisions.insert(key.to_string(), yes);
                yes
            }
        };
        out.extend(families_with(&stats, &mut wanted)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::NETSTAT_FIELDS;
    use crate::collectors::family::find;

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives InHdrErrors\nIp: 2 64 5439916 3\nTcp: RtoAlgorithm MaxConn ActiveOpens CurrEstab InErrs\nTcp: 1 -1 522234 2 7\n";
    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts TW\nTcpExt: 0 5 6 48 87362\nIpExt: InNoRoutes InOctets OutOctets\nIpExt: 0 3615941331 18446744073709551615\n";
    const SNMP6: &str = "Ip6InReceives                   \t275\nIp6InOctets 20776\nIcmp6InMsgs 6\nUdpLite6InErrors 0\nIcmp6InType134 2\n";

    fn all() -> Vec<Stat<'static>> {
        let mut s = Vec::new();
        parse_pairs(NETSTAT, &mut s).unwrap();
        parse_pairs(SNMP, &mut s).unwrap();
        parse_snmp6(SNMP6, &mut s).unwrap();
        s
    }

    #[test]
    fn the_default_fields_are_node_exporters() {
        let re = Regex::new(NETSTAT_FIELDS).unwrap();
        let f = families(&all(), &re).unwrap();
        let names: Vec<_> = f.iter().map(|f| f.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "node_netstat_TcpExt_SyncookiesSent",
                "node_netstat_TcpExt_ListenOverflows",
                "node_netstat_TcpExt_ListenDrops",
                "node_netstat_TcpExt_TCPTimeouts",
                "node_netstat_IpExt_InOctets",
                "node_netstat_IpExt_OutOctets",
                "node_netstat_Ip_Forwarding",
                "node_netstat_Tcp_ActiveOpens",
                "node_netstat_Tcp_CurrEstab",
                "node_netstat_Tcp_InErrs",
                "node_netstat_Ip6_InOctets",
                "node_netstat_Icmp6_InMsgs",
                "node_netstat_UdpLite6_InErrors",
            ]
        );
        let octets = find(&f, "node_netstat_IpExt_InOctets").unwrap();
        assert_eq!(octets.help, "Statistic IpExtInOctets.");
        assert_eq!(octets.kind, Kind::Untyped);
        assert_eq!(octets.samples[0].value, 3615941331.0);
        let out = find(&f, "node_netstat_IpExt_OutOctets").unwrap();
        assert_eq!(out.samples[0].value, u64::MAX as f64);
        // Not in the default set: Ip InHdrErrors, Tcp MaxConn.
        let all = families(&all(), &Regex::new(".*").unwrap()).unwrap();
        let maxconn = find(&all, "node_netstat_Tcp_MaxConn").unwrap();
        assert_eq!(maxconn.samples[0].value, -1.0);
    }

    #[test]
    fn remembered_decisions_give_the_same_families() {
        let procfs = crate::collectors::tests::temp_dir("netstat");
        std::fs::create_dir_all(procfs.join("net")).unwrap();
        std::fs::write(procfs.join("net/netstat"), NETSTAT).unwrap();
        std::fs::write(procfs.join("net/snmp"), SNMP).unwrap();
        let n = Netstat::new(&procfs, Regex::new(NETSTAT_FIELDS).unwrap());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        n.collect(&mut first).unwrap();
        n.collect(&mut second).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 10, "no snmp6 (IPv6 off): v4 only");
        assert_eq!(
            first,
            families(&all()[..17], &Regex::new(NETSTAT_FIELDS).unwrap()).unwrap()
        );
    }

    #[test]
    fn truncated_and_odd_files_are_errors() {
        let mut s = Vec::new();
        let e = parse_pairs("Tcp: A B C\nTcp: 1 2\n", &mut s).unwrap_err();
        assert!(e.to_string().contains("3 names but 2 values"), "{e}");
        assert!(parse_pairs("Tcp: A B\n", &mut s).is_err());
        assert!(parse_pairs("Tcp: A\nUdp: 1\n", &mut s).is_err());
        // A bad value is an error when its field is exported.
        let mut bad = Vec::new();
        parse_pairs("Tcp: ActiveOpens\nTcp: x\n", &mut bad).unwrap();
        parse_snmp6("Ip6InOctets y\n", &mut bad).unwrap();
        let re = Regex::new(NETSTAT_FIELDS).unwrap();
        let e = families(&bad[..1], &re).unwrap_err().to_string();
        assert!(e.contains("Tcp ActiveOpens: `x` is not a number"), "{e}");
        assert!(families(&bad[1..], &re).is_err());
        // Empty files and lines without a value are nothing, not errors.
        s.clear();
        parse_pairs("", &mut s).unwrap();
        parse_snmp6("\nIp6Lonely\nNoSixHere 5\n", &mut s).unwrap();
        assert!(s.is_empty());
    }
}
