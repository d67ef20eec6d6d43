//! The drain loop every streaming probe shares: read the ring buffer when the
//! kernel wakes us and on a timer (producers may submit without waking us),
//! until shutdown, then run a last hook and drain once more.

use crate::stage_cpu::{Stage, measure};
use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use std::time::Duration;
use tokio::io::{Interest, unix::AsyncFd};
use tokio::sync::watch;

pub(crate) fn spawn<D, L>(
    name: &'static str,
    ring: RingBuf<MapData>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut drain_ring: D,
    before_last_drain: L,
) -> Result<tokio::task::JoinHandle<()>>
where
    D: FnMut(&mut RingBuf<MapData>) + Send + 'static,
    L: FnOnce() + Send + 'static,
{
    // Every drain, woken or timed, counts as the agent's drain-stage CPU.
    let mut drain = move |ring: &mut RingBuf<MapData>| measure(Stage::Drain, || drain_ring(ring));
    // SAFETY: the ring's fd is owned by the RingBuf, which the AsyncFd owns.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .with_context(|| format!("registering the {name} ring buffer with tokio"))?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                guard = ring.readable_mut() => match guard {
                    Ok(mut guard) => {
                        // Drain to empty before clearing: the fd is edge-triggered.
                        drain(guard.get_inner_mut());
                        guard.clear_ready();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "{name} ring buffer poll failed; draining on the timer only");
                        tick.tick().await;
                        drain(ring.get_mut());
                    }
                },
                _ = tick.tick() => drain(ring.get_mut()),
            }
        }
        before_last_drain();
        drain(ring.get_mut());
    }))
}

/// One fixed-size record from a ring-buffer item; None if the item is too
/// short (counted by the caller as a decode loss).
pub(crate) fn decode<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>()).then(|| {
        // SAFETY: long enough, and Pod types are valid for any bytes.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    })
}
