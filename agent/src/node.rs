//! Node mode: load and attach the probes, drain them, serve /metrics until a
//! signal, then detach everything and exit.

use crate::aggregate::SyscallAggregate;
use crate::bpf::{self, KernelCounters, LoadOptions};
use crate::cli::RunArgs;
use crate::stats::AgentStats;
use crate::{export, probes, shutdown, target, tracefs};
use anyhow::Result;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(args: RunArgs) -> Result<()> {
    let target_tgid = match args.pid {
        Some(pid) => target::validate(&args.procfs, pid)?,
        None => 0,
    };
    bpf::check_privileges()?;
    // Bind first: a busy port should fail before anything touches the kernel.
    let listener = export::bind(args.listen).await?;
    let mut ebpf = bpf::load(&LoadOptions {
        target_tgid,
        pid_max: bpf::pid_max(),
        ring_bytes: args.ring_buffer_bytes,
    })?;
    let kernel = Arc::new(KernelCounters::take(&mut ebpf)?);
    let stats = Arc::new(AgentStats::default());
    let syscalls = Arc::new(Mutex::new(SyscallAggregate::new(
        args.hdr_precision,
        args.unknown_syscall_budget,
    )));
    let (stop_tx, stop_rx) = watch::channel(false);
    let interval = Duration::from_millis(args.flush_interval_ms);

    let mut tasks = Vec::new();
    match probes::syscalls::attach(&mut ebpf) {
        Ok(attached) => {
            tasks.push(probes::syscalls::spawn(
                attached,
                syscalls.clone(),
                stats.clone(),
                interval,
                stop_rx.clone(),
            )?);
            stats.syscalls.attached.store(true, Relaxed);
        }
        Err(e) if args.strict => return Err(e.context("syscall probe (--strict)")),
        Err(e) => tracing::warn!("syscall probe not attached, continuing without it: {e:#}"),
    }
    stats.ready.store(true, Relaxed);

    let registry = export::registry(syscalls, stats.clone(), Some(kernel));
    let addr = listener.local_addr()?;
    let server = tokio::spawn(export::serve(listener, registry, stats, stop_rx));
    match target_tgid {
        0 => tracing::info!("tracing all processes; metrics on http://{addr}/metrics"),
        pid => tracing::info!("tracing PID {pid}; metrics on http://{addr}/metrics"),
    }

    shutdown::first_signal().await;
    tracing::info!("stopping: detaching probes");
    let _ = stop_tx.send(true);
    drop(ebpf); // detaches every program
    tracing::debug!("probes detached");
    // Open keep-alive connections must not hold up the exit.
    let grace = Duration::from_millis(500);
    for t in tasks {
        let _ = tokio::time::timeout(grace, t).await;
    }
    tracing::debug!("drain tasks stopped");
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Err(e))) => Err(e),
        _ => Ok(()),
    }
}

/// Hidden `bench-floor`: empty programs on the syscall raw tracepoints (the
/// agent's attach type; `--classic`: the classic tracepoints), so the
/// benchmark can measure what attaching anything costs.
pub async fn bench_floor(classic: bool) -> Result<()> {
    let mut ebpf = bpf::load_plain()?;
    if classic {
        tracefs::ensure_mounted()?;
        probes::attach_tracepoint(&mut ebpf, "floor_sys_enter", "raw_syscalls", "sys_enter")?;
        probes::attach_tracepoint(&mut ebpf, "floor_sys_exit", "raw_syscalls", "sys_exit")?;
    } else {
        probes::attach_raw_tracepoint(&mut ebpf, "floor_raw_sys_enter", "sys_enter")?;
        probes::attach_raw_tracepoint(&mut ebpf, "floor_raw_sys_exit", "sys_exit")?;
    }
    println!("ready");
    shutdown::first_signal().await;
    Ok(())
}
