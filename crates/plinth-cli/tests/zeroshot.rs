//! `plinth classify --labels a,b,c` end to end: zero-shot with the real SmolLM2 (the default
//! model), with the tiny NLI checkpoint against transformers' pipeline numbers
//! (`fixtures/encoders/zeroshot.json`), and the one-line errors.

use std::io::Write;
use std::process::{Command, Stdio};

use plinth_testutil::{fixture, smollm2_gguf};
use serde_json::Value;

/// Largest allowed |score - pipeline score| for the NLI checkpoint (scores pass through JSON).
const NLI_TOL: f64 = 1e-4;

fn plinth(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("PLINTH_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"");
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn ok(args: &[&str]) -> Vec<Value> {
    let (code, out, err) = plinth(args);
    assert_eq!(code, 0, "plinth {args:?} failed: {err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// A command that must fail with one `error: ...` line naming each of `expect`.
fn fails(args: &[&str], expect: &[&str]) {
    let (code, out, err) = plinth(args);
    assert_eq!(code, 1, "plinth {args:?}: expected exit 1; stdout {out:?} stderr {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error is not one line: {err}");
    for e in expect {
        assert!(err.contains(e), "expected '{e}' in: {err}");
    }
    assert!(out.is_empty(), "{out}");
}

fn scores(v: &Value) -> Vec<(String, f64)> {
    v["labels"].as_array().unwrap().iter().map(|l| (l["label"].as_str().unwrap().to_string(), l["score"].as_f64().unwrap())).collect()
}

#[test]
fn llm_zero_shot_scores_every_label() {
    let gguf = smollm2_gguf().display().to_string();
    let texts = ["I absolutely loved this movie, the acting was wonderful and I would watch it again.", "Wo ist der Bahnhof? Ich habe meinen Zug verpasst."];
    let out = ok(&["classify", "--model", &gguf, "--labels", "positive, negative", "--json", "-k", "0", texts[0]]);
    assert_eq!(out.len(), 1);
    let v = &out[0];
    assert_eq!((v["text"].as_str(), v["method"].as_str(), v["multi_label"].as_bool()), (Some(texts[0]), Some("llm"), Some(false)), "{v}");
    let s = scores(v);
    assert_eq!(s[0].0, "positive", "{v}");
    assert_eq!(s.len(), 2);
    assert!((s.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-5, "{v}");
    for l in v["labels"].as_array().unwrap() {
        assert!(l["log_likelihood"].as_f64().unwrap() < 0.0, "{l}");
    }
    // The default model is SmolLM2 (when it is the cached catalog file) and -k 1 the default.
    let args = ["classify", "--labels", "English,French,German,Spanish", "--json", texts[1]];
    let args: Vec<&str> = if std::env::var_os("PLINTH_TEST_GGUF").is_some() { [&args[..], &["--model", &gguf]].concat() } else { args.to_vec() };
    let out = ok(&args);
    assert_eq!(scores(&out[0]).iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["German"], "{}", out[0]);
    // Plain text output: labels with scores, a tab, the text.
    let (code, out, err) = plinth(&["classify", "--model", &gguf, "--labels", "positive,negative", texts[0]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("positive 0.") && out.trim_end().ends_with(&format!("\t{}", texts[0])), "{out}");
}

#[test]
fn nli_zero_shot_matches_the_pipeline() {
    let nli = fixture("encoders/tiny-bert-nli").display().to_string();
    let doc: Value = serde_json::from_slice(&std::fs::read(fixture("encoders/zeroshot.json")).unwrap()).unwrap();
    let mut checked = 0;
    let mut worst = 0f64;
    for c in doc["cases"].as_array().unwrap() {
        let labels: Vec<&str> = c["candidate_labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        if labels.len() < 2 || labels.iter().any(|l| l.contains(',')) {
            continue;
        }
        let list = labels.join(",");
        let mut args = vec!["classify", "--model", &nli, "--labels", &list, "--json", "-k", "0", c["text"].as_str().unwrap()];
        if c["multi_label"].as_bool().unwrap() {
            args.push("--multi-label");
        }
        if let Some(t) = c["hypothesis_template"].as_str() {
            args.extend(["--hypothesis-template", t]);
        }
        let out = ok(&args);
        assert_eq!(out[0]["method"], "nli");
        let got = scores(&out[0]);
        let want: Vec<(String, f64)> = c["labels"].as_array().unwrap().iter().zip(c["scores"].as_array().unwrap()).map(|(l, s)| (l.as_str().unwrap().to_string(), s.as_f64().unwrap())).collect();
        assert_eq!(got.iter().map(|x| &x.0).collect::<Vec<_>>(), want.iter().map(|x| &x.0).collect::<Vec<_>>(), "{args:?}");
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((g.1 - w.1).abs());
        }
        checked += 1;
        if checked == 8 {
            break;
        }
    }
    assert_eq!(checked, 8);
    assert!(worst <= NLI_TOL, "max |Δ| {worst:e}");
    println!("{checked} pipeline cases through the CLI: max |Δ| {worst:e} (tolerance {NLI_TOL:e})");
}

#[test]
fn zero_shot_errors_are_one_line() {
    let gguf = smollm2_gguf().display().to_string();
    let nli = fixture("encoders/tiny-bert-nli").display().to_string();
    let seqcls = fixture("encoders/tiny-bert-seqcls").display().to_string();
    fails(&["classify", "--model", &nli, "--labels", "a,b,a", "x"], &["'a' is given twice"]);
    fails(&["classify", "--model", &nli, "--labels", "a,,b", "x"], &["label 2 is empty"]);
    fails(&["classify", "--model", &nli, "--labels", "a,b", "--hypothesis-template", "no slot", "x"], &["hypothesis template", "{}"]);
    fails(&["classify", "--model", &seqcls, "--labels", "a,b", "x"], &["not an NLI model", "entailment"]);
    fails(&["classify", "--model", &gguf, "--labels", "a,b", "--multi-label", "x"], &["multi-label", "NLI"]);
    fails(&["classify", "--model", &gguf, "--labels", "a,b", "--hypothesis-template", "It is {}.", "x"], &["--hypothesis-template", "NLI"]);
    fails(&["classify", "x"], &["--model", "--labels"]);
    fails(&["classify", "--model", &gguf, "x"], &["not a classification checkpoint", "--labels"]);
    fails(&["classify", "--model", &seqcls, "--multi-label", "x"], &["--labels"]);
}
