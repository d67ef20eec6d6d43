//! Push export: Prometheus remote write 1.0 to every `--remote-write-url`.
//! Every `--push-interval` the agent encodes the same exposition a scrape gets
//! (samples.rs), turns it into one request (remote_write.rs) and queues it per
//! receiver (queue.rs: memory, or segment files that survive restarts). One
//! sender per receiver sends the queue oldest first (client.rs), retrying 5xx,
//! 429 and network errors with exponential backoff and jitter, dropping what a
//! receiver rejects (other 4xx); all of it counted (metrics.rs). docs/push.md
//! has the design.

mod client;
mod metrics;
mod queue;
mod remote_write;
mod samples;

pub use client::AuthArgs;

use anyhow::{Context, Result};
use bytes::Bytes;
use client::{Client, Outcome};
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
    /// name>; `instance=` (empty) removes one.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_label)]
    pub push_external_label: Vec<(String, String)>,

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
}

struct Exporter {
    url: String,
    client: Client,
    queue: Mutex<Queue>,
    queued: Notify,
    metrics: Arc<metrics::Exporter>,
}

impl Push {
    /// None without any receiver. Fails on a bad URL, TLS file or queue
    /// directory, before anything else starts.
    pub fn new(args: &PushArgs) -> Result<Option<Push>> {
        if args.remote_write_url.is_empty() {
            return Ok(None);
        }
        let m = Arc::new(metrics::Metrics::default());
        let mut exporters = Vec::new();
        for url in &args.remote_write_url {
            let client = Client::new(url, &args.auth)?;
            let em = Arc::new(m.exporter("remote_write", url));
            let queue = match &args.push_queue_dir {
                None => Queue::memory(args.push_queue_max_bytes, em.clone()),
                Some(dir) => {
                    // One directory per receiver, named from its URL so a
                    // restart with the same flags finds its own backlog.
                    let sub = dir.join(format!(
                        "remote_write-{:08x}",
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
                url: url.clone(),
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
            ("instance".to_string(), host),
            ("job".to_string(), "ebpf-agent".to_string()),
        ];
        for (k, v) in &args.push_external_label {
            labels.retain(|(n, _)| n != k);
            labels.push((k.clone(), v.clone()));
        }
        Ok(Some(Push {
            exporters,
            metrics: m,
            interval: Duration::from_secs(args.push_interval),
            labels,
            backlog_gap: Duration::from_secs(1) / args.push_backlog_rate as u32,
        }))
    }

    /// The exporters' own metrics, to serve and push with the rest.
    pub fn registry(&self) -> Registry {
        self.metrics.registry()
    }

    /// Starts collecting every interval and one sender per receiver.
    pub fn spawn(self, registries: Arc<Vec<Registry>>, stop: watch::Receiver<bool>) {
        for e in &self.exporters {
            tracing::info!(
                "pushing every {:?} to {} (remote write 1.0)",
                self.interval,
                e.url
            );
            tokio::spawn(send_loop(e.clone(), self.backlog_gap, stop.clone()));
        }
        tokio::spawn(collect_loop(self, registries, stop));
    }
}

/// Every interval: one exposition, encoded once, queued for every receiver.
async fn collect_loop(push: Push, registries: Arc<Vec<Registry>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(push.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let encoder = Arc::new(Mutex::new(remote_write::Encoder::default()));
    let push = Arc::new(push);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let (p, regs, enc) = (push.clone(), registries.clone(), encoder.clone());
        // Collectors read /proc and BPF maps, and the disk queue fsyncs:
        // blocking work, off the async workers.
        let done = tokio::task::spawn_blocking(move || {
            let time_ms = now_ms();
            let text = crate::http::encode_text(&regs)?;
            let samples = samples::parse(&text, &p.labels)?;
            let encoded = enc.lock().unwrap().encode(samples, time_ms);
            for e in &p.exporters {
                e.queue.lock().unwrap().push(Record {
                    time_ms,
                    samples: encoded.samples,
                    body: encoded.body.clone(),
                });
                e.queued.notify_one();
            }
            Ok::<_, String>(())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = done {
            push.metrics.collect_errors.inc();
            tracing::error!("a push was not made: {e}");
        }
    }
    for e in &push.exporters {
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

/// Sends the queue oldest first, for as long as the agent runs.
async fn send_loop(e: Arc<Exporter>, backlog_gap: Duration, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    let headers: Vec<(&str, &str)> = remote_write::HEADERS.to_vec();
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
            .post(
                remote_write::CONTENT_TYPE,
                &headers,
                Bytes::from(record.body),
            )
            .await;
        let wait = match outcome {
            Outcome::Accepted => {
                attempt = 0;
                e.metrics.requests.inc();
                e.metrics.samples.inc_by(record.samples);
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
            Outcome::Status(code, retry_after, text) if code == 429 || code >= 500 => {
                e.metrics.failed(&format!("http_{code}"));
                e.metrics.retried.inc();
                e.metrics.warn_once(&format!("http_{code}"), || {
                    format!("the receiver answered {code} ({}); retrying", text.trim())
                });
                attempt += 1;
                Some(retry_wait(attempt, retry_after))
            }
            Outcome::Status(code, _, text) => {
                // The receiver will never take this request: retrying would
                // only block everything behind it.
                e.metrics.failed(&format!("http_{code}"));
                e.metrics.dropped("rejected", record.samples);
                e.metrics.warn_once(&format!("http_{code}"), || {
                    format!(
                        "the receiver rejected a push with {code} ({}); its {} samples are dropped",
                        text.trim(),
                        record.samples
                    )
                });
                attempt = 0;
                e.queue.lock().unwrap().pop();
                None
            }
            Outcome::Network(why) => {
                e.metrics.failed("network");
                e.metrics.retried.inc();
                e.metrics.warn_once("network", || {
                    format!("cannot reach the receiver ({why}); retrying")
                });
                attempt += 1;
                Some(retry_wait(attempt, None))
            }
            Outcome::Timeout => {
                e.metrics.failed("timeout");
                e.metrics.retried.inc();
                e.metrics.warn_once("timeout", || {
                    format!("no answer within {:?}; retrying", client::TIMEOUT)
                });
                attempt += 1;
                Some(retry_wait(attempt, None))
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
