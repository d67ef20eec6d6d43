//! Connection slots. At most `max` connections are open at once, fewer when
//! the file-descriptor limit is low (headroom is kept for the collectors and
//! the scrapes themselves). When every slot is taken, the connection idle
//! longest (no request in progress: keep-alive, a slow or absent request head,
//! a TLS handshake) is closed to make room, so held-open sockets cannot lock
//! scrapers out; only when every slot is serving a request is the new one
//! refused.

use super::metrics::{Metrics, Reason};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a client may take to send a request head, and to finish a TLS handshake.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take to be answered (Prometheus' own default scrape timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors left for everything else when sizing the slots.
const FD_HEADROOM: u64 = 128;

pub struct Limits {
    max: usize,
    open: Mutex<Open>,
    metrics: Arc<Metrics>,
    what: &'static str,
}

#[derive(Default)]
struct Open {
    next: u64,
    /// By age: the lowest id is the oldest connection.
    slots: BTreeMap<u64, Entry>,
}

struct Entry {
    busy: Arc<AtomicBool>,
    evict: Option<oneshot::Sender<()>>,
}

/// A connection's slot, given back on drop.
pub struct Slot {
    id: u64,
    limits: Arc<Limits>,
    pub busy: Arc<AtomicBool>,
    pub evicted: oneshot::Receiver<()>,
}

impl Limits {
    /// `what` names the listener in logs.
    pub fn new(max: usize, metrics: Arc<Metrics>, what: &'static str) -> Arc<Limits> {
        let max = max.min(fd_budget()).max(1);
        tracing::debug!("{what}: at most {max} connections");
        Arc::new(Limits {
            max,
            open: Mutex::new(Open::default()),
            metrics,
            what,
        })
    }

    /// A slot for a new connection, closing the longest-idle one if all are
    /// taken; None (counted, logged once) if every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap();
        if open.slots.len() >= self.max {
            let idle = open
                .slots
                .iter()
                .find(|(_, e)| !e.busy.load(Relaxed))
                .map(|(&id, _)| id);
            match idle {
                Some(id) => {
                    if let Some(mut e) = open.slots.remove(&id)
                        && let Some(tx) = e.evict.take()
                    {
                        let _ = tx.send(());
                    }
                    self.metrics
                        .connections_closed
                        .get_or_create(&Reason { reason: "evicted" })
                        .inc();
                    self.metrics.warn_once("evicted", || {
                        format!(
                            "{}: all {} connection slots taken; closing the longest-idle connection for each new one",
                            self.what, self.max
                        )
                    });
                }
                None => {
                    self.metrics
                        .connections_refused
                        .get_or_create(&Reason {
                            reason: "connection_limit",
                        })
                        .inc();
                    self.metrics.warn_once("connection_limit", || {
                        format!(
                            "{}: all {} connections are serving requests; refusing new ones",
                            self.what, self.max
                        )
                    });
                    return None;
                }
            }
        }
        let id = open.next;
        open.next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        open.slots.insert(
            id,
            Entry {
                busy: busy.clone(),
                evict: Some(tx),
            },
        );
        self.metrics.connections.inc();
        self.metrics.activity.fetch_add(1, Relaxed);
        Some(Slot {
            id,
            limits: self.clone(),
            busy,
            evicted: rx,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.open.lock().unwrap().slots.remove(&self.id);
        self.limits.metrics.connections.dec();
        self.limits.metrics.activity.fetch_add(1, Relaxed);
    }
}

/// Connections the file-descriptor limit allows: the soft RLIMIT_NOFILE less
/// what is open now and a reserve, so a flood of sockets cannot take the
/// descriptors a scrape needs to read /proc.
fn fd_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return usize::MAX;
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
    let budget = lim.rlim_cur.saturating_sub(open + FD_HEADROOM);
    usize::try_from(budget).unwrap_or(usize::MAX).max(8)
}
