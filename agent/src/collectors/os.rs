//! os-release(5) as node_os_info and node_os_version, node_exporter's os
//! collector: /etc/os-release, else /usr/lib/os-release, below --rootfs
//! (in a container: the host's). Neither file is not an error: no series.

use super::family::Family;
use super::{Registration, Source, read};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// `--collectors os`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "os",
    default: true,
    build: |a, _| Box::new(Os::new(&a.rootfs)),
    options: super::no_options,
};

/// node_os_info's labels: (label, os-release key), alphabetical by label.
const INFO: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];

/// `KEY=value` assignments in shell syntax: double quotes (with `\`
/// escapes), single quotes, or bare words; `#` comments and blank lines.
pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            bail!("line {}: no `=` in `{line}`", n + 1);
        };
        out.push((key.trim().to_string(), unquote(raw.trim(), n + 1)?));
    }
    Ok(out)
}

fn unquote(raw: &str, line: usize) -> Result<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => bail!("line {line}: unterminated double quote"),
                    },
                    Some(c) => out.push(c),
                    None => bail!("line {line}: unterminated double quote"),
                }
            },
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => bail!("line {line}: unterminated single quote"),
                }
            },
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The leading `major[.minor]` of VERSION_ID, as node_exporter reads it.
pub fn version(version_id: &str) -> Option<f64> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let major = digits(version_id);
    if major == 0 {
        return None;
    }
    let mut end = major;
    if version_id[end..].starts_with('.') {
        end += 1 + digits(&version_id[end + 1..]);
    }
    version_id[..end].trim_end_matches('.').parse().ok()
}

pub fn families(release: &[(String, String)]) -> Vec<Family> {
    let get = |key: &str| {
        release
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let mut info = Family::gauge(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
    );
    let values = INFO.map(|(_, k)| get(k));
    let labels: Vec<(&'static str, &str)> = INFO
        .iter()
        .zip(&values)
        .map(|(&(l, _), v)| (l, v.as_str()))
        .collect();
    info.push(&labels, 1.0);
    let mut out = vec![info];
    if let Some(v) = version(&get("VERSION_ID")) {
        let mut f = Family::gauge(
            "node_os_version",
            "Metric containing the major.minor part of the OS version.",
        );
        let (id, id_like, name) = (get("ID"), get("ID_LIKE"), get("NAME"));
        f.push(&[("id", &id), ("id_like", &id_like), ("name", &name)], v);
        out.push(f);
    }
    out
}

#[derive(Debug)]
pub struct Os {
    files: [PathBuf; 2],
}

impl Os {
    pub fn new(rootfs: &Path) -> Os {
        Os {
            files: [
                rootfs.join("etc/os-release"),
                rootfs.join("usr/lib/os-release"),
            ],
        }
    }
}

impl Source for Os {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let Some(path) = self.files.iter().find(|p| p.exists()) else {
            return Ok(());
        };
        let release = parse(&read(path)?).map_err(|e| e.context(format!("{}", path.display())))?;
        out.extend(families(&release));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n";

    #[test]
    fn debian_12_as_node_exporter_shows_it() {
        let f = families(&parse(DEBIAN).unwrap());
        let info = &f[0].samples[0];
        let get = |k| &info.labels.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(get("pretty_name"), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(get("version_codename"), "bookworm");
        assert_eq!(get("id_like"), "");
        assert_eq!(info.labels.len(), 12);
        assert_eq!(f[1].name, "node_os_version");
        assert_eq!(f[1].samples[0].value, 12.0);
        assert_eq!(f[1].samples[0].labels[2].1, "Debian GNU/Linux");
    }

    #[test]
    fn quoting_and_versions() {
        let p =
            parse("# comment\n\nA='it''s'\nB=\"say \\\"hi\\\" \\$x\"\nC=plain\\ word\n").unwrap();
        assert_eq!(p[0].1, "its");
        assert_eq!(p[1].1, "say \"hi\" $x");
        assert_eq!(p[2].1, "plain word");
        assert!(parse("A=\"open\n").is_err());
        assert!(parse("no equals sign\n").is_err());
        assert_eq!(version("22.04"), Some(22.04));
        assert_eq!(version("3.18.4"), Some(3.18));
        assert_eq!(version("7."), Some(7.0));
        assert_eq!(version("rolling"), None);
        assert_eq!(version(""), None);
        // No VERSION_ID (Arch): info only.
        assert_eq!(families(&parse("ID=arch\n").unwrap()).len(), 1);
    }

    #[test]
    fn usr_lib_is_the_fallback_and_none_is_no_error() {
        let root = crate::collectors::tests::temp_dir("os");
        let mut out = Vec::new();
        Os::new(&root).collect(&mut out).unwrap();
        assert!(out.is_empty());
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(
            root.join("usr/lib/os-release"),
            "ID=fedora\nVERSION_ID=39\n",
        )
        .unwrap();
        Os::new(&root).collect(&mut out).unwrap();
        assert_eq!(out[1].samples[0].value, 39.0);
    }
}
