//! The binary's encoder commands end to end: `embed` (JSON lines and .npy, against
//! sentence-transformers' vectors of the real all-MiniLM-L6-v2), `search` and its corpus
//! cache, `classify`, `ner`, `answer` and `rerank` on tiny random-weight task-head models
//! (deterministic but meaningless outputs, so only shape, format and consistency are checked),
//! `bench --embed`, and the one-line errors of each.
//!
//! Needs the real MiniLM in the plinth cache (`PLINTH_HOME`) or `$PLINTH_TEST_MINILM`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use candle_core::{safetensors, Device};
use plinth_testutil::{assert_close, fixture, minilm_dir};
use serde_json::Value;

/// Cosine between the CLI's and sentence-transformers' embedding of a sentence.
const MIN_COSINE: f32 = 0.9999;

fn plinth(args: &[&str], stdin: &str) -> (i32, String, String) {
    plinth_testutil::run_with_stdin(env!("CARGO_BIN_EXE_plinth"), args, stdin)
}

/// Runs a command that must succeed; returns stdout.
fn ok(args: &[&str], stdin: &str) -> String {
    let (code, out, err) = plinth(args, stdin);
    assert_eq!(code, 0, "plinth {args:?} failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    out
}

/// Runs a command that must fail with one `error: ...` line naming each of `expect`, exit 1.
fn fails(args: &[&str], stdin: &str, expect: &[&str]) -> String {
    let (code, out, err) = plinth(args, stdin);
    assert_eq!(code, 1, "plinth {args:?}: expected exit 1; stdout {out:?} stderr {err:?}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error is not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected '{e}' in: {err}");
    }
    assert!(out.is_empty(), "nothing should be printed on failure: {out}");
    err
}

fn minilm() -> String {
    minilm_dir().display().to_string()
}

fn head(name: &str) -> String {
    fixture(&format!("encoders/{name}")).display().to_string()
}

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plinth-encoders-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Each line of `out` as JSON.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// The one JSON object of `out` (exactly one line).
fn json_object(out: &str) -> Value {
    assert_eq!(out.trim_end().lines().count(), 1, "expected one JSON line: {out}");
    json_lines(out).remove(0)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// `embed`'s JSON lines as (text, embedding).
fn embeddings(out: &str) -> Vec<(String, Vec<f32>)> {
    json_lines(out)
        .iter()
        .map(|v| {
            let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, BTreeSet::from(["text", "embedding"]), "{v}");
            (v["text"].as_str().unwrap().to_string(), floats(&v["embedding"]))
        })
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
}

/// sentence-transformers' sentences and embeddings of the MiniLM reference.
fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let dir = fixture("embeddings/minilm");
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("sentences.json")).unwrap()).unwrap();
    let sentences = meta["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let vectors = safetensors::load(dir.join("embeddings.safetensors"), &Device::Cpu).unwrap()["embeddings"].to_vec2::<f32>().unwrap();
    (sentences, vectors)
}

/// Reference sentences 0, 2, 8 (short) and 109 (302 tokens: cut to 256, as sentence-transformers does).
const PICKED: [usize; 4] = [0, 2, 8, 109];

fn embed_args<'a>(model: &'a str, texts: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["embed", "--model", model];
    args.extend_from_slice(extra);
    args.extend(texts.iter().map(String::as_str));
    args
}

#[test]
fn embed_matches_sentence_transformers() {
    let (sentences, want) = reference();
    let texts: Vec<String> = PICKED.iter().map(|&i| sentences[i].clone()).collect();
    let m = minilm();
    let got = embeddings(&ok(&embed_args(&m, &texts, &[]), ""));
    assert_eq!(got.len(), texts.len());
    for ((&i, (text, v)), t) in PICKED.iter().zip(&got).zip(&texts) {
        assert_eq!(text, t, "output order must follow the input");
        assert_eq!(v.len(), 384);
        assert!((norm(v) - 1.0).abs() < 1e-4, "sentence {i}: norm {}", norm(v));
        let c = cosine(v, &want[i]);
        assert!(c >= MIN_COSINE, "sentence {i} {t:?}: cosine {c} vs sentence-transformers");
    }

    let two = embeddings(&ok(&["embed", "--model", &m, "a", "b"], ""));
    assert_eq!(two.iter().map(|(t, v)| (t.as_str(), v.len())).collect::<Vec<_>>(), [("a", 384), ("b", 384)]);
}

#[test]
fn embed_texts_from_file_and_stdin_equal_arguments() {
    let (sentences, _) = reference();
    let texts: Vec<String> = sentences[..3].to_vec();
    let m = minilm();
    let by_args = embeddings(&ok(&embed_args(&m, &texts, &[]), ""));

    // Blank and whitespace-only lines are skipped.
    let body = format!("\n{}\n\n   \n{}\n\t\n{}\n\n", texts[0], texts[1], texts[2]);
    let dir = temp_dir("embed-file");
    let file = dir.join("texts.txt");
    std::fs::write(&file, &body).unwrap();
    let f = path_str(&file);
    let runs = [
        ("--file", ok(&["embed", "--model", &m, "--file", &f], "")),
        ("stdin", ok(&["embed", "--model", &m], &body)),
        ("--file -", ok(&["embed", "--model", &m, "-f", "-"], &body)),
    ];
    for (how, out) in runs {
        let got = embeddings(&out);
        assert_eq!(got.len(), 3, "{how}: blank lines must be skipped: {out}");
        for ((t, v), (want_t, want_v)) in got.iter().zip(&by_args) {
            assert_eq!(t, want_t, "{how}");
            assert_close(how, v, want_v, 1e-6);
        }
    }
}

/// Parses a float32 .npy v1.0 file: (shape, data), checking the header's form.
fn read_npy(path: &Path) -> ((usize, usize), Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "magic");
    assert_eq!(&bytes[6..8], &[1, 0], "version 1.0");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let start = 10 + hlen;
    assert_eq!(start % 64, 0, "data must start at a multiple of 64, not {start}");
    let header = std::str::from_utf8(&bytes[10..start]).unwrap();
    assert!(header.ends_with('\n'), "{header:?}");
    let dict = header.trim_end();
    assert!(dict.starts_with('{') && dict.ends_with('}'), "{header:?}");
    assert!(dict.contains("'descr': '<f4'"), "{header:?}");
    assert!(dict.contains("'fortran_order': False"), "{header:?}");
    let shape = dict.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).unwrap_or_else(|| panic!("no shape: {header:?}"));
    let dims: Vec<usize> = shape.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    assert_eq!(dims.len(), 2, "{header:?}");
    let data: Vec<f32> = bytes[start..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(bytes.len() - start, dims[0] * dims[1] * 4, "data length");
    ((dims[0], dims[1]), data)
}

#[test]
fn embed_writes_npy_and_jsonl_files() {
    let (sentences, _) = reference();
    let texts: Vec<String> = PICKED.iter().map(|&i| sentences[i].clone()).collect();
    let m = minilm();
    let jsonl = embeddings(&ok(&embed_args(&m, &texts, &[]), ""));
    let dir = temp_dir("embed-npy");

    let npy = dir.join("x.npy");
    let out = ok(&embed_args(&m, &texts, &["-o", &path_str(&npy)]), "");
    assert!(out.is_empty(), "with -o nothing goes to stdout: {out}");
    let ((n, d), data) = read_npy(&npy);
    assert_eq!((n, d), (texts.len(), 384));
    for (i, (row, (_, v))) in data.chunks(d).zip(&jsonl).enumerate() {
        assert_close(&format!("npy row {i}"), row, v, 1e-6);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "x.npy").collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let file = dir.join("x.jsonl");
    let out = ok(&embed_args(&m, &texts, &["--output", &path_str(&file)]), "");
    assert!(out.is_empty(), "{out}");
    let written = embeddings(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(written, jsonl, "a non-.npy -o writes the same JSON lines");
}

#[test]
fn embed_options() {
    let m = minilm();
    let raw = embeddings(&ok(&["embed", "--model", &m, "--no-normalize", "hello world"], ""));
    assert_eq!(raw[0].1.len(), 384);
    assert!(norm(&raw[0].1) > 1.5, "mean pooling before Normalize is not unit length: {}", norm(&raw[0].1));
    let unit = embeddings(&ok(&["embed", "--model", &m, "hello world"], ""));
    assert!(cosine(&raw[0].1, &unit[0].1) > 0.99999, "--no-normalize only changes the length");

    let short = embeddings(&ok(&["embed", "--model", &m, "--dimensions", "64", "hello world"], ""));
    assert_eq!(short[0].1.len(), 64);
    assert!((norm(&short[0].1) - 1.0).abs() < 1e-4, "re-normalised after cutting: {}", norm(&short[0].1));
    assert!(cosine(&short[0].1, &unit[0].1[..64]) > 0.99999, "the first 64 dimensions");

    let long = "word ".repeat(400);
    fails(&["embed", "--model", &m, "--no-truncate", &long], "", &["256"]);
    let cut = embeddings(&ok(&["embed", "--model", &m, &long], ""));
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].1.len(), 384);
    let cut2 = embeddings(&ok(&["embed", "--model", &m, "--no-truncate", "--truncate", &long], ""));
    assert_close("--truncate after --no-truncate", &cut2[0].1, &cut[0].1, 1e-6);
}

fn search(model: &str, corpus: &Path, query: &str, extra: &[&str]) -> Value {
    let c = path_str(corpus);
    let mut args = vec!["search", "--model", model, "--corpus", &c, query, "--json"];
    args.extend_from_slice(extra);
    json_object(&ok(&args, ""))
}

/// Checks the shape of a search result and returns its hits as (line, text, score).
fn hits(v: &Value, documents: u64, k: usize) -> Vec<(u64, String, f64)> {
    assert_eq!(v["documents"], documents, "{v}");
    let hits: Vec<(u64, String, f64)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["line"].as_u64().unwrap(), h["text"].as_str().unwrap().to_string(), h["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(hits.len(), k.min(documents as usize), "{v}");
    assert!(hits.windows(2).all(|w| w[0].2 >= w[1].2), "not best first: {v}");
    assert!(hits.iter().all(|h| (-1.0001..=1.0001).contains(&h.2)), "cosine out of range: {v}");
    hits
}

#[test]
fn search_finds_the_line_and_caches_the_corpus() {
    let m = minilm();
    let dir = temp_dir("search");
    let corpus = dir.join("corpus.txt");
    let cache = dir.join(".corpus.txt.plinth-embeddings");
    let cat = "My cat likes to sleep in a sunny spot by the window.";
    let lines = [
        "The stock market fell sharply on Monday.",
        "Preheat the oven to 200 degrees before baking the bread.",
        "",
        cat,
        "The train to Edinburgh leaves at nine.",
        "Photosynthesis turns sunlight into chemical energy.",
        "He fixed the leaking tap in the bathroom.",
        "The football match ended in a draw.",
        "Rust programs are compiled ahead of time.",
    ];
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();

    let first = search(&m, &corpus, "kitten", &[]);
    assert_eq!(first["cached"], false, "{first}");
    assert_eq!(first["query"], "kitten");
    assert_eq!(first["corpus"], path_str(&corpus));
    let h = hits(&first, 8, 5);
    assert_eq!((h[0].0, h[0].1.as_str()), (4, cat), "the cat line (1-based, the blank line counted): {first}");
    assert!(cache.is_file(), "cache expected at {}", cache.display());

    let second = search(&m, &corpus, "kitten", &["--top-k", "2"]);
    assert_eq!(second["cached"], true, "{second}");
    let h2 = hits(&second, 8, 2);
    assert_eq!(h2[0].0, 4);
    assert!((h2[0].2 - h[0].2).abs() < 1e-5, "cached vectors give the same scores");

    // Plain output: "score  corpus:line  text".
    let c = path_str(&corpus);
    let plain = ok(&["search", "--model", &m, "--corpus", &c, "kitten", "-k", "3"], "");
    assert_eq!(plain.lines().count(), 3, "{plain}");
    assert!(plain.lines().next().unwrap().ends_with(&format!("  {c}:4  {cat}")), "{plain}");

    // An edited corpus is embedded again: the cat line is gone, a kitten line is at line 10.
    let kitten = "A small kitten chased a ball of yarn across the floor.";
    let mut edited: Vec<&str> = lines.to_vec();
    edited[3] = "The orchestra played a symphony by Brahms.";
    edited.push(kitten);
    std::fs::write(&corpus, edited.join("\n")).unwrap();
    let third = search(&m, &corpus, "kitten", &[]);
    assert_eq!(third["cached"], false, "an edited corpus must not use the stale cache: {third}");
    let h3 = hits(&third, 9, 5);
    assert_eq!((h3[0].0, h3[0].1.as_str()), (10, kitten), "{third}");
    assert!(h3.iter().all(|h| h.1 != cat), "stale text in results: {third}");
    assert_eq!(search(&m, &corpus, "kitten", &[])["cached"], true);

    // A corpus with no text is an error, and leaves no cache behind.
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n   \n\n").unwrap();
    fails(&["search", "--model", &m, "--corpus", &path_str(&empty), "kitten"], "", &["empty.txt", "no non-empty lines"]);
    assert!(!dir.join(".empty.txt.plinth-embeddings").exists());
}

#[test]
fn classify_scores_every_label() {
    let m = head("tiny-bert-seqcls");
    let texts = ["I loved this film, it was wonderful.", "The service was slow and the food was cold.", "It is a table."];
    let mut args = vec!["classify", "--model", &m, "--json", "-k", "0"];
    args.extend(texts);
    let all = json_lines(&ok(&args, ""));
    assert_eq!(all.len(), texts.len());
    let mut best = Vec::new();
    for (v, t) in all.iter().zip(texts) {
        assert_eq!(v["text"], t);
        let labels = v["labels"].as_array().unwrap();
        let names: BTreeSet<&str> = labels.iter().map(|l| l["label"].as_str().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["negative", "neutral", "positive"]), "{v}");
        let scores: Vec<f64> = labels.iter().map(|l| l["score"].as_f64().unwrap()).collect();
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "softmax scores must sum to 1: {v}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{v}");
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not best first: {v}");
        best.push(labels[0].clone());
    }

    // The default -k 1 shows the best label only.
    let mut args = vec!["classify", "--model", &m, "--json"];
    args.extend(texts);
    for (v, b) in json_lines(&ok(&args, "")).iter().zip(&best) {
        assert_eq!(v["labels"].as_array().unwrap().as_slice(), std::slice::from_ref(b), "{v}");
    }
}

/// Lowercased, without WordPiece's `##` and whitespace: how an entity's `word` compares to its span.
fn squash(s: &str) -> String {
    s.replace("##", "").chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

#[test]
fn ner_entities_point_into_the_text() {
    let m = head("tiny-bert-tokcls");
    // The second text starts with a 3-byte character: offsets must count characters.
    let texts = ["My name is Wolfgang and I live in Berlin.", "— Angela Merkel visited Microsoft in Redmond, Washington."];
    let mut args = vec!["ner", "--model", &m, "--json", "--aggregation", "simple"];
    args.extend(texts);
    let out = json_lines(&ok(&args, ""));
    assert_eq!(out.len(), texts.len());
    let mut found = 0;
    for (v, t) in out.iter().zip(texts) {
        assert_eq!(v["text"], t);
        let chars: Vec<char> = t.chars().collect();
        let mut prev_end = 0;
        for e in v["entities"].as_array().unwrap() {
            let (start, end) = (e["start"].as_u64().unwrap() as usize, e["end"].as_u64().unwrap() as usize);
            assert!(prev_end <= start && start < end && end <= chars.len(), "bad span in {t:?}: {e}");
            prev_end = end;
            let span: String = chars[start..end].iter().collect();
            assert_eq!(squash(e["word"].as_str().unwrap()), squash(&span), "word vs text[{start}..{end}] = {span:?}: {e}");
            assert!(["PER", "ORG", "LOC", "MISC"].contains(&e["entity"].as_str().unwrap()), "aggregated groups have no B-/I-: {e}");
            assert!(e["index"].is_null(), "{e}");
            let s = e["score"].as_f64().unwrap();
            assert!(s > 0.0 && s <= 1.0, "{e}");
            found += 1;
        }
    }
    assert!(found > 0, "random weights tag something: {out:?}");

    // Without aggregation: one entry per token, with B-/I- labels and the token index.
    let none = json_lines(&ok(&["ner", "--model", &m, "--json", "--aggregation", "none", texts[0]], ""));
    let entities = none[0]["entities"].as_array().unwrap();
    assert!(!entities.is_empty());
    for e in entities {
        let label = e["entity"].as_str().unwrap();
        assert!(label.starts_with("B-") || label.starts_with("I-"), "{e}");
        assert!(e["index"].as_u64().unwrap() >= 1, "[CLS] is index 0: {e}");
    }
}

#[test]
fn answer_is_a_span_of_the_context() {
    let m = head("tiny-bert-qa");
    let dir = temp_dir("answer");
    let context = "— Zoë Müller founded the company in Zürich in 1999 and later moved it to Berlin, where it grew.";
    let file = dir.join("context.txt");
    std::fs::write(&file, context).unwrap();
    let f = path_str(&file);
    let q = "Where was the company founded?";
    let v = json_object(&ok(&["answer", "--model", &m, "--json", "-c", &f, "-q", q, "-k", "3"], ""));
    assert_eq!(v["question"], q);
    let answers = v["answers"].as_array().unwrap();
    assert!((1..=3).contains(&answers.len()), "{v}");
    let chars: Vec<char> = context.chars().collect();
    for a in answers {
        let (start, end) = (a["start"].as_u64().unwrap() as usize, a["end"].as_u64().unwrap() as usize);
        assert!(start < end && end <= chars.len(), "{a}");
        let span: String = chars[start..end].iter().collect();
        assert_eq!(a["answer"].as_str().unwrap(), span, "answer must be context[start..end] in characters: {a}");
        assert!((0.0..=1.0).contains(&a["score"].as_f64().unwrap()), "{a}");
    }
    let scores: Vec<f64> = answers.iter().map(|a| a["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not best first: {v}");

    // The context from stdin gives the same answers.
    let from_stdin = json_object(&ok(&["answer", "--model", &m, "--json", "-c", "-", "-q", q, "-k", "3"], context));
    assert_eq!(from_stdin, v);
}

#[test]
fn rerank_orders_every_document() {
    let m = head("tiny-bert-rerank");
    let docs = ["Cats purr when they are content.", "The stock market fell.", "Kittens are young cats.", "Paris is in France.", "Dogs bark at night."];
    let query = "what do cats do";
    let mut args = vec!["rerank", "--model", &m, "--json", "-q", query];
    args.extend(docs);
    let v = json_object(&ok(&args, ""));
    assert_eq!(v["query"], query);
    let results = v["results"].as_array().unwrap();
    let indices: Vec<usize> = results.iter().map(|r| r["index"].as_u64().unwrap() as usize).collect();
    let mut sorted = indices.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..docs.len()).collect::<Vec<_>>(), "indices must be a permutation: {v}");
    for r in results {
        assert_eq!(r["text"], docs[r["index"].as_u64().unwrap() as usize], "{r}");
        assert!((0.0..=1.0).contains(&r["score"].as_f64().unwrap()), "one-label head: sigmoid score: {r}");
    }
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not sorted by score: {v}");

    // --top-n keeps the best; documents from a file rank the same.
    let dir = temp_dir("rerank");
    let file = dir.join("docs.txt");
    std::fs::write(&file, docs.join("\n\n")).unwrap();
    let top = json_object(&ok(&["rerank", "--model", &m, "--json", "-q", query, "-f", &path_str(&file), "-n", "2"], ""));
    assert_eq!(top["results"].as_array().unwrap().as_slice(), &results[..2], "{top}");
}

#[test]
fn bench_embed_reports_a_rate() {
    let dir = temp_dir("bench");
    let file = dir.join("sentences.txt");
    std::fs::write(&file, "The cat sits outside.\n\nA man is playing guitar.\nThe new movie is awesome.\n").unwrap();
    let v = json_object(&ok(&["bench", "--embed", &path_str(&file), "--runs", "1", "--json", "--encoder", &minilm()], ""));
    assert!(v["sentences_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["sentences"], 3, "blank lines are not sentences: {v}");
    assert_eq!(v["runs"], 1);
    assert!(v["tokens"].as_u64().unwrap() >= 3 * 3, "{v}");
}

#[test]
fn encoder_commands_fail_with_one_line() {
    let m = minilm();
    let dir = temp_dir("errors");
    let gguf = dir.join("x.gguf");
    std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00").unwrap();
    fails(&["embed", "--model", &path_str(&gguf), "hello"], "", &["x.gguf", "GGUF", "directory"]);
    fails(&["classify", "--model", &m, "hello"], "", &["no task head", "sequence-classification"]);
    fails(&["ner", "--model", &head("tiny-bert-tokcls"), "--aggregation", "bogus", "hello"], "", &["bogus", "simple"]);
    fails(&["embed", "--model", &m], "", &["no input texts"]);
    fails(&["embed", "--model", &m], "\n  \n", &["no input texts"]);
    fails(&["embed", "--model", &m, "--file", &path_str(&dir.join("absent.txt"))], "", &["absent.txt"]);
    fails(&["embed", "--model", &m, "--dimensions", "0", "hello"], "", &["dimensions"]);
    fails(&["embed", "--model", &m, "--batch-size", "0", "hello"], "", &["batch-size"]);
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, "one line\n").unwrap();
    fails(&["search", "--model", &m, "--corpus", &path_str(&corpus), "--top-k", "0", "q"], "", &["top-k"]);
    let missing = path_str(&dir.join("no-context.txt"));
    fails(&["answer", "--model", &head("tiny-bert-qa"), "-c", &missing, "-q", "what?"], "", &["no-context.txt"]);
}

/// `plinth classify ... | head -1`: once the reader goes away the command stops with an
/// error (or quietly), never a panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    let dir = temp_dir("pipe");
    let file = dir.join("many.txt");
    // ~240 KB of output: far more than a pipe holds, so writes hit the closed pipe.
    std::fs::write(&file, (0..3000).map(|i| format!("text number {i}\n")).collect::<String>()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["classify", "--model", &head("tiny-bert-seqcls"), "--json", "-f", &path_str(&file)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{:?}: {err}", out.status);
}
