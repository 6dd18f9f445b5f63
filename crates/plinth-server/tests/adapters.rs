//! LoRA adapters in the server, on the real SmolLM2: a request naming an adapter generates
//! with it, concurrent requests mixing adapters and the base give what they give alone, and
//! the admin routes load and unload adapters at run time behind the API key.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Tensor;
use common::{http, smollm2, KEY};
use plinth_server::{Server, ServerConfig, Served};
use plinth_train::{peft, LoraConfig, LoraSet};
use serde_json::{json, Value};

/// A random adapter for SmolLM2 (B non-zero, so it changes the output), written as PEFT files.
fn random_adapter(tag: &str, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-adapter-{tag}-{}", std::process::id()));
    let m = smollm2("x").model;
    let set = LoraSet::init(m.as_ref(), LoraConfig { r: 4, alpha: 32.0, ..Default::default() }, seed).unwrap();
    for e in &set.entries {
        let b = e.b.as_tensor();
        e.b.set(&Tensor::randn(0f32, 0.05, b.dims(), b.device()).unwrap()).unwrap();
    }
    let loc = plinth_io::fetch::ModelLocation::Gguf(plinth_testutil::smollm2_gguf());
    peft::save(&set, &dir, "smollm2", peft::QkLayout::of(&loc, m.as_ref())).unwrap();
    dir
}

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let adapter = random_adapter("start", 1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let config = ServerConfig { port: 0, api_key: Some(KEY.into()), adapters: vec![("tuned".into(), adapter)], ..ServerConfig::default() };
                let server = Server::bind(config, Served { models: vec![smollm2("smollm2")], ..Default::default() }).await.unwrap();
                tx.send(server.local_addr()).unwrap();
                server.run(std::future::pending()).await.unwrap();
            });
        });
        rx.recv().expect("the test server starts")
    })
}

fn auth() -> String {
    format!("Bearer {KEY}")
}

fn call(a: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> common::Resp {
    let bytes = body.map(|b| b.to_string().into_bytes());
    http(a, method, path, &[("Authorization", &auth()), ("Content-Type", "application/json")], bytes.as_deref())
}

fn complete(a: SocketAddr, model: &str) -> (String, String) {
    let r = call(a, "POST", "/v1/chat/completions", Some(&json!({"model": model, "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 12, "temperature": 0})));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    (v["model"].as_str().unwrap().to_string(), v["choices"][0]["message"]["content"].as_str().unwrap().to_string())
}

#[test]
fn requests_choose_the_adapter_and_mixed_batches_match() {
    let a = server();
    let (name, base) = complete(a, "smollm2");
    assert_eq!(name, "smollm2");
    let (name, tuned) = complete(a, "tuned");
    assert_eq!(name, "tuned");
    assert_ne!(base, tuned, "the adapter changes the greedy answer");
    // Four at once, alternating: each equals its sequential answer.
    let handles: Vec<_> = ["smollm2", "tuned", "smollm2", "tuned"].into_iter().map(|m| std::thread::spawn(move || complete(a, m).1)).collect();
    let got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, [base.clone(), tuned.clone(), base, tuned]);
    let models = call(a, "GET", "/v1/models", None).json();
    let tuned_entry = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "tuned").cloned().unwrap();
    assert_eq!(tuned_entry["parent"], "smollm2");
}

#[test]
fn adapters_load_and_unload_at_run_time() {
    let a = server();
    let dir = random_adapter("runtime", 2);
    let r = call(a, "POST", "/v1/adapters", Some(&json!({"name": "later", "path": dir})));
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, later) = complete(a, "later");
    let r = call(a, "POST", "/v1/adapters", Some(&json!({"name": "later", "path": dir})));
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (409, Some("already_exists")));
    let list = call(a, "GET", "/v1/adapters", None).json();
    assert!(list["data"].as_array().unwrap().iter().any(|x| x["id"] == "later"), "{list}");
    assert!(!later.is_empty());
    let r = call(a, "DELETE", "/v1/adapters/later", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(a, "POST", "/v1/chat/completions", Some(&json!({"model": "later", "messages": [{"role": "user", "content": "hi"}]})));
    assert_eq!(r.status, 404);
    assert_eq!(call(a, "DELETE", "/v1/adapters/later", None).status, 404);
    let r = call(a, "POST", "/v1/adapters", Some(&json!({"name": "bad", "path": "/no/such/dir"})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("/no/such/dir"));
    let r = http(a, "GET", "/v1/adapters", &[], None);
    assert_eq!(r.status, 401, "admin routes need the key");
    std::fs::remove_dir_all(dir).unwrap();
}
