//! Floating-point arithmetic that reproduces the reference implementation bit for bit.
//!
//! The reference is Python ≥ 3.12 with numpy. Three of its behaviours leak into every score:
//! `round(x, n)` rounds the exact binary value half-to-even, the builtin `sum` of floats is
//! Neumaier-compensated, and numpy's `ndarray.sum` adds pairwise in blocks of eight. Scores
//! must use these helpers, never ad-hoc `(x * 10.0).round() / 10.0`, or about half of the parity
//! cases drift by one rounding step.

/// Python's `round(x, digits)` for a finite double: the exact binary value rounded to
/// `digits` decimals with ties to even, then the nearest double.
///
/// Rust's fixed-precision formatting works on the exact binary value and breaks exact ties to
/// even, which is precisely Python's rule; parsing the text back gives the nearest double.
pub fn py_round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse::<f64>().unwrap_or(x)
}

/// Python 3.12's builtin `sum` over floats (Neumaier compensation), starting from the first item.
/// An empty input sums to 0.0.
pub fn neumaier_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut iter = values.into_iter();
    let Some(first) = iter.next() else {
        return 0.0;
    };
    let mut sum = first;
    let mut compensation = 0.0;
    for x in iter {
        let t = sum + x;
        if sum.abs() >= x.abs() {
            compensation += (sum - t) + x;
        } else {
            compensation += (x - t) + sum;
        }
        sum = t;
    }
    if compensation != 0.0 && compensation.is_finite() {
        sum += compensation;
    }
    sum
}

/// numpy's pairwise summation (`ndarray.sum` on a contiguous float64 array).
pub fn pairwise_sum(v: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = v.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in v {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&v[..8]);
        let full = n - (n % 8);
        let mut i = 8;
        while i < full {
            for (t, acc) in r.iter_mut().enumerate() {
                *acc += v[i + t];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &v[full..] {
            res += x;
        }
        res
    } else {
        let half = n / 2;
        let split = half - (half % 8);
        pairwise_sum(&v[..split]) + pairwise_sum(&v[split..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_python_on_near_ties() {
        // Values from the fixtures' README: stored just below, just above, or exactly on a tie.
        assert_eq!(py_round(41.15, 1), 41.1);
        assert_eq!(py_round(79.65, 1), 79.7);
        assert_eq!(py_round(58.25, 1), 58.2);
        assert_eq!(py_round(11.75, 1), 11.8);
        assert_eq!(py_round(0.09375, 4), 0.0938);
        assert_eq!(py_round(2.5, 0), 2.0);
        assert_eq!(py_round(-0.25, 1), -0.2);
    }

    #[test]
    fn neumaier_recovers_what_naive_summation_loses() {
        let values = [1.0, 1e100, 1.0, -1e100];
        assert_eq!(values.iter().sum::<f64>(), 0.0);
        assert_eq!(neumaier_sum(values), 2.0);
        assert_eq!(neumaier_sum([]), 0.0);
        assert_eq!(neumaier_sum([0.1, 0.2]), 0.1 + 0.2);
    }

    #[test]
    fn pairwise_sum_uses_numpys_blocking() {
        let small = [0.1, 0.2, 0.3];
        assert_eq!(pairwise_sum(&small), ((0.0 + 0.1) + 0.2) + 0.3);
        let v: Vec<f64> = (0..300).map(|i| 1.0 / f64::from(i + 1)).collect();
        let naive: f64 = v.iter().sum();
        assert!((pairwise_sum(&v) - naive).abs() < 1e-12);
        // 10 items: eight accumulators, the pair tree, then the two leftovers in order.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(pairwise_sum(&ten), 55.0);
    }
}
