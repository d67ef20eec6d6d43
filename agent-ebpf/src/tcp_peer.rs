//! TCP retransmits and resets on `tcp:tcp_retransmit_skb`, `tcp:tcp_send_reset`
//! and `tcp:tcp_receive_reset`: one small ring-buffer event each, with the
//! remote end of the flow; userspace labels and budgets the destinations.
//! They fire in softirq or timer context, where the current task is whoever
//! was running, so `--pid` mode filters on the sockets the target connected
//! (remembered at SYN_SENT, forgotten at CLOSE), never on the current task,
//! except for a reset sent on a socket already CLOSE: that is `close()` or
//! `shutdown()` aborting it, in the caller's context (the kernel closes the
//! socket before it sends that reset).

use crate::{counters, filter};
use agent_common::counters::{TCP_OWNED_FULL, TCP_PEER_READ_FAILED, TCP_PEER_RINGBUF_DROPS};
use agent_common::tcp::{
    LAYOUT_FIELDS, PEER_RESET_RECEIVED, PEER_RESET_SENT, PEER_RETRANSMIT, PeerEvent, PeerFields,
    PeerOffsets, TCP_CLOSE,
};
use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{HashMap, RingBuf},
    programs::TracePointContext,
};

/// Filled from tracefs by the agent before load (6.18 offsets as defaults).
#[unsafe(no_mangle)]
static TCP_PEER_OFFSETS: Global<PeerOffsets> = Global::new(PeerOffsets {
    retransmit: PeerFields {
        skaddr: 16,
        layout: 0,
        family: 32,
        dport: 30,
        peer: 58,
        state: 24,
        err: 76,
        _pad: 0,
    },
    reset_sent: PeerFields {
        skaddr: 16,
        layout: 1,
        family: 0,
        dport: 0,
        peer: 60,
        state: 24,
        err: 0,
        _pad: 0,
    },
    reset_received: PeerFields {
        skaddr: 8,
        layout: 0,
        family: 20,
        dport: 18,
        peer: 46,
        state: 0,
        err: 0,
        _pad: 0,
    },
});

/// `--pid` mode: the target's sockets (address -> tgid), from connect to
/// close. A plain hash map, not LRU: an eviction would silently stop counting
/// a live socket, while a failed insert is counted (`owned_map_full`).
#[map]
static TCP_OWNED: HashMap<u64, u32> = HashMap::with_max_entries(8192, 0);

#[map]
static TCP_PEER_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// A quarter of the ring (about 1 300 events) waiting wakes the agent early.
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

#[inline(always)]
fn emit(ctx: &TracePointContext, f: &PeerFields, kind: u16) -> u32 {
    // A retransmit that failed to leave (err != 0) sent nothing: the kernel's
    // TcpRetransSegs does not count it either.
    if f.err != 0 && read::<i32>(ctx, f.err) != Some(0) {
        return 0;
    }
    if !wanted(ctx, f, kind) {
        return 0;
    }
    let Some(mut entry) = TCP_PEER_EVENTS.reserve::<PeerEvent>(0) else {
        counters::add(TCP_PEER_RINGBUF_DROPS, 1);
        return 0;
    };
    let mut ev = PeerEvent {
        kind,
        layout: f.layout as u16,
        ..PeerEvent::default()
    };
    let ok = if f.layout == LAYOUT_FIELDS as u32 {
        // No family field before 5.11 (offset 0): userspace reads the address.
        let family = if f.family == 0 {
            Some(0)
        } else {
            read::<u16>(ctx, f.family)
        };
        match (
            family,
            read::<u16>(ctx, f.dport),
            read::<[u8; 16]>(ctx, f.peer),
        ) {
            (Some(family), Some(dport), Some(addr)) => {
                ev.family = family;
                ev.dport = dport;
                ev.peer[..16].copy_from_slice(&addr);
                true
            }
            _ => false,
        }
    } else {
        read::<[u8; 28]>(ctx, f.peer).map(|p| ev.peer = p).is_some()
    };
    if !ok {
        ev.read_failed = 1;
        counters::add(TCP_PEER_READ_FAILED, 1);
    }
    entry.write(ev);
    let flags = if TCP_PEER_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    emit(&ctx, &TCP_PEER_OFFSETS.load().retransmit, PEER_RETRANSMIT)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    emit(&ctx, &TCP_PEER_OFFSETS.load().reset_sent, PEER_RESET_SENT)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    emit(
        &ctx,
        &TCP_PEER_OFFSETS.load().reset_received,
        PEER_RESET_RECEIVED,
    )
}
