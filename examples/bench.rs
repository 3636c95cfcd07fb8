//! CPU benchmark: llmint8's LLM.int8() matmul against an f32 GEMM from a
//! well-kept crate (matrixmultiply, threaded), measured in the same run.
//!
//!     cargo run --release --example bench [-- prefill | decode | quantize | sweep] [--reps N]
//!         [--row-scale bitsandbytes | int8-part]
//!     cargo run --release --example bench -- shape M K N [--threshold T] [--dtype f16|bf16] [--reps N]   # one shape, for profiling
//!     cargo run --release --example bench -- shared [--reps N]
//!     cargo run --release --example bench -- tp [--reps N]
//!     cargo run --release --example bench -- dtypes [--reps N]
//!     cargo run --release --example bench -- smoothing [--reps N]
//!     cargo run --release --features phase-timing --example bench -- phases [M] [--reps N]
//!
//! Prefill: throughput in GOPS (2·M·K·N per call) for the shapes of issue 3,
//! activations with 6 outlier feature columns, thresholds 6 and 0, everything
//! included (activation quantization, outliers, dequantization, output).
//! Decode: M = 1…16 over a rotation of layers whose int8 weights are twice the L3
//! cache, so each call streams its weight from memory; time per layer against
//! the weight bytes divided by the memory bandwidth measured in the same run.
//! Quantize: float16 weight quantization in GB/s of input.
//! Sweep: GOPS against M as CSV, for the plot in docs/ (scripts/plot_bench.py).
//! Shared: Llama-7B's q/k/v (4096 → 3 × 4096) and gate/up (4096 → 2 × 11008)
//! as separate calls and as one `matmul_shared_input`, M = 1, 16, 128, 512,
//! threshold 6, time per group of weights.
//! Tp: row-parallel shards of Llama-7B's o_proj and down_proj for 1, 2, 4 and
//! 8 ranks, M = 1 and 16: one rank's time, and the SUM's error against the
//! stated bound and against the f64 product.
//! Dtypes: the same call with float32, float16 and bfloat16 activations and
//! outputs (one weight, K = N = 4096, threshold 6), M = 1, 16, 128, 512, in
//! three alternating rounds; each 16-bit call's time against float32's, which
//! an engine's float16 model should not pay for (issue 31: within 5%).
//! Smoothing: a smoothed weight's call against the same weight unsmoothed,
//! M = 1, 16, 128, 512, in five alternating rounds (the target: within 3%), and
//! the quantize stage alone, where smoothing's cost lies.

use std::hint::black_box;
use std::time::Instant;

use llmint8::RowScale;
use llmint8::{bf16, Context, Data, DataMut, Element};

mod support;

use support::Rng;

/// Hidden states with 6 large feature columns (the paper's systematic outliers).
fn activations(rng: &mut Rng, rows: usize, k: usize) -> Vec<f32> {
    let mut x = rng.normals(rows * k, 1.0);
    for d in 0..6 {
        let c = (d * 997 + 123) % k;
        for r in 0..rows {
            x[r * k + c] = 20.0 + 40.0 * rng.next() as f32;
        }
    }
    x
}

/// Median of `reps` timings of `f`, in seconds, after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// f32 `y = x · Wᵀ` with matrixmultiply (W row-major `[n, k]`, read transposed).
fn sgemm(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    // SAFETY: the slices hold m·k, n·k and m·n elements with the given strides.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            0.0,
            y.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// The inputs of one shape, the same in every pass (seeded by the shape).
fn inputs(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng((m * 31 + k * 7 + n) as u64);
    (rng.normals(n * k, 1.0 / (k as f32).sqrt()), activations(&mut rng, m, k))
}

/// GOPS of llmint8 at thresholds 6 and 0, then of matrixmultiply, for each
/// shape. All llmint8 runs come first: in the same process, llmint8 measured
/// right after matrixmultiply calls lost up to 45% on 2 threads (its second
/// thread ran at one-thread speed), even with a pause in between.
fn measure(ctx: &Context, reps: usize, shapes: &[(usize, usize, usize)]) -> Vec<(f64, f64, f64)> {
    let ops = |(m, k, n): (usize, usize, usize)| 2.0 * (m * k * n) as f64;
    let ours: Vec<(f64, f64)> = shapes
        .iter()
        .map(|&(m, k, n)| {
            let (w, x) = inputs(m, k, n);
            let weight = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
            let mut y = vec![0.0f32; m * n];
            let mut run = |t: f32| {
                ops((m, k, n))
                    / time(reps, || {
                        ctx.matmul(&weight, Data::F32(&x), m, t, DataMut::F32(&mut y)).unwrap();
                    })
                    / 1e9
            };
            (run(6.0), run(0.0))
        })
        .collect();
    shapes
        .iter()
        .zip(ours)
        .map(|(&(m, k, n), (g6, g0))| {
            let (w, x) = inputs(m, k, n);
            let mut y = vec![0.0f32; m * n];
            (g6, g0, ops((m, k, n)) / time(reps, || sgemm(&x, &w, &mut y, m, k, n)) / 1e9)
        })
        .collect()
}

fn prefill(ctx: &Context, reps: usize) {
    println!(
        "## Prefill: GOPS (2·M·K·N / time), median of {reps}; {} threads, {} kernels, row scale {}",
        ctx.num_threads(),
        ctx.cpu_path().name(),
        row_scale_name(ctx.row_scale())
    );
    println!();
    println!("| M | K | N | llmint8 t = 6 | llmint8 t = 0 | f32 (matrixmultiply) | t = 6 / f32 |");
    println!("|---|---|---|---|---|---|---|");
    let shapes = [
        (1, 4096, 4096),
        (16, 4096, 4096),
        (128, 4096, 4096),
        (512, 4096, 4096),
        (128, 4096, 11008),
        (512, 4096, 11008),
    ];
    for (&(m, k, n), (g6, g0, gf)) in shapes.iter().zip(measure(ctx, reps, &shapes)) {
        println!("| {m} | {k} | {n} | {g6:.0} | {g0:.0} | {gf:.0} | {:.1}× |", g6 / gf);
    }
    println!();
}

/// `y = x · Wᵀ` with a float32 or bfloat16 W, for a few rows, streaming W once: each thread takes a
/// share of W's rows and dots them with every row of x (8 accumulators, so the
/// compiler vectorizes). The decode baseline: matrixmultiply packs W on every
/// call, which is fair for prefill but not for a matrix read once.
fn gemv<T: Element>(x: &[f32], w: &[T], y: &mut [f32], m: usize, k: usize, n: usize, threads: usize) {
    let per = n.div_ceil(threads);
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|j0| {
                s.spawn(move || {
                    let j1 = (j0 + per).min(n);
                    let mut out = vec![0.0f32; m * (j1 - j0)];
                    for j in j0..j1 {
                        let wr = &w[j * k..(j + 1) * k];
                        for i in 0..m {
                            let xr = &x[i * k..(i + 1) * k];
                            let mut acc = [0.0f32; 8];
                            for (xc, wc) in xr.chunks_exact(8).zip(wr.chunks_exact(8)) {
                                for l in 0..8 {
                                    acc[l] += xc[l] * wc[l].to_f32();
                                }
                            }
                            out[i * (j1 - j0) + j - j0] = acc.iter().sum();
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, part) in parts.iter().enumerate() {
        let j0 = p * per;
        let width = part.len() / m;
        for i in 0..m {
            y[i * n + j0..i * n + j0 + width].copy_from_slice(&part[i * width..(i + 1) * width]);
        }
    }
}

/// Read bandwidth in bytes/s: every thread sums its share of a 512 MiB buffer.
fn memory_bandwidth(threads: usize) -> f64 {
    let buf = vec![1u64; 64 << 20];
    let chunk = buf.len().div_ceil(threads);
    time(5, || {
        std::thread::scope(|s| {
            for part in buf.chunks(chunk) {
                s.spawn(move || black_box(part.iter().fold(0u64, |a, &v| a.wrapping_add(v))));
            }
        });
    })
    .recip()
        * (buf.len() * 8) as f64
}

/// Bytes of this processor's last-level cache (Linux sysfs), if it says.
fn l3_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").ok()?;
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let shift = match unit {
        "K" => 10,
        "M" => 20,
        "" => 0,
        _ => return None,
    };
    Some(digits.parse::<usize>().ok()? << shift)
}

fn decode(ctx: &Context, reps: usize) {
    // Enough 16 MiB int8 layers for twice the L3 (at least 8: 128 MiB), so
    // that every call streams its weight from memory.
    let (k, n) = (4096, 4096);
    let layers = l3_bytes().map_or(8, |l3| (2 * l3).div_ceil(n * k).max(8));
    let mut rng = Rng(2);
    let dense: Vec<Vec<f32>> = (0..layers).map(|_| rng.normals(n * k, 1.0 / (k as f32).sqrt())).collect();
    let weights: Vec<_> = dense.iter().map(|w| ctx.quantize_weight(Data::F32(w), n, k, None).unwrap()).collect();
    let halves: Vec<Vec<bf16>> = dense.iter().map(|w| w.iter().map(|&v| bf16::from_f32(v)).collect()).collect();
    let bw = memory_bandwidth(ctx.num_threads());
    let floor = (n * k) as f64 / bw;
    println!(
        "## Decode: {layers} layers of {k}×{n} rotated ({} MiB of int8; L3 {} MiB), time per layer; memory bandwidth {:.1} GB/s, so the int8 floor is {:.0} µs",
        (layers * n * k) >> 20,
        l3_bytes().map_or("unknown".to_string(), |b| (b >> 20).to_string()),
        bw / 1e9,
        floor * 1e6
    );
    println!();
    println!("| M | llmint8 t = 6 | / floor | f32 loop (streams W) | f32 (matrixmultiply) | best f32 / llmint8 | bf16 loop | bf16 / llmint8 |");
    println!("|---|---|---|---|---|---|---|---|");
    // llmint8 first for every M, the baselines after (see `measure`).
    let ms = [1, 4, 16];
    let xs: Vec<Vec<f32>> = ms.iter().map(|&m| activations(&mut rng, m, k)).collect();
    let ours: Vec<f64> = ms
        .iter()
        .zip(&xs)
        .map(|(&m, x)| {
            let mut y = vec![0.0f32; m * n];
            time(reps, || {
                for w in &weights {
                    ctx.matmul(w, Data::F32(x), m, 6.0, DataMut::F32(&mut y)).unwrap();
                }
            }) / layers as f64
        })
        .collect();
    for ((&m, x), t8) in ms.iter().zip(&xs).zip(ours) {
        let mut y = vec![0.0f32; m * n];
        let tv = time(reps, || {
            for w in &dense {
                gemv(x, w, &mut y, m, k, n, ctx.num_threads());
            }
        }) / layers as f64;
        let tb = time(reps, || {
            for w in &halves {
                gemv(x, w, &mut y, m, k, n, ctx.num_threads());
            }
        }) / layers as f64;
        let tf = time(reps.min(5), || {
            for w in &dense {
                sgemm(x, w, &mut y, m, k, n);
            }
        }) / layers as f64;
        println!(
            "| {m} | {:.0} µs | {:.2}× | {:.0} µs | {:.0} µs | {:.1}× | {:.0} µs | {:.1}× |",
            t8 * 1e6,
            t8 / floor,
            tv * 1e6,
            tf * 1e6,
            tv.min(tf) / t8,
            tb * 1e6,
            tb / t8
        );
    }
    println!();
}

/// Weight quantization speed: a float16 weight of 11008 × 4096, 1 and 2 threads.
fn quantize(ctx: &Context, reps: usize) {
    let (n, k) = (11008, 4096);
    let w: Vec<llmint8::f16> = Rng(4).normals(n * k, 0.02).into_iter().map(llmint8::f16::from_f32).collect();
    println!("## Weight quantization: float16 [{n}, {k}] ({} MiB), median of {reps}", (2 * n * k) >> 20);
    println!();
    println!("| threads | GB/s of float16 input | per thread |");
    println!("|---|---|---|");
    for threads in [1, ctx.num_threads()] {
        let q = Context::cpu();
        q.set_num_threads(threads);
        let s = time(reps, || drop(black_box(q.quantize_weight(Data::F16(&w), n, k, None).unwrap())));
        let gbs = (2 * n * k) as f64 / s / 1e9;
        println!("| {threads} | {gbs:.2} | {:.2} |", gbs / threads as f64);
    }
    println!();
}

/// GOPS against M at K = N = 4096, as CSV (for scripts/plot_bench.py).
fn sweep(ctx: &Context, reps: usize) {
    let shapes: Vec<_> = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].map(|m| (m, 4096, 4096)).to_vec();
    println!("m,llmint8_t6,llmint8_t0,f32_matrixmultiply");
    for (&(m, _, _), (g6, g0, gf)) in shapes.iter().zip(measure(ctx, reps, &shapes)) {
        println!("{m},{g6:.1},{g0:.1},{gf:.1}");
    }
}

/// One shape at thresholds 6 and 0, for a profiler (`perf record`): the
/// inputs are made once and the calls repeated `reps` times.
fn shape(ctx: &Context, reps: usize, args: &[String]) {
    let dims: Vec<usize> = args.iter().take(3).filter_map(|a| a.parse().ok()).collect();
    let [m, k, n] = dims[..] else {
        eprintln!("bench shape: give M K N");
        std::process::exit(2)
    };
    let (w, x) = inputs(m, k, n);
    let weight = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
    let mut y = vec![0.0f32; m * n];
    let thresholds = match args.iter().position(|a| a == "--threshold").and_then(|i| args.get(i + 1)) {
        Some(t) => vec![t.parse::<f32>().expect("--threshold takes a number")],
        None => vec![6.0, 0.0],
    };
    // `--dtype f16 | bf16`: activations and outputs of that dtype (float32 without).
    let dtype = args.iter().position(|a| a == "--dtype").and_then(|i| args.get(i + 1)).map(String::as_str);
    let x16: Vec<llmint8::f16> = x.iter().map(|&v| llmint8::f16::from_f32(v)).collect();
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let (mut y16, mut yb) = (vec![llmint8::f16::ZERO; m * n], vec![bf16::ZERO; m * n]);
    for t in thresholds {
        let s = time(reps, || {
            match dtype {
                Some("f16") => ctx.matmul(&weight, Data::F16(&x16), m, t, DataMut::F16(&mut y16)),
                Some("bf16") => ctx.matmul(&weight, Data::BF16(&xb), m, t, DataMut::BF16(&mut yb)),
                _ => ctx.matmul(&weight, Data::F32(&x), m, t, DataMut::F32(&mut y)),
            }
            .unwrap();
        });
        println!("M {m} K {k} N {n} t {t}: {:.0} µs, {:.0} GOPS", s * 1e6, 2.0 * (m * k * n) as f64 / s / 1e9);
    }
}

/// Separate calls against one shared-input call for the weights of one
/// Llama-7B input (q/k/v, gate/up), alternating, median of `reps` each.
fn shared(ctx: &Context, reps: usize) {
    let k = 4096;
    println!("weights sharing an input, K = {k}, threshold 6 ({:?} path)", ctx.cpu_path());
    println!("| weights | M | separate calls (ms) | one shared-input call (ms) | gain |");
    println!("|---|---|---|---|---|");
    for (name, ns) in [("q/k/v 3 × 4096", vec![4096usize; 3]), ("gate/up 2 × 11008", vec![11008; 2])] {
        let mut rng = Rng(k as u64 + ns[0] as u64);
        let weights: Vec<llmint8::Weight> = ns
            .iter()
            .map(|&n| ctx.quantize_weight(Data::F32(&rng.normals(n * k, 1.0 / (k as f32).sqrt())), n, k, None).unwrap())
            .collect();
        let refs: Vec<&llmint8::Weight> = weights.iter().collect();
        for m in [1usize, 16, 128, 512] {
            let x = activations(&mut rng, m, k);
            let mut ys: Vec<Vec<f32>> = ns.iter().map(|&n| vec![0.0f32; m * n]).collect();
            let (mut t_sep, mut t_shared) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                t_sep.push(time(reps, || {
                    for (w, y) in weights.iter().zip(ys.iter_mut()) {
                        ctx.matmul(w, Data::F32(&x), m, 6.0, DataMut::F32(y)).unwrap();
                    }
                }));
                t_shared.push(time(reps, || {
                    let mut outs: Vec<DataMut<'_>> = ys.iter_mut().map(|y| DataMut::F32(y)).collect();
                    ctx.matmul_shared_input(&refs, Data::F32(&x), m, 6.0, &mut outs).unwrap();
                }));
            }
            let best = |t: &[f64]| t.iter().copied().fold(f64::INFINITY, f64::min);
            let (a, b) = (best(&t_sep), best(&t_shared));
            println!("| {name} | {m} | {:.3} | {:.3} | {:.2}× |", a * 1e3, b * 1e3, a / b);
            black_box(&ys);
        }
    }
}

/// Row-parallel tensor parallelism on Llama-7B's o_proj (4096 → 4096) and
/// down_proj (11008 → 4096): for worlds of 1, 2, 4 and 8 ranks, one rank's
/// time (statistics + partial, median of `reps`) against the unsharded call,
/// and the SUM's error — against the unsharded output relative to the bound
/// `Context::matmul_row_parallel` states, and both against the f64 product of
/// the float32 inputs.
fn tensor_parallel(ctx: &Context, reps: usize) {
    println!("row-parallel shards, threshold 6 ({:?} path)", ctx.cpu_path());
    println!("| layer | M | ranks | one rank's stats + partial (ms) | unsharded / ranks (ms) | max error / bound | rel. error vs f64, sharded | unsharded |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, k) in [("o_proj 4096 → 4096", 4096usize), ("down_proj 11008 → 4096", 11008)] {
        let n = 4096;
        let mut rng = Rng(k as u64 + 7);
        let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
        let whole = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
        let cb = whole.cb().unwrap();
        for m in [1usize, 16] {
            let x = activations(&mut rng, m, k);
            let mut y = vec![0.0f32; m * n];
            let t_whole = time(reps, || {
                ctx.matmul(&whole, Data::F32(&x), m, 6.0, DataMut::F32(&mut y)).unwrap();
            });
            let outliers = ctx.matmul(&whole, Data::F32(&x), m, 6.0, DataMut::F32(&mut y)).unwrap().outlier_columns;
            // The f64 product of the float32 inputs, and each output's bound magnitude.
            let exact: Vec<f64> =
                (0..m * n).map(|e| (0..k).map(|c| x[e / n * k + c] as f64 * w[e % n * k + c] as f64).sum()).collect();
            for world in [1usize, 2, 4, 8] {
                let parts: Vec<std::ops::Range<usize>> =
                    (0..world).map(|r| r * k / world..(r + 1) * k / world).collect();
                let shards: Vec<llmint8::Weight> = parts
                    .iter()
                    .map(|cols| ctx.quantize_weight_columns(Data::F32(&w), n, k, cols.clone(), None, &[]).unwrap())
                    .collect();
                let slices: Vec<Vec<f32>> = parts
                    .iter()
                    .map(|cols| x.chunks_exact(k).flat_map(|row| row[cols.clone()].iter().copied()).collect())
                    .collect();
                let mut global = vec![0.0f32; m];
                for (shard, slice) in shards.iter().zip(&slices) {
                    let mut stats = vec![0.0f32; m];
                    ctx.row_parallel_statistics(shard, Data::F32(slice), m, 6.0, &mut stats).unwrap();
                    for (g, s) in global.iter_mut().zip(&stats) {
                        *g = g.max(*s);
                    }
                }
                let mut sum = vec![0.0f32; m * n];
                let mut partial = vec![0.0f32; m * n];
                for (shard, slice) in shards.iter().zip(&slices) {
                    ctx.matmul_row_parallel(shard, Data::F32(slice), m, 6.0, &global, DataMut::F32(&mut partial))
                        .unwrap();
                    for (s, p) in sum.iter_mut().zip(&partial) {
                        *s += p;
                    }
                }
                let mut stats = vec![0.0f32; m];
                let t_rank = time(reps, || {
                    ctx.row_parallel_statistics(&shards[0], Data::F32(&slices[0]), m, 6.0, &mut stats).unwrap();
                    ctx.matmul_row_parallel(
                        &shards[0],
                        Data::F32(&slices[0]),
                        m,
                        6.0,
                        &global,
                        DataMut::F32(&mut partial),
                    )
                    .unwrap();
                });
                let u = 2f64.powi(-24);
                let gamma = ((2 * outliers + world + 4) as f64 * u) / (1.0 - (2 * outliers + world + 4) as f64 * u);
                let mut worst = 0.0f64;
                for e in 0..m * n {
                    let (i, j) = (e / n, e % n);
                    let s: f64 = (0..k)
                        .map(|c| {
                            (x[i * k + c].abs() as f64 + global[i] as f64 / 254.0)
                                * (cb[j * k + c] as f64 * whole.scb()[j] as f64 / 127.0).abs()
                        })
                        .sum();
                    worst = worst.max((sum[e] as f64 - y[e] as f64).abs() / (gamma * s));
                }
                let rel = |v: &[f32]| {
                    let num: f64 = v.iter().zip(&exact).map(|(a, b)| (*a as f64 - b).powi(2)).sum();
                    (num / exact.iter().map(|b| b * b).sum::<f64>()).sqrt()
                };
                println!(
                    "| {name} | {m} | {world} | {:.3} | {:.3} | {worst:.3} | {:.3e} | {:.3e} |",
                    t_rank * 1e3,
                    t_whole * 1e3 / world as f64,
                    rel(&sum),
                    rel(&y)
                );
            }
        }
    }
}

/// The same call in float32, float16 and bfloat16 (activations and outputs
/// alike), alternating dtypes within each of three rounds; GOPS per round
/// and the 16-bit calls' slowest ratio to float32 across the rounds.
fn dtypes(ctx: &Context, reps: usize) {
    let (k, n) = (4096, 4096);
    let mut rng = Rng(11);
    let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
    let weight = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
    println!(
        "dtypes of X and Y, K = N = {k}, threshold 6, 6 outlier columns ({:?} path), GOPS in 3 rounds",
        ctx.cpu_path()
    );
    println!("| M | float32 | float16 | bfloat16 | float16 / float32 (worst) | bfloat16 / float32 (worst) |");
    println!("|---|---|---|---|---|---|");
    for m in [1usize, 16, 128, 512] {
        let x = activations(&mut rng, m, k);
        let x16: Vec<llmint8::f16> = x.iter().map(|&v| llmint8::f16::from_f32(v)).collect();
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let (mut y, mut y16, mut yb) = (vec![0.0f32; m * n], vec![llmint8::f16::ZERO; m * n], vec![bf16::ZERO; m * n]);
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..3 {
            t[0].push(time(reps, || {
                ctx.matmul(&weight, Data::F32(&x), m, 6.0, DataMut::F32(&mut y)).unwrap();
            }));
            t[1].push(time(reps, || {
                ctx.matmul(&weight, Data::F16(&x16), m, 6.0, DataMut::F16(&mut y16)).unwrap();
            }));
            t[2].push(time(reps, || {
                ctx.matmul(&weight, Data::BF16(&xb), m, 6.0, DataMut::BF16(&mut yb)).unwrap();
            }));
        }
        let gops = |s: &[f64]| {
            s.iter().map(|s| format!("{:.0}", 2.0 * (m * k * n) as f64 / s / 1e9)).collect::<Vec<_>>().join(" / ")
        };
        let worst = |s: &[f64]| s.iter().zip(&t[0]).map(|(a, b)| a / b).fold(0.0f64, f64::max);
        println!(
            "| {m} | {} | {} | {} | {:.3} | {:.3} |",
            gops(&t[0]),
            gops(&t[1]),
            gops(&t[2]),
            worst(&t[1]),
            worst(&t[2])
        );
        black_box((&y, &y16, &yb));
    }
}

/// A smoothed weight against the same weight unsmoothed (issue 32: within
/// 3%), the same outlier columns, threshold 6, float32 activations, alternating within each of five
/// rounds: Llama-7B's K = N = 4096 and SmolLM2's gate/up (K = 576, N = 1536),
/// where the smoothing pass over each activation row weighs most.
fn smoothing(ctx: &Context, reps: usize) {
    const ROUNDS: usize = 5;
    println!(
        "smoothed against plain weights, threshold 6, 6 outlier columns ({:?} path), GOPS in 3 rounds",
        ctx.cpu_path()
    );
    println!(
        "| K × N | M | plain | smoothed | smoothed / plain time (median, worst) | quantize stage alone: plain µs, smoothed / plain (median) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rng = Rng(12);
    for (k, n) in [(4096usize, 4096usize), (576, 1536)] {
        let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
        // Factors near 1 keep the same outlier columns, so the time measured is
        // smoothing's own (a calibrated s moves outliers into the weight and
        // changes how many columns the floating-point part takes: that is
        // fidelity, docs/SEMANTICS.md).
        let s: Vec<f32> = (0..k).map(|_| 0.95 + 0.1 * rng.next() as f32).collect();
        let plain = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
        let options = llmint8::WeightOptions { smoothing: Some(&s), ..Default::default() };
        let smoothed = ctx.quantize_weight_with(Data::F32(&w), n, k, None, &options).unwrap();
        for m in [1usize, 16, 128, 512] {
            let x = activations(&mut rng, m, k);
            let mut y = vec![0.0f32; m * n];
            let outliers = |w: &llmint8::Weight, y: &mut [f32]| {
                ctx.matmul(w, Data::F32(&x), m, 6.0, DataMut::F32(y)).unwrap().outlier_columns
            };
            assert_eq!(outliers(&plain, &mut y), outliers(&smoothed, &mut y), "the same outlier columns");
            // The quantize stage alone (a row-parallel rank's statistics pass
            // quantizes X and nothing else): the whole call's noise hides it.
            let mut row_absmax = vec![0.0f32; m];
            let mut stage = |w: &llmint8::Weight| {
                time(reps, || ctx.row_parallel_statistics(w, Data::F32(&x), m, 6.0, &mut row_absmax).map(drop).unwrap())
            };
            let (mut tp, mut ts, mut qp, mut qs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                tp.push(time(reps, || {
                    ctx.matmul(&plain, Data::F32(&x), m, 6.0, DataMut::F32(&mut y)).map(drop).unwrap()
                }));
                ts.push(time(reps, || {
                    ctx.matmul(&smoothed, Data::F32(&x), m, 6.0, DataMut::F32(&mut y)).map(drop).unwrap()
                }));
                qp.push(stage(&plain));
                qs.push(stage(&smoothed));
            }
            let gops = |t: &[f64]| {
                t.iter().map(|s| format!("{:.0}", 2.0 * (m * k * n) as f64 / s / 1e9)).collect::<Vec<_>>().join(" / ")
            };
            let sorted_ratios = |a: &[f64], b: &[f64]| {
                let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
                r.sort_by(f64::total_cmp);
                r
            };
            let ratios = sorted_ratios(&ts, &tp);
            let (median, worst) = (ratios[ROUNDS / 2], ratios[ROUNDS - 1]);
            qp.sort_by(f64::total_cmp);
            let stage_ratio = sorted_ratios(&qs, &qp)[ROUNDS / 2];
            println!(
                "| {k} × {n} | {m} | {} | {} | {median:.3}, {worst:.3} | {:.1}, {stage_ratio:.3} |",
                gops(&tp),
                gops(&ts),
                qp[ROUNDS / 2] * 1e6
            );
            black_box(&y);
        }
    }
}

/// Where an M × 4096 × 4096 call's time goes, phase by phase and thread by
/// thread (docs/PERF.md has the M = 512 account): float16 in and out, 6 outlier columns,
/// threshold 6, µs per call, averaged over `reps` calls after a warm-up.
/// Needs `--features phase-timing`.
#[cfg(feature = "phase-timing")]
fn phases(ctx: &Context, reps: usize, args: &[String]) {
    use llmint8::phases::Phase;
    let m: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(512);
    let (k, n) = (4096, 4096);
    let mut rng = Rng(31);
    let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
    let weight = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
    let x: Vec<llmint8::f16> = activations(&mut rng, m, k).into_iter().map(llmint8::f16::from_f32).collect();
    let mut y = vec![llmint8::f16::ZERO; m * n];
    let mut call = || ctx.matmul(&weight, Data::F16(&x), m, 6.0, DataMut::F16(&mut y)).map(drop).unwrap();
    call();
    llmint8::phases::take();
    let start = Instant::now();
    for _ in 0..reps {
        call();
    }
    let wall = start.elapsed().as_secs_f64() / reps as f64;
    let totals = llmint8::phases::take();
    println!(
        "## {m} × {k} × {n}, float16 in and out, threshold 6, 6 outlier columns ({:?} path, {} threads): {:.0} µs per call, {:.0} GOPS",
        ctx.cpu_path(),
        ctx.num_threads(),
        wall * 1e6,
        2.0 * (m * k * n) as f64 / wall / 1e9
    );
    println!();
    let names: Vec<String> = Phase::ALL.iter().map(|p| format!("{p:?}")).collect();
    println!("| thread | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (thread, times) in &totals {
        let cells: Vec<String> = times.iter().map(|t| format!("{:.0}", t.as_secs_f64() * 1e6 / reps as f64)).collect();
        println!("| {thread} | {} |", cells.join(" | "));
    }
    black_box(&y);
}

fn row_scale_name(rule: RowScale) -> &'static str {
    match rule {
        RowScale::BitsAndBytes => "bitsandbytes",
        RowScale::Int8Part => "int8-part",
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps =
        args.iter().position(|a| a == "--reps").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(9);
    // Context::new refuses an LLMINT8_CPU_PATH this processor cannot run
    // (Context::cpu would fall back to the fastest path and mislabel the figures).
    let ctx = Context::new(llmint8::Backend::Cpu, 0).unwrap_or_else(|e| {
        eprintln!("bench: {}", e.message());
        std::process::exit(2)
    });
    // The row rule of threshold 6 (the library's default unless given).
    let row_scale = args.iter().position(|a| a == "--row-scale").map(|i| match args.get(i + 1).map(String::as_str) {
        Some("bitsandbytes") => RowScale::BitsAndBytes,
        Some("int8-part") => RowScale::Int8Part,
        other => {
            eprintln!("bench: --row-scale takes bitsandbytes or int8-part, not {other:?}");
            std::process::exit(2)
        }
    });
    if let Some(rule) = row_scale {
        ctx.set_row_scale(rule);
    }
    match args
        .iter()
        .find(|a| {
            ["prefill", "decode", "quantize", "sweep", "shape", "shared", "tp", "dtypes", "smoothing", "phases"]
                .contains(&a.as_str())
        })
        .map(String::as_str)
    {
        Some("shape") => {
            let at = args.iter().position(|a| a == "shape").unwrap();
            shape(&ctx, reps, &args[at + 1..])
        }
        Some("shared") => shared(&ctx, reps),
        Some("tp") => tensor_parallel(&ctx, reps),
        Some("dtypes") => dtypes(&ctx, reps),
        Some("smoothing") => smoothing(&ctx, reps),
        Some("phases") => {
            let at = args.iter().position(|a| a == "phases").unwrap();
            #[cfg(feature = "phase-timing")]
            phases(&ctx, reps, &args[at + 1..]);
            #[cfg(not(feature = "phase-timing"))]
            {
                let _ = at;
                eprintln!("bench phases: build with --features phase-timing");
                std::process::exit(2)
            }
        }
        Some("prefill") => prefill(&ctx, reps),
        Some("decode") => decode(&ctx, reps),
        Some("quantize") => quantize(&ctx, reps),
        Some(_) => sweep(&ctx, reps),
        None => {
            // Each section in a fresh process, so that one section's baseline
            // runs cannot slow the next section's llmint8 runs (see `measure`).
            for section in ["prefill", "decode", "quantize"] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([section, "--reps", &reps.to_string()])
                    .args(row_scale.map(|r| ["--row-scale", row_scale_name(r)]).into_iter().flatten())
                    .status()
                    .unwrap();
                assert!(status.success(), "bench {section} failed");
            }
        }
    }
}
