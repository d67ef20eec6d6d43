//! One encode for simultaneous scrapes. A scrape that arrives while an encode
//! is running waits for that encode and shares its bytes; otherwise it starts
//! one. 300 scrapers at once cost about one encode, one blocking thread and one
//! copy of the exposition, instead of 300 of each. The text-format and gzip
//! renderings of a snapshot are made once, when first asked for.

use crate::exposition::{self, Format};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, watch};

type Outcome = Option<Result<Arc<Snapshot>, String>>;

pub struct Scraper {
    /// Encoded in order into one exposition (the agent's own, then node_*).
    registries: Arc<Vec<Registry>>,
    running: Mutex<Option<watch::Receiver<Outcome>>>,
    metrics: Arc<super::metrics::Metrics>,
}

/// One moment's exposition in the renderings asked for so far.
pub struct Snapshot {
    openmetrics: Bytes,
    text: OnceCell<Bytes>,
    openmetrics_gz: OnceCell<Bytes>,
    text_gz: OnceCell<Bytes>,
}

impl Scraper {
    pub fn new(
        registries: Arc<Vec<Registry>>,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Arc<Scraper> {
        Arc::new(Scraper {
            registries,
            running: Mutex::new(None),
            metrics,
        })
    }

    /// The exposition of now: the running encode's, or a new one.
    pub async fn snapshot(self: &Arc<Self>) -> Result<Arc<Snapshot>, String> {
        let mut rx = {
            let mut running = self.running.lock().unwrap();
            match &*running {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *running = Some(rx.clone());
                    // A task of its own: the encode finishes and wakes the
                    // waiters even if the scrape that started it goes away.
                    let me = self.clone();
                    tokio::spawn(async move {
                        let registries = me.registries.clone();
                        me.metrics.scrape_encodes.inc();
                        // Collectors read /proc, /sys and BPF maps: blocking work,
                        // kept off the async workers that drain the ring buffers.
                        let encoded = tokio::task::spawn_blocking(move || {
                            crate::stage_cpu::measure(crate::stage_cpu::Stage::Scrape, || {
                                encode(&registries)
                            })
                        })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                        *me.running.lock().unwrap() = None;
                        let _ = tx.send(Some(encoded.map(Arc::new)));
                    });
                    rx
                }
            }
        };
        rx.wait_for(Option::is_some)
            .await
            .map_err(|_| "the encode was lost".to_string())?
            .clone()
            .expect("waited for Some")
    }
}

/// One OpenMetrics exposition from several registries: each registry's
/// families, then a single `# EOF`.
fn encode(registries: &[Registry]) -> Result<Snapshot, String> {
    Ok(Snapshot {
        openmetrics: Bytes::from(encode_text(registries)?),
        text: OnceCell::new(),
        openmetrics_gz: OnceCell::new(),
        text_gz: OnceCell::new(),
    })
}

/// The OpenMetrics text of `registries` (push encodes the same text).
pub fn encode_text(registries: &[Registry]) -> Result<String, String> {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut body = String::with_capacity(64 * 1024);
    for r in registries {
        encode_registry(&mut body, r).map_err(|e| e.to_string())?;
    }
    encode_eof(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

impl Snapshot {
    /// The body for a format, gzipped or not. The first caller of a rendering
    /// makes it on the blocking pool; the others wait for it without a thread.
    pub async fn body(&self, format: Format, gzip: bool) -> Bytes {
        let plain = match format {
            Format::OpenMetrics => self.openmetrics.clone(),
            Format::Text004 => {
                let om = self.openmetrics.clone();
                self.text
                    .get_or_init(|| blocking(move || to_text(&om)))
                    .await
                    .clone()
            }
        };
        if !gzip {
            return plain;
        }
        let cell = match format {
            Format::OpenMetrics => &self.openmetrics_gz,
            Format::Text004 => &self.text_gz,
        };
        cell.get_or_init(|| blocking(move || compress(&plain)))
            .await
            .clone()
    }
}

async fn blocking(f: impl FnOnce() -> Bytes + Send + 'static) -> Bytes {
    tokio::task::spawn_blocking(f).await.unwrap_or_default()
}

fn to_text(openmetrics: &[u8]) -> Bytes {
    Bytes::from(exposition::to_text_004(
        std::str::from_utf8(openmetrics).unwrap_or(""),
    ))
}

fn compress(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}
