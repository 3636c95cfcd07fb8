//! Generates the C header from src/ffi with cbindgen, and gives the shared
//! library a SONAME carrying the ABI major version.

use std::path::{Path, PathBuf};

/// The C ABI's major version: `abi-version` under `[package.metadata.llmint8]`
/// in Cargo.toml, the one place it is written.
fn abi_version(root: &Path) -> u32 {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let value = manifest
        .lines()
        .find_map(|l| l.strip_prefix("abi-version = "))
        .expect("Cargo.toml has no `abi-version = N` under [package.metadata.llmint8]");
    value.trim().parse().expect("abi-version is a whole number")
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=LLMINT8_WRITE_HEADER");

    let abi = abi_version(&root);
    println!("cargo:rustc-env=LLMINT8_ABI_VERSION={abi}");
    generate_header(&root, &out_dir, abi);

    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let soname = format!("libllmint8.so.{abi}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        link_soname(&out_dir, &soname);
    }
}

/// Writes the header to OUT_DIR (where the freshness test reads it) and, when
/// LLMINT8_WRITE_HEADER is set, over include/llmint8.h.
fn generate_header(root: &Path, out_dir: &Path, abi: u32) {
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    // The version's #define, from Cargo.toml (the Rust constant is not a literal).
    config.after_includes = Some(format!(
        "\n/**\n * Major version of this C ABI. The shared library's SONAME is `libllmint8.so.{abi}`.\n */\n#define LLMINT8_ABI_VERSION {abi}"
    ));
    // Parse only the C ABI module: cbindgen follows its `mod` declarations to the
    // other files of src/ffi (naming them again would declare everything twice).
    let header = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    header.write_to_file(out_dir.join("llmint8.h"));
    if std::env::var_os("LLMINT8_WRITE_HEADER").is_some() {
        header.write_to_file(root.join("include/llmint8.h"));
    }
}

/// Programs linked with `-lllmint8` record the SONAME and look for
/// `libllmint8.so.1` at run time; put that link next to the built library in the
/// target directory so they run from the build tree.
fn link_soname(out_dir: &Path, soname: &str) {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else { return };
    let link = profile_dir.join(soname);
    if std::fs::symlink_metadata(&link).is_err() {
        #[cfg(unix)]
        let _ = std::os::unix::fs::symlink("libllmint8.so", &link);
    }
}
