//! One call as a backend receives it: what to compute ([`Work`]), on which
//! weights and activations, in which memory space ([`Space`]). The context
//! builds it from a [`crate::Request`] once everything a caller can get wrong
//! has been checked (threshold, lengths, rows > 0, that the weights are this
//! backend's and agree with each other, the memory space and its pointers),
//! so a backend has one entry point per memory space and no checks of its own.

use crate::dtype::{Data, DataMut};

/// How a memory space hands a backend its buffers.
pub(crate) trait Space {
    /// A matrix the call reads (`x`).
    type Matrix<'a>;
    /// A matrix the call writes (`y`).
    type MatrixMut<'a>;
    /// `rows` float32 the call reads (a row-parallel partial's `row_absmax`).
    type Floats<'a>;
    /// `rows` float32 the call writes (row-parallel statistics).
    type FloatsMut<'a>;
}

/// Host memory: typed slices.
pub(crate) struct Host;

impl Space for Host {
    type Matrix<'a> = Data<'a>;
    type MatrixMut<'a> = DataMut<'a>;
    type Floats<'a> = &'a [f32];
    type FloatsMut<'a> = &'a mut [f32];
}

/// One call: `x` `[rows, in_features]`, the `threshold` of the outlier
/// decomposition (0: none), and what to compute with `weights`. `W` is the
/// backend's weight, `S` what it takes from the context for this call (read
/// once, at its start).
pub(crate) struct Call<'a, W, M: Space, S> {
    /// One weight, or (for [`Work::Products`]) several that share `x`; all
    /// have `x`'s columns as in_features.
    pub weights: Vec<&'a W>,
    pub x: M::Matrix<'a>,
    pub rows: usize,
    pub threshold: f32,
    pub work: Work<'a, M>,
    pub settings: S,
}

/// What a call computes.
pub(crate) enum Work<'a, M: Space> {
    /// `ys[i] = x · weights[i]ᵀ + b[i]`, X quantized once for all of them
    /// (one weight: a plain matmul). The outputs share one dtype.
    Products(Vec<M::MatrixMut<'a>>),
    /// A row-parallel rank's partial product with its one weight, each row
    /// of X quantized with `row_absmax` (the MAX over the ranks' statistics).
    Partial { row_absmax: M::Floats<'a>, y: M::MatrixMut<'a> },
    /// A row-parallel rank's statistics of its slice of X (its one weight
    /// gives the shape): each row's int8-part absmax.
    Statistics { row_absmax: M::FloatsMut<'a> },
}

impl<W, M: Space, S> Call<'_, W, M, S> {
    /// The first weight: the one weight of a row-parallel call, and the one
    /// whose in_features every weight of the call shares.
    pub fn first_weight(&self) -> &W {
        self.weights[0]
    }
}
