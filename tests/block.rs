//! The block I/O probe end to end (agent/src/probes/block, fed by
//! agent-ebpf/src/block.rs): O_DIRECT reads and writes on a loop device of
//! our own must show up exactly, by device and operation, in the queue and
//! device histograms and in the size buckets; bpftrace counting
//! block_rq_complete and the kernel's /proc/diskstats (the agent's diskstats
//! collector) must agree. With container labels, a fake pod's I/O carries
//! exactly its labels.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use tests::{Agent, Bpftrace, Exposition, LoopDevice, Pod, PodLogs, Workload};

const READS: u64 = 40;
const WRITES: u64 = 24;
const DEVICE: &str = "ebpf_agent_block_io_device_seconds";
const QUEUE: &str = "ebpf_agent_block_io_queue_seconds";
const SIZE: &str = "ebpf_agent_block_io_size_bytes";
const STAGES: [&str; 4] = [
    "inflight_full",
    "complete_without_issue",
    "histogram_map_full",
    "request_read_failed",
];

fn count(e: &Exposition, family: &str, device: &str, op: &str) -> f64 {
    e.get(
        &format!("{family}_count"),
        &[("device", device), ("op", op)],
    )
    .unwrap_or(0.0)
}

fn losses(e: &Exposition) -> Vec<f64> {
    STAGES
        .iter()
        .map(|s| {
            e.value(
                "ebpf_agent_events_dropped_total",
                &[("probe", "block"), ("stage", s)],
            )
        })
        .collect()
}

/// How requests reach the device: issued directly (the loop device's
/// default, no scheduler), or each inserted into an I/O scheduler first.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Scheduled,
}

fn loop_device(path: Path) -> LoopDevice {
    let disk = LoopDevice::new(16);
    if path == Path::Scheduled {
        disk.set_scheduler("mq-deadline");
    }
    disk
}

/// Checks the loop device's rows: READS 4 KiB reads, WRITES 64 KiB writes,
/// nothing else; queue counts never above device counts, and exactly them
/// when every request went through the scheduler.
fn assert_exact(e: &Exposition, dev: &str, path: Path) {
    assert_eq!(
        e.value("ebpf_agent_probe_attached", &[("probe", "block")]),
        1.0
    );
    assert_eq!(count(e, DEVICE, dev, "read"), READS as f64, "reads");
    assert_eq!(count(e, DEVICE, dev, "write"), WRITES as f64, "writes");
    for op in ["flush", "discard", "other"] {
        assert_eq!(count(e, DEVICE, dev, op), 0.0, "{op}");
    }
    for (op, n, bytes) in [("read", READS, 4096.0), ("write", WRITES, 65536.0)] {
        let labels = [("device", dev), ("op", op)];
        assert_eq!(count(e, SIZE, dev, op), n as f64, "{op} sizes");
        assert_eq!(e.value(&format!("{SIZE}_sum"), &labels), n as f64 * bytes);
        // Every request in the bucket of its size, none below it.
        for (le, cum) in e.buckets(SIZE, &labels) {
            let want = if le >= bytes { n as f64 } else { 0.0 };
            assert_eq!(cum, want, "{op} size bucket le={le}");
        }
        let queued = count(e, QUEUE, dev, op);
        match path {
            Path::Direct => assert!(
                queued <= n as f64,
                "{op}: {queued} queue times for {n} requests"
            ),
            Path::Scheduled => assert_eq!(queued, n as f64, "{op} queue times"),
        }
        let device = e.buckets(DEVICE, &labels);
        assert_eq!(
            device.last().map(|b| b.1),
            Some(n as f64),
            "{op} +Inf bucket"
        );
    }
}

/// Node mode: the loop device's counts are exact and agree with bpftrace and
/// with /proc/diskstats (the agent's own collector, loop devices included).
#[test]
fn loop_device_io_counts_exactly_and_agrees_with_bpftrace_and_diskstats() {
    node_mode(Path::Direct);
}

/// The same through mq-deadline: each request is inserted, then issued (by
/// the submitter or a kworker), and has exactly one queue time.
#[test]
fn scheduled_io_has_a_queue_time_per_request() {
    node_mode(Path::Scheduled);
}

fn node_mode(path: Path) {
    let disk = loop_device(path);
    let dev = disk.name();
    let agent = Agent::start(&[
        "--probes",
        "block",
        "--collectors",
        "diskstats",
        "--diskstats-exclude",
        "^ram[0-9]+$",
    ]);
    let bt = Bpftrace::start(&format!(
        "tracepoint:block:block_rq_complete /args->dev == {d}/ {{
           @all = count();
           if (args->nr_sector == 8) {{ @r = count(); }}
           if (args->nr_sector == 128) {{ @w = count(); }}
         }}",
        d = disk.dev()
    ));
    let before = agent.scrape();
    let w = Workload::start(&[
        "blockio",
        &disk.path,
        &READS.to_string(),
        &WRITES.to_string(),
    ]);
    w.go();
    let after = agent.scrape();
    let theirs = bt.stop_maps(&["all", "r", "w"]);
    assert_exact(&after, dev, path);
    assert_eq!(
        theirs,
        [(READS + WRITES) as f64, READS as f64, WRITES as f64],
        "bpftrace's block_rq_complete counts (all, 4 KiB, 64 KiB)"
    );
    let disk_delta = |name: &str| {
        let l = [("device", dev)];
        after.value(name, &l) - before.value(name, &l)
    };
    assert_eq!(disk_delta("node_disk_reads_completed_total"), READS as f64);
    assert_eq!(
        disk_delta("node_disk_writes_completed_total"),
        WRITES as f64
    );
    // Requests started after the first scrape are all matched: nothing lost
    // in between (before it, another disk may have had I/O in flight at attach).
    assert_eq!(losses(&after), losses(&before), "losses during the run");
    eprintln!("{dev}: agent, bpftrace and diskstats agree: {READS} reads, {WRITES} writes");
}

/// --pid mode: only the workload's I/O (claimed in its context at insert or
/// issue), exact, with zero losses.
#[test]
fn pid_mode_counts_the_process_io_with_zero_losses() {
    pid_mode(Path::Direct);
}

/// The same through mq-deadline: claimed at insert, in the workload's
/// context, and still timed when a kworker issues it.
#[test]
fn pid_mode_follows_scheduled_io_to_its_issue() {
    pid_mode(Path::Scheduled);
}

fn pid_mode(path: Path) {
    let disk = loop_device(path);
    let w = Workload::start(&[
        "blockio",
        &disk.path,
        &READS.to_string(),
        &WRITES.to_string(),
    ]);
    let agent = Agent::start(&["--pid", &w.pid(), "--probes", "block"]);
    w.go();
    let e = agent.scrape();
    assert_exact(&e, disk.name(), path);
    assert_eq!(losses(&e), [0.0; 4], "losses {STAGES:?}");
    let other_devices: f64 = e
        .matching(&format!("{DEVICE}_count"), &[])
        .filter(|s| s.labels.get("device").map(String::as_str) != Some(disk.name()))
        .map(|s| s.value)
        .sum();
    assert_eq!(other_devices, 0.0, "I/O of other processes counted");
}

/// Container labels on: a process in a fake pod does READS reads and WRITES
/// writes, a host process HOST_READS and HOST_WRITES on the same device;
/// each set counts exactly under its own labels (the host's empty), sizes
/// included, and nothing is folded. When the pod's cgroup is removed,
/// its keys leave the kernel's map and, after the retention, its series go.
#[test]
fn container_io_carries_its_pod_and_host_io_stays_unlabelled() {
    container_mode(Path::Direct);
}

/// The same through mq-deadline: the request is claimed at insert, in the
/// pod's context, and keeps its pod when a kworker issues it.
#[test]
fn scheduled_container_io_keeps_its_pod_when_a_kworker_issues_it() {
    container_mode(Path::Scheduled);
}

fn container_mode(path: Path) {
    const HOST_READS: u64 = 7;
    const HOST_WRITES: u64 = 5;
    let disk = loop_device(path);
    let dev = disk.name();
    let logs = PodLogs::new(match path {
        Path::Direct => "block-direct",
        Path::Scheduled => "block-scheduled",
    });
    let mut pod = Pod::create(logs.path(), "store", "db", false);
    let cgroup = std::fs::metadata(&pod.cgroup).unwrap().ino() as u32;
    let agent = logs.agent(&["--probes", "block", "--container-retention-secs", "1"]);
    let io = |reads: u64, writes: u64| {
        Workload::start(&[
            "blockio",
            &disk.path,
            &reads.to_string(),
            &writes.to_string(),
        ])
    };
    let w = io(READS, WRITES);
    pod.enter(&w.pid());
    w.go();
    io(HOST_READS, HOST_WRITES).go();
    let e = agent.scrape();
    let host = [("namespace", ""), ("pod", ""), ("container", "")];
    for (who, labels, reads, writes) in [
        ("pod", &pod.labels(), READS, WRITES),
        ("host", &host, HOST_READS, HOST_WRITES),
    ] {
        for (op, n, bytes) in [("read", reads, 4096.0), ("write", writes, 65536.0)] {
            let mut l = labels.to_vec();
            l.extend([("device", dev), ("op", op)]);
            let get = |name: &str| e.value(&format!("{name}_count"), &l);
            assert_eq!(get(DEVICE), n as f64, "{who} {op} completions");
            assert_eq!(get(SIZE), n as f64, "{who} {op} sizes");
            let sum = e.value(&format!("{SIZE}_sum"), &l);
            assert_eq!(sum, n as f64 * bytes, "{who} {op} bytes");
            match path {
                Path::Direct => assert!(get(QUEUE) <= n as f64, "{who} {op} queue times"),
                Path::Scheduled => assert_eq!(get(QUEUE), n as f64, "{who} {op} queue times"),
            }
        }
    }
    // Nothing else on the device, under any labels: none of its requests
    // was lost (losses are node-wide, so other disks' are not asserted here).
    let all = e.sum(&format!("{DEVICE}_count"), &[("device", dev)]);
    let want = READS + WRITES + HOST_READS + HOST_WRITES;
    assert_eq!(all, Some(want as f64), "the device's completions");
    assert_eq!(e.value("ebpf_agent_block_devices_folded_total", &[]), 0.0);
    let pod_keys = || {
        let keys = tests::bpf_maps::block_hist_keys(agent.pid());
        let mut ops: Vec<(u64, u32)> = keys
            .iter()
            .filter(|k| k.cgroup == cgroup)
            .map(|k| (u64::from(k.dev), k.op))
            .collect();
        ops.sort();
        ops
    };
    // Reads of the workload's own pages (another disk) may be the pod's too.
    let on_disk: Vec<_> = pod_keys()
        .into_iter()
        .filter(|k| k.0 == disk.dev())
        .collect();
    assert_eq!(
        on_disk,
        [(disk.dev(), 0), (disk.dev(), 1)],
        "the pod's (read, write) keys in the kernel"
    );

    // The pod ends: its keys are deleted from the kernel's map, and its
    // series go after the 1 s retention.
    pod.remove();
    let e = agent.scrape_until(Duration::from_secs(10), |e| {
        e.value("ebpf_agent_container_label_sets_retired_total", &[]) >= 1.0
    });
    assert_eq!(pod_keys(), [], "a gone pod's keys left in the kernel's map");
    let count = format!("{DEVICE}_count");
    let pod_series = e.matching(&count, &[("namespace", "store")]).count();
    assert_eq!(pod_series, 0, "a retired pod's series");
    let l = [host.as_slice(), &[("device", dev), ("op", "read")]].concat();
    assert_eq!(e.value(&format!("{DEVICE}_count"), &l), HOST_READS as f64);
}
