//! The agent as a process: endpoints, signals, and the errors a user can hit.

use std::process::{Command, Output};
use std::time::Duration;
use tests::{Agent, Workload, agent_bin, http_get, require_root};

#[test]
fn health_ready_and_index_endpoints() {
    let agent = Agent::start(&[]);
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = http_get(agent.addr, path).unwrap();
        assert_eq!((r.status, r.body.trim()), (200, want), "{path}");
    }
    assert!(http_get(agent.addr, "/").unwrap().body.contains("/metrics"));
    assert_eq!(http_get(agent.addr, "/nope").unwrap().status, 404);
}

#[test]
fn sigterm_and_sigint_detach_and_exit_zero_within_a_second() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut agent = Agent::start(&[]);
        let (status, took) = agent.stop_with(signal);
        assert_eq!(
            status.code(),
            Some(0),
            "signal {signal}; stderr:\n{}",
            agent.stderr()
        );
        assert!(
            took < Duration::from_secs(1),
            "signal {signal}: took {took:?}"
        );
        assert!(agent.stderr().contains("detaching probes"));
    }
}

/// Runs the agent to completion with a 10 s limit.
fn run_agent(args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("10").arg(agent_bin()).args(args);
    cmd.output().unwrap()
}

/// The one-line error and the exit code of a run that must fail.
fn error_of(args: &[&str]) -> (i32, String) {
    let out = run_agent(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_pids_get_clear_errors() {
    require_root();
    for (pid, says) in [
        ("0", "is not a process"),
        ("999999999", "no such process"),
        ("2", "is a kernel thread"), // kthreadd
    ] {
        let (code, stderr) = error_of(&["run", "--listen", "127.0.0.1:0", "--pid", pid]);
        assert_eq!(code, 1, "--pid {pid}: {stderr}");
        assert!(stderr.contains(says), "--pid {pid}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line, got:\n{stderr}");
    }
}

#[test]
fn bad_config_values_are_rejected_before_starting() {
    for (args, says) in [
        (&["run", "--ring-buffer-bytes", "5000"][..], "power of two"),
        (&["run", "--hdr-precision", "0"][..], "--hdr-precision"),
        (&["run", "--listen", "localhost"][..], "--listen"),
        (
            &["run", "--flush-interval-ms", "5"][..],
            "--flush-interval-ms",
        ),
    ] {
        let (code, stderr) = error_of(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn port_in_use_says_so() {
    require_root();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, stderr) = error_of(&["run", "--listen", &addr]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot listen") && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn unprivileged_user_is_told_to_run_as_root() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(agent_bin())
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux) runs the agent as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run it as root"), "{stderr}");
}

#[test]
fn mounts_tracefs_when_it_is_missing() {
    require_root();
    // The TCP probe reads classic tracepoint records, so the agent needs tracefs
    // and mounts it itself (syscalls and sched use raw tracepoints: no tracefs).
    let _ = Command::new("umount")
        .args(["-l", "/sys/kernel/tracing"])
        .status();
    assert!(
        !std::path::Path::new("/sys/kernel/tracing/events").exists(),
        "could not unmount tracefs for this test"
    );
    let agent = Agent::start(&[]);
    assert!(
        agent
            .stderr()
            .contains("tracefs was not mounted: mounted it"),
        "{}",
        agent.stderr()
    );
    assert!(std::path::Path::new("/sys/kernel/tracing/events").exists());
    let e = agent.scrape();
    for probe in ["syscalls", "tcp", "sched"] {
        assert_eq!(
            e.value("ebpf_agent_probe_attached", &[("probe", probe)]),
            1.0,
            "{probe}"
        );
    }
}

#[test]
fn probes_can_be_chosen() {
    let agent = Agent::start(&["--probes", "sched"]);
    let e = agent.scrape();
    let attached: Vec<&str> = e
        .matching("ebpf_agent_probe_attached", &[])
        .map(|s| s.labels["probe"].as_str())
        .collect();
    assert_eq!(attached, ["sched"], "only the chosen probe is reported");
    assert!(
        e.matching("ebpf_agent_syscalls_total", &[])
            .next()
            .is_none()
    );
    drop(agent);
    let agent = Agent::start(&["--probes", "none"]);
    let e = agent.scrape();
    assert!(
        e.matching("ebpf_agent_probe_attached", &[])
            .next()
            .is_none()
    );
    assert!(
        e.get("node_load1", &[]).is_some(),
        "the /proc collectors still run"
    );
    let (code, stderr) = error_of(&["run", "--probes", "syscalls,bogus"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bogus") && stderr.contains("syscalls, tcp, sched"),
        "{stderr}"
    );
}

/// `run --pid` follows the process, not the number: when it exits the agent
/// says so and exits too, as attach mode does.
#[test]
fn pid_mode_exits_when_its_target_exits() {
    let w = Workload::start(&["syscalls", "1000", "0"]);
    let pid = w.pid();
    let mut agent = Agent::start(&["--pid", &pid, "--on-target-exit", "exit"]);
    w.go();
    let status = agent
        .wait_exit(Duration::from_secs(3))
        .expect("the agent kept running after its target exited");
    assert!(status.success(), "{status}");
    assert!(
        agent
            .stderr()
            .contains(&format!("the traced process (PID {pid}) exited")),
        "{}",
        agent.stderr()
    );
}

/// Starts a workload that gets PID `pid`, by setting the kernel's last PID
/// just before forking (retried: other processes fork too).
fn workload_with_pid(pid: u32, args: &[&str]) -> Workload {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("writing /proc/sys/kernel/ns_last_pid (root)");
        let w = Workload::start(args);
        if w.pid() == pid.to_string() {
            return w;
        }
    }
    panic!("could not start a process with PID {pid} in 500 tries");
}

/// With `--on-target-exit serve` the agent keeps the target's numbers, and a
/// new process that gets the same PID is not counted as the target.
#[test]
fn a_reused_pid_is_never_traced_as_the_target() {
    const N: f64 = 5_000.0;
    let w = Workload::start(&["syscalls", "5000", "0"]);
    let pid: u32 = w.pid().parse().unwrap();
    let agent = Agent::start(&["--pid", &w.pid(), "--on-target-exit", "serve"]);
    let getppid = [("syscall", "getppid")];
    w.go();
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        e.get("ebpf_agent_target_running", &[]) == Some(0.0)
    });
    assert_eq!(e.value("ebpf_agent_syscalls_total", &getppid), N);
    let impostor = workload_with_pid(pid, &["syscalls", "7000", "0"]);
    impostor.go();
    std::thread::sleep(Duration::from_millis(500));
    let e = agent.scrape();
    assert_eq!(
        e.value("ebpf_agent_syscalls_total", &getppid),
        N,
        "the new process with PID {pid} was counted as the target"
    );
    assert!(agent.stderr().contains("--on-target-exit serve"));
}
