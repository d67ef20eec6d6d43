//! Least privilege: which capabilities loading the probes needs, a clear error
//! naming the missing ones, and dropping them all once the probes are attached.
//!
//! The kernel checks CAP_BPF and CAP_PERFMON when programs and maps are
//! created and attached, not when an open map, ring buffer or program fd is
//! used later (kernel >= 5.19; see [`bpf_needed_after_attach`]). So after
//! attach the agent runs with no capabilities: a compromised agent cannot
//! load programs or read kernel memory. See docs/kubernetes.md for the table.
//!
//! Node mode only: `agent attach` is an interactive tool whose view reads the
//! target's /proc/<pid>/io and fd, which the drop would close for root's and
//! other users' processes.

mod every_thread;

use anyhow::{Context, Result, bail};
use caps::{CapSet, Capability, CapsHashSet};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::path::Path;

/// One `--keep-capabilities` item: a capability name (`bpf`, `CAP_BPF`) or
/// `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep(Option<Capability>);

/// Clap value parser for `--keep-capabilities`.
pub fn parse_keep(s: &str) -> Result<Keep, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(Keep(None));
    }
    caps::to_canonical(s).parse().map(|c| Keep(Some(c))).map_err(|_| {
        format!("`{s}` is not a capability name; use names like bpf,perfmon (see capabilities(7)) or none")
    })
}

/// The capabilities to keep, from the flag's items (`none` keeps nothing).
fn kept(items: &[Keep]) -> CapsHashSet {
    items.iter().filter_map(|k| k.0).collect()
}

/// What loading and attaching the probes needs that the process lacks.
/// CAP_SYS_ADMIN alone also works (kernels before 5.8 have nothing finer).
/// A non-root user also needs CAP_DAC_READ_SEARCH for the TCP probe: it reads
/// tracepoint formats and ids from tracefs, which is root's and mode 0700.
pub fn missing(
    effective: &CapsHashSet,
    euid: u32,
    tracefs_readable: bool,
    tracefs: bool,
) -> Vec<Capability> {
    let mut missing = Vec::new();
    if !effective.contains(&Capability::CAP_SYS_ADMIN) {
        for cap in [Capability::CAP_BPF, Capability::CAP_PERFMON] {
            if !effective.contains(&cap) {
                missing.push(cap);
            }
        }
    }
    let dac = [
        Capability::CAP_DAC_READ_SEARCH,
        Capability::CAP_DAC_OVERRIDE,
    ];
    if tracefs && euid != 0 && !tracefs_readable && !dac.iter().any(|c| effective.contains(c)) {
        missing.push(Capability::CAP_DAC_READ_SEARCH);
    }
    missing
}

/// Fails early with one line naming exactly the missing capabilities, rather
/// than with EPERM from deep in aya. `tracefs_probes`: the chosen probes
/// that read tracefs (the table's `needs_tracefs`).
pub fn check(tracefs_probes: &[&str]) -> Result<()> {
    let effective = caps::read(None, CapSet::Effective).context("reading our capabilities")?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let tracefs_readable = crate::tracefs::CANDIDATES
        .iter()
        .any(|root| Path::new(root).join("events").is_dir());
    let missing = missing(
        &effective,
        euid,
        tracefs_readable,
        !tracefs_probes.is_empty(),
    );
    if missing.is_empty() {
        return Ok(());
    }
    // In the order of `missing`: what every probe needs first.
    let list = missing
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dac_hint = match missing.contains(&Capability::CAP_DAC_READ_SEARCH) {
        true => {
            let names = tracefs_probes.join(", ");
            format!(
                " (CAP_DAC_READ_SEARCH because a non-root user cannot read tracefs, which the \
                 {names} probe needs; or leave {names} out of --probes)"
            )
        }
        false => String::new(),
    };
    bail!(
        "the agent lacks capabilities it needs to load its eBPF probes: {list}{dac_hint}; run it \
         as root (sudo), or grant these (docs/kubernetes.md says why each); effective \
         capabilities now: {}",
        or_none(&effective)
    )
}

/// Sorted, comma-separated capability names.
fn names(caps: impl Iterator<Item = Capability>) -> String {
    let mut v: Vec<Capability> = caps.collect();
    v.sort_by_key(|c| c.index());
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Before 5.19, with `kernel.unprivileged_bpf_disabled` set (the usual
/// default), every bpf() command needed CAP_BPF, even reading a map the
/// process already holds; 5.19 limited that to creating maps and programs.
pub fn bpf_needed_after_attach(release: &str, unprivileged_bpf_disabled: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version < (5, 19) && unprivileged_bpf_disabled.trim() != "0"
}

/// Drops every capability not in `keep` from the effective, permitted,
/// inheritable and ambient sets (and the bounding set, when CAP_SETPCAP
/// allows), and sets no_new_privs so nothing executed later regains any.
/// Call it once every probe is attached. `traced`: the /proc directory of the
/// `--pid` process, whose metrics may need capabilities to read (see
/// [`warn_if_unreadable`]).
pub fn drop_after_attach(keep: &[Keep], traced: Option<&Path>) -> Result<()> {
    let mut kept = kept(keep);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let unpriv = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .unwrap_or_else(|_| "1".into());
    if bpf_needed_after_attach(&release, &unpriv) && kept.insert(Capability::CAP_BPF) {
        tracing::warn!(
            kernel = release.trim(),
            "keeping CAP_BPF: before Linux 5.19 reading the probes' maps needs it while \
             kernel.unprivileged_bpf_disabled is set"
        );
    }
    let permitted = caps::read(None, CapSet::Permitted).context("reading our capabilities")?;
    let keep_now: CapsHashSet = permitted.intersection(&kept).copied().collect();
    let mask = keep_now.iter().map(|c| c.bitmask()).sum();
    every_thread::drop_to(mask)?;
    let dropped: CapsHashSet = permitted.difference(&keep_now).copied().collect();
    tracing::info!(
        dropped = %or_none(&dropped),
        kept = %or_none(&keep_now),
        "probes attached: dropped capabilities on every thread, no_new_privs set"
    );
    if let Some(dir) = traced {
        warn_if_unreadable(dir);
    }
    Ok(())
}

/// Without capabilities, the kernel's ptrace access check guards a traced
/// process's /proc/<pid>/io (when the process is another user's, or holds
/// capabilities the agent no longer has, as any root process does) and
/// /proc/<pid>/fd (another user's). Say once what is lost and how to keep it.
fn warn_if_unreadable(dir: &Path) {
    let io = std::fs::read_to_string(dir.join("io")).is_ok();
    let fd = std::fs::read_dir(dir.join("fd")).is_ok();
    if !(io && fd) {
        tracing::warn!(
            process = %dir.display(),
            "without capabilities the agent cannot read the traced process's {}: its \
             process_read/write_bytes or process_open_fds are left out; to keep them, run with \
             --keep-capabilities sys_ptrace,dac_read_search",
            match (io, fd) {
                (false, false) => "io and fd",
                (false, true) => "io",
                _ => "fd",
            }
        );
    }
}

/// A capability mask line (`CapEff:\t000001ff...`) of /proc/<pid>/status.
pub fn status_caps(status: &str, key: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix(key))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn or_none(set: &CapsHashSet) -> String {
    match set.is_empty() {
        true => "none".into(),
        false => names(set.iter().copied()),
    }
}

/// `ebpf_agent_capabilities_effective`: read at each scrape, so an SRE sees
/// the drop happened (0 after attach with the default `--keep-capabilities none`).
pub fn registry() -> Registry {
    let mut r = Registry::with_prefix(crate::PREFIX);
    r.register_collector(Box::new(CapabilityCollector));
    r
}

#[derive(Debug)]
struct CapabilityCollector;

impl Collector for CapabilityCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        // capget on ourselves cannot fail short of a kernel without it; then
        // the gauge is left out rather than made up.
        let Ok(effective) = caps::read(None, CapSet::Effective) else {
            return Ok(());
        };
        enc.encode_descriptor(
            "capabilities_effective",
            "Number of Linux capabilities the agent holds in its effective set (0 once dropped after attach)",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(effective.len() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
    }

    #[test]
    fn keep_names_parse_case_insensitively_with_or_without_prefix() {
        assert_eq!(parse_keep("bpf"), Ok(Keep(Some(CAP_BPF))));
        assert_eq!(parse_keep("CAP_PERFMON"), Ok(Keep(Some(CAP_PERFMON))));
        assert_eq!(
            parse_keep("cap_dac_read_search"),
            Ok(Keep(Some(CAP_DAC_READ_SEARCH)))
        );
        assert_eq!(parse_keep("None"), Ok(Keep(None)));
        let err = parse_keep("bfp").unwrap_err();
        assert!(err.contains("`bfp` is not a capability name"), "{err}");
        assert_eq!(kept(&[Keep(None)]), set(&[]));
        assert_eq!(kept(&[Keep(Some(CAP_BPF)), Keep(None)]), set(&[CAP_BPF]));
    }

    #[test]
    fn missing_lists_exactly_what_loading_needs() {
        assert_eq!(missing(&set(&[]), 0, true, true), [CAP_BPF, CAP_PERFMON]);
        assert_eq!(missing(&set(&[CAP_BPF]), 0, true, true), [CAP_PERFMON]);
        assert!(missing(&set(&[CAP_BPF, CAP_PERFMON]), 0, false, true).is_empty());
        assert!(missing(&set(&[CAP_SYS_ADMIN]), 0, false, true).is_empty());
        // A non-root user cannot read root's 0700 tracefs without DAC_READ_SEARCH.
        assert_eq!(
            missing(&set(&[]), 65534, false, true),
            [CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH]
        );
        assert_eq!(
            missing(&set(&[CAP_BPF, CAP_PERFMON]), 65534, false, true),
            [CAP_DAC_READ_SEARCH]
        );
        assert!(missing(&set(&[CAP_BPF, CAP_PERFMON]), 65534, false, false).is_empty());
        assert!(missing(&set(&[CAP_BPF, CAP_PERFMON]), 65534, true, true).is_empty());
        let all = set(&[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH]);
        assert!(missing(&all, 65534, false, true).is_empty());
    }

    #[test]
    fn bpf_is_kept_only_on_old_kernels_with_unprivileged_bpf_disabled() {
        assert!(bpf_needed_after_attach("5.10.0-28-amd64\n", "2\n"));
        assert!(bpf_needed_after_attach("5.18.19", "1"));
        assert!(!bpf_needed_after_attach("5.10.0", "0\n"));
        assert!(!bpf_needed_after_attach("5.19.0", "2"));
        assert!(!bpf_needed_after_attach("6.18.3-cloud", "2\n"));
        assert!(!bpf_needed_after_attach("6.1.0-13-amd64", "2"));
    }

    #[test]
    fn reads_capability_masks_from_status() {
        let status = "Name:\tagent\nCapInh:\t0000000000000000\nCapPrm:\t000000c000000000\n";
        assert_eq!(status_caps(status, "CapPrm:"), Some(0xc0_0000_0000));
        assert_eq!(status_caps(status, "CapInh:"), Some(0));
        assert_eq!(status_caps(status, "CapEff:"), None);
        assert_eq!(status_caps("CapEff:\tzz\n", "CapEff:"), None);
    }
}
