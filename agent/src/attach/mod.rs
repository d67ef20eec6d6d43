//! `agent attach`: watch one process live. Attaches to a PID (or runs a
//! command, held before exec until the probes are in place), filters in the
//! kernel to it (and, unless `--no-children`, to what it forks), and every interval
//! draws a terminal view or writes a JSON line. Stops on `--duration`, Ctrl-C,
//! or when the process exits, with a final summary. See docs/attach.md.

pub mod json;
pub mod procstat;
pub mod snapshot;
pub mod spawn;
pub mod view;

use crate::cli::AttachArgs;
use crate::probes::PROBES;
use crate::{bpf, http, probes, shutdown, target};
use anyhow::{Result, bail};
use snapshot::{ExitInfo, ProbeState, Snapshot, Snapshotter, Sources};
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;

/// How often the kernel's staged records are flushed and drained.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often a `--pid` target is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// Why the watch ended.
enum End {
    Duration,
    Signal,
    /// The target exited; the status is known for a command the agent ran.
    Exited(Option<std::process::ExitStatus>),
}

fn comm(procfs: &std::path::Path, pid: u32) -> String {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

pub async fn run(args: AttachArgs) -> Result<()> {
    // Before anything starts: an early Ctrl-C must stop us cleanly.
    let signals = shutdown::Signals::install()?;
    // Input first, then privileges, then the port: mistakes cost nothing.
    if let Some(pid) = args.pid {
        target::validate(&args.procfs, pid)?;
    }
    // Attach mode runs every probe of the table.
    let every: Vec<String> = PROBES.iter().map(|p| p.name.to_string()).collect();
    bpf::check_privileges(&probes::reading_tracefs(&every))?;
    let listener = match args.listen {
        Some(addr) => Some(http::bind(addr, "--listen").await?),
        None => None,
    };
    let held = match args.command.is_empty() {
        true => None,
        false => Some(spawn::hold(&args.command)?),
    };
    let pid = match (&held, args.pid) {
        (Some(h), _) => h.pid,
        (None, Some(pid)) => pid,
        (None, None) => bail!("give --pid PID, or a command after --"),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // On failure, `held` is dropped and the command exits without running.
    let started = probes::start_all(
        &probes::StartOptions {
            target_tgid: pid,
            follow_children: !args.no_children,
            exec_events: None,
            strict: false,
            ring_bytes: args.ring_buffer_bytes,
            hdr_precision: args.hdr_precision,
            flush_interval: FLUSH_INTERVAL,
            unknown_syscall_budget: 64,
            container_syscall_budget: 64,
            tcp_destination_budget: 50,
            probes: PROBES.iter().map(|p| p.name.to_string()).collect(),
            attribution: None,
        },
        stop_rx.clone(),
    )?;
    let mut exited = match held {
        Some(h) => Some(spawn::wait(h.release(&args.command[0])?)),
        None => None,
    };
    if exited.is_none() && !procstat::alive(&args.procfs, pid) {
        bail!("PID {pid} exited while the agent was attaching; nothing to watch");
    }
    let comm = comm(&args.procfs, pid);

    let server = match listener {
        Some(listener) => {
            let registry = crate::self_metrics::registry(&started, None, None);
            // Plain HTTP on the address given: attach mode is an interactive tool.
            let endpoint = http::Endpoint::new(listener, http::Options::default())?;
            tracing::info!("metrics for PID {pid} on {}/metrics", endpoint.url());
            Some(tokio::spawn(endpoint.serve(
                std::sync::Arc::new(vec![registry]),
                started.stats.clone(),
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let probes::Started {
        ebpf,
        kernel,
        stats,
        running,
        tasks,
        missing,
        ..
    } = started;
    let probe_states = || -> Vec<ProbeState> {
        stats
            .probes
            .iter()
            .map(|(probe, s)| ProbeState {
                probe: probe.name,
                attached: s.attached.load(Relaxed),
                reason: missing
                    .iter()
                    .find(|(p, _)| *p == probe.name)
                    .map(|(_, r)| r.clone()),
            })
            .collect()
    };
    // What the kernel could not deliver: every ring buffer's overflow.
    let events_lost = || -> u64 {
        stats
            .probes
            .iter()
            .flat_map(|(probe, s)| probe.losses.iter().map(move |l| (l, s)))
            .filter(|((stage, _), _)| *stage == "ringbuf_full")
            .map(|((_, loss), s)| loss.count(kernel.as_deref(), s))
            .sum()
    };
    let views = running
        .iter()
        .filter_map(|(_, r)| r.attach_view())
        .collect();
    let mut procstat = procstat::ProcStat::new(&args.procfs, pid);
    let mut snapshots = Snapshotter::new(pid, comm, views);
    let mut take = |is_final: bool, process: Option<procstat::ProcStats>| -> Snapshot {
        snapshots.take(
            Sources {
                probes: probe_states(),
                process,
                events_lost: events_lost(),
            },
            is_final,
        )
    };
    let tty = std::io::stdout().is_terminal();
    let show = |s: &Snapshot| {
        let text = if args.json {
            json::line(s)
        } else if tty {
            format!("{}{}", view::CLEAR, view::render(s))
        } else {
            format!("{}\n", view::render(s))
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    };
    procstat.sample(); // CPU % needs a first reading

    let interval = Duration::from_secs_f64(args.interval);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(EXIT_POLL);
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let signal = signals.first();
    tokio::pin!(signal);
    let end = loop {
        tokio::select! {
            _ = tick.tick() => {
                let process = procstat.sample();
                show(&take(false, process));
            }
            _ = &mut until_deadline => break End::Duration,
            _ = &mut signal => break End::Signal,
            status = async { exited.as_mut().unwrap().await }, if exited.is_some() => {
                break End::Exited(status.ok());
            }
            _ = poll.tick(), if exited.is_none() => {
                if !procstat::alive(&args.procfs, pid) {
                    break End::Exited(None);
                }
            }
        }
    };
    // A command still running after Ctrl-C (it had its own SIGINT) gets a moment to exit.
    let end_was_signal = matches!(end, End::Signal);
    let status = match (end, exited) {
        (End::Exited(status), _) => status,
        (End::Signal, Some(rx)) => tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .ok()
            .and_then(Result::ok),
        _ => None,
    };
    // Stop the drains: each flushes what the CPUs staged and drains once more.
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_millis(1000), t).await;
    }
    let process = procstat
        .sample()
        .filter(|_| procstat::alive(&args.procfs, pid));
    let mut last = take(true, process);
    let code = match status {
        Some(status) => {
            let (code, signal) = spawn::exit_code(status);
            last.exit = Some(ExitInfo { code, signal });
            code
        }
        // Ctrl-C while the agent's own command still runs.
        None if end_was_signal && !args.command.is_empty() => 130,
        None => 0,
    };
    if tty && !args.json {
        // The summary stays on screen below the last view.
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", view::CLEAR);
    }
    show(&last);
    drop(ebpf); // detaches every program
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    }
    if code != 0 {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(code);
    }
    Ok(())
}
