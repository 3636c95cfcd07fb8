//! Tensor parallelism inside an engine's world: row-parallel shards (in_features
//! split across ranks; o_proj, down_proj) whose partial outputs, computed with
//! the all-reduced row statistics, sum to the unsharded layer's output within
//! the bound `Context::matmul_row_parallel` states. The ranks live in one
//! process; the test does the engine's collectives (MAX, then SUM). Runs on
//! the test backend (`LLMINT8_TEST_BACKEND`: the CPU, or the emulated GPU).

mod common;

use std::ops::Range;
use std::path::PathBuf;

use common::{Owned, Rng};
use llmint8::io::{Checkpoint, SafetensorsWriter, TensorDtype, TensorSpec};
use llmint8::RowScale;
use llmint8::{Context, DType, Data, DataMut, Status, Weight};

/// Rank `r`'s part of `k` columns in a world of `world`, as Megatron splits them.
fn rank_columns(k: usize, world: usize) -> Vec<Range<usize>> {
    (0..world).map(|r| r * k / world..(r + 1) * k / world).collect()
}

/// γ(n) of floating-point error analysis for float32: `n·u / (1 − n·u)`, u = 2⁻²⁴.
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * f64::powi(2.0, -24);
    nu / (1.0 - nu)
}

/// One rank: its weight shard and its slice of the activations.
struct Rank<'w> {
    weight: &'w Weight,
    x: Owned,
}

/// The engine's row-parallel step over `ranks`: each rank's statistics, their
/// MAX, each rank's float32 partial, their SUM in rank order. Returns the sum,
/// the MAX'd row absmax and every rank's partial.
fn row_parallel(ctx: &Context, ranks: &[Rank<'_>], rows: usize, threshold: f32) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let n = ranks[0].weight.out_features();
    let mut global = vec![0f32; rows];
    for rank in ranks {
        let mut stats = vec![0f32; rows];
        ctx.row_parallel_statistics(rank.weight, rank.x.data(), rows, threshold, &mut stats).unwrap();
        for (g, s) in global.iter_mut().zip(&stats) {
            assert!(!s.is_nan(), "statistics are never NaN");
            *g = g.max(*s);
        }
    }
    let mut sum = vec![0f32; rows * n];
    let mut partials = Vec::new();
    for rank in ranks {
        let mut y = vec![0f32; rows * n];
        ctx.matmul_row_parallel(rank.weight, rank.x.data(), rows, threshold, &global, DataMut::F32(&mut y)).unwrap();
        for (s, v) in sum.iter_mut().zip(&y) {
            *s += v;
        }
        partials.push(y);
    }
    (sum, global, partials)
}

/// The bound of `Context::matmul_row_parallel` for output `[r, j]`:
/// `γ(2m + W + 4) · S`, `S = Σ_c (|x_c| + a/254) · |ŵ_c| + |b|`, with `ŵ` bounded
/// by both the dequantized value and the source value (a kept column uses the latter).
#[allow(clippy::too_many_arguments)]
fn bound(
    x: &[f32],
    k: usize,
    r: usize,
    j: usize,
    absmax: f32,
    w_abs: &[f64],
    bias: Option<&[f32]>,
    m: usize,
    world: usize,
) -> f64 {
    let s: f64 = (0..k).map(|c| (x[r * k + c].abs() as f64 + absmax as f64 / 254.0) * w_abs[j * k + c]).sum();
    gamma(2 * m + world + 4) * (s + bias.map_or(0.0, |b| b[j].abs() as f64))
}

/// `max(|source|, |cb · scb / 127|)` per element of a `[n, k]` weight.
fn weight_magnitudes(whole: &Weight, source: &[f32]) -> Vec<f64> {
    let (cb, scb, k) = (whole.cb().unwrap(), whole.scb().to_vec(), whole.in_features());
    cb.iter()
        .enumerate()
        .map(|(i, &q)| (q as f64 * scb[i / k] as f64 / 127.0).abs().max(source[i].abs() as f64))
        .collect()
}

/// A rank's slice `[rows, cols]` of the row-major `x` `[rows, k]`.
fn slice_columns(x: &[f32], k: usize, cols: &Range<usize>) -> Vec<f32> {
    x.chunks_exact(k).flat_map(|row| row[cols.clone()].iter().copied()).collect()
}

/// Row-parallel shards of 16/32-bit weights (some columns kept), for world
/// sizes 1–4, thresholds 6 and 0, both row scale rules, activations of every
/// dtype (two per world) and row counts 1, 5 and 70: each shard holds exactly the whole
/// weight's int8 values and scales; one rank gives the unsharded call's bits;
/// more ranks sum to the unsharded output within the stated bound.
#[test]
fn row_parallel_partials_sum_to_the_whole_layer_within_the_stated_bound() {
    let ctx = common::test_context();
    let mut rng = Rng::new(31);
    let (n, k) = (37, 150);
    let mut worst = 0f64; // the largest |error| / bound seen
    for rule in [RowScale::Int8Part, RowScale::BitsAndBytes] {
        ctx.set_row_scale(rule);
        for w_dtype in [DType::F16, DType::BF16, DType::F32] {
            let w = Owned::from_f32(w_dtype, &rng.normals(n * k, 0.5));
            let bias = rng.normals(n, 1.0);
            let keep = [7u32, 100, 149];
            let whole = ctx.quantize_weight_keep(w.data(), n, k, Some(Data::F32(&bias)), &keep).unwrap();
            let w_abs = weight_magnitudes(&whole, &w.to_f32());
            let whole_cb = whole.cb().unwrap();
            for world in 1..=4 {
                let parts = rank_columns(k, world);
                let shards: Vec<Weight> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, cols)| {
                        let b = (i == 0).then_some(Data::F32(&bias));
                        ctx.quantize_weight_columns(w.data(), n, k, cols.clone(), b, &keep).unwrap()
                    })
                    .collect();
                for (shard, cols) in shards.iter().zip(&parts) {
                    assert_eq!((shard.out_features(), shard.in_features()), (n, cols.len()));
                    assert_eq!(common::bits(shard.scb()), common::bits(whole.scb()), "the whole row's scale");
                    assert_eq!(
                        shard.cb().unwrap(),
                        slice_i8(&whole_cb, k, cols),
                        "{cols:?}: the whole weight's int8 values"
                    );
                    let kept: Vec<usize> =
                        keep.iter().map(|&c| c as usize).filter(|c| cols.contains(c)).map(|c| c - cols.start).collect();
                    assert_eq!(shard.kept_columns(), &kept[..], "{cols:?}");
                    assert_eq!(shard.bias().is_some(), cols.start == 0);
                }
                // Each activation dtype meets each weight dtype across the worlds
                // (every pair, and not every world for every pair: the emulated
                // GPU runs the kernels on the CPU).
                let x_dtypes = [DType::F32, DType::F16, DType::BF16];
                for x_dtype in [x_dtypes[world % 3], x_dtypes[(world + 1) % 3]] {
                    for rows in [1, 5, 70] {
                        let x = Owned::from_f32(x_dtype, &common::activations_with_outliers(&mut rng, rows, k, 3));
                        let xf = x.to_f32();
                        for threshold in [6.0, 0.0] {
                            let what = format!(
                                "{rule:?}, W {w_dtype:?}, x {x_dtype:?}, {world} ranks, {rows} rows, t {threshold}"
                            );
                            let mut y = vec![0f32; rows * n];
                            let stats = ctx.matmul(&whole, x.data(), rows, threshold, DataMut::F32(&mut y)).unwrap();
                            let ranks: Vec<Rank<'_>> = shards
                                .iter()
                                .zip(&parts)
                                .map(|(s, cols)| Rank {
                                    weight: s,
                                    x: Owned::from_f32(x_dtype, &slice_columns(&xf, k, cols)),
                                })
                                .collect();
                            let (sum, global, partials) = row_parallel(&ctx, &ranks, rows, threshold);
                            if world == 1 {
                                assert_eq!(common::bits(&sum), common::bits(&y), "{what}: one rank is the matmul");
                                // Every output dtype, too.
                                for y_dtype in [DType::F16, DType::BF16] {
                                    let (mut a, mut b) =
                                        (Owned::zeros(y_dtype, rows * n), Owned::zeros(y_dtype, rows * n));
                                    ctx.matmul(&whole, x.data(), rows, threshold, a.data_mut()).unwrap();
                                    ctx.matmul_row_parallel(
                                        ranks[0].weight,
                                        x.data(),
                                        rows,
                                        threshold,
                                        &global,
                                        b.data_mut(),
                                    )
                                    .unwrap();
                                    assert_eq!(a.bytes(), b.bytes(), "{what}, y {y_dtype:?}");
                                }
                                continue;
                            }
                            assert_eq!(partials.len(), world);
                            for r in 0..rows {
                                for j in 0..n {
                                    let (got, want) = (sum[r * n + j], y[r * n + j]);
                                    let limit = bound(
                                        &xf,
                                        k,
                                        r,
                                        j,
                                        global[r],
                                        &w_abs,
                                        Some(&bias),
                                        stats.outlier_columns,
                                        world,
                                    );
                                    let err = (got as f64 - want as f64).abs();
                                    assert!(err <= limit, "{what}: y[{r}, {j}] = {got}, unsharded {want}: |error| {err:e} > bound {limit:e}");
                                    worst = worst.max(err / limit);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    ctx.set_row_scale(RowScale::default());
    println!("row-parallel: largest |error| / bound = {worst:.4}");
}

fn slice_i8(v: &[i8], k: usize, cols: &Range<usize>) -> Vec<i8> {
    v.chunks_exact(k).flat_map(|row| row[cols.clone()].iter().copied()).collect()
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llmint8-tp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An MLP checkpoint sharded both ways, Megatron-style: `up` column-parallel
/// (each rank loads its output rows), `down` row-parallel (each rank loads the
/// matching input columns, the first with the bias); the ranks' hidden slices
/// feed their `down` shards with no collective between, then MAX and SUM.
/// From 16/32-bit checkpoints and their bitsandbytes 8-bit forms (with kept
/// columns), world sizes 1–4, thresholds 6 and 0: within the stated bound of
/// the unsharded MLP (bit for bit for one rank). Bad column ranges are
/// refused naming the layer; a NaN anywhere in a row refuses every shard
/// (each reads whole rows for their scale).
#[test]
fn an_mlp_checkpoint_sharded_both_ways_matches_the_unsharded_mlp() {
    let ctx = common::test_context();
    let mut rng = Rng::new(32);
    let (d_model, hidden, rows) = (48, 96, 7);
    let dir = scratch("mlp");
    let mut checkpoints = Vec::new();
    for dtype in [DType::F16, DType::BF16, DType::F32] {
        let up = Owned::from_f32(dtype, &rng.normals(hidden * d_model, 0.5));
        let down = Owned::from_f32(dtype, &rng.normals(d_model * hidden, 0.3));
        let down_bias = Owned::from_f32(dtype, &rng.normals(d_model, 1.0));
        let path = dir.join(format!("{dtype:?}.safetensors"));
        let t = TensorDtype::from(dtype);
        let specs = vec![
            TensorSpec { name: "up.weight".into(), dtype: t, shape: vec![hidden, d_model] },
            TensorSpec { name: "down.weight".into(), dtype: t, shape: vec![d_model, hidden] },
            TensorSpec { name: "down.bias".into(), dtype: t, shape: vec![d_model] },
        ];
        let mut writer = SafetensorsWriter::create(&path, specs, &[]).unwrap();
        writer.write("up.weight", &up.bytes()).unwrap();
        writer.write("down.weight", &down.bytes()).unwrap();
        writer.write("down.bias", &down_bias.bytes()).unwrap();
        writer.finish().unwrap();
        // bitsandbytes' 8-bit form, `down` keeping columns in several shards.
        let kept =
            ctx.quantize_weight_keep(down.data(), d_model, hidden, Some(down_bias.data()), &[2, 50, 95]).unwrap();
        let int8 = dir.join(format!("{dtype:?}-down-int8.safetensors"));
        llmint8::save_weight(&kept, &int8, "down").unwrap();
        checkpoints.push((path.clone(), path.clone(), down.to_f32()));
        checkpoints.push((path, int8, down.to_f32()));
    }
    for (up_path, down_path, down_source) in &checkpoints {
        let (up_ckpt, down_ckpt) = (Checkpoint::open(up_path).unwrap(), Checkpoint::open(down_path).unwrap());
        let up_whole = ctx.load_weight(&up_ckpt, "up").unwrap();
        let down_whole = ctx.load_weight(&down_ckpt, "down").unwrap();
        let w_abs = weight_magnitudes(&down_whole, down_source);
        let x = common::activations_with_outliers(&mut rng, rows, d_model, 2);
        for threshold in [6.0, 0.0] {
            // The unsharded MLP (no activation function: the sharding is the point).
            let mut h = vec![0f32; rows * hidden];
            ctx.matmul(&up_whole, Data::F32(&x), rows, threshold, DataMut::F32(&mut h)).unwrap();
            let mut y = vec![0f32; rows * d_model];
            let stats = ctx.matmul(&down_whole, Data::F32(&h), rows, threshold, DataMut::F32(&mut y)).unwrap();
            for world in 1..=4 {
                let parts = rank_columns(hidden, world);
                let shards: Vec<(Weight, Vec<f32>)> = parts
                    .iter()
                    .map(|part| {
                        let up = ctx.load_weight_rows(&up_ckpt, "up", part.clone()).unwrap();
                        let mut h_part = vec![0f32; rows * part.len()];
                        ctx.matmul(&up, Data::F32(&x), rows, threshold, DataMut::F32(&mut h_part)).unwrap();
                        let down = ctx.load_weight_columns(&down_ckpt, "down", part.clone()).unwrap();
                        assert_eq!((down.out_features(), down.in_features()), (d_model, part.len()));
                        assert_eq!(down.bias().is_some(), part.start == 0, "the first shard carries the bias");
                        assert_eq!(common::bits(down.scb()), common::bits(down_whole.scb()));
                        (down, h_part)
                    })
                    .collect();
                let ranks: Vec<Rank<'_>> =
                    shards.iter().map(|(w, h)| Rank { weight: w, x: Owned::from_f32(DType::F32, h) }).collect();
                let (sum, global, _) = row_parallel(&ctx, &ranks, rows, threshold);
                let what = format!("{}: {world} ranks, threshold {threshold}", down_path.display());
                if world == 1 {
                    assert_eq!(common::bits(&sum), common::bits(&y), "{what}");
                    continue;
                }
                let bias = down_whole.bias().map(|b| b.to_vec());
                for r in 0..rows {
                    for j in 0..d_model {
                        let limit =
                            bound(&h, hidden, r, j, global[r], &w_abs, bias.as_deref(), stats.outlier_columns, world);
                        let err = (sum[r * d_model + j] as f64 - y[r * d_model + j] as f64).abs();
                        assert!(err <= limit, "{what}: y[{r}, {j}]: |error| {err:e} > bound {limit:e}");
                    }
                }
            }
        }
        for bad in [0..0, 5..5, 90..97, 96..97] {
            let err = down_ckpt_err(&ctx, &down_ckpt, bad.clone());
            assert_eq!(err.status(), Status::Shape, "{bad:?}: {err}");
            assert!(err.message().contains("96 in_features"), "{err}");
        }
    }
    // A NaN in row 0, column 3 refuses every row-parallel shard, not only the
    // one holding column 3: each shard reads whole rows for their scale.
    let mut w = rng.normals(d_model * hidden, 0.5);
    w[3] = f32::NAN;
    let path = dir.join("nan.safetensors");
    let specs = vec![TensorSpec { name: "down.weight".into(), dtype: TensorDtype::F32, shape: vec![d_model, hidden] }];
    let mut writer = SafetensorsWriter::create(&path, specs, &[]).unwrap();
    writer.write("down.weight", &w.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    writer.finish().unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    for part in [0..48, 48..96] {
        let err = down_ckpt_err(&ctx, &ckpt, part);
        assert_eq!(err.status(), Status::InvalidArgument, "{err}");
        assert!(err.message().contains("row 0") && err.message().contains("column 3"), "{err}");
    }
}

fn down_ckpt_err(ctx: &Context, ckpt: &Checkpoint, columns: Range<usize>) -> llmint8::Error {
    ctx.load_weight_columns(ckpt, "down", columns).unwrap_err()
}

/// What the stages refuse and what they do with rows they cannot quantize:
/// a `row_absmax` entry below the slice's own, NaN or negative is refused
/// naming the row; wrong lengths are Shape errors; a non-finite value at
/// threshold 0 reports +Inf, which makes that output row NaN on every rank,
/// as in the unsharded layer; an empty column range is refused.
#[test]
fn row_parallel_inputs_are_checked() {
    let ctx = common::test_context();
    let mut rng = Rng::new(33);
    let (n, k, rows) = (20, 40, 3);
    let w = rng.normals(n * k, 0.5);
    let shard = ctx.quantize_weight_columns(Data::F32(&w), n, k, 0..20, None, &[]).unwrap();
    let mut x = common::activations_with_outliers(&mut rng, rows, 20, 1);
    let mut stats = vec![0f32; rows];
    ctx.row_parallel_statistics(&shard, Data::F32(&x), rows, 6.0, &mut stats).unwrap();
    let mut y = vec![0f32; rows * n];
    for (r, bad) in [(1usize, stats[1] * 0.5), (2, f32::NAN), (0, -1.0)] {
        let mut given = stats.clone();
        given[r] = bad;
        let err = ctx.matmul_row_parallel(&shard, Data::F32(&x), rows, 6.0, &given, DataMut::F32(&mut y)).unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{bad}: {err}");
        assert!(err.message().contains(&format!("row_absmax[{r}]")), "{err}");
    }
    let err = ctx.matmul_row_parallel(&shard, Data::F32(&x), rows, 6.0, &stats[..2], DataMut::F32(&mut y)).unwrap_err();
    assert_eq!(err.status(), Status::Shape, "{err}");
    let err = ctx.row_parallel_statistics(&shard, Data::F32(&x), rows, 6.0, &mut [0f32; 4]).unwrap_err();
    assert_eq!(err.status(), Status::Shape, "{err}");
    for bad in [0..0, 30..41] {
        let err = ctx.quantize_weight_columns(Data::F32(&w), n, k, bad.clone(), None, &[]).unwrap_err();
        assert_eq!(err.status(), Status::Shape, "{bad:?}: {err}");
    }
    // A larger MAX from another rank is taken: the rows come out as that rank's scale says.
    let mut given = stats.clone();
    given[0] *= 4.0;
    ctx.matmul_row_parallel(&shard, Data::F32(&x), rows, 6.0, &given, DataMut::F32(&mut y)).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    // Threshold 0 and an Inf in row 1: +Inf in the statistics, NaN in that output row.
    x[20 + 5] = f32::INFINITY;
    ctx.row_parallel_statistics(&shard, Data::F32(&x), rows, 0.0, &mut stats).unwrap();
    assert_eq!(stats[1], f32::INFINITY);
    assert!(stats[0].is_finite() && stats[2].is_finite());
    ctx.matmul_row_parallel(&shard, Data::F32(&x), rows, 0.0, &stats, DataMut::F32(&mut y)).unwrap();
    assert!(y[n..2 * n].iter().all(|v| v.is_nan()), "{:?}", &y[n..2 * n]);
    assert!(y[..n].iter().chain(&y[2 * n..]).all(|v| v.is_finite()));
    // Another rank's +Inf makes this rank's row NaN too (its slice is finite).
    let clean = common::activations_with_outliers(&mut rng, rows, 20, 1);
    let given = [1e6, f32::INFINITY, 1e6];
    ctx.matmul_row_parallel(&shard, Data::F32(&clean), rows, 0.0, &given, DataMut::F32(&mut y)).unwrap();
    assert!(y[n..2 * n].iter().all(|v| v.is_nan()));
}
