//! Generates the C header from src/ffi with cbindgen, and gives the shared
//! library a SONAME carrying the ABI major version.

use std::path::{Path, PathBuf};

/// Must equal `llmint8::ABI_VERSION` (a test checks the SONAME).
const ABI_VERSION: u32 = 1;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=LLMINT8_WRITE_HEADER");

    generate_header(&root, &out_dir);

    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let soname = format!("libllmint8.so.{ABI_VERSION}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        link_soname(&out_dir, &soname);
    }
}

/// Writes the header to OUT_DIR (where the freshness test reads it) and, when
/// LLMINT8_WRITE_HEADER is set, over include/llmint8.h.
fn generate_header(root: &Path, out_dir: &Path) {
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
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
