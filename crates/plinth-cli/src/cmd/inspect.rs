//! `plinth inspect`: what a model is, read from its headers without loading the weights.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use plinth_core::{ModelCard, Task};
use plinth_io::fetch::ModelLocation;
use plinth_io::safetensors::{read_config, SafetensorsWeights};
use plinth_io::GgufFile;
use plinth_tokenize::Tokenizer;
use serde::Serialize;

use crate::cli::InspectArgs;
use crate::load;

#[derive(Serialize)]
struct TypeShare {
    dtype: String,
    tensors: usize,
    bytes: usize,
    share: f64,
}

#[derive(Serialize)]
struct Report {
    path: String,
    format: &'static str,
    architecture: String,
    supported: bool,
    parameters: usize,
    file_bytes: usize,
    context_length: Option<usize>,
    vocab_size: Option<usize>,
    layers: Option<usize>,
    hidden_size: Option<usize>,
    tensor_types: Vec<TypeShare>,
    /// Bytes the weights take once loaded (safetensors load as f32 unless quantized in situ).
    memory_bytes: usize,
    quantize: Option<String>,
    special_tokens: Vec<(String, u32)>,
    has_chat_template: bool,
    card: ModelCard,
    is_llm: bool,
}

fn shares(items: impl Iterator<Item = (String, usize)>) -> Vec<TypeShare> {
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (t, b) in items {
        let e = by.entry(t).or_default();
        e.0 += 1;
        e.1 += b;
    }
    let total: usize = by.values().map(|v| v.1).sum::<usize>().max(1);
    let mut v: Vec<TypeShare> = by
        .into_iter()
        .map(|(dtype, (tensors, bytes))| TypeShare { dtype, tensors, bytes, share: bytes as f64 / total as f64 })
        .collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    v
}

fn gguf_report(g: &GgufFile) -> Result<Report> {
    let arch = g.architecture()?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let tok = Tokenizer::from_gguf(g);
    let (special_tokens, has_chat_template, vocab) = match &tok {
        Ok(t) => (t.special_tokens(), t.chat_template().is_some(), Some(t.vocab_size())),
        Err(_) => (Vec::new(), g.get("tokenizer.chat_template").is_some(), None),
    };
    let card = ModelCard::text_decoder(&arch, has_chat_template);
    Ok(Report {
        path: g.path().display().to_string(),
        format: "gguf",
        supported: plinth_models::is_supported(&arch),
        parameters: g.tensors.iter().map(|t| t.elem_count()).sum(),
        file_bytes: g.file_size(),
        context_length: g.get_usize(&key("context_length")),
        vocab_size: g.get_usize(&key("vocab_size")).or(vocab),
        layers: g.get_usize(&key("block_count")),
        hidden_size: g.get_usize(&key("embedding_length")),
        tensor_types: shares(g.tensors.iter().map(|t| (t.dtype.name().to_string(), t.size))),
        memory_bytes: g.tensors.iter().map(|t| t.size).sum(),
        quantize: None,
        special_tokens,
        has_chat_template,
        is_llm: card.is_llm(),
        card,
        architecture: arch,
    })
}

/// Loaded size of one safetensors tensor: quantized linear weights when `q` is asked for and the
/// row length fits its blocks (the rule `Weights` applies), f32 otherwise.
fn loaded_bytes(name: &str, shape: &[usize], q: Option<GgmlDType>) -> usize {
    let elems: usize = shape.iter().product();
    let embedding = ["embed_tokens", "wte", "wpe"].iter().any(|e| name.contains(e));
    match q {
        Some(q) if shape.len() == 2 && name.ends_with(".weight") && !embedding && shape[1].is_multiple_of(q.block_size()) => {
            elems / q.block_size() * q.type_size()
        }
        _ => elems * 4,
    }
}

/// The task of an encoder checkpoint's head, from `architectures[0]`.
fn encoder_head(cfg: &serde_json::Value) -> Option<Task> {
    let name = cfg["architectures"][0].as_str().unwrap_or("");
    if name.ends_with("ForSequenceClassification") {
        let labels = cfg["id2label"].as_object().map_or(cfg["num_labels"].as_u64().unwrap_or(2) as usize, |m| m.len());
        Some(if labels == 1 { Task::Reranking } else { Task::Classification })
    } else if name.ends_with("ForTokenClassification") {
        Some(Task::TokenClassification)
    } else if name.ends_with("ForQuestionAnswering") {
        Some(Task::QuestionAnswering)
    } else {
        None
    }
}

fn dir_report(dir: &std::path::Path, quantize: Option<&str>) -> Result<Report> {
    let q = quantize.map(plinth_models::parse_quantize).transpose()?;
    let cfg = read_config(dir)?;
    let arch = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("unknown").to_string();
    let w = SafetensorsWeights::open_dir(dir)?;
    let infos = w.infos();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).ok();
    let has_chat_template = tok.as_ref().is_some_and(|t| t.chat_template().is_some());
    let card = if plinth_models::is_image_text_type(&arch) {
        ModelCard::image_text(&arch)
    } else if cfg.get("vision_config").is_some() && plinth_models::is_supported(&arch) {
        ModelCard::vision_language(&arch)
    } else if plinth_models::is_encoder_type(&arch) {
        ModelCard::text_encoder(&arch, encoder_head(&cfg))
    } else if plinth_models::is_seq2seq_type(&arch) {
        ModelCard::text_seq2seq(&arch)
    } else {
        ModelCard::text_decoder(&arch, has_chat_template)
    };
    // GPT-2 and seq2seq configs spell the sizes differently (encoder-decoder models count
    // their encoder layers here); multimodal configs keep the text model's in `text_config`.
    let u = |k: &str| {
        let cfg = if cfg.get("text_config").is_some() && cfg.get(k).is_none() { &cfg["text_config"] } else { &cfg };
        let alts: &[&str] = match k {
            "hidden_size" => &["n_embd", "d_model"],
            "num_hidden_layers" => &["n_layer", "encoder_layers", "num_layers"],
            "max_position_embeddings" => &["n_positions"],
            _ => &[],
        };
        std::iter::once(k).chain(alts.iter().copied()).find_map(|k| cfg.get(k)).and_then(|v| v.as_u64()).map(|v| v as usize)
    };
    Ok(Report {
        path: dir.display().to_string(),
        format: "safetensors",
        supported: plinth_models::is_supported(&arch)
            || plinth_models::is_encoder_type(&arch)
            || plinth_models::is_seq2seq_type(&arch)
            || plinth_models::is_image_text_type(&arch),
        parameters: infos.iter().map(|i| i.2.iter().product::<usize>()).sum(),
        file_bytes: infos.iter().map(|i| i.3).sum(),
        context_length: u("max_position_embeddings"),
        vocab_size: u("vocab_size"),
        layers: u("num_hidden_layers"),
        hidden_size: u("hidden_size"),
        tensor_types: shares(infos.iter().map(|i| (i.1.clone(), i.3))),
        memory_bytes: infos.iter().map(|i| loaded_bytes(&i.0, &i.2, q)).sum(),
        quantize: quantize.map(str::to_string),
        special_tokens: tok.as_ref().map(|t| t.special_tokens()).unwrap_or_default(),
        has_chat_template,
        is_llm: card.is_llm(),
        card,
        architecture: arch,
    })
}

/// A diffusers pipeline folder: every component's weights counted together, the pipeline class
/// as the architecture, the text encoder's token limit as the context.
fn diffusers_report(dir: &std::path::Path) -> Result<Report> {
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model_index.json"))?)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", dir.join("model_index.json").display()))?;
    let arch = index["_class_name"].as_str().unwrap_or("unknown").to_string();
    let mut infos = Vec::new();
    for part in ["unet", "vae", "text_encoder", "text_encoder_2"] {
        let sub = dir.join(part);
        if sub.is_dir() {
            infos.extend(SafetensorsWeights::open_stem(&sub, &["diffusion_pytorch_model", "model"])?.infos());
        }
    }
    let text = read_config(&dir.join("text_encoder")).ok();
    let num = |k: &str| text.as_ref().and_then(|c| c.get(k)).and_then(|v| v.as_u64()).map(|v| v as usize);
    let card = ModelCard::text_to_image(&arch);
    Ok(Report {
        path: dir.display().to_string(),
        format: "diffusers",
        supported: ["StableDiffusionPipeline", "StableDiffusionXLPipeline"].contains(&arch.as_str()),
        parameters: infos.iter().map(|i| i.2.iter().product::<usize>()).sum(),
        file_bytes: infos.iter().map(|i| i.3).sum(),
        context_length: num("max_position_embeddings"),
        vocab_size: num("vocab_size"),
        layers: None,
        hidden_size: None,
        tensor_types: shares(infos.iter().map(|i| (i.1.clone(), i.3))),
        memory_bytes: infos.iter().map(|i| i.2.iter().product::<usize>() * 4).sum(),
        quantize: None,
        special_tokens: Vec::new(),
        has_chat_template: false,
        is_llm: card.is_llm(),
        card,
        architecture: arch,
    })
}

pub fn run(a: InspectArgs) -> Result<()> {
    let loc = load::resolve(&a.model)?;
    let r = match &loc {
        ModelLocation::Gguf(_) if a.quantize.is_some() => {
            anyhow::bail!("--quantize applies to safetensors models; {} is a GGUF file and already quantized", loc.path().display())
        }
        ModelLocation::Gguf(p) => gguf_report(&GgufFile::open(p)?)?,
        ModelLocation::Dir(d) if plinth_tasks::imagine::is_text_to_image_dir(d) => diffusers_report(d)?,
        ModelLocation::Dir(d) => dir_report(d, a.quantize.as_deref())?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let opt = |v: Option<usize>| v.map_or("unknown".to_string(), |v| v.to_string());
    println!("model          {}", r.path);
    println!("format         {}", r.format);
    println!("architecture   {}{}", r.architecture, if r.supported { "" } else { " (not supported by this plinth)" });
    println!("parameters     {} ({:.1} M)", r.parameters, r.parameters as f64 / 1e6);
    println!("size           {:.1} MB on disk", r.file_bytes as f64 / 1e6);
    match &r.quantize {
        Some(q) => println!("in memory      {:.1} MB with --quantize {q}", r.memory_bytes as f64 / 1e6),
        None => println!("in memory      {:.1} MB", r.memory_bytes as f64 / 1e6),
    }
    println!("context        {} tokens{}", opt(r.context_length), if r.format == "diffusers" { " (prompt, read by the text encoder)" } else { "" });
    println!("vocabulary     {}", opt(r.vocab_size));
    println!("layers         {}   hidden size {}", opt(r.layers), opt(r.hidden_size));
    println!("tensor types");
    for t in &r.tensor_types {
        println!("  {:<6} {:>4} tensors {:>10.1} MB  {:>5.1}%", t.dtype, t.tensors, t.bytes as f64 / 1e6, t.share * 100.0);
    }
    let specials: Vec<String> = r.special_tokens.iter().map(|(s, id)| format!("{s}={id}")).collect();
    println!("special tokens {}", if specials.is_empty() { "none".into() } else { specials.join(" ") });
    println!("chat template  {}", if r.has_chat_template { "yes" } else { "no" });
    let names = |v: &[plinth_core::Modality]| v.iter().map(|m| format!("{m:?}").to_lowercase()).collect::<Vec<_>>().join(", ");
    println!("model card");
    let style = match r.card.family {
        "encoder" => "BERT-style: understands text",
        "encoder-decoder" => "T5/BART-style: rewrites one text into another",
        "dual-encoder" => "CLIP-style: images and texts embedded in one space",
        "vision-language decoder" => "reads images and text, generates text",
        "latent diffusion" => "Stable Diffusion-style: generates images from text",
        _ => "GPT-style: generates text",
    };
    println!("  family       {} ({style})", r.card.family);
    let plus = |v: &[plinth_core::Modality]| v.iter().map(|m| format!("{m:?}").to_lowercase()).collect::<Vec<_>>().join(" + ");
    println!("  modality     {} → {}", plus(&r.card.inputs), plus(&r.card.outputs));
    println!("  input        {}", names(&r.card.inputs));
    println!("  output       {}", names(&r.card.outputs));
    let tasks: Vec<String> = r.card.tasks.iter().map(|t| serde_json::to_value(t).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()).collect();
    println!("  tasks        {}", tasks.join(", "));
    if r.is_llm {
        let out = if r.card.family == "encoder" { names(&r.card.outputs) } else { "text".into() };
        println!("  kind         LLM: a text-only foundation model (text in, {out} out)");
    } else {
        println!("  kind         multimodal foundation model");
    }
    Ok(())
}
