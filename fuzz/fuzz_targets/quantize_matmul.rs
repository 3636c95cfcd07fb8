//! Fuzz target for quantize + matmul against the f64 reference, and for
//! smoothed weights against the plain product of the smoothed operands; the
//! properties are in fuzz/matmul_check.rs. Run from fuzz/ (see the README):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run quantize_matmul corpus/quantize_matmul`

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/reference.rs"]
#[allow(dead_code)] // the target uses part of the reference
mod reference;

include!("../matmul_check.rs");

fuzz_target!(|data: &[u8]| {
    check_matmul_input(data);
    check_smoothed_input(data);
});
