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

/// How a program reads its record (as block.rs's `Reader` does for kernel
/// objects): at tracefs' offsets, or at the offsets of a known layout.
trait Record {
    /// The field of type `T` at `offset`.
    fn get<T>(ctx: &TracePointContext, offset: u32) -> Option<T>;
    /// An IPv6 address (16 bytes) at `offset`.
    fn addr(ctx: &TracePointContext, offset: u32) -> Option<[u8; 16]>;
    /// A sockaddr up to the end of `sin6_addr` (24 bytes) at `offset`.
    fn sockaddr(ctx: &TracePointContext, offset: u32) -> Option<[u8; 24]>;
}

/// Offsets from tracefs (`TCP_PEER_OFFSETS`): a helper call per read, since
/// a classic tracepoint's record may be loaded directly only at offsets
/// written into the instruction.
struct Helper;

impl Record for Helper {
    #[inline(always)]
    fn get<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
        unsafe { ctx.read_at::<T>(offset as usize) }.ok()
    }

    #[inline(always)]
    fn addr(ctx: &TracePointContext, offset: u32) -> Option<[u8; 16]> {
        Self::get(ctx, offset)
    }

    #[inline(always)]
    fn sockaddr(ctx: &TracePointContext, offset: u32) -> Option<[u8; 24]> {
        Self::get(ctx, offset)
    }
}

/// A layout of `known`, whose offsets are constants once inlined: direct
/// loads, which the verifier allows at such offsets, aligned to their size.
/// Volatile, so that the compiler neither merges loads nor computes their
/// address at run time.
struct Direct;

impl Direct {
    #[inline(always)]
    fn load<T>(ctx: &TracePointContext, offset: u32) -> T {
        unsafe { core::ptr::read_volatile(ctx.as_ptr().add(offset as usize).cast::<T>()) }
    }
}

impl Record for Direct {
    #[inline(always)]
    fn get<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
        Some(Self::load(ctx, offset))
    }

    /// In the widest loads the offset's alignment allows.
    #[inline(always)]
    fn addr(ctx: &TracePointContext, at: u32) -> Option<[u8; 16]> {
        let ld = Self::load::<u32>;
        if at.is_multiple_of(4) {
            let w = [
                ld(ctx, at),
                ld(ctx, at + 4),
                ld(ctx, at + 8),
                ld(ctx, at + 12),
            ];
            return Some(unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) });
        }
        let ld = Self::load::<u16>;
        let w = [
            ld(ctx, at),
            ld(ctx, at + 2),
            ld(ctx, at + 4),
            ld(ctx, at + 6),
            ld(ctx, at + 8),
            ld(ctx, at + 10),
            ld(ctx, at + 12),
            ld(ctx, at + 14),
        ];
        Some(unsafe { core::mem::transmute::<[u16; 8], [u8; 16]>(w) })
    }

    /// Every word, whatever the family, so that no load depends on it (the
    /// compiler would share one load between the branches, at an offset
    /// computed at run time). A sockaddr in a record is 4-byte aligned.
    #[inline(always)]
    fn sockaddr(ctx: &TracePointContext, at: u32) -> Option<[u8; 24]> {
        let ld = Self::load::<u32>;
        let w = [
            ld(ctx, at),
            ld(ctx, at + 4),
            ld(ctx, at + 8),
            ld(ctx, at + 12),
            ld(ctx, at + 16),
            ld(ctx, at + 20),
        ];
        Some(unsafe { core::mem::transmute::<[u32; 6], [u8; 24]>(w) })
    }
}

/// In `--pid` mode: whether the record's socket is the target's.
#[inline(always)]
fn wanted<R: Record>(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> bool {
    if filter::all() {
        return true;
    }
    let skaddr = R::get::<u64>(ctx, f.skaddr).unwrap_or(0);
    if skaddr != 0 && unsafe { TCP_OWNED.get(skaddr) }.is_some() {
        return true;
    }
    kind == PEER_RESET_SENT
        && skaddr != 0
        && f.state != 0
        && R::get::<i32>(ctx, f.state) == Some(TCP_CLOSE)
        && filter::wanted((bpf_get_current_pid_tgid() >> 32) as u32)
}

/// The event's kind and remote end, normalised: IPv4 mapped into IPv6 and
/// the port in host order, whichever layout the record has.
#[inline(always)]
fn key<R: Record>(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> PeerKey {
    let mut key = PeerKey {
        kind,
        ..PeerKey::default()
    };
    if f.layout == LAYOUT_FIELDS {
        // The record stores IPv4 mapped (5.10's has no `family` field at all).
        match (R::get::<u16>(ctx, f.dport), R::addr(ctx, f.peer)) {
            (Some(port), Some(addr)) => {
                key.port = port;
                key.addr = addr;
            }
            _ => return unreadable(kind),
        }
        return key;
    }
    // sockaddr_in or sockaddr_in6, up to the end of sin6_addr: family in host
    // order, port in network order.
    let Some(sa) = R::sockaddr(ctx, f.peer) else {
        return unreadable(kind);
    };
    match u16::from_ne_bytes([sa[0], sa[1]]) {
        AF_INET => {
            key.addr[10] = 0xff;
            key.addr[11] = 0xff;
            key.addr[12..16].copy_from_slice(&sa[4..8]);
        }
        AF_INET6 => key.addr.copy_from_slice(&sa[8..24]),
        // All zero: a reset with neither a full socket nor a packet.
        _ => {
            key.unknown = 1;
            return key;
        }
    }
    key.port = u16::from_be_bytes([sa[2], sa[3]]);
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

/// Every program: one event of `kind`, its record read by `R` at `f`.
#[inline(always)]
fn count<R: Record>(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> u32 {
    // A retransmit that failed to leave (err != 0) sent nothing: the kernel's
    // TcpRetransSegs does not count it either.
    if f.err != 0 && R::get::<i32>(ctx, f.err) != Some(0) {
        return 0;
    }
    if wanted::<R>(ctx, f, kind) {
        tally(key::<R>(ctx, f, kind));
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

// The generic programs, named after their tracepoints, and the programs for
// the layouts of `known::PROGRAMS` (same names).

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let f = &TCP_PEER_OFFSETS.load().retransmit;
    count::<Helper>(&ctx, f, PEER_RETRANSMIT)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let f = &TCP_PEER_OFFSETS.load().reset_sent;
    count::<Helper>(&ctx, f, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let f = &TCP_PEER_OFFSETS.load().reset_received;
    count::<Helper>(&ctx, f, PEER_RESET_RECEIVED)
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_5_10(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SK_SKB_5_10, PEER_RETRANSMIT)
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_6_1(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SK_SKB_6_1, PEER_RETRANSMIT)
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_6_18(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::RETRANSMIT_6_18, PEER_RETRANSMIT)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_5_10(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SK_SKB_5_10, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_6_1(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SK_SKB_6_1, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_6_12(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SEND_RESET_6_12, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset_5_10(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SK_5_10, PEER_RESET_RECEIVED)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset_6_1(ctx: TracePointContext) -> u32 {
    count::<Direct>(&ctx, &known::SK_6_1, PEER_RESET_RECEIVED)
}
