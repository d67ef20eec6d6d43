//! The most series the probes can export, from the settings alone
//! (docs/metrics.md, "How many series"): each probe states its worst case
//! per label set, and `run` refuses settings whose total is past
//! `--max-series`, naming the settings that drive it.

use super::{PROBES, Probe};
use anyhow::{Result, bail};

/// The settings series counts depend on.
#[derive(Debug, Clone)]
pub(crate) struct SeriesInputs {
    /// Samples one latency histogram exports: its bounds, +Inf, _sum, _count.
    pub histogram: u64,
    pub unknown_syscall: u64,
    pub container_syscall: u64,
    pub tcp_destination: u64,
}

impl SeriesInputs {
    pub(crate) fn new(budgets: &super::Budgets) -> SeriesInputs {
        SeriesInputs {
            histogram: crate::histogram::layout().bounds_ns().len() as u64 + 3,
            unknown_syscall: budgets.unknown_syscall as u64,
            container_syscall: budgets.container_syscall as u64,
            tcp_destination: budgets.tcp_destination as u64,
        }
    }
}

/// One probe's worst case: series under the host's labels (everything when
/// container labels are off), and series each container label set can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Series {
    pub host: u64,
    pub per_container: u64,
}

/// The worst case of one probe with `label_sets` container label sets.
fn total(s: Series, label_sets: u64) -> u64 {
    s.host
        .saturating_add(s.per_container.saturating_mul(label_sets))
}

/// The chosen probes' worst cases: (probe, series), in table order.
/// `label_sets`: container label sets that can have series (the budget plus
/// the shared `other`), 0 without container labels.
pub(crate) fn worst_case(
    chosen: &[String],
    inputs: &SeriesInputs,
    label_sets: u64,
) -> Vec<(&'static Probe, u64)> {
    PROBES
        .iter()
        .filter(|p| chosen.iter().any(|c| c == p.name))
        .map(|p| (*p, total((p.series)(inputs), label_sets)))
        .collect()
}

/// `run`'s settings against `--max-series` (at start and on reload):
/// the worst case, or why the settings are refused.
pub(crate) fn check_run(args: &crate::cli::RunArgs, label_sets: u64) -> Result<u64> {
    let inputs = SeriesInputs::new(&super::Budgets::of(args));
    let worst = worst_case(&args.probes, &inputs, label_sets);
    check(&worst, label_sets, args.max_series)
}

/// Refuses settings whose worst case passes `max`, saying what drives it.
pub(crate) fn check(worst: &[(&'static Probe, u64)], label_sets: u64, max: u64) -> Result<u64> {
    let sum = worst.iter().fold(0u64, |a, (_, n)| a.saturating_add(*n));
    if sum <= max {
        return Ok(sum);
    }
    let parts: Vec<String> = worst
        .iter()
        .map(|(p, n)| format!("{} {n}", p.name))
        .collect();
    let containers = match label_sets {
        0 => String::new(),
        n => format!(" across {n} container label sets (--container-budget + 1)"),
    };
    bail!(
        "these settings allow up to {sum} series ({}){containers}, more than --max-series {max}; \
         lower --container-budget, --container-syscall-budget, --unknown-syscall-budget or \
         --tcp-destination-budget, use fewer --latency-buckets, or raise --max-series \
         (docs/metrics.md, \"How many series\")",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SeriesInputs {
        SeriesInputs {
            histogram: 25,
            unknown_syscall: 64,
            container_syscall: 40,
            tcp_destination: 50,
        }
    }

    fn all() -> Vec<String> {
        PROBES.iter().map(|p| p.name.to_string()).collect()
    }

    #[test]
    fn defaults_fit_the_default_limit_with_the_default_container_budget() {
        let worst = worst_case(&all(), &defaults(), 501);
        let sum = check(&worst, 501, 2_000_000).unwrap();
        assert!(sum > 100_000, "{sum}");
    }

    /// The figures docs/metrics.md gives for the defaults.
    #[test]
    fn the_defaults_are_the_documented_figures() {
        let per: Vec<_> = PROBES
            .iter()
            .map(|p| (p.name, (p.series)(&defaults())))
            .map(|(n, s)| (n, s.host, s.per_container))
            .collect();
        assert_eq!(
            per,
            [
                ("syscalls", 19_180, 1_763),
                ("tcp", 496, 31),
                ("sched", 26, 25),
                ("oom", 66, 65),
                ("process", 38, 38),
                ("block", 70_657, 552)
            ]
        );
        let docs = include_str!("../../../docs/metrics.md");
        for (name, host, container) in per {
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")) && l.contains("per container"))
                .unwrap_or_else(|| panic!("no series row for {name} in docs/metrics.md"));
            let figures = format!(
                "{} + {} per container |",
                thousands(host),
                thousands(container)
            );
            assert!(row.ends_with(&figures), "{row} should end with {figures}");
        }
    }

    fn thousands(n: u64) -> String {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    #[test]
    fn container_labels_multiply_the_per_container_part_only() {
        let off = worst_case(&all(), &defaults(), 0);
        let on = worst_case(&all(), &defaults(), 10);
        for ((p, a), (_, b)) in off.iter().zip(&on) {
            let s = (p.series)(&defaults());
            assert_eq!(*a, s.host, "{}", p.name);
            assert_eq!(*b, s.host + 10 * s.per_container, "{}", p.name);
        }
    }

    #[test]
    fn too_many_says_which_settings_to_change() {
        let worst = worst_case(&["syscalls".into()], &defaults(), 100_001);
        let e = check(&worst, 100_001, 1_000_000).unwrap_err().to_string();
        assert!(e.contains("more than --max-series 1000000"), "{e}");
        assert!(e.contains("lower --container-budget"), "{e}");
        assert!(e.contains("syscalls "), "{e}");
    }

    #[test]
    fn huge_budgets_saturate_instead_of_overflowing() {
        let mut i = defaults();
        i.unknown_syscall = u64::MAX;
        let worst = worst_case(&all(), &i, u64::MAX);
        assert!(check(&worst, u64::MAX, 1).is_err());
    }
}
