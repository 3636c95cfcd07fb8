//! llmint8 against bitsandbytes' own outputs (tests/data, copied from
//! ../shared/golden; see tests/data/GOLDEN-README.md for the rules and tolerances).

mod common;

use common::{bits, data_dir, for_each_case, rel_err, Owned, Tensors};
use llmint8::DType;

#[test]
fn quantize_rows_matches_bitsandbytes_bit_for_bit() {
    let ctx = common::test_context();
    ctx.set_row_scale(llmint8::RowScale::BitsAndBytes);
    for_each_case("quant.safetensors", |t, case| {
        let name = &case.name;
        let x = t.float(&format!("{name}.x"));
        assert_eq!(x.dtype(), case.dtype, "{name}");
        let (m, k) = (case.m, case.k);
        let mut q = vec![0i8; m * k];
        let mut absmax = vec![0.0f32; m];
        let mut cols = vec![0u32; k];
        let n = ctx.quantize_rows(x.data(), m, k, case.threshold, &mut q, &mut absmax, Some(&mut cols)).unwrap();

        let want_q = t.i8s(&format!("{name}.CA"));
        let want_absmax = t.f32s(&format!("{name}.SCA"));
        let want_cols = t.i64s(&format!("{name}.outlier_cols"));
        assert_eq!(n, case.outlier_cols, "{name}: outlier column count");
        let got_cols: Vec<i64> = cols[..n].iter().map(|&c| c as i64).collect();
        assert_eq!(got_cols, want_cols, "{name}: outlier columns");
        assert_eq!(bits(&absmax), bits(&want_absmax), "{name}: SCA");
        let diffs = q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 0, "{name}: {diffs} of {} CA values differ", q.len());
    });
    // The int8-part rule differs from bitsandbytes' only in the scales of rows
    // whose outlier-column values are below the threshold: the same outlier
    // columns, never a larger scale, and somewhere in the set a smaller one.
    let int8_part = common::test_context();
    int8_part.set_row_scale(llmint8::RowScale::Int8Part);
    let mut smaller = 0;
    for_each_case("quant.safetensors", |t, case| {
        let (name, m, k) = (&case.name, case.m, case.k);
        let x = t.float(&format!("{name}.x"));
        let (mut q, mut absmax, mut cols) = (vec![0i8; m * k], vec![0.0f32; m], vec![0u32; k]);
        let n = int8_part.quantize_rows(x.data(), m, k, case.threshold, &mut q, &mut absmax, Some(&mut cols)).unwrap();
        assert_eq!(n, case.outlier_cols, "{name}: outlier column count");
        for (a, b) in absmax.iter().zip(t.f32s(&format!("{name}.SCA"))) {
            assert!(*a <= b || (a.is_nan() && b.is_nan()), "{name}: int8-part scale {a} above bitsandbytes' {b}");
            smaller += usize::from(*a < b);
        }
    });
    assert!(smaller > 0, "no row of the reference set got a smaller scale");
}

#[test]
fn weight_quantization_matches_bitsandbytes() {
    let ctx = common::test_context();
    for_each_case("linear.safetensors", |t, case| {
        let name = &case.name;
        let w = t.float(&format!("{name}.w"));
        let weight = ctx.quantize_weight(w.data(), case.n, case.k, None).unwrap();
        let mut cb = vec![0i8; case.n * case.k];
        let mut scb = vec![0.0f32; case.n];
        weight.export(&mut cb, &mut scb).unwrap();
        let want_cb = t.i8s(&format!("{name}.CB"));
        let want_scb = t.f32s(&format!("{name}.SCB"));
        if case.dtype == DType::F16 {
            // bitsandbytes quantizes float16 weights as they are: bit for bit.
            assert_eq!(cb, want_cb, "{name}: CB");
            assert_eq!(bits(&scb), bits(&want_scb), "{name}: SCB");
        } else {
            // bitsandbytes rounds other dtypes to float16 first; we quantize the
            // values themselves, so a few elements may move by one step.
            let max_step = cb.iter().zip(&want_cb).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
            let moved = cb.iter().zip(&want_cb).filter(|(a, b)| a != b).count();
            assert!(max_step <= 1, "{name}: CB differs by {max_step} steps");
            assert!(moved * 100 <= cb.len(), "{name}: {moved} of {} CB values moved", cb.len());
            for (a, b) in scb.iter().zip(&want_scb) {
                assert!((a - b).abs() <= b.abs() * 1e-3, "{name}: SCB {a} vs {b}");
            }
        }
    });
}

/// The tolerance of the reference README: 1e-3 for float16 cases, 5e-3 otherwise.
fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F16 {
        1e-3
    } else {
        5e-3
    }
}

#[test]
fn linear_forward_matches_bitsandbytes() {
    let ctx = common::test_context();
    ctx.set_row_scale(llmint8::RowScale::BitsAndBytes);
    for_each_case("linear.safetensors", |t, case| {
        let name = &case.name;
        let (m, k, n) = (case.m, case.k, case.n);
        let x = t.float(&format!("{name}.x"));
        let want = t.float(&format!("{name}.y"));
        let bias = case.bias.then(|| t.float(&format!("{name}.bias")));
        assert_eq!(t.has(&format!("{name}.bias")), case.bias);
        let bias_data = bias.as_ref().map(Owned::data);

        // Quantized by us from the dense weight, and taken as bitsandbytes stored it.
        let ours = ctx.quantize_weight(t.float(&format!("{name}.w")).data(), n, k, bias_data).unwrap();
        let theirs = ctx
            .weight_from_int8(&t.i8s(&format!("{name}.CB")), &t.f32s(&format!("{name}.SCB")), n, k, bias_data)
            .unwrap();
        for (label, weight) in [("quantized here", &ours), ("bitsandbytes CB/SCB", &theirs)] {
            let mut y = Owned::zeros(case.dtype, m * n);
            let stats = ctx.matmul(weight, x.data(), m, case.threshold, y.data_mut()).unwrap();
            assert_eq!(stats.outlier_columns, case.outlier_cols, "{name} ({label})");
            let err = rel_err(&y.to_f32(), &want.to_f32());
            eprintln!("{name} ({label}): relative error {err:.2e}");
            assert!(err <= tolerance(case.dtype), "{name} ({label}): relative error {err:.2e}");
        }
    });
}

#[test]
fn tiny_llama_layers_match_bitsandbytes_from_the_int8_checkpoint() {
    let ctx = common::test_context();
    ctx.set_row_scale(llmint8::RowScale::BitsAndBytes);
    let dir = data_dir().join("tiny-llama-int8");
    let model = Tensors::open(dir.join("model.safetensors"));
    let io = Tensors::open(dir.join("reference_io.safetensors"));
    for layer in ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"] {
        let cb = model.i8s(&format!("{layer}.weight"));
        let scb = model.f32s(&format!("{layer}.SCB"));
        let shape = model.shape(&format!("{layer}.weight"));
        let (n, k) = (shape[0], shape[1]);
        let weight = ctx.weight_from_int8(&cb, &scb, n, k, None).unwrap();
        let x = io.float(&format!("{layer}.x"));
        let want = io.float(&format!("{layer}.y"));
        let rows = x.len() / k;
        let mut y = Owned::zeros(DType::F16, rows * n);
        ctx.matmul(&weight, x.data(), rows, 6.0, y.data_mut()).unwrap();
        let err = rel_err(&y.to_f32(), &want.to_f32());
        eprintln!("{layer}: relative error {err:.2e}");
        assert!(err <= 1e-3, "{layer}: relative error {err:.2e}");
        // Same output whatever dtype we are asked to write, within f16 rounding.
        let mut y32 = vec![0.0f32; rows * n];
        ctx.matmul(&weight, x.data(), rows, 6.0, llmint8::DataMut::F32(&mut y32)).unwrap();
        assert!(rel_err(&y.to_f32(), &y32) < 1e-3);
    }
}

/// Where we deliberately differ from bitsandbytes (float32 and bfloat16 inputs
/// quantized from their own values, not rounded to float16 first; exact 1/127²;
/// the int8-part row scale), our output is as close to the exact product as
/// theirs (within 5%).
#[test]
fn deliberate_differences_cost_no_accuracy() {
    let ctx = common::test_context();
    for_each_case("linear.safetensors", |t, case| {
        if case.dtype == DType::F16 {
            return;
        }
        let name = &case.name;
        let (m, k, n) = (case.m, case.k, case.n);
        let x = t.float(&format!("{name}.x")).to_f32();
        let w = t.float(&format!("{name}.w")).to_f32();
        let bias = case.bias.then(|| t.float(&format!("{name}.bias")).to_f32());
        let exact: Vec<f32> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let dot: f64 = (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum();
                (dot + bias.as_ref().map_or(0.0, |b| b[j] as f64)) as f32
            })
            .collect();
        let weight =
            ctx.quantize_weight(llmint8::Data::F32(&w), n, k, bias.as_deref().map(llmint8::Data::F32)).unwrap();
        let mut y = vec![0.0f32; m * n];
        ctx.matmul(&weight, llmint8::Data::F32(&x), m, case.threshold, llmint8::DataMut::F32(&mut y)).unwrap();
        let ours = rel_err(&y, &exact);
        let theirs = rel_err(&t.float(&format!("{name}.y")).to_f32(), &exact);
        eprintln!("{name}: error against the exact product: llmint8 {ours:.2e}, bitsandbytes {theirs:.2e}");
        assert!(ours <= theirs * 1.05 + 1e-6, "{name}: llmint8 {ours:.2e} vs bitsandbytes {theirs:.2e}");
    });
}

/// With inputs rounded to float16 (`InputRounding::Float16`, what bitsandbytes'
/// Linear8bitLt does), float32 and bfloat16 weights give its CB and SCB bit for
/// bit too, and float32 outputs match its outputs to 1e-4.
#[test]
fn float16_input_rounding_reproduces_linear8bitlt_for_every_dtype() {
    let ctx = common::test_context();
    // The one-call mode sets what this needs, whatever was set before.
    ctx.set_row_scale(llmint8::RowScale::Int8Part);
    ctx.match_bitsandbytes();
    assert_eq!(ctx.input_rounding(), llmint8::InputRounding::Float16);
    assert_eq!(ctx.row_scale(), llmint8::RowScale::BitsAndBytes);
    for_each_case("linear.safetensors", |t, case| {
        let name = &case.name;
        let (m, k, n) = (case.m, case.k, case.n);
        let bias = case.bias.then(|| t.float(&format!("{name}.bias")));
        let weight =
            ctx.quantize_weight(t.float(&format!("{name}.w")).data(), n, k, bias.as_ref().map(Owned::data)).unwrap();
        assert_eq!(weight.cb().unwrap(), t.i8s(&format!("{name}.CB")), "{name}: CB");
        assert_eq!(bits(weight.scb()), bits(&t.f32s(&format!("{name}.SCB"))), "{name}: SCB");
        let x = t.float(&format!("{name}.x"));
        let mut y = Owned::zeros(case.dtype, m * n);
        ctx.matmul(&weight, x.data(), m, case.threshold, y.data_mut()).unwrap();
        let err = rel_err(&y.to_f32(), &t.float(&format!("{name}.y")).to_f32());
        eprintln!("{name} ({:?}, float16 rounding): relative error {err:.2e}", case.dtype);
        // float32 outputs: only the 1/127² constant differs (1.8e-5); bfloat16 and
        // float16 outputs carry their own rounding.
        let allowed = if case.dtype == DType::F32 { 1e-4 } else { tolerance(case.dtype) };
        assert!(err <= allowed, "{name}: relative error {err:.2e}");
    });
}
