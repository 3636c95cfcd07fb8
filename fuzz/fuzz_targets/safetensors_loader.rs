//! Fuzz target for the safetensors loader; the property is in fuzz/loader_check.rs.
//! Run from fuzz/ (see the README):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run safetensors_loader corpus/safetensors_loader -- -dict=safetensors.dict`

#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../loader_check.rs");

fuzz_target!(|data: &[u8]| check_loader_input(data));
