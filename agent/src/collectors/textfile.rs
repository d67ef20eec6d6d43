//! The textfile collector: every `*.prom` file in --textfile-directory is
//! read at each scrape and its metrics exported, as node_exporter's (how
//! cron jobs and scripts publish their own metrics). A file is all or
//! nothing: one that does not parse, or that repeats a family the agent
//! exports itself (a series already in another file, or another type for
//! a name another file has), is left out and reported by
//! node_textfile_scrape_error 1 and a log line; the scrape goes on.
//! Write files atomically (write elsewhere, then rename into the directory).

use super::family::Family;
use super::text_format::{self, Parsed};
use super::{Registration, Source, read};
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// `--collectors textfile`.
pub(super) const COLLECTOR: Registration = Registration {
    name: "textfile",
    default: true,
    build: |a, _| Box::new(Textfile::new(a.options.textfile_directory.clone())),
    options: |o| format!("{:?}", o.textfile_directory),
};

#[derive(Debug)]
pub struct Textfile {
    dir: Option<PathBuf>,
}

/// What one scrape of the directory found.
#[derive(Debug, Default)]
pub struct Scan {
    pub families: Vec<Family>,
    /// (path, mtime) of the files exported.
    pub mtimes: Vec<(String, f64)>,
    /// (path, why) of the files left out.
    pub errors: Vec<(String, String)>,
}

impl Textfile {
    pub fn new(dir: Option<PathBuf>) -> Textfile {
        Textfile { dir }
    }

    /// Reads every `*.prom` file in name order; `taken` are names the agent
    /// exports itself.
    pub fn scan(dir: &Path, taken: &HashSet<String>) -> Result<Scan> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "prom"))
            .collect();
        paths.sort();
        let mut scan = Scan::default();
        let mut merged: Vec<Family> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for path in paths {
            let shown = path.display().to_string();
            match file(&path) {
                // Gone since the listing (replaced or deleted): not an error.
                Ok(None) => {}
                Ok(Some((mtime, parsed))) => {
                    match merge(&shown, parsed, taken, &mut merged, &mut by_name) {
                        Ok(()) => scan.mtimes.push((shown, mtime)),
                        Err(e) => scan.errors.push((shown, format!("{e:#}"))),
                    }
                }
                Err(e) => scan.errors.push((shown, format!("{e:#}"))),
            }
        }
        merged.iter_mut().for_each(fill_labels);
        scan.families = merged;
        Ok(scan)
    }
}

/// The file's mtime and families; None when it vanished before it was read.
fn file(path: &Path) -> Result<Option<(f64, Vec<Parsed>)>> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.with_context(|| format!("cannot stat {}", path.display()))?,
    };
    if !meta.is_file() {
        bail!("not a regular file");
    }
    let text = match read(path) {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
        {
            return Ok(None);
        }
        other => other?,
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        // Whole seconds, as node_exporter.
        .map_or(0.0, |d| d.as_secs() as f64);
    Ok(Some((mtime, text_format::parse(&text)?)))
}

/// Adds one file's families, or none of them if any conflicts.
fn merge(
    path: &str,
    parsed: Vec<Parsed>,
    taken: &HashSet<String>,
    merged: &mut Vec<Family>,
    by_name: &mut HashMap<String, usize>,
) -> Result<()> {
    for p in &parsed {
        if taken.contains(&p.name) || p.name.starts_with("ebpf_agent_") {
            bail!("{} is a metric the agent exports itself", p.name);
        }
        if let Some(&i) = by_name.get(&p.name) {
            let have = &merged[i];
            if have.kind != p.kind() {
                bail!("{} has another type in an earlier file", p.name);
            }
            if let Some((labels, _)) = p
                .samples
                .iter()
                .find(|(l, _)| have.samples.iter().any(|s| same_labels(&s.labels, l)))
            {
                bail!("{}{labels:?} is already in an earlier file", p.name);
            }
        }
    }
    for p in parsed {
        let kind = p.kind();
        let i = *by_name.entry(p.name.clone()).or_insert_with(|| {
            let help = p
                .help
                .clone()
                .unwrap_or_else(|| format!("Metric read from {path}"));
            merged.push(Family::new(p.name.clone(), help, kind));
            merged.len() - 1
        });
        for (labels, value) in p.samples {
            let labels = labels.into_iter().map(|(k, v)| (k.into(), v)).collect();
            merged[i].push_labels(labels, value);
        }
    }
    Ok(())
}

/// Gives every sample of a family the same label names, empty where a file
/// left one out, as node_exporter does (an empty label is no label to
/// PromQL, so this only makes the exposition regular).
fn fill_labels(f: &mut Family) {
    let mut names: Vec<std::borrow::Cow<'static, str>> = Vec::new();
    for s in &f.samples {
        for (k, _) in &s.labels {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    names.sort();
    for s in &mut f.samples {
        for name in &names {
            if !s.labels.iter().any(|(k, _)| k == name) {
                s.labels.push((name.clone(), String::new()));
            }
        }
        s.labels.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

fn same_labels(a: &super::family::Labels, b: &[(String, String)]) -> bool {
    a.len() == b.len()
        && b.iter()
            .all(|(k, v)| a.iter().any(|(ak, av)| ak == k && av == v))
}

impl Source for Textfile {
    fn collect(&self, out: &mut Vec<Family>) -> Result<()> {
        self.collect_after(&HashSet::new(), out)
    }

    fn after_others(&self) -> bool {
        self.dir.is_some()
    }

    fn collect_after(&self, earlier: &HashSet<String>, out: &mut Vec<Family>) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut error = Family::gauge(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
        );
        let scan = match Textfile::scan(dir, earlier) {
            Ok(scan) => scan,
            Err(e) => {
                out.push(error.with(&[], 1.0));
                return Err(e);
            }
        };
        for (path, why) in &scan.errors {
            tracing::warn!("textfile {path} left out: {why}");
        }
        out.extend(scan.families);
        let mut mtime = Family::gauge(
            "node_textfile_mtime_seconds",
            "Unixtime mtime of textfiles successfully read.",
        );
        for (path, t) in &scan.mtimes {
            mtime.push(&[("file", path)], *t);
        }
        out.push(mtime);
        error.push(&[], if scan.errors.is_empty() { 0.0 } else { 1.0 });
        out.push(error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::family::{Kind, find};

    fn dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = crate::collectors::tests::temp_dir(name);
        for (file, text) in files {
            std::fs::write(d.join(file), text).unwrap();
        }
        d
    }

    fn collect(dir: &Path, taken: &[&str]) -> Vec<Family> {
        let taken = taken.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        Textfile::new(Some(dir.into()))
            .collect_after(&taken, &mut out)
            .unwrap();
        out
    }

    fn scrape_error(out: &[Family]) -> f64 {
        find(out, "node_textfile_scrape_error").unwrap().samples[0].value
    }

    #[test]
    fn good_files_are_merged_and_others_ignored() {
        let d = dir(
            "textfile-good",
            &[
                (
                    "a.prom",
                    "# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total{job=\"a\"} 3\n",
                ),
                (
                    "b.prom",
                    "# TYPE jobs_total counter\njobs_total{job=\"b\"} 4\nlast_run_seconds 17\n",
                ),
                ("notes.txt", "not metrics at all"),
            ],
        );
        let out = collect(&d, &[]);
        let jobs = find(&out, "jobs_total").unwrap();
        assert_eq!(jobs.help, "Jobs.");
        assert_eq!(jobs.get(&[("job", "b")]), Some(4.0));
        let d2 = dir(
            "textfile-fill",
            &[("x.prom", "m{b=\"1\"} 1\nm{a=\"2\"} 2\n")],
        );
        let m = Textfile::scan(&d2, &HashSet::new()).unwrap().families;
        assert_eq!(m[0].get(&[("a", ""), ("b", "1")]), Some(1.0));
        assert_eq!(m[0].get(&[("a", "2"), ("b", "")]), Some(2.0));
        let last = find(&out, "last_run_seconds").unwrap();
        assert_eq!(
            last.help,
            format!("Metric read from {}", d.join("b.prom").display())
        );
        assert_eq!(last.kind, Kind::Untyped);
        assert_eq!(jobs.kind, Kind::Counter);
        let mtime = find(&out, "node_textfile_mtime_seconds").unwrap();
        assert_eq!(mtime.samples.len(), 2);
        let a = d.join("a.prom").display().to_string();
        assert!(mtime.get(&[("file", &a)]).unwrap() > 1.7e9);
        assert_eq!(scrape_error(&out), 0.0);
    }

    #[test]
    fn a_bad_file_is_reported_and_the_rest_exported() {
        let d = dir(
            "textfile-bad",
            &[
                ("bad.prom", "ok_metric 1\nbad metric{\n"),
                ("good.prom", "fine 1\n"),
            ],
        );
        let out = collect(&d, &[]);
        assert_eq!(scrape_error(&out), 1.0);
        assert!(find(&out, "fine").is_some());
        assert!(find(&out, "ok_metric").is_none(), "all or nothing per file");
        let mtime = find(&out, "node_textfile_mtime_seconds").unwrap();
        assert_eq!(mtime.samples.len(), 1);
    }

    #[test]
    fn a_duplicate_of_an_agent_metric_or_another_file_is_left_out() {
        let d = dir(
            "textfile-dup",
            &[
                ("a.prom", "node_load1 5\n"),
                ("b.prom", "ebpf_agent_syscalls_total 1\n"),
                ("c.prom", "x{a=\"1\"} 1\n"),
                ("d.prom", "x{a=\"1\"} 2\n"),
                ("e.prom", "# TYPE x gauge\nx{a=\"2\"} 2\n"),
            ],
        );
        let taken = ["node_load1".to_string()].into_iter().collect();
        let scan = Textfile::scan(&d, &taken).unwrap();
        let why: Vec<_> = scan.errors.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("node_load1 is a metric the agent exports itself"));
        assert!(why[1].contains("ebpf_agent_syscalls_total"));
        assert!(why[2].contains("already in an earlier file"));
        assert!(why[3].contains("another type"));
        assert_eq!(scan.families.len(), 1);
        assert_eq!(scan.families[0].samples.len(), 1);
    }

    #[test]
    fn a_missing_directory_fails_and_a_vanished_file_does_not() {
        let d = dir("textfile-missing", &[]);
        let mut out = Vec::new();
        let t = Textfile::new(Some(d.join("nope")));
        assert!(t.collect(&mut out).is_err());
        assert_eq!(scrape_error(&out), 1.0);
        // A file deleted between the listing and the read.
        assert!(file(&d.join("gone.prom")).unwrap().is_none());
        // No directory configured: nothing at all.
        let mut out = Vec::new();
        Textfile::new(None).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
