//! The TCP connect probe end to end (agent/src/probes/tcp.rs, fed by
//! agent-ebpf/src/tcp.rs): a child makes connects with known outcomes and the
//! agent must report exactly those.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use tests::netns::must;
use tests::{Agent, Bpftrace, Exposition, Netns, Workload};

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
    // A refused connect is a reset received, from the closed port; unless
    // the kernel's tcp tracepoints lack the fields (5.10: no `family`), and
    // then the agent says it counts none. Resets come through their own ring,
    // drained on its own timer: wait for them too (slow under emulation).
    let received = if peers_counted(&agent) { J } else { 0 };
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        connects(e, "success") >= K as f64
            && connects(e, "refused") >= J as f64
            && resets(e, "received", &closed.to_string()) >= received as f64
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
    assert_eq!(resets(&e, "received", &closed.to_string()), received as f64);
    // Every connect is a record; a reset is one only until the agent has
    // given the kernel its destination's key (after the first, or later when
    // the ring is drained after all of them), and is counted in the kernel
    // after that.
    let records = e.value("ebpf_agent_events_received_total", &[("probe", "tcp")]);
    let resets_as_records = records - (K + J) as f64;
    assert!(
        (received.min(1) as f64..=received as f64).contains(&resets_as_records),
        "{records} tcp records for {K} + {J} connects and {received} resets"
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

/// A test host in its own network namespace, on a veth pair, whose firewall
/// drops SYNs to one port.
struct BlackHole {
    _netns: Netns,
    pub addr: SocketAddr,
}

impl BlackHole {
    fn create() -> BlackHole {
        let id = std::process::id() % 200 + 20;
        let netns = Netns::create("test", id);
        let ns = netns.name.clone();
        let (host, peer) = (format!("vat{id}h"), format!("vat{id}p"));
        let (host_ip, peer_ip) = (
            Ipv4Addr::new(10, 231, id as u8, 1),
            Ipv4Addr::new(10, 231, id as u8, 2),
        );
        for cmd in [
            format!("ip link add {host} type veth peer name {peer}"),
            format!("ip link set {peer} netns {ns}"),
            format!("ip addr add {host_ip}/30 dev {host}"),
            format!("ip link set {host} up"),
            format!("ip -n {ns} addr add {peer_ip}/30 dev {peer}"),
            format!("ip -n {ns} link set {peer} up"),
        ] {
            must(&cmd);
        }
        netns.exec(&["nft", "add table inet blackhole"]);
        netns.exec(&[
            "nft",
            "add chain inet blackhole input { type filter hook input priority 0; policy accept; }",
        ]);
        netns.exec(&["nft", "add rule inet blackhole input tcp dport 9999 drop"]);
        BlackHole {
            _netns: netns,
            addr: SocketAddr::new(peer_ip.into(), 9999),
        }
    }
}

#[test]
fn syn_drops_time_out_and_leave_nothing_in_flight() {
    tests::require_root();
    let hole = BlackHole::create();
    // TCP_SYNCNT=1: the kernel gives up after one retransmission (~3 s).
    let w = Workload::start(&["connect", "1", &hole.addr.to_string(), "3"]);
    let agent = Agent::start(&["--pid", &w.pid()]);
    let bt = Bpftrace::start(&count_retransmits_to(hole.addr.port()));
    assert_eq!(w.go(), ["ETIMEDOUT=3"]);
    // Every connect has timed out, so no SYN is retransmitted any more:
    // bpftrace's count is final, and the agent's must reach it exactly.
    let theirs = bt.stop("n");
    let dest = hole.addr.to_string();
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        connects(e, "timed_out") >= 3.0 && retransmits(e, &dest) >= theirs
    });
    assert_eq!(connects(&e, "timed_out"), 3.0);
    // SYN retransmits, on the sockets --pid remembered at connect: at least
    // one per connect (how many depends on tcp_syn_linear_timeouts).
    let syns = retransmits(&e, &dest);
    assert!(syns >= 3.0, "{syns}");
    assert_eq!(syns, theirs);
    assert_eq!(connects(&e, "success"), 0.0);
    assert_eq!(
        e.value("ebpf_agent_tcp_connect_latency_seconds_count", &[]),
        0.0,
        "failures are not latencies"
    );
    assert_eq!(e.value("ebpf_agent_tcp_connects_in_flight", &[]), 0.0);
    assert_eq!(
        e.value(
            "ebpf_agent_tcp_connects_by_destination_total",
            &[("destination", &dest), ("outcome", "timed_out")]
        ),
        3.0
    );
}

fn retransmits(e: &Exposition, dest: &str) -> f64 {
    e.value("ebpf_agent_tcp_retransmits_total", &[("destination", dest)])
}

fn resets(e: &Exposition, direction: &str, dest: &str) -> f64 {
    e.value(
        "ebpf_agent_tcp_resets_total",
        &[("direction", direction), ("destination", dest)],
    )
}

/// Whether the agent counts retransmits and resets. Only a kernel whose
/// tcp_receive_reset record has no address family may make it say no.
fn peers_counted(agent: &Agent) -> bool {
    if !agent
        .stderr()
        .contains("TCP retransmits and resets are not counted")
    {
        return true;
    }
    let format = "/sys/kernel/tracing/events/tcp/tcp_receive_reset/format";
    let text = std::fs::read_to_string(format).unwrap_or_default();
    assert!(
        !text.contains(" family;"),
        "the agent counts no resets although {format} has a family:\n{}",
        agent.stderr()
    );
    false
}

/// bpftrace counting, in @n, the segments retransmitted to `port` that left
/// (a failed attempt has err != 0). count(), not `@n++`: the increment is not
/// atomic, and SYN timers on two CPUs fire together.
fn count_retransmits_to(port: u16) -> String {
    format!(
        "tracepoint:tcp:tcp_retransmit_skb \
         /args->dport == {port} && args->err == 0/ {{ @n = count(); }}"
    )
}

fn assert_no_drops(e: &Exposition) {
    let dropped = e.sum_by(
        "ebpf_agent_events_dropped_total",
        &[("probe", "tcp")],
        "stage",
    );
    assert!(dropped.values().all(|&n| n == 0.0), "{dropped:?}");
}

/// An agent in node mode, with room for every destination the machine uses
/// meanwhile, and one tracing this test process alone.
fn node_and_self_agents() -> (Agent, Agent) {
    let node = Agent::start(&["--tcp-destination-budget", "100000"]);
    let me = std::process::id().to_string();
    (node, Agent::start(&["--pid", &me]))
}

/// Both ends in one namespace, whose firewall drops the first K data segments
/// to the server (on input, so the sends themselves succeed and the client
/// retransmits). The namespace's own TCP counters then count this flow alone.
#[test]
fn retransmits_equal_the_namespaces_retrans_segs_and_bpftrace() {
    const K: u64 = 3;
    const PORT: u16 = 47123;
    tests::require_root();
    let id = std::process::id() % 200 + 20;
    let ns = Netns::create("rtx", id);
    let server: SocketAddr = SocketAddr::new(Ipv4Addr::new(10, 232, id as u8, 2).into(), PORT);
    ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{}/32", server.ip()),
        "dev",
        "lo",
    ]);
    ns.exec(&["nft", "add table inet loss"]);
    ns.exec(&[
        "nft",
        "add chain inet loss input { type filter hook input priority 0; policy accept; }",
    ]);
    // numgen counts only the packets that got this far: data segments to PORT.
    ns.exec(&[
        "nft",
        &format!(
            "add rule inet loss input tcp dport {PORT} meta length > 100 \
             numgen inc mod 1000000000 < {K} counter drop"
        ),
    ]);
    let (node, me) = node_and_self_agents();
    let bt = Bpftrace::start(&count_retransmits_to(PORT));
    let before = ns.snmp("Tcp", "RetransSegs");
    let listener = ns
        .spawn(move || TcpListener::bind(server).unwrap())
        .join()
        .unwrap();
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got.len()
    });
    ns.spawn(move || {
        let mut c = TcpStream::connect(server).unwrap();
        c.write_all(&[7; 1000]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        // Returns 0 at the server's FIN: every segment got through.
        assert_eq!(c.read(&mut [0; 1]).unwrap(), 0);
    })
    .join()
    .unwrap();
    assert_eq!(reader.join().unwrap(), 1000);
    let kernel = (ns.snmp("Tcp", "RetransSegs") - before) as f64;
    assert!(
        kernel >= K as f64,
        "the firewall dropped {K}: {kernel} retransmits"
    );
    let dest = server.to_string();
    for agent in [&node, &me] {
        let e = agent.scrape_until(Duration::from_secs(10), |e| retransmits(e, &dest) >= kernel);
        assert_eq!(retransmits(&e, &dest), kernel);
        assert_eq!(
            e.value("ebpf_agent_tcp_destinations_folded_total", &[]),
            0.0
        );
        assert_no_drops(&e);
    }
    // Nothing else on this machine retransmits to PORT: the pid agent's total is exact too.
    let e = me.scrape();
    assert_eq!(e.sum("ebpf_agent_tcp_retransmits_total", &[]), Some(kernel));
    assert_eq!(bt.stop("n"), kernel);
    me.check_exposition_with_peers();
}

/// A server that closes a connection with unread data aborts it: one reset
/// sent (in close(), by this process), one received by the client.
#[test]
fn an_abortive_close_sends_and_receives_exactly_one_reset() {
    let (node, me) = node_and_self_agents();
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let listener = TcpListener::bind(bind).unwrap();
        let server = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(server).unwrap();
        let client_addr = client.local_addr().unwrap();
        client.write_all(b"never read").unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // Wait for the data to be queued on the server side, then close.
        accepted.peek(&mut [0; 1]).unwrap();
        drop(accepted);
        let err = client.read(&mut [0; 1]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{bind}");
        let (sent_to, received_from) = (client_addr.to_string(), server.to_string());
        for agent in [&node, &me] {
            let e = agent.scrape_until(Duration::from_secs(10), |e| {
                resets(e, "sent", &sent_to) >= 1.0 && resets(e, "received", &received_from) >= 1.0
            });
            assert_eq!(resets(&e, "sent", &sent_to), 1.0, "{bind}");
            assert_eq!(resets(&e, "received", &received_from), 1.0, "{bind}");
            assert_eq!(resets(&e, "received", &sent_to), 0.0, "{bind}");
            assert_no_drops(&e);
        }
    }
}

/// Refused connects from this process to `dests`, one after the other.
fn refuse_all(dests: &[SocketAddr]) {
    for d in dests {
        let err = TcpStream::connect_timeout(d, Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{d}");
    }
}

/// Once the destination budget is spent, the kernel counts resets itself:
/// admitted destinations in its per-CPU map, new ones under "other" (the
/// agent turns that on). Refused connects to 300 distinct loopback
/// addresses, with a budget of 5, must still come out exact, and past the
/// first few, no reset may reach the agent as a ring-buffer event.
#[test]
fn past_the_budget_resets_are_counted_in_the_kernel_exactly() {
    const BUDGET: usize = 5;
    const FIRST: usize = 10;
    const MORE: usize = 290;
    const AGAIN: usize = 50;
    // Listening on 127.0.0.1:P keeps any wildcard listener off P, so nothing
    // accepts on 127.1.x.y:P.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dests: Vec<SocketAddr> = (0..(FIRST + MORE) as u16)
        .map(|i| SocketAddr::from(([127, 1, (i >> 8) as u8, (i & 0xff) as u8 + 1], port)))
        .collect();
    let me = std::process::id().to_string();
    let agent = Agent::start(&["--pid", &me, "--tcp-destination-budget", "5"]);
    if !peers_counted(&agent) {
        return;
    }
    let received = |e: &Exposition| {
        e.sum("ebpf_agent_tcp_resets_total", &[("direction", "received")])
            .unwrap_or(0.0)
    };
    let events = |e: &Exposition| e.value("ebpf_agent_events_received_total", &[("probe", "tcp")]);
    // The first ten: five admitted, the agent spends its budget and turns
    // the kernel's folding on.
    refuse_all(&dests[..FIRST]);
    let before = agent.scrape_until(Duration::from_secs(10), |e| {
        received(e) >= FIRST as f64 && connects(e, "refused") >= FIRST as f64
    });
    assert_eq!(received(&before), FIRST as f64);
    // New destinations (folded) and an admitted one again.
    refuse_all(&dests[FIRST..]);
    refuse_all(&vec![dests[0]; AGAIN]);
    let total = FIRST + MORE + AGAIN;
    let e = agent.scrape_until(Duration::from_secs(10), |e| {
        received(e) >= total as f64 && connects(e, "refused") >= total as f64
    });
    assert_eq!(received(&e), total as f64);
    assert_eq!(
        resets(&e, "received", &dests[0].to_string()),
        1.0 + AGAIN as f64
    );
    for d in &dests[1..BUDGET] {
        assert_eq!(resets(&e, "received", &d.to_string()), 1.0, "{d}");
    }
    assert_eq!(
        resets(&e, "received", "other"),
        (FIRST + MORE - BUDGET) as f64
    );
    // Scrapes are this process's connects too (successes, past the budget).
    let scrapes = e.value(
        "ebpf_agent_tcp_connects_by_destination_total",
        &[("destination", "other"), ("outcome", "success")],
    );
    assert_eq!(
        e.value("ebpf_agent_tcp_destinations_folded_total", &[]) - scrapes,
        2.0 * (FIRST + MORE - BUDGET) as f64,
        "each folded destination: a connect and a reset"
    );
    // After the first ten, only the connects came through the ring.
    let connected = |e: &Exposition| connects(e, "refused") + connects(e, "success");
    let e = agent.scrape_until(Duration::from_secs(5), |e| {
        events(e) - events(&before) == connected(e) - connected(&before)
    });
    assert_eq!(
        events(&e) - events(&before),
        connected(&e) - connected(&before),
        "ring-buffer events besides the connects"
    );
    assert_no_drops(&e);
    drop(held);
}
