//! `cargo xtask bench <name>`: overhead measurements against a baseline and a
//! peer, in one interleaved run. Each benchmark lives in its own file; this one
//! holds what they share: rounds, medians, /proc sampling, background
//! processes and a minimal HTTP client for the agent's endpoints.
//!
//! The machine is noisy (a small VM, often busy compiling), so every benchmark
//! measures all its configurations once per round, rotates their order between
//! rounds so drift hits each one equally, and reports medians.

mod block;
mod bpf_runs;
mod four_way;
mod process;
mod push;
mod resets;
mod sched;
mod scrape;
mod soak;
mod syscalls;
mod tcp;

use anyhow::{Context, Result, bail};
use harness::Exposition;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum)]
    pub which: Benchmark,

    /// Rounds; each measures every configuration once, in rotated order.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,

    /// Calls per measurement (syscalls: getppid calls in the timed loop;
    /// sched: a tenth of it is the number of ping-pong round trips;
    /// process: a thousandth is the number of fork+exec+exit cycles).
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub calls: u64,

    /// Soak: how long the mixed load runs, in minutes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub minutes: u64,

    /// CPU the workload thread is pinned to (default: the last one we may use).
    #[arg(long)]
    pub cpu: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Benchmark {
    /// Cost per syscall of the syscall probe, against an empty probe and bpftrace.
    Syscalls,
    /// /metrics scrape latency and CPU, the agent against node_exporter.
    Scrape,
    /// Cost per context switch of the scheduler probes, against an empty probe and bpftrace.
    Sched,
    /// Loopback connect rate and connect() latency with and without the agent, and its memory.
    Tcp,
    /// The agent's memory, minute by minute, over a long run under mixed load.
    Soak,
    /// Cost per fork+exec+exit of the process probe, against an empty probe and bpftrace.
    Process,
    /// Cost per block I/O of the block probe, against an empty probe and bpftrace.
    Block,
    /// CPU of pushing every second (remote write, OTLP), against a Prometheus agent scraping and forwarding.
    Push,
    /// Cost per TCP reset of the tcp probe's reset programs, against bpftrace.
    Resets,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    match args.which {
        Benchmark::Syscalls => syscalls::run(&args),
        Benchmark::Scrape => scrape::run(&args),
        Benchmark::Sched => sched::run(&args),
        Benchmark::Tcp => tcp::run(&args),
        Benchmark::Soak => soak::run(&args),
        Benchmark::Process => process::run(&args),
        Benchmark::Block => block::run(&args),
        Benchmark::Push => push::run(&args),
        Benchmark::Resets => resets::run(&args),
    }
}

// ---------------------------------------------------------------------------
// Rounds and statistics

/// Runs `measure` once per configuration per round. Round `r` starts at
/// configuration `r` (mod n) so no configuration is always first or last.
/// Returns the results per configuration, in the order of `configs`.
pub fn interleaved<C, R>(
    rounds: u32,
    configs: &[C],
    mut measure: impl FnMut(u32, &C) -> Result<R>,
) -> Result<Vec<Vec<R>>> {
    let mut results: Vec<Vec<R>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in rotated(configs.len(), round as usize) {
            results[i].push(measure(round, &configs[i])?);
        }
    }
    Ok(results)
}

/// 0..n starting at `start` (mod n) and wrapping around.
fn rotated(n: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + start) % n.max(1))
}

/// Median of the values (mean of the middle two for an even count); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

// ---------------------------------------------------------------------------
// The machine and processes, from /proc

/// CPU time (user + system, every thread) a process has used so far.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("unexpected format of {path}"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// utime + stime of a /proc/<pid>/stat line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its closing ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; utime and stime are 14 and 15.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0, // what Linux uses everywhere
    }
}

/// Resident set size of a process, in bytes (VmRSS).
pub fn process_rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

/// The running kernel's release, e.g. 6.18.44.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The first CPU's model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "benchmarks load eBPF programs and must run as root (try `sudo cargo xtask bench ...`)"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CPU pinning

/// CPUs the calling thread may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the size matches it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    let cpus = (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    Ok(cpus)
}

/// Pins the calling thread (not the process) to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    // SAFETY: as above; CPU_SET only writes inside the set for cpu < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} is out of range");
    }
    unsafe { libc::CPU_SET(cpu, &mut set) };
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot pin the workload thread to CPU {cpu}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The agent binary

/// `$AGENT_BIN` if set; otherwise builds the agent (release) and returns
/// `<target dir>/release/agent`.
pub fn agent_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("AGENT_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("AGENT_BIN={} does not exist", path.display());
        }
        return Ok(path);
    }
    crate::cmd::cargo(&["build", "--release", "-p", "agent"])?;
    let path = harness::agent::built_agent();
    if !path.is_file() {
        bail!("built the agent but {} is missing", path.display());
    }
    Ok(path)
}

// ---------------------------------------------------------------------------
// Background processes

/// A child process that is always stopped: by `stop`, or else when dropped
/// (an error or panic anywhere in a benchmark must not leave probes attached).
///
/// Its stdout is read line by line on a thread that keeps draining it until
/// the child exits, so a child that prints a lot while stopping (bpftrace
/// dumps its maps on SIGINT) never blocks on a full pipe. Its stderr is kept
/// (the last few KiB) for error messages.
pub struct Background {
    name: String,
    child: Child,
    stop_signal: i32,
    stdout_lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stopped: bool,
}

/// How long a child may take to exit after its stop signal before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
const STDERR_KEEP: usize = 4096;

impl Background {
    /// Starts `cmd`; `stop_signal` (e.g. SIGTERM) is what asks it to exit cleanly.
    pub fn spawn(name: &str, mut cmd: Command, stop_signal: i32) -> Result<Background> {
        // Drop cannot run if xtask itself is killed: have the kernel send the
        // stop signal then. (It fires when the spawning thread exits; benchmarks
        // spawn from the main thread.)
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(move || {
                match libc::prctl(libc::PR_SET_PDEATHSIG, stop_signal as libc::c_ulong) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(Background {
            name: name.to_string(),
            stop_signal,
            stdout_lines: forward_lines(stdout),
            stderr: keep_tail(stderr),
            child,
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child prints a stdout line for which `ready` holds.
    pub fn wait_for_line(&mut self, timeout: Duration, ready: impl Fn(&str) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) if ready(&line) => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} not ready within {timeout:?}{}",
                        self.name,
                        self.stderr_note()
                    )
                }
                // stdout closed: the child has exited (or closed it, which it should not).
                Err(RecvTimeoutError::Disconnected) => {
                    self.check_running()?;
                    bail!(
                        "{} closed its stdout before it was ready{}",
                        self.name,
                        self.stderr_note()
                    )
                }
            }
        }
    }

    /// Polls `ready` every 50 ms until it holds, failing early if the child exits.
    pub fn wait_until(&mut self, timeout: Duration, ready: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {timeout:?}{}",
                    self.name,
                    self.stderr_note()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails (with its stderr) if the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            // Give the stderr thread a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(100));
            bail!(
                "{} exited unexpectedly ({status}){}",
                self.name,
                self.stderr_note()
            );
        }
        Ok(())
    }

    /// Sends the stop signal and waits; fails if it needed SIGKILL or exited non-zero.
    pub fn stop(mut self) -> Result<()> {
        let status = self.terminate();
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!(
                "{} exited with {s} when stopped{}",
                self.name,
                self.stderr_note()
            ),
            None => bail!(
                "{} did not exit within {STOP_GRACE:?} of its stop signal; killed it",
                self.name
            ),
        }
    }

    /// Signal, wait up to STOP_GRACE, then SIGKILL. `None` if it had to be killed.
    fn terminate(&mut self) -> Option<ExitStatus> {
        self.stopped = true;
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, self.stop_signal) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn stderr_note(&self) -> String {
        let s = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        match s.trim() {
            "" => String::new(),
            s => format!("; its stderr ends with:\n{s}"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if !self.stopped {
            self.terminate();
        }
    }
}

/// Sends each line of `pipe` to the returned channel; once nobody listens,
/// keeps reading and discarding until the pipe closes.
fn forward_lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
            line.clear();
        }
    });
    rx
}

/// Collects the last STDERR_KEEP bytes of `pipe`.
fn keep_tail(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let tail = Arc::new(Mutex::new(String::new()));
    let sink = tail.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            s.push_str(&String::from_utf8_lossy(&line));
            if s.len() > STDERR_KEEP {
                let cut = s.len() - STDERR_KEEP;
                let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.drain(..cut);
            }
            line.clear();
        }
    });
    tail
}

// ---------------------------------------------------------------------------
// HTTP and the metrics exposition

/// GETs `/metrics` (classic text format), checking the status.
pub fn scrape_text(addr: SocketAddr) -> Result<String> {
    let r = harness::http_get_accept(addr, "/metrics", "text/plain")
        .with_context(|| format!("GET http://{addr}/metrics"))?;
    if r.status != 200 {
        bail!(
            "GET http://{addr}/metrics returned {}: {}",
            r.status,
            r.body.trim()
        );
    }
    Ok(r.body)
}

/// GETs `/metrics` and parses it.
pub fn scrape(addr: SocketAddr) -> Result<Exposition> {
    Exposition::try_parse(&scrape_text(addr)?)
        .map_err(|e| anyhow::anyhow!("http://{addr}/metrics: {e}"))
}

/// How long a started process may take to attach its probes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// bpftrace prints "Attaching N probes..." before it has attached them.
pub const BPFTRACE_ATTACH_WAIT: Duration = Duration::from_secs(1);
/// Baseline range (max - min) over its median above which a report warns.
pub const NOISY_SPREAD: f64 = 0.2;

/// Fails with how to install bpftrace (the peer) when it cannot run.
pub fn require_bpftrace() -> Result<()> {
    match Command::new("bpftrace").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!("`bpftrace --version` failed ({})", out.status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "bpftrace (the peer) is not installed: `cargo xtask setup --test-tools` installs it"
            )
        }
        Err(e) => Err(e).context("cannot run bpftrace"),
    }
}

/// The CPU asked for, or the last one this process may use (CPU 0 tends to
/// take more interrupts).
pub fn workload_cpu(asked: Option<usize>) -> Result<usize> {
    let allowed = allowed_cpus()?;
    match asked {
        Some(cpu) if allowed.contains(&cpu) => Ok(cpu),
        Some(cpu) => bail!("--cpu {cpu} is not one of the CPUs we may use: {allowed:?}"),
        None => allowed.last().copied().context("no CPU allowed"),
    }
}

/// The table of configurations: median (min..max) of `unit` per config and
/// what each adds to the first (the baseline), with a note when the
/// baseline itself varied too much between rounds.
pub fn print_configs(unit: &str, names: &[&str], stats: &[(f64, f64, f64)]) {
    println!();
    println!(
        "  {:<10} {:>10} {:>20} {:>10}",
        "config", unit, "min..max", "added ns"
    );
    let base = stats[0].0;
    for (i, (name, (med, lo, hi))) in names.iter().zip(stats).enumerate() {
        let added = if i == 0 {
            "-".to_string()
        } else {
            format!("{:+.1}", med - base)
        };
        println!(
            "  {:<10} {:>10.1} {:>20} {:>10}",
            name,
            med,
            format!("{lo:.1}..{hi:.1}"),
            added
        );
    }
    let (bmed, blo, bhi) = stats[0];
    if (bhi - blo) / bmed > NOISY_SPREAD {
        println!(
            "  note: baseline varied by {:.0}% between rounds: other work interfered; treat the ratio as rough",
            100.0 * (bhi - blo) / bmed
        );
    }
}

/// Starts bpftrace running `program` and waits until its probes are
/// attached. SIGINT stops it (it then prints its maps, which Background
/// drains and discards).
pub fn start_bpftrace(program: &str) -> Result<Background> {
    let mut cmd = Command::new("bpftrace");
    cmd.args(["-e", program]);
    let mut p = Background::spawn("bpftrace", cmd, libc::SIGINT)
        .context("`cargo xtask setup --test-tools` installs bpftrace")?;
    p.wait_for_line(READY_TIMEOUT, |l| l.starts_with("Attaching"))?;
    // "Attaching N probes..." comes before they are attached.
    std::thread::sleep(BPFTRACE_ATTACH_WAIT);
    p.check_running()?;
    Ok(p)
}

/// The verdict line: `label  ratio  (target <= T)  PASS` or `MISS`.
pub fn print_verdict(label: &str, ratio: f64, target: f64) {
    let verdict = if ratio <= target { "PASS" } else { "MISS" };
    println!("  {label:<30} {ratio:>5.2}  (target <= {target:.2})  {verdict}");
}

/// The command that repeats a run of benchmark `name` with these arguments.
pub fn reproduce_command(name: &str, args: &BenchArgs) -> String {
    let mut cmd = format!(
        "cargo xtask bench {name} --rounds {} --calls {}",
        args.rounds, args.calls
    );
    if let Some(cpu) = args.cpu {
        cmd.push_str(&format!(" --cpu {cpu}"));
    }
    cmd
}

/// The lines every report starts with: kernel and CPU.
pub fn print_machine() {
    println!("  kernel   {}", kernel_release());
    println!(
        "  cpu      {} ({} CPUs online)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// Starts `agent <args...> --listen 127.0.0.1:<free port>` and waits until
/// its /readyz answers 200 (probes attached).
pub fn start_agent(agent: &Path, args: &[&str]) -> Result<(Background, SocketAddr)> {
    let addr: SocketAddr = ([127, 0, 0, 1], harness::free_port()).into();
    let mut cmd = Command::new(agent);
    cmd.args(args).args(["--listen", &addr.to_string()]);
    let name = format!("agent {}", args.first().copied().unwrap_or(""));
    let mut p = Background::spawn(&name, cmd, libc::SIGTERM)?;
    // An early exit's error already carries the agent's stderr; a timeout's does not.
    let ready = harness::wait_ready(addr, READY_TIMEOUT, || {
        p.check_running().map_err(|e| format!("{e:#}"))
    });
    match ready {
        Ok(()) => Ok((p, addr)),
        Err(e) if e.starts_with("not ready") => bail!("{name} {e}{}", p.stderr_note()),
        Err(e) => bail!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_order() {
        let order: Vec<Vec<usize>> = (0..4).map(|r| rotated(3, r).collect()).collect();
        assert_eq!(order, [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]);
        let mut seen = Vec::new();
        let results = interleaved(2, &["a", "b"], |round, c| {
            seen.push((round, *c));
            Ok(round)
        })
        .unwrap();
        assert_eq!(seen, [(0, "a"), (0, "b"), (1, "b"), (1, "a")]);
        assert_eq!(results, [[0, 1], [0, 1]]);
    }

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(min_max(&[2.0, 5.0, 1.0]), (1.0, 5.0));
    }

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
    }
}
