//! SIGINT/SIGTERM: the first starts a clean stop, a second exits at once.
//! Handlers are installed before anything else starts: a signal that arrives
//! early must stop the agent cleanly, not kill it with the default action.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Installs the handlers now (needs a running tokio runtime).
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Waits for the first SIGINT or SIGTERM, then arms the second-signal exit.
    pub async fn first(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
    }
}
