//! Smoothing (SmoothQuant's `s`, carried by a weight): a smoothed weight's
//! matmul is, bit for bit, the plain matmul of the smoothed operands
//! `X·diag(1/s)` and `W·diag(s)` made in float32 — on every path, thread
//! count, operation (plain, shared-input, row-parallel) and backend the test
//! context runs (scripts/test.sh runs this file on the emulated GPU too) —
//! bad vectors are refused, and on activations whose columns differ widely
//! in scale it is closer to the exact product.

mod common;

use common::{activations_with_outliers, Owned, Rng};
use llmint8::{
    smoothquant_factors, Context, CpuPath, DType, Data, DataMut, InputRounding, Int8Extras, RowScale, Status,
    WeightOptions,
};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const RULES: [RowScale; 2] = [RowScale::BitsAndBytes, RowScale::Int8Part];

/// Factors spread over two orders of magnitude, as calibrated ones are.
fn factors(rng: &mut Rng, k: usize) -> Vec<f32> {
    (0..k).map(|_| (10f64.powf(2.0 * rng.uniform() - 1.0)) as f32).collect()
}

/// `W·diag(s)` as float32, row-major `[n, k]`.
fn smoothed_weight(w: &Owned, s: &[f32]) -> Vec<f32> {
    let k = s.len();
    w.to_f32().iter().enumerate().map(|(i, v)| v * s[i % k]).collect()
}

/// `X·diag(1/s)` as float32 (each value times the float32 reciprocal).
fn smoothed_activations(x: &Owned, s: &[f32]) -> Vec<f32> {
    let k = s.len();
    x.to_f32().iter().enumerate().map(|(i, v)| v * (1.0 / s[i % k])).collect()
}

#[test]
fn a_smoothed_weight_is_the_plain_product_of_the_smoothed_operands() {
    let ctx = common::test_context();
    let mut rng = Rng::new(41);
    let shapes = [(1, 1, 1), (1, 37, 5), (3, 64, 17), (9, 130, 33), (40, 259, 20), (70, 1031, 18)];
    for (si, &(rows, k, n)) in shapes.iter().enumerate() {
        for (di, &x_dtype) in DTYPES.iter().enumerate() {
            let w = Owned::from_f32(DTYPES[(di + si) % 3], &rng.normals(n * k, 0.05));
            let x = Owned::from_f32(x_dtype, &activations_with_outliers(&mut rng, rows, k, 1 + k / 200));
            let s = factors(&mut rng, k);
            let keep: Vec<u32> = if k > 4 { vec![(k / 3) as u32, 0] } else { vec![] };
            let (ws, xs) = (smoothed_weight(&w, &s), smoothed_activations(&x, &s));
            for rule in RULES {
                ctx.set_row_scale(rule);
                let options = WeightOptions { keep: &keep, smoothing: Some(&s), ..Default::default() };
                let smoothed = ctx.quantize_weight_with(w.data(), n, k, None, &options).unwrap();
                let plain = ctx.quantize_weight_keep(Data::F32(&ws), n, k, None, &keep).unwrap();
                assert_eq!(smoothed.smoothing(), Some(&s[..]));
                assert_eq!(plain.smoothing(), None);
                assert_eq!(smoothed.cb().unwrap(), plain.cb().unwrap(), "({rows}, {k}, {n})");
                assert_eq!(common::bits(smoothed.scb()), common::bits(plain.scb()));
                assert_eq!(smoothed.kept_dtype(), plain.kept_dtype().filter(|_| !keep.is_empty()));
                assert_eq!(smoothed.kept_values_bytes().unwrap(), plain.kept_values_bytes().unwrap());
                // s and 1/s on the host; 1/s on a device too.
                let (m, p) = (smoothed.memory(), plain.memory());
                assert_eq!(m.host_bytes, p.host_bytes + 8 * k);
                assert_eq!(m.device_bytes, p.device_bytes + if p.device_bytes > 0 { 4 * k } else { 0 });
                for t in [0.0, 6.0, 1.5] {
                    let (mut got, mut want) = (vec![0f32; rows * n], vec![0f32; rows * n]);
                    let a = ctx.matmul(&smoothed, x.data(), rows, t, DataMut::F32(&mut got)).unwrap();
                    let b = ctx.matmul(&plain, Data::F32(&xs), rows, t, DataMut::F32(&mut want)).unwrap();
                    assert_eq!(a.outlier_columns, b.outlier_columns);
                    assert_eq!(
                        common::bits(&got),
                        common::bits(&want),
                        "shape ({rows}, {k}, {n}), x {x_dtype:?}, t {t}, {rule:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn smoothed_weights_sharing_an_input_give_the_bits_of_separate_calls() {
    let ctx = common::test_context();
    let mut rng = Rng::new(42);
    let (rows, k) = (21, 200);
    let x = activations_with_outliers(&mut rng, rows, k, 3);
    let s = factors(&mut rng, k);
    let sizes = [48, 16, 16];
    let options = WeightOptions { smoothing: Some(&s), ..Default::default() };
    let weights: Vec<_> = sizes
        .iter()
        .map(|&n| ctx.quantize_weight_with(Data::F32(&rng.normals(n * k, 0.05)), n, k, None, &options).unwrap())
        .collect();
    let mut shared: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0f32; rows * n]).collect();
    let refs: Vec<&llmint8::Weight> = weights.iter().collect();
    let mut outputs: Vec<DataMut> = shared.iter_mut().map(|y| DataMut::F32(y)).collect();
    ctx.matmul_shared_input(&refs, Data::F32(&x), rows, 6.0, &mut outputs).unwrap();
    drop(outputs);
    for (w, y) in weights.iter().zip(&shared) {
        let mut alone = vec![0f32; y.len()];
        ctx.matmul(w, Data::F32(&x), rows, 6.0, DataMut::F32(&mut alone)).unwrap();
        assert_eq!(common::bits(&alone), common::bits(y));
    }

    // Different vectors, or a smoothed weight beside an unsmoothed one: refused,
    // the outputs untouched.
    let mut other = s.clone();
    other[7] *= 2.0;
    let differs = ctx
        .quantize_weight_with(
            Data::F32(&rng.normals(16 * k, 0.05)),
            16,
            k,
            None,
            &WeightOptions { smoothing: Some(&other), ..Default::default() },
        )
        .unwrap();
    let unsmoothed = ctx.quantize_weight(Data::F32(&rng.normals(16 * k, 0.05)), 16, k, None).unwrap();
    for (second, says) in
        [(&differs, "different smoothing vectors"), (&unsmoothed, "is smoothed and weights[1] is not")]
    {
        let (mut y0, mut y1) = (vec![7f32; rows * 48], vec![7f32; rows * 16]);
        let e = ctx
            .matmul_shared_input(
                &[&weights[0], second],
                Data::F32(&x),
                rows,
                6.0,
                &mut [DataMut::F32(&mut y0), DataMut::F32(&mut y1)],
            )
            .unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains(says), "{e}");
        assert!(y0.iter().chain(&y1).all(|&v| v == 7.0));
    }
}

/// A row-parallel shard of a smoothed weight keeps its columns' factors: the
/// statistics and partials are those of the plain shards of `W·diag(s)` on
/// the slices of `X·diag(1/s)`.
#[test]
fn row_parallel_shards_of_a_smoothed_weight_keep_their_columns_factors() {
    let ctx = common::test_context();
    let mut rng = Rng::new(43);
    let (rows, k, n) = (12, 300, 40);
    let w = Owned::from_f32(DType::BF16, &rng.normals(n * k, 0.05));
    let x = Owned::from_f32(DType::F32, &activations_with_outliers(&mut rng, rows, k, 3));
    let s = factors(&mut rng, k);
    let (ws, xs) = (smoothed_weight(&w, &s), smoothed_activations(&x, &s));
    let x = x.to_f32();
    let keep = [5u32, 250];
    for columns in [0..120, 120..300] {
        let options = WeightOptions { keep: &keep, smoothing: Some(&s), columns: Some(columns.clone()) };
        let shard = ctx.quantize_weight_with(w.data(), n, k, None, &options).unwrap();
        let plain = ctx.quantize_weight_columns(Data::F32(&ws), n, k, columns.clone(), None, &keep).unwrap();
        assert_eq!(shard.smoothing(), Some(&s[columns.clone()]));
        assert_eq!(shard.cb().unwrap(), plain.cb().unwrap());
        let slice = |v: &[f32]| -> Vec<f32> { v.chunks_exact(k).flat_map(|r| r[columns.clone()].to_vec()).collect() };
        let (x_slice, xs_slice) = (slice(&x), slice(&xs));
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        ctx.row_parallel_statistics(&shard, Data::F32(&x_slice), rows, 6.0, &mut a).unwrap();
        ctx.row_parallel_statistics(&plain, Data::F32(&xs_slice), rows, 6.0, &mut b).unwrap();
        assert_eq!(common::bits(&a), common::bits(&b));
        // Any all-reduced MAX at least this rank's own: here twice it.
        let given: Vec<f32> = a.iter().map(|v| v * 2.0).collect();
        let (mut ya, mut yb) = (vec![0f32; rows * n], vec![0f32; rows * n]);
        ctx.matmul_row_parallel(&shard, Data::F32(&x_slice), rows, 6.0, &given, DataMut::F32(&mut ya)).unwrap();
        ctx.matmul_row_parallel(&plain, Data::F32(&xs_slice), rows, 6.0, &given, DataMut::F32(&mut yb)).unwrap();
        assert_eq!(common::bits(&ya), common::bits(&yb));
    }
}

#[test]
fn a_smoothed_weight_gives_the_same_bits_on_every_path_and_thread_count() {
    let paths: Vec<CpuPath> = CpuPath::ALL.into_iter().filter(|p| p.is_available()).collect();
    let mut rng = Rng::new(44);
    for &(rows, k, n) in &[(1, 70, 33), (5, 129, 20), (37, 520, 48), (130, 1100, 40)] {
        for (di, &dtype) in DTYPES.iter().enumerate() {
            let x = Owned::from_f32(dtype, &activations_with_outliers(&mut rng, rows, k, 2));
            let w = Owned::from_f32(DTYPES[(di + 1) % 3], &rng.normals(n * k, 0.05));
            let s = factors(&mut rng, k);
            for rounding in [InputRounding::Exact, InputRounding::Float16] {
                for rule in RULES {
                    let run = |path: CpuPath, threads: usize| {
                        let ctx = Context::cpu();
                        ctx.set_cpu_path(path).unwrap();
                        ctx.set_num_threads(threads);
                        ctx.set_input_rounding(rounding);
                        ctx.set_row_scale(rule);
                        let options = WeightOptions { keep: &[3], smoothing: Some(&s), ..Default::default() };
                        let weight = ctx.quantize_weight_with(w.data(), n, k, None, &options).unwrap();
                        let mut y = Owned::zeros(DTYPES[(di + 2) % 3], rows * n);
                        ctx.matmul(&weight, x.data(), rows, 6.0, y.data_mut()).unwrap();
                        (weight.cb().unwrap(), common::bits(weight.scb()), y.bytes())
                    };
                    let base = run(CpuPath::Portable, 1);
                    for &p in &paths {
                        for threads in [1, 2, 3] {
                            assert!(
                                run(p, threads) == base,
                                "{p:?} with {threads} threads differs: ({rows}, {k}, {n}), {dtype:?}, {rounding:?}, {rule:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bad_smoothing_vectors_are_refused_with_a_clear_error() {
    let ctx = common::test_context();
    let w = vec![0.5f32; 6];
    for (s, says) in [
        (vec![1.0, f32::NAN, 1.0], "smoothing[1] = NaN"),
        (vec![1.0, 1.0, 0.0], "smoothing[2] = 0"),
        (vec![-1.0, 1.0, 1.0], "smoothing[0] = -1"),
        (vec![1.0, f32::INFINITY, 1.0], "smoothing[1] = inf"),
        (vec![1.0, 1.0], "2 values; the weight has 3 in_features"),
    ] {
        let options = WeightOptions { smoothing: Some(&s), ..Default::default() };
        let e = ctx.quantize_weight_with(Data::F32(&w), 2, 3, None, &options).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains(says), "{e}");
        let extras = Int8Extras { smoothing: Some(&s), ..Default::default() };
        let e = ctx.weight_from_int8_with(&[1; 6], &[1.0, 1.0], 2, 3, None, &extras).unwrap_err();
        assert!(e.message().contains(says), "{e}");
    }
    // A smoothed product that overflows float32 is a non-finite weight.
    let options = WeightOptions { smoothing: Some(&[1.0, 1e38, 1.0]), ..Default::default() };
    let e = ctx.quantize_weight_with(Data::F32(&[1.0, 10.0, 1.0]), 1, 3, None, &options).unwrap_err();
    assert!(e.message().contains("non-finite"), "{e}");
}

/// SmoothQuant's setting: a few input columns hold values several times the
/// others' in every row, but below the threshold — they set each row's scale
/// and leave the other columns a few int8 levels. Smoothing (α = 0.5) moves
/// part of that range into the weight: the product is closer to the exact one.
#[test]
fn smoothing_brings_the_product_closer_to_the_exact_one() {
    let ctx = common::test_context();
    let mut rng = Rng::new(45);
    let (rows, k, n) = (64, 512, 64);
    let mut x = rng.normals(rows * k, 0.3);
    for c in [3, 100, 401] {
        for r in 0..rows {
            x[r * k + c] = (4.0 + 1.9 * rng.uniform()) as f32 * if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        }
    }
    let w = rng.normals(n * k, 0.05);
    let exact: Vec<f32> = (0..rows * n)
        .map(|t| {
            let (i, j) = (t / n, t % n);
            (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum::<f64>() as f32
        })
        .collect();
    let x_absmax: Vec<f32> = (0..k).map(|c| (0..rows).map(|r| x[r * k + c].abs()).fold(0.0, f32::max)).collect();
    let w_absmax: Vec<f32> = (0..k).map(|c| (0..n).map(|j| w[j * k + c].abs()).fold(0.0, f32::max)).collect();
    let s = smoothquant_factors(&x_absmax, &w_absmax, 0.5).unwrap();
    let error = |options: &WeightOptions| {
        let weight = ctx.quantize_weight_with(Data::F32(&w), n, k, None, options).unwrap();
        let mut y = vec![0f32; rows * n];
        ctx.matmul(&weight, Data::F32(&x), rows, 6.0, DataMut::F32(&mut y)).unwrap();
        common::rel_err(&y, &exact)
    };
    let plain = error(&WeightOptions::default());
    let smoothed = error(&WeightOptions { smoothing: Some(&s), ..Default::default() });
    eprintln!("relative error against the exact product: plain {plain:.3e}, smoothed {smoothed:.3e}");
    assert!(smoothed < 0.7 * plain, "smoothed {smoothed:.3e}, plain {plain:.3e}");
}
