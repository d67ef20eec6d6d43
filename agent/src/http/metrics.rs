//! The HTTP server's own metrics: what it refused, closed or failed, so that
//! nothing is lost silently (logs say it once; these count every time).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_refused: Family<Reason, Counter>,
    pub connections_closed: Family<Reason, Counter>,
    pub requests_refused: Family<Reason, Counter>,
    pub tls_handshake_failures: Counter,
    pub auth_failures: Counter,
    pub scrapes: Counter,
    pub scrape_encodes: Counter,
    pub web_config_reloads: Family<ResultLabel, Counter>,
    pub web_config_last_reload_successful: Gauge,
    logged: std::sync::Mutex<Vec<&'static str>>,
    /// Connections opened plus closed, for noticing the end of a burst (not exported).
    pub activity: std::sync::atomic::AtomicU64,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix(crate::PREFIX);
        r.register(
            "http_connections",
            "Open connections to the metrics endpoint",
            self.connections.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections closed at once, by reason: connection_limit (every slot busy with a request), accept_error (e.g. out of file descriptors)",
            self.connections_refused.clone(),
        );
        r.register(
            "http_connections_closed",
            "Connections the server closed, by reason: evicted (idle, to make room for a new one), tls_handshake_timeout",
            self.connections_closed.clone(),
        );
        r.register(
            "http_requests_refused",
            "Requests answered with an error instead of metrics, by reason: scrape_limit, timeout, encode_error",
            self.requests_refused.clone(),
        );
        r.register(
            "http_tls_handshake_failures",
            "TLS handshakes that failed (no or bad client certificate, plain HTTP to the TLS port, old TLS versions)",
            self.tls_handshake_failures.clone(),
        );
        r.register(
            "http_auth_failures",
            "Requests rejected with 401: missing or wrong basic auth credentials",
            self.auth_failures.clone(),
        );
        r.register(
            "http_scrapes",
            "Requests for /metrics answered with metrics",
            self.scrapes.clone(),
        );
        r.register(
            "http_scrape_encodes",
            "Expositions encoded; simultaneous scrapes share one",
            self.scrape_encodes.clone(),
        );
        r.register(
            "web_config_reloads",
            "Re-reads of the web config file and its certificates (SIGHUP or a change on disk), by result; a failure keeps the previous settings",
            self.web_config_reloads.clone(),
        );
        r.register(
            "web_config_last_reload_successful",
            "Whether the last re-read of the web config succeeded (1) or was rejected (0)",
            self.web_config_last_reload_successful.clone(),
        );
        r
    }

    /// Logs a refusal the first time it happens for `reason`; the counters
    /// carry every later one.
    pub fn warn_once(&self, reason: &'static str, what: impl FnOnce() -> String) {
        let mut logged = self.logged.lock().unwrap();
        if !logged.contains(&reason) {
            logged.push(reason);
            tracing::warn!(
                "{} (logged once; ebpf_agent_http_* metrics count every occurrence)",
                what()
            );
        }
    }
}
