//! Replays the fuzz corpora committed under fuzz/corpus/ and the inputs that
//! once failed (fuzz/regressions/) through the fuzz targets' properties, so
//! every one of them is checked in every test run, without libFuzzer.

use std::path::Path;

#[path = "common/reference.rs"]
#[allow(dead_code)] // the tests use part of the reference
mod reference;

include!("../fuzz/loader_check.rs");
include!("../fuzz/matmul_check.rs");

fn replay(set: &str, target: &str, check: fn(&[u8]), at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(set).join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} breaks the {target} fuzz property", path.display());
        count += 1;
    }
    assert!(count >= at_least, "the {target} corpus has only {count} inputs");
}

#[test]
fn the_loader_corpus_holds_the_fuzz_property() {
    replay("corpus", "safetensors_loader", check_loader_input, 7);
}

#[test]
fn the_matmul_corpus_holds_the_fuzz_property() {
    replay("corpus", "quantize_matmul", check_matmul_input, 8);
}

/// Each of these once failed: a dequantization overflow in the library (fixed),
/// and three tolerances of the property itself (kept so they stay right).
#[test]
fn inputs_that_once_failed_hold_the_matmul_property() {
    replay("regressions", "quantize_matmul", check_matmul_input, 6);
}

/// The same inputs read as a smoothed weight's call (`check_smoothed_input`).
#[test]
fn the_matmul_corpus_holds_the_smoothing_property() {
    replay("corpus", "quantize_matmul", check_smoothed_input, 8);
    replay("regressions", "quantize_matmul", check_smoothed_input, 6);
    // The committed corpus was grown for the plain property: a few hundred
    // seeded random inputs as well, without the escape byte 0x80 (an
    // arbitrary bit pattern: most would hold a NaN and stop at the refusal).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        let len = 64 + (state % 2048) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match (state >> 24) as u8 {
                    0x80 => 0x7f,
                    byte => byte,
                }
            })
            .collect();
        let outcome = std::panic::catch_unwind(|| check_smoothed_input(&data));
        assert!(outcome.is_ok(), "random input {data:?} breaks the smoothing property");
    }
}
