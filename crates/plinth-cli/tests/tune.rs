//! `plinth tune`, `plinth eval` and `plinth merge` end to end: LoRA training on the real
//! SmolLM2 GGUF (a few steps of short sequences), an exact resume after SIGKILL, bad input,
//! perplexity, and merging the PEFT fixture into the tiny Llama.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plinth_testutil::{fixture, smollm2_gguf};
use serde_json::Value;

/// Loss of a resumed run vs an uninterrupted one, per step.
const RESUME_TOL: f64 = 1e-4;

fn plinth(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plinth")).args(args).env("HF_HUB_OFFLINE", "1").stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plinth-tune-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn model() -> String {
    smollm2_gguf().display().to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Five short conversations; the last answer is long enough to be cut at --max-len 64.
const CHAT: &str = r#"{"messages":[{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."}]}
{"messages":[{"role":"user","content":"What is the capital of Japan?"},{"role":"assistant","content":"Tokyo."}]}
{"messages":[{"role":"user","content":"What is the capital of Italy?"},{"role":"assistant","content":"Rome."}]}
{"messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"What is the capital of Spain?"},{"role":"assistant","content":"Madrid."}]}
{"messages":[{"role":"user","content":"Describe a lighthouse."},{"role":"assistant","content":"A lighthouse is a tall tower on a coast or an island with a bright lamp at its top. Its light guides ships at night and warns them of rocks, reefs and shallow water."}]}
"#;

/// Short prompt/completion pairs (about 14 tokens each), for fast steps.
const PAIRS: &str = r#"{"prompt":"Q: What is the capital of France?\nA:","completion":" Paris"}
{"prompt":"Q: What is the capital of Japan?\nA:","completion":" Tokyo"}
{"prompt":"Q: What is the capital of Italy?\nA:","completion":" Rome"}
{"prompt":"Q: What is the capital of Spain?\nA:","completion":" Madrid"}
{"prompt":"Q: What is the capital of Egypt?\nA:","completion":" Cairo"}
{"prompt":"Q: What is the capital of Peru?\nA:","completion":" Lima"}
"#;

const EVAL: &str = r#"{"prompt":"Q: What is the capital of Germany?\nA:","completion":" Berlin"}
{"prompt":"Q: What is the capital of Kenya?\nA:","completion":" Nairobi"}
"#;

fn losses(metrics: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn tune_writes_adapter_checkpoint_metrics_eval_and_plot() {
    let t = Instant::now();
    let dir = temp_dir("a");
    let data = write(&dir, "train.jsonl", CHAT);
    let eval = write(&dir, "eval.jsonl", EVAL);
    let out = dir.join("run");
    let m = model();
    let args = ["tune", "--model", &m, "--data", &data, "--eval", &eval, "--out", &s(&out), "--max-steps", "3", "--batch-size", "1", "--max-len", "64", "--save-every", "2", "--lr", "1e-3", "--json"];
    let (code, stdout, err) = plinth(&args);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(stdout.trim().lines().count(), 1, "--json prints one line: {stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["steps"], 3, "{v}");
    assert!(v["final_loss"].as_f64().unwrap().is_finite(), "{v}");
    // SmolLM2-135M: 30 layers x r 8 x (q 576+576, k 576+192, v 576+192, o 576+576, gate/up/down 3 x (576+1536)).
    assert_eq!(v["trainable_parameters"], 30 * 8 * (1152 + 768 + 768 + 1152 + 3 * 2112), "{v}");
    let d = &v["data"];
    assert_eq!((d["records"].as_u64(), d["examples"].as_u64(), d["format"].as_str()), (Some(5), Some(5), Some("chat")), "{v}");
    assert_eq!(d["truncated"], 1, "the long answer is cut at --max-len 64 and counted: {v}");
    assert!(d["label_tokens"].as_u64().unwrap() > 0 && d["tokens"].as_u64().unwrap() > d["label_tokens"].as_u64().unwrap(), "{v}");
    let (before, after) = (v["eval_loss"]["before"].as_f64().unwrap(), v["eval_loss"]["after"].as_f64().unwrap());
    assert!(before.is_finite() && after.is_finite() && before != after, "{v}");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0 && v["seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert!(err.contains("1 example(s) cut at --max-len 64"), "truncation is never silent, even with --json: {err}");

    for f in ["adapter_config.json", "adapter_model.safetensors", "checkpoint/trainer_state.json", "checkpoint/optimizer.safetensors", "checkpoint/adapter_model.safetensors"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["peft_type"].as_str(), cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()), (Some("LORA"), Some(8), Some(16.0)), "{cfg}");
    let steps: Vec<u64> = losses(&out.join("metrics.jsonl")).iter().map(|p| p.0).collect();
    assert_eq!(steps, [1, 2, 3]);
    let eval_steps: Vec<u64> = std::fs::read_to_string(out.join("eval.jsonl")).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(eval_steps, [0, 2, 3], "eval before training, every --save-every steps and at the end");
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(std::fs::read_dir(&out).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().contains(".part")), "no temporary file left");

    // The same --out again without --resume would overwrite the run: refused before loading.
    let (code, _, err) = plinth(&args);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: ") && err.contains("--resume") && err.trim_end().lines().count() == 1, "{err}");

    // The adapter evaluates against the base: both results, the adapter's reference loss lower.
    let (code, stdout, err) = plinth(&["eval", "--model", &m, "--adapter", &s(&out), "--data", &eval, "--compare", "--max-tokens", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    let e: Value = serde_json::from_str(stdout.trim()).unwrap();
    let nll = |k: &str| e[k]["accuracy"]["mean_nll_with_end"].as_f64().unwrap();
    assert!(nll("adapted") < nll("base"), "training on capitals lowers the loss on held-out capitals: {e}");
    assert_eq!(e["base"]["accuracy"]["examples"], 2);
    eprintln!("tune (a) took {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn sigkilled_run_resumes_to_the_uninterrupted_result() {
    let t = Instant::now();
    let dir = temp_dir("b");
    let data = write(&dir, "train.jsonl", PAIRS);
    let m = model();
    let run_args = |out: &Path| -> Vec<String> {
        ["tune", "--model", &m, "--data", &data, "--out", &s(out), "--max-steps", "6", "--batch-size", "1", "--save-every", "1", "--lr", "1e-3", "--seed", "7"]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };

    let full = dir.join("full");
    let (code, stdout, err) = plinth(&run_args(&full).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("trained 6 steps"), "{stdout}");
    assert!(err.contains("truncated 0") && err.contains("dropped 0") && err.contains("trainable parameters"), "data report before training: {err}");
    let want = losses(&full.join("metrics.jsonl"));
    assert_eq!(want.len(), 6);

    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth")).args(run_args(&killed)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let metrics = killed.join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count());
        if done >= 2 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run finished before the kill; nothing was tested");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = losses(&metrics).len();
    assert!((2..6).contains(&at_kill), "killed after {at_kill} steps");

    let mut args = run_args(&killed);
    args.push("--resume".into());
    let (code, stdout, err) = plinth(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming from the checkpoint at step"), "{err}");
    assert!(stdout.contains("trained 6 steps"), "{stdout}");
    let got = losses(&metrics);
    assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6], "one line per step, none repeated");
    for ((step, a), (_, b)) in want.iter().zip(&got) {
        assert!((a - b).abs() <= RESUME_TOL, "step {step}: uninterrupted {a} vs resumed {b}");
    }
    assert!(killed.join("adapter_model.safetensors").is_file() && killed.join("loss.png").is_file());
    eprintln!("resume (b) took {:.1} s", t.elapsed().as_secs_f64());
}

/// Runs a failing command and checks the shape of the failure: exit 1, one `error:` line
/// containing each of `expect`, no panic.
fn fails(args: &[&str], expect: &[&str]) {
    let (code, _, err) = plinth(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "{args:?}: not one error line: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: expected '{e}' in: {err}");
    }
}

#[test]
fn bad_input_is_one_error_line() {
    let dir = temp_dir("c");
    let m = model();
    let data = write(&dir, "ok.jsonl", PAIRS);
    let out = s(&dir.join("out"));
    let missing = s(&dir.join("missing.jsonl"));
    fails(&["tune", "--model", &m, "--data", &missing, "--out", &out], &["--data", "missing.jsonl"]);
    let bad = write(&dir, "bad.jsonl", "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\": \"unterminated\n");
    fails(&["tune", "--model", &m, "--data", &bad, "--out", &out], &["bad.jsonl", "line 2"]);
    let wrong = write(&dir, "wrong.jsonl", "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"question\":\"a\"}\n");
    fails(&["tune", "--model", &m, "--data", &wrong, "--out", &out], &["wrong.jsonl", "line 2"]);
    fails(&["tune", "--model", &m, "--data", &data, "--out", &out, "--dropout", "1.5"], &["--dropout", "[0, 1)"]);
    fails(&["tune", "--model", &m, "--data", &data, "--out", &out, "--rank", "0"], &["--rank"]);
    fails(&["tune", "--model", &m, "--data", &data, "--out", &out, "--batch-size", "0"], &["--batch-size"]);
    fails(&["tune", "--model", &m, "--data", &data, "--out", &out, "--max-len", "1"], &["--max-len"]);
    fails(&["tune", "--model", &m, "--data", &data, "--out", &out, "--target-modules", "nonesuch_proj"], &["--target-modules", "nonesuch_proj"]);
    assert!(!dir.join("out").exists(), "nothing is written for a refused run");

    // An architecture whose linear layers LoRA cannot reach yet (GPT-2; no GGUF of one is at
    // hand, so its Hugging Face directory, with a tokenizer added so that it loads).
    let gpt2 = dir.join("tiny-gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-gpt2").join(f), gpt2.join(f)).unwrap();
    }
    std::fs::copy(fixture("tokenizer/smollm2-hf/tokenizer.json"), gpt2.join("tokenizer.json")).unwrap();
    fails(&["tune", "--model", &s(&gpt2), "--data", &data, "--out", &out], &["gpt2", "Llama family"]);

    fails(&["eval", "--model", &m, "--perplexity", &missing], &["missing.jsonl"]);
    fails(&["eval", "--model", &m, "--perplexity", &s(&fixture("smollm2/passage.txt")), "--ctx", "2"], &["--ctx"]);
    fails(&["eval", "--model", &m, "--adapter", &s(&dir), "--data", &data], &["--adapter", "adapter_config.json"]);
    fails(&["merge", "--model", &s(&fixture("tiny-llama")), "--adapter", &s(&dir), "--out", &out], &["--adapter"]);
}

#[test]
fn eval_perplexity_prints_a_finite_value_and_json() {
    let m = model();
    let passage = s(&fixture("smollm2/passage.txt"));
    let (code, stdout, err) = plinth(&["eval", "--model", &m, "--perplexity", &passage, "--ctx", "128"]);
    assert_eq!(code, 0, "{err}");
    let ppl: f64 = stdout.split_whitespace().skip_while(|w| *w != "perplexity").nth(1).and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("{stdout}"));
    assert!(ppl.is_finite() && ppl > 1.0, "{stdout}");
    let (code, stdout, err) = plinth(&["eval", "--model", &m, "--perplexity", &passage, "--ctx", "128", "--chunks", "2", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let p = &v["perplexity"];
    assert_eq!((p["ctx"].as_u64(), p["chunks"].as_u64(), p["tokens_scored"].as_u64()), (Some(128), Some(2), Some(2 * 63)), "{v}");
    assert!(p["ppl"].as_f64().unwrap().is_finite(), "{v}");
    // Too short for two windows: llama.cpp's rule, one error line.
    fails(&["eval", "--model", &m, "--perplexity", &passage], &["2 x the context of 512"]);
}

#[test]
fn merge_writes_a_loadable_model_directory() {
    let dir = temp_dir("e");
    let out = dir.join("merged");
    let (code, stdout, err) = plinth(&[
        "merge",
        "--model",
        &s(&fixture("tiny-llama")),
        "--adapter",
        &s(&fixture("tiny-llama-lora")),
        "--out",
        &s(&out),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["merged"].as_array().unwrap().len(), 14, "7 projections x 2 layers: {v}");
    assert!(err.contains("no tokenizer"), "the fixture has no tokenizer, and the note says so: {err}");
    assert!(out.join("config.json").is_file() && out.join("model.safetensors").is_file());
    let (code, stdout, err) = plinth(&["inspect", &s(&out), "--json"]);
    assert_eq!(code, 0, "{err}");
    let i: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((i["architecture"].as_str(), i["layers"].as_u64(), i["vocab_size"].as_u64()), (Some("llama"), Some(2), Some(256)), "{i}");
    // An existing, non-empty --out is refused.
    fails(&["merge", "--model", &s(&fixture("tiny-llama")), "--adapter", &s(&fixture("tiny-llama-lora")), "--out", &s(&out)], &["--out", "already exists"]);
}

/// `tune --task classify`: a head on the frozen all-MiniLM-L6-v2 from a CSV, then `classify`
/// with the written directory.
#[test]
fn tune_classify_head_then_classify() {
    let dir = std::env::temp_dir().join(format!("plinth-tune-cls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pos = ["a wonderful film", "the food was lovely", "great service, friendly staff", "an excellent, charming book", "I loved the concert", "brilliant and delightful"];
    let neg = ["a terrible film", "the food was awful", "rude service, dirty room", "a boring, dreadful book", "I hated the concert", "broken and disappointing"];
    let mut csv = String::from("text,label\n");
    for (p, n) in pos.iter().zip(&neg) {
        csv += &format!("\"{p}\",positive\n\"{n}\",negative\n");
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap();
    let out = dir.join("head");
    let minilm = plinth_testutil::minilm_dir();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["tune", "--task", "classify", "--model"])
        .arg(&minilm)
        .args(["--data"])
        .arg(dir.join("train.csv"))
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(o.stdout.split(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap()).unwrap();
    assert_eq!(report["labels"], serde_json::json!(["negative", "positive"]));
    assert!(report["train_accuracy"].as_f64().unwrap() >= 0.99, "{report}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["classify", "--json", "--model"])
        .arg(&out)
        .args(["What a delightful evening.", "The room was dirty and the staff were rude."])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["labels"][0]["label"], "positive");
    assert_eq!(lines[1]["labels"][0]["label"], "negative");
    std::fs::remove_dir_all(&dir).unwrap();
}
