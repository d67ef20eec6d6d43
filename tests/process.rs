//! The process probe end to end (agent/src/probes/process/, fed by
//! agent-ebpf/src/process.rs): a workload runs a uniquely named binary N
//! times, forks K children that exit with code 3 and J that are killed by
//! SIGKILL; the agent, tracing it and its children (`--pid --children`), must
//! report exactly those, and its audit stream must hold the N execs.

use std::path::PathBuf;
use std::time::Duration;
use tests::{Agent, Bpftrace, Exposition, Workload};

/// A copy of /bin/true under a name nothing else runs, removed on drop.
struct UniqueBinary(PathBuf);

impl UniqueBinary {
    fn new(tag: &str) -> UniqueBinary {
        // Short: bpftrace compares the first 64 bytes of strings by default.
        let path = std::env::temp_dir().join(format!("true-{tag}-{}", std::process::id()));
        std::fs::copy("/bin/true", &path).expect("copy /bin/true");
        UniqueBinary(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for UniqueBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn exits(e: &Exposition, code: &str) -> f64 {
    e.sum("ebpf_agent_process_exits_total", &[("code", code)])
        .unwrap_or(0.0)
}

/// The audit stream's records (one JSON object per line, each checked).
fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn pid_and_children_counts_are_exact_and_audited() {
    const N: u64 = 20;
    const K: u64 = 7;
    const J: u64 = 5;
    let bin = UniqueBinary::new("exact");
    let audit = std::env::temp_dir().join(format!("exec-events-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let bpftrace = Bpftrace::start(&format!(
        "tracepoint:sched:sched_process_exec /str(args->filename) == \"{}\"/ {{ @execs = count(); }}",
        bin.path()
    ));
    let w = Workload::start(&[
        "procs",
        bin.path(),
        &N.to_string(),
        &K.to_string(),
        &J.to_string(),
    ]);
    let agent = Agent::start(&[
        "--pid",
        &w.pid(),
        "--children",
        "--probes",
        "process",
        "--exec-events",
        audit.to_str().unwrap(),
    ]);
    let pid: u64 = w.pid().parse().unwrap();
    assert_eq!(w.go(), [format!("execs={N} exit3={K} killed={J}")]);
    // The workload itself exits with 0 too.
    let e = agent.scrape_until(Duration::from_secs(10), |e| {
        exits(e, "0") >= (N + 1) as f64 && exits(e, "nonzero") >= K as f64
    });
    let value = |name: &str| e.value(name, &[]);
    assert_eq!(value("ebpf_agent_process_execs_total"), N as f64);
    assert_eq!(value("ebpf_agent_process_forks_total"), (N + K + J) as f64);
    assert_eq!(exits(&e, "0"), (N + 1) as f64);
    assert_eq!(exits(&e, "nonzero"), K as f64);
    assert_eq!(exits(&e, "SIGKILL"), J as f64);
    let all_exits = e.sum("ebpf_agent_process_exits_total", &[]).unwrap();
    assert_eq!(all_exits, (N + K + J + 1) as f64);
    assert_eq!(
        value("ebpf_agent_process_lifetime_seconds_count"),
        all_exits
    );
    assert_eq!(
        e.value("ebpf_agent_probe_attached", &[("probe", "process")]),
        1.0
    );
    assert_eq!(
        e.value("ebpf_agent_events_received_total", &[("probe", "process")]),
        (N + N + K + J + N + K + J + 1) as f64,
        "execs, forks and exits"
    );
    for stage in [
        "ringbuf_full",
        "task_read_failed",
        "follow_map_full",
        "decode",
        "rate_limit",
        "audit_write",
        "filename_unreadable",
    ] {
        assert_eq!(
            e.value(
                "ebpf_agent_events_dropped_total",
                &[("probe", "process"), ("stage", stage)]
            ),
            0.0,
            "{stage}"
        );
    }
    let recs = records(&audit);
    assert_eq!(recs.len() as u64, N, "only the children's execs: {recs:?}");
    for r in &recs {
        assert_eq!(r["filename"], bin.path(), "{r}");
        assert_eq!(r["ppid"].as_u64(), Some(pid), "{r}");
        assert_eq!(r["uid"].as_u64(), Some(0), "{r}");
        let comm: String = bin
            .0
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .chars()
            .take(15)
            .collect();
        assert_eq!(r["comm"], comm.as_str(), "{r}");
        let time = r["time"].as_str().unwrap();
        // 2026-12-03T12:00:00.123456789Z
        assert!(
            time.len() == 30 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
            "{r}"
        );
        assert!(r["pid"].as_u64().unwrap() > 0, "{r}");
    }
    assert_eq!(
        bpftrace.stop("execs"),
        N as f64,
        "bpftrace saw the same execs"
    );
    agent.check_exposition_with_peers();
    let _ = std::fs::remove_file(&audit);
}

#[test]
fn without_children_only_the_process_itself_counts() {
    let bin = UniqueBinary::new("alone");
    let w = Workload::start(&["procs", bin.path(), "3", "2", "1"]);
    let agent = Agent::start(&["--pid", &w.pid(), "--probes", "process"]);
    assert_eq!(w.go(), ["execs=3 exit3=2 killed=1"]);
    let e = agent.scrape_until(Duration::from_secs(10), |e| exits(e, "0") >= 1.0);
    // Its forks are its own doing; what the children do is not traced.
    assert_eq!(e.value("ebpf_agent_process_forks_total", &[]), 6.0);
    assert_eq!(e.value("ebpf_agent_process_execs_total", &[]), 0.0);
    assert_eq!(exits(&e, "0"), 1.0);
    assert_eq!(exits(&e, "nonzero"), 0.0);
}

#[test]
fn audit_records_past_the_rate_are_counted_as_drops() {
    const N: u64 = 40;
    let bin = UniqueBinary::new("rate");
    let audit = std::env::temp_dir().join(format!("exec-rate-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let agent = Agent::start(&[
        "--probes",
        "process",
        "--exec-events",
        audit.to_str().unwrap(),
        "--exec-events-rate",
        "5/s",
    ]);
    let ours = |recs: &[serde_json::Value]| {
        recs.iter().filter(|r| r["filename"] == bin.path()).count() as u64
    };
    let started = std::time::Instant::now();
    assert_eq!(
        Workload::start(&["procs", bin.path(), &N.to_string(), "0", "0"]).go(),
        [format!("execs={N} exit3=0 killed=0")]
    );
    let took = started.elapsed().as_secs_f64();
    // Node mode: other processes' execs share the rate, so ours are bounded:
    // each is written or dropped, and at most a burst of 5 plus 5 a second
    // (for the run and the drain's delay) is written.
    let dropped = |e: &Exposition| {
        e.value(
            "ebpf_agent_events_dropped_total",
            &[("probe", "process"), ("stage", "rate_limit")],
        )
    };
    let e = agent.scrape_until(Duration::from_secs(10), |e| {
        ours(&records(&audit)) as f64 + dropped(e) >= N as f64
    });
    let written = ours(&records(&audit));
    assert!(
        (written as f64) <= 5.0 + 5.0 * (took + 1.0),
        "{written} of {N} written in {took:.2}s"
    );
    assert!(dropped(&e) >= (N - written) as f64);
    assert!(e.value("ebpf_agent_process_execs_total", &[]) >= N as f64);
    let _ = std::fs::remove_file(&audit);
}
