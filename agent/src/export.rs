//! The HTTP endpoints: /metrics, /healthz, /readyz.

use crate::exposition;
use crate::stats::AgentStats;
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;

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
        crate::stage_cpu::measure(crate::stage_cpu::Stage::Scrape, || {
            let mut body = String::with_capacity(64 * 1024);
            encode_all(&mut body, &s.registries).map(|()| body)
        })
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
