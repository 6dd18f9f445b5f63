//! The server end to end over real HTTP on 127.0.0.1, with the real SmolLM2 model served
//! under two names. One server is shared by all tests of this file; it requires an API key,
//! allows one CORS origin and has a small body limit, so that every gate can be exercised.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use common::{http, post, sse_events, smollm2, KEY};
use plinth_engine::EngineConfig;
use plinth_server::{Server, ServerConfig, Served};
use serde_json::{json, Value};

const LIMIT: usize = 64 * 1024;
const ORIGIN: &str = "https://app.test";

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let config = ServerConfig {
                    port: 0,
                    api_key: Some(KEY.into()),
                    cors: Some(ORIGIN.into()),
                    max_body_bytes: LIMIT,
                    engine: EngineConfig { max_running: 8, max_queue: 64, prefill_chunk: 256 },
                    ..ServerConfig::default()
                };
                let server = Server::bind(config, Served { models: vec![smollm2("smollm2"), smollm2("second")], ..Default::default() }).await.unwrap();
                tx.send(server.local_addr()).unwrap();
                server.run(std::future::pending()).await.unwrap();
            });
        });
        rx.recv().expect("the test server starts")
    })
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[test]
fn health_and_metrics_are_open() {
    let a = server();
    let r = http(a, "GET", "/health", &[], None);
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = http(a, "GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    for line in ["plinth_queue_length{model=\"smollm2\"}", "plinth_running_sequences{model=\"second\"}", "plinth_kv_cache_blocks{model=\"smollm2\"}"] {
        assert!(r.body.contains(line), "{line} missing from:\n{}", r.body);
    }
}

#[test]
fn models_are_listed_behind_the_key() {
    let a = server();
    let r = http(a, "GET", "/v1/models", &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = http(a, "GET", "/v1/models", &[("Authorization", "Bearer wrong")], None);
    assert_eq!(r.status, 401);

    let auth = format!("Bearer {KEY}");
    let r = http(a, "GET", "/v1/models", &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["smollm2", "second"]);
    assert!(v["data"].as_array().unwrap().iter().all(|m| m["owned_by"] == "plinth" && m["object"] == "model"));
    assert_eq!(http(a, "GET", "/v1/models/second", &[("Authorization", &auth)], None).json()["id"], "second");
    let r = http(a, "GET", "/v1/models/nope", &[("Authorization", &auth)], None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("model_not_found")));
}

#[test]
fn bad_input_gets_openai_errors() {
    let a = server();
    let chat = "/v1/chat/completions";
    let cmpl = "/v1/completions";
    let long = "hello ".repeat(9000);
    // (path, body, status, type, code, param)
    type Case<'a> = (&'a str, Value, u16, &'a str, Option<&'a str>, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (chat, json!({"model": "smollm2", "messages": []}), 400, "invalid_request_error", None, Some("messages")),
        (chat, json!({"model": "smollm2"}), 400, "invalid_request_error", None, Some("messages")),
        (chat, json!({"model": "smollm2", "messages": "hi"}), 400, "invalid_request_error", None, Some("messages")),
        (chat, json!({"model": "smollm2", "messages": [{"role": "robot", "content": "x"}]}), 400, "invalid_request_error", None, Some("messages[0].role")),
        (chat, json!({"model": "smollm2", "messages": [{"role": "user", "content": 3}]}), 400, "invalid_request_error", None, Some("messages[0].content")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "temperature": -1}), 400, "invalid_request_error", None, Some("temperature")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "temperature": "warm"}), 400, "invalid_request_error", None, Some("temperature")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "top_p": 2}), 400, "invalid_request_error", None, Some("top_p")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "n": 17}), 400, "invalid_request_error", None, Some("n")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "max_tokens": 0}), 400, "invalid_request_error", None, Some("max_tokens")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "stop": ["a", "b", "c", "d", "e"]}), 400, "invalid_request_error", None, Some("stop")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "presence_penalty": 2.5}), 400, "invalid_request_error", None, Some("presence_penalty")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "logit_bias": {"x": 1}}), 400, "invalid_request_error", None, Some("logit_bias")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "logit_bias": {"4000000": 1}}), 400, "invalid_request_error", None, Some("logit_bias")),
        (chat, json!({"model": "smollm2", "messages": user("x"), "logprobs": true, "top_logprobs": 21}), 400, "invalid_request_error", None, Some("top_logprobs")),
        (chat, json!({"messages": user("x")}), 400, "invalid_request_error", None, Some("model")),
        (chat, json!({"model": "gpt-17", "messages": user("x")}), 404, "invalid_request_error", Some("model_not_found"), Some("model")),
        (chat, json!({"model": "smollm2", "messages": user(&long)}), 400, "invalid_request_error", Some("context_length_exceeded"), Some("messages")),
        (cmpl, json!({"model": "smollm2", "prompt": long}), 400, "invalid_request_error", Some("context_length_exceeded"), Some("prompt")),
        (cmpl, json!({"model": "smollm2"}), 400, "invalid_request_error", None, Some("prompt")),
        (cmpl, json!({"model": "smollm2", "prompt": "x", "logprobs": 6}), 400, "invalid_request_error", None, Some("logprobs")),
        (cmpl, json!({"model": "smollm2", "prompt": [1, 99999999]}), 400, "invalid_request_error", None, Some("prompt")),
        (cmpl, json!([1, 2]), 400, "invalid_request_error", None, None),
    ];
    for (path, body, status, kind, code, param) in cases {
        let r = post(a, path, &body);
        let e = r.json()["error"].clone();
        let got = (r.status, e["type"].as_str(), e["code"].as_str(), e["param"].as_str());
        assert_eq!(got, (status, Some(kind), code, param), "{path} {body}: {}", r.body);
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
    }
    // The overflow message names both numbers.
    let r = post(a, cmpl, &json!({"model": "smollm2", "prompt": long}));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("9001") && msg.contains("8192"), "{msg}");

    // Malformed JSON is answered in the same JSON shape, not as axum's plain text.
    let auth = format!("Bearer {KEY}");
    let r = http(a, "POST", chat, &[("Authorization", &auth)], Some(b"{\"model\": "));
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn unknown_routes_methods_and_big_bodies() {
    let a = server();
    let r = http(a, "GET", "/v2/everything", &[], None);
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (404, Some("invalid_request_error")));
    let auth = format!("Bearer {KEY}");
    let r = http(a, "GET", "/v1/chat/completions", &[("Authorization", &auth)], None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (405, Some("method_not_allowed")));

    let big = json!({"model": "smollm2", "prompt": "x".repeat(LIMIT + 1024)}).to_string();
    let r = http(a, "POST", "/v1/completions", &[("Authorization", &auth)], Some(big.as_bytes()));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn cors_preflight_and_headers() {
    let a = server();
    let r = http(
        a,
        "OPTIONS",
        "/v1/chat/completions",
        &[("Origin", ORIGIN), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "authorization, content-type")],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert!(r.header("access-control-allow-methods").unwrap().contains("POST"));
    let r = http(a, "GET", "/health", &[("Origin", ORIGIN)], None);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    let r = http(a, "GET", "/health", &[("Origin", "https://other.test")], None);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn chat_completion_with_choices_and_logprobs() {
    let a = server();
    let body = json!({
        "model": "second", "messages": user("Name a colour."), "max_tokens": 4, "n": 2, "seed": 7,
        "logprobs": true, "top_logprobs": 2, "user": "tester", "some_future_field": {"a": 1},
    });
    let r = post(a, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("chat.completion"), Some("second")));
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("plinth-"));
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["role"], "assistant");
        assert!(matches!(c["finish_reason"].as_str(), Some("stop" | "length")));
        let content = c["logprobs"]["content"].as_array().unwrap();
        assert!(!content.is_empty() && content.len() <= 4);
        for t in content {
            assert!(t["logprob"].as_f64().unwrap() <= 0.0);
            assert_eq!(t["top_logprobs"].as_array().unwrap().len(), 2);
            assert!(t["bytes"].is_array() && t["token"].is_string());
        }
    }
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));
}

#[test]
fn chat_stream_matches_the_non_streaming_answer() {
    let a = server();
    let base = json!({"model": "smollm2", "messages": user("What is 2+2?"), "max_tokens": 6, "temperature": 0});
    let whole = post(a, "/v1/chat/completions", &base).json();
    let want = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();

    let mut body = base.clone();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(a, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    let fin = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(fin["finish_reason"], whole["choices"][0]["finish_reason"]);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, want);
    assert!(chunks.iter().map(|c| &c["id"]).all(|id| *id == chunks[0]["id"]), "one id per stream");
}

#[test]
fn text_completions_with_logprobs_and_streaming() {
    let a = server();
    let body = json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logprobs": 2});
    let v = post(a, "/v1/completions", &body).json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let lp = &v["choices"][0]["logprobs"];
    let n = lp["tokens"].as_array().unwrap().len();
    assert!(n > 0);
    for k in ["token_logprobs", "top_logprobs", "text_offset"] {
        assert_eq!(lp[k].as_array().unwrap().len(), n, "{k}: {lp}");
    }
    assert_eq!(lp["text_offset"][0], 0);
    let tokens: String = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tokens.starts_with(v["choices"][0]["text"].as_str().unwrap()));

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = post(a, "/v1/completions", &stream);
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, v["choices"][0]["text"].as_str().unwrap());
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());

    // A prompt of token ids is accepted as given.
    let ids = post(a, "/v1/completions", &json!({"model": "smollm2", "prompt": [504, 3575, 282, 4649, 314], "max_tokens": 2}));
    assert_eq!(ids.status, 200, "{}", ids.body);
    assert_eq!(ids.json()["usage"]["prompt_tokens"], 5);
}

#[test]
fn generation_shows_in_metrics() {
    let a = server();
    let r = post(a, "/v1/completions", &json!({"model": "second", "prompt": "One, two,", "max_tokens": 3}));
    assert_eq!(r.status, 200, "{}", r.body);
    let page = http(a, "GET", "/metrics", &[], None).body;
    assert!(page.contains("plinth_requests_total{route=\"/v1/completions\",status=\"200\"}"), "{page}");
    for family in ["plinth_time_to_first_token_seconds", "plinth_inter_token_latency_seconds"] {
        assert!(page.contains(&format!("# TYPE {family} histogram")), "{page}");
        assert!(page.contains(&format!("{family}_bucket{{model=\"second\",le=\"+Inf\"}}")), "{page}");
        let count = page
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_count{{model=\"second\"}} ")))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(count >= 1, "{family} count {count}");
    }
    let generated = page.lines().find_map(|l| l.strip_prefix("plinth_generated_tokens_total{model=\"second\"} ")).unwrap();
    assert!(generated.parse::<u64>().unwrap() >= 3);
}

#[test]
fn streamed_choices_each_finish_once() {
    let a = server();
    let body = json!({"model": "smollm2", "prompt": "1, 2, 3,", "max_tokens": 3, "n": 2, "stream": true, "stop": ["\n"]});
    let r = post(a, "/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    for i in 0..2 {
        let finishes = chunks.iter().filter(|c| c["choices"][0]["index"] == i && c["choices"][0]["finish_reason"].is_string()).count();
        assert_eq!(finishes, 1, "choice {i}: {}", r.body);
    }
    // Without include_usage there is no usage chunk.
    assert!(chunks.iter().all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
}
