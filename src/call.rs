//! The arguments of one matmul: the one struct every backend's matmul takes.

/// `y = x · Wᵀ + b` over `rows` rows of `x`, with the outlier `threshold`
/// (0: no decomposition). The context has checked everything a caller can get
/// wrong (threshold, lengths, rows > 0, that the weight is this backend's)
/// before a backend sees it.
///
/// `W` is the backend's weight, `X` and `Y` its buffers (host slices on the
/// CPU; device or host matrices on CUDA), `S` what it takes from the context
/// for this call (read once, at its start).
pub(crate) struct Matmul<'a, W, X, Y, S> {
    pub weight: &'a W,
    pub x: X,
    pub rows: usize,
    pub threshold: f32,
    pub y: Y,
    pub settings: S,
}
