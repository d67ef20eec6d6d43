//! Node mode's configuration: command-line flags, `EBPF_AGENT_*` environment
//! variables and a TOML or YAML file (`--config`), in that precedence, over
//! the flags' defaults. Every `agent run` flag is a key, with no list to keep
//! in step: see `layers.rs`. docs/configuration.md is the user's guide.

mod file;
mod layers;

pub use layers::{ENV_PREFIX, env_name, key_names, run_command};

use crate::cli::RunArgs;
use std::collections::BTreeMap;
use std::ffi::OsString;

/// A configuration error: the message names the source, key and value.
/// Like a bad flag, it exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File,
    Default,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Env => "env",
            Origin::File => "file",
            Origin::Default => "default",
        }
    }
}

/// One key's effective value, as written (lists comma separated; `None`
/// when a flag without default is not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Option<String>,
    pub origin: Origin,
}

impl Setting {
    pub fn shown(&self) -> &str {
        self.value.as_deref().unwrap_or("(unset)")
    }
}

/// Every key's effective value, in `agent run --help` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings(pub Vec<Setting>);

/// A key whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub from: String,
    pub to: String,
}

impl Settings {
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.0.iter().find(|s| s.key == key)
    }

    /// The keys whose values differ in `new` (sources do not matter).
    pub fn changes(&self, new: &Settings) -> Vec<Change> {
        new.0
            .iter()
            .filter_map(|n| {
                let old = self.get(&n.key);
                (old.map(|o| &o.value) != Some(&n.value)).then(|| Change {
                    key: n.key.clone(),
                    from: old.map_or("(unset)", Setting::shown).to_string(),
                    to: n.shown().to_string(),
                })
            })
            .collect()
    }

    /// `--check-config`'s report: one `KEY SOURCE VALUE` line per key, the
    /// value last so it may hold spaces.
    pub fn table(&self) -> String {
        let width = self.0.iter().map(|s| s.key.len()).max().unwrap_or(0);
        let mut out = format!("{:width$}  {:7}  VALUE\n", "KEY", "SOURCE");
        for s in &self.0 {
            let (key, origin, value) = (&s.key, s.origin.as_str(), s.shown());
            out.push_str(&format!("{key:width$}  {origin:7}  {value}\n"));
        }
        out
    }
}

/// The `EBPF_AGENT_*` variables, captured once: a reload re-reads the file
/// only, with the environment as it was at start.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, OsString>);

impl Env {
    pub fn from_process() -> Env {
        Env::from_pairs(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))))
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, OsString)>) -> Env {
        Env(pairs
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect())
    }

    /// A variable's value; an empty one counts as unset (as Kubernetes
    /// renders an optional value that is missing).
    fn get(&self, name: &str) -> Option<Result<&str, String>> {
        let v = self.0.get(name).filter(|v| !v.is_empty())?;
        Some(v.to_str().ok_or_else(|| "not valid UTF-8".to_string()))
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A resolved node-mode configuration, and what it was resolved from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub args: RunArgs,
    pub settings: Settings,
    /// Harmless oddities to log once logging is up.
    pub warnings: Vec<String>,
    argv: Vec<OsString>,
    env: Env,
}

/// Resolves `argv` (the flags after `run`) with `env` and the config file.
pub fn load(argv: Vec<OsString>, env: Env) -> Result<Loaded, ConfigError> {
    let (args, settings, warnings) = layers::resolve(&argv, &env)?;
    Ok(Loaded {
        args,
        settings,
        warnings,
        argv,
        env,
    })
}

impl Loaded {
    /// Resolves again with the same flags and environment: only the config
    /// file can have changed.
    pub fn reload(&self) -> Result<Loaded, ConfigError> {
        load(self.argv.clone(), self.env.clone())
    }

    /// The config file in use, if any.
    pub fn file(&self) -> Option<&str> {
        self.settings.get("config").and_then(|s| s.value.as_deref())
    }
}

#[cfg(test)]
mod tests;
