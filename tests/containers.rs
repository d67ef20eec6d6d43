//! Container attribution end to end (agent/src/k8s/): real cgroup v2
//! directories named the way the kubelet and containerd name them, a
//! kubelet-style log tree under a test root, and workloads moved into those
//! cgroups. Their syscalls and connects must carry exactly their
//! namespace/pod/container labels; removed cgroups must leave no trace.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tests::{Agent, Exposition, Workload, cgroup2_root};

/// A fake pod: its container cgroup and its kubelet log entries.
struct Pod {
    namespace: &'static str,
    name: String,
    container: &'static str,
    cgroup: PathBuf,
    /// The cgroup directories this test created, deepest first.
    created: Vec<PathBuf>,
}

impl Pod {
    /// `systemd`: the systemd cgroup driver with containerd's scope names;
    /// otherwise the cgroupfs driver's layout.
    fn create(logs: &Path, namespace: &'static str, container: &'static str, systemd: bool) -> Pod {
        let n = std::process::id();
        let uid = format!("{n:08x}-0000-4000-8000-{:012x}", systemd as u8);
        let id = format!("{n:08x}{:056x}", systemd as u8 + 7);
        let root = cgroup2_root();
        let dirs = if systemd {
            let uid_ = uid.replace('-', "_");
            vec![
                "kubepods.slice".to_string(),
                "kubepods-burstable.slice".into(),
                format!("kubepods-burstable-pod{uid_}.slice"),
                format!("cri-containerd-{id}.scope"),
            ]
        } else {
            vec![
                "kubepods".to_string(),
                "besteffort".into(),
                format!("pod{uid}"),
                id.clone(),
            ]
        };
        let mut path = root;
        let mut created = Vec::new();
        for d in dirs {
            path.push(d);
            if !path.exists() {
                std::fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
                created.push(path.clone());
            }
        }
        created.reverse();
        let name = format!("{namespace}-app-{n}");
        std::fs::create_dir_all(logs.join(format!("pods/{namespace}_{name}_{uid}/{container}")))
            .unwrap();
        std::fs::create_dir_all(logs.join("containers")).unwrap();
        std::fs::write(
            logs.join(format!(
                "containers/{name}_{namespace}_{container}-{id}.log"
            )),
            "",
        )
        .unwrap();
        Pod {
            namespace,
            name,
            container,
            cgroup: path,
            created,
        }
    }

    fn labels(&self) -> [(&str, &str); 3] {
        [
            ("namespace", self.namespace),
            ("pod", &self.name),
            ("container", self.container),
        ]
    }

    fn enter(&self, pid: &str) {
        std::fs::write(self.cgroup.join("cgroup.procs"), pid)
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.cgroup.display()));
    }

    /// Removes the cgroups (they must be empty: the workload has exited).
    fn remove(&mut self) {
        for dir in self.created.drain(..) {
            std::fs::remove_dir(&dir)
                .unwrap_or_else(|e| panic!("removing cgroup {}: {e}", dir.display()));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn listener() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || for _ in l.incoming() {});
    addr
}

fn with<'a>(pod: &'a Pod, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = pod.labels().to_vec();
    v.extend_from_slice(more);
    v
}

fn count(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.value(name, labels)
}

#[test]
fn syscalls_and_connects_carry_their_pod_and_removed_cgroups_leave_nothing() {
    const N: usize = 20_000;
    const M: usize = 321;
    const K: usize = 9;
    let logs = std::env::temp_dir().join(format!("kubelet-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    let mut cart = Pod::create(&logs, "shop", "redis", true);
    let mut front = Pod::create(&logs, "web", "nginx", false);
    let agent = Agent::start(&[
        "--container-labels",
        "on",
        "--pod-logs",
        logs.to_str().unwrap(),
        "--container-retention-secs",
        "1",
        "--collectors",
        "none",
    ]);

    let w = Workload::start(&["syscalls", &N.to_string(), &M.to_string()]);
    cart.enter(&w.pid());
    w.go();
    let open = listener();
    let c = Workload::start(&["connect", "0", &open.to_string(), &K.to_string()]);
    front.enter(&c.pid());
    assert_eq!(c.go(), [format!("success={K}")]);

    let getppid = with(&cart, &[("syscall", "getppid")]);
    let fchdir = with(&cart, &[("syscall", "fchdir"), ("errno", "EBADF")]);
    let success = with(&front, &[("outcome", "success")]);
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        count(e, "ebpf_agent_syscalls_total", &getppid) >= N as f64
            && count(e, "ebpf_agent_tcp_connects_total", &success) >= K as f64
    });
    assert_eq!(count(&e, "ebpf_agent_syscalls_total", &getppid), N as f64);
    assert_eq!(
        count(&e, "ebpf_agent_syscall_latency_seconds_count", &getppid),
        N as f64
    );
    assert_eq!(
        count(&e, "ebpf_agent_syscall_errors_total", &fchdir),
        M as f64
    );
    assert_eq!(
        count(&e, "ebpf_agent_tcp_connects_total", &success),
        K as f64
    );
    assert_eq!(
        count(
            &e,
            "ebpf_agent_tcp_connect_latency_seconds_count",
            &front.labels()
        ),
        K as f64
    );
    // Each workload is in exactly one pod: none of its events leaked into
    // the other pod's series.
    assert_eq!(
        count(
            &e,
            "ebpf_agent_syscall_errors_total",
            &with(&front, &[("syscall", "fchdir")])
        ),
        0.0
    );
    assert_eq!(
        count(
            &e,
            "ebpf_agent_tcp_connects_total",
            &with(&cart, &[("outcome", "success")])
        ),
        0.0
    );
    // Host processes carry the same label names, empty.
    let host = [("namespace", ""), ("pod", ""), ("container", "")];
    assert!(e.matching("ebpf_agent_syscalls_total", &host).count() > 0);
    assert_eq!(e.value("ebpf_agent_container_label_sets", &[]), 2.0);
    assert_eq!(
        e.value(
            "ebpf_agent_cgroup_lookups_total",
            &[("result", "container")]
        ),
        2.0
    );
    assert_eq!(
        e.value("ebpf_agent_series_folded_total", &[("family", "container")]),
        0.0
    );
    agent.check_exposition_with_peers();

    // Both containers end: their cgroups are removed. The cache lets go of
    // them, and after the 1 s retention their series go too.
    let cached = e.value("ebpf_agent_container_cgroups", &[]);
    cart.remove();
    front.remove();
    let e = agent.scrape_until(Duration::from_secs(10), |e| {
        e.value("ebpf_agent_container_label_sets_retired_total", &[]) >= 2.0
    });
    assert_eq!(
        e.value("ebpf_agent_container_label_sets_retired_total", &[]),
        2.0
    );
    assert_eq!(e.value("ebpf_agent_container_label_sets", &[]), 0.0);
    assert!(
        e.value("ebpf_agent_container_cgroups", &[]) <= cached - 2.0,
        "the two removed cgroups are still cached"
    );
    assert_eq!(
        e.matching("ebpf_agent_syscalls_total", &[("namespace", "shop")])
            .count(),
        0
    );
    assert_eq!(
        e.matching("ebpf_agent_tcp_connects_total", &[("namespace", "web")])
            .count(),
        0
    );
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "removing cgroups must not log problems:\n{stderr}"
    );
    std::fs::remove_dir_all(&logs).unwrap();
}

#[test]
fn budget_folds_extra_pods_into_other_and_counts_them() {
    const N: usize = 5_000;
    let logs = std::env::temp_dir().join(format!("kubelet-logs-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    let first = Pod::create(&logs, "shop", "redis", true);
    let second = Pod::create(&logs, "web", "nginx", false);
    let agent = Agent::start(&[
        "--container-labels",
        "on",
        "--pod-logs",
        logs.to_str().unwrap(),
        "--container-budget",
        "1",
        "--collectors",
        "none",
    ]);
    for (i, pod) in [&first, &second].into_iter().enumerate() {
        let w = Workload::start(&["syscalls", &N.to_string(), "0"]);
        pod.enter(&w.pid());
        w.go();
        // One after the other, so the first pod takes the one budget slot.
        agent.scrape_until(Duration::from_secs(5), |e| {
            let in_pods: f64 = e
                .matching("ebpf_agent_syscalls_total", &[("syscall", "getppid")])
                .filter(|s| !s.labels["namespace"].is_empty())
                .map(|s| s.value)
                .sum();
            in_pods >= (N * (i + 1)) as f64
        });
    }
    let e = agent.scrape();
    let other = [
        ("namespace", "other"),
        ("pod", "other"),
        ("container", "other"),
    ];
    assert_eq!(
        count(
            &e,
            "ebpf_agent_syscalls_total",
            &with(&first, &[("syscall", "getppid")])
        ),
        N as f64
    );
    let mut other_getppid = other.to_vec();
    other_getppid.push(("syscall", "getppid"));
    assert_eq!(
        count(&e, "ebpf_agent_syscalls_total", &other_getppid),
        N as f64
    );
    assert!(e.value("ebpf_agent_series_folded_total", &[("family", "container")]) >= N as f64);
    std::fs::remove_dir_all(&logs).unwrap();
}

#[test]
fn run_queue_waits_carry_the_pod_and_match_a_pid_filtered_agent() {
    const COUNT: &str = "ebpf_agent_runqueue_latency_seconds_count";
    let logs = std::env::temp_dir().join(format!("kubelet-logs-runq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    let pod = Pod::create(&logs, "batch", "worker", true);
    let node = Agent::start(&[
        "--container-labels",
        "on",
        "--pod-logs",
        logs.to_str().unwrap(),
        "--collectors",
        "none",
    ]);
    // Four threads sharing CPU 1 for a second: hundreds of waits.
    let mut w = Workload::start(&["spin", "4", "1000", "1"]);
    w.line(); // tids
    pod.enter(&w.pid());
    let by_pid = Agent::start(&[
        "--pid",
        &w.pid(),
        "--probes",
        "sched",
        "--collectors",
        "none",
    ]);
    w.go();
    let pinned = by_pid.scrape().value(COUNT, &[]);
    let e = node.scrape();
    let in_pod = e.value(COUNT, &pod.labels());
    assert!(
        pinned >= 100.0,
        "4 threads on one CPU for 1 s: {pinned} waits"
    );
    // The same waits, told apart by cgroup instead of by process.
    assert!(
        (in_pod - pinned).abs() <= pinned * 0.03 + 3.0,
        "pod series {in_pod} vs --pid agent {pinned}"
    );
    eprintln!("run-queue waits: pod series {in_pod}, --pid agent {pinned}");
    let host = e.value(COUNT, &[("namespace", ""), ("pod", ""), ("container", "")]);
    assert!(host > 0.0, "the host's waits keep their own series");
    std::fs::remove_dir_all(&logs).unwrap();
}
