//! Node mode: load and attach the probes, drain them, serve /metrics until a
//! signal, then detach everything and exit.

use crate::bpf;
use crate::cli::OnTargetExit;
use crate::config::Loaded;
use crate::self_metrics::{self, BpfStats};
use crate::{collectors, http, k8s, probes, reload, shutdown, target, tracefs};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(config: Loaded) -> Result<()> {
    let signals = shutdown::Signals::install()?;
    let hangup = reload::Hangup::install()?;
    let args = config.args.clone();
    if args.children && args.pid.is_none() {
        anyhow::bail!("--children follows the children of --pid PID: give --pid too");
    }
    let target_tgid = match args.pid {
        Some(pid) => target::validate(&args.collectors.procfs, pid)?,
        None => 0,
    };
    let target_exit = args.pid.map(target::Exit::watch).transpose()?;
    let (node_registry, node) = collectors::live::registry(&args.collectors, args.pid)?;
    // `--probes none` loads nothing, so it needs no BPF privilege.
    if args.probes.iter().any(|p| p != "none") {
        bpf::check_privileges(&probes::reading_tracefs(&args.probes))?;
    }
    // Before any histogram is made (and before the kernel gets the bounds).
    if let Some(layout) = &args.latency_buckets
        && !crate::histogram::set_layout(layout.clone())
    {
        anyhow::bail!("the latency bucket layout was already in use");
    }
    let attribution = args
        .containers
        .resolve(&args.collectors.sysfs, &args.collectors.rootfs)?
        .map(|opts| Arc::new(k8s::Attribution::new(opts)));
    // Container label sets: the budget plus the shared "other".
    let label_sets = match &attribution {
        Some(_) => args.containers.container_budget as u64 + 1,
        None => 0,
    };
    let worst = probes::series::check_run(&args, label_sets)?;
    tracing::debug!(
        "at most {worst} series from the probes (--max-series {})",
        args.max_series
    );
    // A bad push URL, TLS file or queue directory fails before the kernel is touched.
    let push = crate::push::Push::new(&args.push)?;
    // Bind first: a busy port should fail before anything touches the kernel.
    let listener = http::bind(args.listen, "--listen").await?;
    let health = match args.health_listen {
        Some(addr) => Some(http::bind(addr, "--health-listen").await?),
        None => None,
    };
    // A bad web config or certificate fails here, before the kernel is touched.
    let endpoint = http::Endpoint::new(
        listener,
        http::Options {
            web_config: args.web_config_file.clone(),
            health,
            max_connections: args.web_max_connections as usize,
            max_requests: args.web_max_requests as usize,
        },
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = probes::start_all(
        &probes::StartOptions {
            target_tgid,
            follow_children: args.children,
            exec_events: args
                .exec_events
                .clone()
                .map(|path| probes::process::audit::Settings {
                    path,
                    per_second: args.exec_events_rate,
                }),
            strict: args.strict,
            ring_bytes: args.ring_buffer_bytes,
            // Prometheus gets buckets; HDR percentiles are for attach mode
            // only, and would cost memory per series (issue 17: 171 MB at 3).
            hdr_precision: 0,
            flush_interval: Duration::from_millis(args.flush_interval_ms),
            unknown_syscall_budget: args.unknown_syscall_budget,
            container_syscall_budget: args.container_syscall_budget,
            tcp_destination_budget: args.tcp_destination_budget,
            probes: args.probes.clone(),
            attribution: attribution.clone(),
        },
        stop_rx.clone(),
    )?;
    // Needs CAP_SYS_ADMIN, so before the drop; held until exit.
    let bpf_stats = BpfStats::enable(args.bpf_stats, &args.collectors.procfs);
    // Probing loads tiny programs: before the capabilities are dropped.
    let features = crate::kernel_features::KernelFeatures::probe(&args.collectors.procfs);
    let traced = args
        .pid
        .map(|pid| args.collectors.procfs.join(pid.to_string()));
    crate::privileges::drop_after_attach(&args.keep_capabilities, traced.as_deref())?;

    let reloads = reload::Metrics::new();
    let registries = vec![
        self_metrics::registry(&started, attribution.clone(), bpf_stats.as_ref()),
        node_registry,
        reloads.registry(),
        crate::privileges::registry(),
        crate::kernel_features::registry(features),
        endpoint.registry(),
    ];
    let registries = Arc::new(match &push {
        Some(p) => registries.into_iter().chain([p.registry()]).collect(),
        None => registries,
    });
    if let Some(p) = push {
        p.spawn(registries.clone(), stop_rx.clone());
    }
    let probes::Started {
        ebpf,
        stats,
        running,
        tasks,
        ..
    } = started;
    if let Some(a) = attribution {
        k8s::spawn_housekeeping(a, stop_rx.clone());
    }
    let live = reload::Live {
        node,
        probes: running.into_iter().map(|(_, r)| r).collect(),
        label_sets,
    };
    tokio::spawn(reload::run(hangup, config, live, reloads, stop_rx.clone()));
    let url = endpoint.url();
    let server = tokio::spawn(endpoint.serve(registries, stats.clone(), stop_rx));
    match target_tgid {
        0 => tracing::info!("tracing all processes; metrics on {url}/metrics"),
        pid => tracing::info!("tracing PID {pid}; metrics on {url}/metrics"),
    }

    let stop = signals.first();
    tokio::pin!(stop);
    let mut ebpf = ebpf;
    match &target_exit {
        Some(exit) => tokio::select! {
            _ = &mut stop => {}
            _ = exit.exited() => {
                // Its PID may be reused by an unrelated process, which the
                // kernel's filter would then trace as the target.
                tracing::info!("the traced process (PID {target_tgid}) exited: detaching probes");
                drop(ebpf.take());
                if let Some(running) = &stats.target_running {
                    running.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                if args.on_target_exit == OnTargetExit::Serve {
                    tracing::info!("still serving its metrics (--on-target-exit serve) until stopped");
                    (&mut stop).await;
                }
            }
        },
        None => (&mut stop).await,
    }
    tracing::info!("stopping: detaching probes");
    let _ = stop_tx.send(true);
    drop(ebpf); // detaches every program
    drop(bpf_stats);
    drop(target_exit);
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

/// Where `bench-floor` attaches its empty programs.
pub enum FloorHooks {
    /// The syscall raw tracepoints (the agent's attach type).
    RawSyscalls,
    /// The classic syscall tracepoints.
    ClassicSyscalls,
    Sched,
    Process,
    Block,
    TcpResets,
}

/// Hidden `bench-floor`: empty programs on the hooks a probe uses, so the
/// benchmarks can measure what attaching anything there costs.
pub async fn bench_floor(hooks: FloorHooks) -> Result<()> {
    let signals = shutdown::Signals::install()?;
    let mut ebpf = bpf::load_plain()?;
    let raw = |ebpf: &mut aya::Ebpf, tps: &[&str]| -> Result<()> {
        for tp in tps {
            probes::attach_raw_tracepoint(ebpf, &format!("floor_{tp}"), tp)?;
        }
        Ok(())
    };
    match hooks {
        FloorHooks::Block => raw(
            &mut ebpf,
            &[
                "block_rq_insert",
                "block_rq_issue",
                "block_rq_complete",
                "block_rq_merge",
            ],
        )?,
        FloorHooks::Process => {
            tracefs::ensure_mounted()?;
            probes::attach_tracepoint(
                &mut ebpf,
                "floor_process_exec",
                "sched",
                "sched_process_exec",
            )?;
            for tp in ["process_fork", "process_exit"] {
                probes::attach_raw_tracepoint(
                    &mut ebpf,
                    &format!("floor_{tp}"),
                    &format!("sched_{tp}"),
                )?;
            }
        }
        FloorHooks::Sched => raw(
            &mut ebpf,
            &["sched_wakeup", "sched_wakeup_new", "sched_switch"],
        )?,
        FloorHooks::ClassicSyscalls => {
            tracefs::ensure_mounted()?;
            probes::attach_tracepoint(&mut ebpf, "floor_sys_enter", "raw_syscalls", "sys_enter")?;
            probes::attach_tracepoint(&mut ebpf, "floor_sys_exit", "raw_syscalls", "sys_exit")?;
        }
        FloorHooks::TcpResets => {
            tracefs::ensure_mounted()?;
            for tp in ["tcp_send_reset", "tcp_receive_reset"] {
                probes::attach_tracepoint(&mut ebpf, &format!("floor_{tp}"), "tcp", tp)?;
            }
        }
        FloorHooks::RawSyscalls => {
            probes::attach_raw_tracepoint(&mut ebpf, "floor_raw_sys_enter", "sys_enter")?;
            probes::attach_raw_tracepoint(&mut ebpf, "floor_raw_sys_exit", "sys_exit")?;
        }
    }
    println!("ready");
    signals.first().await;
    Ok(())
}
