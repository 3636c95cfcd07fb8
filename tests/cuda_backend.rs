//! The CUDA backend against the CPU backend, bit for bit: every output byte and
//! outlier count of the matmul, and the quantized weight, over shapes that are
//! not multiples of anything, every dtype pair, thresholds 6 and 0, bias or
//! not, float16 input rounding, outlier counts past the gathered limit, the
//! few-row (decode) path and the chunked GEMM; errors and concurrency too.
//!
//! It runs on the emulated GPU of tests/cuda_emu/fake_cuda.cpp (llmint8's real
//! CUDA backend, its kernels executed on the CPU, a strict driver and
//! cuBLASLt around them), or on the machine's GPU with
//! `LLMINT8_TEST_BACKEND=cuda` (scripts/gpu-check.sh).

mod common;

use common::{activations_with_outliers, cuda_context, on_cuda, Owned, Rng};
use llmint8::{Context, DType, Data, DataMut, Status};
use llmint8::{InputRounding, RowScale};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn raw_bytes(v: &Owned) -> Vec<u8> {
    match v {
        Owned::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Owned::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Owned::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Runs the matmul on both backends and checks every output byte and the
/// outlier count agree; returns the count.
fn assert_same_matmul(
    (cuda, cpu): (&Context, &Context),
    (w_gpu, w_cpu): (&llmint8::Weight, &llmint8::Weight),
    x: &Owned,
    rows: usize,
    threshold: f32,
    y_dtype: DType,
    what: &str,
) -> usize {
    let n = w_gpu.out_features();
    let mut y_gpu = Owned::zeros(y_dtype, rows * n);
    let mut y_cpu = Owned::zeros(y_dtype, rows * n);
    let s_gpu = cuda.matmul(w_gpu, x.data(), rows, threshold, y_gpu.data_mut()).unwrap();
    let s_cpu = cpu.matmul(w_cpu, x.data(), rows, threshold, y_cpu.data_mut()).unwrap();
    assert_eq!(s_gpu.outlier_columns, s_cpu.outlier_columns, "outlier count, {what}");
    assert!(raw_bytes(&y_gpu) == raw_bytes(&y_cpu), "outputs differ, {what}");
    s_gpu.outlier_columns
}

struct Case {
    rows: usize,
    k: usize,
    n: usize,
    outliers: usize,
}

/// One weight, quantized by both backends from the same values; checks the
/// quantized weights agree, then every (x dtype, y dtype) pair of matmuls at
/// each threshold. With `keep`, the weight keeps every other outlier column
/// of X and one column that is none in its source dtype. Returns the number
/// of matmuls compared.
fn compare(
    (cuda, cpu): (&Context, &Context),
    case: &Case,
    w_dtype: DType,
    with_bias: bool,
    keep: bool,
    rng: &mut Rng,
) -> usize {
    let Case { rows, k, n, outliers } = *case;
    let tag = format!("[{rows} x {k}]·[{n} x {k}]ᵀ, {outliers} outlier columns, W {w_dtype:?}, bias {with_bias}");
    let w = Owned::from_f32(w_dtype, &rng.normals(n * k, 0.05));
    let bias = with_bias.then(|| Owned::from_f32(w_dtype, &rng.normals(n, 0.1)));
    let xv = activations_with_outliers(rng, rows, k, outliers);
    let outlier_columns: Vec<u32> =
        (0..k as u32).filter(|&c| (0..rows).any(|i| xv[i * k + c as usize].abs() >= 6.0)).collect();
    let mut kept: Vec<u32> = if keep { outlier_columns.iter().copied().step_by(2).collect() } else { Vec::new() };
    kept.extend((0..k as u32).find(|c| keep && !outlier_columns.contains(c)));
    let bias_data = bias.as_ref().map(Owned::data);
    let w_gpu = cuda.quantize_weight_keep(w.data(), n, k, bias_data, &kept).unwrap();
    let w_cpu = cpu.quantize_weight_keep(w.data(), n, k, bias_data, &kept).unwrap();
    assert_eq!(w_gpu.cb().unwrap(), w_cpu.cb().unwrap(), "CB, {tag}");
    assert_eq!(common::bits(w_gpu.scb()), common::bits(w_cpu.scb()), "SCB, {tag}");
    assert_eq!(w_gpu.kept_columns(), w_cpu.kept_columns(), "kept columns, {tag}");
    if keep {
        // The kept values are on the device (and its slot table, 4 bytes per column of W).
        let plain = cuda.quantize_weight(w.data(), n, k, bias_data).unwrap();
        let extra = kept.len() * n * w_dtype.size() + 4 * k;
        assert_eq!(w_gpu.memory().device_bytes, plain.memory().device_bytes + extra, "memory, {tag}");
    }
    let mut compared = 0;
    for (i, &x_dtype) in DTYPES.iter().enumerate() {
        let x = Owned::from_f32(x_dtype, &xv);
        for y_dtype in [DTYPES[(i + rows) % 3], DTYPES[(i + rows + 1) % 3]] {
            // Both row scale rules (at threshold 0 they are one).
            for (threshold, rule) in
                [(6.0f32, RowScale::BitsAndBytes), (6.0, RowScale::Int8Part), (0.0, RowScale::Int8Part)]
            {
                cuda.set_row_scale(rule);
                cpu.set_row_scale(rule);
                let what = format!("{tag}, x {x_dtype:?}, y {y_dtype:?}, threshold {threshold}, {rule:?}");
                assert_same_matmul((cuda, cpu), (&w_gpu, &w_cpu), &x, rows, threshold, y_dtype, &what);
                compared += 1;
            }
        }
    }
    compared
}

#[test]
fn matmul_is_bit_identical_to_the_cpu_backend() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        let mut rng = Rng::new(11);
        // Rows 1…16 take the one-block decode path, more the separate launches;
        // 70 outlier columns exceed the 64 that are gathered.
        let cases = [
            Case { rows: 1, k: 16, n: 16, outliers: 1 },
            Case { rows: 1, k: 5, n: 7, outliers: 0 },
            Case { rows: 2, k: 1000, n: 33, outliers: 3 },
            Case { rows: 4, k: 256, n: 300, outliers: 2 },
            Case { rows: 16, k: 130, n: 77, outliers: 70 },
            Case { rows: 17, k: 61, n: 48, outliers: 1 },
            Case { rows: 33, k: 512, n: 100, outliers: 4 },
            Case { rows: 40, k: 200, n: 130, outliers: 70 },
        ];
        let mut compared = 0;
        for (i, case) in cases.iter().enumerate() {
            compared += compare((&cuda, &cpu), case, DTYPES[i % 3], i % 2 == 0, false, &mut rng);
        }
        assert_eq!(compared, cases.len() * 18);
    });
}

/// Weights that keep columns in their source dtype: the kept values replace
/// the dequantized int8 columns on the device as on the CPU — in the one-block
/// decode path (the epilogue reads them), the separate launches (gathered
/// into `w_out`) and past the gathered limit (read in the epilogue).
#[test]
fn kept_weight_columns_are_bit_identical_to_the_cpu_backend() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        let mut rng = Rng::new(14);
        let cases = [
            Case { rows: 1, k: 100, n: 40, outliers: 3 },
            Case { rows: 16, k: 130, n: 77, outliers: 70 },
            Case { rows: 17, k: 61, n: 48, outliers: 4 },
            Case { rows: 40, k: 200, n: 130, outliers: 70 },
        ];
        for (i, case) in cases.iter().enumerate() {
            compare((&cuda, &cpu), case, DTYPES[i % 3], i % 2 == 1, true, &mut rng);
        }
        // The kept values are read: a kept weight's output differs from the plain one's.
        let (k, n) = (64, 32);
        let w = rng.normals(n * k, 0.05);
        let x = Owned::from_f32(DType::F32, &activations_with_outliers(&mut rng, 2, k, 2));
        let kept: Vec<u32> = (0..k as u32).collect();
        let outputs: Vec<Vec<u8>> = [&kept[..], &[]]
            .iter()
            .map(|keep| {
                let weight = cuda.quantize_weight_keep(llmint8::Data::F32(&w), n, k, None, keep).unwrap();
                let mut y = Owned::zeros(DType::F32, 2 * n);
                cuda.matmul(&weight, x.data(), 2, 6.0, y.data_mut()).unwrap();
                raw_bytes(&y)
            })
            .collect();
        assert_ne!(outputs[0], outputs[1]);
    });
}

#[test]
fn float16_input_rounding_is_bit_identical_to_the_cpu_backend() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        cuda.set_input_rounding(InputRounding::Float16);
        cpu.set_input_rounding(InputRounding::Float16);
        let mut rng = Rng::new(12);
        for (i, case) in [Case { rows: 3, k: 100, n: 20, outliers: 2 }, Case { rows: 20, k: 64, n: 40, outliers: 1 }]
            .iter()
            .enumerate()
        {
            compare((&cuda, &cpu), case, DType::F32, i == 0, false, &mut rng);
        }
    });
}

/// Many rows against many weight rows: the int32 accumulators exceed the
/// budget for one GEMM, so the weight's rows are taken in chunks.
#[test]
fn a_gemm_too_large_for_one_accumulator_buffer_is_chunked_exactly() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        let mut rng = Rng::new(13);
        let (rows, k, n) = (4100, 8, 4200);
        let w = Owned::from_f32(DType::F16, &rng.normals(n * k, 0.05));
        let x = Owned::from_f32(DType::F16, &activations_with_outliers(&mut rng, rows, k, 1));
        let w_gpu = cuda.quantize_weight(w.data(), n, k, None).unwrap();
        let w_cpu = cpu.quantize_weight(w.data(), n, k, None).unwrap();
        let outliers = assert_same_matmul((&cuda, &cpu), (&w_gpu, &w_cpu), &x, rows, 6.0, DType::F16, "chunked GEMM");
        assert_eq!(outliers, 1);
    });
}

#[test]
fn checkpoint_weights_upload_and_export_unchanged() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        let mut rng = Rng::new(14);
        let (n, k) = (37, 50);
        let cb: Vec<i8> = (0..n * k).map(|_| (rng.below(255) as i32 - 127) as i8).collect();
        let scb: Vec<f32> = (0..n).map(|_| 0.01 + rng.uniform() as f32).collect();
        let w_gpu = cuda.weight_from_int8(&cb, &scb, n, k, None).unwrap();
        let w_cpu = cpu.weight_from_int8(&cb, &scb, n, k, None).unwrap();
        assert_eq!(w_gpu.cb().unwrap(), cb);
        // Values and scales on the device (CB padded for the kernels); the host keeps the scales.
        let memory = w_gpu.memory();
        assert_eq!(memory.host_bytes, 4 * n);
        assert!(memory.device_bytes >= n * k + 4 * n, "{memory:?}");
        let (mut cb_out, mut scb_out) = (vec![0i8; n * k], vec![0f32; n]);
        w_gpu.export(&mut cb_out, &mut scb_out).unwrap();
        assert_eq!((cb_out, common::bits(&scb_out)), (cb, common::bits(&scb)));
        let x = Owned::from_f32(DType::BF16, &activations_with_outliers(&mut rng, 9, k, 1));
        assert_same_matmul((&cuda, &cpu), (&w_gpu, &w_cpu), &x, 9, 6.0, DType::F32, "checkpoint weight");
    });
}

#[test]
fn bad_weights_and_shapes_get_the_cpu_backends_errors() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        let mut w = vec![0.5f32; 8 * 20];
        w[5 * 20 + 3] = f32::NAN;
        let e_gpu = cuda.quantize_weight(llmint8::Data::F32(&w), 8, 20, None).unwrap_err();
        let e_cpu = cpu.quantize_weight(llmint8::Data::F32(&w), 8, 20, None).unwrap_err();
        assert_eq!(e_gpu.status(), e_cpu.status());
        assert!(e_gpu.to_string().contains("row 5"), "{e_gpu}");
        // Kept columns outside the shape, or listed twice: the CPU's refusal.
        for keep in [&[20u32][..], &[3, 3]] {
            let e = cuda.quantize_weight_keep(llmint8::Data::F32(&[0.5; 8 * 20]), 8, 20, None, keep).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        }
        // Rows too long for int32 accumulation are refused on CUDA only.
        let k = (1 << 17) + 1;
        let cb = vec![1i8; k];
        let e = cuda.weight_from_int8(&cb, &[1.0], 1, k, None).unwrap_err();
        assert_eq!(e.status(), Status::Unsupported, "{e}");
        assert!(cpu.weight_from_int8(&cb, &[1.0], 1, k, None).is_ok());
        // A CPU weight on a CUDA context, and the other way round.
        let w_cpu = cpu.quantize_weight(llmint8::Data::F32(&[1.0; 4]), 1, 4, None).unwrap();
        let w_gpu = cuda.quantize_weight(llmint8::Data::F32(&[1.0; 4]), 1, 4, None).unwrap();
        let mut y = [0f32; 1];
        let e = cuda.matmul(&w_cpu, llmint8::Data::F32(&[1.0; 4]), 1, 6.0, llmint8::DataMut::F32(&mut y)).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        let e = cpu.matmul(&w_gpu, llmint8::Data::F32(&[1.0; 4]), 1, 6.0, llmint8::DataMut::F32(&mut y)).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        // Zero rows: nothing to do.
        let stats = cuda.matmul(&w_gpu, llmint8::Data::F32(&[]), 0, 6.0, llmint8::DataMut::F32(&mut [])).unwrap();
        assert_eq!(stats.outlier_columns, 0);
    });
}

#[test]
fn a_weight_on_one_device_is_refused_by_a_context_on_another() {
    on_cuda(|| {
        if common::real_gpu() && llmint8::Context::new(llmint8::Backend::Cuda, 1).is_err() {
            println!("one GPU: nothing to check");
            return;
        }
        let (d0, d1) = (cuda_context(0), cuda_context(1));
        let w0 = d0.quantize_weight(llmint8::Data::F32(&[1.0; 4]), 1, 4, None).unwrap();
        let mut y = [0f32; 1];
        let e = d1.matmul(&w0, llmint8::Data::F32(&[1.0; 4]), 1, 6.0, llmint8::DataMut::F32(&mut y)).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        assert!(e.to_string().contains("device 0"), "{e}");
        // Each device computes with its own weights.
        let w1 = d1.quantize_weight(llmint8::Data::F32(&[1.0, 2.0, 3.0, 4.0]), 1, 4, None).unwrap();
        d1.matmul(&w1, llmint8::Data::F32(&[1.0; 4]), 1, 6.0, llmint8::DataMut::F32(&mut y)).unwrap();
        assert!((y[0] - 10.0).abs() < 0.1, "{}", y[0]);
    });
}

#[test]
fn threads_sharing_a_context_and_a_weight_get_the_cpu_results() {
    on_cuda(|| {
        let cuda = cuda_context(0);
        let cpu = Context::cpu();
        let mut rng = Rng::new(15);
        let (k, n) = (96, 40);
        let w = Owned::from_f32(DType::F16, &rng.normals(n * k, 0.05));
        let w_gpu = cuda.quantize_weight(w.data(), n, k, None).unwrap();
        let w_cpu = cpu.quantize_weight(w.data(), n, k, None).unwrap();
        let inputs: Vec<(usize, Owned)> = (0..6)
            .map(|t| {
                let rows = 1 + t * 7;
                (rows, Owned::from_f32(DType::F16, &activations_with_outliers(&mut rng, rows, k, t % 3)))
            })
            .collect();
        std::thread::scope(|s| {
            for (rows, x) in &inputs {
                let (cuda, cpu, w_gpu, w_cpu) = (&cuda, &cpu, &w_gpu, &w_cpu);
                s.spawn(move || {
                    for _ in 0..3 {
                        let what = format!("rows {rows}");
                        assert_same_matmul((cuda, cpu), (w_gpu, w_cpu), x, *rows, 6.0, DType::BF16, &what);
                    }
                });
            }
        });
    });
}

/// The emulated driver's counters (launches, GEMMs, memsets, allocations,
/// synchronizations, host copies) so far, read through its own export.
fn emulated_counters() -> [u64; 6] {
    // SAFETY: the export has this signature.
    let counters = unsafe {
        std::mem::transmute::<*mut libc::c_void, extern "C" fn(*mut u64)>(emulated_symbol(
            c"llmint8_fake_cuda_counters",
        ))
    };
    let mut out = [0u64; 6];
    counters(out.as_mut_ptr());
    out
}

/// Weights that share an input save the launches before the GEMM: a decode
/// step of q/k/v (one-block prep) and a prefill of gate/up (separate
/// launches) on the emulated GPU, with the bits of separate calls.
#[test]
fn weights_sharing_an_input_save_the_launches_before_the_gemm() {
    if common::real_gpu() {
        return; // the counters are the emulated driver's
    }
    on_cuda(|| {
        let cuda = cuda_context(0);
        let mut rng = Rng::new(15);
        let k = 96;
        let weights: Vec<llmint8::Weight> = [64usize, 32, 32]
            .iter()
            .map(|&n| cuda.quantize_weight(llmint8::Data::F32(&rng.normals(n * k, 0.05)), n, k, None).unwrap())
            .collect();
        let refs: Vec<&llmint8::Weight> = weights.iter().collect();
        // Before the GEMM: one block (decode, unless LLMINT8_CUDA_PREP=separate), else the int8-part
        // rule's two quantize passes, the outlier list and the gather.
        let one_block = std::env::var("LLMINT8_CUDA_PREP").as_deref() != Ok("separate");
        for (rows, prep_launches) in [(1usize, if one_block { 1u64 } else { 4 }), (40, 4)] {
            let x = Owned::from_f32(DType::F16, &activations_with_outliers(&mut rng, rows, k, 2));
            let before = emulated_counters();
            let mut separate: Vec<Owned> = Vec::new();
            for w in &weights {
                let mut y = Owned::zeros(DType::F32, rows * w.out_features());
                cuda.matmul(w, x.data(), rows, 6.0, y.data_mut()).unwrap();
                separate.push(y);
            }
            let between = emulated_counters();
            let mut shared: Vec<Owned> =
                weights.iter().map(|w| Owned::zeros(DType::F32, rows * w.out_features())).collect();
            let mut outs: Vec<llmint8::DataMut<'_>> = shared.iter_mut().map(Owned::data_mut).collect();
            cuda.matmul_shared_input(&refs, x.data(), rows, 6.0, &mut outs).unwrap();
            let after = emulated_counters();
            for (a, b) in separate.iter().zip(&shared) {
                assert!(raw_bytes(a) == raw_bytes(b), "rows {rows}: shared-input outputs differ");
            }
            let launches = |from: [u64; 6], to: [u64; 6]| to[0] - from[0];
            let (alone, together) = (launches(before, between), launches(between, after));
            // Each weight: its prep, (its column gather,) its epilogue; together the prep once.
            assert_eq!(alone - together, 2 * prep_launches, "rows {rows}: {alone} launches alone, {together} together");
            assert_eq!(between[1] - before[1], after[1] - between[1], "the same GEMMs");
            println!("rows {rows}: {alone} kernel launches as separate calls, {together} sharing the input");
        }
    });
}

/// A smoothed weight costs no launch: the kernels that read X take its `1/s`
/// as one more parameter. Decode (one-block prep) and prefill (separate
/// launches), plain and shared-input calls: the same launches and GEMMs.
#[test]
fn a_smoothed_weight_adds_no_launch() {
    if common::real_gpu() {
        return; // the counters are the emulated driver's
    }
    on_cuda(|| {
        let cuda = cuda_context(0);
        let mut rng = Rng::new(16);
        let k = 96;
        let s: Vec<f32> = (0..k).map(|c| 0.5 + (c % 4) as f32 * 0.5).collect();
        let make = |smoothing: Option<&[f32]>, rng: &mut Rng| -> Vec<llmint8::Weight> {
            let options = llmint8::WeightOptions { smoothing, ..Default::default() };
            [48usize, 16]
                .iter()
                .map(|&n| {
                    cuda.quantize_weight_with(llmint8::Data::F32(&rng.normals(n * k, 0.05)), n, k, None, &options)
                        .unwrap()
                })
                .collect()
        };
        let (plain, smoothed) = (make(None, &mut rng), make(Some(&s), &mut rng));
        for rows in [1usize, 40] {
            let x = Owned::from_f32(DType::F32, &activations_with_outliers(&mut rng, rows, k, 2));
            let mut counts = Vec::new();
            for weights in [&plain, &smoothed] {
                let before = emulated_counters();
                let mut y = Owned::zeros(DType::F32, rows * 48);
                cuda.matmul(&weights[0], x.data(), rows, 6.0, y.data_mut()).unwrap();
                let refs: Vec<&llmint8::Weight> = weights.iter().collect();
                let mut ys: Vec<Owned> =
                    weights.iter().map(|w| Owned::zeros(DType::F32, rows * w.out_features())).collect();
                let mut outs: Vec<llmint8::DataMut<'_>> = ys.iter_mut().map(Owned::data_mut).collect();
                cuda.matmul_shared_input(&refs, x.data(), rows, 6.0, &mut outs).unwrap();
                let after = emulated_counters();
                counts.push((after[0] - before[0], after[1] - before[1]));
            }
            assert_eq!(counts[0], counts[1], "rows {rows}: (launches, GEMMs) plain against smoothed");
        }
    });
}

/// A symbol of the emulated driver (already loaded by a context: dlopen
/// returns the same handle).
fn emulated_symbol(name: &std::ffi::CStr) -> *mut libc::c_void {
    let path = std::ffi::CString::new(std::env::var("LLMINT8_LIBCUDA").unwrap()).unwrap();
    // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is left open
    // (the library stays loaded for the process anyway).
    unsafe {
        let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!lib.is_null(), "cannot reach the emulated driver");
        let f = libc::dlsym(lib, name.as_ptr());
        assert!(!f.is_null(), "the emulated driver lacks {name:?}");
        f
    }
}

/// A host-memory call whose copy back fails after other copies were queued
/// waits for them before it returns: with page-locked buffers (truly
/// asynchronous on a GPU, and in the emulated driver) nothing reads the
/// caller's input or writes its outputs once the error is back.
#[test]
fn a_failed_host_memory_call_leaves_no_copy_pending_on_the_callers_buffers() {
    if common::real_gpu() {
        return; // the injected failure and page-locked model are the emulated driver's
    }
    on_cuda(|| {
        let cuda = cuda_context(0);
        // SAFETY: the emulated driver's exports, with these signatures.
        let (host_alloc, free_host, fail_call) = unsafe {
            (
                std::mem::transmute::<*mut libc::c_void, extern "C" fn(*mut *mut libc::c_void, usize, u32) -> i32>(
                    emulated_symbol(c"cuMemHostAlloc"),
                ),
                std::mem::transmute::<*mut libc::c_void, extern "C" fn(*mut libc::c_void) -> i32>(emulated_symbol(
                    c"cuMemFreeHost",
                )),
                std::mem::transmute::<*mut libc::c_void, extern "C" fn(*const libc::c_char, i32, i32)>(
                    emulated_symbol(c"llmint8_fake_cuda_fail_call"),
                ),
            )
        };
        let pinned = |len: usize| -> &'static mut [f32] {
            let mut p = std::ptr::null_mut();
            assert_eq!(host_alloc(&mut p, 4 * len, 0), 0);
            // SAFETY: `len` f32 of fresh page-locked memory, freed below.
            unsafe { std::slice::from_raw_parts_mut(p.cast::<f32>(), len) }
        };
        let (rows, k, n) = (5, 64, 40);
        let mut rng = Rng::new(31);
        let weights: Vec<llmint8::Weight> =
            (0..2).map(|_| cuda.quantize_weight(Data::F32(&rng.normals(n * k, 0.1)), n, k, None).unwrap()).collect();
        let refs: Vec<&llmint8::Weight> = weights.iter().collect();
        let x = pinned(rows * k);
        x.copy_from_slice(&activations_with_outliers(&mut rng, rows, k, 1));
        let (y1, y2) = (pinned(rows * n), pinned(rows * n));
        // The bits a call that succeeds gives the first output.
        cuda.matmul_shared_input(&refs, Data::F32(x), rows, 6.0, &mut [DataMut::F32(y1), DataMut::F32(y2)]).unwrap();
        let want = y1.to_vec();
        y1.fill(f32::NAN);
        // The second output's copy back fails: the input's copy up and the
        // first output's copy back were queued by then.
        fail_call(c"cuMemcpyDtoHAsync".as_ptr(), 1, 1);
        let e = cuda
            .matmul_shared_input(&refs, Data::F32(x), rows, 6.0, &mut [DataMut::F32(y1), DataMut::F32(y2)])
            .unwrap_err();
        assert_eq!(e.status(), llmint8::Status::Device, "{e}");
        assert_eq!(common::bits(y1), common::bits(&want), "the first output's copy had not run when the call returned");
        // The caller owns its buffers again: whatever it does with them now,
        // nothing of the failed call touches them (a pending copy would
        // overwrite the marker, or read the freed input and abort here).
        y1.fill(-1.0);
        assert_eq!(free_host(x.as_mut_ptr().cast()), 0);
        cuda.synchronize().unwrap();
        assert!(y1.iter().all(|&v| v == -1.0), "a copy of the failed call wrote the caller's output after it returned");
        // And the context still works.
        let x = activations_with_outliers(&mut rng, rows, k, 1);
        let mut y = vec![0.0f32; rows * n];
        cuda.matmul(&weights[0], Data::F32(&x), rows, 6.0, DataMut::F32(&mut y)).unwrap();
        assert_eq!(free_host(y1.as_mut_ptr().cast()), 0);
        assert_eq!(free_host(y2.as_mut_ptr().cast()), 0);
    });
}
