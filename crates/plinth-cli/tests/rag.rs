//! `plinth answer` end to end with the real SmolLM2-135M-Instruct and all-MiniLM-L6-v2: over
//! a copy of the committed corpus (`--corpus`, JSON and text output, the cache), over one
//! `--context` file, and the one-line errors for missing or conflicting flags. Assertions are
//! on the sources (deterministic), not on the generated text.

use std::path::PathBuf;

use plinth_testutil::{fixture, minilm_dir, smollm2_gguf};
use serde_json::Value;

fn plinth(args: &[&str], stdin: &str) -> (i32, String, String) {
    plinth_testutil::run_with_stdin(env!("CARGO_BIN_EXE_plinth"), args, stdin)
}

fn corpus_copy(name: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("plinth-cli-rag-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture("corpus")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    dst
}

/// The line of the answer to `question` in `fixtures/corpus-questions.jsonl`.
fn answer_line(question: &str) -> u64 {
    let text = std::fs::read_to_string(fixture("corpus-questions.jsonl")).unwrap();
    let v: Value = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["question"] == question).expect("question in the fixture");
    assert_eq!(v["lines"][0], v["lines"][1], "a one-line answer");
    v["lines"][0].as_u64().unwrap()
}

struct Models {
    llm: String,
    embedder: String,
}

fn models() -> Models {
    Models { llm: smollm2_gguf().display().to_string(), embedder: minilm_dir().display().to_string() }
}

#[test]
fn corpus_answers_cite_the_passage_holding_the_answer() {
    let m = models();
    let dir = corpus_copy("json");
    let d = dir.display().to_string();
    let q = "Who is the current president of the Dunmore Chess Club?";
    let args = ["answer", "--model", &m.llm, "--embedder", &m.embedder, "--corpus", &d, "-q", q, "--json", "-n", "32"];
    let (code, out, err) = plinth(&args, "");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.trim().lines().count(), 1, "--json prints one line: {out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["question"], q);
    assert!(!v["answer"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(v["retrieved"], true);
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 4, "default --top-k: {v}");
    for (i, s) in sources.iter().enumerate() {
        assert_eq!(s["id"], i + 1);
        assert!(s["file"].is_string() && s["start_line"].as_u64().unwrap() >= 1, "{s}");
        assert!(s["end_line"].as_u64().unwrap() >= s["start_line"].as_u64().unwrap(), "{s}");
        assert!((-1.0..=1.0).contains(&s["score"].as_f64().unwrap()), "{s}");
    }
    // The best source holds the line that names the president (from corpus-questions.jsonl).
    let line = answer_line(q);
    let first = &sources[0];
    assert_eq!(first["file"], "dunmore-chess-club.md", "{v}");
    assert!(first["start_line"].as_u64().unwrap() <= line && line <= first["end_line"].as_u64().unwrap(), "line {line}: {v}");
    assert!(v["cited"].as_array().unwrap().iter().all(|c| (1..=4).contains(&c.as_u64().unwrap())), "{v}");
    assert!(dir.join(".plinth-rag-embeddings").exists(), "the corpus cache is written");

    // Text output: the streamed answer, then the sources as file:start-end; --top-k 2 keeps two.
    let (code, out, err) = plinth(&["answer", "--model", &m.llm, "--embedder", &m.embedder, "--corpus", &d, "-q", q, "-n", "24", "-k", "2"], "");
    assert_eq!(code, 0, "stderr: {err}");
    let (answer, sources) = out.split_once("Sources:").unwrap_or_else(|| panic!("no Sources: list in {out}"));
    assert!(!answer.trim().is_empty(), "{out}");
    let listed: Vec<&str> = sources.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(listed[0].contains(&format!("dunmore-chess-club.md:{}-{}", first["start_line"], first["end_line"])), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_context_file_is_answered_whole() {
    let m = models();
    let file = fixture("corpus/ostra-river-ferry.txt");
    let f = file.display().to_string();
    let lines = std::fs::read_to_string(&file).unwrap().trim_end().lines().count();
    let (code, out, err) = plinth(&["answer", "--model", &m.llm, "--context", &f, "-q", "What is the name of the present ferry boat?", "--json", "-n", "24"], "");
    assert_eq!(code, 0, "stderr: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["retrieved"], false, "the file fits the context: {v}");
    let s = &v["sources"][0];
    assert_eq!((s["file"].as_str().unwrap(), s["start_line"].as_u64().unwrap(), s["end_line"].as_u64().unwrap()), ("ostra-river-ferry.txt", 1, lines as u64));
    assert!(!v["answer"].as_str().unwrap().is_empty());
}

#[test]
fn wrong_flags_are_one_line_errors() {
    let m = models();
    let f = fixture("corpus/ostra-river-ferry.txt").display().to_string();
    let d = fixture("corpus").display().to_string();
    for (args, want) in [
        (vec!["answer", "--model", &m.llm, "-q", "why?"], "exactly one of --context"),
        (vec!["answer", "--model", &m.llm, "-q", "why?", "--context", &f, "--corpus", &d], "exactly one of --context"),
        (vec!["answer", "--model", &m.llm, "-q", " ", "--corpus", &d], "question"),
        (vec!["answer", "--model", &m.llm, "-q", "why?", "--corpus", &d, "-k", "0"], "--top-k"),
        (vec!["answer", "--model", &m.llm, "-q", "why?", "--corpus", "/no/such/dir", "--embedder", &m.embedder], "/no/such/dir"),
        // An encoder cannot retrieve-and-generate.
        (vec!["answer", "--model", &m.embedder, "-q", "why?", "--corpus", &d], "encoder"),
    ] {
        let (code, out, err) = plinth(&args, "");
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(err.starts_with("error:") && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
