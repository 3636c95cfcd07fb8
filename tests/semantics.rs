//! The cases the issue asks us to define: zero rows, NaN/Inf, bad weights and
//! scales, thresholds, empty calls, mismatched shapes.

mod common;

use llmint8::{bf16, f16, Backend, Context, DType, Data, DataMut, Location, Status};

fn weight(ctx: &Context, n: usize, k: usize, bias: Option<&[f32]>) -> llmint8::Weight {
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 23) as f32 - 11.0) / 10.0).collect();
    ctx.quantize_weight(Data::F32(&w), n, k, bias.map(Data::F32)).unwrap()
}

#[test]
fn a_zero_row_gives_scale_zero_and_the_bias() {
    let ctx = Context::cpu();
    let bias = [0.5f32, -1.25, 3.0];
    let w = weight(&ctx, 3, 4, Some(&bias));
    let x = [0.0f32, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0];
    for threshold in [0.0, 6.0] {
        let mut y = [9.0f32; 6];
        ctx.matmul(&w, Data::F32(&x), 2, threshold, DataMut::F32(&mut y)).unwrap();
        assert_eq!(&y[..3], &bias);
        let mut q = [1i8; 8];
        let mut a = [1.0f32; 2];
        ctx.quantize_rows(Data::F32(&x), 2, 4, threshold, &mut q, &mut a, None).unwrap();
        assert_eq!((&q[..4], a[0]), (&[0i8; 4][..], 0.0));
    }
    // A zero weight row: scale 0, output column = bias.
    let wz = [0.0f32, 0.0, 1.0, -1.0];
    let wz = ctx.quantize_weight(Data::F32(&wz), 2, 2, None).unwrap();
    assert_eq!(wz.scb(), &[0.0, 1.0]);
    let mut y = [9.0f32; 2];
    ctx.matmul(&wz, Data::F32(&[3.0, 1.0]), 1, 6.0, DataMut::F32(&mut y)).unwrap();
    assert_eq!(y[0], 0.0);
}

#[test]
fn nan_and_inf_in_x_propagate_like_a_float_matmul() {
    let ctx = Context::cpu();
    let (n, k) = (4, 5);
    let w = weight(&ctx, n, k, None);
    let mut x = vec![0.5f32; 3 * k];
    x[1] = f32::NAN; // row 0
    x[k + 2] = f32::INFINITY; // row 1
    for threshold in [6.0f32, f32::INFINITY] {
        let mut y = vec![0.0f32; 3 * n];
        let stats = ctx.matmul(&w, Data::F32(&x), 3, threshold, DataMut::F32(&mut y)).unwrap();
        assert_eq!(stats.outlier_columns, 2, "threshold {threshold}");
        assert!(y[..n].iter().all(|v| v.is_nan()), "NaN row: {:?}", &y[..n]);
        // Inf · w is ±Inf, or NaN where the dequantized weight is 0.
        for j in 0..n {
            let wv = w.dequantized(j, 2).unwrap();
            let v = y[n + j];
            if wv == 0.0 {
                assert!(v.is_nan());
            } else {
                assert!(v.is_infinite() && (v > 0.0) == (wv > 0.0), "{v} for weight {wv}");
            }
        }
        assert!(y[2 * n..].iter().all(|v| v.is_finite()), "clean row stays finite");
    }
    // Without decomposition the affected rows become NaN; the others stay finite.
    let mut y = vec![0.0f32; 3 * n];
    let stats = ctx.matmul(&w, Data::F32(&x), 3, 0.0, DataMut::F32(&mut y)).unwrap();
    assert_eq!(stats.outlier_columns, 0);
    assert!(y[..2 * n].iter().all(|v| v.is_nan()));
    assert!(y[2 * n..].iter().all(|v| v.is_finite()));
    let mut q = vec![0i8; 3 * k];
    let mut a = vec![0.0f32; 3];
    ctx.quantize_rows(Data::F32(&x), 3, k, 0.0, &mut q, &mut a, None).unwrap();
    assert!(a[0].is_nan() && a[1].is_nan() && a[2] == 0.5);
}

#[test]
fn an_infinite_threshold_keeps_large_finite_values_in_int8() {
    let ctx = Context::cpu();
    let x = [1e30f32, 1.0, -2.0, 65504.0];
    let mut q = [0i8; 4];
    let mut a = [0.0f32];
    let mut cols = [0u32; 4];
    let n = ctx.quantize_rows(Data::F32(&x), 1, 4, f32::INFINITY, &mut q, &mut a, Some(&mut cols)).unwrap();
    assert_eq!((n, a[0], q[0]), (0, 1e30, 127));
}

#[test]
fn non_finite_weights_and_bad_scales_are_refused_naming_the_row() {
    let ctx = Context::cpu();
    let mut w = vec![f16::from_f32(0.5); 4 * 3];
    w[2 * 3 + 1] = f16::INFINITY;
    let e = ctx.quantize_weight(Data::F16(&w), 4, 3, None).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("row 2"), "{e}");

    let wb = vec![bf16::NAN; 6];
    let e = ctx.quantize_weight(Data::BF16(&wb), 2, 3, None).unwrap_err();
    assert!(e.message().contains("row 0"), "{e}");

    let cb = vec![1i8; 6];
    for bad in [-1.0f32, f32::NAN, f32::INFINITY] {
        let e = ctx.weight_from_int8(&cb, &[1.0, bad], 2, 3, None).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("SCB[1]"), "{e}");
    }
    let e = ctx.weight_from_int8(&cb, &[1.0, 1.0], 2, 3, Some(Data::F32(&[0.0, f32::NAN]))).unwrap_err();
    assert!(e.message().contains("bias[1]"), "{e}");
}

#[test]
fn negative_or_nan_thresholds_are_refused() {
    let ctx = Context::cpu();
    let w = weight(&ctx, 2, 2, None);
    let mut y = [0.0f32; 2];
    for t in [-1.0f32, -0.0001, f32::NAN, f32::NEG_INFINITY] {
        let e = ctx.matmul(&w, Data::F32(&[1.0, 2.0]), 1, t, DataMut::F32(&mut y)).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{t}");
        let e = ctx.quantize_rows(Data::F32(&[1.0, 2.0]), 1, 2, t, &mut [0; 2], &mut [0.0], None).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{t}");
    }
}

#[test]
fn zero_rows_is_a_valid_call_that_does_nothing() {
    let ctx = Context::cpu();
    let w = weight(&ctx, 3, 4, None);
    let stats = ctx.matmul(&w, Data::F16(&[]), 0, 6.0, DataMut::BF16(&mut [])).unwrap();
    assert_eq!(stats.outlier_columns, 0);
    assert_eq!(ctx.quantize_rows(Data::F32(&[]), 0, 4, 6.0, &mut [], &mut [], None).unwrap(), 0);
}

#[test]
fn mismatched_and_zero_shapes_are_refused() {
    let ctx = Context::cpu();
    let w = weight(&ctx, 3, 4, None);
    let mut y = [0.0f32; 6];
    let e = ctx.matmul(&w, Data::F32(&[0.0; 7]), 2, 6.0, DataMut::F32(&mut y)).unwrap_err();
    assert_eq!(e.status(), Status::Shape);
    let e = ctx.matmul(&w, Data::F32(&[0.0; 8]), 2, 6.0, DataMut::F32(&mut y[..5])).unwrap_err();
    assert_eq!(e.status(), Status::Shape);
    let e = ctx.quantize_weight(Data::F32(&[]), 0, 4, None).unwrap_err();
    assert_eq!(e.status(), Status::Shape);
    let e = ctx.quantize_weight(Data::F32(&[1.0; 4]), usize::MAX, 2, None).unwrap_err();
    assert_eq!(e.status(), Status::Shape);
    let e = ctx.quantize_weight(Data::F32(&[1.0; 4]), 2, 2, Some(Data::F32(&[0.0; 3]))).unwrap_err();
    assert_eq!(e.status(), Status::Shape);
    let e = ctx.quantize_rows(Data::F32(&[0.0; 4]), 2, 0, 6.0, &mut [], &mut [0.0; 2], None).unwrap_err();
    assert_eq!(e.status(), Status::Shape);
}

#[test]
fn export_round_trips_and_from_int8_keeps_values() {
    let ctx = Context::cpu();
    let w = weight(&ctx, 5, 7, Some(&[1.0, 2.0, 3.0, 4.0, 5.0]));
    let mut cb = vec![0i8; 35];
    let mut scb = vec![0.0f32; 5];
    w.export(&mut cb, &mut scb).unwrap();
    let w2 = ctx.weight_from_int8(&cb, &scb, 5, 7, Some(Data::F32(w.bias().unwrap()))).unwrap();
    assert_eq!((w2.cb().unwrap(), w2.scb(), w2.bias()), (w.cb().unwrap(), w.scb(), w.bias()));
    assert_eq!(w.cb().unwrap(), cb);
    assert_eq!(w.location(), Location::Cpu);
    // The dequantized element is CB · SCB / 127; an index outside the shape is
    // an error, not a panic.
    let want = (cb[3 * 7 + 6] as f64 * scb[3] as f64 / 127.0) as f32;
    assert_eq!(w.dequantized(3, 6).unwrap().to_bits(), want.to_bits());
    assert_eq!(w.dequantized(5, 0).unwrap_err().status(), Status::InvalidArgument);
    assert_eq!(w.dequantized(0, 7).unwrap_err().status(), Status::InvalidArgument);
    // Resident: the int8 values (padded to 16 rows × 4 columns for the kernels),
    // and per output row a scale and a bias — no 16/32-bit copy.
    assert_eq!(w.resident_bytes(), 16 * 8 + 4 * 5 + 4 * 5);
    let big = weight(&ctx, 64, 4096, None);
    assert_eq!(big.resident_bytes(), 64 * 4096 + 4 * 64);
    assert_eq!(big.memory(), llmint8::WeightMemory { host_bytes: 64 * 4096 + 4 * 64, device_bytes: 0 });
    assert_eq!(w.export(&mut cb[..34], &mut scb).unwrap_err().status(), Status::Shape);
}

#[test]
fn backends_resolve_as_documented() {
    assert_eq!(Context::new(Backend::Auto, 0).unwrap().location(), Location::Cpu);
    assert_eq!(Context::new(Backend::Cpu, 1).unwrap_err().status(), Status::InvalidArgument);
    // Without a usable GPU a CUDA context is refused with NO_DEVICE, saying
    // what was looked for (tests/cuda_discovery.rs checks each case).
    match Context::new(Backend::Cuda, 0) {
        Ok(ctx) => assert_eq!(ctx.location(), Location::Cuda { device: 0 }),
        Err(e) => {
            assert_eq!(e.status(), Status::NoDevice, "{e}");
            assert!(e.to_string().contains("tried:") || e.to_string().contains("CUDA"), "{e}");
        }
    }
    assert_eq!(DType::from_code(3).unwrap_err().status(), Status::InvalidArgument);
    let ctx = Context::cpu();
    ctx.set_num_threads(3);
    assert_eq!(ctx.num_threads(), 3);
    ctx.set_num_threads(0);
    assert!(ctx.num_threads() >= 1);
}

/// `LLMINT8_CPU_PATH` is read once per process, so each value is tried in a
/// child process: this test binary running only this test, told what to expect.
#[test]
fn a_forced_cpu_path_is_used_or_refused_with_a_clear_error() {
    const CHILD: &str = "LLMINT8_TEST_CPU_PATH_EXPECT";
    if let Ok(expect) = std::env::var(CHILD) {
        let fastest = llmint8::CpuPath::best();
        match Context::new(Backend::Cpu, 0) {
            Ok(ctx) => assert_eq!(format!("ok {}", ctx.cpu_path().name()), expect),
            Err(e) => {
                let (status, words) = match expect.as_str() {
                    "invalid" => (Status::InvalidArgument, "names no CPU path (one of portable, avx2"),
                    "unsupported" => (Status::Unsupported, "this processor cannot run the"),
                    _ => panic!("expected {expect}, got {e:?}"),
                };
                assert_eq!(e.status(), status, "{e:?}");
                assert!(e.message().contains(words), "{e:?}");
                // The infallible constructor takes the fastest path instead.
                assert_eq!(Context::cpu().cpu_path(), fastest);
            }
        }
        return;
    }
    use llmint8::CpuPath;
    let runs = |p: CpuPath, name: &str| if p.is_available() { format!("ok {name}") } else { "unsupported".into() };
    let cases = [
        ("amx-model", "ok amx-model".to_string()),
        (" Portable ", "ok portable".to_string()),
        ("", format!("ok {}", CpuPath::best().name())),
        ("avx2", runs(CpuPath::Avx2, "avx2")),
        ("avx512vnni", runs(CpuPath::Avx512Vnni, "avx512vnni")),
        ("amx", runs(CpuPath::Amx, "amx")),
        ("avx-512", "invalid".to_string()),
    ];
    for (value, expect) in cases {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_forced_cpu_path_is_used_or_refused_with_a_clear_error", "--nocapture"])
            .env("LLMINT8_CPU_PATH", value)
            .env(CHILD, &expect)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "LLMINT8_CPU_PATH={value:?}, expected {expect}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
