//! Logs go to stderr through `tracing`, as text or JSON lines. The level is
//! `--log-level` (reloadable), unless RUST_LOG is set: then RUST_LOG wins, as
//! everywhere else in the Rust world.

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Text for now; scripts that parse logs should ask for one format.
    #[default]
    Auto,
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line (for `kubectl logs` and log pipelines).
    Json,
}

/// Where the level can be changed after start (None: RUST_LOG decides).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// `--log-level`'s parser: a level or a full tracing filter.
pub fn parse_filter(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty; give error, warn, info, debug or trace".into());
    }
    // A bare word is a target to tracing (`verbose` = everything in a crate
    // named verbose): insist that bare words are levels.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if let Some(word) = s
        .split(',')
        .map(str::trim)
        .find(|d| !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()))
    {
        return Err(format!(
            "`{word}` is not a level: give error, warn, info, debug or trace (or TARGET=LEVEL)"
        ));
    }
    EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| {
            format!("not a log level or filter ({e}); give error, warn, info, debug or trace")
        })
}

/// Installs the global subscriber. Colours only on a terminal (and without
/// NO_COLOR), so files and `kubectl logs` get plain text.
pub fn init(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    let rust_log = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let bad_rust_log = rust_log.as_ref().and_then(|s| EnvFilter::try_new(s).err());
    let filter = match &rust_log {
        Some(s) => EnvFilter::try_new(s).unwrap_or_else(|_| EnvFilter::new(level)),
        None => EnvFilter::new(level),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .init(),
        LogFormat::Auto | LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            registry.with(fmt.with_ansi(colour)).init()
        }
    }
    let _ = JSON.set(format == LogFormat::Json);
    if rust_log.is_none() {
        let _ = LEVEL.set(handle);
    }
    if let Some(e) = bad_rust_log {
        tracing::warn!("ignoring RUST_LOG ({e}); logging at --log-level {level}");
    }
}

/// Changes the level live (SIGHUP). Does nothing, and says so, when RUST_LOG
/// decides the level.
pub fn set_level(level: &str) -> Result<(), String> {
    let Some(handle) = LEVEL.get() else {
        return Err("RUST_LOG is set and overrides --log-level: unset it to use log-level".into());
    };
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    handle.reload(filter).map_err(|e| e.to_string())
}

/// Whether log lines are JSON (the final error must be too).
pub fn is_json() -> bool {
    JSON.get().copied().unwrap_or(false)
}

static JSON: OnceLock<bool> = OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters_parse_and_nonsense_does_not() {
        assert_eq!(parse_filter("debug").unwrap(), "debug");
        assert!(parse_filter("info,agent::collectors=debug").is_ok());
        assert!(parse_filter("").unwrap_err().contains("give error, warn"));
        assert!(
            parse_filter("info,agent=loud")
                .unwrap_err()
                .contains("not a log level")
        );
        assert!(
            parse_filter("verbose")
                .unwrap_err()
                .contains("`verbose` is not a level")
        );
    }
}
