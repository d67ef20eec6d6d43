//! One encode for simultaneous scrapes. A scrape that arrives while an encode
//! is running waits for that encode and shares its bytes; otherwise it starts
//! one. 300 scrapers at once cost about one encode, one blocking thread and one
//! copy of the exposition, instead of 300 of each. The text-format and gzip
//! renderings of a snapshot are made once, when first asked for.

use crate::exposition::{self, Format};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

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
    renderings: [OnceLock<Bytes>; 3],
}

impl Scraper {
    pub fn new(registries: Vec<Registry>, metrics: Arc<super::metrics::Metrics>) -> Arc<Scraper> {
        Arc::new(Scraper {
            registries: Arc::new(registries),
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
                        let encoded = tokio::task::spawn_blocking(move || encode(&registries))
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
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut body = String::with_capacity(64 * 1024);
    for r in registries {
        encode_registry(&mut body, r).map_err(|e| e.to_string())?;
    }
    encode_eof(&mut body).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        openmetrics: Bytes::from(body),
        renderings: Default::default(),
    })
}

impl Snapshot {
    /// The body for a format, gzipped or not. The first caller of a rendering
    /// makes it on the blocking pool; later ones share it.
    pub async fn body(self: &Arc<Self>, format: Format, gzip: bool) -> Bytes {
        let slot = match (format, gzip) {
            (Format::OpenMetrics, false) => return self.openmetrics.clone(),
            (Format::Text004, false) => 0,
            (Format::OpenMetrics, true) => 1,
            (Format::Text004, true) => 2,
        };
        if let Some(b) = self.renderings[slot].get() {
            return b.clone();
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.render(slot))
            .await
            .unwrap_or_default()
    }

    fn render(&self, slot: usize) -> Bytes {
        self.renderings[slot]
            .get_or_init(|| match slot {
                0 => Bytes::from(exposition::to_text_004(self.text())),
                1 => gzip(&self.openmetrics),
                _ => gzip(&self.render(0)),
            })
            .clone()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.openmetrics).unwrap_or("")
    }
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}
