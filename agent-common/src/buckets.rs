//! The latency histograms' bucket bounds. The kernel counts run-queue waits
//! into exactly the buckets the agent exports, so both sides use the same
//! layout: up to [`MAX_BOUNDS`] upper bounds in nanoseconds, padded with
//! `u64::MAX` to [`SLOTS`], and one more bucket (+Inf) past the last bound.
//! The bounds can be set at startup (`--latency-buckets`); these are the
//! defaults.

/// Default upper bounds in nanoseconds: 1-2.5-5 steps from 1 µs to 10 s. A
/// value equal to a bound belongs to that bucket (`le` is inclusive).
pub const DEFAULT_NS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Slots of the bounds array: a power of two, for a fixed-step search.
pub const SLOTS: usize = 32;
/// Most bounds a layout can have: one slot always stays padding, so the
/// search finds +Inf for values above every bound.
pub const MAX_BOUNDS: usize = SLOTS - 1;
/// Buckets in a count array, +Inf included, whatever the layout.
pub const COUNT: usize = SLOTS;

/// Bounds padded to `SLOTS` with `u64::MAX`.
pub type Padded = [u64; SLOTS];

/// The default bounds, padded.
pub const DEFAULT_PADDED: Padded = {
    let mut p = [u64::MAX; SLOTS];
    let mut i = 0;
    while i < DEFAULT_NS.len() {
        p[i] = DEFAULT_NS[i];
        i += 1;
    }
    p
};

/// Index of the bucket holding `ns`: the number of bounds below it, so the
/// first bound >= ns, or the bound count (+Inf). `at(i)` reads slot `i` of a
/// padded array (the kernel reads its copy with volatile loads). Five fixed
/// steps, so the eBPF verifier sees a bounded search.
#[inline(always)]
pub fn index_by(ns: u64, at: impl Fn(usize) -> u64) -> usize {
    let mut lo = 0;
    let mut step = SLOTS / 2;
    while step > 0 {
        if at(lo + step - 1) < ns {
            lo += step;
        }
        step /= 2;
    }
    lo
}

/// [`index_by`] over a padded array.
#[inline(always)]
pub fn index(padded: &Padded, ns: u64) -> usize {
    index_by(ns, |i| padded.get(i).copied().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(bounds: &[u64], ns: u64) -> usize {
        bounds.iter().position(|&b| ns <= b).unwrap_or(bounds.len())
    }

    #[test]
    fn search_matches_linear_scan_at_every_edge() {
        let mut values = vec![0, 1, u64::MAX - 1];
        for &b in &DEFAULT_NS {
            values.extend([b - 1, b, b + 1]);
        }
        for v in values {
            assert_eq!(index(&DEFAULT_PADDED, v), linear(&DEFAULT_NS, v), "{v}");
        }
    }

    #[test]
    fn any_layout_up_to_the_maximum() {
        for n in [1, 2, 7, 16, MAX_BOUNDS] {
            let bounds: Vec<u64> = (1..=n as u64).map(|i| i * 10).collect();
            let mut padded = [u64::MAX; SLOTS];
            padded[..n].copy_from_slice(&bounds);
            for v in 0..=(n as u64 * 10 + 11) {
                assert_eq!(index(&padded, v), linear(&bounds, v), "{n} bounds, {v}");
            }
            assert_eq!(index(&padded, u64::MAX - 1), n, "+Inf");
        }
    }
}
