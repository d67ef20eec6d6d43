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
