//! The latency histogram's bucket bounds, shared so the kernel can count
//! run-queue latencies into exactly the buckets the agent exports.

/// Upper bucket bounds in nanoseconds: 1-2.5-5 steps from 1 µs to 10 s. A value
/// equal to a bound belongs to that bucket (`le` is inclusive). One more
/// bucket, +Inf, holds what exceeds them all.
pub const BOUNDS_NS: [u64; 22] = [
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

/// Number of buckets including +Inf.
pub const COUNT: usize = BOUNDS_NS.len() + 1;

/// Index of the bucket holding `ns`: the first bound >= ns, or `BOUNDS_NS.len()`
/// (+Inf). A fixed five-step binary search, so the eBPF verifier sees a bound.
#[inline(always)]
pub fn index(ns: u64) -> usize {
    let (mut lo, mut len) = (0usize, BOUNDS_NS.len() + 1);
    for _ in 0..5 {
        let half = len / 2;
        let mid = lo + half;
        // mid - 1 < BOUNDS_NS.len() because half >= 1 while len > 1.
        if half > 0 && mid - 1 < BOUNDS_NS.len() && BOUNDS_NS[mid - 1] < ns {
            lo = mid;
            len -= half;
        } else {
            len = half.max(1);
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(ns: u64) -> usize {
        BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len())
    }

    #[test]
    fn binary_search_matches_linear_scan_at_every_edge() {
        let mut values = vec![0, 1, u64::MAX];
        for &b in &BOUNDS_NS {
            values.extend([b - 1, b, b + 1]);
        }
        for v in values {
            assert_eq!(index(v), linear(v), "{v}");
        }
    }
}
