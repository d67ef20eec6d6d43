//! TCP connect probe, userspace side (kernel side: agent-ebpf/src/tcp.rs).
//! One ring-buffer event per finished connect; the kernel wakes us per event
//! (connects are rare), and a timer drains as a fallback.

use crate::k8s::cgroupfs::low32;
use crate::k8s::{Attribution, Slot};
use crate::stats::ProbeStats;
use crate::tcp::TcpAggregate;
use crate::tracefs::field;
use agent_common::tcp::{ConnectEvent, ConnectStart, TcpOffsets};
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Field offsets of `sock/inet_sock_set_state` on this kernel, and of
/// `sock.sk_err` from kernel BTF (without it, failed connects cannot be told
/// apart and are reported as other_error).
pub fn offsets(
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

pub struct Attached {
    ring: RingBuf<MapData>,
    /// The in-flight map, read at scrape time for the in-flight gauge.
    pub in_flight: Arc<Mutex<BpfHashMap<MapData, u64, ConnectStart>>>,
}

pub fn attach(ebpf: &mut Ebpf) -> Result<Attached> {
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

/// Number of connects the kernel is tracking in SYN_SENT.
pub fn count_in_flight(map: &Mutex<BpfHashMap<MapData, u64, ConnectStart>>) -> Option<u64> {
    let map = map.lock().ok()?;
    Some(map.keys().filter(Result::is_ok).count() as u64)
}

fn decode(bytes: &[u8]) -> Option<ConnectEvent> {
    (bytes.len() >= size_of::<ConnectEvent>()).then(|| {
        // SAFETY: long enough, and ConnectEvent is plain integers.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnectEvent>()) }
    })
}

fn drain(
    ring: &mut RingBuf<MapData>,
    agg: &Mutex<TcpAggregate>,
    attribution: Option<&Attribution>,
    stats: &ProbeStats,
) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(ev) => {
                let slot = attribution.map_or(Slot::HOST, |a| a.lock().slot(low32(ev.cgroup)));
                agg.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&ev, slot);
                stats.add_events(1);
            }
            None => {
                stats.decode_errors.fetch_add(1, Relaxed);
            }
        }
    }
}

pub fn spawn(
    ring: RingBuf<MapData>,
    agg: Arc<Mutex<TcpAggregate>>,
    attribution: Option<Arc<Attribution>>,
    stats: Arc<crate::stats::AgentStats>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let drain_ring =
        move |ring: &mut RingBuf<MapData>| drain(ring, &agg, attribution.as_deref(), &stats.tcp);
    super::ring::spawn_drain("TCP", ring, interval, shutdown, drain_ring, || {})
}

impl Attached {
    pub fn into_ring(self) -> RingBuf<MapData> {
        self.ring
    }
}
