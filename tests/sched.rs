//! The run-queue latency probe end to end (agent/src/probes/sched.rs, fed by
//! agent-ebpf/src/sched.rs): contention we create must show up, and bpftrace
//! running the runqlat algorithm at the same time must count the same waits.

use tests::{Agent, Bpftrace, Exposition, Workload};

const COUNT: &str = "ebpf_agent_runqueue_latency_seconds_count";

/// Median wait from the cumulative buckets: the first bound holding half.
fn median(e: &Exposition) -> f64 {
    let total = e.value(COUNT, &[]);
    let buckets = e.buckets("ebpf_agent_runqueue_latency_seconds", &[]);
    buckets
        .iter()
        .find(|(_, n)| *n >= total / 2.0)
        .map_or(0.0, |b| b.0)
}

/// Runs `spin THREADS MS CPU` under an agent in --pid mode; returns the scrape.
fn spin(threads: &str, cpu: &str) -> Exposition {
    let mut w = Workload::start(&["spin", threads, "1000", cpu]);
    w.line(); // tids
    let agent = Agent::start(&["--pid", &w.pid()]);
    w.go();
    let e = agent.scrape();
    assert_eq!(
        e.value("ebpf_agent_probe_attached", &[("probe", "sched")]),
        1.0
    );
    e
}

#[test]
fn contention_on_one_cpu_shows_as_run_queue_latency() {
    let pinned = spin("4", "1");
    let alone = spin("1", "-1");
    let (n, m) = (pinned.value(COUNT, &[]), median(&pinned));
    assert!(
        n >= 100.0,
        "4 threads sharing one CPU for 1 s wait hundreds of times, saw {n}"
    );
    // Each waits for the other three's slices: milliseconds, not microseconds.
    assert!(m >= 0.001, "median wait with contention {m} s");
    let (n1, m1) = (alone.value(COUNT, &[]), median(&alone));
    assert!(n1 < n / 2.0, "alone: {n1} waits vs {n} contended");
    assert!(
        m1 * 4.0 <= m,
        "median alone {m1} s is not well below contended {m} s"
    );
    eprintln!("contended: {n} waits, median <= {m} s; alone: {n1} waits, median <= {m1} s");
}

/// bpftrace's runqlat, restricted to the given thread ids, counting waits.
fn bpftrace_runqlat(tids: &[u32]) -> String {
    let any = |field: &str| {
        tids.iter()
            .map(|t| format!("{field} == {t}"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    format!(
        "tracepoint:sched:sched_wakeup,tracepoint:sched:sched_wakeup_new /{wake}/ {{ @q[args->pid] = nsecs; }}
         tracepoint:sched:sched_switch {{
           if ((args->prev_state & 0xff) == 0 && ({prev})) {{ @q[args->prev_pid] = nsecs; }}
           $ns = @q[args->next_pid];
           if ($ns) {{ @n = count(); }}
           delete(@q[args->next_pid]);
         }}
         END {{ clear(@q); }}",
        wake = any("args->pid"),
        prev = any("args->prev_pid"),
    )
}

#[test]
fn agrees_with_bpftrace_on_the_number_of_waits() {
    let mut w = Workload::start(&["spin", "4", "1000", "1"]);
    let tids: Vec<u32> = w
        .line()
        .trim_start_matches("tids=")
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    let agent = Agent::start(&["--pid", &w.pid()]);
    let bt = Bpftrace::start(&bpftrace_runqlat(&tids));
    w.go();
    let theirs = bt.stop("n");
    let ours = agent.scrape().value(COUNT, &[]);
    assert!(ours >= 100.0, "{ours}");
    let diff = (ours - theirs).abs() / theirs;
    eprintln!("run-queue waits: agent {ours}, bpftrace {theirs}");
    assert!(
        diff <= 0.03,
        "agent counted {ours} waits, bpftrace {theirs} ({:.1}% apart)",
        diff * 100.0
    );
}
