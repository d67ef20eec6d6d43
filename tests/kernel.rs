//! Whatever kernel this runs on (this machine's, or one of the matrix's under
//! qemu: xtask/src/matrix.rs), every probe attaches with `--strict`, and the
//! agent exports the kernel's release and the features the probes need
//! (agent/src/kernel_features.rs).

use tests::{Agent, Exposition};

const PROBES: [&str; 4] = ["syscalls", "tcp", "sched", "oom"];

fn feature(e: &Exposition, feature: &str) -> f64 {
    e.value("ebpf_agent_kernel_feature", &[("feature", feature)])
}

#[test]
fn every_probe_attaches_with_strict_and_the_kernel_is_described() {
    // The statistics name the programs each probe loaded.
    let agent = Agent::start(&["--strict", "--bpf-stats", "on"]);
    let e = agent.scrape();
    for probe in PROBES {
        assert_eq!(
            e.value("ebpf_agent_probe_attached", &[("probe", probe)]),
            1.0,
            "{probe}"
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(
        e.value("ebpf_agent_kernel_info", &[("release", release.trim())]),
        1.0
    );
    for f in ["btf", "tp_btf", "ringbuf", "bpf_stats", "cgroup_v2"] {
        assert_eq!(feature(&e, f), 1.0, "{f}");
    }
    let tracepoints: Vec<_> = e
        .matching("ebpf_agent_kernel_feature", &[])
        .filter(|s| s.labels["feature"].starts_with("tracepoint:"))
        .map(|s| (s.labels["feature"].as_str(), s.value))
        .collect();
    assert_eq!(tracepoints.len(), 17, "{tracepoints:?}");
    assert!(
        tracepoints.iter().all(|(_, v)| *v == 1.0),
        "{tracepoints:?}"
    );
    // 5.18 added sched_switch's prev_state; before, the probe reads the task.
    let (major, minor) = version(&release);
    assert_eq!(
        feature(&e, "sched_switch_prev_state"),
        f64::from((major, minor) >= (5, 18)),
        "{release}"
    );
    // Every kernel tested prints tcp records of a layout the eBPF object has
    // a program for, with direct loads (agent_common::tcp::known): none may
    // fall back to the generic program, named after its tracepoint.
    let tcp: Vec<_> = e
        .matching("ebpf_agent_probe_kernel_runs_total", &[("probe", "tcp")])
        .map(|s| s.labels["program"].as_str())
        .collect();
    for tp in ["tcp_retransmit_skb", "tcp_send_reset", "tcp_receive_reset"] {
        assert!(
            tcp.iter().any(|p| p.starts_with(tp) && *p != tp),
            "{tp}: {tcp:?}"
        );
    }
    agent.check_exposition_with_peers();
}

/// (major, minor) of a release such as "6.1.0-57-amd64".
fn version(release: &str) -> (u32, u32) {
    let mut parts = release.split(['.', '-']).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
