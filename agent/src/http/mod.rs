//! The HTTP endpoints: /metrics, /healthz, /readyz, on hyper. TLS, client
//! certificates, basic auth and response headers come from an exporter-toolkit
//! web config file (web_config, tls, auth), re-read on SIGHUP and when it or
//! its certificates change (reload). Connections and scrapes are bounded
//! (limits, scrape); an optional plain health listener serves only /healthz
//! and /readyz for kubelet probes, which have no client certificate.

pub mod auth;
mod limits;
mod metrics;
pub mod negotiation;
mod reload;
mod scrape;
pub use scrape::encode_text;
pub mod tls;
pub mod web_config;

use crate::probes::stats::AgentStats;
use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use limits::{HEADER_TIMEOUT, Limits, REQUEST_TIMEOUT};
use metrics::{Metrics, Reason};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Binds a listening address, turning common failures into what to do.
pub async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("another process uses it; pick a free one with {flag}")
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("ports below 1024 need root; pick another with {flag}")
            }
            _ => format!("check the address given to {flag}"),
        };
        anyhow::Error::new(e).context(format!("cannot listen on {addr}: {hint}"))
    })
}

/// How the endpoint is served.
pub struct Options {
    pub web_config: Option<PathBuf>,
    /// Plain HTTP listener for /healthz and /readyz only.
    pub health: Option<TcpListener>,
    pub max_connections: usize,
    pub max_requests: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            web_config: None,
            health: None,
            max_connections: 512,
            max_requests: 40,
        }
    }
}

/// What one reading of the web config applies.
#[derive(Default)]
pub(crate) struct Active {
    tls: Option<tokio_rustls::TlsAcceptor>,
    users: Option<Arc<auth::Users>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Certificate files to watch for changes.
    files: Vec<PathBuf>,
}

impl Active {
    fn load(path: &std::path::Path) -> Result<Active> {
        let settings = web_config::load(path)?;
        let mut files = Vec::new();
        let tls = match &settings.tls {
            None => None,
            Some(t) => {
                for pem in [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    if let web_config::Pem::File(p) = pem {
                        files.push(p.clone());
                    }
                }
                Some(tokio_rustls::TlsAcceptor::from(
                    tls::server_config(t)
                        .map_err(|e| e.context(format!("web config file {}", path.display())))?,
                ))
            }
        };
        let users = auth::Users::new(&settings.users)?;
        let headers = settings
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
            .collect();
        Ok(Active {
            tls,
            users,
            headers,
            files,
        })
    }
}

/// The metrics endpoint, its settings loaded and checked.
pub struct Endpoint {
    listener: TcpListener,
    options: Options,
    active: Arc<RwLock<Arc<Active>>>,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Reads the web config now, so a bad one fails the start.
    pub fn new(listener: TcpListener, options: Options) -> Result<Endpoint> {
        let active = match &options.web_config {
            Some(path) => Active::load(path)?,
            None => Active::default(),
        };
        let metrics = Arc::new(Metrics::default());
        metrics.web_config_last_reload_successful.set(1);
        Ok(Endpoint {
            listener,
            options,
            active: Arc::new(RwLock::new(Arc::new(active))),
            metrics,
        })
    }

    pub fn registry(&self) -> Registry {
        self.metrics.registry()
    }

    /// `https://addr` or `http://addr`, for logs.
    pub fn url(&self) -> String {
        let scheme = match self.active.read().unwrap().tls {
            Some(_) => "https",
            None => "http",
        };
        match self.listener.local_addr() {
            Ok(a) => format!("{scheme}://{a}"),
            Err(_) => format!("{scheme}://?"),
        }
    }

    pub async fn serve(
        self,
        registries: Arc<Vec<Registry>>,
        stats: Arc<AgentStats>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let Endpoint {
            listener,
            options,
            active,
            metrics,
        } = self;
        let app = Arc::new(App {
            scraper: scrape::Scraper::new(registries, metrics.clone()),
            stats,
            active: active.clone(),
            metrics: metrics.clone(),
            scrapes: Semaphore::new(options.max_requests.max(1)),
            bcrypts: Semaphore::new(2),
            health_only: false,
        });
        if let Some(path) = options.web_config.clone() {
            tokio::spawn(reload::run(path, active, metrics.clone(), shutdown.clone()));
        }
        // Sized now, after the probes and collectors opened their descriptors.
        let limits = Limits::new(options.max_connections, metrics.clone(), "metrics endpoint");
        if let Some(health) = options.health {
            let health_app = Arc::new(App {
                health_only: true,
                scraper: app.scraper.clone(),
                stats: app.stats.clone(),
                active: Arc::default(),
                metrics: metrics.clone(),
                scrapes: Semaphore::new(1),
                bcrypts: Semaphore::new(1),
            });
            let limits = Limits::new(16, metrics.clone(), "health endpoint");
            tokio::spawn(accept_loop(health, health_app, limits, shutdown.clone()));
        }
        // A fixed trim threshold (glibc's default, 128 KiB) instead of the one
        // glibc raises after freeing large blocks: then free() shrinks the top
        // of the worker threads' arenas, which malloc_trim leaves alone.
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024) };
        tokio::spawn(trim_after_bursts(metrics, shutdown.clone()));
        accept_loop(listener, app, limits, shutdown).await;
        Ok(())
    }
}

/// After a burst of clients (connections opened or closed), gives freed
/// memory back to the system on each of the next four quiet 5 s ticks: glibc
/// otherwise keeps the high-water mark of every arena that the connections
/// and the blocking threads which encoded and compressed used (measured: 10 MB
/// at rest, 34 MB kept after 300 concurrent scrapers, 8 MB more after 1,100
/// idle sockets). Later ticks catch what retiring threads' caches return.
async fn trim_after_bursts(metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let (mut seen, mut quiet_ticks) = (0, u32::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        let now = metrics.activity.load(Relaxed);
        if now != seen {
            (seen, quiet_ticks) = (now, 0);
            continue;
        }
        quiet_ticks = quiet_ticks.saturating_add(1);
        if quiet_ticks <= 4 {
            // SAFETY: malloc_trim only releases memory that is already free.
            tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) });
        }
    }
}

struct App {
    scraper: Arc<scrape::Scraper>,
    stats: Arc<AgentStats>,
    active: Arc<RwLock<Arc<Active>>>,
    metrics: Arc<Metrics>,
    /// Bounds scrapes in progress (node_exporter's --web.max-requests); more wait.
    scrapes: Semaphore,
    /// Bounds bcrypt work, so bad passwords cannot take every core.
    bcrypts: Semaphore,
    /// The health listener: no TLS, no auth, no metrics.
    health_only: bool,
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|&stop| stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: the socket waits in the backlog; back
                // off instead of spinning, and say so once.
                app.metrics
                    .connections_refused
                    .get_or_create(&Reason {
                        reason: "accept_error",
                    })
                    .inc();
                app.metrics
                    .warn_once("accept_error", || format!("cannot accept connections: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(slot) = limits.admit() else {
            continue; // dropped: closed at once
        };
        tokio::spawn(connection(stream, slot, app.clone()));
    }
}

async fn connection(stream: tokio::net::TcpStream, mut slot: limits::Slot, app: Arc<App>) {
    let _ = stream.set_nodelay(true);
    let tls = match app.health_only {
        true => None,
        false => app.active.read().unwrap().tls.clone(),
    };
    let busy = slot.busy.clone();
    let work = async {
        match tls {
            None => serve_http(TokioIo::new(stream), app, busy).await,
            Some(acceptor) => {
                match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_http(TokioIo::new(s), app, busy).await,
                    Ok(Err(e)) => {
                        app.metrics.tls_handshake_failures.inc();
                        tracing::debug!("TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        app.metrics
                            .connections_closed
                            .get_or_create(&Reason {
                                reason: "tls_handshake_timeout",
                            })
                            .inc();
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = &mut slot.evicted => {}
    }
}

async fn serve_http<I>(io: TokioIo<I>, app: Arc<App>, busy: Arc<std::sync::atomic::AtomicBool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let busy = busy.clone();
        async move {
            busy.store(true, Relaxed);
            let response = handle(&app, req).await;
            busy.store(false, Relaxed);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Also bounds how long an idle keep-alive connection stays open.
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
        .await;
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(app: &Arc<App>, req: Request<Incoming>) -> Reply {
    let active = app.active.read().unwrap().clone();
    let mut response = route(app, &active, &req).await;
    for (k, v) in &active.headers {
        response.headers_mut().insert(k.clone(), v.clone());
    }
    response
}

async fn route(app: &Arc<App>, active: &Active, req: &Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some(users) = &active.users {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !users.check(authorization, &app.bcrypts).await {
            app.metrics.auth_failures.inc();
            let mut r = reply(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            return r;
        }
    }
    match (req.uri().path(), app.health_only) {
        ("/healthz", _) => reply(StatusCode::OK, "ok\n"),
        ("/readyz", _) => readyz(app),
        ("/metrics", false) => metrics(app, req).await,
        ("/", false) => {
            let mut r = reply(StatusCode::OK, INDEX);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn readyz(app: &App) -> Reply {
    if app.stats.ready.load(Relaxed) {
        reply(StatusCode::OK, "ready\n")
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "probes are not attached yet\n",
        )
    }
}

async fn metrics(app: &Arc<App>, req: &Request<Incoming>) -> Reply {
    let get = |h| {
        req.headers()
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let format = negotiation::format(get(header::ACCEPT));
    let gzip = negotiation::gzip(get(header::ACCEPT_ENCODING));
    let refused = |reason: &'static str, status, text: &'static str| {
        app.metrics
            .requests_refused
            .get_or_create(&Reason { reason })
            .inc();
        app.metrics
            .warn_once(reason, || format!("scrape refused: {}", text.trim()));
        reply(status, text)
    };
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, app.scrapes.acquire()).await else {
        return refused(
            "scrape_limit",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many scrapes in progress\n",
        );
    };
    let snapshot = match tokio::time::timeout_at(deadline, app.scraper.snapshot()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!("encoding metrics failed: {e}");
            return refused(
                "encode_error",
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            );
        }
        Err(_) => {
            return refused(
                "timeout",
                StatusCode::SERVICE_UNAVAILABLE,
                "collecting metrics timed out\n",
            );
        }
    };
    let body = snapshot.body(format, gzip).await;
    app.metrics.scrapes.inc();
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    r
}

const INDEX: &str = "<html><head><title>ebpf-agent</title></head><body><h1>ebpf-agent</h1>\
     <p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/healthz\">/healthz</a> \
     &middot; <a href=\"/readyz\">/readyz</a></p></body></html>\n";
