//! Many threads on one context: results bit-identical to single-threaded calls,
//! weights built and dropped while other weights are in use, layers loaded from
//! one open checkpoint by many threads, and each thread's last-error message its own.

mod common;

use std::ffi::CStr;
use std::ptr;

use common::{activations_with_outliers, Owned, Rng};
use llmint8::ffi::*;
use llmint8::{Context, DType, Data};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

#[test]
fn eight_threads_a_thousand_calls_each_match_single_threaded_results() {
    let ctx = Context::cpu();
    let (k, n) = (257, 67);
    let mut rng = Rng::new(8);
    let weight = ctx.quantize_weight(Data::F32(&rng.normals(n * k, 0.05)), n, k, None).unwrap();
    // 64 distinct calls: rows 0..=8, every dtype pair, thresholds 0 and 6.
    struct Call {
        x: Owned,
        rows: usize,
        threshold: f32,
        y_dtype: DType,
        want: Vec<u8>,
    }
    ctx.set_num_threads(1);
    let calls: Vec<Call> = (0..64)
        .map(|i| {
            let rows = rng.below(9);
            let x = Owned::from_f32(DTYPES[i % 3], &activations_with_outliers(&mut rng, rows, k, 2));
            let (threshold, y_dtype) = (if i % 2 == 0 { 6.0 } else { 0.0 }, DTYPES[(i / 3) % 3]);
            let mut y = Owned::zeros(y_dtype, rows * n);
            ctx.matmul(&weight, x.data(), rows, threshold, y.data_mut()).unwrap();
            Call { x, rows, threshold, y_dtype, want: y.bytes() }
        })
        .collect();
    ctx.set_num_threads(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (ctx, weight, calls) = (&ctx, &weight, &calls);
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..1000 {
                    let c = &calls[rng.below(calls.len())];
                    let mut y = Owned::zeros(c.y_dtype, c.rows * n);
                    ctx.matmul(weight, c.x.data(), c.rows, c.threshold, y.data_mut()).unwrap();
                    assert!(y.bytes() == c.want, "thread {t}: result differs from the single-threaded one");
                }
            });
        }
    });
}

#[test]
fn weights_come_and_go_while_others_are_in_use() {
    let ctx = Context::cpu();
    let mut rng = Rng::new(9);
    let (k, n) = (128, 48);
    let w = rng.normals(n * k, 0.05);
    let x = activations_with_outliers(&mut rng, 4, k, 1);
    let shared = ctx.quantize_weight(Data::F32(&w), n, k, None).unwrap();
    let mut want = vec![0.0f32; 4 * n];
    ctx.matmul(&shared, Data::F32(&x), 4, 6.0, llmint8::DataMut::F32(&mut want)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (ctx, shared, x, w, want) = (&ctx, &shared, &x, &w, &want);
            s.spawn(move || {
                for i in 0..200 {
                    if t % 2 == 0 {
                        let mut y = vec![0.0f32; 4 * n];
                        ctx.matmul(shared, Data::F32(x), 4, 6.0, llmint8::DataMut::F32(&mut y)).unwrap();
                        assert_eq!(&y, want);
                    } else {
                        let own = ctx.quantize_weight(Data::F32(w), n, k, None).unwrap();
                        assert_eq!(own.cb().unwrap(), shared.cb().unwrap(), "round {i}");
                        drop(own);
                    }
                }
            });
        }
    });
}

#[test]
fn many_threads_load_layers_from_one_checkpoint() {
    let ctx = Context::cpu();
    let dirs = ["tiny-llama-fp16", "bnb-models/llama-sharded-f16-int8"].map(|d| common::data_dir().join(d));
    let checkpoints: Vec<_> = dirs.iter().map(|d| llmint8::io::Checkpoint::open(d).unwrap()).collect();
    let layers: Vec<(usize, String)> = checkpoints
        .iter()
        .enumerate()
        .flat_map(|(c, ck)| {
            ck.tensors()
                .iter()
                .filter(|t| {
                    matches!(t.kind, llmint8::io::TensorKind::LinearWeight | llmint8::io::TensorKind::Int8Weight)
                })
                .map(move |t| (c, t.prefix().to_string()))
        })
        .collect();
    let want: Vec<Vec<i8>> =
        layers.iter().map(|(c, p)| ctx.load_weight(&checkpoints[*c], p).unwrap().cb().unwrap()).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (ctx, checkpoints, layers, want) = (&ctx, &checkpoints, &layers, &want);
            s.spawn(move || {
                for round in 0..20 {
                    let i = (t * 7 + round * 3) % layers.len();
                    let (c, prefix) = &layers[i];
                    let w = ctx.load_weight(&checkpoints[*c], prefix).unwrap();
                    assert_eq!(&w.cb().unwrap(), &want[i], "thread {t}, {prefix}");
                }
            });
        }
    });
}

#[test]
fn last_error_is_per_thread_through_the_c_abi() {
    let mut ctx = ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { llmint8_context_create(LLMINT8_BACKEND_CPU, 0, &mut ctx) }, LLMINT8_OK);
    let ctx_addr = ctx as usize;
    std::thread::scope(|s| {
        for t in 0..8usize {
            s.spawn(move || {
                let ctx = ctx_addr as *mut llmint8_context;
                for i in 0..500 {
                    // Each thread fails in its own way, then reads its own message.
                    let threads = if t % 2 == 0 { 99 } else { 0 };
                    let (status, needle) = if t % 2 == 0 {
                        // SAFETY: ctx is live for the whole scope; out is NULL on purpose.
                        (unsafe { llmint8_context_backend(ctx, ptr::null_mut()) }, "backend is NULL")
                    } else {
                        // SAFETY: an unknown dtype is refused before any pointer is read.
                        let s = unsafe {
                            llmint8_quantize_rows(
                                ctx,
                                ptr::null(),
                                7 + t as i32,
                                1,
                                1,
                                6.0,
                                ptr::null_mut(),
                                ptr::null_mut(),
                                ptr::null_mut(),
                                ptr::null_mut(),
                            )
                        };
                        (s, "unknown dtype")
                    };
                    assert_eq!(status, LLMINT8_ERR_INVALID_ARGUMENT, "thread {t} round {i}");
                    // SAFETY: llmint8_last_error returns a NUL-terminated string valid until this thread's next failure.
                    let msg = unsafe { CStr::from_ptr(llmint8_last_error()) }.to_string_lossy().into_owned();
                    assert!(msg.contains(needle), "thread {t} read another thread's message: {msg}");
                    if t % 2 == 1 {
                        assert!(msg.contains(&format!("{}", 7 + t)), "thread {t}: {msg}");
                    }
                    // A successful call in between leaves the message alone.
                    // SAFETY: ctx is live.
                    assert_eq!(unsafe { llmint8_context_set_num_threads(ctx, threads % 3) }, LLMINT8_OK);
                }
            });
        }
    });
    // SAFETY: created above, used by no one now.
    unsafe { llmint8_context_destroy(ctx) };
}
