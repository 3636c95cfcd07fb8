//! Smoothing (SmoothQuant, Xiao et al., 2023) carried by a weight: one factor
//! `s_c > 0` per input column, multiplied into the weight before it is
//! quantized (`W' = W·diag(s)`) and divided out of the activations in the pass
//! that quantizes them (`X' = X·diag(1/s)`), so that `X'·W'ᵀ = X·Wᵀ` while an
//! activation column with large values is shrunk before the outlier test, the
//! row scale and the rounding. The int8 GEMM and its epilogue are unchanged.

use std::ops::Range;

use crate::error::{try_copied_vec, Error, Result};

/// A weight's smoothing vector `s` `[in_features]` and its reciprocals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Smoothing {
    /// `s`, as given: every weight value of column `c` was multiplied by `s[c]`.
    factors: Vec<f32>,
    /// `1 / s` in float32: every activation value of column `c` is multiplied
    /// by `inverse[c]` as it is read, before anything else looks at it.
    inverse: Vec<f32>,
}

impl Smoothing {
    /// Checks a smoothing vector for a weight of `in_features` columns: that
    /// many values, each finite and > 0 with a finite reciprocal.
    pub(crate) fn new(factors: &[f32], in_features: usize) -> Result<Smoothing> {
        if factors.len() != in_features {
            return Err(Error::invalid(format!(
                "the smoothing vector has {} values; the weight has {in_features} in_features",
                factors.len()
            )));
        }
        if let Some((c, s)) =
            factors.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0 && (1.0 / **s).is_finite()))
        {
            return Err(Error::invalid(format!(
                "smoothing[{c}] = {s}: a smoothing factor must be finite and > 0, with a finite reciprocal"
            )));
        }
        let factors = try_copied_vec(factors, "smoothing vector")?;
        let inverse = factors.iter().map(|s| 1.0 / s).collect();
        Ok(Smoothing { factors, inverse })
    }

    /// The factors of the columns `columns` (a row-parallel shard's).
    pub(crate) fn columns(&self, columns: &Range<usize>) -> Smoothing {
        Smoothing { factors: self.factors[columns.clone()].to_vec(), inverse: self.inverse[columns.clone()].to_vec() }
    }

    /// `s`, as given.
    pub(crate) fn factors(&self) -> &[f32] {
        &self.factors
    }

    /// `1 / s`, what activation values are multiplied by.
    pub(crate) fn inverse(&self) -> &[f32] {
        &self.inverse
    }

    /// Host bytes it keeps (both vectors).
    pub(crate) fn bytes(&self) -> usize {
        8 * self.factors.len()
    }

    /// Whether two weights' smoothings are the same (bit for bit; `None` for
    /// an unsmoothed weight), as weights sharing one input must be. Checked
    /// on every call: a weight against itself costs nothing, and the
    /// comparison runs 16 factors at a time without an exit per factor (the
    /// per-factor loop was a fifth of a decode call's quantize stage at
    /// K = 4096).
    pub(crate) fn same(a: Option<&Smoothing>, b: Option<&Smoothing>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) if std::ptr::eq(a, b) => true,
            (Some(a), Some(b)) => {
                a.factors.len() == b.factors.len()
                    && a.factors
                        .chunks(16)
                        .zip(b.factors.chunks(16))
                        .all(|(x, y)| x.iter().zip(y).fold(true, |equal, (x, y)| equal & (x.to_bits() == y.to_bits())))
            }
            _ => false,
        }
    }
}

/// SmoothQuant's factors (Xiao et al., 2023, eq. 4): `s_c = max|X_c|^α /
/// max|W_c|^(1−α)` from a calibration's per-column activation absmax
/// `x_absmax` and the weight's (or a group's, for weights sharing an input)
/// per-column absmax `w_absmax`. A column that either side never uses (absmax
/// 0 or not finite) gets factor 1; the factors are clamped so that they and
/// their reciprocals stay finite.
pub fn smoothquant_factors(x_absmax: &[f32], w_absmax: &[f32], alpha: f32) -> Result<Vec<f32>> {
    if x_absmax.len() != w_absmax.len() {
        return Err(Error::invalid(format!(
            "{} activation absmax values against {} weight column absmax values",
            x_absmax.len(),
            w_absmax.len()
        )));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::invalid(format!("alpha must be in [0, 1], got {alpha}")));
    }
    Ok(x_absmax
        .iter()
        .zip(w_absmax)
        .map(|(&x, &w)| {
            let usable = |v: f32| v.is_finite() && v > 0.0;
            if !(usable(x) && usable(w)) {
                return 1.0;
            }
            let s = (x as f64).powf(alpha as f64) / (w as f64).powf(1.0 - alpha as f64);
            s.clamp(1e-30, 1e30) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_vectors_are_refused() {
        assert!(Smoothing::new(&[1.0, 2.0], 2).is_ok());
        for bad in [[1.0, 0.0], [1.0, -2.0], [1.0, f32::NAN], [1.0, f32::INFINITY], [1.0, 1e-45]] {
            let e = Smoothing::new(&bad, 2).unwrap_err();
            assert!(e.to_string().contains("smoothing[1]"), "{e}");
        }
        assert!(Smoothing::new(&[1.0], 2).unwrap_err().to_string().contains("1 values"));
    }

    #[test]
    fn shards_keep_their_columns_and_sameness_is_bitwise() {
        let s = Smoothing::new(&[1.0, 2.0, 4.0], 3).unwrap();
        assert_eq!(s.inverse(), &[1.0, 0.5, 0.25]);
        let shard = s.columns(&(1..3));
        assert_eq!(shard.factors(), &[2.0, 4.0]);
        assert!(Smoothing::same(Some(&s), Some(&s.clone())));
        assert!(!Smoothing::same(Some(&s), None));
        assert!(!Smoothing::same(Some(&shard), Some(&s)));
        // One factor one ulp apart, in a whole chunk of 16 and in the tail.
        let long: Vec<f32> = (0..37).map(|c| 1.0 + c as f32 / 8.0).collect();
        let a = Smoothing::new(&long, 37).unwrap();
        assert!(Smoothing::same(Some(&a), Some(&a)));
        for c in [3, 36] {
            let mut moved = long.clone();
            moved[c] = f32::from_bits(moved[c].to_bits() + 1);
            let b = Smoothing::new(&moved, 37).unwrap();
            assert!(!Smoothing::same(Some(&a), Some(&b)) && !Smoothing::same(Some(&b), Some(&a)), "factor {c}");
        }
    }

    #[test]
    fn smoothquant_balances_the_two_sides() {
        // α = 0.5: s = sqrt(x / w); after smoothing both sides' absmax is sqrt(x·w).
        let s = smoothquant_factors(&[16.0, 0.0, 4.0], &[1.0, 3.0, 4.0], 0.5).unwrap();
        assert_eq!(s, vec![4.0, 1.0, 1.0]);
        assert!(smoothquant_factors(&[1.0], &[1.0], 1.5).is_err());
        assert!(smoothquant_factors(&[1.0], &[], 0.5).is_err());
    }
}
