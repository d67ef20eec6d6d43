//! /proc/sys/fs/file-nr: open file handles and the system-wide limit, as
//! node_exporter's filefd collector.

use super::family::Family;
use super::{Registration, Source, number, read};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// `--collectors filefd`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "filefd",
    default: true,
    build: |a, _| Box::new(Filefd::new(&a.procfs)),
    options: super::no_options,
};

/// (allocated, maximum): the first and third columns (the second, free
/// handles, is always 0 since 2.6).
pub fn parse(text: &str) -> Result<(u64, u64)> {
    let mut f = text.split_ascii_whitespace();
    let allocated = number(f.next(), "file-nr allocated")?;
    let _free = f.next();
    let maximum = number(f.next(), "file-nr maximum")?;
    Ok((allocated, maximum))
}

pub fn families((allocated, maximum): (u64, u64)) -> Vec<Family> {
    vec![
        Family::gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
        )
        .with(&[], allocated as f64),
        Family::gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
        )
        .with(&[], maximum as f64),
    ]
}

#[derive(Debug)]
pub struct Filefd {
    path: PathBuf,
}

impl Filefd {
    pub fn new(procfs: &Path) -> Filefd {
        Filefd {
            path: procfs.join("sys/fs/file-nr"),
        }
    }
}

impl Source for Filefd {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        out.extend(families(parse(&read(&self.path)?)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_nr() {
        assert_eq!(parse("926\t0\t2466126\n").unwrap(), (926, 2466126));
        let f = families((926, 9223372036854775807));
        assert_eq!(f[1].name, "node_filefd_maximum");
        assert_eq!(f[1].samples[0].value, 9223372036854775807.0);
        assert!(parse("926\t0\n").is_err());
        assert!(parse("x 0 1\n").is_err());
        assert!(parse("").is_err());
    }
}
