//! Fuzz target for the safetensors loader; the property is in fuzz/checks.rs.
//! Run (see the README): `RUSTC_BOOTSTRAP=1 cargo fuzz run safetensors_loader
//! corpus/safetensors_loader -- -dict=safetensors.dict` from fuzz/.

#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../checks.rs");

fuzz_target!(|data: &[u8]| check_loader_input(data));
