//! Julia cannot be installed on the development and CI machines, so the Julia
//! binding's `ccall`s are checked against the committed C header instead: every
//! function a `ccall` names must exist with the same argument count, argument
//! types and return type. The binding cannot drift from the ABI unseen.

use std::collections::BTreeMap;
use std::path::Path;

/// A C or Julia type reduced to a common form: `*` per pointer level, then the
/// base (`i32`, `usize`, `f32`, `void`, `char`, `stats`, …). Opaque handles
/// (`llmint8_context`, `llmint8_weight`) count as `void`, as Julia passes them
/// as `Ptr{Cvoid}`.
fn c_type(raw: &str) -> String {
    let t = raw.replace("const ", "").replace("struct ", "");
    let stars = t.matches('*').count();
    let base = t.replace('*', "");
    let base = match base.trim() {
        "int32_t" => "i32",
        "uint32_t" => "u32",
        "uint64_t" => "u64",
        "int8_t" => "i8",
        "size_t" => "usize",
        "float" => "f32",
        "char" => "char",
        "void" | "llmint8_context" | "llmint8_weight" | "llmint8_checkpoint" => "void",
        "llmint8_tensor_info" => "tensor_info",
        "llmint8_matmul_stats" => "stats",
        other => panic!("unknown C type `{other}` in `{raw}`"),
    };
    format!("{}{base}", "*".repeat(stars))
}

fn julia_type(raw: &str) -> String {
    let t = raw.trim();
    for wrapper in ["Ptr{", "Ref{"] {
        if let Some(inner) = t.strip_prefix(wrapper).and_then(|r| r.strip_suffix('}')) {
            return format!("*{}", julia_type(inner));
        }
    }
    match t {
        "Int32" | "Cint" => "i32",
        "UInt32" => "u32",
        "UInt64" => "u64",
        "Int8" => "i8",
        "Csize_t" => "usize",
        "Cfloat" | "Float32" => "f32",
        "Cvoid" => "void",
        "Cstring" => "*char",
        "UInt8" | "Cchar" => "char",
        "MatmulStats" => "stats",
        "CTensorInfo" => "tensor_info",
        other => panic!("unknown Julia type `{other}`"),
    }
    .to_string()
}

/// Splits `s` at commas that are not inside (), {} or [].
fn split_top(s: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0i32, String::new(), Vec::new());
    for ch in s.chars() {
        match ch {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// The text from an opening bracket at `start` to its match (exclusive).
fn bracketed(s: &str, start: usize) -> &str {
    let mut depth = 0;
    for (i, ch) in s[start..].char_indices() {
        match ch {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return &s[start + 1..start + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets from {start}");
}

/// name → (return type, argument types) from the header's declarations.
fn header_signatures(header: &str) -> BTreeMap<String, (String, Vec<String>)> {
    // Drop comments, then read `ret name(args);` statements.
    let mut code = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = &rest[i + rest[i..].find("*/").expect("closed comment") + 2..];
    }
    code.push_str(rest);
    // Preprocessor lines and the C++ guard are not declarations.
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.contains("//") && !l.contains("extern \"C\""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(open) = stmt.find("llmint8_").filter(|_| stmt.contains('(')) else { continue };
        let paren = stmt.find('(').unwrap();
        if paren < open || stmt.contains("typedef") {
            continue;
        }
        let name = stmt[open..paren].trim().to_string();
        let ret = c_type(&stmt[..open]);
        let args_text = bracketed(stmt, paren);
        let args = if args_text.trim() == "void" {
            Vec::new()
        } else {
            split_top(args_text)
                .iter()
                .map(|a| {
                    // Drop the parameter name: the last identifier.
                    let cut = a.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
                    c_type(&a[..cut])
                })
                .collect()
        };
        out.insert(name, (ret, args));
    }
    out
}

/// (name, return type, argument types, file) for every `ccall` in the Julia sources.
fn julia_ccalls(dir: &Path) -> Vec<(String, String, Vec<String>, String)> {
    let mut out = Vec::new();
    let mut files = vec![dir.join("src/LLMInt8.jl")];
    for e in std::fs::read_dir(dir.join("ext")).unwrap() {
        files.push(e.unwrap().path());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut from = 0;
        while let Some(i) = text[from..].find("ccall(") {
            let start = from + i + "ccall".len();
            let inner = bracketed(&text, start);
            let parts = split_top(inner);
            assert!(parts.len() >= 3, "{}: malformed ccall: {inner}", file.display());
            let name = parts[0].trim_start_matches("((").trim_start_matches('(').trim_start_matches(':');
            let name = name.split(',').next().unwrap().trim().to_string();
            let ret = julia_type(&parts[1]);
            let tuple = parts[2].trim();
            let args = split_top(&tuple[1..tuple.len() - 1]).iter().map(|a| julia_type(a)).collect();
            out.push((name, ret, args, file.display().to_string()));
            from = start;
        }
    }
    out
}

#[test]
fn every_julia_ccall_matches_the_c_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("include/llmint8.h")).unwrap();
    let c = header_signatures(&header);
    assert!(c.len() >= 15, "parsed only {} declarations: {:?}", c.len(), c.keys());
    assert_eq!(c["llmint8_matmul"].1.len(), 9);
    let calls = julia_ccalls(&root.join("bindings/julia/LLMInt8"));
    assert!(!calls.is_empty(), "found no ccall");
    let mut used = std::collections::BTreeSet::new();
    for (name, ret, args, file) in &calls {
        let (c_ret, c_args) = c.get(name).unwrap_or_else(|| panic!("{file}: {name} is not in include/llmint8.h"));
        assert_eq!(ret, c_ret, "{file}: return type of {name}");
        assert_eq!(args.len(), c_args.len(), "{file}: argument count of {name}");
        for (k, (j, ct)) in args.iter().zip(c_args).enumerate() {
            assert_eq!(j, ct, "{file}: argument {k} of {name}");
        }
        used.insert(name.clone());
    }
    for needed in [
        "llmint8_version",
        "llmint8_status_name",
        "llmint8_last_error",
        "llmint8_context_create",
        "llmint8_context_destroy",
        "llmint8_context_set_num_threads",
        "llmint8_weight_quantize",
        "llmint8_weight_destroy",
        "llmint8_matmul_host",
        "llmint8_context_set_stream",
        "llmint8_context_synchronize",
        "llmint8_checkpoint_open",
        "llmint8_checkpoint_destroy",
        "llmint8_checkpoint_tensor_info",
        "llmint8_weight_load",
        "llmint8_weight_load_safetensors",
        "llmint8_weight_save_safetensors",
    ] {
        assert!(used.contains(needed), "the Julia binding does not call {needed}");
    }
}

#[test]
fn the_checker_catches_drift() {
    let header = "int32_t llmint8_f(struct llmint8_context *ctx,\n    size_t n);\nconst char *llmint8_g(void);";
    let c = header_signatures(header);
    assert_eq!(c["llmint8_f"], ("i32".to_string(), vec!["*void".to_string(), "usize".to_string()]));
    assert_eq!(c["llmint8_g"], ("*char".to_string(), vec![]));
    assert_eq!(julia_type("Ptr{Ptr{Cvoid}}"), "**void");
    assert_ne!(julia_type("Csize_t"), c_type("int32_t"));
}
