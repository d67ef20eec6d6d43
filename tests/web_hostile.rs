//! Hostile clients on the network: 300 concurrent scrapers, then 1,100 idle
//! sockets against a 1024-descriptor limit, then 300 clients sending their
//! request heads a byte a second. Another client's scrapes must keep
//! succeeding within 1 s each, and afterwards the agent's memory, threads and
//! descriptors must return to their baseline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tests::web::{KeepAlive, start_agent};
use tests::{Exposition, http_get_accept};

/// (RSS in kB, threads, open descriptors) of a process.
fn usage(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    (field("VmRSS:"), field("Threads:"), fds)
}

/// Scrapes every 250 ms for `time` over a kept-alive connection (reconnecting
/// when the server closed it, as Prometheus does), then clears `busy` (the
/// hostile clients' signal to stop); each scrape, reconnect included, must be
/// a 200 within 1 s. Returns the slowest.
fn watch_scrapes(addr: SocketAddr, phase: &str, busy: &AtomicBool, time: Duration) -> Duration {
    let end = Instant::now() + time;
    let mut client = KeepAlive::new(addr);
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while Instant::now() < end {
        let start = Instant::now();
        let (status, body) = client
            .get("/metrics", "text/plain")
            .unwrap_or_else(|e| panic!("{phase}: scrape {n} failed: {e}"));
        let took = start.elapsed();
        assert_eq!(status, 200, "{phase}: scrape {n}: {body}");
        assert!(
            body.contains("# TYPE ebpf_agent_http_scrapes_total counter"),
            "{phase}"
        );
        assert!(
            took < Duration::from_secs(1),
            "{phase}: scrape {n} took {took:?}"
        );
        slowest = slowest.max(took);
        n += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    busy.store(false, Relaxed);
    assert!(n >= 10, "{phase}: only {n} scrapes");
    eprintln!(
        "{phase}: {n} scrapes, slowest {slowest:?}, {} reconnects",
        client.reconnects
    );
    slowest
}

/// Room for the test's own 1,100+ sockets.
fn raise_fd_limit() {
    let lim = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: setrlimit reads `lim`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[test]
fn scrapes_survive_floods_idle_sockets_and_slow_clients() {
    raise_fd_limit();
    let (agent, _) = start_agent(&["prlimit", "--nofile=1024:1024"], &[]);
    let addr = agent.addr;
    let pid = agent.pid();
    // Warm up to the steady state of a scraped agent: the collectors' first
    // reads, every rendering, and a few concurrent clients (Prometheus
    // replicas, a curl), which give the allocator its per-thread arenas.
    for _ in 0..20 {
        http_get_accept(addr, "/metrics", "text/plain").unwrap();
        http_get_accept(addr, "/metrics", "application/openmetrics-text").unwrap();
    }
    let warm: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..20 {
                    http_get_accept(addr, "/metrics", "text/plain").unwrap();
                }
            })
        })
        .collect();
    warm.into_iter().for_each(|t| t.join().unwrap());
    // The blocking threads retire (10 s) and the freed memory is returned.
    std::thread::sleep(Duration::from_secs(15));
    let baseline = usage(pid);
    eprintln!(
        "baseline: RSS {} kB, {} threads, {} fds",
        baseline.0, baseline.1, baseline.2
    );

    // 1. 300 concurrent scrapers for 10 s.
    let busy = Arc::new(AtomicBool::new(true));
    let scrapers: Vec<_> = (0..300)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                // Kept-alive, as scrapers are: 300 clients, not 300 new
                // connections per round (which would run the loopback out of
                // ports, with TIME_WAIT collisions costing 1 s SYN retries).
                let mut client = KeepAlive::new(addr);
                let mut ok = 0u64;
                while busy.load(Relaxed) {
                    if client
                        .get("/metrics", "text/plain")
                        .is_ok_and(|(status, _)| status == 200)
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    watch_scrapes(
        addr,
        "300 concurrent scrapers",
        &busy,
        Duration::from_secs(10),
    );
    let served: u64 = scrapers.into_iter().map(|t| t.join().unwrap()).sum();
    let peak = usage(pid);
    eprintln!(
        "300 scrapers: {served} scrapes served; agent RSS {} kB, {} threads",
        peak.0, peak.1
    );
    assert!(served > 300, "the flood itself was not served: {served}");

    // 2. 1,100 idle sockets under the agent's 1024-descriptor limit, held 12 s.
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert_eq!(
        idle.len(),
        1100,
        "the kernel's backlog took fewer than 1,100"
    );
    let busy = Arc::new(AtomicBool::new(true));
    watch_scrapes(addr, "1,100 idle sockets", &busy, Duration::from_secs(12));
    drop(idle);

    // 3. 300 slow-header clients for 20 s: a byte a second, reconnecting when closed.
    let busy = Arc::new(AtomicBool::new(true));
    let slow: Vec<_> = (0..300)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                let mut connections = 0u32;
                while busy.load(Relaxed) {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    connections += 1;
                    let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
                    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                    for b in head.iter().cycle() {
                        if !busy.load(Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        // Closed by the server? (read returns 0)
                        if matches!(s.read(&mut [0u8; 64]), Ok(0)) {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                connections
            })
        })
        .collect();
    watch_scrapes(
        addr,
        "300 slow-header clients",
        &busy,
        Duration::from_secs(20),
    );
    let reconnects: u32 = slow.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("slow clients: {reconnects} connections (the header timeout closes them)");

    // Refusals and closings were counted.
    let om = http_get_accept(addr, "/metrics", "application/openmetrics-text").unwrap();
    let e = Exposition::parse(&om.body);
    let evicted = e
        .get(
            "ebpf_agent_http_connections_closed_total",
            &[("reason", "evicted")],
        )
        .unwrap_or(0.0);
    assert!(
        evicted >= 100.0,
        "idle sockets were not closed for new ones: {evicted}"
    );
    let encodes = e.value("ebpf_agent_http_scrape_encodes_total", &[]);
    let scrapes = e.value("ebpf_agent_http_scrapes_total", &[]);
    eprintln!("{scrapes} scrapes, {encodes} encodes, {evicted} evicted");
    assert!(
        encodes < scrapes / 2.0,
        "simultaneous scrapes did not share encodes"
    );
    assert!(agent.stderr().contains("logged once"), "{}", agent.stderr());

    // 4. Back to the baseline: blocking threads retire after 10 s idle.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = usage(pid);
        let rss_ok = now.0 <= baseline.0 + 5 * 1024;
        let threads_ok = now.1 <= baseline.1 + 3;
        let fds_ok = now.2 <= baseline.2 + 3;
        if rss_ok && threads_ok && fds_ok {
            eprintln!("after: RSS {} kB, {} threads, {} fds", now.0, now.1, now.2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not back to baseline {baseline:?} after 30 s: {now:?} (RSS kB, threads, fds)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = http_get_accept(addr, "/metrics", "text/plain").unwrap();
    assert_eq!(r.status, 200);
}
