//! /proc/sys/kernel/random/{entropy_avail,poolsize}, as node_exporter's
//! entropy collector. (Since 5.18 both read 256: the pool no longer drains.)

use super::family::Family;
use super::{Registration, Source, number, read};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// `--collectors entropy`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "entropy",
    default: true,
    build: |a, _| Box::new(Entropy::new(&a.procfs)),
    options: super::no_options,
};

#[derive(Debug)]
pub struct Entropy {
    dir: PathBuf,
}

impl Entropy {
    pub fn new(procfs: &Path) -> Entropy {
        Entropy {
            dir: procfs.join("sys/kernel/random"),
        }
    }

    fn value(&self, file: &str) -> Result<f64> {
        let text = read(&self.dir.join(file))?;
        Ok(number(text.split_ascii_whitespace().next(), file)? as f64)
    }
}

impl Source for Entropy {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let available = self.value("entropy_avail")?;
        let pool = self.value("poolsize")?;
        out.push(
            Family::gauge("node_entropy_available_bits", "Bits of available entropy.")
                .with(&[], available),
        );
        out.push(
            Family::gauge("node_entropy_pool_size_bits", "Bits of entropy pool.").with(&[], pool),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::find;

    #[test]
    fn reads_both_files_and_names_a_bad_one() {
        let dir = crate::collectors::tests::temp_dir("entropy");
        let random = dir.join("sys/kernel/random");
        std::fs::create_dir_all(&random).unwrap();
        std::fs::write(random.join("entropy_avail"), "3021\n").unwrap();
        std::fs::write(random.join("poolsize"), "4096\n").unwrap();
        let mut out = Vec::new();
        Entropy::new(&dir).collect(&mut out).unwrap();
        let get = |n| find(&out, n).unwrap().samples[0].value;
        assert_eq!(get("node_entropy_available_bits"), 3021.0);
        assert_eq!(get("node_entropy_pool_size_bits"), 4096.0);
        std::fs::write(random.join("poolsize"), "").unwrap();
        let e = Entropy::new(&dir).collect(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("poolsize"), "{e}");
    }
}
