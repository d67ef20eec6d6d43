//! Least privilege end to end (agent/src/privileges.rs): the agent loads all
//! three probes with exactly the documented capabilities, as root with a
//! reduced set and as an unprivileged user with ambient capabilities, then
//! drops every capability on every thread and keeps counting exactly.
//! `setpriv` (util-linux) sets up each process, as a container runtime would.

use std::process::Command;
use std::time::Duration;
use tests::{Agent, Workload, agent_bin, require_root};

const CAP_BPF: u64 = 1 << 39;

/// uid 0, but only CAP_BPF and CAP_PERFMON can ever be held (bounding set),
/// and none inherited: what the Kubernetes DaemonSet asks for.
const ROOT_BPF_PERFMON: &[&str] = &[
    "setpriv",
    "--bounding-set=-all,+bpf,+perfmon",
    "--inh-caps=-all",
];

/// uid/gid 65534 with the three capabilities a non-root user needs, ambient so
/// they survive the exec.
const NOBODY_WITH_CAPS: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--bounding-set=-all,+bpf,+perfmon,+dac_read_search",
    "--inh-caps=-all,+bpf,+perfmon,+dac_read_search",
    "--ambient-caps=-all,+bpf,+perfmon,+dac_read_search",
];

/// One capability mask (`CapEff:`, `CapPrm:`, ...) of every thread of `pid`.
fn thread_caps(pid: u32, key: &str) -> Vec<(String, u64)> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for task in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let task = task.unwrap();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {}", task.path().display()));
        let mask = u64::from_str_radix(hex.trim(), 16).unwrap();
        out.push((task.file_name().to_string_lossy().into_owned(), mask));
    }
    assert!(out.len() > 1, "expected several threads, got {out:?}");
    out
}

/// Every thread of the agent holds exactly `mask` in each set named.
fn assert_all_threads_hold(agent: &Agent, keys: &[&str], mask: u64) {
    for key in keys {
        for (tid, got) in thread_caps(agent.pid(), key) {
            assert_eq!(
                got,
                mask,
                "thread {tid} {key} {got:#x}, expected {mask:#x}; agent stderr:\n{}",
                agent.stderr()
            );
        }
    }
}

/// Starts the agent under `prefix` tracing a workload, checks the drop, then
/// checks the syscall probe still counts the workload's calls exactly: its
/// partial batches reach userspace only through the flusher's
/// BPF_PROG_TEST_RUN, which must keep working with no capabilities.
/// `unreadable`: what of the (root) workload's /proc the agent can no longer
/// read once its capabilities are gone, as its warning says.
fn attaches_drops_and_counts_exactly(prefix: &[&str], unreadable: &str) {
    // What is asserted of the cost families needs the node's BPF statistics
    // off, as on a fresh machine (a benchmark may have left them on).
    let _stats = tests::sysctl::BpfStats::set(false).expect("kernel.bpf_stats_enabled");
    const N: u64 = 20_000;
    const M: u64 = 1_234; // not a multiple of the 128-record batch
    let w = Workload::start(&["syscalls", &N.to_string(), &M.to_string()]);
    let agent = Agent::start_under(
        prefix,
        &[
            "--pid",
            &w.pid(),
            "--probes",
            "syscalls,tcp,sched",
            "--bpf-stats",
            "on",
        ],
    );
    // /readyz answers only once the drop is done.
    assert_all_threads_hold(&agent, &["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"], 0);
    for (tid, _) in thread_caps(agent.pid(), "CapEff:") {
        let status =
            std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", agent.pid())).unwrap();
        assert!(
            status.contains("NoNewPrivs:\t1"),
            "thread {tid} lacks no_new_privs"
        );
    }
    assert!(
        agent
            .stderr()
            .contains("dropped capabilities on every thread"),
        "{}",
        agent.stderr()
    );
    assert!(
        agent
            .stderr()
            .contains(&format!("cannot read the traced process's {unreadable}:")),
        "{}",
        agent.stderr()
    );
    w.go();
    let getppid = [("syscall", "getppid")];
    let fchdir = [("syscall", "fchdir")];
    let e = agent.scrape_until(Duration::from_secs(10), |e| {
        e.value("ebpf_agent_syscalls_total", &getppid) >= N as f64
            && e.value("ebpf_agent_syscalls_total", &fchdir) >= M as f64
    });
    assert_eq!(e.value("ebpf_agent_syscalls_total", &getppid), N as f64);
    assert_eq!(e.value("ebpf_agent_syscalls_total", &fchdir), M as f64);
    assert_eq!(
        e.value(
            "ebpf_agent_syscall_errors_total",
            &[("syscall", "fchdir"), ("errno", "EBADF")]
        ),
        M as f64
    );
    for probe in ["syscalls", "tcp", "sched"] {
        assert_eq!(
            e.get("ebpf_agent_probe_attached", &[("probe", probe)]),
            Some(1.0),
            "probe {probe}; agent stderr:\n{}",
            agent.stderr()
        );
    }
    assert_eq!(e.get("ebpf_agent_capabilities_effective", &[]), Some(0.0));
    // Without CAP_SYS_ADMIN the kernel's BPF statistics cannot be turned on:
    // the cost families are absent and one line says why; nothing fails.
    assert!(
        e.matching("ebpf_agent_probe_kernel_runs_total", &[])
            .next()
            .is_none()
    );
    assert!(
        agent
            .stderr()
            .contains("enabling BPF run-time statistics failed"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn root_with_only_bpf_and_perfmon_attaches_everything_then_holds_nothing() {
    // A root process holds capabilities the agent dropped: ptrace rules guard its io.
    attaches_drops_and_counts_exactly(ROOT_BPF_PERFMON, "io");
}

#[test]
fn nobody_with_ambient_bpf_perfmon_dac_read_search_attaches_everything_then_holds_nothing() {
    // Another user's process: its fd directory is closed to us too.
    attaches_drops_and_counts_exactly(NOBODY_WITH_CAPS, "io and fd");
}

#[test]
fn keep_capabilities_keeps_exactly_those() {
    let agent = Agent::start_under(ROOT_BPF_PERFMON, &["--keep-capabilities", "bpf"]);
    assert_all_threads_hold(&agent, &["CapEff:", "CapPrm:"], CAP_BPF);
    assert_all_threads_hold(&agent, &["CapInh:", "CapAmb:"], 0);
    let e = agent.scrape();
    assert_eq!(e.get("ebpf_agent_capabilities_effective", &[]), Some(1.0));
}

/// Runs the agent under `prefix` to its exit (10 s limit): (exit code, stderr).
fn failed_run(prefix: &[&str], probes: &str) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .arg("10")
        .args(prefix)
        .arg(agent_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--probes", probes])
        .output()
        .expect("timeout (coreutils) and setpriv (util-linux) run the agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_capabilities_are_named_in_one_line() {
    require_root();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let nobody_none = [&nobody[..], &["--inh-caps=-all"]].concat();
    let nobody_bpf_perfmon = [
        &nobody[..],
        &[
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=-all,+bpf,+perfmon",
        ],
    ]
    .concat();
    let root_bpf = ["setpriv", "--bounding-set=-all,+bpf", "--inh-caps=-all"];
    for (prefix, probes, names) in [
        (
            &nobody_none[..],
            "syscalls,tcp,sched",
            "CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH (",
        ),
        // Without the tcp probe, tracefs is not needed.
        (&nobody_none[..], "syscalls,sched", "CAP_BPF, CAP_PERFMON;"),
        (
            &nobody_bpf_perfmon[..],
            "syscalls,tcp,sched",
            "probes: CAP_DAC_READ_SEARCH (",
        ),
        (&root_bpf[..], "syscalls,tcp,sched", "probes: CAP_PERFMON;"),
    ] {
        let (code, stderr) = failed_run(prefix, probes);
        assert_eq!(code, Some(1), "{prefix:?} {probes}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line, got:\n{stderr}");
        assert!(
            stderr.starts_with("agent: error: the agent lacks capabilities"),
            "{stderr}"
        );
        assert!(stderr.contains(names), "{prefix:?} {probes}: {stderr}");
        assert!(stderr.contains("run it as root"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `--probes none` loads nothing into the kernel, so a user without any
/// capability can run it for the /proc metrics alone.
#[test]
fn probes_none_needs_no_capability() {
    const NOBODY_NONE: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--bounding-set=-all",
        "--inh-caps=-all",
    ];
    let agent = Agent::start_under(NOBODY_NONE, &["--probes", "none"]);
    let e = agent.scrape();
    assert!(e.get("node_load1", &[]).is_some(), "{}", e.text);
    assert!(
        e.matching("ebpf_agent_probe_attached", &[])
            .next()
            .is_none()
    );
    assert_eq!(e.get("ebpf_agent_capabilities_effective", &[]), Some(0.0));
}
