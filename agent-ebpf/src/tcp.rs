//! TCP connects on `sock/inet_sock_set_state` (tcpconnlat without kprobes).
//! SYN_SENT is entered inside connect(), in the caller's context: remember the
//! time, the process and its cgroup there. Leaving SYN_SENT (in softirq, any context) ends
//! the connect: ESTABLISHED is a success, CLOSE a failure whose reason is in
//! `sk->sk_err`, which every kernel failure path sets before closing (the
//! error report tracepoint comes after the close on resets and timeouts).
//! Each finished connect is one ring-buffer event; connects are rare enough.

use crate::{cgroup, counters, filter, tcp_peer};
use agent_common::counters::{TCP_ACCEPTS, TCP_INFLIGHT_FULL, TCP_RINGBUF_DROPS};
use agent_common::tcp::{
    ConnectEvent, ConnectStart, ERROR_UNKNOWN, IPPROTO_TCP, TCP_CLOSE, TCP_ESTABLISHED,
    TCP_SYN_RECV, TCP_SYN_SENT, TcpOffsets,
};
use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::bpf_ktime_get_ns,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, RingBuf},
    programs::TracePointContext,
};

#[unsafe(no_mangle)]
static TCP_OFFSETS: Global<TcpOffsets> = Global::new(TcpOffsets {
    skaddr: 8,
    oldstate: 16,
    newstate: 20,
    sport: 24,
    dport: 26,
    family: 28,
    protocol: 30,
    protocol_size: 2,
    saddr_v6: 40,
    daddr_v6: 56,
    sk_err: 0,
    _pad: 0,
});

/// Connects in SYN_SENT, by socket address. LRU: a socket that vanishes
/// without a state change can never leak an entry.
#[map]
static TCP_INFLIGHT: LruHashMap<u64, ConnectStart> = LruHashMap::with_max_entries(8192, 0);

#[map]
static TCP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// A quarter of the ring: about 680 connects waiting wakes the agent early.
const TCP_WAKEUP_BYTES: u64 = 64 * 1024;

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// The record's protocol field, which is a u8 on older kernels.
#[inline(always)]
fn protocol(ctx: &TracePointContext, offset: u32, size: u32) -> u16 {
    if size == 1 {
        read::<u8>(ctx, offset).map_or(0, u16::from)
    } else {
        read::<u16>(ctx, offset).unwrap_or(0)
    }
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let off = TCP_OFFSETS.load();
    if protocol(&ctx, off.protocol, off.protocol_size) != IPPROTO_TCP {
        return 0;
    }
    let (Some(skaddr), Some(old), Some(new)) = (
        read::<u64>(&ctx, off.skaddr),
        read::<i32>(&ctx, off.oldstate),
        read::<i32>(&ctx, off.newstate),
    ) else {
        return 0;
    };
    if new == TCP_SYN_SENT {
        connect_started(skaddr);
    } else if old == TCP_SYN_SENT && new != TCP_SYN_RECV {
        // SYN_SENT -> SYN_RECV is a simultaneous open: still connecting.
        connect_finished(&ctx, &off, skaddr, new);
    } else if old == TCP_SYN_RECV && new == TCP_ESTABLISHED && filter::all() {
        counters::add(TCP_ACCEPTS, 1);
    }
    if new == TCP_CLOSE {
        tcp_peer::forget(skaddr);
    }
    0
}

#[inline(always)]
fn connect_started(skaddr: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::wanted(tgid) {
        return;
    }
    let start = ConnectStart {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        cgroup: cgroup::current(),
    };
    if TCP_INFLIGHT.insert(skaddr, start, 0).is_err() {
        counters::add(TCP_INFLIGHT_FULL, 1);
    }
    // Retransmits and resets come in softirq: --pid mode knows the target's
    // sockets by address from here on (node mode needs no per-socket state).
    if !filter::all() {
        tcp_peer::remember(skaddr, tgid);
    }
}

#[inline(always)]
fn connect_finished(ctx: &TracePointContext, off: &TcpOffsets, skaddr: u64, new: i32) {
    // Not ours (another process in --pid mode, or begun before we attached).
    let Some(start) = (unsafe { TCP_INFLIGHT.get(skaddr) }).copied() else {
        return;
    };
    let _ = TCP_INFLIGHT.remove(skaddr);
    let now = unsafe { bpf_ktime_get_ns() };
    let error = if new == TCP_ESTABLISHED {
        0
    } else if off.sk_err == 0 {
        ERROR_UNKNOWN
    } else {
        let sk_err = (skaddr as usize + off.sk_err as usize) as *const i32;
        unsafe { bpf_probe_read_kernel(sk_err) }.map_or(ERROR_UNKNOWN, |e| e as u32)
    };
    let Some(mut entry) = TCP_EVENTS.reserve::<ConnectEvent>(0) else {
        counters::add(TCP_RINGBUF_DROPS, 1);
        return;
    };
    entry.write(ConnectEvent {
        latency_ns: now.wrapping_sub(start.ts_ns),
        tgid: start.tgid,
        newstate: if new == TCP_ESTABLISHED {
            TCP_ESTABLISHED as u32
        } else {
            new as u32
        },
        error,
        family: read(ctx, off.family).unwrap_or(0),
        sport: read(ctx, off.sport).unwrap_or(0),
        dport: read(ctx, off.dport).unwrap_or(0),
        _pad: [0; 6],
        saddr: read(ctx, off.saddr_v6).unwrap_or([0; 16]),
        daddr: read(ctx, off.daddr_v6).unwrap_or([0; 16]),
        comm: start.comm,
        cgroup: start.cgroup,
    });
    // Do not wake the agent per connect (a wakeup costs it microseconds): it
    // drains on a timer, and is woken once a burst has filled part of the ring.
    let flags = if TCP_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= TCP_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}
