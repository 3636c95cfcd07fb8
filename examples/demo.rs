//! The main job in one screen: a transformer-shaped layer whose activations carry
//! a few large outlier feature dimensions, as the paper describes, run three ways:
//! float32, int8 without decomposition (threshold 0), and LLM.int8() (threshold 6).
//!
//!     cargo run --release --example demo [-- --tokens M --in K --out N]

use std::time::Instant;

use llmint8::{Context, Data, DataMut};

mod support;

use support::Rng;

/// Plain float32 `y = x · Wᵀ` (4 output columns at a time so the compiler
/// vectorizes it): the baseline the int8 paths are compared with.
fn matmul_f32(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * n];
    for i in 0..rows {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut acc = [0.0f32; 8];
            for (xc, wc) in xr.chunks_exact(8).zip(wr.chunks_exact(8)) {
                for l in 0..8 {
                    acc[l] += xc[l] * wc[l];
                }
            }
            let tail: f32 =
                xr.chunks_exact(8).remainder().iter().zip(wr.chunks_exact(8).remainder()).map(|(a, b)| a * b).sum();
            y[i * n + j] = acc.iter().sum::<f32>() + tail;
        }
    }
    y
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Best of `reps` runs, in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} needs a number")))
        .unwrap_or(default)
}

fn main() {
    let (rows, k, n) = (arg("--tokens", 64), arg("--in", 4096), arg("--out", 4096));
    let mut rng = Rng(2022);

    // Hidden states: mostly N(0, 1), plus 6 feature dimensions that are large in
    // most tokens — the systematic outliers that break plain int8 (paper §4).
    let mut x: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    let outlier_dims: Vec<usize> = (0..6).map(|d| (d * 997 + 123) % k).collect();
    for &c in &outlier_dims {
        for r in 0..rows {
            if rng.next() < 0.9 {
                x[r * k + c] = 20.0 + 40.0 * rng.next() as f32;
            }
        }
    }
    // A weight like a trained projection's: N(0, 1/k).
    let scale = 1.0 / (k as f32).sqrt();
    let w: Vec<f32> = (0..n * k).map(|_| rng.normal() * scale).collect();

    let ctx = Context::cpu();
    let t_quant = Instant::now();
    let weight = ctx.quantize_weight(Data::F32(&w), n, k, None).expect("quantize");
    let t_quant = t_quant.elapsed().as_secs_f64();

    let reps = 3;
    let mut y_f32 = Vec::new();
    let t_f32 = time(reps, || y_f32 = matmul_f32(&x, &w, rows, k, n));
    let run = |threshold: f32| {
        let mut y = vec![0.0f32; rows * n];
        let mut outliers = 0;
        let t = time(reps, || {
            outliers = ctx
                .matmul(&weight, Data::F32(&x), rows, threshold, DataMut::F32(&mut y))
                .expect("matmul")
                .outlier_columns;
        });
        (y, outliers, t)
    };
    let (y_int8, out0, t_int8) = run(0.0);
    let (y_llm, out6, t_llm) = run(6.0);

    let ops = 2.0 * rows as f64 * k as f64 * n as f64;
    println!("llmint8 {} — LLM.int8() demo", env!("CARGO_PKG_VERSION"));
    println!(
        "layer: x [{rows} tokens × {k}] · Wᵀ [{k} → {n}], {} outlier feature dims of magnitude 20–60; {} threads, {} kernels",
        outlier_dims.len(),
        ctx.num_threads(),
        ctx.cpu_path().name()
    );
    println!();
    println!(
        "{:<34} {:>14} {:>9} {:>14} {:>10} {:>8}",
        "method", "error vs f32", "outliers", "weight bytes", "time ms", "GOPS"
    );
    let row = |name: &str, err: Option<f64>, outl: String, bytes: usize, t: f64| {
        let err = err.map_or("—".to_string(), |e| format!("{:.3}%", e * 100.0));
        println!("{name:<34} {err:>14} {outl:>9} {bytes:>14} {:>10.1} {:>8.1}", t * 1e3, ops / t / 1e9);
    };
    row("float32 (plain loop)", None, "—".into(), 4 * n * k, t_f32);
    row(
        "int8, no decomposition (t = 0)",
        Some(rel_err(&y_int8, &y_f32)),
        out0.to_string(),
        weight.resident_bytes(),
        t_int8,
    );
    row("LLM.int8() (t = 6)", Some(rel_err(&y_llm, &y_f32)), out6.to_string(), weight.resident_bytes(), t_llm);
    println!();
    println!(
        "weight: {:.1} MiB as float16, {:.1} MiB as int8 + scales ({:.2}×); quantized in {:.0} ms",
        (2 * n * k) as f64 / 1048576.0,
        weight.resident_bytes() as f64 / 1048576.0,
        weight.resident_bytes() as f64 / (2 * n * k) as f64,
        t_quant * 1e3
    );
    println!("error = ‖y − y_f32‖ / ‖y_f32‖; time = best of {reps}.");
}
