//! Test support shared by the crates' integration tests: where fixtures and the real models
//! are, and tolerance matchers that report the worst element, not just "not equal".

use std::path::{Path, PathBuf};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root exists")
}

/// A path under the committed `fixtures/` directory; panics if it is missing.
pub fn fixture(rel: &str) -> PathBuf {
    let p = repo_root().join("fixtures").join(rel);
    assert!(p.exists(), "fixture {} is missing (regenerate with scripts/make_fixtures.py)", p.display());
    p
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF: `$PLINTH_TEST_GGUF`, else the plinth cache.
/// Panics with the fix when it is absent, so a real-model test can never pass vacuously.
pub fn smollm2_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("PLINTH_TEST_GGUF") {
        return PathBuf::from(p);
    }
    let entry = plinth_io::catalog::lookup(plinth_io::catalog::DEFAULT_LLM).expect("default model in catalog");
    let p = plinth_io::fetch::cached_path(entry);
    assert!(
        p.exists(),
        "real model not found at {} — run scripts/fetch-models (or set PLINTH_HOME / PLINTH_TEST_GGUF)",
        p.display()
    );
    p
}

/// The real all-MiniLM-L6-v2 sentence-transformers directory: `$PLINTH_TEST_MINILM`, else
/// the plinth cache. Panics with the fix when it is absent.
pub fn minilm_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PLINTH_TEST_MINILM") {
        return PathBuf::from(p);
    }
    let entry = plinth_io::catalog::lookup(plinth_io::catalog::DEFAULT_EMBEDDER).expect("default embedder in catalog");
    let p = plinth_io::fetch::cached_path(entry);
    assert!(
        p.join("model.safetensors").exists(),
        "real model not found at {} — run scripts/fetch-models (or set PLINTH_HOME / PLINTH_TEST_MINILM)",
        p.display()
    );
    p
}

/// Largest |a - b| and its index.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((x - y).abs(), i))
        .fold((0.0, 0), |m, (d, i)| if d > m.0 || d.is_nan() { (d, i) } else { m })
}

/// Asserts every element is within `tol` (absolute), naming the worst offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (d, i) = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max |Δ| = {d:e} at index {i} (got {}, want {}), tolerance {tol:e}", got[i], want[i]);
}

/// A tensor's values as one f32 vector.
pub fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts equal shapes and every element within `tol` (absolute); prints the max |Δ| and the
/// reference's largest magnitude, so test logs carry the measured figure.
pub fn assert_tensor_close(what: &str, got: &candle_core::Tensor, want: &candle_core::Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (flat(got), flat(want));
    let (d, i) = max_abs_diff(&g, &w);
    let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    println!("{what}: max |Δ| = {d:.2e} (at {i}, max |ref| {scale:.2})");
    assert_close(what, &g, &w, tol);
}

/// Writes GGUF bytes by hand, so that tests can make valid and deliberately broken files.
#[derive(Default)]
pub struct GgufBuilder {
    pub version: u32,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn gguf_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder { version: 3, ..Default::default() }
    }
    /// A metadata pair with a raw, already-encoded value of GGUF type `ty`.
    pub fn kv_raw(mut self, key: &str, ty: u32, payload: Vec<u8>) -> Self {
        self.kv.push((key.to_string(), ty, payload));
        self
    }
    pub fn kv_str(self, key: &str, v: &str) -> Self {
        self.kv_raw(key, 8, gguf_str(v))
    }
    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, 4, v.to_le_bytes().to_vec())
    }
    pub fn kv_f32(self, key: &str, v: f32) -> Self {
        self.kv_raw(key, 6, v.to_le_bytes().to_vec())
    }
    pub fn kv_str_array(self, key: &str, items: &[&str]) -> Self {
        let mut p = 8u32.to_le_bytes().to_vec();
        p.extend((items.len() as u64).to_le_bytes());
        for s in items {
            p.extend(gguf_str(s));
        }
        self.kv_raw(key, 9, p)
    }
    /// A tensor with ggml type id `ty`, dims in row-major order, raw data bytes.
    pub fn tensor_raw(mut self, name: &str, shape: &[u64], ty: u32, data: Vec<u8>) -> Self {
        let mut dims = shape.to_vec();
        dims.reverse();
        self.tensors.push((name.to_string(), dims, ty, data));
        self
    }
    pub fn tensor_f32(self, name: &str, shape: &[u64], data: &[f32]) -> Self {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor_raw(name, shape, 0, bytes)
    }
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, p) in &self.kv {
            out.extend(gguf_str(k));
            out.extend(ty.to_le_bytes());
            out.extend(p);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            out.extend(gguf_str(name));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
        }
        out
    }
    /// Writes the file into a fresh temp dir and returns its path.
    pub fn write(&self, name: &str) -> PathBuf {
        write_temp(name, &self.build())
    }
}

/// Writes bytes to `name` inside a per-process temp directory.
pub fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

/// Runs a binary (the CLI tests pass `env!("CARGO_BIN_EXE_plinth")`) with `args`, offline
/// (`HF_HUB_OFFLINE=1`), feeding `stdin`; returns the exit code (-1 if killed by a signal),
/// stdout and stderr. A command that fails before reading stdin may have closed it already,
/// so a failed write to it is not an error here.
pub fn run_with_stdin(bin: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let _ = child.stdin.take().expect("piped stdin").write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("waiting for the command");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}
