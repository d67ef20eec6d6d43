//! The OOM probe end to end (agent/src/probes/oom/, fed by
//! agent-ebpf/src/oom.rs): a child in a 32 MiB memory cgroup touches 256 MiB,
//! the kernel kills exactly it, and the agent, the kernel's own counter and
//! bpftrace must each count one kill.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use tests::{Agent, Bpftrace, Exposition, MemoryCgroup, Pod, PodLogs, Workload};

const KILLS: &str = "ebpf_agent_oom_kills_total";
const WORKLOAD: &[(&str, &str)] = &[("command", "workload")];
const LIMIT: u64 = 32 << 20;

/// Starts a workload that will run out of memory once released.
fn hog(cgroup: &MemoryCgroup) -> Workload {
    let w = Workload::start(&["hog", "256"]);
    cgroup.add(&w.pid());
    w
}

fn assert_killed(w: Workload) {
    let status = w.release();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

fn kills(e: &Exposition) -> f64 {
    e.value(KILLS, WORKLOAD)
}

/// One test, two parts in turn: a node-mode agent counts every kill on the
/// node, so the parts must not overlap.
#[test]
fn oom_kills_are_counted_exactly_in_node_and_pid_mode() {
    one_oom_kill_is_counted_once_as_the_kernel_and_bpftrace_count_it();
    pid_mode_counts_only_the_target_being_killed();
    the_victim_carries_its_pod_labels();
}

fn one_oom_kill_is_counted_once_as_the_kernel_and_bpftrace_count_it() {
    let agent = Agent::start(&["--probes", "oom", "--collectors", "vmstat"]);
    let cgroup = MemoryCgroup::new("ebpf-agent-test-oom", LIMIT);
    let w = hog(&cgroup);
    let before = agent.scrape();
    let bt = Bpftrace::start("tracepoint:oom:mark_victim { @kills = count(); }");
    assert_killed(w);
    let after = agent.scrape_until(Duration::from_secs(10), |e| kills(e) >= 1.0);
    std::thread::sleep(Duration::from_millis(300));
    let after2 = agent.scrape();
    let theirs = bt.stop("kills");
    for e in [&after, &after2] {
        assert_eq!(kills(e) - kills(&before), 1.0, "{}", e.text);
        assert_eq!(
            e.value("node_vmstat_oom_kill", &[]) - before.value("node_vmstat_oom_kill", &[]),
            1.0
        );
        assert_eq!(
            e.value("ebpf_agent_events_received_total", &[("probe", "oom")]),
            1.0
        );
        for stage in ["ringbuf_full", "decode"] {
            let labels = [("probe", "oom"), ("stage", stage)];
            assert_eq!(e.value("ebpf_agent_events_dropped_total", &labels), 0.0);
        }
    }
    assert_eq!(theirs, 1.0, "bpftrace saw {theirs} kills");
    assert!(agent.stderr().contains("OOM kill"), "{}", agent.stderr());
    agent.check_exposition_with_peers();
}

fn pid_mode_counts_only_the_target_being_killed() {
    let cgroup = MemoryCgroup::new("ebpf-agent-test-oom-pid", LIMIT);
    let other_cgroup = MemoryCgroup::new("ebpf-agent-test-oom-other", LIMIT);
    let target = hog(&cgroup);
    let other = hog(&other_cgroup);
    let agent = Agent::start(&["--pid", &target.pid(), "--probes", "oom"]);
    assert_killed(other);
    assert_killed(target);
    let e = agent.scrape_until(Duration::from_secs(10), |e| kills(e) >= 1.0);
    std::thread::sleep(Duration::from_millis(300));
    for e in [&e, &agent.scrape()] {
        assert_eq!(kills(e), 1.0, "{}", e.text);
        assert_eq!(
            e.value("ebpf_agent_probe_attached", &[("probe", "oom")]),
            1.0
        );
    }
}

/// The victim's cgroup v2 id is read from its task: its pod's labels, not
/// those of whoever ran out of memory.
fn the_victim_carries_its_pod_labels() {
    let logs = PodLogs::new("oom");
    let mut pod = Pod::create(logs.path(), "batch", "leaky", false);
    let agent = logs.agent(&["--probes", "oom"]);
    let cgroup = MemoryCgroup::new("ebpf-agent-test-oom-pod", LIMIT);
    let w = hog(&cgroup);
    pod.enter(&w.pid());
    assert_killed(w);
    let mut labels = pod.labels().to_vec();
    labels.extend_from_slice(WORKLOAD);
    let e = agent.scrape_until(Duration::from_secs(10), |e| e.value(KILLS, &labels) >= 1.0);
    assert_eq!(e.value(KILLS, &labels), 1.0, "{}", e.text);
    assert_eq!(e.value(KILLS, WORKLOAD), 1.0, "only the pod's series");
    pod.remove();
}
