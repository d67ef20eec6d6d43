//! Retransmits and resets the kernel counts itself (agent-ebpf/src/tcp_peer.rs):
//! the agent puts the keys of every admitted destination into the kernel's
//! per-CPU map, turns folding on once the destination budget is spent, and
//! adds what the kernel counted to the aggregate whenever it is read. Only
//! the events neither covers reach the agent through the ring buffer.
//!
//! Nothing is deleted from the map while the agent runs (admission is
//! sticky), so it reads running totals and adds their growth: no increment
//! can land between a read and a reset, because there is no reset.

use super::aggregate::{TcpAggregate, UNKNOWN};
use super::peer::kind_of;
use crate::bpf::KernelCounters;
use crate::probes::lock;
use agent_common::counters::TCP_PEER_FOLDED;
use agent_common::tcp::{PEER_RESET_RECEIVED, PEER_RESET_SENT, PEER_RETRANSMIT, PeerKey};
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{Array, MapData, MapError, PerCpuHashMap, PerCpuValues};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

/// The map sizes for the destination budget at start: every admitted
/// destination takes three keys (one per kind), "unknown" three more. A
/// budget raised past it later still counts exactly, through the ring.
pub(super) fn map_entries(budget: usize) -> u32 {
    let keys = budget.saturating_add(1).saturating_mul(KINDS.len());
    u32::try_from(keys).unwrap_or(u32::MAX).max(1024)
}

/// Per-CPU values are 8-byte counts; at most this much for the map.
pub(super) const MAP_MEMORY: usize = 4 << 20;

const KINDS: [u16; 3] = [PEER_RETRANSMIT, PEER_RESET_SENT, PEER_RESET_RECEIVED];

/// `BPF_NOEXIST`: never overwrite a key's counts.
const NO_EXIST: u64 = 1;

/// The TCP aggregate and, where the kernel counts retransmits and resets
/// itself, its counts. Lock order: `peers`, then `agg`.
#[derive(Clone)]
pub(super) struct Shared {
    agg: Arc<Mutex<TcpAggregate>>,
    peers: Option<Arc<Mutex<PeerCounts>>>,
}

impl Shared {
    pub(super) fn new(agg: TcpAggregate, peers: Option<PeerCounts>) -> Shared {
        Shared {
            agg: Arc::new(Mutex::new(agg)),
            peers: peers.map(|p| Arc::new(Mutex::new(p))),
        }
    }

    /// Records through `f`, then hands the kernel the destinations that
    /// admitted, under one lock, so folding never turns on before their keys
    /// are in the kernel's map.
    pub(super) fn record<R>(&self, f: impl FnOnce(&mut TcpAggregate) -> R) -> R {
        let mut peers = self.peers.as_deref().map(lock);
        let mut agg = lock(&self.agg);
        let r = f(&mut agg);
        let admitted = agg.take_admitted();
        if let Some(p) = peers.as_mut() {
            p.follow(&admitted, agg.budget_spent());
        }
        r
    }

    /// The aggregate, with what the kernel counted since the last read added.
    pub(super) fn read(&self) -> MutexGuard<'_, TcpAggregate> {
        let peers = self.peers.as_deref().map(lock);
        let mut agg = lock(&self.agg);
        if let Some(mut p) = peers {
            p.sync(&mut agg);
        }
        agg
    }
}

pub(super) struct PeerCounts {
    counts: PerCpuHashMap<MapData, PeerKey, u64>,
    fold: Array<MapData, u32>,
    kernel: Arc<KernelCounters>,
    cpus: usize,
    /// Keys in the kernel's map, with the total already added to the aggregate.
    keys: HashMap<PeerKey, u64>,
    /// The map refused a key: folding stays off, so the events of a
    /// destination without keys reach the agent (through the ring) and are
    /// never counted as "other" by the kernel.
    full: bool,
    /// `TCP_PEER_FOLD` as last written.
    folding: bool,
    /// The kernel's `TCP_PEER_FOLDED` counters already added, by kind.
    folded: [u64; 3],
}

impl PeerCounts {
    pub(super) fn take(ebpf: &mut Ebpf, kernel: Arc<KernelCounters>) -> Result<PeerCounts> {
        let mut map = |name| {
            ebpf.take_map(name)
                .with_context(|| format!("{name} missing"))
        };
        let counts = PerCpuHashMap::try_from(map("TCP_PEER_COUNTS")?)?;
        let fold = Array::try_from(map("TCP_PEER_FOLD")?)?;
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("{path}: {e}"))?;
        let mut p = PeerCounts {
            counts,
            fold,
            kernel,
            cpus,
            keys: HashMap::new(),
            full: false,
            folding: false,
            folded: [0; 3],
        };
        for kind in KINDS {
            p.insert(PeerKey {
                kind,
                unknown: 1,
                ..PeerKey::default()
            });
        }
        Ok(p)
    }

    /// Gives the kernel the keys of newly admitted destinations, then turns
    /// folding on or off to match the budget.
    fn follow(&mut self, admitted: &[String], budget_spent: bool) {
        for dest in admitted {
            let Some((addr, port)) = parse(dest) else {
                continue;
            };
            for kind in KINDS {
                self.insert(PeerKey {
                    kind,
                    port,
                    unknown: 0,
                    addr,
                });
            }
        }
        let on = budget_spent && !self.full;
        if on != self.folding {
            match self.fold.set(0, u32::from(on), 0) {
                Ok(()) => self.folding = on,
                Err(e) => tracing::warn!("cannot switch TCP_PEER_FOLD: {e}"),
            }
        }
    }

    fn insert(&mut self, key: PeerKey) {
        if self.full || self.keys.contains_key(&key) {
            return;
        }
        let zeros = match PerCpuValues::try_from(vec![0u64; self.cpus]) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("TCP peer counts: {e}");
                self.full = true;
                return;
            }
        };
        match self.counts.insert(key, zeros, NO_EXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                // E2BIG: full (a budget raised past the map's size at start).
                tracing::info!(
                    "TCP_PEER_COUNTS takes no more destinations ({e}); their retransmits and resets are counted through the ring buffer"
                );
                self.full = true;
                // Folding needs every admitted destination in the map.
                if self.folding && self.fold.set(0, 0, 0).is_ok() {
                    self.folding = false;
                }
                return;
            }
        }
        self.keys.insert(key, 0);
    }

    /// Adds the growth of the kernel's counts to the aggregate.
    fn sync(&mut self, agg: &mut TcpAggregate) {
        for (key, added) in self.keys.iter_mut() {
            let total: u64 = match self.counts.get(key, 0) {
                Ok(values) => values.iter().sum(),
                Err(e) => {
                    tracing::warn!("cannot read TCP_PEER_COUNTS: {e}");
                    continue;
                }
            };
            let (Some(kind), Some(grown)) = (kind_of(key.kind), total.checked_sub(*added)) else {
                continue;
            };
            if grown > 0 {
                agg.record_peer(kind, Some(label(key)), grown);
                *added = total;
            }
        }
        for (i, kind) in KINDS.iter().enumerate() {
            let total = self.kernel.get(TCP_PEER_FOLDED + i as u32);
            let grown = total.saturating_sub(self.folded[i]);
            if let (Some(kind), true) = (kind_of(*kind), grown > 0) {
                agg.record_folded(kind, grown);
                self.folded[i] = total;
            }
        }
    }
}

/// The label of a key: what `peer::decode` gives its ring record.
fn label(key: &PeerKey) -> String {
    super::peer::destination(key).unwrap_or_else(|| UNKNOWN.into())
}

/// The address and port of an admitted destination's label (`ip:port`), as
/// the kernel keys them (IPv4 mapped into IPv6).
fn parse(dest: &str) -> Option<([u8; 16], u16)> {
    let sa: SocketAddr = dest.parse().ok()?;
    let v6 = match sa.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    Some((v6.octets(), sa.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn labels_parse_back_to_the_kernel_key() {
        for (addr, port) in [
            (Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(), 8080),
            ("fd00::7".parse::<Ipv6Addr>().unwrap(), 443),
        ] {
            let key = PeerKey {
                kind: PEER_RETRANSMIT,
                port,
                unknown: 0,
                addr: addr.octets(),
            };
            assert_eq!(parse(&label(&key)), Some((addr.octets(), port)));
        }
        assert_eq!(parse("other"), None);
        assert_eq!(parse(UNKNOWN), None);
    }

    #[test]
    fn the_map_holds_every_admitted_destination_of_the_default_budget() {
        assert_eq!(map_entries(50), 1024);
        assert_eq!(map_entries(1000), 3003);
        assert_eq!(map_entries(usize::MAX), u32::MAX);
    }
}
