//! TCP connect probe, userspace side (kernel side: agent-ebpf/src/tcp.rs;
//! records: agent-common/src/tcp.rs; test: tests/tcp.rs).
//! One ring-buffer event per finished connect, and per retransmit or reset
//! (a second ring, `peer.rs`); the kernel wakes us once a burst has filled
//! part of a ring, and a timer drains as well.

mod aggregate;
mod metrics;
mod peer;
mod peer_counts;
pub(crate) mod view;

use super::series::{Series, SeriesInputs};
use super::{Loss, Prepare, Probe, Running, Start};
use crate::bpf::LoadPlan;
use crate::k8s::cgroupfs::low32;
use crate::k8s::{Attribution, Slot};
use crate::probes::stats::ProbeStats;
use crate::tracefs::field;
use agent_common::counters;
use agent_common::tcp::{ConnectEvent, ConnectStart, TcpOffsets};
use aggregate::TcpAggregate;
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use peer_counts::{PeerCounts, Shared};
use prometheus_client::collector::Collector;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) const PROBE: Probe = Probe {
    name: "tcp",
    about: "outgoing TCP connects: latency, outcome, destination; passive opens; retransmits and resets by destination",
    needs: "tracepoint sock:inet_sock_set_state with tracefs, BPF ring buffers (5.8); optional, for retransmits and resets: tracepoints tcp:tcp_retransmit_skb, tcp_send_reset, tcp_receive_reset with address fields",
    needs_tracefs: true,
    streams: true,
    losses: &[
        ("ringbuf_full", Loss::Kernel(counters::TCP_RINGBUF_DROPS)),
        (
            "inflight_map_full",
            Loss::Kernel(counters::TCP_INFLIGHT_FULL),
        ),
        (
            "peer_ringbuf_full",
            Loss::Kernel(counters::TCP_PEER_RINGBUF_DROPS),
        ),
        ("owned_map_full", Loss::Kernel(counters::TCP_OWNED_FULL)),
        (
            "peer_read_failed",
            Loss::Kernel(counters::TCP_PEER_READ_FAILED),
        ),
        ("decode", Loss::Decode),
    ],
    prepare,
    start,
    series,
    render: Some(view::render),
};

/// The latency histogram and outcomes per label set; node-wide: destinations
/// x outcomes, destinations (plus "unknown") x retransmits and resets sent
/// and received, the folded count, accepts and in-flight.
fn series(i: &SeriesInputs) -> Series {
    let outcomes = aggregate::Outcome::ALL.len() as u64;
    let per_set = i.histogram + outcomes;
    let connects = i.tcp_destination.saturating_add(1).saturating_mul(outcomes);
    let peers = i.tcp_destination.saturating_add(2).saturating_mul(3);
    Series {
        host: per_set + connects + peers + 3,
        per_container: per_set,
    }
}

/// The classic tracepoints' records are read at this kernel's offsets
/// (tracefs), so they are found before the object loads. Retransmits and
/// resets are optional: without their tracepoints, connects still work.
fn prepare(p: &Prepare<'_>, plan: &mut LoadPlan) -> Result<()> {
    let tracefs = crate::tracefs::ensure_mounted()?;
    plan.global("TCP_OFFSETS", &offsets(&tracefs, p.btf)?);
    if let Ok(peer) = peer::offsets(&tracefs) {
        plan.global("TCP_PEER_OFFSETS", &peer);
    }
    plan.per_cpu_map_size(
        "TCP_PEER_COUNTS",
        peer_counts::map_entries(p.opts.tcp_destination_budget),
        size_of::<u64>(),
        peer_counts::MAP_MEMORY,
    );
    Ok(())
}

fn start(ebpf: &mut Ebpf, s: &mut Start<'_>) -> Result<Box<dyn Running>> {
    let Attached { ring, in_flight } = attach(ebpf)?;
    let (peer_ring, peers) = match attach_peer(ebpf, s.kernel.clone()) {
        Ok((ring, peers)) => (Some(ring), Some(peers)),
        Err(e) => {
            tracing::warn!("TCP retransmits and resets are not counted: {e:#}");
            (None, None)
        }
    };
    let agg = TcpAggregate::new(s.opts.hdr_precision, s.opts.tcp_destination_budget);
    let shared = Shared::new(agg, peers);
    s.tasks.push(spawn(
        ring,
        shared.clone(),
        s.opts.attribution.clone(),
        s.stats.clone(),
        s.opts.flush_interval,
        s.stop.clone(),
    )?);
    if let Some(ring) = peer_ring {
        let (shared, stats) = (shared.clone(), s.stats.clone());
        let drain = move |ring: &mut RingBuf<MapData>| peer::drain(ring, &shared, &stats);
        s.tasks.push(super::ring_drain::spawn(
            "TCP peer",
            ring,
            s.opts.flush_interval,
            s.stop.clone(),
            drain,
            || {},
        )?);
    }
    Ok(Box::new(Tcp {
        shared,
        attribution: s.opts.attribution.clone(),
        in_flight,
        kernel: s.kernel.clone(),
    }))
}

/// The kernel's map of connects in SYN_SENT, read at scrape time.
type InFlightMap = BpfHashMap<MapData, u64, ConnectStart>;

struct Tcp {
    shared: Shared,
    attribution: Option<Arc<Attribution>>,
    in_flight: Arc<Mutex<InFlightMap>>,
    kernel: Arc<crate::bpf::KernelCounters>,
}

impl Running for Tcp {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(metrics::TcpCollector {
            shared: self.shared.clone(),
            attribution: self.attribution.clone(),
            in_flight: self.in_flight.clone(),
            kernel: self.kernel.clone(),
        })
    }

    fn reload(&self, budgets: &super::Budgets) {
        // Through `record`: a raised budget turns the kernel's folding off.
        self.shared
            .record(|agg| agg.set_budget(budgets.tcp_destination));
    }

    fn attach_view(&self) -> Option<Box<dyn super::AttachView>> {
        Some(Box::new(view::TcpView::new(self.shared.clone())))
    }
}

/// Field offsets of `sock/inet_sock_set_state` on this kernel, and of
/// `sock.sk_err` from kernel BTF (without it, failed connects cannot be told
/// apart and are reported as other_error).
fn offsets(
    tracefs: &Path,
    btf: Result<&crate::btf::KernelBtf, &anyhow::Error>,
) -> Result<TcpOffsets> {
    let state = |name| field(tracefs, "sock", "inet_sock_set_state", name);
    let protocol = state("protocol")?;
    let sk_err = match btf {
        Ok(btf) => btf.member_offset("sock", "sk_err"),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let sk_err = sk_err.unwrap_or_else(|e| {
        tracing::warn!("failed TCP connects will not be classified: {e:#}");
        0
    });
    Ok(TcpOffsets {
        skaddr: state("skaddr")?.offset,
        oldstate: state("oldstate")?.offset,
        newstate: state("newstate")?.offset,
        sport: state("sport")?.offset,
        dport: state("dport")?.offset,
        family: state("family")?.offset,
        protocol: protocol.offset,
        protocol_size: protocol.size,
        saddr_v6: state("saddr_v6")?.offset,
        daddr_v6: state("daddr_v6")?.offset,
        sk_err,
        _pad: 0,
    })
}

struct Attached {
    ring: RingBuf<MapData>,
    in_flight: Arc<Mutex<InFlightMap>>,
}

fn attach(ebpf: &mut Ebpf) -> Result<Attached> {
    super::attach_tracepoint(ebpf, "inet_sock_set_state", "sock", "inet_sock_set_state")?;
    let ring = RingBuf::try_from(ebpf.take_map("TCP_EVENTS").context("TCP_EVENTS missing")?)?;
    let in_flight = BpfHashMap::try_from(
        ebpf.take_map("TCP_INFLIGHT")
            .context("TCP_INFLIGHT missing")?,
    )?;
    Ok(Attached {
        ring,
        in_flight: Arc::new(Mutex::new(in_flight)),
    })
}

/// Attaches the retransmit and reset programs, if this kernel's records have
/// the fields they read (checked again here: prepare left the defaults otherwise).
fn attach_peer(
    ebpf: &mut Ebpf,
    kernel: Arc<crate::bpf::KernelCounters>,
) -> Result<(RingBuf<MapData>, PeerCounts)> {
    let offsets = peer::offsets(&crate::tracefs::ensure_mounted()?)?;
    // The keys first: no event may find the map empty of "unknown".
    let peers = PeerCounts::take(ebpf, kernel)?;
    for (tp, program) in peer::TRACEPOINTS.into_iter().zip(peer::programs(&offsets)) {
        if program != tp {
            match super::attach_tracepoint(ebpf, program, "tcp", tp) {
                Ok(()) => continue,
                // The generic program reads the same fields, only dearer.
                Err(e) => tracing::info!("{e:#}; tcp/{tp} gets the generic program"),
            }
        }
        super::attach_tracepoint(ebpf, tp, "tcp", tp)?;
    }
    let ring = ebpf
        .take_map("TCP_PEER_EVENTS")
        .context("TCP_PEER_EVENTS missing")?;
    Ok((RingBuf::try_from(ring)?, peers))
}

fn drain(
    ring: &mut RingBuf<MapData>,
    shared: &Shared,
    attribution: Option<&Attribution>,
    stats: &ProbeStats,
) {
    while let Some(item) = ring.next() {
        match super::ring_drain::decode::<ConnectEvent>(&item) {
            Some(ev) => {
                let slot = attribution.map_or(Slot::HOST, |a| a.lock().slot(low32(ev.cgroup)));
                shared.record(|agg| agg.record(&ev, slot));
                stats.add_events(1);
            }
            None => stats.add_decode_error(),
        }
    }
}

fn spawn(
    ring: RingBuf<MapData>,
    shared: Shared,
    attribution: Option<Arc<Attribution>>,
    stats: Arc<ProbeStats>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let drain_ring =
        move |ring: &mut RingBuf<MapData>| drain(ring, &shared, attribution.as_deref(), &stats);
    super::ring_drain::spawn("TCP", ring, interval, shutdown, drain_ring, || {})
}
