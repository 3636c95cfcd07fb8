//! The module graph of `src/` runs one way (docs/ARCHITECTURE.md): every
//! `crate::…` (and `$crate::…`, and `super::…` from a top-level file) that a
//! module names must be one of the modules below it. A new import back up the
//! layers fails here, naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What each top-level module of `src/` may use. Everything may use the crate
/// root's own items (`ABI_VERSION`) and the external crates.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("dtype", &["error"]),
    ("call", &["dtype"]),
    ("kept", &["dtype", "error"]),
    ("smoothing", &["error"]),
    ("quant", &["dtype", "error"]),
    ("cpu", &["call", "dtype", "error", "kept", "quant", "smoothing"]),
    ("cuda", &["call", "dtype", "error", "kept", "quant", "smoothing"]),
    ("weight", &["cpu", "cuda", "dtype", "error", "kept", "quant", "smoothing"]),
    ("io", &["dtype", "error"]),
    ("context", &["call", "cpu", "cuda", "dtype", "error", "io", "quant", "smoothing", "weight"]),
    ("convert", &["context", "dtype", "error", "io", "quant", "weight"]),
    ("ffi", &["context", "convert", "cpu", "cuda", "dtype", "error", "io", "quant", "weight"]),
    // The command-line tool is a client of the public API.
    ("bin", &["context", "convert", "cpu", "cuda", "dtype", "error", "io", "quant", "weight"]),
];

/// Items of the crate root: the modules they come from (lib.rs re-exports them;
/// the two macros are `#[macro_export]`ed from dtype.rs).
fn root_items() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    let mut items = BTreeMap::new();
    for line in lib.lines().filter(|l| l.starts_with("pub use ")) {
        let rest = line.trim_start_matches("pub use ").trim_end_matches(';');
        let (module, names) = rest.split_once("::").unwrap();
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.trim();
            let name = name.rsplit(" as ").next().unwrap().trim();
            items.insert(name.to_string(), module.to_string());
        }
    }
    for (name, module) in [("with_data", "dtype"), ("with_data_mut", "dtype"), ("ABI_VERSION", "lib")] {
        items.insert(name.to_string(), module.to_string());
    }
    items
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first identifier of each item of a `use` tree that starts at `text`
/// (after `crate::`): `cpu` for `cpu::X`, `cpu` and `dtype` for
/// `{cpu::{self, X}, dtype::Y}`.
fn first_segments(text: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let Some(group) = text.strip_prefix('{') else { return vec![ident(text)] };
    let (mut depth, mut items, mut at_item_start) = (1, Vec::new(), true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => at_item_start = true,
            c if c.is_whitespace() => {}
            _ if at_item_start && depth == 1 => {
                items.push(ident(&group[i..]));
                at_item_start = false;
            }
            _ => {}
        }
    }
    items
}

/// How a file of `src/` names the crate: the library's files as `crate::`
/// (and `super::` from a top-level file, the crate root), the command-line
/// tool (`src/bin`), a client of the public API, as `llmint8::`.
fn crate_prefixes(module: &str, top_level_file: bool) -> Vec<&'static str> {
    match (module, top_level_file) {
        ("bin", _) => vec!["llmint8::"],
        (_, true) => vec!["crate::", "super::"],
        (_, false) => vec!["crate::"],
    }
}

/// The crate-level names `source` refers to through `prefixes`, with their
/// 1-based line numbers. `//` comments (docs included) are left out: a link in
/// a doc comment is not a dependency. A `use` group may span lines, so it is
/// read from the joined text.
fn references(source: &str, prefixes: &[&str]) -> Vec<(usize, String)> {
    let mut text = String::new();
    for line in source.lines() {
        let code = if line.trim_start().starts_with("//") { "" } else { line.split(" // ").next().unwrap() };
        text.push_str(code);
        text.push('\n');
    }
    let mut found = Vec::new();
    for &prefix in prefixes {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().last();
            if prefix != "super::" && before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `some_crate::`, not `crate::`
            }
            let line = text[..at].matches('\n').count() + 1;
            for name in first_segments(&text[at + prefix.len()..]) {
                if name != "self" && !name.is_empty() {
                    found.push((line, name));
                }
            }
        }
    }
    found
}

/// The references of `source` (a file of `module`) against the layers:
/// how many it holds, and one line for each that breaks them.
fn violations_in(file: &str, module: &str, source: &str, top_level_file: bool) -> (usize, Vec<String>) {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let root = root_items();
    let Some(may_use) = allowed.get(module) else {
        return (0, vec![format!("{file}: module `{module}` has no row in ALLOWED")]);
    };
    let references = references(source, &crate_prefixes(module, top_level_file));
    let mut violations = Vec::new();
    for (line, name) in &references {
        let target = if allowed.contains_key(name.as_str()) {
            name.clone()
        } else if let Some(m) = root.get(name) {
            m.clone()
        } else {
            violations.push(format!("{file}:{line}: `{name}` is neither a module nor a root item"));
            continue;
        };
        if target != module && target != "lib" && target != "half" && !may_use.contains(&target.as_str()) {
            violations.push(format!("{file}:{line}: `{module}` uses `{target}` ({name})"));
        }
    }
    (references.len(), violations)
}

#[test]
fn module_dependencies_run_one_way() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    files.sort();
    let (mut violations, mut checked, mut checked_bin) = (Vec::new(), 0, 0);
    for file in &files {
        let relative = file.strip_prefix("src").unwrap();
        let first = relative.iter().next().unwrap().to_string_lossy().into_owned();
        if first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs");
        let top_level_file = relative.components().count() == 1;
        let source = std::fs::read_to_string(file).unwrap();
        let (count, found) = violations_in(&file.display().to_string(), module, &source, top_level_file);
        checked += count;
        if module == "bin" {
            checked_bin += count;
        }
        violations.extend(found);
    }
    assert!(checked > 100, "only {checked} references found: is the scanner still reading src/?");
    assert!(checked_bin > 5, "only {checked_bin} references found in src/bin: is it still read as `llmint8::`?");
    assert!(violations.is_empty(), "imports against the layers:\n{}", violations.join("\n"));
}

/// A test of the test: every row of ALLOWED that forbids something fails on
/// a file that imports it, written as that module's files name the crate.
#[test]
fn every_row_fails_on_a_forbidden_import() {
    let modules: Vec<&str> = ALLOWED.iter().map(|(m, _)| *m).filter(|m| *m != "bin").collect();
    let mut rows_that_can_fail = 0;
    for (module, may_use) in ALLOWED {
        for top_level_file in [true, false] {
            let prefix = crate_prefixes(module, top_level_file)[0];
            let forbidden: Vec<&str> =
                modules.iter().copied().filter(|m| m != module && !may_use.contains(m)).collect();
            for target in &forbidden {
                let source = format!("use {prefix}{target}::Item;\n");
                let (_, found) = violations_in("synthetic.rs", module, &source, top_level_file);
                assert_eq!(found.len(), 1, "`{module}` importing `{target}` as {prefix}: {found:?}");
            }
            for target in may_use.iter() {
                let source = format!("use {prefix}{target}::Item;\n");
                let (_, found) = violations_in("synthetic.rs", module, &source, top_level_file);
                assert!(found.is_empty(), "`{module}` may use `{target}`: {found:?}");
            }
            rows_that_can_fail += usize::from(!forbidden.is_empty() && top_level_file);
        }
    }
    // Every row forbids something (ffi: `call`, the backends' argument struct).
    assert_eq!(rows_that_can_fail, ALLOWED.len());
}

#[test]
fn the_scanner_sees_nested_groups_and_skips_comments() {
    let source = "use crate::{cpu::{self, X}, dtype::Y};\n// crate::context in a comment\nlet a = crate::io::f(); // crate::ffi\nuse other_crate::z;\n";
    let names: Vec<(usize, String)> = references(source, &["crate::"]);
    assert_eq!(names, vec![(1, "cpu".to_string()), (1, "dtype".to_string()), (3, "io".to_string())], "{names:?}");
    assert_eq!(references("use super::quant;\n", &crate_prefixes("cpu", true)), vec![(1, "quant".to_string())]);
    assert!(references("use super::pack;\n", &crate_prefixes("cpu", false)).is_empty());
    assert_eq!(references("use llmint8::io::X;\n", &crate_prefixes("bin", false)), vec![(1, "io".to_string())]);
}

#[test]
fn no_unreachable_or_expect_in_the_library() {
    // What the types cannot say is not checked at run time by a panic
    // (`unreachable!`, `.expect`): it is an error, or the types say it; the one
    // exception is the worker pool's bookkeeping (every part ran before the
    // count reached 0), which is an invariant of its own code, not of a caller's input.
    // The command-line tool (src/bin) is a client and may stop as it likes.
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut found = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let code = source.split("#[cfg(test)]").next().unwrap();
        for (i, line) in code.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if (code.contains("unreachable!(") || code.contains(".expect(")) && !file.starts_with("src/bin") {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    let expected = ["src/cpu/pool.rs"];
    found.retain(|f| !expected.iter().any(|e| f.starts_with(e)));
    assert!(found.is_empty(), "unreachable! or .expect in the library:\n{}", found.join("\n"));
}
