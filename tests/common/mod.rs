//! Shared test support: reading the bitsandbytes reference files, owned typed
//! buffers, a seeded random generator, and an f64 reference of LLM.int8().
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use llmint8::{bf16, f16, DType, Data, DataMut};
use safetensors::{Dtype as StDtype, SafeTensors};

/// The test data folder: under `LLMINT8_TEST_ROOT` when set (a test binary
/// built here and run from another checkout, as scripts/gpu-check.sh does),
/// else under this crate.
pub fn data_dir() -> PathBuf {
    std::env::var_os("LLMINT8_TEST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
        .join("tests/data")
}

/// The context the result tests run on: the CPU; CUDA device 0 when
/// `LLMINT8_TEST_BACKEND=cuda` (scripts/gpu-check.sh runs the golden and
/// reference tests so on a GPU; they take host memory either way); or device 0
/// of the emulated GPU (tests/cuda_emu/fake_cuda.cpp) when
/// `LLMINT8_TEST_BACKEND=emulated-cuda`, whose process must have been started
/// with [`emulated_gpu_env`] (scripts/test.sh does).
pub fn test_context() -> llmint8::Context {
    match std::env::var("LLMINT8_TEST_BACKEND").as_deref() {
        Ok("cuda") | Ok("emulated-cuda") => cuda_context(0),
        Ok("cpu") | Err(_) => llmint8::Context::cpu(),
        Ok(other) => panic!("LLMINT8_TEST_BACKEND={other}: expected cpu, cuda or emulated-cuda"),
    }
}

/// Whether the CUDA tests run on a real GPU (`LLMINT8_TEST_BACKEND=cuda`)
/// rather than the emulated one.
pub fn real_gpu() -> bool {
    std::env::var("LLMINT8_TEST_BACKEND").as_deref() == Ok("cuda")
}

/// A CUDA context on `device`: of the machine's GPU when
/// `LLMINT8_TEST_BACKEND=cuda`, else of the emulated GPU (two devices), in a
/// process started with [`emulated_gpu_env`] (see [`on_cuda`]).
pub fn cuda_context(device: i32) -> llmint8::Context {
    if !real_gpu() && !in_emulated_gpu_env() {
        panic!(
            "this process's environment does not point llmint8 at the emulated GPU: run the test body \
             inside common::on_cuda, or start the process with {:?}",
            emulated_gpu_env()
        );
    }
    llmint8::Context::new(llmint8::Backend::Cuda, device)
        .unwrap_or_else(|e| panic!("no CUDA context on device {device} ({}): {e}", backend_description()))
}

fn backend_description() -> &'static str {
    if real_gpu() {
        "LLMINT8_TEST_BACKEND=cuda: the machine's GPU"
    } else {
        "the emulated GPU of tests/cuda_emu/fake_cuda.cpp"
    }
}

/// The environment that points llmint8's CUDA library discovery at the
/// emulated GPU (built on first use), with two devices. It is given to a
/// process when it starts, never set from a running test: the other test
/// threads read the environment meanwhile.
pub fn emulated_gpu_env() -> Vec<(&'static str, std::ffi::OsString)> {
    let library = fake_cuda_library().into_os_string();
    let mut env: Vec<(&'static str, std::ffi::OsString)> =
        ["LLMINT8_LIBCUDA", "LLMINT8_LIBNVRTC", "LLMINT8_LIBCUBLASLT"].map(|v| (v, library.clone())).into();
    env.push(("LLMINT8_FAKE_CUDA_DEVICES", "2".into()));
    env
}

/// Whether this process was started with [`emulated_gpu_env`].
fn in_emulated_gpu_env() -> bool {
    let library = fake_cuda_library();
    ["LLMINT8_LIBCUDA", "LLMINT8_LIBNVRTC", "LLMINT8_LIBCUBLASLT"]
        .iter()
        .all(|v| std::env::var_os(v).is_some_and(|p| Path::new(&p) == library))
        && std::env::var("LLMINT8_FAKE_CUDA_DEVICES").as_deref() == Ok("2")
}

/// Runs the body of a CUDA test: here on a real GPU (`LLMINT8_TEST_BACKEND=cuda`)
/// or when this process already has [`emulated_gpu_env`]; else the calling
/// test runs again, alone, in a child process of this test binary started
/// with that environment, and must pass there.
pub fn on_cuda(body: impl FnOnce()) {
    if real_gpu() || in_emulated_gpu_env() {
        return body();
    }
    let thread = std::thread::current();
    let name = thread.name().expect("libtest names each test's thread after the test");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(emulated_gpu_env())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} on the emulated GPU (a child process):\n{stdout}{stderr}"
    );
}

/// tests/cuda_emu/fake_cuda.cpp compiled into target/<profile>/fake-cuda
/// (again when a source is newer than the library).
pub fn fake_cuda_library() -> PathBuf {
    // Once per process: the test threads of one binary all ask for it.
    static LIBRARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIBRARY.get_or_init(build_fake_cuda_library).clone()
}

fn build_fake_cuda_library() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources =
        ["tests/cuda_emu/fake_cuda.cpp", "tests/cuda_emu/emu.hpp", "kernels/llmint8.cu"].map(|s| root.join(s));
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().join("fake-cuda");
    std::fs::create_dir_all(&dir).unwrap();
    let library = dir.join("libfakecuda.so");
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let newest = sources.iter().filter_map(|s| modified(s)).max();
    if modified(&library).is_some() && modified(&library) >= newest {
        return library;
    }
    // Built under a name of its own, then renamed: test processes may race.
    let partial = dir.join(format!("libfakecuda.so.{}", std::process::id()));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = std::process::Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-pthread"])
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg(&sources[0])
        .arg("-o")
        .arg(&partial)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler `{cxx}`: {e}"));
    assert!(status.success(), "compiling tests/cuda_emu/fake_cuda.cpp failed");
    std::fs::rename(&partial, &library).unwrap();
    library
}

/// An owned float buffer of one of the three dtypes.
#[derive(Clone, Debug)]
pub enum Owned {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Owned {
    pub fn from_f32(dtype: DType, v: &[f32]) -> Owned {
        match dtype {
            DType::F32 => Owned::F32(v.to_vec()),
            DType::F16 => Owned::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Owned::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }
    pub fn zeros(dtype: DType, len: usize) -> Owned {
        Owned::from_f32(dtype, &vec![0.0; len])
    }
    pub fn dtype(&self) -> DType {
        match self {
            Owned::F32(_) => DType::F32,
            Owned::F16(_) => DType::F16,
            Owned::BF16(_) => DType::BF16,
        }
    }
    pub fn data(&self) -> Data<'_> {
        match self {
            Owned::F32(v) => Data::F32(v),
            Owned::F16(v) => Data::F16(v),
            Owned::BF16(v) => Data::BF16(v),
        }
    }
    pub fn data_mut(&mut self) -> DataMut<'_> {
        match self {
            Owned::F32(v) => DataMut::F32(v),
            Owned::F16(v) => DataMut::F16(v),
            Owned::BF16(v) => DataMut::BF16(v),
        }
    }
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Owned::F32(v) => v.clone(),
            Owned::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Owned::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
    pub fn len(&self) -> usize {
        self.data().len()
    }
    /// Raw bytes, as C sees the buffer.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Owned::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Owned::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Owned::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A safetensors file read whole (the reference files are small).
pub struct Tensors {
    bytes: Vec<u8>,
}

impl Tensors {
    pub fn open(path: impl AsRef<Path>) -> Tensors {
        let path = path.as_ref();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Tensors { bytes }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }
    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.st().tensor(name).unwrap_or_else(|_| panic!("no tensor {name}")).shape().to_vec()
    }
    fn raw(&self, name: &str) -> (StDtype, Vec<u8>) {
        let t = self.st().tensor(name).unwrap_or_else(|_| panic!("no tensor {name}"));
        (t.dtype(), t.data().to_vec())
    }
    /// A float tensor in its own dtype.
    pub fn float(&self, name: &str) -> Owned {
        let (dtype, b) = self.raw(name);
        let u16s = || b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        match dtype {
            StDtype::F32 => Owned::F32(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
            StDtype::F16 => Owned::F16(u16s().map(f16::from_bits).collect()),
            StDtype::BF16 => Owned::BF16(u16s().map(bf16::from_bits).collect()),
            other => panic!("{name}: {other:?} is not a float dtype"),
        }
    }
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        match self.float(name) {
            Owned::F32(v) => v,
            other => panic!("{name}: expected float32, got {:?}", other.dtype()),
        }
    }
    pub fn i8s(&self, name: &str) -> Vec<i8> {
        let (dtype, b) = self.raw(name);
        assert_eq!(dtype, StDtype::I8, "{name}");
        b.into_iter().map(|x| x as i8).collect()
    }
    pub fn i64s(&self, name: &str) -> Vec<i64> {
        let (dtype, b) = self.raw(name);
        assert_eq!(dtype, StDtype::I64, "{name}");
        b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

/// One case of tests/data/cases.json.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub dtype: DType,
    pub threshold: f32,
    pub bias: bool,
    pub outlier_cols: usize,
}

/// The directories holding bitsandbytes reference cases: the shared set
/// (tests/data) and the extra set written by scripts/bnb_reference.py.
pub fn reference_suites() -> Vec<PathBuf> {
    vec![data_dir(), data_dir().join("extra")]
}

/// The cases of one reference suite directory.
pub fn cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            m: c["m"].as_u64().unwrap() as usize,
            k: c["k"].as_u64().unwrap() as usize,
            n: c["n"].as_u64().unwrap() as usize,
            dtype: match c["dtype"].as_str().unwrap() {
                "float32" => DType::F32,
                "float16" => DType::F16,
                "bfloat16" => DType::BF16,
                d => panic!("unknown dtype {d}"),
            },
            threshold: c["threshold"].as_f64().unwrap() as f32,
            bias: c["bias"].as_bool().unwrap(),
            outlier_cols: c["outlier_cols"].as_u64().unwrap() as usize,
        })
        .collect()
}

/// Runs `f` on every case of every reference suite, with the suite's `file`
/// (quant.safetensors or linear.safetensors) open.
pub fn for_each_case(file: &str, mut f: impl FnMut(&Tensors, &Case)) {
    for dir in reference_suites() {
        let t = Tensors::open(dir.join(file));
        for case in cases(&dir) {
            f(&t, &case);
        }
    }
}

/// The bit patterns of f32 values, to compare them exactly (NaN included).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// ‖a − b‖ / ‖b‖ over f64.
/// int8 values as the bytes a file holds.
pub fn bits_i8(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// SplitMix64: a small seeded generator, so the tests need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn normals(&mut self, len: usize, scale: f64) -> Vec<f32> {
        (0..len).map(|_| (self.normal() * scale) as f32).collect()
    }
}

/// Activations shaped like the paper's: mostly small normal values, plus a few
/// feature columns with large magnitudes in most rows.
pub fn activations_with_outliers(rng: &mut Rng, rows: usize, cols: usize, outlier_features: usize) -> Vec<f32> {
    let mut x = rng.normals(rows * cols, 1.0);
    for _ in 0..outlier_features {
        let c = rng.below(cols);
        for r in 0..rows {
            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            // Most rows hold an outlier there; the others a large value below
            // the threshold of 6, as real models do (where the row scale rules
            // differ: bitsandbytes' counts it, the int8-part rule does not).
            let magnitude = if rng.uniform() < 0.8 { 8.0 + 12.0 * rng.uniform() } else { 3.0 + 2.9 * rng.uniform() };
            x[r * cols + c] = (sign * magnitude) as f32;
        }
    }
    x
}

/// The f64 reference of LLM.int8() (its own file: the fuzz targets include it too).
pub mod reference;
