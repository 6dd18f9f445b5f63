//! Parity with the transformers 4.x pipelines and sentence-transformers' `CrossEncoder` on the
//! tiny random-weight checkpoints of `fixtures/encoders/` (`pipelines.json`, made by
//! `scripts/make_encoder_fixtures.py`): token classification under every aggregation strategy,
//! extractive question answering over many windows, text classification and cross-encoder
//! scores. Labels, words and offsets must be identical; scores within the tolerances below.
//! Also: wrong heads and bad settings are refused with a clear error, and awkward inputs
//! (empty, whitespace, emoji, very long) never panic.

use std::path::PathBuf;

use plinth_tasks::{
    Aggregation, ClassifyOptions, EncoderModel, NerOptions, Overflow, QaOptions, RerankOptions, ScoreFunction,
};
use serde_json::Value as Json;

/// Token-classification scores (softmax probabilities) vs the pipeline.
const NER_TOL: f32 = 1e-4;
/// Question-answering scores (start × end probabilities, summed over merged answers).
const QA_TOL: f32 = 1e-4;
/// Text-classification scores (softmax) and raw logits.
const CLASSIFY_TOL: f32 = 1e-4;
/// Cross-encoder scores vs `CrossEncoder.predict` (sigmoid), and raw logits.
const RERANK_TOL: f32 = 1e-4;

fn enc_dir(name: &str) -> PathBuf {
    plinth_testutil::fixture(&format!("encoders/{name}"))
}

fn pipelines() -> Json {
    let path = plinth_testutil::fixture("encoders/pipelines.json");
    serde_json::from_slice(&std::fs::read(path).expect("read pipelines.json")).expect("pipelines.json is JSON")
}

fn load(name: &str) -> EncoderModel {
    EncoderModel::load(&enc_dir(name)).unwrap_or_else(|e| panic!("load {name}: {e}"))
}

fn f(v: &Json) -> f32 {
    v.as_f64().expect("number") as f32
}

fn s(v: &Json) -> &str {
    v.as_str().expect("string")
}

fn u(v: &Json) -> usize {
    v.as_u64().expect("integer") as usize
}

fn list(v: &Json) -> &Vec<Json> {
    v.as_array().expect("list")
}

/// Tracks the largest score difference of a section and fails on the first one over `tol`.
struct Worst {
    what: &'static str,
    tol: f32,
    max: f32,
    n: usize,
}

impl Worst {
    fn new(what: &'static str, tol: f32) -> Self {
        Worst { what, tol, max: 0.0, n: 0 }
    }

    fn check(&mut self, got: f32, want: f32, ctx: &dyn Fn() -> String) {
        let d = (got - want).abs();
        assert!(d <= self.tol, "{}: {}: score {got} vs {want}, |Δ| = {d:e} > {:e}", self.what, ctx(), self.tol);
        self.max = self.max.max(d);
        self.n += 1;
    }

    fn report(&self) {
        assert!(self.n > 0, "{}: nothing was compared", self.what);
        println!("{}: {} scores compared, max |Δ| = {:e} (tolerance {:e})", self.what, self.n, self.max, self.tol);
    }
}

#[test]
fn token_classification_matches_pipeline() {
    let j = pipelines();
    let tc = &j["token_classification"];
    let texts: Vec<&str> = list(&tc["texts"]).iter().map(s).collect();
    let models = tc["models"].as_object().expect("models");
    assert!(models.len() >= 3, "expected the tokcls models, found {:?}", models.keys());
    let mut worst = Worst::new("token classification", NER_TOL);
    for (name, by_strategy) in models {
        let model = load(name);
        for (strategy, want_all) in by_strategy.as_object().expect("strategies") {
            let aggregation = Aggregation::from_name(strategy).unwrap();
            let got_all = model.ner(&texts, &NerOptions { aggregation, ..Default::default() }).unwrap();
            for (t, (got, want)) in got_all.iter().zip(list(want_all)).enumerate() {
                let want = list(want);
                let ctx = |i: usize| format!("{name} {strategy} text {t} entity {i}");
                let got_words: Vec<_> = got.iter().map(|e| (&e.entity, &e.word, e.start, e.end)).collect();
                assert_eq!(got.len(), want.len(), "{}: got {got_words:?}", ctx(0));
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    let label = w.get("entity").or_else(|| w.get("entity_group")).map(s).unwrap();
                    assert_eq!(g.entity, label, "{}", ctx(i));
                    assert_eq!(g.word, s(&w["word"]), "{}", ctx(i));
                    assert_eq!((g.start, g.end), (u(&w["start"]), u(&w["end"])), "{}", ctx(i));
                    assert_eq!(g.index, w.get("index").map(u), "{}", ctx(i));
                    worst.check(g.score, f(&w["score"]), &|| ctx(i));
                }
            }
        }
    }
    worst.report();
}

#[test]
fn question_answering_matches_pipeline() {
    let j = pipelines();
    let qa = &j["question_answering"];
    let p = &qa["params"];
    let opts = QaOptions {
        top_k: u(&p["top_k"]),
        max_seq_len: Some(u(&p["max_seq_len"])),
        doc_stride: Some(u(&p["doc_stride"])),
        max_answer_len: u(&p["max_answer_len"]),
        max_question_len: u(&p["max_question_len"]),
        handle_impossible_answer: p["handle_impossible_answer"].as_bool().unwrap(),
        align_to_words: p["align_to_words"].as_bool().unwrap(),
        batch_size: 4,
    };
    let cases = list(&qa["cases"]);
    let models = qa["models"].as_object().expect("models");
    assert!(models.len() >= 3, "expected the qa models, found {:?}", models.keys());
    let mut worst = Worst::new("question answering", QA_TOL);
    for (name, want_all) in models {
        let model = load(name);
        for (c, (case, want)) in cases.iter().zip(list(want_all)).enumerate() {
            let got = model.answer(s(&case["question"]), s(&case["context"]), &opts).unwrap();
            // The pipeline returns a bare dict when there is one answer.
            let want: Vec<Json> = match want {
                Json::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            assert_eq!(got.len(), want.len(), "{name} case {c}: got {got:?}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let ctx = || format!("{name} case {c} answer {i}");
                assert_eq!((g.start, g.end, g.answer.as_str()), (u(&w["start"]), u(&w["end"]), s(&w["answer"])), "{}", ctx());
                worst.check(g.score, f(&w["score"]), &ctx);
            }
        }
    }
    worst.report();
}

#[test]
fn text_classification_matches_pipeline() {
    let j = pipelines();
    let tc = &j["text_classification"];
    let texts: Vec<&str> = list(&tc["texts"]).iter().map(s).collect();
    let models = tc["models"].as_object().expect("models");
    assert!(models.len() >= 4, "expected the seqcls models, found {:?}", models.keys());
    let mut worst = Worst::new("text classification", CLASSIFY_TOL);
    let mut worst_logits = Worst::new("text classification logits", CLASSIFY_TOL);
    for (name, want) in models {
        let model = load(name);
        let got = model.classify(&texts, ClassifyOptions::default()).unwrap();
        for (t, (g, w)) in got.iter().zip(list(&want["outputs"])).enumerate() {
            let w = list(w);
            assert_eq!(g.len(), w.len(), "{name} text {t}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_eq!(g.label, s(&w["label"]), "{name} text {t} rank {i}");
                worst.check(g.score, f(&w["score"]), &|| format!("{name} text {t} rank {i}"));
            }
        }
        // Raw logits, in label order (a sort by score would reorder them, so compare by label).
        let raw = model.classify(&texts, ClassifyOptions { function: ScoreFunction::None, ..Default::default() }).unwrap();
        let labels = &model.info().labels;
        for (t, (g, w)) in raw.iter().zip(list(&want["logits"])).enumerate() {
            for (l, w) in labels.iter().zip(list(w)) {
                let got = g.iter().find(|x| &x.label == l).expect("every label").score;
                worst_logits.check(got, f(w), &|| format!("{name} text {t} label {l}"));
            }
        }
        // top_k keeps the best labels only.
        let top1 = model.classify(&texts[..1], ClassifyOptions { top_k: Some(1), ..Default::default() }).unwrap();
        assert_eq!(top1[0].len(), 1);
        assert_eq!(top1[0][0].label, got[0][0].label);
    }
    worst.report();
    worst_logits.report();
}

#[test]
fn cross_encoder_matches_sentence_transformers() {
    let j = pipelines();
    let ce = &j["cross_encoder"];
    let model = load(s(&ce["model"]));
    let query = s(&ce["query"]);
    let passages: Vec<&str> = list(&ce["passages"]).iter().map(s).collect();
    let scores: Vec<f32> = list(&ce["scores"]).iter().map(f).collect();
    let logits: Vec<f32> = list(&ce["logits"]).iter().map(f).collect();
    let ranked = model.rerank(query, &passages, RerankOptions::default()).unwrap();
    assert_eq!(ranked.len(), passages.len());
    let mut worst = Worst::new("cross-encoder scores", RERANK_TOL);
    let mut worst_raw = Worst::new("cross-encoder logits", RERANK_TOL);
    for r in &ranked {
        worst.check(r.score, scores[r.index], &|| format!("passage {}", r.index));
        assert_eq!(r.raw.len(), 1);
        worst_raw.check(r.raw[0], logits[r.index], &|| format!("passage {}", r.index));
    }
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score), "sorted best first: {ranked:?}");
    let mut want_order: Vec<usize> = (0..scores.len()).collect();
    want_order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    assert_eq!(ranked.iter().map(|r| r.index).collect::<Vec<_>>(), want_order);
    // top_n and raw scores.
    let top = model.rerank(query, &passages, RerankOptions { top_n: Some(2), raw_scores: true, ..Default::default() }).unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].index, want_order[0]);
    assert!((top[0].score - logits[top[0].index]).abs() <= RERANK_TOL);
    worst.report();
    worst_raw.report();
}

#[test]
fn wrong_heads_are_refused_by_name() {
    let seqcls = load("tiny-bert-seqcls");
    let err = seqcls.ner(&["x"], &NerOptions::default()).unwrap_err().to_string();
    assert!(err.contains("sequence-classification head") && err.contains("token-classification head"), "{err}");
    let err = seqcls.answer("q?", "context", &QaOptions::default()).unwrap_err().to_string();
    assert!(err.contains("sequence-classification head") && err.contains("question-answering head"), "{err}");
    let tokcls = load("tiny-bert-tokcls");
    let err = tokcls.classify(&["x"], ClassifyOptions::default()).unwrap_err().to_string();
    assert!(err.contains("token-classification head"), "{err}");
    let err = tokcls.rerank("q", &["d"], RerankOptions::default()).unwrap_err().to_string();
    assert!(err.contains("token-classification head"), "{err}");
    let bare = load("tiny-bert");
    let err = bare.classify(&["x"], ClassifyOptions::default()).unwrap_err().to_string();
    assert!(err.contains("no task head"), "{err}");
}

#[test]
fn question_answering_refuses_bad_settings() {
    let qa = load("tiny-bert-qa");
    let opts = QaOptions { max_seq_len: Some(48), doc_stride: Some(16), ..Default::default() };
    let ctx = "Sarah lives in London with her two cats. ".repeat(10);
    for (q, c) in [("", "context"), ("question?", "")] {
        let err = qa.answer(q, c, &opts).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
    // Stride larger than the window.
    let err = qa.answer("Where?", &ctx, &QaOptions { doc_stride: Some(49), ..opts }).unwrap_err().to_string();
    assert!(err.contains("doc_stride"), "{err}");
    // Stride that fits the window but not the room the question leaves (the tokenizer would abort).
    let long_q = "where does the person with the two cats live and work these days?";
    let err = qa.answer(long_q, &ctx, &QaOptions { doc_stride: Some(30), ..opts }).unwrap_err().to_string();
    assert!(err.contains("doc_stride"), "{err}");
    // A question that leaves no room for the context.
    let err = qa.answer(&"why ".repeat(60), &ctx, &opts).unwrap_err().to_string();
    assert!(err.contains("question"), "{err}");
    // Window longer than the model takes; zero answers asked for.
    assert!(qa.answer("Where?", &ctx, &QaOptions { max_seq_len: Some(10_000), ..opts }).is_err());
    assert!(qa.answer("Where?", &ctx, &QaOptions { top_k: 0, ..opts }).is_err());
    assert!(qa.answer("Where?", &ctx, &QaOptions { max_answer_len: 0, ..opts }).is_err());
    // The pipeline defaults work on a context much longer than one window.
    let got = qa.answer("Where does Sarah live?", &ctx.repeat(5), &QaOptions::default()).unwrap();
    assert_eq!(got.len(), 1);
    // The impossible answer is offered when asked for.
    let got = qa.answer("Where?", "In London.", &QaOptions { handle_impossible_answer: true, top_k: 50, ..opts }).unwrap();
    assert!(got.iter().any(|a| a.answer.is_empty() && a.start == 0 && a.end == 0), "{got:?}");
}

/// Inputs that have broken tokenizer-driven code before: nothing, whitespace only, emoji and
/// other multi-byte characters around entity offsets, and inputs far over the model's limit.
#[test]
fn awkward_inputs_never_panic() {
    let long = "Berlin 🌍 Société Générale, Reykjavík... ".repeat(200);
    let texts = ["", " ", "\n\t  ", "🌍", "👩‍👩‍👧 🇩🇪 é\u{301}", "[UNK] [CLS] [SEP] <s> </s>", long.as_str()];
    for name in ["tiny-bert-tokcls", "tiny-roberta-tokcls", "tiny-distilbert-tokcls"] {
        let model = load(name);
        for strategy in ["none", "simple", "first", "average", "max"] {
            let opts = NerOptions { aggregation: Aggregation::from_name(strategy).unwrap(), ignore_labels: vec![], ..Default::default() };
            let out = model.ner(&texts, &opts).unwrap();
            assert_eq!(out.len(), texts.len());
            for (t, ents) in texts.iter().zip(&out) {
                let n = t.chars().count();
                assert!(ents.iter().all(|e| e.start <= e.end && e.end <= n), "{name} {strategy}: offsets outside {t:?}");
            }
        }
        assert!(model.ner(&[long.as_str()], &NerOptions { overflow: Overflow::Error, ..Default::default() }).is_err());
        assert!(model.ner(&[], &NerOptions::default()).unwrap().is_empty());
    }
    for name in ["tiny-bert-seqcls", "tiny-roberta-seqcls", "tiny-xlm-roberta-seqcls", "tiny-distilbert-seqcls"] {
        let model = load(name);
        let out = model.classify(&texts, ClassifyOptions::default()).unwrap();
        assert!(out.iter().all(|r| r.len() == model.info().labels.len()));
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (*t, long.as_str())).collect();
        assert_eq!(model.classify_pairs(&pairs, ClassifyOptions::default()).unwrap().len(), texts.len());
        assert!(model.classify(&[long.as_str()], ClassifyOptions { overflow: Overflow::Error, ..Default::default() }).is_err());
        assert!(model.classify(&["x"], ClassifyOptions { top_k: Some(0), ..Default::default() }).is_err());
        // A 3-label model reranks by its last label's probability.
        let r = model.rerank("query", &texts, RerankOptions::default()).unwrap();
        assert!(r.iter().all(|r| (0.0..=1.0).contains(&r.score) && r.raw.len() == 3));
    }
    let rerank = load("tiny-bert-rerank");
    assert_eq!(rerank.rerank("", &texts, RerankOptions::default()).unwrap().len(), texts.len());
    assert!(rerank.rerank("q", &[], RerankOptions::default()).unwrap().is_empty());
    for name in ["tiny-bert-qa", "tiny-roberta-qa", "tiny-distilbert-qa"] {
        let model = load(name);
        for q in ["?", " ", "🌍", "👩‍👩‍👧 é\u{301}"] {
            for c in [" ", "\n", "🌍", "x", "Société Générale 🌍 Reykjavík", long.as_str()] {
                let opts = QaOptions { top_k: 3, max_seq_len: Some(48), doc_stride: Some(16), ..Default::default() };
                let got = model.answer(q, c, &opts).unwrap_or_else(|e| panic!("{name} {q:?} {c:?}: {e}"));
                let n = c.chars().count();
                assert!(got.iter().all(|a| a.start <= a.end && a.end <= n), "{name} {q:?} {c:?}: {got:?}");
            }
        }
    }
}
