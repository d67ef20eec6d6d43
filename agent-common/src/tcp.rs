//! The TCP connect probe's records. Connects are rare next to syscalls, so each
//! completed connect travels as one event.

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_CLOSE: i32 = 7;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// An outgoing connect that left SYN_SENT: established, or closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectEvent {
    /// From entering SYN_SENT (inside connect()) to leaving it.
    pub latency_ns: u64,
    /// Process that called connect() (recorded at SYN_SENT: completion runs in softirq).
    pub tgid: u32,
    /// State the socket moved to: TCP_ESTABLISHED, or TCP_CLOSE on failure.
    pub newstate: u32,
    /// `sk->sk_err` when the socket closed: the kernel sets it before closing
    /// on a reset (ECONNREFUSED), a timeout (ETIMEDOUT) or an ICMP error; 0
    /// when the application gave up; ERROR_UNKNOWN without BTF.
    pub error: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: [u8; 6],
    /// IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) for AF_INET sockets.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; 16],
    /// cgroup v2 id of the caller (0 when container attribution is off).
    pub cgroup: u64,
}

/// What the kernel remembers of a connect between SYN_SENT and its outcome.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectStart {
    pub ts_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    pub cgroup: u64,
}

/// Where the probe reads what it needs: `sock/inet_sock_set_state` record
/// offsets parsed from tracefs (the layout changed across kernels: `protocol`
/// was a u8), and `struct sock`'s `sk_err` from kernel BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    /// 1 or 2 bytes.
    pub protocol_size: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    /// Offset of `sk_err` in `struct sock`; 0 when unknown (no BTF).
    pub sk_err: u32,
    pub _pad: u32,
}

/// `ConnectEvent::error` when the kernel's error could not be read.
pub const ERROR_UNKNOWN: u32 = u32::MAX;

crate::impl_pod!(ConnectEvent, ConnectStart, TcpOffsets);

/// `PeerEvent::kind`.
pub const PEER_RETRANSMIT: u16 = 1;
pub const PEER_RESET_SENT: u16 = 2;
pub const PEER_RESET_RECEIVED: u16 = 3;

/// `PeerFields::layout`: how the record holds the remote end.
/// Separate fields (`dport` in host order, `daddr_v6` with IPv4 mapped into
/// IPv6), as in `tcp_retransmit_skb` and `tcp_receive_reset`.
pub const LAYOUT_FIELDS: u32 = 0;
/// A raw `sockaddr_in`/`sockaddr_in6` (`tcp_send_reset` since 6.10); all zero
/// when the kernel had neither a full socket nor a packet to take it from.
pub const LAYOUT_SOCKADDR: u32 = 1;

/// A retransmitted segment's or a reset's kind and the remote end of its
/// flow, as the kernel normalises it. It is the key of the kernel's per-CPU
/// counts for destinations the agent admitted (`TCP_PEER_COUNTS`), and the
/// ring-buffer record of one event for any other (the agent then admits the
/// destination, or folds it). These fire in softirq or timer context, where
/// the current process is not the socket's: `--pid` mode filters on the
/// sockets remembered at connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub kind: u16,
    /// Remote port, host order.
    pub port: u16,
    /// Non-zero when the event has no address: its record could not be read
    /// (counted in `peer_read_failed`), or a reset had neither a socket nor
    /// a packet to take one from. `port` and `addr` are then zero.
    pub unknown: u32,
    /// Remote address: IPv6, or IPv4 mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
}

/// Where one tracepoint's record keeps the remote end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerFields {
    pub skaddr: u32,
    /// LAYOUT_FIELDS or LAYOUT_SOCKADDR.
    pub layout: u32,
    /// LAYOUT_FIELDS only.
    pub dport: u32,
    /// `daddr_v6` (16 bytes), or the `daddr` sockaddr (28 bytes).
    pub peer: u32,
    /// `state` (the socket's TCP state), or 0 when the record has none.
    pub state: u32,
    /// `err` of `tcp_retransmit_skb` (6.12+: it also fires for attempts that
    /// failed to send), or 0 when the record has none.
    pub err: u32,
}

/// Field offsets of `tcp:tcp_retransmit_skb`, `tcp:tcp_send_reset` and
/// `tcp:tcp_receive_reset`, from tracefs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerOffsets {
    pub retransmit: PeerFields,
    pub reset_sent: PeerFields,
    pub reset_received: PeerFields,
}

crate::impl_pod!(PeerKey, PeerOffsets);

/// Record layouts that kernels print (tracefs), each with a program in the
/// eBPF object that loads the fields at these offsets directly: a classic
/// tracepoint's record may be loaded directly only at offsets fixed when the
/// program is compiled, and a helper call per field costs more than the rest
/// of the program. The agent picks the program whose layout equals this
/// kernel's, and otherwise the generic one that reads at tracefs' offsets.
pub mod known {
    use super::{LAYOUT_FIELDS, LAYOUT_SOCKADDR, PeerFields};

    const fn fields(skaddr: u32, dport: u32, peer: u32, state: u32, err: u32) -> PeerFields {
        PeerFields {
            skaddr,
            layout: LAYOUT_FIELDS,
            dport,
            peer,
            state,
            err,
        }
    }

    /// `tcp_event_sk_skb` before `family` was added (5.10).
    pub const SK_SKB_5_10: PeerFields = fields(16, 30, 56, 24, 0);
    /// `tcp_event_sk_skb` with `family` (6.1, 6.12).
    pub const SK_SKB_6_1: PeerFields = fields(16, 30, 58, 24, 0);
    /// `tcp_retransmit_skb` with `err` (6.18).
    pub const RETRANSMIT_6_18: PeerFields = fields(16, 30, 58, 24, 76);
    /// `tcp_send_reset` with sockaddrs (6.10+).
    pub const SEND_RESET_6_12: PeerFields = PeerFields {
        skaddr: 16,
        layout: LAYOUT_SOCKADDR,
        dport: 0,
        peer: 60,
        state: 24,
        err: 0,
    };
    /// `tcp_event_sk` before `family` (5.10), and with it (6.1+).
    pub const SK_5_10: PeerFields = fields(8, 18, 44, 0, 0);
    pub const SK_6_1: PeerFields = fields(8, 18, 46, 0, 0);

    /// (tracepoint, layout, program), tracepoints as in `PeerOffsets`: 0
    /// `tcp_retransmit_skb`, 1 `tcp_send_reset`, 2 `tcp_receive_reset`.
    pub const PROGRAMS: [(usize, PeerFields, &str); 8] = [
        (0, SK_SKB_5_10, "tcp_retransmit_skb_5_10"),
        (0, SK_SKB_6_1, "tcp_retransmit_skb_6_1"),
        (0, RETRANSMIT_6_18, "tcp_retransmit_skb_6_18"),
        (1, SK_SKB_5_10, "tcp_send_reset_5_10"),
        (1, SK_SKB_6_1, "tcp_send_reset_6_1"),
        (1, SEND_RESET_6_12, "tcp_send_reset_6_12"),
        (2, SK_5_10, "tcp_receive_reset_5_10"),
        (2, SK_6_1, "tcp_receive_reset_6_1"),
    ];
}
