//! `cargo xtask bench resets`: what the tcp probe's reset programs cost per
//! event, against bpftrace counting the same resets by destination.
//!
//! One thread, pinned to a CPU, connects to a loopback port nothing listens
//! on: the kernel answers each SYN with a reset (`tcp:tcp_send_reset`) and
//! the connecting socket receives it (`tcp:tcp_receive_reset`), two events
//! per attempt and no other traffic. Per configuration per round:
//!
//! - baseline: nothing attached (refused connects per second, information);
//! - floor: `agent bench-floor --tcp-resets`, empty programs on the two
//!   tracepoints: their run time is the BPF statistics' own clock read;
//! - agent: `agent run --probes tcp --bpf-stats on`: its own self-cost
//!   metrics (`ebpf_agent_probe_kernel_{seconds,runs}_total`) for the two
//!   reset programs, the same kernel statistics the bench reads for bpftrace
//!   (the tcp probe's connect program also runs on every attempt; it is not
//!   a reset's cost and is left out);
//! - bpftrace: the peer, two one-liners counting resets sent and received by
//!   destination address and port.
//!
//! The verdict compares the run time above the floor (as `block` does):
//! both tools pay the statistics' clock read on every run, and neither pays
//! it with the statistics off. The retransmit program is the same code as
//! the reset ones: resets are what a loop can make thousands of a second
//! without timers. See docs/benchmarks.md.

use super::bpf_runs::ProgRuns;
use super::{
    Background, BenchArgs, READY_TIMEOUT, agent_bin, interleaved, median, min_max,
    pin_current_thread, print_machine, print_verdict, reproduce_command, require_bpftrace,
    require_root, scrape, start_agent, start_bpftrace, workload_cpu,
};
use anyhow::{Context, Result, bail};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The peer: resets by destination (ip, port), as the agent labels them.
/// A sent reset's addresses are a `sockaddr` in the record; this casts it
/// as IPv4 only (the agent reads both families), which favours bpftrace.
const BPFTRACE_PROGRAM: &str = "\
tracepoint:tcp:tcp_send_reset {
  $sa = (struct sockaddr_in *)args->daddr;
  @sent[ntop($sa->sin_addr.s_addr), $sa->sin_port] = count();
}
tracepoint:tcp:tcp_receive_reset { @received[ntop(args->daddr_v6), args->dport] = count(); }";

/// The agent's programs for the two events (prefixes of their names).
const RESET_PROGRAMS: [&str; 2] = ["tcp_send_reset", "tcp_receive_reset"];
const RUNS: &str = "ebpf_agent_probe_kernel_runs_total";
const SECONDS: &str = "ebpf_agent_probe_kernel_seconds_total";
const RESETS: &str = "ebpf_agent_tcp_resets_total";

/// Target (issue 11): at most this fraction of bpftrace's cost per event.
const TARGET_VS_PEER: f64 = 0.3;
/// `--calls` is divided by this to get connect attempts.
const CALLS_PER_ATTEMPT: u64 = 40;
const WARMUP_ATTEMPTS: u64 = 2_000;
/// Long enough for the agent to drain its ring buffer (it drains on a
/// timer, not per event) before each reading of its counters.
const SETTLE: Duration = Duration::from_millis(600);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Baseline,
    Floor,
    Agent,
    Bpftrace,
}

const CONFIGS: [Config; 4] = [
    Config::Baseline,
    Config::Floor,
    Config::Agent,
    Config::Bpftrace,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::Agent => "agent",
            Config::Bpftrace => "bpftrace",
        }
    }
}

struct Measurement {
    attempts_per_s: f64,
    /// The tool's reset programs: run time per run, and runs per attempt.
    ns_per_event: Option<f64>,
    runs_per_attempt: Option<f64>,
    /// Agent only: resets its counters gained per attempt (2.00 is exact).
    counted_per_attempt: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    require_bpftrace()?;
    let cpu = workload_cpu(args.cpu)?;
    let agent = agent_bin()?;
    let attempts = (args.calls / CALLS_PER_ATTEMPT).max(1000);
    let _stats = harness::sysctl::BpfStats::set(true).context("kernel.bpf_stats_enabled")?;
    let port = closed_port()?;
    eprintln!(
        "xtask: bench resets: {} rounds x {} configurations, {attempts} refused connects to 127.0.0.1:{port} each on CPU {cpu}",
        args.rounds,
        CONFIGS.len()
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let m = measure(config, &agent, port, attempts, cpu)?;
        eprintln!(
            "xtask: bench resets: round {}/{} {:<8} {:8.0} attempts/s",
            round + 1,
            args.rounds,
            config.name(),
            m.attempts_per_s
        );
        Ok(m)
    })?;
    print_report(args, cpu, attempts, &results);
    Ok(())
}

/// A loopback port nothing listens on (one the kernel just handed out and
/// took back).
fn closed_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn measure(
    config: Config,
    agent: &Path,
    port: u16,
    attempts: u64,
    cpu: usize,
) -> Result<Measurement> {
    let mut attached = match config {
        Config::Baseline => None,
        Config::Floor => {
            let mut cmd = Command::new(agent);
            cmd.args(["bench-floor", "--tcp-resets"]);
            let mut p = Background::spawn("agent bench-floor --tcp-resets", cmd, libc::SIGTERM)?;
            p.wait_for_line(READY_TIMEOUT, |l| l.trim() == "ready")?;
            Some((p, None))
        }
        Config::Agent => {
            let (p, addr) = start_agent(
                agent,
                &["run", "--strict", "--probes", "tcp", "--bpf-stats", "on"],
            )?;
            Some((p, Some(addr)))
        }
        Config::Bpftrace => {
            let p = start_bpftrace(BPFTRACE_PROGRAM)?;
            Some((p, None))
        }
    };
    refuse_loop(port, cpu, WARMUP_ATTEMPTS)?;
    std::thread::sleep(SETTLE);
    let before = Reading::take(&attached)?;
    let elapsed = refuse_loop(port, cpu, attempts)?;
    std::thread::sleep(SETTLE);
    let after = Reading::take(&attached)?;
    if let Some((mut p, _)) = attached.take() {
        p.check_running()?;
        p.stop()?;
    }
    let per_attempt = |n: f64| n / attempts as f64;
    let (ns_per_event, runs_per_attempt, counted_per_attempt) = match (before, after) {
        (Reading::Agent(b), Reading::Agent(a)) => (
            Some((a.seconds - b.seconds) * 1e9 / (a.runs - b.runs)),
            Some(per_attempt(a.runs - b.runs)),
            Some(per_attempt(a.resets - b.resets)),
        ),
        (Reading::Programs(b), Reading::Programs(a)) => {
            let runs = a.total_runs_since(&b) as f64;
            (
                Some(a.total_ns_since(&b) as f64 / runs),
                Some(per_attempt(runs)),
                None,
            )
        }
        _ => (None, None, None),
    };
    Ok(Measurement {
        attempts_per_s: attempts as f64 / elapsed.as_secs_f64(),
        ns_per_event,
        runs_per_attempt,
        counted_per_attempt,
    })
}

/// The agent's self-cost metrics for its reset programs, and its reset count.
struct AgentReading {
    seconds: f64,
    runs: f64,
    resets: f64,
}

enum Reading {
    None,
    Agent(AgentReading),
    /// bpftrace's or the floor's programs, from /proc/PID/fdinfo.
    Programs(ProgRuns),
}

impl Reading {
    fn take(attached: &Option<(Background, Option<SocketAddr>)>) -> Result<Reading> {
        Ok(match attached {
            None => Reading::None,
            Some((_, Some(addr))) => {
                let e = scrape(*addr)?;
                // The generic program or one compiled for this kernel's layout
                // (`tcp_send_reset_6_12`, ...): whichever the agent loaded.
                let of = |name: &str| -> f64 {
                    e.sum_by(name, &[("probe", "tcp")], "program")
                        .into_iter()
                        .filter(|(p, _)| RESET_PROGRAMS.iter().any(|r| p.starts_with(r)))
                        .map(|(_, v)| v)
                        .sum()
                };
                Reading::Agent(AgentReading {
                    seconds: of(SECONDS),
                    runs: of(RUNS),
                    resets: e.sum(RESETS, &[]).unwrap_or(0.0),
                })
            }
            Some((p, None)) => Reading::Programs(ProgRuns::read(p.pid())?),
        })
    }
}

/// `attempts` connects to the closed `port` from a thread pinned to `cpu`;
/// each must be refused. Returns the time they took.
fn refuse_loop(port: u16, cpu: usize, attempts: u64) -> Result<Duration> {
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Duration> {
            pin_current_thread(cpu)?;
            let start = Instant::now();
            for _ in 0..attempts {
                match TcpStream::connect(to) {
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => bail!("connect to {to}: {e} (expected a refusal)"),
                    Ok(_) => bail!("something listens on {to} now: rerun"),
                }
            }
            Ok(start.elapsed())
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the connect loop panicked")))
    })
}

fn print_report(args: &BenchArgs, cpu: usize, attempts: u64, results: &[Vec<Measurement>]) {
    let idx = |c: Config| CONFIGS.iter().position(|&x| x == c).expect("in CONFIGS");
    let med = |c: Config, of: fn(&Measurement) -> Option<f64>| {
        median(&results[idx(c)].iter().filter_map(of).collect::<Vec<_>>())
    };
    println!();
    println!(
        "tcp reset overhead: refused loopback connects (one reset sent, one received each), one thread pinned to CPU {cpu}"
    );
    print_machine();
    println!(
        "  runs     {} rounds x {attempts} attempts per configuration, order rotated each round",
        args.rounds
    );
    println!();
    println!(
        "  {:<10} {:>12} {:>22} {:>14} {:>16}",
        "config", "attempts/s", "min..max", "ns per event", "runs per attempt"
    );
    for c in CONFIGS {
        let rates: Vec<f64> = results[idx(c)].iter().map(|m| m.attempts_per_s).collect();
        let (lo, hi) = min_max(&rates);
        let cost = match c {
            Config::Baseline => ("-".to_string(), "-".to_string()),
            c => (
                format!("{:.1}", med(c, |m| m.ns_per_event)),
                format!("{:.2}", med(c, |m| m.runs_per_attempt)),
            ),
        };
        println!(
            "  {:<10} {:>12.0} {:>22} {:>14} {:>16}",
            c.name(),
            median(&rates),
            format!("{lo:.0}..{hi:.0}"),
            cost.0,
            cost.1
        );
    }
    println!();
    let ns = |c: Config| med(c, |m| m.ns_per_event);
    let (floor, agent, peer) = (ns(Config::Floor), ns(Config::Agent), ns(Config::Bpftrace));
    print_verdict(
        "agent above floor / bpftrace's",
        (agent - floor) / (peer - floor),
        TARGET_VS_PEER,
    );
    println!(
        "  {:<30} {:>5.2}  (information: with the statistics' clock read on every run)",
        "agent / bpftrace per event",
        agent / peer
    );
    println!(
        "  {:<30} {:>5.2}  (the agent's reset counters per attempt: 2.00 is exact)",
        "resets counted per attempt",
        med(Config::Agent, |m| m.counted_per_attempt)
    );
    println!();
    println!("reproduce (as root): {}", reproduce_command("resets", args));
}
