//! Replays the fuzz corpus committed under fuzz/corpus/ through the fuzz
//! targets' properties, so every input the fuzzer kept — including those that
//! once crashed — is checked in every test run, without libFuzzer.

use std::path::Path;

include!("../fuzz/checks.rs");

#[test]
fn the_loader_corpus_holds_the_fuzz_property() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/safetensors_loader");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check_loader_input(&data));
        assert!(outcome.is_ok(), "{} breaks the loader's fuzz property", path.display());
        count += 1;
    }
    assert!(count >= 7, "the corpus has only {count} inputs");
}
