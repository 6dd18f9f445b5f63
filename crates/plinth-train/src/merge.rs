//! Merging a LoRA adapter into its base model, written out as a Hugging Face model directory
//! that transformers (and plinth) load: `config.json`, `model.safetensors` (f32, Hugging Face
//! tensor names and q/k row order, every adapted weight replaced by `W + scale * B @ A` as
//! PEFT's `merge_and_unload` computes it), `generation_config.json` and the tokenizer files.
//!
//! The base is a Hugging Face directory (its tensors are copied as f32, its tokenizer and
//! generation files copied as they are) or a GGUF file of the Llama family (`llama`, `qwen2`,
//! `qwen3`): its tensors are dequantized to f32 and renamed through `plinth_io::names`, a
//! `llama` file's q/k rows are put back from llama.cpp's permuted order into Hugging Face's
//! ([`QkLayout`]), `config.json` is written from the GGUF metadata, and the tokenizer the GGUF
//! describes becomes `tokenizer.json` + `tokenizer_config.json` (chat template, special
//! tokens) + `generation_config.json` (BOS and every end-of-generation id).
//!
//! Adapters are read in Hugging Face row order (the PEFT file format; see [`crate::peft`]), so
//! the same adapter merges into the same weights whichever file holds the base.
//!
//! The directory appears whole or not at all: everything is written into a hidden sibling
//! directory that is renamed to `out` at the end and removed on any failure. `out` must not
//! exist yet, or be an empty directory. One `model.safetensors` holds all tensors (no shards),
//! which suits the small models plinth fine-tunes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};
use plinth_io::fetch::ModelLocation;
use plinth_io::gguf::GgufFile;
use plinth_io::names;
use plinth_io::safetensors::{read_config, SafetensorsWeights};
use plinth_models::layers::RopeScaling;
use plinth_models::load_decoder;
use plinth_models::models::llama::LlamaConfig;
use plinth_tokenize::Tokenizer;
use serde_json::{json, Map, Value};

use crate::peft::{self, QkLayout};
use crate::staging::Staging;

/// Tokenizer files copied from a Hugging Face base directory when present.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// GGUF architectures that can be written as a Hugging Face directory.
const GGUF_ARCHITECTURES: &[(&str, &str)] = &[("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM"), ("qwen3", "Qwen3ForCausalLM")];

/// What [`merge`] or [`export`] wrote.
#[derive(Debug, Clone)]
pub struct MergeReport {
    /// The directory written.
    pub out: PathBuf,
    /// Tensors in `model.safetensors`.
    pub tensors: usize,
    /// Modules whose weight received the adapter's delta (Hugging Face names), sorted.
    pub merged: Vec<String>,
    /// The files written into `out`, sorted.
    pub files: Vec<String>,
    /// Size of `model.safetensors` in bytes.
    pub bytes: u64,
    /// What the caller should know, e.g. that the base had no tokenizer to write.
    pub notes: Vec<String>,
}

/// Merges the PEFT LoRA adapter in `adapter_dir` into `base` and writes the result to `out` as
/// a Hugging Face directory. `progress(done, total)` is called after each tensor.
pub fn merge(base: &ModelLocation, adapter_dir: &Path, out: &Path, progress: impl FnMut(usize, usize)) -> Result<MergeReport> {
    let staging = Staging::new(out)?;
    let loaded = load_decoder(base)?;
    let model = loaded.model.as_ref();
    let layout = QkLayout::of(base, model);
    // Checks every adapted layer's name and shape against the model; B comes in the model's
    // row order, which `unpermute` takes back to Hugging Face's, the order of the tensors.
    let set = peft::load(adapter_dir, model, layout)?;
    let mut deltas = HashMap::new();
    for e in &set.entries {
        let b = layout.unpermute(&e.name, e.b.as_tensor())?;
        let delta = (b.matmul(e.a.as_tensor())? * set.config.scale())?;
        deltas.insert(format!("{}.weight", e.name), (e.name.clone(), delta));
    }
    drop(loaded);
    write(base, deltas, staging, progress)
}

/// Writes `base` alone as a Hugging Face directory: a GGUF converted (f32 weights, Hugging
/// Face names and q/k order, config and tokenizer from its metadata), or a directory copied
/// with f32 weights.
pub fn export(base: &ModelLocation, out: &Path, progress: impl FnMut(usize, usize)) -> Result<MergeReport> {
    let staging = Staging::new(out)?;
    write(base, HashMap::new(), staging, progress)
}

/// `deltas`: tensor name -> (module name, f32 delta in Hugging Face row order).
fn write(
    base: &ModelLocation,
    mut deltas: HashMap<String, (String, Tensor)>,
    staging: Staging,
    mut progress: impl FnMut(usize, usize),
) -> Result<MergeReport> {
    let src = Source::open(base)?;
    let names = src.names()?;
    let total = names.len();
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(total);
    let mut merged = Vec::new();
    for (i, (hf, stored)) in names.into_iter().enumerate() {
        let mut t = src.load(&hf, &stored)?;
        if let Some((module, delta)) = deltas.remove(&hf) {
            if t.dims() != delta.dims() {
                return Err(Error::Shape { name: format!("{hf} (adapter delta of {module})"), expected: t.dims().to_vec(), found: delta.dims().to_vec() });
            }
            t = (t + delta)?;
            merged.push(module);
        }
        tensors.push((hf, t.contiguous()?));
        progress(i + 1, total);
    }
    if let Some(name) = deltas.keys().min() {
        return Err(Error::invalid("adapter", format!("it adapts '{name}', which {} does not hold", base.path().display())));
    }
    merged.sort();

    let dir = staging.path();
    let mut notes = Vec::new();
    let st = dir.join("model.safetensors");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata), &st)
        .map_err(|e| Error::format(&st, format!("writing safetensors: {e}")))?;
    let n_tensors = tensors.len();
    drop(tensors);
    match &src {
        Source::Dir { dir: base_dir, .. } => {
            let mut config = read_config(base_dir)?;
            // The weights are f32 now, whatever the base stored.
            if let Some(obj) = config.as_object_mut() {
                obj.insert("torch_dtype".into(), json!("float32"));
                if obj.contains_key("dtype") {
                    obj.insert("dtype".into(), json!("float32"));
                }
            }
            write_json(&dir.join("config.json"), &config)?;
            let mut tokenizer = false;
            for name in TOKENIZER_FILES.iter().chain(&["generation_config.json"]) {
                let from = base_dir.join(name);
                if from.is_file() {
                    let to = dir.join(name);
                    std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
                    tokenizer |= matches!(*name, "tokenizer.json" | "tokenizer.model");
                }
            }
            if !tokenizer {
                notes.push(format!("{} has no tokenizer.json or tokenizer.model: the merged directory has no tokenizer", base_dir.display()));
            }
        }
        Source::Gguf { g, arch, .. } => {
            let config = gguf_config(g, arch)?;
            write_json(&dir.join("config.json"), &config)?;
            if g.get("tokenizer.ggml.model").is_some() {
                write_gguf_tokenizer(g, dir, config["max_position_embeddings"].as_u64().unwrap_or(0))?;
            } else {
                notes.push(format!("{} has no tokenizer metadata: the merged directory has no tokenizer", g.path().display()));
            }
        }
    }
    let bytes = std::fs::metadata(&st).map_err(|e| Error::io(&st, e))?.len();
    let files = staging.finish()?;
    let out = staging.out().to_path_buf();
    staging.commit()?;
    Ok(MergeReport { out, tensors: n_tensors, merged, files, bytes, notes })
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::format(path, e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Where the base's tensors come from.
enum Source {
    Dir { dir: PathBuf, w: SafetensorsWeights },
    Gguf { g: GgufFile, arch: String, layout: QkLayout },
}

impl Source {
    fn open(base: &ModelLocation) -> Result<Self> {
        match base {
            ModelLocation::Dir(dir) => Ok(Source::Dir { dir: dir.clone(), w: SafetensorsWeights::open_dir(dir)? }),
            ModelLocation::Gguf(path) => {
                let g = GgufFile::open(path)?;
                let arch = g.architecture()?.to_string();
                if !GGUF_ARCHITECTURES.iter().any(|(a, _)| *a == arch) {
                    let ok: Vec<&str> = GGUF_ARCHITECTURES.iter().map(|(a, _)| *a).collect();
                    return Err(Error::unsupported(path, format!("GGUF architecture '{arch}' for a Hugging Face directory (supported: {})", ok.join(", "))));
                }
                let layout = if arch == "llama" {
                    let c = LlamaConfig::from_gguf(&g)?;
                    QkLayout::GgufLlama { heads: c.num_heads, kv_heads: c.num_kv_heads }
                } else {
                    QkLayout::Hf
                };
                Ok(Source::Gguf { g, arch, layout })
            }
        }
    }

    /// `(Hugging Face name, stored name)` of every tensor, sorted by Hugging Face name.
    fn names(&self) -> Result<Vec<(String, String)>> {
        let mut out = match self {
            Source::Dir { w, .. } => w.names().map(|n| (n.to_string(), n.to_string())).collect::<Vec<_>>(),
            Source::Gguf { g, arch, .. } => g
                .tensors
                .iter()
                .map(|t| {
                    names::gguf_to_hf(arch, &t.name).map(|hf| (hf, t.name.clone())).ok_or_else(|| {
                        Error::unsupported(g.path(), format!("tensor '{}' (it has no Hugging Face equivalent, so this GGUF cannot be written as a Hugging Face directory)", t.name))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        };
        out.sort();
        Ok(out)
    }

    /// A tensor as f32 in Hugging Face row order.
    fn load(&self, hf: &str, stored: &str) -> Result<Tensor> {
        match self {
            Source::Dir { w, .. } => w.load(stored, DType::F32, &Device::Cpu),
            Source::Gguf { g, layout, .. } => {
                let t = g.qtensor(stored, &Device::Cpu)?.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
                // llama.cpp permutes q/k weights and biases alike.
                match hf.strip_suffix(".weight").or_else(|| hf.strip_suffix(".bias")) {
                    Some(module) => layout.unpermute(module, &t),
                    None => Ok(t),
                }
            }
        }
    }
}

/// `config.json` for a Llama-family GGUF, from the same metadata plinth's GGUF loader reads.
fn gguf_config(g: &GgufFile, arch: &str) -> Result<Value> {
    let c = LlamaConfig::from_gguf(g)?;
    if let Some(w) = c.layer_windows.iter().flatten().next() {
        return Err(Error::unsupported(g.path(), format!("sliding-window attention ({arch}.attention.sliding_window = {w}) in a Hugging Face directory")));
    }
    let class = GGUF_ARCHITECTURES.iter().find(|(a, _)| *a == arch).map_or("LlamaForCausalLM", |(_, c)| *c);
    let mut cfg = json!({
        "model_type": arch,
        "architectures": [class],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": f32_shortest(c.rms_norm_eps),
        "rope_theta": f32_shortest(c.rope_theta),
        "hidden_act": "silu",
        "tie_word_embeddings": c.tie_word_embeddings,
        "torch_dtype": "float32",
    });
    let obj = cfg.as_object_mut().expect("a JSON object");
    match c.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            obj.insert("rope_scaling".into(), json!({ "rope_type": "linear", "factor": factor }));
        }
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position }) => {
            obj.insert(
                "rope_scaling".into(),
                json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position,
                }),
            );
        }
    }
    match arch {
        "llama" => {
            obj.insert("attention_bias".into(), json!(g.tensor_info("blk.0.attn_q.bias").is_some()));
            obj.insert("mlp_bias".into(), json!(false));
        }
        "qwen3" => {
            obj.insert("attention_bias".into(), json!(g.tensor_info("blk.0.attn_q.bias").is_some()));
            obj.insert("use_sliding_window".into(), json!(false));
        }
        _ => {
            obj.insert("use_sliding_window".into(), json!(false));
        }
    }
    for (key, meta) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")] {
        if let Some(id) = g.get_usize(meta) {
            obj.insert(key.into(), json!(id));
        }
    }
    Ok(cfg)
}

/// GGUF stores these floats as f32: `1e-5`, not `9.999999747378752e-6`.
fn f32_shortest(x: f64) -> f64 {
    (x as f32).to_string().parse().unwrap_or(x)
}

/// `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` from the tokenizer a
/// GGUF describes. BOS / EOS insertion becomes a post-processor in `tokenizer.json`, where
/// transformers' `PreTrainedTokenizerFast` applies it (plinth never doubles it).
fn write_gguf_tokenizer(g: &GgufFile, dir: &Path, context: u64) -> Result<()> {
    let tok = Tokenizer::from_gguf(g)?;
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i));
    let meta_id = |key: &str| g.get_usize(key).and_then(|i| u32::try_from(i).ok());
    let bos = tok.bos_id().and_then(|id| tok.token_text(id).map(|t| (t, id)));
    let eos = tok.eos_ids().first().and_then(|&id| tok.token_text(id).map(|t| (t, id)));
    let add_bos = tok.add_bos() && bos.is_some();
    let add_eos = g.get("tokenizer.ggml.add_eos_token").and_then(|v| v.as_bool()).unwrap_or(false) && eos.is_some();

    let mut inner = tok.inner().clone();
    if add_bos || add_eos {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut special = Vec::new();
        if let (true, Some((t, id))) = (add_bos, &bos) {
            single.push(format!("{t}:0"));
            pair.push(format!("{t}:0"));
            special.push((t.clone(), *id));
        }
        single.push("$A:0".to_string());
        pair.push("$A:0".to_string());
        if let (true, Some((t, id))) = (add_eos, &eos) {
            single.push(format!("{t}:0"));
            pair.push(format!("{t}:0"));
            special.push((t.clone(), *id));
        }
        if let (true, Some((t, _))) = (add_bos, &bos) {
            pair.push(format!("{t}:1"));
        }
        pair.push("$B:1".to_string());
        if let (true, Some((t, _))) = (add_eos, &eos) {
            pair.push(format!("{t}:1"));
        }
        special.dedup();
        let post = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(single.join(" "))
            .and_then(|b| b.try_pair(pair.join(" ")))
            .map_err(|e| Error::Tokenizer(format!("BOS/EOS template: {e}")))?
            .special_tokens(special)
            .build()
            .map_err(|e| Error::Tokenizer(format!("BOS/EOS template: {e}")))?;
        inner.with_post_processor(Some(post));
    }
    let path = dir.join("tokenizer.json");
    inner.save(&path, false).map_err(|e| Error::format(&path, format!("writing the tokenizer: {e}")))?;

    let mut tc = Map::new();
    tc.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    tc.insert("bos_token".into(), json!(bos.as_ref().map(|(t, _)| t)));
    tc.insert("eos_token".into(), json!(eos.as_ref().map(|(t, _)| t)));
    if let Some(t) = text(meta_id("tokenizer.ggml.unknown_token_id")) {
        tc.insert("unk_token".into(), json!(t));
    }
    if let Some(t) = text(meta_id("tokenizer.ggml.padding_token_id")) {
        tc.insert("pad_token".into(), json!(t));
    }
    tc.insert("add_bos_token".into(), json!(add_bos));
    tc.insert("add_eos_token".into(), json!(add_eos));
    tc.insert("clean_up_tokenization_spaces".into(), json!(false));
    if context > 0 {
        tc.insert("model_max_length".into(), json!(context));
    }
    if let Some(t) = tok.chat_template() {
        tc.insert("chat_template".into(), json!(t));
    }
    write_json(&dir.join("tokenizer_config.json"), &Value::Object(tc))?;

    let mut gc = Map::new();
    if let Some((_, id)) = &bos {
        gc.insert("bos_token_id".into(), json!(id));
    }
    match tok.eos_ids() {
        [] => {}
        [one] => {
            gc.insert("eos_token_id".into(), json!(one));
        }
        many => {
            gc.insert("eos_token_id".into(), json!(many));
        }
    }
    if !gc.is_empty() {
        write_json(&dir.join("generation_config.json"), &Value::Object(gc))?;
    }
    Ok(())
}

