//! Replays the fuzz corpora committed under fuzz/corpus/ through the fuzz
//! targets' properties, so every input the fuzzers kept — including any that
//! once crashed — is checked in every test run, without libFuzzer.

use std::path::Path;

#[path = "common/reference.rs"]
#[allow(dead_code)] // the tests use part of the reference
mod reference;

include!("../fuzz/loader_check.rs");
include!("../fuzz/matmul_check.rs");

fn replay(target: &str, check: fn(&[u8]), at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
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
    replay("safetensors_loader", check_loader_input, 7);
}

#[test]
fn the_matmul_corpus_holds_the_fuzz_property() {
    replay("quantize_matmul", check_matmul_input, 8);
}
