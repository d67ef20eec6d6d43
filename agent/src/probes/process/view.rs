//! The process probe in `agent attach`: execs, forks and exits of the target
//! and the children it follows, with the latest execs and exits.

use super::aggregate::ProcessAggregate;
use crate::attach::snapshot::Snapshot;
use crate::attach::view::clip;
use crate::probes::{AttachView, lock};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Latest execs and exits kept for the view.
pub(super) const RECENT: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Processes {
    pub execs: u64,
    pub forks: u64,
    /// By `code` label, as in /metrics.
    pub exits: BTreeMap<&'static str, u64>,
    /// The latest execs and exits, oldest first.
    pub recent: Vec<Recent>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Recent {
    /// `exec` or `exit`.
    pub event: &'static str,
    pub pid: u32,
    pub comm: String,
    /// Execs: the file run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Exits: the `code` label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

/// The latest execs and exits (attach mode only).
pub(super) type RecentLog = Arc<Mutex<VecDeque<Recent>>>;

pub(super) fn remember(log: &RecentLog, r: Recent) {
    let mut log = lock(log);
    if log.len() == RECENT {
        log.pop_front();
    }
    log.push_back(r);
}

/// Fills `Snapshot::processes`.
pub(super) struct ProcessView {
    pub agg: Arc<Mutex<ProcessAggregate>>,
    pub recent: RecentLog,
}

impl AttachView for ProcessView {
    fn fill(&mut self, snap: &mut Snapshot, _secs: f64) {
        let t = lock(&self.agg).total();
        snap.processes = Some(Processes {
            execs: t.execs,
            forks: t.forks,
            exits: t.exits,
            recent: lock(&self.recent).iter().cloned().collect(),
        });
    }
}

pub(super) fn render(out: &mut String, s: &Snapshot) {
    let Some(p) = &s.processes else { return };
    out.push('\n');
    let exits: u64 = p.exits.values().sum();
    let how: Vec<String> = p.exits.iter().map(|(c, n)| format!("{c}: {n}")).collect();
    let head = format!(
        "PROCESSES  execs {}  forks {}  exits {}{}",
        p.execs,
        p.forks,
        exits,
        if how.is_empty() {
            String::new()
        } else {
            format!(" ({})", how.join(", "))
        }
    );
    let _ = writeln!(out, "{}", clip(&head));
    for r in &p.recent {
        let what = match (&r.filename, r.code) {
            (Some(f), _) => f.clone(),
            (None, Some(code)) => format!("code {code}"),
            (None, None) => String::new(),
        };
        let line = format!("{:<5} {:>8}  {:<16} {what}", r.event, r.pid, r.comm);
        let _ = writeln!(out, "{}", clip(&line));
    }
}
