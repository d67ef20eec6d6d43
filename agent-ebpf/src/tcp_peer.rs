//! TCP retransmits and resets on `tcp:tcp_retransmit_skb`, `tcp:tcp_send_reset`
//! and `tcp:tcp_receive_reset`, by the remote end of the flow. Destinations
//! the agent admitted are counted here, in a per-CPU map the agent fills
//! with their keys; once the agent has spent its destination budget, it
//! turns `TCP_PEER_FOLD` on and any other destination is counted here under
//! "other". Only what neither covers (a destination not seen yet, while the
//! budget lasts; an address that could not be read) travels to the agent as
//! one small ring-buffer record, so a busy node's resets to ever-new
//! ephemeral ports cost no record each.
//!
//! They fire in softirq or timer context, where the current task is whoever
//! was running, so `--pid` mode filters on the sockets the target connected
//! (remembered at SYN_SENT, forgotten at CLOSE), never on the current task,
//! except for a reset sent on a socket already CLOSE: that is `close()` or
//! `shutdown()` aborting it, in the caller's context (the kernel closes the
//! socket before it sends that reset).
//!
//! Each tracepoint has a generic program, which reads the record at the
//! offsets tracefs gives (one helper call per field), and programs for the
//! layouts known kernels print (`agent_common::tcp::known`), which load the
//! fields directly at offsets compiled in. The agent loads the one that fits.

use crate::{counters, filter};
use agent_common::counters::{
    TCP_OWNED_FULL, TCP_PEER_FOLDED, TCP_PEER_READ_FAILED, TCP_PEER_RINGBUF_DROPS,
};
use agent_common::tcp::{
    AF_INET, AF_INET6, LAYOUT_FIELDS, PEER_RESET_RECEIVED, PEER_RESET_SENT, PEER_RETRANSMIT,
    PeerFields, PeerKey, PeerOffsets, TCP_CLOSE, known,
};
use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
};

/// Filled from tracefs by the agent before load (6.18 offsets as defaults).
#[unsafe(no_mangle)]
static TCP_PEER_OFFSETS: Global<PeerOffsets> = Global::new(PeerOffsets {
    retransmit: PeerFields {
        skaddr: 16,
        layout: 0,
        dport: 30,
        peer: 58,
        state: 24,
        err: 76,
    },
    reset_sent: PeerFields {
        skaddr: 16,
        layout: 1,
        dport: 0,
        peer: 60,
        state: 24,
        err: 0,
    },
    reset_received: PeerFields {
        skaddr: 8,
        layout: 0,
        dport: 18,
        peer: 46,
        state: 0,
        err: 0,
    },
});

/// `--pid` mode: the target's sockets (address -> tgid), from connect to
/// close. A plain hash map, not LRU: an eviction would silently stop counting
/// a live socket, while a failed insert is counted (`owned_map_full`).
#[map]
static TCP_OWNED: HashMap<u64, u32> = HashMap::with_max_entries(8192, 0);

/// Events of the destinations the agent admitted (and of "unknown"), by
/// key: the agent inserts the keys, the kernel only adds to them, nothing
/// deletes them (admission is sticky), so the agent reads running totals
/// and no increment can fall between a read and a reset. Sized at load.
#[map]
static TCP_PEER_COUNTS: PerCpuHashMap<PeerKey, u64> = PerCpuHashMap::with_max_entries(1, 0);

/// Entry 0 is 1 while the agent's destination budget is spent and every
/// admitted destination has its keys in `TCP_PEER_COUNTS`: a key missing
/// from the map is then "other", counted here (`TCP_PEER_FOLDED`).
#[map]
static TCP_PEER_FOLD: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static TCP_PEER_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// A quarter of the ring (about 2 000 events) waiting wakes the agent early.
const WAKEUP_BYTES: u64 = 64 * 1024;

/// A target's socket entered SYN_SENT (called only in `--pid` mode).
#[inline(always)]
pub(crate) fn remember(skaddr: u64, tgid: u32) {
    if TCP_OWNED.insert(skaddr, tgid, 0).is_err() {
        counters::add(TCP_OWNED_FULL, 1);
    }
}

/// A socket reached CLOSE: its address may be reused by anyone's socket.
#[inline(always)]
pub(crate) fn forget(skaddr: u64) {
    // A lookup first: it takes no lock, and most closing sockets are not the target's.
    if !filter::all() && unsafe { TCP_OWNED.get(skaddr) }.is_some() {
        let _ = TCP_OWNED.remove(skaddr);
    }
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// In `--pid` mode: whether the record's socket is the target's.
#[inline(always)]
fn wanted(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> bool {
    if filter::all() {
        return true;
    }
    let skaddr = read::<u64>(ctx, f.skaddr).unwrap_or(0);
    if skaddr != 0 && unsafe { TCP_OWNED.get(skaddr) }.is_some() {
        return true;
    }
    kind == PEER_RESET_SENT
        && skaddr != 0
        && f.state != 0
        && read::<i32>(ctx, f.state) == Some(TCP_CLOSE)
        && filter::wanted((bpf_get_current_pid_tgid() >> 32) as u32)
}

/// The event's kind and remote end, normalised: IPv4 mapped into IPv6 and
/// the port in host order, whichever layout the record has.
#[inline(always)]
fn key(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> PeerKey {
    let mut key = PeerKey {
        kind,
        ..PeerKey::default()
    };
    if f.layout == LAYOUT_FIELDS {
        // The record stores IPv4 mapped (5.10's has no `family` field at all).
        match (read::<u16>(ctx, f.dport), read::<[u8; 16]>(ctx, f.peer)) {
            (Some(port), Some(addr)) => {
                key.port = port;
                key.addr = addr;
            }
            _ => return unreadable(kind),
        }
        return key;
    }
    // sockaddr_in or sockaddr_in6, up to the end of sin6_addr.
    let Some(sa) = read::<[u8; 24]>(ctx, f.peer) else {
        return unreadable(kind);
    };
    let mut v6 = [0; 16];
    v6.copy_from_slice(&sa[8..24]);
    let at = |i: usize| [sa[i], sa[i + 1], sa[i + 2], sa[i + 3]];
    from_sockaddr(kind, at(0), at(4), v6)
}

/// The key of a sockaddr: `head` is its family (host order) and port
/// (network order), `v4` an IPv4 address, `v6` an IPv6 one (each read
/// whatever the family, so that the reads do not depend on it).
#[inline(always)]
fn from_sockaddr(kind: u16, head: [u8; 4], v4: [u8; 4], v6: [u8; 16]) -> PeerKey {
    let mut key = PeerKey {
        kind,
        ..PeerKey::default()
    };
    match u16::from_ne_bytes([head[0], head[1]]) {
        AF_INET => {
            key.addr[10] = 0xff;
            key.addr[11] = 0xff;
            key.addr[12..16].copy_from_slice(&v4);
        }
        AF_INET6 => key.addr = v6,
        // All zero: a reset with neither a full socket nor a packet.
        _ => {
            key.unknown = 1;
            return key;
        }
    }
    key.port = u16::from_be_bytes([head[2], head[3]]);
    key
}

#[inline(always)]
fn unreadable(kind: u16) -> PeerKey {
    counters::add(TCP_PEER_READ_FAILED, 1);
    PeerKey {
        kind,
        unknown: 1,
        ..PeerKey::default()
    }
}

/// The generic programs: the record read at tracefs' offsets.
#[inline(always)]
fn count(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> u32 {
    // A retransmit that failed to leave (err != 0) sent nothing: the kernel's
    // TcpRetransSegs does not count it either.
    if f.err != 0 && read::<i32>(ctx, f.err) != Some(0) {
        return 0;
    }
    if wanted(ctx, f, kind) {
        tally(key(ctx, f, kind));
    }
    0
}

/// A direct load from the record at an offset compiled in (the verifier
/// allows no other, and only aligned to the size). Volatile, so that the
/// compiler neither merges loads nor computes their address at run time.
#[inline(always)]
fn load<T>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { core::ptr::read_volatile(ctx.as_ptr().add(offset).cast::<T>()) }
}

/// 16 bytes at `at` (a constant once inlined), in the widest loads its
/// alignment allows.
#[inline(always)]
fn load16(ctx: &TracePointContext, at: usize) -> [u8; 16] {
    if at.is_multiple_of(4) {
        let w: [u32; 4] = [
            load(ctx, at),
            load(ctx, at + 4),
            load(ctx, at + 8),
            load(ctx, at + 12),
        ];
        unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
    } else {
        let w: [u16; 8] = [
            load(ctx, at),
            load(ctx, at + 2),
            load(ctx, at + 4),
            load(ctx, at + 6),
            load(ctx, at + 8),
            load(ctx, at + 10),
            load(ctx, at + 12),
            load(ctx, at + 14),
        ];
        unsafe { core::mem::transmute::<[u16; 8], [u8; 16]>(w) }
    }
}

/// A known `LAYOUT_FIELDS` record: `count` with direct loads.
#[inline(always)]
fn count_fields<const DPORT: usize, const PEER: usize, const ERR: usize>(
    ctx: &TracePointContext,
    f: &PeerFields,
    kind: u16,
) -> u32 {
    if ERR != 0 && load::<i32>(ctx, ERR) != 0 {
        return 0;
    }
    if wanted(ctx, f, kind) {
        tally(PeerKey {
            kind,
            port: load(ctx, DPORT),
            unknown: 0,
            addr: load16(ctx, PEER),
        });
    }
    0
}

/// A known `LAYOUT_SOCKADDR` record: `count` with direct loads.
#[inline(always)]
fn count_sockaddr<const PEER: usize>(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> u32 {
    if wanted(ctx, f, kind) {
        let head: u32 = load(ctx, PEER);
        let v4: u32 = load(ctx, PEER + 4);
        let v6 = load16(ctx, PEER + 8);
        tally(from_sockaddr(
            kind,
            head.to_ne_bytes(),
            v4.to_ne_bytes(),
            v6,
        ));
    }
    0
}

/// Counts one event of `key`: in the kernel's map if the agent admitted
/// its destination, as "other" if the budget is spent, else as a record.
#[inline(always)]
fn tally(key: PeerKey) {
    if let Some(n) = TCP_PEER_COUNTS.get_ptr_mut(key) {
        // Per-CPU: only this CPU writes it, with preemption off.
        unsafe { *n += 1 };
        return;
    }
    if key.unknown == 0 && TCP_PEER_FOLD.get(0) == Some(&1) {
        counters::add(TCP_PEER_FOLDED + key.kind as u32 - 1, 1);
        return;
    }
    let Some(mut entry) = TCP_PEER_EVENTS.reserve::<PeerKey>(0) else {
        counters::add(TCP_PEER_RINGBUF_DROPS, 1);
        return;
    };
    entry.write(key);
    let flags = if TCP_PEER_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    count(&ctx, &TCP_PEER_OFFSETS.load().retransmit, PEER_RETRANSMIT)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    count(&ctx, &TCP_PEER_OFFSETS.load().reset_sent, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    count(
        &ctx,
        &TCP_PEER_OFFSETS.load().reset_received,
        PEER_RESET_RECEIVED,
    )
}

// Programs for the layouts of `known::PROGRAMS` (same names).

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_5_10(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SK_SKB_5_10;
    let f = &TCP_PEER_OFFSETS.load().retransmit;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RETRANSMIT,
    )
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_6_1(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SK_SKB_6_1;
    let f = &TCP_PEER_OFFSETS.load().retransmit;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RETRANSMIT,
    )
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_6_18(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::RETRANSMIT_6_18;
    let f = &TCP_PEER_OFFSETS.load().retransmit;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RETRANSMIT,
    )
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_5_10(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SK_SKB_5_10;
    let f = &TCP_PEER_OFFSETS.load().reset_sent;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RESET_SENT,
    )
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_6_1(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SK_SKB_6_1;
    let f = &TCP_PEER_OFFSETS.load().reset_sent;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RESET_SENT,
    )
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_6_12(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SEND_RESET_6_12;
    let f = &TCP_PEER_OFFSETS.load().reset_sent;
    count_sockaddr::<{ F.peer as usize }>(&ctx, f, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset_5_10(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SK_5_10;
    let f = &TCP_PEER_OFFSETS.load().reset_received;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RESET_RECEIVED,
    )
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset_6_1(ctx: TracePointContext) -> u32 {
    const F: PeerFields = known::SK_6_1;
    let f = &TCP_PEER_OFFSETS.load().reset_received;
    count_fields::<{ F.dport as usize }, { F.peer as usize }, { F.err as usize }>(
        &ctx,
        f,
        PEER_RESET_RECEIVED,
    )
}
