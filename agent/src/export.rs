//! Prometheus exposition: collectors that snapshot the aggregates at scrape
//! time, and the HTTP endpoints (/metrics, /healthz, /readyz).

use crate::aggregate::{SyscallKey, SyscallsBySlot};
use crate::bpf::KernelCounters;
use crate::k8s::Attribution;
use crate::stats::AgentStats;
use crate::{exposition, names};
use agent_common::counters;
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Every eBPF and agent metric starts with this.
pub const PREFIX: &str = "ebpf_agent";

pub fn registry(
    syscalls: Arc<Mutex<SyscallsBySlot>>,
    attribution: Option<Arc<Attribution>>,
    tcp: Option<crate::tcp::TcpCollector>,
    runq: Option<crate::probes::sched::RunqCollector>,
    stats: Arc<AgentStats>,
    kernel: Option<Arc<KernelCounters>>,
) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    r.register(
        "build",
        "Agent build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    r.register_collector(Box::new(SyscallCollector {
        agg: syscalls,
        attribution: attribution.clone(),
    }));
    if let Some(a) = attribution {
        r.register_collector(Box::new(crate::k8s::Metrics(a)));
    }
    if let Some(tcp) = tcp {
        r.register_collector(Box::new(tcp));
    }
    if let Some(runq) = runq {
        r.register_collector(Box::new(runq));
    }
    r.register_collector(Box::new(AgentCollector { stats, kernel }));
    r
}

#[derive(Debug)]
struct SyscallCollector {
    agg: Arc<Mutex<SyscallsBySlot>>,
    attribution: Option<Arc<Attribution>>,
}

fn label(key: SyscallKey) -> Cow<'static, str> {
    match key {
        SyscallKey::Id(id) => names::syscall(id),
        SyscallKey::Other => Cow::Borrowed("other"),
    }
}

impl Collector for SyscallCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let labeler = crate::k8s::labeler(self.attribution.as_deref());
        let agg = self.agg.lock().unwrap_or_else(|p| p.into_inner());
        // (container labels + syscall label, stats) for every live slot.
        let series: Vec<_> = agg
            .iter()
            .filter_map(|(slot, a)| Some((labeler.labels(slot)?, a)))
            .flat_map(|(container, a)| {
                a.series().into_iter().map(move |(key, s)| {
                    let mut labels = container.clone();
                    labels.push(("syscall", label(key)));
                    (labels, s)
                })
            })
            .collect();
        let mut m = enc.encode_descriptor(
            "syscall_latency",
            "Time from syscall entry to exit, by syscall",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, s) in &series {
            s.latency.encode(m.encode_family(labels)?)?;
        }
        let mut m = enc.encode_descriptor(
            "syscalls",
            "Completed syscalls, by syscall",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &series {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&s.latency.count(), None)?;
        }
        let mut m = enc.encode_descriptor(
            "syscall_errors",
            "Syscalls that returned an error, by syscall and errno",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &series {
            for &(errno, n) in &s.errors {
                let mut labels = labels.clone();
                labels.push(("errno", names::errno(errno)));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        let folded = agg.folded_events();
        drop(agg);
        let mut m = enc.encode_descriptor(
            "series_folded",
            "Events recorded under label value \"other\" because a family's series budget was spent",
            None,
            MetricType::Counter,
        )?;
        if let Some(a) = &self.attribution {
            m.encode_family(&[("family", "container")])?
                .encode_counter::<NoLabelSet, _, u64>(&a.folded_events(), None)?;
        }
        m.encode_family(&[("family", "syscall")])?
            .encode_counter::<NoLabelSet, _, u64>(&folded, None)?;
        Ok(())
    }
}

#[derive(Debug)]
struct AgentCollector {
    stats: Arc<AgentStats>,
    kernel: Option<Arc<KernelCounters>>,
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let probes = self.stats.probes();
        let mut m = enc.encode_descriptor(
            "probe_attached",
            "Whether the probe is attached (1) or could not attach on this kernel (0)",
            None,
            MetricType::Gauge,
        )?;
        for (probe, p) in probes.into_iter().filter(|(_, p)| p.enabled.load(Relaxed)) {
            m.encode_family(&[("probe", probe)])?
                .encode_gauge(&i64::from(p.attached.load(Relaxed)))?;
        }
        let mut m = enc.encode_descriptor(
            "events_received",
            "Events read from the kernel and aggregated",
            None,
            MetricType::Counter,
        )?;
        for (probe, p) in self.stats.streaming() {
            m.encode_family(&[("probe", probe)])?
                .encode_counter::<NoLabelSet, _, u64>(&p.events.load(Relaxed), None)?;
        }
        let kernel = |index| self.kernel.as_ref().map_or(0, |k| k.get(index));
        let dropped: [(&str, &str, u64); 7] = [
            (
                "syscalls",
                "ringbuf_full",
                kernel(counters::SYSCALL_RINGBUF_DROPS),
            ),
            (
                "syscalls",
                "exit_without_enter",
                kernel(counters::SYSCALL_EXIT_WITHOUT_ENTER),
            ),
            // A malformed item holds up to a batch of events; counted per item.
            (
                "syscalls",
                "decode",
                self.stats.syscalls.decode_errors.load(Relaxed),
            ),
            ("tcp", "ringbuf_full", kernel(counters::TCP_RINGBUF_DROPS)),
            (
                "tcp",
                "inflight_map_full",
                kernel(counters::TCP_INFLIGHT_FULL),
            ),
            ("tcp", "decode", self.stats.tcp.decode_errors.load(Relaxed)),
            (
                "sched",
                "task_read_failed",
                kernel(counters::RUNQ_READ_FAILED),
            ),
        ];
        let mut m = enc.encode_descriptor(
            "events_dropped",
            "Events lost, by probe and the stage that lost them",
            None,
            MetricType::Counter,
        )?;
        for (probe, stage, n) in dropped {
            m.encode_family(&[("probe", probe), ("stage", stage)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let mut m = enc.encode_descriptor(
            "tcp_accepts",
            "Passive TCP opens (SYN_RECV to ESTABLISHED); node mode only",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&kernel(counters::TCP_ACCEPTS), None)?;
        let mut m = enc.encode_descriptor(
            "runqueue_cgroup_map_full",
            "Run-queue waits counted under the host's labels because the kernel's per-cgroup histogram map was full (container attribution only)",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&kernel(counters::RUNQ_CGROUP_MAP_FULL), None)?;
        Ok(())
    }
}

/// Binds the metrics address, turning common failures into what to do.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process uses it; pick a free one with --listen"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need root; pick another with --listen"
            }
            _ => "check the address given to --listen",
        };
        anyhow::Error::new(e).context(format!("cannot listen on {addr}: {hint}"))
    })
}

struct HttpState {
    /// Encoded in order into one exposition (the agent's own, then node_*).
    registries: Vec<Registry>,
    stats: Arc<AgentStats>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    registries: Vec<Registry>,
    stats: Arc<AgentStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let state = Arc::new(HttpState { registries, stats });
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|&stop| stop).await;
        })
        .await
        .context("metrics server failed")
}

async fn metrics(State(s): State<Arc<HttpState>>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = exposition::negotiate(accept);
    // Collectors read /proc, /sys and BPF maps: blocking work, kept off the
    // async workers so a slow scrape cannot stall draining the ring buffers.
    let encoded = tokio::task::spawn_blocking(move || {
        let mut body = String::with_capacity(64 * 1024);
        encode_all(&mut body, &s.registries).map(|()| body)
    })
    .await;
    match encoded {
        Ok(Ok(body)) => {
            let body = match format {
                exposition::Format::Text004 => exposition::to_text_004(&body),
                exposition::Format::OpenMetrics => body,
            };
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

/// One OpenMetrics exposition from several registries: each registry's
/// families, then a single `# EOF`.
fn encode_all(body: &mut String, registries: &[Registry]) -> std::fmt::Result {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    for r in registries {
        encode_registry(body, r)?;
    }
    encode_eof(body)
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    if s.stats.ready.load(Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "probes are not attached yet\n",
        )
            .into_response()
    }
}

async fn index() -> Html<&'static str> {
    Html(
        "<html><head><title>ebpf-agent</title></head><body><h1>ebpf-agent</h1>\
         <p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/healthz\">/healthz</a> \
         &middot; <a href=\"/readyz\">/readyz</a></p></body></html>\n",
    )
}
