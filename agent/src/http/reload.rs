//! Re-reads the web config and its certificates on SIGHUP and when any of
//! them changes on disk (checked every 2 s by content, which also catches
//! Kubernetes' symlink swaps of Secret volumes). New connections get the new
//! settings; a file that does not load keeps the old ones, counted and logged.

use super::Active;
use super::metrics::{Metrics, ResultLabel};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

const POLL: Duration = Duration::from_secs(2);

pub(super) async fn run(
    path: PathBuf,
    active: Arc<RwLock<Arc<Active>>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    // Another SIGHUP stream beside the config reload's: tokio wakes each.
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("web config: no SIGHUP reloads ({e}); changes on disk still apply");
            None
        }
    };
    let mut seen = fingerprint(&path, &active.read().unwrap().files);
    let mut tick = tokio::time::interval(POLL);
    loop {
        let forced = tokio::select! {
            _ = async { hangup.as_mut().unwrap().recv().await }, if hangup.is_some() => true,
            _ = tick.tick() => false,
            _ = stop.wait_for(|&s| s) => return,
        };
        let files = active.read().unwrap().files.clone();
        let now = fingerprint(&path, &files);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let p = path.clone();
        // bcrypt (the unknown-user hash) and file reads: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || Active::load(&p)).await;
        match loaded {
            Ok(Ok(new)) => {
                // The certificates may have been named anew.
                seen = fingerprint(&path, &new.files);
                *active.write().unwrap() = Arc::new(new);
                record(&metrics, true);
                tracing::info!("web config {} re-read", path.display());
            }
            Ok(Err(e)) => {
                record(&metrics, false);
                tracing::warn!("web config not reloaded, the previous settings stay: {e:#}");
            }
            Err(e) => {
                record(&metrics, false);
                tracing::warn!("web config not reloaded: {e}");
            }
        }
    }
}

fn record(metrics: &Metrics, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    metrics
        .web_config_reloads
        .get_or_create(&ResultLabel { result })
        .inc();
    metrics.web_config_last_reload_successful.set(i64::from(ok));
}

/// A hash of the file's and the certificates' contents (a missing file hashes
/// as missing).
fn fingerprint(config: &Path, files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in std::iter::once(config).chain(files.iter().map(PathBuf::as_path)) {
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}
