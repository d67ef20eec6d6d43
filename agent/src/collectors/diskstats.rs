//! /proc/diskstats: node_disk_*{device}, as node_exporter's diskstats
//! collector. Sectors are 512 bytes whatever the device's block size (the
//! kernel's unit for this file); times are milliseconds, exported in seconds.

use super::family::{Family, Kind};
use super::{Registration, Source, read};
use anyhow::Result;
use regex::Regex;
use std::path::{Path, PathBuf};

/// `--collectors diskstats`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "diskstats",
    default: true,
    build: |a, _| {
        Box::new(Diskstats::new(
            &a.procfs,
            a.options.diskstats_exclude.clone(),
        ))
    },
    options: |o| o.diskstats_exclude.as_str().to_string(),
};

const SECTOR_BYTES: f64 = 512.0;
const MS: f64 = 0.001;

/// The stats columns after major, minor and name, in order: name, help,
/// type, and the factor to node_exporter's unit. Kernels print 11 (< 4.18),
/// 15 (+ discards, 4.18) or 17 (+ flushes, 5.5) of them.
const COLUMNS: [(&str, &str, Kind, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        Kind::Counter,
        SECTOR_BYTES,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        Kind::Counter,
        MS,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        Kind::Counter,
        SECTOR_BYTES,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Kind::Counter,
        MS,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        Kind::Gauge,
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        Kind::Counter,
        MS,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Kind::Counter,
        MS,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        Kind::Counter,
        1.0,
    ),
    // node_exporter exports discarded sectors as sectors, not bytes.
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Kind::Counter,
        MS,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Kind::Counter,
        MS,
    ),
];

/// The fewest stats columns a whole-disk line has (kernels since 2.6.25).
const MIN_COLUMNS: usize = 11;

#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub name: String,
    /// 11, 15 or 17 values, depending on the kernel.
    pub stats: Vec<u64>,
}

/// Parses /proc/diskstats. Lines with fewer than 11 stats (partitions on
/// 2.6 kernels printed 4) are skipped; extra columns a future kernel adds
/// are ignored.
pub fn parse(text: &str) -> Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace().skip(2);
        let Some(name) = fields.next() else { continue };
        let stats = fields
            .take(COLUMNS.len())
            .map(|f| super::number(Some(f), name))
            .collect::<Result<Vec<u64>>>()?;
        if stats.len() >= MIN_COLUMNS {
            disks.push(Disk {
                name: name.to_string(),
                stats,
            });
        }
    }
    Ok(disks)
}

pub fn families(disks: &[Disk]) -> Vec<Family> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, &(name, help, kind, factor))| {
            let mut f = Family::new(name, help, kind);
            for d in disks {
                if let Some(&v) = d.stats.get(i) {
                    f.push(&[("device", &d.name)], v as f64 * factor);
                }
            }
            f
        })
        .collect()
}

#[derive(Debug)]
pub struct Diskstats {
    path: PathBuf,
    exclude: Regex,
}

impl Diskstats {
    pub fn new(procfs: &Path, exclude: Regex) -> Diskstats {
        Diskstats {
            path: procfs.join("diskstats"),
            exclude,
        }
    }
}

impl Source for Diskstats {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        let mut disks = parse(&read(&self.path)?)?;
        disks.retain(|d| !self.exclude.is_match(&d.name));
        out.extend(families(&disks));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::DISKSTATS_EXCLUDE;
    use crate::collectors::family::find;

    const DISKSTATS: &str = include_str!("fixtures/proc/diskstats");

    fn collect() -> Vec<Family> {
        let procfs = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/collectors/fixtures/proc"
        ));
        let d = Diskstats::new(procfs, Regex::new(DISKSTATS_EXCLUDE).unwrap());
        let mut out = Vec::new();
        d.collect(&mut out).unwrap();
        out
    }

    #[test]
    fn lines_with_14_18_and_20_fields() {
        let d = parse(DISKSTATS).unwrap();
        let len = |name: &str| d.iter().find(|d| d.name == name).map(|d| d.stats.len());
        assert_eq!(len("sda"), Some(11));
        assert_eq!(len("sdb"), Some(15));
        assert_eq!(len("vda"), Some(17));
        assert_eq!(
            len("sdb1"),
            None,
            "2.6-style 7-field partition line is skipped"
        );
        assert!(parse("8 0 sda 1 2 x 4 5 6 7 8 9 10 11").is_err());
    }

    #[test]
    fn units_are_node_exporters() {
        let f = collect();
        let get = |name: &str, dev: &str| find(&f, name).and_then(|f| f.get(&[("device", dev)]));
        assert_eq!(
            get("node_disk_read_bytes_total", "vda"),
            Some(4105410.0 * 512.0)
        );
        assert_eq!(
            get("node_disk_read_time_seconds_total", "vda"),
            Some(38.374)
        );
        assert_eq!(get("node_disk_io_now", "sda"), Some(1.0));
        assert_eq!(
            get("node_disk_io_time_weighted_seconds_total", "sda"),
            Some(6.5)
        );
        assert_eq!(
            get("node_disk_discarded_sectors_total", "vda"),
            Some(1121496.0)
        );
        assert_eq!(
            get("node_disk_discard_time_seconds_total", "sdb"),
            Some(9.0 * MS),
            "ms times 0.001, as node_exporter computes it"
        );
        assert_eq!(get("node_disk_flush_requests_total", "vda"), Some(934.0));
        assert_eq!(
            get("node_disk_flush_requests_time_seconds_total", "vda"),
            Some(0.035)
        );
        // Old kernels have no discard or flush columns: no series, not zeros.
        assert_eq!(get("node_disk_discards_completed_total", "sda"), None);
        assert_eq!(get("node_disk_flush_requests_total", "sdb"), None);
    }

    #[test]
    fn default_exclusion_drops_partitions_and_ram_devices() {
        let f = collect();
        let devices: Vec<_> = find(&f, "node_disk_reads_completed_total")
            .unwrap()
            .samples
            .iter()
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert_eq!(devices, ["vda", "sda", "sdb", "nvme0n1"]);
    }
}
