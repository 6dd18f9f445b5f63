//! Tiny random encoders (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ModernBERT, bare and with
//! every task head) against transformers: hidden states at real positions, head logits and
//! BERT's pooler output for a padded batch (`fixtures/encoders/<name>/reference.safetensors`,
//! written by `scripts/make_encoder_fixtures.py`; ModernBERT's by
//! `scripts/make_modernbert_fixture.py`). Also: a row run alone equals its row in the padded
//! batch, heads and labels are read from the config, and broken directories or batches give
//! errors that say what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{safetensors, DType, Device, Tensor};
use plinth_core::Error;
use plinth_models::{is_encoder_type, load_encoder, Encoder, EncoderBatch, EncoderHead};
use plinth_testutil::{assert_close, fixture, max_abs_diff};

/// Max |Δ| against transformers (f32 hidden states, logits and pooler output).
const TOL: f32 = 1e-4;
/// Max |Δ| between a row run alone and the same row inside the padded batch.
const ROW_TOL: f32 = 1e-5;

const FIXTURES: &[&str] = &[
    "tiny-bert",
    "tiny-bert-seqcls",
    "tiny-bert-tokcls",
    "tiny-bert-qa",
    "tiny-bert-rerank",
    "tiny-roberta",
    "tiny-roberta-seqcls",
    "tiny-roberta-tokcls",
    "tiny-roberta-qa",
    "tiny-xlm-roberta",
    "tiny-xlm-roberta-seqcls",
    "tiny-distilbert",
    "tiny-distilbert-seqcls",
    "tiny-distilbert-tokcls",
    "tiny-distilbert-qa",
    "tiny-modernbert",
    "tiny-modernbert-seqcls",
    "tiny-modernbert-tokcls",
    "tiny-modernbert-qa",
];

fn dir(name: &str) -> PathBuf {
    fixture(&format!("encoders/{name}"))
}

fn load(name: &str) -> Box<dyn Encoder> {
    load_encoder(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Reference {
    t: HashMap<String, Tensor>,
}

impl Reference {
    fn open(name: &str) -> Self {
        Reference { t: safetensors::load(dir(name).join("reference.safetensors"), &Device::Cpu).unwrap() }
    }

    fn rows(&self, key: &str) -> Vec<Vec<u32>> {
        self.t[key].to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap().into_iter().map(|r| r.into_iter().map(|x| x as u32).collect()).collect()
    }

    fn lengths(&self) -> Vec<usize> {
        self.rows("attention_mask").iter().map(|r| r.iter().filter(|&&m| m != 0).count()).collect()
    }

    /// The batch exactly as transformers saw it: ids, types and mask as stored.
    fn batch(&self) -> EncoderBatch {
        let u32s = |k: &str| self.t[k].to_dtype(DType::I64).unwrap().to_dtype(DType::U32).unwrap();
        EncoderBatch {
            ids: u32s("input_ids"),
            type_ids: u32s("token_type_ids"),
            mask: self.t["attention_mask"].to_dtype(DType::F32).unwrap(),
            lengths: self.lengths(),
        }
    }

    fn get(&self, key: &str) -> Option<&Tensor> {
        self.t.get(key)
    }
}

fn is_token_level(head: EncoderHead) -> bool {
    matches!(head, EncoderHead::TokenClassification | EncoderHead::QuestionAnswering)
}

/// `[B, T, ...]` real positions only, flattened row by row.
fn real_positions(x: &Tensor, lengths: &[usize]) -> Vec<f32> {
    lengths.iter().enumerate().flat_map(|(i, &n)| x.get(i).unwrap().narrow(0, 0, n).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

fn flat(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Runs the reference batch and compares; returns (hidden, logits, pooled) max |Δ|.
fn check(name: &str) -> (f32, Option<f32>, Option<f32>) {
    let r = Reference::open(name);
    let m = load(name);
    let lengths = r.lengths();
    let out = m.forward(&r.batch()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = r.get("last_hidden_state").unwrap();
    assert_eq!(out.hidden.dims(), want.dims(), "{name}: hidden shape");
    let (got, want) = (real_positions(&out.hidden, &lengths), real_positions(want, &lengths));
    assert_close(&format!("{name} hidden"), &got, &want, TOL);
    let dh = max_abs_diff(&got, &want).0;

    let dl = match (out.logits.as_ref(), r.get("logits")) {
        (None, None) => None,
        (Some(g), Some(w)) => {
            assert_eq!(g.dims(), w.dims(), "{name}: logits shape");
            let (g, w) = if is_token_level(m.info().head) { (real_positions(g, &lengths), real_positions(w, &lengths)) } else { (flat(g), flat(w)) };
            assert_close(&format!("{name} logits"), &g, &w, TOL);
            Some(max_abs_diff(&g, &w).0)
        }
        (g, w) => panic!("{name}: logits present in plinth: {}, in the reference: {}", g.is_some(), w.is_some()),
    };
    let dp = r.get("pooler_output").map(|w| {
        let g = out.pooled.as_ref().unwrap_or_else(|| panic!("{name}: no pooled output"));
        assert_eq!(g.dims(), w.dims(), "{name}: pooled shape");
        assert_close(&format!("{name} pooled"), &flat(g), &flat(w), TOL);
        max_abs_diff(&flat(g), &flat(w)).0
    });
    let opt = |d: Option<f32>| d.map_or("-".to_string(), |d| format!("{d:.2e}"));
    println!("{name}: max |Δ| hidden {dh:.2e}, logits {}, pooled {}", opt(dl), opt(dp));
    (dh, dl, dp)
}

macro_rules! parity {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test]
        fn $test() {
            check($name);
        })*
    };
}

parity! {
    bert => "tiny-bert",
    bert_seqcls => "tiny-bert-seqcls",
    bert_tokcls => "tiny-bert-tokcls",
    bert_qa => "tiny-bert-qa",
    bert_rerank => "tiny-bert-rerank",
    roberta => "tiny-roberta",
    roberta_seqcls => "tiny-roberta-seqcls",
    roberta_tokcls => "tiny-roberta-tokcls",
    roberta_qa => "tiny-roberta-qa",
    xlm_roberta => "tiny-xlm-roberta",
    xlm_roberta_seqcls => "tiny-xlm-roberta-seqcls",
    distilbert => "tiny-distilbert",
    distilbert_seqcls => "tiny-distilbert-seqcls",
    distilbert_tokcls => "tiny-distilbert-tokcls",
    distilbert_qa => "tiny-distilbert-qa",
    modernbert => "tiny-modernbert",
    modernbert_seqcls => "tiny-modernbert-seqcls",
    modernbert_tokcls => "tiny-modernbert-tokcls",
    modernbert_qa => "tiny-modernbert-qa",
}

#[test]
fn tiny_bert_has_pooler_output_reference() {
    let (_, _, pooled) = check("tiny-bert");
    assert!(pooled.is_some(), "tiny-bert's reference should carry pooler_output");
}

/// Each row alone (batch of one, no padding) gives what it gave inside the padded batch.
#[test]
fn rows_alone_equal_padded_batch() {
    for name in FIXTURES {
        let r = Reference::open(name);
        let m = load(name);
        let out = m.forward(&r.batch()).unwrap();
        let (ids, types, lengths) = (r.rows("input_ids"), r.rows("token_type_ids"), r.lengths());
        let pad = m.info().pad_token_id;
        for (i, &n) in lengths.iter().enumerate() {
            let one = EncoderBatch::new(&[ids[i][..n].to_vec()], Some(&[types[i][..n].to_vec()]), pad).unwrap();
            let alone = m.forward(&one).unwrap();
            let what = format!("{name} row {i} alone vs padded");
            let padded_row = out.hidden.get(i).unwrap().narrow(0, 0, n).unwrap();
            assert_close(&format!("{what}: hidden"), &flat(&alone.hidden), &flat(&padded_row), ROW_TOL);
            if let (Some(a), Some(p)) = (&alone.logits, &out.logits) {
                let p = p.get(i).unwrap();
                let p = if is_token_level(m.info().head) { p.narrow(0, 0, n).unwrap() } else { p };
                assert_close(&format!("{what}: logits"), &flat(a), &flat(&p), ROW_TOL);
            }
            if let (Some(a), Some(p)) = (&alone.pooled, &out.pooled) {
                assert_close(&format!("{what}: pooled"), &flat(a), &flat(&p.get(i).unwrap()), ROW_TOL);
            }
        }
    }
}

fn config(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("config.json")).unwrap()).unwrap()
}

#[test]
fn head_kind_and_labels_come_from_the_config() {
    for name in FIXTURES {
        let m = load(name);
        let info = m.info();
        let cfg = config(name);
        let want_head = if name.ends_with("-seqcls") || name.ends_with("-rerank") {
            EncoderHead::SequenceClassification
        } else if name.ends_with("-tokcls") {
            EncoderHead::TokenClassification
        } else if name.ends_with("-qa") {
            EncoderHead::QuestionAnswering
        } else {
            EncoderHead::None
        };
        assert_eq!(info.head, want_head, "{name}: head");
        assert_eq!(info.architecture, cfg["model_type"].as_str().unwrap(), "{name}: architecture");
        let want_labels: Vec<String> = match want_head {
            // transformers leaves the default two-label map out of config.json: the count
            // then comes from the classifier's weight, as the reference logits show.
            EncoderHead::SequenceClassification | EncoderHead::TokenClassification => match cfg.get("id2label").and_then(|m| m.as_object()) {
                Some(map) => (0..map.len()).map(|i| map[&i.to_string()].as_str().unwrap().to_string()).collect(),
                None => {
                    let n = Reference::open(name).get("logits").unwrap().dims().last().copied().unwrap();
                    (0..n).map(|i| format!("LABEL_{i}")).collect()
                }
            },
            _ => Vec::new(),
        };
        assert_eq!(info.labels, want_labels, "{name}: labels");
        if name.ends_with("-rerank") {
            assert_eq!(info.labels.len(), 1, "{name}: a reranker scores with one label");
        }
        let hidden = cfg.get("hidden_size").or_else(|| cfg.get("dim")).and_then(|v| v.as_u64()).unwrap() as usize;
        assert_eq!(info.hidden_size, hidden, "{name}: hidden size");
        let max_pos = cfg["max_position_embeddings"].as_u64().unwrap() as usize;
        let offset = if name.contains("roberta") { info.pad_token_id as usize + 1 } else { 0 };
        assert_eq!(info.max_positions, max_pos - offset, "{name}: max positions");
        assert!(info.parameters > 0);
        let types = cfg.get("type_vocab_size").map_or(0, |v| v.as_u64().unwrap() as usize);
        assert_eq!(info.type_vocab_size, types, "{name}: token types");
    }
}

#[test]
fn labels_default_to_label_i_without_id2label() {
    // tiny-bert-seqcls has named labels; without them the classifier's rows give the count.
    let d = copy_fixture("tiny-bert-seqcls", "labels");
    let n = config("tiny-bert-seqcls")["id2label"].as_object().unwrap().len();
    edit_config(&d, |c| {
        c.remove("id2label");
        c.remove("label2id");
    });
    let m = load_encoder(&d).unwrap();
    let want: Vec<String> = (0..n).map(|i| format!("LABEL_{i}")).collect();
    assert_eq!(m.info().labels, want);
}

#[test]
fn encoder_types_are_told_apart_from_decoders() {
    for t in ["bert", "roberta", "xlm-roberta", "camembert", "distilbert", "modernbert"] {
        assert!(is_encoder_type(t), "{t}");
    }
    for t in ["llama", "gpt2", "qwen3", "mamba9"] {
        assert!(!is_encoder_type(t), "{t}");
    }
}

// ---- broken directories and batches ------------------------------------------------------

/// A private copy of a fixture directory that a test may break.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let src = dir(name);
    let dst = std::env::temp_dir().join(format!("plinth-enc-bad-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    dst
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> Error {
    match load_encoder(dir) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn unknown_model_type_lists_supported_encoders() {
    let d = copy_fixture("tiny-bert", "type");
    edit_config(&d, |c| {
        c.insert("model_type".into(), "mamba9".into());
    });
    let e = load_err(&d);
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e:?}");
    let s = e.to_string();
    assert!(s.contains("unknown architecture 'mamba9'") && s.contains("roberta") && s.contains("distilbert"), "{s}");
}

#[test]
fn decoder_directory_is_not_an_encoder() {
    let e = load_err(&fixture("tiny-qwen3"));
    assert!(matches!(&e, Error::UnknownArchitecture { name, .. } if name == "qwen3"), "{e:?}");
}

#[test]
fn missing_tensor_is_named() {
    for (name, suffix) in [("tiny-roberta-seqcls", "encoder.layer.1.attention.self.key.weight"), ("tiny-distilbert", "transformer.layer.0.ffn.lin2.weight")] {
        let d = copy_fixture(name, "tensor");
        let path = d.join("model.safetensors");
        let mut all = safetensors::load(&path, &Device::Cpu).unwrap();
        let victim = all.keys().find(|k| k.ends_with(suffix)).unwrap_or_else(|| panic!("{name} has no *{suffix}")).clone();
        all.remove(&victim);
        safetensors::save(&all, &path).unwrap();
        let e = load_err(&d);
        assert!(matches!(e, Error::Missing { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(&victim), "{name}: {e}");
    }
}

#[test]
fn missing_head_tensor_is_named() {
    let d = copy_fixture("tiny-bert-qa", "head");
    let path = d.join("model.safetensors");
    let mut all = safetensors::load(&path, &Device::Cpu).unwrap();
    all.remove("qa_outputs.weight").expect("a QA checkpoint has qa_outputs");
    safetensors::save(&all, &path).unwrap();
    let e = load_err(&d).to_string();
    assert!(e.contains("qa_outputs.weight") && e.contains("missing"), "{e}");
}

#[test]
fn heads_not_dividing_hidden_is_a_config_error() {
    for (name, key) in [("tiny-bert", "num_attention_heads"), ("tiny-xlm-roberta", "num_attention_heads"), ("tiny-distilbert", "n_heads"), ("tiny-modernbert", "num_attention_heads")] {
        let d = copy_fixture(name, "heads");
        let cfg = config(name);
        let hidden = cfg.get("hidden_size").or_else(|| cfg.get("dim")).and_then(|v| v.as_u64()).unwrap();
        let bad = (3..).find(|n| !hidden.is_multiple_of(*n)).unwrap();
        edit_config(&d, |c| {
            c.insert(key.into(), bad.into());
        });
        let e = load_err(&d);
        let s = e.to_string();
        assert!(matches!(e, Error::Format { .. }) && s.contains("config.json") && s.contains("not divisible"), "{name}: {s}");
    }
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let d = copy_fixture("tiny-bert", "shape");
    let inter = config("tiny-bert")["intermediate_size"].as_u64().unwrap();
    edit_config(&d, |c| {
        c.insert("intermediate_size".into(), (inter + 8).into());
    });
    let e = load_err(&d);
    assert!(matches!(e, Error::Shape { .. }), "{e:?}");
    let (s, want, found) = (e.to_string(), format!("[{}", inter + 8), format!("[{inter}"));
    assert!(s.contains("encoder.layer.0.intermediate.dense.") && s.contains(&want) && s.contains(&found), "{s}");
}

#[test]
fn config_missing_field_is_named() {
    let d = copy_fixture("tiny-roberta", "field");
    edit_config(&d, |c| {
        c.remove("num_hidden_layers");
    });
    let e = load_err(&d).to_string();
    assert!(e.contains("config.json") && e.contains("num_hidden_layers"), "{e}");
}

#[test]
fn unsupported_activation_is_named() {
    let d = copy_fixture("tiny-bert", "act");
    edit_config(&d, |c| {
        c.insert("hidden_act".into(), "gelu_10".into());
    });
    let e = load_err(&d).to_string();
    assert!(e.contains("hidden_act") && e.contains("gelu_10"), "{e}");
}

#[test]
fn bad_batches_are_rejected() {
    let m = load("tiny-bert");
    let info = m.info().clone();
    let b = EncoderBatch::new(&[vec![1, info.vocab_size as u32]], None, 0).unwrap();
    assert!(matches!(m.forward(&b), Err(Error::Invalid { .. })), "out-of-vocabulary id");
    let b = EncoderBatch::new(&[vec![1, 2]], Some(&[vec![0, info.type_vocab_size as u32]]), 0).unwrap();
    assert!(matches!(m.forward(&b), Err(Error::Invalid { .. })), "out-of-range token type");
    let b = EncoderBatch::new(&[vec![1; info.max_positions + 1]], None, 0).unwrap();
    assert!(matches!(m.forward(&b), Err(Error::ContextOverflow { .. })), "too long");
    let b = EncoderBatch::new(&[vec![1; info.max_positions]], None, 0).unwrap();
    assert!(m.forward(&b).is_ok(), "exactly max_positions tokens fit");
}

/// ModernBERT configs written before transformers 5 describe the layer pattern and thetas with
/// flat keys; they must give the same model.
#[test]
fn modernbert_old_style_config_gives_the_same_outputs() {
    let name = "tiny-modernbert-seqcls";
    let d = copy_fixture(name, "mb-old");
    edit_config(&d, |c| {
        let rope = c.remove("rope_parameters").unwrap();
        let types = c.remove("layer_types").unwrap();
        c.insert("global_rope_theta".into(), rope["full_attention"]["rope_theta"].clone());
        c.insert("local_rope_theta".into(), rope["sliding_attention"]["rope_theta"].clone());
        let every = types.as_array().unwrap().iter().skip(1).position(|t| t == "full_attention").unwrap() + 1;
        c.insert("global_attn_every_n_layers".into(), every.into());
    });
    let r = Reference::open(name);
    let (a, b) = (load(name).forward(&r.batch()).unwrap(), load_encoder(&d).unwrap().forward(&r.batch()).unwrap());
    assert_eq!(flat(&a.hidden), flat(&b.hidden));
    assert_eq!(flat(a.logits.as_ref().unwrap()), flat(b.logits.as_ref().unwrap()));
}

/// The sliding window matters in the fixture: widening it changes the outputs.
#[test]
fn modernbert_sliding_window_is_applied() {
    let name = "tiny-modernbert";
    let d = copy_fixture(name, "mb-window");
    edit_config(&d, |c| {
        c.insert("local_attention".into(), 1024.into());
    });
    let r = Reference::open(name);
    let lengths = r.lengths();
    let wide = load_encoder(&d).unwrap().forward(&r.batch()).unwrap();
    let want = real_positions(r.get("last_hidden_state").unwrap(), &lengths);
    assert!(max_abs_diff(&real_positions(&wide.hidden, &lengths), &want).0 > 1e-3, "a full-width window should differ");
}

/// The real all-MiniLM-L6-v2 (after `plinth pull all-minilm-l6-v2`), when it is there: it
/// loads as a bare BERT with no prefix and runs. Embedding quality is tested with pooling.
#[test]
fn real_minilm_loads_when_present() {
    let d = plinth_io::fetch::plinth_home().join("models").join("all-minilm-l6-v2");
    if !d.join("config.json").exists() {
        println!("skipping: {} is not there (plinth pull all-minilm-l6-v2)", d.display());
        return;
    }
    let m = load_encoder(&d).unwrap();
    let info = m.info();
    assert_eq!((info.architecture.as_str(), info.head, info.hidden_size, info.num_layers), ("bert", EncoderHead::None, 384, 6));
    let b = EncoderBatch::new(&[vec![101, 7592, 2088, 102], vec![101, 102]], None, 0).unwrap();
    let out = m.forward(&b).unwrap();
    assert_eq!(out.hidden.dims(), [2, 4, 384]);
    assert!(flat(&out.hidden).iter().all(|x| x.is_finite()));
}
