//! Node mode: load and attach the probes, drain them, serve /metrics until a
//! signal, then detach everything and exit.

use crate::aggregate::SyscallAggregate;
use crate::bpf::{self, KernelCounters, LoadOptions};
use crate::cli::RunArgs;
use crate::stats::AgentStats;
use crate::tcp::{TcpAggregate, TcpCollector};
use crate::{collectors, export, probes, shutdown, target, tracefs};
use anyhow::Result;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(args: RunArgs) -> Result<()> {
    let target_tgid = match args.pid {
        Some(pid) => target::validate(&args.collectors.procfs, pid)?,
        None => 0,
    };
    let node_registry = collectors::registry(&args.collectors, args.pid)?;
    bpf::check_privileges()?;
    // Bind first: a busy port should fail before anything touches the kernel.
    let listener = export::bind(args.listen).await?;
    // The TCP probe reads classic tracepoint records: it needs tracefs and this
    // kernel's offsets before loading. Without them it is reported unattached.
    let tcp_offsets = tracefs::ensure_mounted().and_then(|root| probes::tcp::offsets(&root));
    // The run-queue probe reads task_struct fields at offsets from kernel BTF.
    let task_offsets = probes::sched::offsets();
    let mut ebpf = bpf::load(&LoadOptions {
        target_tgid,
        tcp_offsets: tcp_offsets.as_ref().copied().unwrap_or_default(),
        task_offsets: task_offsets.as_ref().copied().unwrap_or_default(),
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
    let tcp = Arc::new(Mutex::new(TcpAggregate::new(
        args.hdr_precision,
        args.tcp_destination_budget,
    )));
    let tcp_collector = match tcp_offsets.and_then(|_| probes::tcp::attach(&mut ebpf)) {
        Ok(attached) => {
            let in_flight = attached.in_flight.clone();
            let ring = attached.into_ring();
            tasks.push(probes::tcp::spawn(
                ring,
                tcp.clone(),
                stats.clone(),
                interval,
                stop_rx.clone(),
            )?);
            stats.tcp.attached.store(true, Relaxed);
            Some(TcpCollector {
                agg: tcp,
                in_flight: Box::new(move || probes::tcp::count_in_flight(&in_flight)),
            })
        }
        Err(e) if args.strict => return Err(e.context("TCP probe (--strict)")),
        Err(e) => {
            tracing::warn!("TCP probe not attached, continuing without it: {e:#}");
            None
        }
    };
    let runq = match task_offsets.and_then(|_| probes::sched::attach(&mut ebpf)) {
        Ok(collector) => {
            stats.sched.attached.store(true, Relaxed);
            Some(collector)
        }
        Err(e) if args.strict => return Err(e.context("run-queue probe (--strict)")),
        Err(e) => {
            tracing::warn!("run-queue probe not attached, continuing without it: {e:#}");
            None
        }
    };
    stats.ready.store(true, Relaxed);

    let registries = vec![
        export::registry(syscalls, tcp_collector, runq, stats.clone(), Some(kernel)),
        node_registry,
    ];
    let addr = listener.local_addr()?;
    let server = tokio::spawn(export::serve(listener, registries, stats, stop_rx));
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
