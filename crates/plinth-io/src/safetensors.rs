//! Safetensors weights (single file, or sharded with `model.safetensors.index.json`) and the
//! Hugging Face `config.json` that sits beside them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{quantized::GgmlDType, safetensors::MmapedSafetensors, DType, Device, Tensor};
use plinth_core::{Error, Result};

/// A Hugging Face model directory's weights.
pub struct SafetensorsWeights {
    dir: PathBuf,
    inner: MmapedSafetensors,
    names: HashMap<String, ()>,
    quantize: Option<GgmlDType>,
}

impl SafetensorsWeights {
    /// Opens `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open_stem(dir, &["model"])
    }

    /// Opens the first of `stems` present in `dir` as `<stem>.safetensors`, as the shards of
    /// `<stem>.safetensors.index.json`, or as the `<stem>.fp16.safetensors` variant (diffusers
    /// folders: `&["diffusion_pytorch_model", "model"]`). Tensors load widened to the dtype
    /// asked for. A folder with only PyTorch `.bin` weights is refused with a hint.
    pub fn open_stem(dir: &Path, stems: &[&str]) -> Result<Self> {
        for stem in stems {
            for name in [format!("{stem}.safetensors"), format!("{stem}.safetensors.index.json"), format!("{stem}.fp16.safetensors")] {
                if dir.join(&name).exists() {
                    return Self::open_file(dir, &name);
                }
            }
        }
        if let Some(bin) = stems.iter().map(|s| format!("{s}.bin")).find(|b| dir.join(b).exists()) {
            return Err(Error::unsupported(dir.join(bin), "PyTorch pickle weights (convert them to safetensors)"));
        }
        let wanted: Vec<String> = stems.iter().map(|s| format!("{s}.safetensors")).collect();
        Err(Error::missing(dir, format!("{} (or sharded / fp16 variants)", wanted.join(" or "))))
    }

    /// `name` in `dir`: one safetensors file, or a `*.safetensors.index.json` naming shards.
    fn open_file(dir: &Path, name: &str) -> Result<Self> {
        let index = dir.join(name);
        let files: Vec<PathBuf> = if !name.ends_with(".index.json") {
            vec![index]
        } else {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::format(&index, e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::missing(&index, "'weight_map' object"))?;
            let mut shards: Vec<PathBuf> = map
                .values()
                .filter_map(|v| v.as_str())
                .map(|s| dir.join(s))
                .collect();
            shards.sort();
            shards.dedup();
            shards
        };
        for f in &files {
            if !f.exists() {
                return Err(Error::missing(f, "safetensors shard"));
            }
        }
        // SAFETY: read-only maps of files we do not modify.
        let inner = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| Error::format(&files[0], e.to_string()))?;
        let names = inner.tensors().into_iter().map(|(n, _)| (n, ())).collect();
        Ok(SafetensorsWeights { dir: dir.to_path_buf(), inner, names, quantize: None })
    }

    /// Asks for linear-layer weights to be quantized to `dtype` as they are loaded (in-situ
    /// quantization), trading accuracy for memory and bandwidth.
    pub fn with_quantize(mut self, dtype: Option<GgmlDType>) -> Self {
        self.quantize = dtype;
        self
    }

    pub fn quantize(&self) -> Option<GgmlDType> {
        self.quantize
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Loads a tensor converted to `dtype`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(Error::missing(&self.dir, format!("tensor '{name}'")));
        }
        let t = self
            .inner
            .load(name, device)
            .map_err(|e| Error::format(&self.dir, format!("tensor '{name}': {e}")))?;
        Ok(t.to_dtype(dtype)?)
    }

    /// `(name, dtype, shape, bytes)` of every tensor, for `plinth inspect`.
    pub fn infos(&self) -> Vec<(String, String, Vec<usize>, usize)> {
        self.inner
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, format!("{:?}", v.dtype()), v.shape().to_vec(), v.data().len()))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads and parses `config.json` in `dir` as loose JSON; models pick their own fields.
pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("invalid JSON: {e}")))
}

/// Sampling defaults from a model directory's `generation_config.json` (all optional).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct GenerationDefaults {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

/// Reads `generation_config.json` in `dir`; a missing file gives empty defaults, a malformed one
/// an error naming it.
pub fn read_generation_defaults(dir: &Path) -> Result<GenerationDefaults> {
    let path = dir.join("generation_config.json");
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GenerationDefaults::default()),
        Err(e) => Err(Error::io(&path, e)),
        Ok(text) => serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("invalid generation config: {e}"))),
    }
}
