//! `cargo xtask bench sched`: what the scheduler probes add to every context switch.
//!
//! Two threads of this process, pinned to the same CPU, pass a one-byte token
//! back and forth through a pair of pipes; every hand-over blocks one thread
//! and wakes the other, so each round trip is two context switches (and two
//! wakeups). Measured once per configuration per round:
//!
//! - baseline: nothing attached;
//! - floor: `agent bench-floor --sched`, empty programs on the raw
//!   tracepoints sched_wakeup, sched_wakeup_new and sched_switch;
//! - agent: `agent run`, node mode with everything on (run-queue latency included);
//! - bpftrace: the peer, the classic runqlat one-liner.
//!
//! See docs/benchmarks.md for how to read the results.

use super::four_way::{CONFIGS, Config, Setup, spread};
use super::{
    BenchArgs, agent_bin, interleaved, median, pin_current_thread, print_configs, print_machine,
    print_verdict, process_cpu, process_rss, reproduce_command, require_bpftrace, require_root,
    scrape, workload_cpu,
};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// The peer: runqlat on the classic sched tracepoints.
const BPFTRACE_PROGRAM: &str = "tracepoint:sched:sched_wakeup,tracepoint:sched:sched_wakeup_new \
    { @qtime[args->pid] = nsecs; } \
    tracepoint:sched:sched_switch { if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; } \
    $ns = @qtime[args->next_pid]; if ($ns) { @usecs = hist((nsecs - $ns) / 1000); } \
    delete(@qtime[args->next_pid]); }";

const SETUP: Setup = Setup {
    probe: "sched",
    bpftrace_program: BPFTRACE_PROGRAM,
};

/// Target: the agent adds at most this fraction of what bpftrace adds.
const TARGET_VS_PEER: f64 = 0.3;
/// `--calls` is divided by this to get round trips (each is two switches and
/// far dearer than a getppid call).
const CALLS_PER_ROUND_TRIP: u64 = 10;
const WARMUP_ROUND_TRIPS: u64 = 20_000;
/// The loop is timed in this many chunks and a measurement is their median:
/// a burst of interference (the VM's host, a timer) then spoils one chunk,
/// not the measurement.
const CHUNKS: u64 = 10;
const SETTLE: Duration = Duration::from_millis(300);
const DRAIN_WAIT: Duration = Duration::from_millis(300);

const RUNQ_COUNT: &str = "ebpf_agent_runqueue_latency_seconds_count";

struct Measurement {
    ns_per_switch: f64,
    agent: Option<AgentCost>,
}

struct AgentCost {
    cpu_percent: f64,
    rss_bytes: u64,
    /// Increase of the run-queue latency histogram's count over the loop.
    runq_samples: f64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    require_bpftrace()?;
    let cpu = workload_cpu(args.cpu)?;
    let agent = agent_bin()?;
    let round_trips = (args.calls / CALLS_PER_ROUND_TRIP).max(1000);
    eprintln!(
        "xtask: bench sched: {} rounds x {} configurations, {round_trips} round trips each, on CPU {cpu}",
        args.rounds,
        CONFIGS.len(),
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let m = measure(config, &agent, round_trips, cpu)?;
        eprintln!(
            "xtask: bench sched: round {}/{} {:<8} {:8.1} ns/switch",
            round + 1,
            args.rounds,
            config.name(),
            m.ns_per_switch
        );
        Ok(m)
    })?;
    print_report(args, cpu, round_trips, &results);
    Ok(())
}

// ---------------------------------------------------------------------------
// One measurement

fn measure(config: Config, agent: &Path, round_trips: u64, cpu: usize) -> Result<Measurement> {
    let mut attached = SETUP.attach(config, agent)?;
    ping_pong(cpu, WARMUP_ROUND_TRIPS.min(round_trips))?;
    std::thread::sleep(SETTLE);
    let watch = match &attached {
        Some((p, Some(addr))) => Some((p.pid(), *addr, runq_count(*addr)?, process_cpu(p.pid())?)),
        _ => None,
    };
    let start = Instant::now();
    let chunks = ping_pong(cpu, round_trips)?;
    let wall = start.elapsed();
    let per_round_trip: Vec<f64> = chunks.iter().map(|d| d.as_nanos() as f64).collect();
    let agent_cost = match watch {
        Some((pid, addr, count_before, cpu_before)) => {
            let cpu_used = process_cpu(pid)?.saturating_sub(cpu_before);
            let rss_bytes = process_rss(pid)?;
            std::thread::sleep(DRAIN_WAIT);
            Some(AgentCost {
                cpu_percent: 100.0 * cpu_used.as_secs_f64() / wall.as_secs_f64(),
                rss_bytes,
                runq_samples: runq_count(addr)? - count_before,
            })
        }
        None => None,
    };
    if let Some((mut p, _)) = attached.take() {
        p.check_running()?;
        p.stop()?;
    }
    Ok(Measurement {
        ns_per_switch: median(&per_round_trip) / 2.0,
        agent: agent_cost,
    })
}

fn runq_count(addr: SocketAddr) -> Result<f64> {
    let text = scrape(addr)?;
    text.sum(RUNQ_COUNT, &[])
        .with_context(|| format!("{RUNQ_COUNT} missing from /metrics"))
}

// ---------------------------------------------------------------------------
// The workload

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Moves one byte: blocks in read until the peer has written.
fn pass(read_from: &OwnedFd, write_to: &OwnedFd) -> Result<()> {
    let mut b = [0u8; 1];
    // SAFETY: one byte from/to a valid one-byte buffer on fds we own.
    if unsafe { libc::write(write_to.as_raw_fd(), b.as_ptr().cast(), 1) } != 1 {
        return Err(std::io::Error::last_os_error()).context("writing the token");
    }
    if unsafe { libc::read(read_from.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(std::io::Error::last_os_error()).context("reading the token");
    }
    Ok(())
}

/// Makes the calling thread SCHED_FIFO at the lowest priority. Under the
/// fair scheduler a wakeup sometimes preempts the waker before it blocks and
/// sometimes not; two FIFO threads of equal priority never preempt each
/// other, so every hand-over is exactly one switch, when the sender blocks
/// in read. (Each loop lasts under a second; RT throttling leaves the CPU 5%
/// to everything else meanwhile.)
fn set_fifo() -> Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: a valid sched_param; 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setscheduler(SCHED_FIFO)");
    }
    Ok(())
}

/// `round_trips` token round trips between two threads pinned to `cpu`, in
/// CHUNKS timed chunks; returns each chunk's time per round trip.
fn ping_pong(cpu: usize, round_trips: u64) -> Result<Vec<Duration>> {
    let (ping_r, ping_w) = pipe()?;
    let (pong_r, pong_w) = pipe()?;
    std::thread::scope(|s| {
        let ponger = s.spawn(|| -> Result<()> {
            pin_current_thread(cpu)?;
            set_fifo()?;
            let mut b = [0u8; 1];
            for _ in 0..round_trips {
                // SAFETY: as in `pass`.
                if unsafe { libc::read(ping_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 {
                    return Err(std::io::Error::last_os_error()).context("ponger read");
                }
                if unsafe { libc::write(pong_w.as_raw_fd(), b.as_ptr().cast(), 1) } != 1 {
                    return Err(std::io::Error::last_os_error()).context("ponger write");
                }
            }
            Ok(())
        });
        let pinger = s.spawn(|| -> Result<Vec<Duration>> {
            pin_current_thread(cpu)?;
            set_fifo()?;
            // Let the ponger get to its first read.
            std::thread::sleep(Duration::from_millis(10));
            let per_chunk = round_trips.div_ceil(CHUNKS);
            let mut chunks = Vec::with_capacity(CHUNKS as usize);
            let mut left = round_trips;
            while left > 0 {
                let n = per_chunk.min(left);
                let start = Instant::now();
                for _ in 0..n {
                    pass(&pong_r, &ping_w)?;
                }
                chunks.push(start.elapsed() / n as u32);
                left -= n;
            }
            Ok(chunks)
        });
        let wall = pinger
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the pinger panicked")));
        let ponged = ponger
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the ponger panicked")));
        let wall = wall?;
        ponged?;
        Ok(wall)
    })
}

// ---------------------------------------------------------------------------
// Report

fn print_report(args: &BenchArgs, cpu: usize, round_trips: u64, results: &[Vec<Measurement>]) {
    let idx = Config::index;
    let stats = spread(results, |m| m.ns_per_switch);
    let base = stats[idx(Config::Baseline)].0;
    let added = |c: Config| stats[idx(c)].0 - base;

    println!();
    println!("context-switch overhead: pipe ping-pong between two threads pinned to CPU {cpu}");
    print_machine();
    println!(
        "  runs     {} rounds x {round_trips} round trips ({} switches) per configuration, order rotated each round",
        args.rounds,
        2 * round_trips
    );
    print_configs("ns/switch", &CONFIGS.map(Config::name), &stats);
    println!();
    let peer = added(Config::Bpftrace);
    let agent = added(Config::Agent);
    if peer <= 0.0 {
        println!(
            "  {:<30} n/a   (bpftrace added {peer:+.1} ns: too noisy, rerun)  MISS",
            "agent added / bpftrace added"
        );
    } else {
        let ratio = agent / peer;
        print_verdict("agent added / bpftrace added", ratio, TARGET_VS_PEER);
    }
    let floor = added(Config::Floor);
    if floor > 0.0 {
        println!(
            "  {:<30} {:>5.2}  (information)",
            "agent added / floor added",
            agent / floor
        );
    }
    println!();
    let costs: Vec<&AgentCost> = results[idx(Config::Agent)]
        .iter()
        .filter_map(|m| m.agent.as_ref())
        .collect();
    let med = |f: fn(&AgentCost) -> f64| median(&costs.iter().map(|c| f(c)).collect::<Vec<_>>());
    let samples = med(|c| c.runq_samples);
    println!("  agent process, medians over rounds:");
    println!(
        "    CPU              {:>12.1} % of one core over the loop's wall time",
        med(|c| c.cpu_percent)
    );
    println!(
        "    RSS              {:>12.1} MiB at the end of the loop",
        med(|c| c.rss_bytes as f64) / (1024.0 * 1024.0)
    );
    println!(
        "    runq samples     {:>12.0} during the loop, vs {} switches in the loop ({:.2} per switch; \
         the whole machine's switches count too)",
        samples,
        2 * round_trips,
        samples / (2 * round_trips) as f64
    );
    println!();
    println!("reproduce (as root): {}", reproduce_command("sched", args));
}
