//! The TCP connect probe end to end (agent/src/probes/tcp.rs, fed by
//! agent-ebpf/src/tcp.rs): a child makes connects with known outcomes and the
//! agent must report exactly those.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;
use tests::{Agent, Exposition, Workload};

/// A listener that accepts and drops connections until the test ends.
fn listener(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).unwrap();
    let local = l.local_addr().unwrap();
    std::thread::spawn(move || for _ in l.incoming() {});
    local
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn connects(e: &Exposition, outcome: &str) -> f64 {
    e.value("ebpf_agent_tcp_connects_total", &[("outcome", outcome)])
}

#[test]
fn pid_mode_counts_successes_and_refusals_exactly() {
    const K: usize = 25;
    const J: usize = 7;
    let open = listener("127.0.0.1:0");
    let closed = closed_port();
    let w = Workload::start(&[
        "connect",
        "0",
        &open.to_string(),
        &K.to_string(),
        &closed.to_string(),
        &J.to_string(),
    ]);
    let agent = Agent::start(&["--pid", &w.pid()]);
    let said = w.go();
    assert_eq!(said, [format!("ECONNREFUSED={J} success={K}")]);
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        connects(e, "success") >= K as f64 && connects(e, "refused") >= J as f64
    });
    assert_eq!(connects(&e, "success"), K as f64);
    assert_eq!(connects(&e, "refused"), J as f64);
    for other in ["timed_out", "unreachable", "aborted", "other_error"] {
        assert_eq!(connects(&e, other), 0.0, "{other}");
    }
    assert_eq!(
        e.value("ebpf_agent_tcp_connect_latency_seconds_count", &[]),
        K as f64
    );
    let sum = e.value("ebpf_agent_tcp_connect_latency_seconds_sum", &[]);
    assert!(
        sum > 0.0 && sum < K as f64 * 0.1,
        "loopback connects take well under 100 ms: {sum}"
    );
    let by = |dest: &SocketAddr, outcome| {
        e.value(
            "ebpf_agent_tcp_connects_by_destination_total",
            &[("destination", &dest.to_string()), ("outcome", outcome)],
        )
    };
    assert_eq!(by(&open, "success"), K as f64);
    assert_eq!(by(&closed, "refused"), J as f64);
    assert_eq!(e.value("ebpf_agent_tcp_connects_in_flight", &[]), 0.0);
    assert_eq!(
        e.value("ebpf_agent_tcp_accepts_total", &[]),
        0.0,
        "accepts are node mode only"
    );
    assert_eq!(
        e.value("ebpf_agent_probe_attached", &[("probe", "tcp")]),
        1.0
    );
    assert_eq!(
        e.value("ebpf_agent_events_received_total", &[("probe", "tcp")]),
        (K + J) as f64
    );
    agent.check_exposition_with_peers();
}

#[test]
fn ipv6_loopback_connects() {
    let open = listener("[::1]:0");
    let w = Workload::start(&["connect", "0", &open.to_string(), "10"]);
    let agent = Agent::start(&["--pid", &w.pid()]);
    assert_eq!(w.go(), ["success=10"]);
    let e = agent.scrape_until(Duration::from_secs(5), |e| connects(e, "success") >= 10.0);
    assert_eq!(connects(&e, "success"), 10.0);
    let dest = format!("[::1]:{}", open.port());
    assert_eq!(
        e.value(
            "ebpf_agent_tcp_connects_by_destination_total",
            &[("destination", &dest), ("outcome", "success")]
        ),
        10.0
    );
}

#[test]
fn node_mode_counts_accepts() {
    let agent = Agent::start(&[]);
    let open = listener("127.0.0.1:0");
    let before = agent.scrape().value("ebpf_agent_tcp_accepts_total", &[]);
    assert_eq!(
        Workload::start(&["connect", "0", &open.to_string(), "12"]).go(),
        ["success=12"]
    );
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        e.value("ebpf_agent_tcp_accepts_total", &[]) >= before + 12.0
    });
    // Scrapes are TCP connects to the agent too, so at least 12 more.
    assert!(e.value("ebpf_agent_tcp_accepts_total", &[]) >= before + 12.0);
}

/// A test host in its own network namespace whose firewall drops SYNs to one
/// port. Removed (with its veth pair) on drop.
struct BlackHole {
    netns: String,
    pub addr: SocketAddr,
}

impl BlackHole {
    fn create() -> BlackHole {
        let id = std::process::id() % 200 + 20;
        let netns = format!("agent-test-{id}");
        let (host, peer) = (format!("vat{id}h"), format!("vat{id}p"));
        let (host_ip, peer_ip) = (
            Ipv4Addr::new(10, 231, id as u8, 1),
            Ipv4Addr::new(10, 231, id as u8, 2),
        );
        let _ = sh(&format!("ip netns del {netns} 2>/dev/null"));
        let hole = BlackHole {
            netns: netns.clone(),
            addr: SocketAddr::new(peer_ip.into(), 9999),
        };
        for cmd in [
            format!("ip netns add {netns}"),
            format!("ip link add {host} type veth peer name {peer}"),
            format!("ip link set {peer} netns {netns}"),
            format!("ip addr add {host_ip}/30 dev {host}"),
            format!("ip link set {host} up"),
            format!("ip -n {netns} addr add {peer_ip}/30 dev {peer}"),
            format!("ip -n {netns} link set {peer} up"),
            format!("ip -n {netns} link set lo up"),
            format!("ip netns exec {netns} nft add table inet blackhole"),
            format!(
                "ip netns exec {netns} nft add chain inet blackhole input \
                 '{{ type filter hook input priority 0; policy accept; }}'"
            ),
            format!("ip netns exec {netns} nft add rule inet blackhole input tcp dport 9999 drop"),
        ] {
            assert!(
                sh(&cmd),
                "test host setup failed: {cmd} (needs iproute2 and nftables: `cargo xtask setup --test-tools`)"
            );
        }
        hole
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.netns));
    }
}

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn syn_drops_time_out_and_leave_nothing_in_flight() {
    tests::require_root();
    let hole = BlackHole::create();
    // TCP_SYNCNT=1: the kernel gives up after one retransmission (~3 s).
    let w = Workload::start(&["connect", "1", &hole.addr.to_string(), "3"]);
    let agent = Agent::start(&["--pid", &w.pid()]);
    assert_eq!(w.go(), ["ETIMEDOUT=3"]);
    let e = agent.scrape_until(Duration::from_secs(5), |e| connects(e, "timed_out") >= 3.0);
    assert_eq!(connects(&e, "timed_out"), 3.0);
    assert_eq!(connects(&e, "success"), 0.0);
    assert_eq!(
        e.value("ebpf_agent_tcp_connect_latency_seconds_count", &[]),
        0.0,
        "failures are not latencies"
    );
    assert_eq!(e.value("ebpf_agent_tcp_connects_in_flight", &[]), 0.0);
    let dest = hole.addr.to_string();
    assert_eq!(
        e.value(
            "ebpf_agent_tcp_connects_by_destination_total",
            &[("destination", &dest), ("outcome", "timed_out")]
        ),
        3.0
    );
}
