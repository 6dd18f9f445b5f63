//! The binary end to end on the real default model (SmolLM2-135M-Instruct Q4_1 GGUF).


use plinth_testutil::smollm2_gguf;
use serde_json::Value;

fn plinth(args: &[&str], stdin: &str) -> (i32, String, String) {
    plinth_testutil::run_with_stdin(env!("CARGO_BIN_EXE_plinth"), args, stdin)
}

fn model() -> String {
    smollm2_gguf().display().to_string()
}

fn generate_json(extra: &[&str]) -> Value {
    let m = model();
    let mut args = vec!["generate", "--model", m.as_str(), "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = plinth(&args, "");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.trim().lines().count(), 1, "--json must print exactly one line: {out}");
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn generate_json_has_every_field_and_answers() {
    let v = generate_json(&["--chat", "--prompt", "What is the capital of Japan?", "-t", "0", "-n", "24"]);
    for k in ["text", "prompt_tokens", "completion_tokens", "token_ids", "finish_reason", "prefill_tok_s", "decode_tok_s"] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("Tokyo"), "greedy answer should name Tokyo: {text:?}");
    let n = v["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&n));
    assert_eq!(v["token_ids"].as_array().unwrap().len() as u64, n);
    assert!(["stop", "length"].contains(&v["finish_reason"].as_str().unwrap()));
    assert!(v["prefill_tok_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn same_seed_same_text_different_seed_different_text() {
    let run = |seed: &str| {
        generate_json(&["--prompt", "Once upon a time", "-t", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0", "-n", "24", "--seed", seed])["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    assert_ne!(a, run("8"));
}

#[test]
fn stop_string_ends_generation_and_is_not_emitted() {
    let base = generate_json(&["--prompt", "The days of the week are Monday,", "-t", "0", "-n", "20"]);
    let text = base["text"].as_str().unwrap().to_string();
    // Stop on a word from the middle of the greedy continuation.
    let word = text.split_whitespace().nth(2).expect("enough words").trim_matches(|c: char| !c.is_alphanumeric()).to_string();
    assert!(!word.is_empty(), "{text}");
    let v = generate_json(&["--prompt", "The days of the week are Monday,", "-t", "0", "-n", "20", "--stop", &word]);
    let stopped = v["text"].as_str().unwrap();
    assert_eq!(stopped, &text[..text.find(&word).unwrap()], "full: {text:?}");
    assert_eq!(v["finish_reason"], "stop");
}

#[test]
fn prompt_from_stdin() {
    let m = model();
    let (code, out, err) = plinth(&["generate", "--model", &m, "-t", "0", "-n", "4"], "1, 2, 3, 4,");
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
}

#[test]
fn chat_streams_resets_and_exits() {
    let m = model();
    let (code, out, err) = plinth(
        &["chat", "--model", &m, "-t", "0", "-n", "16"],
        "Hello!\n/reset\nWhat is 2 + \\\n2?\n/exit\nnever read\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(conversation reset)"), "{err}");
    assert!(out.trim().lines().filter(|l| !l.trim().is_empty()).count() >= 2, "two replies expected: {out}");
}

#[test]
fn chat_refuses_a_message_longer_than_the_context() {
    let m = model();
    let long = "lighthouse ".repeat(9000);
    let (code, out, err) = plinth(&["chat", "--model", &m, "-n", "8"], &format!("{long}\n/exit\n"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("does not fit") && err.contains("8192"), "{err}");
    assert!(out.trim().is_empty(), "nothing should be generated: {out}");
}

#[test]
fn inspect_json_describes_an_llm() {
    let m = model();
    let (code, out, err) = plinth(&["inspect", &m, "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["context_length"], 8192);
    assert_eq!(v["vocab_size"], 49152);
    assert_eq!(v["has_chat_template"], true);
    assert_eq!(v["is_llm"], true);
    let params = v["parameters"].as_u64().unwrap();
    assert!((134_000_000..136_000_000).contains(&params), "{params}");
    assert!(v["card"]["tasks"].as_array().unwrap().iter().any(|t| t == "chat"));
    let types: Vec<&str> = v["tensor_types"].as_array().unwrap().iter().map(|t| t["dtype"].as_str().unwrap()).collect();
    assert!(types.contains(&"Q4_1"), "{types:?}");
}

#[test]
fn chat_drops_oldest_turns_whole_to_fit_the_context() {
    let m = model();
    let para = "Tell me about lighthouses, the tall towers with lamps that guide ships along dangerous coasts at night.";
    let input = format!("{para}\n{para} Again please.\n{para} Once more.\n/exit\n");
    let (code, out, err) = plinth(&["chat", "--model", &m, "-t", "0", "-n", "24", "--context", "160"], &input);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("dropped the oldest 2 message(s)") && err.contains("160-token context"), "{err}");
    assert!(out.trim().lines().filter(|l| !l.trim().is_empty()).count() >= 3, "three replies expected: {out}");
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let m = model();
    let (code, _, err) = plinth(&["generate", "--model", &m, "--context", "32", "--prompt", &"word ".repeat(100)], "");
    assert_ne!(code, 0);
    assert!(err.contains("prompt has") && err.contains("32 tokens"), "{err}");
}

/// `plinth summarize` on a file, streamed and as JSON, with a context small enough to need
/// map-reduce; bad input is one error line.
#[test]
fn summarize_cli() {
    let bin = env!("CARGO_BIN_EXE_plinth");
    let gguf = plinth_testutil::smollm2_gguf();
    let passage = plinth_testutil::fixture("smollm2/passage.txt");
    let o = std::process::Command::new(bin)
        .args(["summarize", "--model"])
        .arg(&gguf)
        .arg(&passage)
        .args(["--words", "20", "--context", "256", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["parts"].as_u64().unwrap() >= 2 && v["rounds"].as_u64().unwrap() >= 2, "{v}");
    assert!(!v["summary"].as_str().unwrap().is_empty());
    let o = std::process::Command::new(bin).args(["summarize", "--model"]).arg(&gguf).args(["--style", "haiku"]).arg(&passage).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--style") && err.lines().count() == 1, "{err}");
}
