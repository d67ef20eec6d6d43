//! OTLP export end to end (agent/src/push/otlp.rs): the agent pushes to a
//! receiver built on the official proto definitions (tests/src/otlp.rs: hyper
//! for OTLP/HTTP, tonic's server for gRPC). A known number of getppid calls
//! arrives exactly, the latency histogram's buckets equal /metrics', delta
//! temporality adds up to the totals, and the receiver's failures are retried
//! or dropped as the OTLP spec says, counted either way.

use std::collections::BTreeMap;
use std::time::Duration;
use tests::otlp::{self, AggregationTemporality, Answer, Key, Point, Protocol, Received};
use tests::web::{Scratch, make_pki};
use tests::{Agent, Exposition, OtlpReceiver, Workload};

const CALLS: &str = "ebpf_agent_syscalls";
const LATENCY: &str = "ebpf_agent_syscall_latency_seconds";
const GETPPID: [(&str, &str); 1] = [("syscall", "getppid")];
const WAIT: Duration = Duration::from_secs(40);

/// An agent tracing an idle `bursts` workload, pushing OTLP every second.
fn start(rx: &OtlpReceiver, extra: &[&str]) -> (Agent, Workload) {
    let w = Workload::start(&["bursts"]);
    let pid = w.pid();
    let endpoint = rx.endpoint();
    let protocol = match rx.protocol {
        Protocol::Http => "http",
        Protocol::Grpc => "grpc",
    };
    let mut args = vec![
        "--pid",
        &pid,
        "--probes",
        "syscalls",
        "--collectors",
        "none",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol,
        "--push-interval",
        "1",
    ];
    args.extend_from_slice(extra);
    let env = [
        "env",
        "OTEL_RESOURCE_ATTRIBUTES=k8s.node.name=node-1,k8s.pod.name=ebpf-agent-x",
    ];
    (Agent::start_under(&env, &args), w)
}

fn getppid_calls(r: &Received) -> Option<f64> {
    otlp::sum(&r.points(), CALLS, &GETPPID)
}

fn metric(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    e.sum(name, labels).unwrap_or(0.0)
}

#[test]
fn otlp_http_carries_exact_counts_and_the_same_buckets_as_metrics() {
    const N: u64 = 777;
    let rx = OtlpReceiver::start(Protocol::Http);
    let (agent, mut w) = start(&rx, &[]);
    w.burst(N);
    let got = rx.wait_until("the burst's count", WAIT, |r| {
        r.iter().any(|r| getppid_calls(r) == Some(N as f64))
    });
    // The workload is idle now: /metrics and the next push show the same moment.
    let e = agent.scrape();
    let seen = got.len();
    let got = rx.wait_until("one more push", WAIT, |r| r.len() > seen);
    let last = got.last().unwrap();
    let points = last.points();
    let Some(Point::Histogram {
        bounds,
        sum,
        count,
        temporality,
        ..
    }) = otlp::get(&points, LATENCY, &GETPPID)
    else {
        panic!("no getppid latency histogram in {points:?}");
    };
    let h = otlp::get(&points, LATENCY, &GETPPID).unwrap();
    assert_eq!(h.cumulative_buckets(), e.buckets(LATENCY, &GETPPID));
    assert_eq!(*count, N);
    assert_eq!(
        Some(*sum.as_ref().unwrap()),
        e.sum(&format!("{LATENCY}_sum"), &GETPPID)
    );
    assert_eq!(*temporality, AggregationTemporality::Cumulative);
    assert!(!bounds.is_empty());
    match otlp::get(&points, CALLS, &GETPPID) {
        Some(Point::Sum {
            value,
            monotonic: true,
            temporality: AggregationTemporality::Cumulative,
        }) => {
            assert_eq!(*value, N as f64)
        }
        other => panic!("{CALLS}: {other:?}"),
    }
    // Every series /metrics has, the push has (counters without _total).
    let scraped: usize = e
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_total"))
        .count();
    let sums = points
        .values()
        .filter(|p| matches!(p, Point::Sum { .. }))
        .count();
    assert_eq!(sums, scraped, "counters in /metrics and in the push");

    let resource: BTreeMap<_, _> = last.resource.iter().cloned().collect();
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("ebpf-agent")
    );
    assert_eq!(
        resource.get("k8s.node.name").map(String::as_str),
        Some("node-1")
    );
    assert_eq!(
        resource.get("k8s.pod.name").map(String::as_str),
        Some("ebpf-agent-x")
    );
    assert!(resource.get("host.name").is_some_and(|h| !h.is_empty()));
    for r in &got {
        assert!(r.delivered(), "{:?}", r.rejected);
        assert_eq!(r.path, "/v1/metrics");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("ebpf-agent/"))
        );
    }
    let e = agent.scrape();
    assert!(metric(&e, "ebpf_agent_push_samples_total", &[("exporter", "otlp")]) > 0.0);
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_failed_total", &[]),
        0.0
    );
}

#[test]
fn otlp_grpc_delta_points_add_up_to_the_bursts() {
    const FIRST: u64 = 300;
    const SECOND: u64 = 4_000;
    let rx = OtlpReceiver::start(Protocol::Grpc);
    let (agent, mut w) = start(&rx, &["--otlp-temporality", "delta"]);
    w.burst(FIRST);
    rx.wait_until("the first burst", WAIT, |r| {
        r.iter().filter_map(getppid_calls).sum::<f64>() == FIRST as f64
    });
    w.burst(SECOND);
    let got = rx.wait_until("the second burst", WAIT, |r| {
        r.iter().filter_map(getppid_calls).sum::<f64>() == (FIRST + SECOND) as f64
    });
    // Each point covers the time since the one before: stamps chain up.
    let mut previous_time = None;
    let mut histogram_count = 0;
    for r in &got {
        assert!(r.delivered(), "{:?}", r.rejected);
        assert_eq!(r.header("content-type"), Some("application/grpc"));
        assert_eq!(r.header("grpc-encoding"), Some("gzip"));
        let stamped = otlp::stamped_points(r.request());
        let getppid = |(name, attrs): &&Key| {
            name == CALLS && attrs.iter().any(|(k, v)| k == "syscall" && v == "getppid")
        };
        if let Some((point, stamps)) = stamped.keys().find(getppid).map(|k| &stamped[k]) {
            assert!(matches!(
                point,
                Point::Sum {
                    temporality: AggregationTemporality::Delta,
                    monotonic: true,
                    ..
                }
            ));
            if let Some(t) = previous_time {
                assert_eq!(stamps.start_time_unix_nano, t, "delta points must chain");
            }
            assert!(stamps.time_unix_nano > stamps.start_time_unix_nano);
            previous_time = Some(stamps.time_unix_nano);
        }
        if let Some(Point::Histogram {
            count, temporality, ..
        }) = otlp::get(&r.points(), LATENCY, &GETPPID)
        {
            assert_eq!(*temporality, AggregationTemporality::Delta);
            histogram_count += count;
        }
    }
    assert_eq!(histogram_count, FIRST + SECOND);
    let e = agent.scrape();
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_failed_total", &[]),
        0.0
    );
}

#[test]
fn otlp_receiver_errors_are_retried_or_dropped_as_the_spec_says_and_counted() {
    // gRPC: UNAVAILABLE is retried; INVALID_ARGUMENT is not; RESOURCE_EXHAUSTED
    // is retried only with RetryInfo, after the delay it asks for.
    let rx = OtlpReceiver::start(Protocol::Grpc);
    rx.script(vec![
        Answer::grpc(14, "down"),
        Answer::grpc(3, "bad"),
        Answer::grpc(8, "full, no hint"),
        Answer::GrpcRetryInfo(8, "slow down".into(), Duration::from_secs(2)),
    ]);
    let (agent, _w) = start(&rx, &[]);
    let got = rx.wait_until("the script and a success", WAIT, |r| {
        r.iter().filter(|r| r.answer.is_success()).count() >= 2
    });
    let answers: Vec<&Answer> = got.iter().map(|r| &r.answer).collect();
    assert!(answers.len() >= 5, "{answers:?}");
    let body = |i: usize| got[i].request().clone();
    // 14 then the same push again (3); a new push dropped at 3, the next at 8
    // without a hint; then one retried after RetryInfo's 2 s.
    assert_eq!(body(0), body(1), "UNAVAILABLE must be retried");
    assert_ne!(body(1), body(2), "INVALID_ARGUMENT must not be retried");
    assert_ne!(
        body(2),
        body(3),
        "RESOURCE_EXHAUSTED without RetryInfo must not be retried"
    );
    assert_eq!(
        body(3),
        body(4),
        "RESOURCE_EXHAUSTED with RetryInfo must be retried"
    );
    assert!(
        got[4].at - got[3].at >= Duration::from_secs(2),
        "RetryInfo's delay not honoured"
    );
    let e = agent.scrape_until(WAIT, |e| {
        metric(e, "ebpf_agent_push_requests_total", &[]) >= 2.0
    });
    let failed = |reason| {
        metric(
            &e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(failed("grpc_unavailable"), 1.0);
    assert_eq!(failed("grpc_invalid_argument"), 1.0);
    assert_eq!(failed("grpc_resource_exhausted"), 2.0);
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_retried_total", &[]),
        2.0
    );
    assert!(
        metric(
            &e,
            "ebpf_agent_push_samples_dropped_total",
            &[("reason", "rejected")]
        ) > 0.0
    );

    // HTTP: 400 dropped, 503 and 429 (with Retry-After) retried.
    let rx = OtlpReceiver::start(Protocol::Http);
    rx.script(vec![
        Answer::http(400, &[]),
        Answer::http(503, &[]),
        Answer::http(429, &[("Retry-After", "2")]),
    ]);
    let (agent, _w) = start(&rx, &[]);
    let got = rx.wait_until("the script and a success", WAIT, |r| {
        r.iter().any(|r| r.answer.is_success())
    });
    assert_ne!(
        got[0].request(),
        got[1].request(),
        "400 must not be retried"
    );
    assert_eq!(got[1].request(), got[2].request(), "503 must be retried");
    assert_eq!(got[2].request(), got[3].request(), "429 must be retried");
    assert!(
        got[3].at - got[2].at >= Duration::from_secs(2),
        "Retry-After not honoured"
    );
    let e = agent.scrape_until(WAIT, |e| {
        metric(e, "ebpf_agent_push_requests_total", &[]) >= 1.0
    });
    for reason in ["http_400", "http_503", "http_429"] {
        assert_eq!(
            metric(
                &e,
                "ebpf_agent_push_requests_failed_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_retried_total", &[]),
        2.0
    );
    let log = agent.stderr();
    assert_eq!(
        log.matches("answered 503").count(),
        1,
        "logged once:\n{log}"
    );
}

#[test]
fn otlp_grpc_over_mutual_tls_with_a_bearer_token() {
    const N: u64 = 4_242;
    let pki = Scratch::new("otlp-tls");
    make_pki(&pki.0);
    let p = |f: &str| pki.path(f).to_str().unwrap().to_string();
    let token = pki.write("token", "otlp-s3cret\n");
    let token = token.to_str().unwrap().to_string();
    let rx = OtlpReceiver::start_grpc_tls(&pki.0);
    assert!(rx.endpoint().starts_with("https://"));
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let tls = [
        "--push-ca-file",
        ca.as_str(),
        "--push-cert-file",
        cert.as_str(),
        "--push-key-file",
        key.as_str(),
        "--push-bearer-token-file",
        token.as_str(),
        "--push-header",
        "X-Scope-OrgID: team-a",
    ];
    let (agent, mut w) = start(&rx, &tls);
    w.burst(N);
    let got = rx.wait_until("the burst over TLS", WAIT, |r| {
        r.iter().any(|r| getppid_calls(r) == Some(N as f64))
    });
    for r in &got {
        assert!(r.delivered(), "{:?}", r.rejected);
        assert_eq!(r.header("authorization"), Some("Bearer otlp-s3cret"));
        assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
    }
    let e = agent.scrape();
    assert_eq!(
        metric(&e, "ebpf_agent_push_requests_failed_total", &[]),
        0.0
    );

    // Without a client certificate the handshake fails: retried, counted as network.
    let rx_strict = OtlpReceiver::start_grpc_tls(&pki.0);
    let (agent, _w) = start(&rx_strict, &tls[..2]);
    let e = agent.scrape_until(WAIT, |e| {
        metric(
            e,
            "ebpf_agent_push_requests_failed_total",
            &[("reason", "network")],
        ) >= 2.0
    });
    assert_eq!(metric(&e, "ebpf_agent_push_requests_total", &[]), 0.0);
    assert!(
        rx_strict.received().is_empty(),
        "nothing gets past the handshake"
    );
}
