//! Graceful shutdown: with a long stream in flight, the shutdown signal makes `run` return
//! within a few seconds, and the client's stream still ends properly with `data: [DONE]`.

mod common;

use std::time::{Duration, Instant};

use common::{http, smollm2};
use plinth_server::{Server, ServerConfig, Served};
use serde_json::json;

#[test]
fn shutdown_ends_in_flight_streams_and_returns() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(Server::bind(ServerConfig { port: 0, ..ServerConfig::default() }, Served { models: vec![smollm2("m")], ..Default::default() })).unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let client = std::thread::spawn(move || {
        let body = json!({"model": "m", "prompt": "Once upon a time", "max_tokens": 4000, "stream": true});
        http(addr, "POST", "/v1/completions", &[], Some(body.to_string().as_bytes()))
    });
    // Let generation get going before pulling the plug.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let page = http(addr, "GET", "/metrics", &[], None).body;
        if page.lines().any(|l| l.starts_with("plinth_generated_tokens_total{model=\"m\"}") && !l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "no token was generated within two minutes");
        std::thread::sleep(Duration::from_millis(100));
    }

    let t = Instant::now();
    stop_tx.send(()).unwrap();
    let result = rt.block_on(running).unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "shutdown took {:?}", t.elapsed());

    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with("data: [DONE]\n\n"), "stream did not end cleanly: ...{}", &r.body[r.body.len().saturating_sub(300)..]);
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
