//! Reading a config file: TOML or YAML by extension, into flat `key = value`
//! entries. Which keys exist and what values they take is the command
//! line's business (see `layers.rs`); this only checks the shape.

use std::path::Path;

/// A value as written in the file, before the flag's own parser sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    /// A string, or a number written as it would be on the command line.
    Text(String),
    List(Vec<String>),
}

/// The entries of one file, in file order, keys with `_` spelled `-`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries(pub Vec<(String, Value)>);

/// Reads and parses `path`; errors say what to fix (they are prefixed with
/// the path by the caller).
pub fn read(path: &Path) -> Result<Entries, String> {
    let format = Format::of(path)?;
    parse(&read_bounded(path)?, format)
}

/// The largest config file read: the shipped example with every key is
/// about 5 KiB. Bigger input (a runaway value, a nested document) is refused
/// before any parser spends time or memory on it.
pub const MAX_BYTES: u64 = 64 * 1024;

/// Reads a regular file of at most [`MAX_BYTES`]. Opened non-blocking, so a
/// FIFO cannot stall start-up or a reload, and checked to be a regular file,
/// so a device (/dev/zero) is not read at all.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let hint = "(check --config or EBPF_AGENT_CONFIG)";
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read it: {e} {hint}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e} {hint}"))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file (a directory, FIFO or device?): point it at a .toml or .yaml file {hint}"
        ));
    }
    if meta.len() > MAX_BYTES {
        return Err(format!(
            "it is {} bytes; a config file may have at most {MAX_BYTES} (64 KiB): it holds flags and their values",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e} {hint}"))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!(
            "it grew past {MAX_BYTES} bytes while being read: a config file may have at most 64 KiB"
        ));
    }
    Ok(text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Ok(Format::Toml),
            Some("yaml" | "yml") => Ok(Format::Yaml),
            _ => Err("unknown format: name it *.toml, *.yaml or *.yml".into()),
        }
    }
}

pub fn parse(text: &str, format: Format) -> Result<Entries, String> {
    let raw = match format {
        Format::Toml => toml_entries(text)?,
        Format::Yaml => yaml_entries(text)?,
    };
    let mut entries: Vec<(String, Value)> = Vec::with_capacity(raw.len());
    for (written, value) in raw {
        let key = written.replace('_', "-");
        let value = value.map_err(|what| format!("key {written}: {what}"))?;
        if let Some((first, _)) = entries.iter().find(|(k, _)| *k == key) {
            return Err(format!(
                "key {written} is given twice (also as {first}; `_` and `-` are the same): keep one"
            ));
        }
        entries.push((key, value));
    }
    Ok(Entries(entries))
}

/// Top-level keys and their values, or why a value has the wrong type.
type Raw = Vec<(String, Result<Value, String>)>;

const FLAT: &str = "the file is a flat list of `agent run` flags and their values";

fn toml_entries(text: &str) -> Result<Raw, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| format!("invalid TOML: {e}"))?;
    Ok(table.into_iter().map(|(k, v)| (k, toml_value(v))).collect())
}

fn toml_value(v: toml::Value) -> Result<Value, String> {
    let item = |v: toml::Value| match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, number or boolean, got {}",
            other.type_str()
        )),
    };
    match v {
        toml::Value::Boolean(b) => Ok(Value::Bool(b)),
        toml::Value::Array(items) => items
            .into_iter()
            .map(|i| item(i).map_err(|e| format!("list items: {e}")))
            .collect::<Result<_, _>>()
            .map(Value::List),
        toml::Value::Table(_) => Err(format!("expected a value, got a table: {FLAT}")),
        other => item(other).map(Value::Text),
    }
}

const TAGGED: &str = "expected a plain value, got a tagged one (`!tag`): remove the tag";

fn yaml_entries(text: &str) -> Result<Raw, String> {
    use serde_yaml_ng::Value as Y;
    let doc: Y = serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let map = match doc {
        // An empty file (or only comments) sets nothing.
        Y::Null => return Ok(Vec::new()),
        Y::Mapping(map) => map,
        _ => return Err(format!("the top level must be a mapping: {FLAT}")),
    };
    map.into_iter()
        .map(|(k, v)| match k {
            Y::String(k) => Ok((k, yaml_value(v))),
            other => Err(format!("key {other:?} is not a string: {FLAT}")),
        })
        .collect()
}

fn yaml_value(v: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    let item = |v: Y| match v {
        Y::String(s) => Ok(s),
        Y::Number(n) => Ok(n.to_string()),
        Y::Bool(b) => Ok(b.to_string()),
        Y::Null => Err("expected a string, number or boolean, got nothing (null)".to_string()),
        Y::Sequence(_) => Err("expected a string, number or boolean, got a list".to_string()),
        Y::Mapping(_) => Err("expected a string, number or boolean, got a mapping".to_string()),
        Y::Tagged(_) => Err(TAGGED.to_string()),
    };
    match v {
        Y::Bool(b) => Ok(Value::Bool(b)),
        Y::Null => Err("has no value: give one, or remove the key to use the default".into()),
        Y::Sequence(items) => items
            .into_iter()
            .map(|i| item(i).map_err(|e| format!("list items: {e}")))
            .collect::<Result<_, _>>()
            .map(Value::List),
        Y::Mapping(_) => Err(format!("expected a value, got a mapping: {FLAT}")),
        Y::Tagged(_) => Err(TAGGED.to_string()),
        other => item(other).map(Value::Text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn toml_and_yaml_give_the_same_entries() {
        let toml = "listen = \"127.0.0.1:1\"\nring_buffer_bytes = 4096\nstrict = true\nprobes = [\"tcp\", \"sched\"]\n";
        let yaml =
            "listen: 127.0.0.1:1\nring_buffer_bytes: 4096\nstrict: true\nprobes: [tcp, sched]\n";
        let want = Entries(vec![
            ("listen".into(), text("127.0.0.1:1")),
            ("ring-buffer-bytes".into(), text("4096")),
            ("strict".into(), Value::Bool(true)),
            (
                "probes".into(),
                Value::List(vec!["tcp".into(), "sched".into()]),
            ),
        ]);
        assert_eq!(parse(yaml, Format::Yaml).unwrap(), want);
        // toml::Table is sorted by key; the order only matters for messages.
        let mut got = parse(toml, Format::Toml).unwrap().0;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = want.0;
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
    }

    #[test]
    fn empty_files_set_nothing() {
        assert_eq!(parse("", Format::Yaml).unwrap(), Entries::default());
        assert_eq!(parse("# only\n", Format::Yaml).unwrap(), Entries::default());
        assert_eq!(parse("", Format::Toml).unwrap(), Entries::default());
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = parse("listen: a\n  bad: [\n", Format::Yaml).unwrap_err();
        assert!(e.starts_with("invalid YAML") && e.contains("line 2"), "{e}");
        let e = parse("listen = \"a\"\nprobes = [\n", Format::Toml).unwrap_err();
        assert!(e.starts_with("invalid TOML") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn wrong_shapes_name_the_key() {
        let e = parse("collectors:\n  cpu: true\n", Format::Yaml).unwrap_err();
        assert!(
            e.starts_with("key collectors: expected a value, got a mapping"),
            "{e}"
        );
        let e = parse("[collectors]\ncpu = true\n", Format::Toml).unwrap_err();
        assert!(
            e.starts_with("key collectors: expected a value, got a table"),
            "{e}"
        );
        let e = parse("listen:\n", Format::Yaml).unwrap_err();
        assert!(e.starts_with("key listen: has no value"), "{e}");
        let e = parse("probes: [[tcp]]\n", Format::Yaml).unwrap_err();
        assert!(e.contains("key probes: list items"), "{e}");
        let e = parse("listen: !addr 127.0.0.1:1\n", Format::Yaml).unwrap_err();
        assert!(e.contains("key listen: expected a plain value"), "{e}");
        let e = parse("- listen\n", Format::Yaml).unwrap_err();
        assert!(e.contains("top level must be a mapping"), "{e}");
    }

    #[test]
    fn both_spellings_of_a_key_are_a_duplicate() {
        let e = parse(
            "ring-buffer-bytes: 4096\nring_buffer_bytes: 8192\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn the_extension_picks_the_format() {
        assert_eq!(Format::of(Path::new("/a/b.yml")), Ok(Format::Yaml));
        assert_eq!(Format::of(Path::new("b.toml")), Ok(Format::Toml));
        assert!(
            Format::of(Path::new("b.json"))
                .unwrap_err()
                .contains(".toml")
        );
    }
}
