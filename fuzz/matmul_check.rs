// The quantize + matmul fuzz property, shared by the fuzz target
// (fuzz/fuzz_targets/quantize_matmul.rs) and the corpus replay test
// (tests/fuzz_corpus.rs). The includer declares `mod reference`
// (tests/common/reference.rs, the f64 reference of LLM.int8()).

/// Reads fuzz bytes as the parameters of one LLM.int8() call.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    /// Mostly small multiples of 1/16, and now and then any f32 bit pattern
    /// (NaN, Inf, subnormals, huge values).
    fn value(&mut self) -> f32 {
        match self.byte() {
            0x80 => f32::from_bits(u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])),
            b => (b as i8) as f32 / 16.0,
        }
    }
}

/// The shape (rows 0–9, in 1–80, out 1–40) and the dtype code byte of a call.
fn call_shape(b: &mut Bytes<'_>) -> (usize, usize, usize, u8) {
    let rows = (b.byte() % 10) as usize;
    let k = 1 + (b.byte() % 80) as usize;
    let n = 1 + (b.byte() % 40) as usize;
    (rows, k, n, b.byte())
}

/// A CPU context for the mode byte: path (low 4 bits), 1 or 2 threads, row
/// rule (bit 6); `None` for a path this processor lacks.
fn mode_context(mode: u8) -> Option<llmint8::Context> {
    use llmint8::{Context, CpuPath, RowScale};
    let ctx = Context::cpu();
    ctx.set_num_threads(1 + (mode as usize >> 5) % 2);
    ctx.set_cpu_path(CpuPath::ALL[(mode & 0x0f) as usize % CpuPath::ALL.len()]).ok()?;
    ctx.set_row_scale(if mode & 0x40 != 0 { RowScale::Int8Part } else { RowScale::BitsAndBytes });
    Some(ctx)
}

/// Quantize + matmul property: any shape (rows 0–9, in 1–80, out 1–40), dtypes,
/// CPU path, input rounding, threshold and bit patterns. A weight is refused
/// exactly when it holds a non-finite value; otherwise its `CB`/`SCB` equal the
/// f64 reference's row quantization bit for bit, and every output is within the
/// reference's f32 slack plus one rounding to the output dtype of the f64
/// reference of LLM.int8() (tests/common/reference.rs) — or, where the exact
/// result is not finite or beyond f32 range, not a finite value that contradicts it.
pub fn check_matmul_input(data: &[u8]) {
    use llmint8::InputRounding;
    use llmint8::{bf16, f16, CpuPath, DType, Data, Status};

    let mut b = Bytes(data);
    let (rows, k, n, kinds) = call_shape(&mut b);
    let dtype = |code: u8| [DType::F32, DType::F16, DType::BF16][(code % 3) as usize];
    let (x_dtype, w_dtype, y_dtype) = (dtype(kinds), dtype(kinds / 3), dtype(kinds / 9));
    let has_bias = kinds & 0x80 != 0;
    let mode = b.byte();
    let path = CpuPath::ALL[(mode & 0x0f) as usize % CpuPath::ALL.len()];
    let rounding = if mode & 0x10 != 0 { InputRounding::Float16 } else { InputRounding::Exact };
    let int8_part = mode & 0x40 != 0;
    let threshold = match b.byte() % 8 {
        0 => 0.0,
        1 => 6.0,
        2 => 1.5,
        3 => 0.25,
        4 => f32::INFINITY,
        5 => 1e-30,
        6 => 3.0,
        _ => b.value().abs(),
    };

    let Some(ctx) = mode_context(mode) else { return }; // a path this processor lacks
    ctx.set_input_rounding(rounding);

    // Values, stored in their dtype; the reference sees exactly the stored values.
    let store = |dt: DType, v: Vec<f32>| -> (Vec<f32>, Owned) {
        match dt {
            DType::F32 => (v.clone(), Owned::F32(v)),
            DType::F16 => {
                let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                (h.iter().map(|x| x.to_f32()).collect(), Owned::F16(h))
            }
            DType::BF16 => {
                let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
                (h.iter().map(|x| x.to_f32()).collect(), Owned::BF16(h))
            }
        }
    };
    let load = |v: &[f32]| -> Vec<f32> {
        match rounding {
            InputRounding::Exact => v.to_vec(),
            InputRounding::Float16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
        }
    };
    let (w_vals, w_data) = store(w_dtype, (0..n * k).map(|_| b.value()).collect());
    let bias: Option<Vec<f32>> = has_bias.then(|| (0..n).map(|_| b.value()).collect());
    let (x_vals, x_data) = store(x_dtype, (0..rows * k).map(|_| b.value()).collect());

    let weight = match ctx.quantize_weight(w_data.data(), n, k, bias.as_deref().map(Data::F32)) {
        Ok(w) => w,
        Err(e) => {
            assert_eq!(e.status(), Status::InvalidArgument, "{e}");
            let bad_w = load(&w_vals).iter().any(|v| !v.is_finite());
            let bad_b = bias.as_ref().is_some_and(|b| b.iter().any(|v| !v.is_finite()));
            assert!(bad_w || bad_b, "a finite weight was refused: {e}");
            return;
        }
    };
    assert!(load(&w_vals).iter().all(|v| v.is_finite()), "a non-finite weight was accepted");
    let (cb_ref, scb_ref, _) = reference::quantize_rows(&load(&w_vals), n, k, 0.0);
    assert_eq!(weight.cb().unwrap(), cb_ref, "CB differs from the reference");
    assert_eq!(
        weight.scb().iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
        scb_ref.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
        "SCB differs from the reference"
    );

    let mut y = Owned::zeros(y_dtype, rows * n);
    let result = ctx.matmul(&weight, x_data.data(), rows, threshold, y.data_mut());
    if threshold.is_nan() {
        assert_eq!(result.unwrap_err().status(), Status::InvalidArgument, "a NaN threshold must be refused");
        return;
    }
    let stats = result.unwrap();
    let want =
        reference::matmul_rounded(&load(&x_vals), &x_vals, rows, &cb_ref, &scb_ref, bias.as_deref(), k, threshold, int8_part);
    assert_eq!(stats.outlier_columns, want.outlier_cols);
    let got = y.to_f32();
    // One rounding to the output dtype: half an ulp relative, or its smallest
    // subnormal absolute; f32 intermediates may each add half of f32's smallest.
    let (ulp, tiny) = match y_dtype {
        DType::F32 => (f32::EPSILON as f64 / 2.0, 0.0),
        DType::F16 => (1.0 / 2048.0, 2f64.powi(-24)),
        DType::BF16 => (1.0 / 256.0, 2f64.powi(-133)),
    };
    let tiny = tiny + (want.outlier_cols as f64 + 8.0) * 2f64.powi(-149);
    for (e, (&g, (&r, &slack))) in got.iter().zip(want.y.iter().zip(&want.slack)).enumerate() {
        let g = g as f64;
        if !r.is_finite() || r.abs() + slack > 1e37 || slack / (f32::EPSILON as f64) > 1e37 {
            // Beyond f32: the library's f32 arithmetic overflows where f64 does not.
            assert!(!g.is_finite() || r.is_finite(), "element {e}: exact {r}, got finite {g}");
            continue;
        }
        if !g.is_finite() && (r.abs() + slack) * (1.0 + ulp) > y_dtype_max(y_dtype) {
            continue; // rounds to ±Inf in a narrow output dtype
        }
        let tol = slack + ulp * (r.abs() + slack) + tiny;
        let (i, j) = (e / n, e % n);
        assert!(
            (g - r).abs() <= tol,
            "element {e}: got {g}, reference {r} ± {tol}\nx row {i}: {:?}\nw row {j}: {:?}\nbias {:?}, threshold {threshold}, {path:?}",
            &x_vals[i * k..(i + 1) * k],
            &w_vals[j * k..(j + 1) * k],
            bias.as_ref().map(|b| b[j])
        );
    }
    if rows == 0 {
        return;
    }

    // One activation pass for two weights (the rest of the bytes make the
    // second): each output bit for bit a call of its own.
    let n2 = 1 + (b.byte() % 24) as usize;
    let (_, w2_data) = store(w_dtype, (0..n2 * k).map(|_| b.value()).collect());
    if let Ok(second) = ctx.quantize_weight(w2_data.data(), n2, k, None) {
        let (mut alone1, mut alone2) = (Owned::zeros(y_dtype, rows * n), Owned::zeros(y_dtype, rows * n2));
        ctx.matmul(&weight, x_data.data(), rows, threshold, alone1.data_mut()).unwrap();
        ctx.matmul(&second, x_data.data(), rows, threshold, alone2.data_mut()).unwrap();
        let (mut y1, mut y2) = (Owned::zeros(y_dtype, rows * n), Owned::zeros(y_dtype, rows * n2));
        let shared = ctx
            .matmul_shared_input(&[&weight, &second], x_data.data(), rows, threshold, &mut [y1.data_mut(), y2.data_mut()])
            .unwrap();
        assert_eq!(shared.outlier_columns, stats.outlier_columns);
        assert_eq!(y1.bits(), alone1.bits(), "shared input: the first weight's output differs from its own call");
        assert_eq!(y2.bits(), alone2.bits(), "shared input: the second weight's output differs from its own call");
    }

    // Row-parallel: in_features split over a world of 1-3 ranks. The shards
    // hold the whole weight's CB columns and SCB; one rank is the matmul bit
    // for bit; more sum to it within the bound Context::matmul_row_parallel states.
    let world = (1 + (b.byte() % 3) as usize).min(k);
    let parts: Vec<std::ops::Range<usize>> = (0..world).map(|r| r * k / world..(r + 1) * k / world).collect();
    let cb = weight.cb().unwrap();
    let mut whole_y = vec![0f32; rows * n];
    ctx.matmul(&weight, x_data.data(), rows, threshold, llmint8::DataMut::F32(&mut whole_y)).unwrap();
    let mut global = vec![0f32; rows];
    let mut ranks = Vec::new();
    for (r, cols) in parts.iter().enumerate() {
        let b = if r == 0 { bias.as_deref().map(Data::F32) } else { None };
        let shard = ctx.quantize_weight_columns(w_data.data(), n, k, cols.clone(), b, &[]).unwrap();
        let shard_cb: Vec<i8> = cb.chunks_exact(k).flat_map(|row| row[cols.clone()].iter().copied()).collect();
        assert_eq!(shard.cb().unwrap(), shard_cb, "a row-parallel shard's CB is not the whole weight's columns");
        assert_eq!(shard.scb().iter().map(|s| s.to_bits()).collect::<Vec<_>>(), scb_ref.iter().map(|s| s.to_bits()).collect::<Vec<_>>());
        let slice: Vec<f32> = x_vals.chunks_exact(k).flat_map(|row| row[cols.clone()].iter().copied()).collect();
        let (_, slice_data) = store(x_dtype, slice);
        let mut stats = vec![0f32; rows];
        ctx.row_parallel_statistics(&shard, slice_data.data(), rows, threshold, &mut stats).unwrap();
        for (g, s) in global.iter_mut().zip(&stats) {
            assert!(!s.is_nan() && *s >= 0.0, "row statistic {s}");
            *g = g.max(*s);
        }
        ranks.push((shard, slice_data));
    }
    let mut sum = vec![0f32; rows * n];
    for (shard, slice) in &ranks {
        let mut partial = vec![0f32; rows * n];
        ctx.matmul_row_parallel(shard, slice.data(), rows, threshold, &global, llmint8::DataMut::F32(&mut partial)).unwrap();
        for (s, p) in sum.iter_mut().zip(&partial) {
            *s += p;
        }
    }
    if world == 1 {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&sum), bits(&whole_y), "one rank is not the matmul");
        return;
    }
    let x_loaded = load(&x_vals);
    let u = 2f64.powi(-24);
    let gamma = |m: usize| m as f64 * u / (1.0 - m as f64 * u);
    for (e, (&got, &want)) in sum.iter().zip(&whole_y).enumerate() {
        let (i, j) = (e / n, e % n);
        let magnitude: f64 = (0..k)
            .map(|c| {
                let xa = (x_vals[i * k + c].abs() as f64).max(x_loaded[i * k + c].abs() as f64);
                let wa = (cb[j * k + c] as f64 * scb_ref[j] as f64 / 127.0).abs();
                (xa * (1.0 + 4.0 * u) + global[i] as f64 / 254.0) * wa
            })
            .sum::<f64>()
            + bias.as_ref().map_or(0.0, |b| b[j].abs() as f64);
        if !want.is_finite() || !magnitude.is_finite() || magnitude > 1e37 || global[i].is_infinite() {
            continue; // beyond f32, or a row the int8 part cannot quantize
        }
        let bound = gamma(2 * stats.outlier_columns + world + 4) * magnitude + (k + 8) as f64 * 2f64.powi(-149);
        let err = (got as f64 - want as f64).abs();
        assert!(err <= bound, "row-parallel y[{i}, {j}] = {got}, unsharded {want}: |error| {err:e} > bound {bound:e} ({world} ranks)");
    }
}

fn y_dtype_max(dt: llmint8::DType) -> f64 {
    match dt {
        llmint8::DType::F32 => f32::MAX as f64,
        llmint8::DType::F16 => 65504.0,
        llmint8::DType::BF16 => 3.38e38,
    }
}

/// A float buffer in one of the three dtypes.
enum Owned {
    F32(Vec<f32>),
    F16(Vec<llmint8::f16>),
    BF16(Vec<llmint8::bf16>),
}

impl Owned {
    fn zeros(dt: llmint8::DType, len: usize) -> Owned {
        match dt {
            llmint8::DType::F32 => Owned::F32(vec![0.0; len]),
            llmint8::DType::F16 => Owned::F16(vec![llmint8::f16::ZERO; len]),
            llmint8::DType::BF16 => Owned::BF16(vec![llmint8::bf16::ZERO; len]),
        }
    }
    fn data(&self) -> llmint8::Data<'_> {
        match self {
            Owned::F32(v) => llmint8::Data::F32(v),
            Owned::F16(v) => llmint8::Data::F16(v),
            Owned::BF16(v) => llmint8::Data::BF16(v),
        }
    }
    fn data_mut(&mut self) -> llmint8::DataMut<'_> {
        match self {
            Owned::F32(v) => llmint8::DataMut::F32(v),
            Owned::F16(v) => llmint8::DataMut::F16(v),
            Owned::BF16(v) => llmint8::DataMut::BF16(v),
        }
    }
    fn bits(&self) -> Vec<u32> {
        match self {
            Owned::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            Owned::F16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
            Owned::BF16(v) => v.iter().map(|x| x.to_bits() as u32).collect(),
        }
    }
    fn to_f32(&self) -> Vec<f32> {
        match self {
            Owned::F32(v) => v.clone(),
            Owned::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Owned::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// The smoothing property, on the same bytes: a weight smoothed by a vector
/// `s` (factors of any magnitude the bytes give, powers of two and not) is,
/// bit for bit, the plain weight of `W·diag(s)` (float32) multiplied by
/// `X·diag(1/s)` (float32) — its `CB`, `SCB`, outputs and outlier count, on
/// any path, dtype, thread count and row rule (values read as they are) —
/// and it is refused exactly when `W·diag(s)` holds a non-finite value.
pub fn check_smoothed_input(data: &[u8]) {
    use llmint8::{bf16, f16, DType, Data, DataMut, Status, WeightOptions};

    let mut b = Bytes(data);
    let (rows, k, n, kinds) = call_shape(&mut b);
    let dtype = |code: u8| [DType::F32, DType::F16, DType::BF16][(code % 3) as usize];
    let (x_dtype, w_dtype) = (dtype(kinds), dtype(kinds / 3));
    let Some(ctx) = mode_context(b.byte()) else { return };
    let threshold = [0.0, 6.0, 1.5, 0.25, f32::INFINITY, 3.0][(b.byte() % 6) as usize];
    let store = |dt: DType, v: &[f32]| -> Owned {
        match dt {
            DType::F32 => Owned::F32(v.to_vec()),
            DType::F16 => Owned::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Owned::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    };
    let w = store(w_dtype, &(0..n * k).map(|_| b.value()).collect::<Vec<_>>());
    let x = store(x_dtype, &(0..rows * k).map(|_| b.value()).collect::<Vec<_>>());
    // Factors: 2^(e - 8) for e < 16, or 1.5^(e - 24) (not exact in binary) otherwise.
    let s: Vec<f32> = (0..k)
        .map(|_| {
            let e = b.byte() % 48;
            if e < 16 { 2f32.powi(e as i32 - 8) } else { 1.5f32.powi(e as i32 - 24) }
        })
        .collect();
    let ws: Vec<f32> = w.to_f32().iter().enumerate().map(|(i, v)| v * s[i % k]).collect();
    let xs: Vec<f32> = x.to_f32().iter().enumerate().map(|(i, v)| v * (1.0 / s[i % k])).collect();
    let options = WeightOptions { smoothing: Some(&s), ..Default::default() };
    let smoothed = ctx.quantize_weight_with(w.data(), n, k, None, &options);
    let plain = ctx.quantize_weight(Data::F32(&ws), n, k, None);
    let (smoothed, plain) = match (smoothed, plain) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), Err(_)) => {
            assert_eq!(e.status(), Status::InvalidArgument, "{e}");
            assert!(ws.iter().any(|v| !v.is_finite()), "a smoothed weight with finite W·diag(s) was refused: {e}");
            return;
        }
        (a, b) => panic!("smoothed {:?} and plain {:?} disagree on refusing", a.err(), b.err()),
    };
    assert_eq!(smoothed.cb().unwrap(), plain.cb().unwrap(), "CB of the smoothed weight");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(smoothed.scb()), bits(plain.scb()), "SCB of the smoothed weight");
    let (mut y, mut want) = (vec![0f32; rows * n], vec![0f32; rows * n]);
    let a = ctx.matmul(&smoothed, x.data(), rows, threshold, DataMut::F32(&mut y)).unwrap();
    let b = ctx.matmul(&plain, Data::F32(&xs), rows, threshold, DataMut::F32(&mut want)).unwrap();
    assert_eq!(a.outlier_columns, b.outlier_columns, "outlier columns of the smoothed call");
    assert_eq!(bits(&y), bits(&want), "a smoothed call differs from the plain call on the smoothed operands");
}

