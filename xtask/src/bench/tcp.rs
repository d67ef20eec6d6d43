//! `cargo xtask bench tcp`: what the TCP probes cost a connect-heavy workload.
//!
//! A listener thread in this process accepts on 127.0.0.1 and closes at once;
//! a client loop connects and closes. The client sets SO_LINGER 0, so its
//! close sends a RST and no socket lingers in TIME_WAIT (the server's close
//! then sends nothing, or a FIN that the RST answers): the ephemeral ports
//! are free again at once and the run never exhausts them. Per configuration
//! per round:
//!
//! - as many connects as possible for a fixed time (connects/s);
//! - a paced run at a fixed rate, reporting the achieved rate and the
//!   p50/p99 latency of connect().
//!
//! Configurations: baseline (nothing attached) and agent (`agent run`, node
//! mode, everything on). Then, once, the agent's memory around 100 000
//! connects to the one destination, and its connect counter against the
//! number of connects made.

use super::{
    BenchArgs, agent_bin, interleaved, median, min_max, print_machine, process_cpu, process_rss,
    require_root, scrape, start_agent,
};
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Baseline,
    Agent,
}

const CONFIGS: [Config; 2] = [Config::Baseline, Config::Agent];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Agent => "agent",
        }
    }
}

/// How long the as-fast-as-possible loop runs.
const MAX_RATE_TIME: Duration = Duration::from_secs(2);
/// The paced run: this many connects per second for this long.
const PACED_RATE: f64 = 10_000.0;
const PACED_TIME: Duration = Duration::from_secs(2);
const WARMUP_CONNECTS: u64 = 2_000;
/// Connects between the two RSS readings of the memory check.
const MEMORY_CONNECTS: u64 = 100_000;
/// Connects before the first RSS reading of the memory check.
const MEMORY_WARMUP_CONNECTS: u64 = 100_000;
const BACKLOG: libc::c_int = 4096;
const SETTLE: Duration = Duration::from_millis(300);
const DRAIN_WAIT: Duration = Duration::from_millis(500);

const CONNECTS: &str = "ebpf_agent_tcp_connects_total";
const SUCCESS: (&str, &str) = ("outcome", "success");
const RESETS: &str = "ebpf_agent_tcp_resets_total";

struct Measurement {
    /// Connects per second, as fast as possible.
    max_rate: f64,
    /// Achieved rate of the paced run.
    paced_rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Agent only: the success counter's increase and the connects made
    /// (warm-up, both runs) while it was watched.
    counted: Option<(f64, u64)>,
    /// Connects that failed (and were not counted as made).
    failures: u64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    require_root()?;
    let agent = agent_bin()?;
    let server = Server::start()?;
    eprintln!(
        "xtask: bench tcp: {} rounds x {} configurations, listener on {}",
        args.rounds,
        CONFIGS.len(),
        server.addr
    );
    let results = interleaved(args.rounds, &CONFIGS, |round, &config| {
        let m = measure(config, &agent, server.addr)?;
        eprintln!(
            "xtask: bench tcp: round {}/{} {:<8} {:8.0} connects/s, paced {:6.0}/s p50 {:.1} us p99 {:.1} us",
            round + 1,
            args.rounds,
            config.name(),
            m.max_rate,
            m.paced_rate,
            m.p50_us,
            m.p99_us
        );
        Ok(m)
    })?;
    eprintln!("xtask: bench tcp: memory check, {MEMORY_CONNECTS} connects under the agent");
    take_failures();
    let memory = memory_check(&agent, server.addr)?;
    let memory_failures = take_failures();
    server.stop();
    print_report(args, &results, &memory, memory_failures);
    Ok(())
}

// ---------------------------------------------------------------------------
// The listener

/// Accepts and closes on 127.0.0.1, on a thread of its own.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    fn start() -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        // std listens with a backlog of 128; a burst of connects could overflow
        // it and cost a 1 s SYN retransmit. listen() again just raises it.
        // SAFETY: listen on a socket we own.
        if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
            return Err(std::io::Error::last_os_error()).context("listen");
        }
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // A plain close: if the client's RST is in already, it sends
                // nothing; else a FIN, answered by the client's RST. Either
                // way no TIME_WAIT on this side.
                drop(listener.accept());
            }
        });
        Ok(Server { addr, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept.
        let _ = TcpStream::connect(self.addr);
        let _ = self.thread.join();
    }
}

/// SO_LINGER {on, 0 s}: close() sends a RST and frees the socket at once (no TIME_WAIT).
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid linger struct of the size given, on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Failed connects since the last `take_failures`.
static FAILURES: AtomicU64 = AtomicU64::new(0);
/// More consecutive failures than this end the benchmark.
const MAX_FAILURES_IN_A_ROW: u64 = 100;

fn take_failures() -> u64 {
    FAILURES.swap(0, Ordering::Relaxed)
}

/// One connect and close; how long connect() took, or `None` (counted in
/// FAILURES) if it failed.
fn connect_once(addr: SocketAddr) -> Option<Duration> {
    let start = Instant::now();
    let s = TcpStream::connect(addr).ok();
    let took = start.elapsed();
    match s {
        Some(s) => {
            set_linger_zero(&s);
            drop(s);
            Some(took)
        }
        None => {
            FAILURES.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Connects until `n` succeeded.
fn connect_n(addr: SocketAddr, n: u64) -> Result<()> {
    let mut done = 0;
    let mut in_a_row = 0;
    while done < n {
        match connect_once(addr) {
            Some(_) => {
                done += 1;
                in_a_row = 0;
            }
            None => {
                in_a_row += 1;
                if in_a_row > MAX_FAILURES_IN_A_ROW {
                    bail!("{in_a_row} connects to {addr} failed in a row");
                }
            }
        }
    }
    Ok(())
}

/// As many connects as possible for `time`; returns (successful connects, rate).
fn max_rate(addr: SocketAddr, time: Duration) -> Result<(u64, f64)> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        if connect_once(addr).is_some() {
            n += 1;
        }
    }
    Ok((n, n as f64 / start.elapsed().as_secs_f64()))
}

/// Connect i starts at start + i/rate (at once if behind); returns
/// (successful connects, achieved rate, their connect() latencies in µs, sorted).
fn paced(addr: SocketAddr, rate: f64, time: Duration) -> Result<(u64, f64, Vec<f64>)> {
    let n = (rate * time.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut lat = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if let Some(took) = connect_once(addr) {
            lat.push(took.as_secs_f64() * 1e6);
        }
    }
    let n = lat.len() as u64;
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((n, achieved, lat))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

// ---------------------------------------------------------------------------
// One measurement

fn successes(addr: SocketAddr) -> Result<f64> {
    let text = scrape(addr)?;
    text.sum(CONNECTS, &[SUCCESS])
        .with_context(|| format!("{CONNECTS}{{outcome=\"success\"}} missing from /metrics"))
}

/// Resets the agent counted as sent to the server: one per client close
/// (SO_LINGER 0), plus one answering each server FIN that came after it.
fn resets_to(addr: SocketAddr, server: SocketAddr) -> Result<f64> {
    let dest = server.to_string();
    Ok(scrape(addr)?
        .sum(RESETS, &[("direction", "sent"), ("destination", &dest)])
        .unwrap_or(0.0))
}

fn measure(config: Config, agent: &Path, server: SocketAddr) -> Result<Measurement> {
    let mut attached = match config {
        Config::Baseline => None,
        Config::Agent => Some(start_agent(agent, &["run", "--strict"])?),
    };
    std::thread::sleep(SETTLE);
    take_failures();
    let before = match &attached {
        Some((_, addr)) => Some(successes(*addr)?),
        None => None,
    };
    connect_n(server, WARMUP_CONNECTS)?;
    let (n_max, max_rate) = max_rate(server, MAX_RATE_TIME)?;
    let (n_paced, paced_rate, lat) = paced(server, PACED_RATE, PACED_TIME)?;
    let counted = match (&attached, before) {
        (Some((_, addr)), Some(before)) => {
            std::thread::sleep(DRAIN_WAIT);
            Some((
                successes(*addr)? - before,
                WARMUP_CONNECTS + n_max + n_paced,
            ))
        }
        _ => None,
    };
    if let Some((mut p, _)) = attached.take() {
        p.check_running()?;
        p.stop()?;
    }
    Ok(Measurement {
        max_rate,
        paced_rate,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        counted,
        failures: take_failures(),
    })
}

struct Memory {
    rss_before: u64,
    rss_after: u64,
    rss_after_second: u64,
    counter_delta: f64,
    resets_delta: f64,
    connects: u64,
    seconds: f64,
    agent_cpu: Duration,
}

/// The agent's RSS before and after MEMORY_CONNECTS connects to one destination.
fn memory_check(agent: &Path, server: SocketAddr) -> Result<Memory> {
    let (mut p, addr) = start_agent(agent, &["run", "--strict"])?;
    // Warm up at full rate so first-use allocations (the destination's
    // series) and buffers grown to the load are in "before": a few thousand
    // connects were not enough.
    connect_n(server, MEMORY_WARMUP_CONNECTS)?;
    std::thread::sleep(DRAIN_WAIT);
    let before = successes(addr)?;
    let resets_before = resets_to(addr, server)?;
    let rss_before = process_rss(p.pid())?;
    let cpu_before = process_cpu(p.pid())?;
    let start = Instant::now();
    connect_n(server, MEMORY_CONNECTS)?;
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(DRAIN_WAIT);
    let agent_cpu = process_cpu(p.pid())?.saturating_sub(cpu_before);
    let counter_delta = successes(addr)? - before;
    let resets_delta = resets_to(addr, server)? - resets_before;
    let rss_after = process_rss(p.pid())?;
    // A second batch tells a one-off step from steady growth.
    connect_n(server, MEMORY_CONNECTS)?;
    std::thread::sleep(DRAIN_WAIT);
    let rss_after_second = process_rss(p.pid())?;
    p.check_running()?;
    p.stop()?;
    Ok(Memory {
        rss_before,
        rss_after,
        rss_after_second,
        counter_delta,
        resets_delta,
        connects: MEMORY_CONNECTS,
        seconds,
        agent_cpu,
    })
}

// ---------------------------------------------------------------------------
// Report

fn print_report(
    args: &BenchArgs,
    results: &[Vec<Measurement>],
    memory: &Memory,
    memory_failures: u64,
) {
    let idx = |c: Config| CONFIGS.iter().position(|&x| x == c).expect("in CONFIGS");
    let stat = |c: Config, f: fn(&Measurement) -> f64| {
        let v: Vec<f64> = results[idx(c)].iter().map(f).collect();
        let (lo, hi) = min_max(&v);
        (median(&v), lo, hi)
    };
    println!();
    println!("loopback TCP connect rate: connect + close (client SO_LINGER 0: RST, no TIME_WAIT)");
    print_machine();
    println!(
        "  runs     {} rounds per configuration, order rotated each round; max rate for {:?}, \
         then paced at {PACED_RATE:.0}/s for {:?}",
        args.rounds, MAX_RATE_TIME, PACED_TIME
    );
    println!();
    println!(
        "  {:<10} {:>12} {:>18} {:>12} {:>10} {:>10}",
        "config", "connects/s", "min..max", "paced /s", "p50 us", "p99 us"
    );
    for &c in &CONFIGS {
        let (rate, lo, hi) = stat(c, |m| m.max_rate);
        println!(
            "  {:<10} {:>12.0} {:>18} {:>12.0} {:>10.1} {:>10.1}",
            c.name(),
            rate,
            format!("{lo:.0}..{hi:.0}"),
            stat(c, |m| m.paced_rate).0,
            stat(c, |m| m.p50_us).0,
            stat(c, |m| m.p99_us).0,
        );
    }
    println!();
    let (base, blo, bhi) = stat(Config::Baseline, |m| m.max_rate);
    let (with, _, _) = stat(Config::Agent, |m| m.max_rate);
    let spread = bhi - blo;
    let verdict = if base - with <= spread {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "  {:<30} {:>5.3}  (drop {:.0}/s; target: drop <= baseline spread {spread:.0}/s)  {verdict}",
        "agent / baseline connects/s",
        with / base,
        base - with
    );
    for &c in &CONFIGS {
        let failed: Vec<u64> = results[idx(c)].iter().map(|m| m.failures).collect();
        println!("  {:<10} failed connects per round: {failed:?}", c.name());
    }
    println!("  memory check: {memory_failures} failed connects (retried)");
    let counted: Vec<(f64, u64)> = results[idx(Config::Agent)]
        .iter()
        .filter_map(|m| m.counted)
        .collect();
    for (round, (delta, made)) in counted.iter().enumerate() {
        println!(
            "  round {} agent: {CONNECTS}{{outcome=\"success\"}} +{delta:.0} for {made} connects made ({:+.0})",
            round + 1,
            delta - *made as f64
        );
    }
    println!();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let first = memory.rss_after as f64 - memory.rss_before as f64;
    let second = memory.rss_after_second as f64 - memory.rss_after as f64;
    // Bounded means the second batch adds nothing: the first may still warm up
    // allocator arenas and the destination's series (one destination here).
    let bounded = second <= 64.0 * 1024.0;
    println!(
        "  memory: agent RSS {:.1} MiB before, {:.1} MiB after {} connects to one destination ({:+.0} KiB)",
        mib(memory.rss_before),
        mib(memory.rss_after),
        memory.connects,
        first / 1024.0,
    );
    println!(
        "          {:.1} MiB after another {} ({:+.0} KiB; target: <= +64 KiB)  {}",
        mib(memory.rss_after_second),
        memory.connects,
        second / 1024.0,
        if bounded { "PASS" } else { "MISS" }
    );
    println!(
        "  counter: {CONNECTS}{{outcome=\"success\"}} +{:.0} for {} connects made ({:+.0}; the scrape's own connect counts too)  {}",
        memory.counter_delta,
        memory.connects,
        memory.counter_delta - memory.connects as f64,
        if (memory.counter_delta - memory.connects as f64).abs() <= 2.0 {
            "PASS"
        } else {
            "MISS"
        }
    );
    println!(
        "  resets: {RESETS}{{direction=\"sent\"}} to the server +{:.0} for {} connects (one per \
         client close with SO_LINGER 0, and one per server FIN that arrived after it)",
        memory.resets_delta, memory.connects,
    );
    println!(
        "  (those {} connects took {:.1} s, {:.0}/s; the agent used {:.2} s of CPU meanwhile)",
        memory.connects,
        memory.seconds,
        memory.connects as f64 / memory.seconds,
        memory.agent_cpu.as_secs_f64()
    );
    println!();
    println!(
        "reproduce (as root): cargo xtask bench tcp --rounds {}",
        args.rounds
    );
}
