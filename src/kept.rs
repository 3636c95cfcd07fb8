//! Weight columns kept in their 16/32-bit source form, held by a weight of
//! either backend (the CUDA weight keeps this host copy beside its device
//! one, for the accessors and export).

use std::ops::Range;

use half::{bf16, f16};

use crate::dtype::{Data, Element};
use crate::error::{try_zeroed_vec, Error, Result};

/// Weight columns kept in their source dtype (the paper's Figure 2: outlier
/// columns multiplied by 16-bit weights, not by dequantized int8 ones). A
/// matmul whose outlier columns include a kept column multiplies it by these
/// values; every other outlier column by `CB · SCB / 127`, as bitsandbytes.
#[derive(Debug)]
pub(crate) struct KeptColumns {
    /// Ascending, distinct.
    columns: Vec<usize>,
    /// Column-major: kept column `s` is `values[s · n ..][.. n]`.
    values: KeptValues,
    n: usize,
}

#[derive(Debug)]
enum KeptValues {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl KeptColumns {
    /// Copies columns `columns` (any order, distinct, each < k) of the
    /// row-major `[n, k]` weight `w`.
    pub(crate) fn gather(w: Data<'_>, n: usize, k: usize, columns: &[u32]) -> Result<KeptColumns> {
        KeptColumns::build(w, n, k, columns, &|_, c, j| j * k + c)
    }

    /// Copies the columns `kept` (shard coordinates: any order, distinct, each
    /// < `shard.len()`) of the row-parallel shard `shard` of the row-major
    /// `[n, k]` weight `w`.
    pub(crate) fn gather_shard(
        w: Data<'_>,
        n: usize,
        k: usize,
        shard: &Range<usize>,
        kept: &[u32],
    ) -> Result<KeptColumns> {
        let start = shard.start;
        KeptColumns::build(w, n, shard.len(), kept, &|_, c, j| j * k + start + c)
    }

    /// Takes the values of columns `columns` (any order, distinct, each < k)
    /// of an `[n, k]` weight as `values [columns.len(), n]`, row `s` holding
    /// column `columns[s]` (a checkpoint's `llmint8_kept_values`).
    pub(crate) fn from_columns(values: Data<'_>, n: usize, k: usize, columns: &[u32]) -> Result<KeptColumns> {
        crate::error::check_len("kept column values", values.len(), columns.len() * n)?;
        let finite = crate::with_data!(values, v => v.iter().position(|x| !x.to_f32().is_finite()));
        if let Some(at) = finite {
            return Err(Error::invalid(format!("kept column value [{}, {}] is not finite", at / n, at % n)));
        }
        KeptColumns::build(values, n, k, columns, &|s, _, j| s * n + j)
    }

    /// Checks a list of columns to keep (each < k, distinct); returns them
    /// ascending, each with its place in `columns`.
    pub(crate) fn check_columns(columns: &[u32], k: usize) -> Result<Vec<(usize, usize)>> {
        let mut sorted: Vec<(usize, usize)> = Vec::new();
        sorted
            .try_reserve_exact(columns.len())
            .map_err(|_| Error::out_of_memory("cannot allocate the kept columns"))?;
        for (s, &c) in columns.iter().enumerate() {
            if c as usize >= k {
                return Err(Error::invalid(format!("keep_columns holds column {c}, outside the {k} in_features")));
            }
            sorted.push((c as usize, s));
        }
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|p| p[0].0 == p[1].0) {
            return Err(Error::invalid(format!("keep_columns lists column {} twice", pair[0].0)));
        }
        Ok(sorted)
    }

    /// The kept columns ascending, each one's values copied from
    /// `src[at(s, c, j)]` for output row `j` (`s` its place in `columns`).
    fn build(
        src: Data<'_>,
        n: usize,
        k: usize,
        columns: &[u32],
        at: &dyn Fn(usize, usize, usize) -> usize,
    ) -> Result<KeptColumns> {
        let sorted = KeptColumns::check_columns(columns, k)?;
        type At<'a> = &'a dyn Fn(usize, usize, usize) -> usize;
        fn column_major<T: Copy + Default>(src: &[T], n: usize, sorted: &[(usize, usize)], at: At) -> Result<Vec<T>> {
            let mut out = try_zeroed_vec::<T>(sorted.len() * n, "kept weight columns")?;
            for (slot, &(c, s)) in sorted.iter().enumerate() {
                for (j, o) in out[slot * n..][..n].iter_mut().enumerate() {
                    *o = src[at(s, c, j)];
                }
            }
            Ok(out)
        }
        let values = match src {
            Data::F32(v) => KeptValues::F32(column_major(v, n, &sorted, at)?),
            Data::F16(v) => KeptValues::F16(column_major(v, n, &sorted, at)?),
            Data::BF16(v) => KeptValues::BF16(column_major(v, n, &sorted, at)?),
        };
        Ok(KeptColumns { columns: sorted.into_iter().map(|(c, _)| c).collect(), values, n })
    }

    /// The kept columns of `W·diag(s)` for the smoothing factors `factors`
    /// (`[k]`, when given): each value times its column's factor, kept as
    /// float32 (rounding the product back to a 16-bit dtype would lose what
    /// keeping the column is for). Unchanged without factors.
    pub(crate) fn smoothed(self, factors: Option<&[f32]>) -> Result<KeptColumns> {
        let Some(factors) = factors else { return Ok(self) };
        let mut values = try_zeroed_vec::<f32>(self.columns.len() * self.n, "kept weight columns")?;
        for (slot, &c) in self.columns.iter().enumerate() {
            for (j, v) in values[slot * self.n..][..self.n].iter_mut().enumerate() {
                *v = self.value(slot, j) * factors[c];
            }
        }
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "kept column {} times its smoothing factor is not finite in row {}",
                self.columns[at / self.n],
                at % self.n
            )));
        }
        Ok(KeptColumns { values: KeptValues::F32(values), ..self })
    }

    /// The kept columns, ascending.
    pub(crate) fn columns(&self) -> &[usize] {
        &self.columns
    }
    /// Where column `c` is kept, if it is.
    pub(crate) fn slot(&self, c: usize) -> Option<usize> {
        self.columns.binary_search(&c).ok()
    }
    /// Kept column `slot`'s value in output row `j`, widened to f32 (exact).
    pub(crate) fn value(&self, slot: usize, j: usize) -> f32 {
        let at = slot * self.n + j;
        match &self.values {
            KeptValues::F32(v) => v[at],
            KeptValues::F16(v) => v[at].to_f32(),
            KeptValues::BF16(v) => v[at].to_f32(),
        }
    }
    /// The kept values, column-major `[columns, n]`, in their source dtype.
    pub(crate) fn values(&self) -> Data<'_> {
        match &self.values {
            KeptValues::F32(v) => Data::F32(v),
            KeptValues::F16(v) => Data::F16(v),
            KeptValues::BF16(v) => Data::BF16(v),
        }
    }
    pub(crate) fn bytes(&self) -> usize {
        let values = self.values();
        values.dtype().size() * values.len()
    }
}
