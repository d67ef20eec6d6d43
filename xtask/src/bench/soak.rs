//! `cargo xtask bench soak`: the agent's memory over a long run under mixed
//! load, to show it stays flat (issue 17: budgets bound what any process can
//! make it hold). Node mode, every probe and default collector, container
//! labels on. For `--minutes` (default 30) the load is, all at once:
//!
//! - syscalls: about 20 000 getppid/s, plus a few unknown numbers now and then;
//! - connects: about 100/s to a local listener and 20/s to a closed port,
//!   spread over 200 ports (past the destination budget);
//! - process churn: 10 short-lived processes/s;
//! - container churn: a new fake pod every 10 s, a process doing syscalls in
//!   it, then the pod removed (its series retire after the retention).
//!
//! Every minute it prints the agent's RSS, the number of samples /metrics
//! serves, events dropped, and the agent's CPU; then a summary against the
//! goal (flat after warm-up, under 30 MB).

use super::start_agent;
use super::{BenchArgs, agent_bin, print_machine, process_cpu, process_rss, require_root, scrape};
use anyhow::{Result, bail};
use harness::{Pod, PodLogs};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Minutes before the curve must be flat: label sets fill up to their
/// steady state within the container retention (300 s).
const WARMUP_MINUTES: usize = 6;
const GOAL_RSS_MB: f64 = 30.0;
/// RSS growth from the end of warm-up to the end that still counts as flat.
const FLAT_MB: f64 = 2.0;

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    let minutes = args.minutes;
    let agent = agent_bin()?;
    let logs = PodLogs::new("soak");
    std::fs::create_dir_all(logs.path())?;
    let logs_arg = logs.path().to_str().unwrap_or_default().to_string();
    let (mut p, addr) = start_agent(
        &agent,
        &["run", "--container-labels", "on", "--pod-logs", &logs_arg],
    )?;
    println!("bench soak: {minutes} min of mixed load on the agent in node mode");
    print_machine();

    let stop = Arc::new(AtomicBool::new(false));
    let server = TcpListener::bind("127.0.0.1:0")?;
    let open = server.local_addr()?;
    let load = [
        spawn_loop(&stop, "syscalls", Duration::from_millis(10), || {
            for _ in 0..200 {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::getppid() };
            }
        }),
        spawn_loop(&stop, "unknown syscalls", Duration::from_secs(1), || {
            for nr in 600..610 {
                // SAFETY: a number that names no syscall only returns ENOSYS.
                unsafe { libc::syscall(nr) };
            }
        }),
        spawn_loop(&stop, "accept", Duration::ZERO, move || {
            let _ = server.accept();
        }),
        connects(&stop, open),
        spawn_loop(&stop, "processes", Duration::from_millis(100), || {
            let _ = Command::new("true").status();
        }),
        pods(&stop, logs),
    ];

    println!("  minute   rss MB   samples   dropped   agent cpu s");
    let start = Instant::now();
    let mut rss = Vec::new();
    for minute in 1..=minutes {
        let due = start + Duration::from_secs(60 * minute);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        p.check_running()?;
        let mb = process_rss(p.pid())? as f64 / (1024.0 * 1024.0);
        let e = scrape(addr)?;
        let dropped = e.sum("ebpf_agent_events_dropped_total", &[]).unwrap_or(0.0);
        let cpu = process_cpu(p.pid())?.as_secs_f64();
        println!(
            "  {minute:>6}   {mb:>6.1}   {:>7}   {dropped:>7}   {cpu:>11.1}",
            e.samples.len()
        );
        rss.push(mb);
    }
    stop.store(true, Relaxed);
    // The accept loop blocks: one connect lets it see the flag.
    let _ = TcpStream::connect(open);
    for t in load {
        let _ = t.join();
    }
    p.stop()?;
    summary(&rss)
}

/// Runs `body` every `period` until `stop`.
fn spawn_loop(
    stop: &Arc<AtomicBool>,
    name: &str,
    period: Duration,
    mut body: impl FnMut() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Relaxed) {
                body();
                next += period;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
        .expect("spawning a load thread")
}

/// 100 connects/s to the listener and 20/s refused, over 200 closed ports.
fn connects(stop: &Arc<AtomicBool>, open: SocketAddr) -> std::thread::JoinHandle<()> {
    let mut i = 0u16;
    spawn_loop(stop, "connects", Duration::from_millis(10), move || {
        let _ = TcpStream::connect(open);
        i = i.wrapping_add(1);
        if i.is_multiple_of(5) {
            let _ = TcpStream::connect(("127.0.0.1", 20_000 + i % 200));
        }
    })
}

/// A new pod every 10 s with a process doing syscalls in it, then removed.
fn pods(stop: &Arc<AtomicBool>, logs: PodLogs) -> std::thread::JoinHandle<()> {
    spawn_loop(stop, "pods", Duration::from_secs(10), move || {
        let mut pod = Pod::create(logs.path(), "soak", "app", false);
        let procs = pod.cgroup.join("cgroup.procs");
        // The shell moves itself into the pod, then works there.
        let script = format!(
            "echo $$ > {} && for i in $(seq 300); do cat /proc/self/stat > /dev/null; done",
            procs.display()
        );
        let _ = Command::new("sh").args(["-c", &script]).status();
        pod.remove();
    })
}

fn summary(rss: &[f64]) -> Result<()> {
    let Some(&last) = rss.last() else {
        bail!("no minute was measured");
    };
    let max = rss.iter().copied().fold(0.0, f64::max);
    println!("  max RSS {max:.1} MB (goal: under {GOAL_RSS_MB} MB)");
    if rss.len() > WARMUP_MINUTES {
        let warm = rss[WARMUP_MINUTES - 1];
        let growth = last - warm;
        let flat = if growth <= FLAT_MB { "flat" } else { "GROWING" };
        println!(
            "  after warm-up (minute {WARMUP_MINUTES}): {warm:.1} -> {last:.1} MB ({growth:+.1} MB, {flat})"
        );
    } else {
        println!("  (run more than {WARMUP_MINUTES} minutes to judge the curve after warm-up)");
    }
    Ok(())
}
