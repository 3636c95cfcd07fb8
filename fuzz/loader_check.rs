// The loader's fuzz property, shared by the fuzz target
// (fuzz/fuzz_targets/safetensors_loader.rs) and the corpus replay test
// (tests/fuzz_corpus.rs), which runs it on the committed corpus in every test run.
//
// Arbitrary bytes as a safetensors file: parsing must either refuse them with a
// FORMAT error naming the file, or give tensors whose byte ranges are in bounds;
// loading any weight it names must succeed with the file's shape or fail with a
// status that is not INTERNAL — never panic, never read outside the buffer.
// A column-parallel shard (`load_weight_rows`) of a weight that loads loads
// too, holding exactly the whole weight's rows; one of a weight that does not
// load fails the same way or loads; a range that is empty or past the rows is
// refused with SHAPE. The same for a row-parallel shard (`load_weight_columns`):
// exactly the whole weight's columns and its whole SCB, the bias on the first.

/// Checks the property on one input; panics when it does not hold.
pub fn check_loader_input(data: &[u8]) {
    use llmint8::io::{Checkpoint, TensorKind};
    use llmint8::{Context, Status};

    let ckpt = match Checkpoint::from_bytes("fuzz.safetensors", data.to_vec()) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.status(), Status::Format, "{e}");
            assert!(e.message().starts_with("fuzz.safetensors: "), "{e}");
            return;
        }
    };
    let ctx = Context::cpu();
    ctx.set_num_threads(1);
    let mut total = 0usize;
    for t in ckpt.tensors() {
        let bytes = ckpt.bytes(t);
        assert_eq!(bytes.len(), t.num_bytes());
        total += bytes.len();
        if matches!(t.kind, TensorKind::LinearWeight | TensorKind::Int8Weight) {
            match ctx.load_weight(&ckpt, t.prefix()) {
                Ok(w) => {
                    assert_eq!([w.out_features(), w.in_features()], [t.shape[0], t.shape[1]]);
                    // The loaded weight must be usable.
                    let x = vec![0.5f32; w.in_features()];
                    let mut y = vec![0f32; w.out_features()];
                    ctx.matmul(&w, llmint8::Data::F32(&x), 1, 6.0, llmint8::DataMut::F32(&mut y)).unwrap();
                    let (n, k) = (w.out_features(), w.in_features());
                    let (cb, scb) = (w.cb().unwrap(), w.scb().to_vec());
                    for rows in [0..n / 2, n / 2..n, n - 1..n] {
                        if rows.is_empty() {
                            continue;
                        }
                        let shard = ctx.load_weight_rows(&ckpt, t.prefix(), rows.clone()).unwrap();
                        assert_eq!(shard.cb().unwrap(), cb[rows.start * k..rows.end * k], "{rows:?}");
                        assert_eq!(shard.scb(), &scb[rows.clone()], "{rows:?}");
                    }
                    for bad in [n..n, 0..n + 1, std::ops::Range { start: n, end: n - 1 }] {
                        let e = ctx.load_weight_rows(&ckpt, t.prefix(), bad).unwrap_err();
                        assert_eq!(e.status(), Status::Shape, "{e}");
                    }
                    // Row-parallel shards: exactly the whole weight's columns, its whole SCB.
                    for cols in [0..k / 2, k / 2..k, k - 1..k] {
                        if cols.is_empty() {
                            continue;
                        }
                        let shard = ctx.load_weight_columns(&ckpt, t.prefix(), cols.clone()).unwrap();
                        let want: Vec<i8> = cb.chunks_exact(k).flat_map(|row| row[cols.clone()].iter().copied()).collect();
                        assert_eq!(shard.cb().unwrap(), want, "{cols:?}");
                        assert_eq!(shard.scb(), &scb[..], "{cols:?}");
                        assert_eq!(shard.bias().is_some(), w.bias().is_some() && cols.start == 0);
                    }
                    for bad in [k..k, 0..k + 1, std::ops::Range { start: k, end: k - 1 }] {
                        let e = ctx.load_weight_columns(&ckpt, t.prefix(), bad).unwrap_err();
                        assert_eq!(e.status(), Status::Shape, "{e}");
                    }
                }
                Err(e) => {
                    assert_ne!(e.status(), Status::Internal, "{e}");
                    if let (Some(&n), true) = (t.shape.first(), t.shape.len() == 2) {
                        if n > 0 {
                            if let Err(e) = ctx.load_weight_rows(&ckpt, t.prefix(), 0..1) {
                                assert_ne!(e.status(), Status::Internal, "{e}");
                            }
                            if let Err(e) = ctx.load_weight_columns(&ckpt, t.prefix(), 0..1) {
                                assert_ne!(e.status(), Status::Internal, "{e}");
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(total <= data.len());
}
