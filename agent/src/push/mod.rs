//! Push export: Prometheus remote write 1.0 to every `--remote-write-url`,
//! OTLP to every `--otlp-endpoint`. Every `--push-interval` the agent reads
//! the same exposition a scrape gets (samples.rs), turns it into one request
//! per format (remote_write.rs, otlp.rs) and queues it per receiver (queue.rs:
//! memory, or segment files that survive restarts). One sender per receiver
//! sends the queue oldest first (client.rs), retrying what the protocol says
//! is temporary (5xx, 429, network errors; gRPC's retryable codes) with
//! exponential backoff and jitter, dropping what a receiver rejects; all of it
//! counted (metrics.rs). docs/push.md has the design.

mod client;
mod metrics;
mod otlp;
mod queue;
mod remote_write;
mod samples;

pub use client::AuthArgs;
pub use otlp::OtlpArgs;

use anyhow::{Context, Result};
use bytes::Bytes;
use client::{Answer, Client, Outcome};
use prometheus_client::registry::Registry;
use queue::{Queue, Record};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// `agent run`'s push flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// Push the metrics with Prometheus remote write 1.0 to this URL
    /// (repeatable), e.g. http://prometheus:9090/api/v1/write.
    #[arg(long, value_name = "URL")]
    pub remote_write_url: Vec<String>,

    /// Seconds between pushes (1-3600): each push carries every series once.
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub push_interval: u64,

    /// Keep unsent pushes in segment files here (one subdirectory per
    /// receiver), so a receiver outage and an agent restart during it lose
    /// nothing; without it the queue is in memory and lost at exit.
    #[arg(long, value_name = "DIR")]
    pub push_queue_dir: Option<PathBuf>,

    /// Bound of each receiver's queue in bytes; past it the oldest pushes are
    /// dropped and counted (ebpf_agent_push_samples_dropped_total{reason="queue_full"}).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub push_queue_max_bytes: u64,

    /// Most requests per second while a backlog is sent after an outage.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub push_backlog_rate: u64,

    /// Label `name=value` added to every pushed series (repeatable), as
    /// Prometheus' external_labels. Defaults: job=ebpf-agent and instance=<host
    /// name>; `instance=` (empty) removes one. For OTLP they are resource
    /// attributes (without the defaults, which OTLP has as service.name and host.name).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_label)]
    pub push_external_label: Vec<(String, String)>,

    #[command(flatten)]
    pub otlp: OtlpArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not name=value"))?;
    let valid = !k.is_empty()
        && !k.starts_with("__")
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(format!(
            "`{k}` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// When the machine booted and when this process started, in ns since the
/// epoch (read as the process collector reads them): the starts of
/// cumulative OTLP points. Without /proc: boot unknown (0), start now.
fn boot_and_start_ns() -> (u64, u64) {
    use crate::collectors::process::{boot_time, parse_stat};
    let now = now_ms() as u64 * 1_000_000;
    let Ok(boot) = boot_time(std::path::Path::new("/proc")) else {
        return (0, now);
    };
    let boot_ns = boot * 1_000_000_000;
    let start = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s).ok())
        .map_or(now, |s| {
            boot_ns + (s.start_ticks as f64 / crate::collectors::user_hz() * 1e9) as u64
        });
    (boot_ns, start)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The configured exporters, their queues open, ready to run.
pub struct Push {
    exporters: Vec<Arc<Exporter>>,
    metrics: Arc<metrics::Metrics>,
    interval: Duration,
    labels: Vec<(String, String)>,
    backlog_gap: Duration,
    otlp: Option<otlp::Encoder>,
}

/// What an exporter sends: the format of its requests.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    RemoteWrite,
    Otlp(otlp::Protocol, otlp::Compression),
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::RemoteWrite => "remote_write",
            Format::Otlp(..) => "otlp",
        }
    }

    /// The queue's directory name: what its records are, so that a restart
    /// with other settings does not send old records with the wrong headers.
    fn queue_name(self) -> String {
        match self {
            Format::RemoteWrite => "remote_write".to_string(),
            Format::Otlp(p, c) => format!("otlp-{p:?}-{c:?}").to_lowercase(),
        }
    }
}

struct Exporter {
    url: String,
    format: Format,
    client: Client,
    queue: Mutex<Queue>,
    queued: Notify,
    metrics: Arc<metrics::Exporter>,
}

impl Push {
    /// None without any receiver. Fails on a bad URL, TLS file or queue
    /// directory, before anything else starts.
    pub fn new(args: &PushArgs) -> Result<Option<Push>> {
        let o = &args.otlp;
        let targets: Vec<(String, Format)> = args
            .remote_write_url
            .iter()
            .map(|u| (u.clone(), Format::RemoteWrite))
            .chain(
                o.otlp_endpoint
                    .iter()
                    .map(|e| (o.url(e), Format::Otlp(o.otlp_protocol, o.otlp_compression))),
            )
            .collect();
        if targets.is_empty() {
            return Ok(None);
        }
        let m = Arc::new(metrics::Metrics::default());
        let mut exporters = Vec::new();
        for (url, format) in targets {
            let grpc = matches!(format, Format::Otlp(otlp::Protocol::Grpc, _));
            let client = Client::new(&url, &args.auth, grpc)?;
            let em = Arc::new(m.exporter(format.name(), &url));
            let queue = match &args.push_queue_dir {
                None => Queue::memory(args.push_queue_max_bytes, em.clone()),
                Some(dir) => {
                    // One directory per receiver, named from its format and
                    // URL so a restart with the same flags finds its own backlog.
                    let sub = dir.join(format!(
                        "{}-{:08x}",
                        format.queue_name(),
                        crc32fast::hash(url.as_bytes())
                    ));
                    let q = Queue::open(&sub, args.push_queue_max_bytes, em.clone()).with_context(
                        || format!("push queue {} (--push-queue-dir)", sub.display()),
                    )?;
                    if !q.is_empty() {
                        tracing::info!(
                            "{url}: {} unsent pushes from before, sending them first",
                            q.len()
                        );
                    }
                    q
                }
            };
            exporters.push(Arc::new(Exporter {
                url,
                format,
                client,
                queue: Mutex::new(queue),
                queued: Notify::new(),
                metrics: em,
            }));
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mut labels = vec![
            ("instance".to_string(), host.clone()),
            ("job".to_string(), "ebpf-agent".to_string()),
        ];
        for (k, v) in &args.push_external_label {
            labels.retain(|(n, _)| n != k);
            labels.push((k.clone(), v.clone()));
        }
        let otlp = (!o.otlp_endpoint.is_empty()).then(|| {
            let env = |k: &str| std::env::var(k).ok();
            let resource = otlp::resource(&host, &env, &args.push_external_label);
            let (boot, start) = boot_and_start_ns();
            otlp::Encoder::new(o.otlp_temporality, &resource, start, boot)
        });
        Ok(Some(Push {
            exporters,
            metrics: m,
            interval: Duration::from_secs(args.push_interval),
            labels,
            backlog_gap: Duration::from_secs(1) / args.push_backlog_rate as u32,
            otlp,
        }))
    }

    /// The exporters' own metrics, to serve and push with the rest.
    pub fn registry(&self) -> Registry {
        self.metrics.registry()
    }

    /// Starts collecting every interval and one sender per receiver.
    pub fn spawn(self, registries: Arc<Vec<Registry>>, stop: watch::Receiver<bool>) {
        for e in &self.exporters {
            let what = match e.format {
                Format::RemoteWrite => "remote write 1.0",
                Format::Otlp(otlp::Protocol::Http, _) => "OTLP over HTTP",
                Format::Otlp(otlp::Protocol::Grpc, _) => "OTLP over gRPC",
            };
            tracing::info!("pushing every {:?} to {} ({what})", self.interval, e.url);
            tokio::spawn(send_loop(e.clone(), self.backlog_gap, stop.clone()));
        }
        tokio::spawn(collect_loop(self, registries, stop));
    }
}

/// Every interval: one exposition, encoded once per format, queued for every receiver.
async fn collect_loop(push: Push, registries: Arc<Vec<Registry>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(push.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Push {
        exporters,
        metrics,
        labels,
        otlp,
        ..
    } = push;
    let exporters = Arc::new(exporters);
    let encoders = Arc::new(Mutex::new((remote_write::Encoder::default(), otlp)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let (ex, regs, enc, labels) = (
            exporters.clone(),
            registries.clone(),
            encoders.clone(),
            labels.clone(),
        );
        // Collectors read /proc and BPF maps, and the disk queue fsyncs:
        // blocking work, off the async workers.
        let done = tokio::task::spawn_blocking(move || {
            let time_ms = now_ms();
            let text = crate::http::encode_text(&regs)?;
            let families = samples::parse(&text)?;
            let mut enc = enc.lock().unwrap();
            let (rw, otlp) = &mut *enc;
            let wants = |f: fn(&Format) -> bool| ex.iter().any(|e| f(&e.format));
            let rw_record = wants(|f| *f == Format::RemoteWrite).then(|| {
                let e = rw.encode(&text, &families, &labels, time_ms);
                Record {
                    time_ms,
                    samples: e.samples,
                    body: e.body,
                }
            });
            // One OTLP request (the delta state is shared), one body per
            // transport and compression in use.
            let otlp_request = otlp
                .as_mut()
                .map(|encoder| encoder.encode(&families, time_ms as u64 * 1_000_000));
            let mut otlp_bodies: Vec<(Format, Record)> = Vec::new();
            for e in ex.iter() {
                let record = match (e.format, &otlp_request) {
                    (Format::RemoteWrite, _) => rw_record.clone(),
                    (Format::Otlp(p, c), Some((request, points))) => {
                        match otlp_bodies.iter().find(|(f, _)| *f == e.format) {
                            Some((_, r)) => Some(r.clone()),
                            None => {
                                let r = Record {
                                    time_ms,
                                    samples: *points,
                                    body: otlp::body(request, p, c),
                                };
                                otlp_bodies.push((e.format, r.clone()));
                                Some(r)
                            }
                        }
                    }
                    (Format::Otlp(..), None) => None,
                };
                if let Some(r) = record {
                    e.queue.lock().unwrap().push(r);
                    e.queued.notify_one();
                }
            }
            Ok::<_, String>(())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = done {
            metrics.collect_errors.inc();
            tracing::error!("a push was not made: {e}");
        }
    }
    for e in exporters.iter() {
        let q = e.queue.lock().unwrap();
        if !q.is_empty() && q.is_memory() {
            tracing::warn!(
                "{}: {} unsent pushes lost at exit (the queue is in memory; --push-queue-dir keeps them)",
                e.url,
                q.len()
            );
        }
    }
}

/// What to do with a record after an answer.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Taken; `rejected` data points of it refused for good (OTLP partial success).
    Accepted { rejected: Option<(u64, String)> },
    /// Try again after the backoff (or the receiver's Retry-After).
    Retry {
        reason: String,
        after: Option<u64>,
        message: String,
    },
    /// The receiver will never take it.
    Drop { reason: String, message: String },
}

/// Reads an answer as the format's spec says: remote write retries 5xx and
/// 429; OTLP/HTTP retries 429, 502, 503 and 504; OTLP/gRPC retries the codes
/// its spec lists (an HTTP error in front of gRPC, from a proxy, as OTLP/HTTP).
fn judge(format: Format, a: &Answer) -> Verdict {
    let http = |retryable: bool| {
        let reason = format!("http_{}", a.status);
        let message = format!("the receiver answered {} ({})", a.status, a.text());
        if retryable {
            Verdict::Retry {
                reason,
                after: a.retry_after(),
                message,
            }
        } else {
            Verdict::Drop { reason, message }
        }
    };
    let ok = (200..300).contains(&a.status);
    match format {
        Format::RemoteWrite if ok => Verdict::Accepted { rejected: None },
        Format::RemoteWrite => http(a.status == 429 || a.status >= 500),
        Format::Otlp(p, _) if !ok || (p == otlp::Protocol::Grpc && a.status != 200) => {
            http(matches!(a.status, 429 | 502 | 503 | 504))
        }
        Format::Otlp(otlp::Protocol::Http, _) => Verdict::Accepted {
            rejected: otlp::rejected(otlp::Protocol::Http, &a.body),
        },
        Format::Otlp(otlp::Protocol::Grpc, _) => {
            let Some(code) = a
                .header("grpc-status")
                .and_then(|c| c.trim().parse::<u32>().ok())
            else {
                return Verdict::Retry {
                    reason: "grpc_no_status".to_string(),
                    after: None,
                    message: "the receiver answered without a grpc-status".to_string(),
                };
            };
            if code == 0 {
                return Verdict::Accepted {
                    rejected: otlp::rejected(otlp::Protocol::Grpc, &a.body),
                };
            }
            let name = otlp::grpc_code_name(code);
            let reason = format!("grpc_{name}");
            let message = format!(
                "the receiver answered gRPC status {name} ({})",
                a.header("grpc-message").unwrap_or_default()
            );
            let delay = a
                .header("grpc-status-details-bin")
                .and_then(otlp::grpc_retry_delay);
            if otlp::grpc_retryable(code, delay.is_some()) {
                Verdict::Retry {
                    reason,
                    after: delay,
                    message,
                }
            } else {
                Verdict::Drop { reason, message }
            }
        }
    }
}

/// Sends the queue oldest first, for as long as the agent runs.
async fn send_loop(e: Arc<Exporter>, backlog_gap: Duration, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    let (path, content_type, headers): (Option<&str>, &str, Vec<(&str, &str)>) = match e.format {
        Format::RemoteWrite => (
            None,
            remote_write::CONTENT_TYPE,
            remote_write::HEADERS.to_vec(),
        ),
        Format::Otlp(otlp::Protocol::Http, c) => (
            None,
            "application/x-protobuf",
            [("content-encoding", "gzip")]
                .into_iter()
                .filter(|_| c == otlp::Compression::Gzip)
                .collect(),
        ),
        Format::Otlp(otlp::Protocol::Grpc, c) => (
            Some(otlp::GRPC_PATH),
            "application/grpc",
            [
                ("te", "trailers"),
                ("grpc-accept-encoding", "gzip"),
                ("grpc-encoding", "gzip"),
            ]
            .into_iter()
            .filter(|(k, _)| *k != "grpc-encoding" || c == otlp::Compression::Gzip)
            .collect(),
        ),
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let record = {
            let mut q = e.queue.lock().unwrap();
            q.update_gauges();
            q.front()
        };
        let Some(record) = record else {
            tokio::select! {
                _ = e.queued.notified() => continue,
                _ = stop.changed() => return,
            }
        };
        let outcome = e
            .client
            .post(path, content_type, &headers, Bytes::from(record.body))
            .await;
        let verdict = match outcome {
            Outcome::Answered(a) => judge(e.format, &a),
            Outcome::Network(why) => Verdict::Retry {
                reason: "network".to_string(),
                after: None,
                message: format!("cannot reach the receiver ({why})"),
            },
            Outcome::Timeout => Verdict::Retry {
                reason: "timeout".to_string(),
                after: None,
                message: format!("no answer within {:?}", client::TIMEOUT),
            },
        };
        let wait = match verdict {
            Verdict::Accepted { rejected } => {
                attempt = 0;
                let refused = rejected
                    .as_ref()
                    .map_or(0, |(n, _)| (*n).min(record.samples));
                if let Some((n, why)) = rejected {
                    e.metrics.dropped("rejected", refused);
                    e.metrics.warn_once("partial", || {
                        format!("the receiver took a push but rejected {n} of its data points ({why}); they are dropped")
                    });
                }
                e.metrics.requests.inc();
                e.metrics.samples.inc_by(record.samples - refused);
                e.metrics.last_success.set(now_ms() as f64 / 1000.0);
                let mut q = e.queue.lock().unwrap();
                q.pop();
                // A backlog goes out at a bounded rate; new pushes queue behind it.
                if q.is_empty() {
                    None
                } else {
                    Some(backlog_gap)
                }
            }
            Verdict::Retry {
                reason,
                after,
                message,
            } => {
                e.metrics.failed(&reason);
                e.metrics.retried.inc();
                e.metrics
                    .warn_once(&reason, || format!("{message}; retrying"));
                attempt += 1;
                Some(retry_wait(attempt, after))
            }
            Verdict::Drop { reason, message } => {
                // The receiver will never take this request: retrying would
                // only block everything behind it.
                e.metrics.failed(&reason);
                e.metrics.dropped("rejected", record.samples);
                e.metrics.warn_once(&reason, || {
                    format!(
                        "{message}: the receiver will not take this push, its {} samples are dropped",
                        record.samples
                    )
                });
                attempt = 0;
                e.queue.lock().unwrap().pop();
                None
            }
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// First retry after about 0.5 s, doubling to 5 s (as Prometheus' own remote
/// write), with jitter so a fleet does not retry in step; a Retry-After (in
/// seconds, capped at 5 minutes) is waited out in full.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MAX_RETRY_AFTER: u64 = 300;

fn retry_wait(attempt: u32, retry_after: Option<u64>) -> Duration {
    let full = MIN_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    // Half fixed, half random: never less than half the backoff.
    let jittered = full / 2 + full.mul_f64(random_unit() / 2.0);
    match retry_after {
        Some(s) => jittered.max(Duration::from_secs(s.min(MAX_RETRY_AFTER))),
        None => jittered,
    }
}

/// A number in [0, 1) from the standard library's per-process random keys.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms() as u64);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_honours_retry_after() {
        for _ in 0..100 {
            let w = retry_wait(1, None);
            assert!(w >= MIN_BACKOFF / 2 && w <= MIN_BACKOFF, "{w:?}");
            let w = retry_wait(3, None);
            assert!(
                w >= Duration::from_secs(1) && w <= Duration::from_secs(2),
                "{w:?}"
            );
            let w = retry_wait(30, None);
            assert!(w >= MAX_BACKOFF / 2 && w <= MAX_BACKOFF, "{w:?}");
            assert_eq!(retry_wait(1, Some(7)), Duration::from_secs(7));
            assert_eq!(retry_wait(1, Some(100_000)), Duration::from_secs(300));
        }
    }

    #[test]
    fn external_labels_are_checked() {
        assert_eq!(
            parse_label("region=eu").unwrap(),
            ("region".into(), "eu".into())
        );
        assert_eq!(
            parse_label("instance=").unwrap(),
            ("instance".into(), "".into())
        );
        for bad in ["noequals", "=x", "__name__=x", "1a=x", "a-b=x"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }
}
