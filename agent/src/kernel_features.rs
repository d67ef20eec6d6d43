//! What the running kernel offers the probes, exported so that a user sees why
//! a probe did not attach without reading logs: `kernel_info{release}` and
//! `kernel_feature{feature}` 0/1. Probed once, when the registry is built.

use crate::btf::KernelBtf;
use aya::maps::MapType;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::path::Path;

/// Every tracepoint a probe (or `--children`) attaches to, as category:name.
pub(crate) const TRACEPOINTS: [(&str, &str); 17] = [
    ("raw_syscalls", "sys_enter"),
    ("raw_syscalls", "sys_exit"),
    ("sock", "inet_sock_set_state"),
    ("sched", "sched_wakeup"),
    ("sched", "sched_wakeup_new"),
    ("sched", "sched_switch"),
    ("sched", "sched_process_fork"),
    ("oom", "mark_victim"),
    ("sched", "sched_process_exec"),
    ("sched", "sched_process_exit"),
    ("tcp", "tcp_retransmit_skb"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset"),
    ("block", "block_rq_insert"),
    ("block", "block_rq_issue"),
    ("block", "block_rq_complete"),
    ("block", "block_rq_merge"),
];

#[derive(Debug)]
pub(crate) struct KernelFeatures {
    release: String,
    /// (feature label, present); a feature whose probe failed is left out.
    features: Vec<(String, bool)>,
}

impl KernelFeatures {
    pub(crate) fn probe(procfs: &Path) -> KernelFeatures {
        let release = std::fs::read_to_string(procfs.join("sys/kernel/osrelease"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mut features = Vec::new();
        let btf = KernelBtf::read();
        features.push(("btf".to_string(), btf.is_ok()));
        let mut supported = |feature: &str, r: Result<bool, String>| match r {
            Ok(yes) => features.push((feature.to_string(), yes)),
            Err(e) => tracing::debug!("cannot tell whether the kernel has {feature}: {e}"),
        };
        supported(
            "ringbuf",
            aya::sys::is_map_supported(MapType::RingBuf).map_err(|e| e.to_string()),
        );
        supported(
            "bpf_stats",
            Ok(procfs.join("sys/kernel/bpf_stats_enabled").exists()),
        );
        supported("cgroup_v2", Ok(cgroup2_mounted(procfs)));
        // aya's probe for tracing programs tries fentry, which a kernel may
        // refuse while it loads tp_btf: ask the probe that loads them.
        if let Some(loaded) = crate::probes::tp_btf_loaded() {
            features.push(("tp_btf".to_string(), loaded));
        }
        if let Ok(btf) = &btf {
            // A tracepoint's BTF typedef is there exactly when the kernel has
            // the tracepoint (and tells its arguments): no tracefs needed.
            match btf.typedefs(&TRACEPOINTS.map(|(_, name)| format!("btf_trace_{name}"))) {
                Ok(found) => {
                    for ((cat, name), yes) in TRACEPOINTS.iter().zip(found) {
                        features.push((format!("tracepoint:{cat}:{name}"), yes));
                    }
                }
                Err(e) => tracing::debug!("cannot list the kernel's tracepoints: {e:#}"),
            }
            let prev_state = btf.tracepoint_args("sched_switch").is_ok_and(|n| n >= 4);
            features.push(("sched_switch_prev_state".to_string(), prev_state));
        }
        KernelFeatures { release, features }
    }
}

/// A cgroup v2 hierarchy is mounted (unified, or hybrid's `unified`).
fn cgroup2_mounted(procfs: &Path) -> bool {
    std::fs::read_to_string(procfs.join("self/mounts"))
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(2) == Some("cgroup2")))
}

/// The families in a registry of their own (with the agent's prefix).
pub(crate) fn registry(features: KernelFeatures) -> Registry {
    let mut r = Registry::with_prefix(crate::PREFIX);
    r.register_collector(Box::new(features));
    r
}

impl Collector for KernelFeatures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut m = enc.encode_descriptor(
            "kernel_info",
            "The running kernel's release (value 1)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&[("release", self.release.as_str())])?
            .encode_gauge(&1i64)?;
        let mut m = enc.encode_descriptor(
            "kernel_feature",
            "Whether the running kernel has what a probe may need (1) or not (0), probed at start",
            None,
            MetricType::Gauge,
        )?;
        for (feature, yes) in &self.features {
            m.encode_family(&[("feature", feature.as_str())])?
                .encode_gauge(&i64::from(*yes))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine (6.18) has everything; docs/metrics.md explains every
    /// feature label the agent exports.
    #[test]
    fn this_kernel_has_every_feature_and_each_is_documented() {
        let f = KernelFeatures::probe(Path::new("/proc"));
        assert!(
            f.release.starts_with(|c: char| c.is_ascii_digit()),
            "{}",
            f.release
        );
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
                .unwrap();
        // tp_btf is the run-queue probe's to tell (tests/kernel.rs checks it).
        assert_eq!(f.features.len(), 5 + TRACEPOINTS.len(), "{:?}", f.features);
        let tp_btf = ("tp_btf".to_string(), true);
        for (feature, yes) in f.features.iter().chain([&tp_btf]) {
            assert!(yes, "this kernel lacks {feature}");
            let documented = match feature.strip_prefix("tracepoint:") {
                Some(_) => "- **`tracepoint:<category>:<name>`**".to_string(),
                None => format!("- **`{feature}`**"),
            };
            assert!(
                doc.contains(&documented),
                "docs/metrics.md lacks {documented}"
            );
        }
    }
}
