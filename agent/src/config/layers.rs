//! Flags > environment > file > defaults, generically: every long flag of
//! `agent run` is a key. Values from the environment and the file are turned
//! back into `--key=value` arguments and parsed by clap with the flag's own
//! parser, so validation (and the resulting `RunArgs`) is exactly the flag's.

use super::file::{self, Value};
use super::{ConfigError, Env, Origin, Setting, Settings};
use crate::cli::RunArgs;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use std::ffi::OsString;
use std::path::PathBuf;

/// Environment variables of flags are this plus the flag in UPPER_SNAKE.
pub const ENV_PREFIX: &str = "EBPF_AGENT_";

/// Keys a file may not set, and why.
const NOT_IN_FILE: [(&str, &str); 3] = [
    (
        "config",
        "a config file cannot name another one; give --config or EBPF_AGENT_CONFIG",
    ),
    (
        "check-config",
        "it is an action of the command line, not a setting",
    ),
    (
        "pid",
        "a PID names one process and changes from run to run; give --pid or EBPF_AGENT_PID",
    ),
];

/// How a flag takes values, which decides how a file value becomes arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Takes no value (`--strict`): `true` sets it, `false` leaves it unset.
    Switch,
    /// Repeatable (`--no-collector a --no-collector b`): a list repeats it.
    Repeated,
    /// One value; a list is joined with commas (`--probes a,b`).
    Single,
}

/// One `agent run` flag as a config key.
#[derive(Debug, Clone)]
struct Key {
    id: clap::Id,
    long: String,
    kind: Kind,
}

impl Key {
    fn env_name(&self) -> String {
        env_name(&self.long)
    }

    /// The arguments that set this key to `value` (none: leave it unset).
    fn args(&self, value: &Value) -> Result<Vec<OsString>, String> {
        let flag = |v: &str| OsString::from(format!("--{}={v}", self.long));
        match (self.kind, value) {
            (Kind::Switch, Value::Bool(true)) => Ok(vec![format!("--{}", self.long).into()]),
            (Kind::Switch, Value::Bool(false)) => Ok(Vec::new()),
            (Kind::Switch, Value::Text(s)) => match switch(s) {
                Some(on) => self.args(&Value::Bool(on)),
                None => Err(format!(
                    "expected true or false (it is a switch), got {s:?}"
                )),
            },
            (Kind::Switch, Value::List(_)) => {
                Err("expected true or false (it is a switch), got a list".into())
            }
            (Kind::Repeated, Value::List(items)) => Ok(items.iter().map(|v| flag(v)).collect()),
            // A variable cannot repeat: a comma separated string is the list.
            (Kind::Repeated, Value::Text(s)) => Ok(s.split(',').map(|v| flag(v.trim())).collect()),
            (_, Value::List(items)) => Ok(vec![flag(&items.join(","))]),
            (_, Value::Bool(b)) => Ok(vec![flag(&b.to_string())]),
            (_, Value::Text(s)) => Ok(vec![flag(s)]),
        }
    }
}

/// `EBPF_AGENT_RING_BUFFER_BYTES` for `ring-buffer-bytes`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"))
}

/// The spellings of a boolean accepted for switches in the environment.
fn switch(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `agent run` as its own command, so argv here is just the run flags.
pub fn run_command() -> Command {
    RunArgs::augment_args(
        Command::new("run")
            .bin_name("agent run")
            .no_binary_name(true),
    )
}

fn keys(cmd: &Command) -> Vec<Key> {
    cmd.get_arguments()
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .filter_map(|a| {
            let kind = match a.get_action() {
                a if !a.takes_values() => Kind::Switch,
                ArgAction::Append => Kind::Repeated,
                _ => Kind::Single,
            };
            Some(Key {
                id: a.get_id().clone(),
                long: a.get_long()?.to_string(),
                kind,
            })
        })
        .collect()
}

/// Every `agent run` flag's long name (the config keys), in help order.
pub fn key_names() -> Vec<String> {
    keys(&run_command()).into_iter().map(|k| k.long).collect()
}

/// Arguments one key adds to the command line, and where they came from.
struct Layer {
    key: usize,
    origin: Origin,
    args: Vec<OsString>,
}

/// Merges `argv` (the flags after `run`), `env` and the config file it
/// names, then parses the result once.
pub fn resolve(
    argv: &[OsString],
    env: &Env,
) -> Result<(RunArgs, Settings, Vec<String>), ConfigError> {
    let cmd = run_command();
    let keys = keys(&cmd);
    let flags = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| ConfigError(format!("flags: {}", describe(&e))))?;
    let by_flag: Vec<bool> = keys
        .iter()
        .map(|k| flags.value_source(k.id.as_str()) == Some(ValueSource::CommandLine))
        .collect();
    let mut layers = env_layers(&cmd, &keys, &by_flag, env)?;
    if let Some(path) = config_path(&flags, env) {
        let taken: Vec<bool> = (0..keys.len())
            .map(|i| by_flag[i] || layers.iter().any(|l| l.key == i))
            .collect();
        let fail = |e: String| ConfigError(format!("config file {}: {e}", path.display()));
        layers.extend(file_layers(&cmd, &keys, &taken, &path).map_err(fail)?);
    }
    let full: Vec<OsString> = argv
        .iter()
        .chain(layers.iter().flat_map(|l| &l.args))
        .cloned()
        .collect();
    let matches = cmd.try_get_matches_from(&full).map_err(|e| {
        let e = describe(&e);
        ConfigError(format!("flags, environment and config file together: {e}"))
    })?;
    let args = RunArgs::from_arg_matches(&matches)
        .map_err(|e| ConfigError(format!("flags: {}", describe(&e))))?;
    let settings = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Setting {
            key: key.long.clone(),
            value: raw_value(&matches, key),
            origin: match layers.iter().find(|l| l.key == i) {
                Some(l) => l.origin,
                None if by_flag[i] => Origin::Flag,
                None => Origin::Default,
            },
        })
        .collect();
    Ok((args, Settings(settings), unknown_env(&keys, env)))
}

/// The `EBPF_AGENT_*` values of the keys no flag set.
fn env_layers(
    cmd: &Command,
    keys: &[Key],
    by_flag: &[bool],
    env: &Env,
) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| !by_flag[*i]) {
        let name = key.env_name();
        let Some(raw) = env.get(&name) else { continue };
        let args = raw
            .and_then(|raw| key.args(&Value::Text(raw.to_string())))
            .and_then(|args| check_alone(cmd, &args).map(|()| args))
            .map_err(|e| ConfigError(format!("environment variable {name}: {e}")))?;
        layers.push(Layer {
            key: i,
            origin: Origin::Env,
            args,
        });
    }
    Ok(layers)
}

/// The file's values of the keys not `taken` by flags or environment.
/// Unknown and forbidden keys are errors even when taken.
fn file_layers(
    cmd: &Command,
    keys: &[Key],
    taken: &[bool],
    path: &std::path::Path,
) -> Result<Vec<Layer>, String> {
    let mut layers = Vec::new();
    for (name, value) in file::read(path)?.0 {
        let i = key_index(keys, &name)?;
        if taken[i] {
            continue;
        }
        let args = keys[i]
            .args(&value)
            .and_then(|args| check_alone(cmd, &args).map(|()| args))
            .map_err(|e| format!("key {name}: {e}"))?;
        layers.push(Layer {
            key: i,
            origin: Origin::File,
            args,
        });
    }
    Ok(layers)
}

/// The config file: from the flag, else from its environment variable
/// (already checked like any other).
fn config_path(flags: &ArgMatches, env: &Env) -> Option<PathBuf> {
    match flags.try_get_one::<PathBuf>("config") {
        Ok(Some(p)) => Some(p.clone()),
        _ => env
            .get(&env_name("config"))
            .and_then(Result::ok)
            .map(PathBuf::from),
    }
}

/// The index of `name` among the keys, or why it cannot be set in a file.
fn key_index(keys: &[Key], name: &str) -> Result<usize, String> {
    if let Some((_, why)) = NOT_IN_FILE.iter().find(|(k, _)| *k == name) {
        return Err(format!("key {name} cannot be set in a config file: {why}"));
    }
    keys.iter().position(|k| k.long == name).ok_or_else(|| {
        let hint = closest(keys.iter().map(|k| k.long.as_str()), name)
            .map(|k| format!("did you mean {k}? "))
            .unwrap_or_default();
        format!("unknown key {name}: it is not an `agent run` flag; {hint}(`agent run --help` lists them)")
    })
}

/// The candidate nearest to `name`, if it is near enough to be a typo.
fn closest<'a>(candidates: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(c, name), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

/// Parses one key's arguments on their own, so an error names that key.
fn check_alone(cmd: &Command, args: &[OsString]) -> Result<(), String> {
    cmd.clone()
        .try_get_matches_from(args)
        .map(drop)
        .map_err(|e| describe(&e))
}

/// A clap error as one line: `invalid value V: reason` for bad values.
pub fn describe(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    let value = abbreviate(&context(ContextKind::InvalidValue).unwrap_or_default(), 80);
    let line = match e.kind() {
        ErrorKind::ValueValidation => match std::error::Error::source(e) {
            Some(reason) => format!("invalid value {value}: {reason}"),
            None => first_line(e),
        },
        ErrorKind::InvalidValue => match context(ContextKind::ValidValue) {
            Some(valid) => format!("invalid value {value}: valid values are {valid}"),
            None => first_line(e),
        },
        _ => first_line(e),
    };
    // Reasons can quote the value again (a regex error does): bound the line.
    abbreviate(&line, 400)
}

/// `text` cut to about `max` bytes at a character boundary, saying how long
/// it was, so a huge value cannot flood the log.
pub fn abbreviate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}... ({} bytes)", &text[..cut], text.len())
}

fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// A key's effective value as given (defaults as written in the flag);
/// None when it is not set and has no default.
fn raw_value(m: &ArgMatches, key: &Key) -> Option<String> {
    let values = m.try_get_raw(key.id.as_str()).ok()??;
    let values: Vec<String> = values.map(|v| v.to_string_lossy().into_owned()).collect();
    Some(values.join(","))
}

/// EBPF_AGENT_* variables that are no flag: warned about, not fatal, since
/// Kubernetes injects `<SERVICE>_PORT` and the like for a service named
/// `ebpf-agent` into every pod of its namespace.
fn unknown_env(keys: &[Key], env: &Env) -> Vec<String> {
    let names: Vec<String> = keys.iter().map(Key::env_name).collect();
    let suffix = |n: &str| n[ENV_PREFIX.len()..].to_string();
    let flags: Vec<String> = names.iter().map(|n| suffix(n)).collect();
    env.names()
        .filter(|n| !names.iter().any(|k| k == n))
        .map(|n| {
            let hint = closest(flags.iter().map(String::as_str), &suffix(n))
                .map(|k| format!(" (did you mean {ENV_PREFIX}{k}?)"))
                .unwrap_or_default();
            format!("ignoring environment variable {n}: it names no `agent run` flag{hint}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(names: &[&str]) -> Vec<Key> {
        let all = keys(&run_command());
        names
            .iter()
            .map(|n| all.iter().find(|k| k.long == *n).unwrap().clone())
            .collect()
    }

    #[test]
    fn every_long_flag_is_a_key_with_its_kind() {
        let k = keys_of(&[
            "strict",
            "no-collector",
            "probes",
            "listen",
            "netdev-virtual",
        ]);
        let kinds: Vec<Kind> = k.iter().map(|k| k.kind).collect();
        use Kind::*;
        // `probes` is a Vec with a delimiter: repeatable too.
        assert_eq!(kinds, [Switch, Repeated, Repeated, Single, Switch]);
        let names = key_names();
        assert!(!names.contains(&"help".to_string()));
        assert!(names.contains(&"ring-buffer-bytes".to_string()));
        assert_eq!(
            env_name("ring-buffer-bytes"),
            "EBPF_AGENT_RING_BUFFER_BYTES"
        );
    }

    #[test]
    fn file_values_become_the_flags_arguments() {
        let [strict, no_collector, collectors] = keys_of(&["strict", "no-collector", "collectors"])
            .try_into()
            .unwrap();
        let list = |v: &[&str]| Value::List(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(strict.args(&Value::Bool(true)).unwrap(), ["--strict"]);
        assert!(strict.args(&Value::Bool(false)).unwrap().is_empty());
        assert_eq!(
            strict.args(&Value::Text("on".into())).unwrap(),
            ["--strict"]
        );
        assert!(
            strict
                .args(&Value::Text("maybe".into()))
                .unwrap_err()
                .contains("switch")
        );
        assert_eq!(
            no_collector.args(&list(&["cpu", "vmstat"])).unwrap(),
            ["--no-collector=cpu", "--no-collector=vmstat"]
        );
        assert_eq!(
            collectors.args(&list(&["cpu", "meminfo"])).unwrap(),
            ["--collectors=cpu,meminfo"]
        );
        assert_eq!(
            no_collector
                .args(&Value::Text("cpu, vmstat".into()))
                .unwrap(),
            ["--no-collector=cpu", "--no-collector=vmstat"]
        );
    }

    #[test]
    fn typos_get_a_suggestion() {
        let keys = keys(&run_command());
        let e = key_index(&keys, "ring-bufer-bytes").unwrap_err();
        assert!(e.contains("did you mean ring-buffer-bytes?"), "{e}");
        let e = key_index(&keys, "completely-different").unwrap_err();
        assert!(
            e.starts_with("unknown key completely-different") && !e.contains("did you mean"),
            "{e}"
        );
        let e = key_index(&keys, "pid").unwrap_err();
        assert!(e.contains("cannot be set in a config file"), "{e}");
    }

    #[test]
    fn clap_errors_read_as_one_line() {
        let cmd = run_command();
        let e = check_alone(&cmd, &["--ring-buffer-bytes=5000".into()]).unwrap_err();
        assert!(
            e.starts_with("invalid value 5000: 5000 is not a power of two"),
            "{e}"
        );
        let e = check_alone(&cmd, &["--probes=tcp,bogus".into()]).unwrap_err();
        assert_eq!(
            e,
            "invalid value bogus: valid values are syscalls, tcp, sched, oom, process, block, none"
        );
        let e = check_alone(&cmd, &["--hdr-precision=9".into()]).unwrap_err();
        assert!(e.starts_with("invalid value 9: 9 is not in 1..=5"), "{e}");
    }
}
