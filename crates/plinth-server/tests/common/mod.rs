//! Shared by the server's integration tests: loading the real model into a `ModelSpec`, and
//! a minimal blocking HTTP/1.1 client over a raw TCP socket (enough for status, headers,
//! JSON bodies and chunked SSE streams, without pulling in an HTTP client crate).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder_with, LoadOptions};
use plinth_server::ModelSpec;
use plinth_tokenize::Tokenizer;
use serde_json::Value;

/// The real SmolLM2-135M-Instruct GGUF, served as `name`.
pub fn smollm2(name: &str) -> ModelSpec {
    let path = plinth_testutil::smollm2_gguf();
    let loaded = load_decoder_with(&ModelLocation::Gguf(path.clone()), LoadOptions::default()).expect("load the model");
    let gguf = loaded.gguf.as_ref().expect("a GGUF model keeps its metadata");
    let tokenizer = Tokenizer::from_gguf(gguf).expect("tokenizer from GGUF");
    ModelSpec { name: name.into(), path, model: loaded.model, tokenizer }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return out };
        let size_field = std::str::from_utf8(&raw[..eol]).unwrap_or("0");
        let size = usize::from_str_radix(size_field.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        let end = (start + size).min(raw.len());
        out.extend_from_slice(&raw[start..end]);
        raw = raw.get(end + 2..).unwrap_or(&[]);
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to the test server");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body.unwrap_or(&[]));
    // The server may answer (413) and stop reading before the body is all sent.
    let _ = s.write_all(&req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

pub const KEY: &str = "sk-plinth-test";

/// A POST of a JSON body with the test API key.
pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {KEY}");
    http(addr, "POST", path, &[("Authorization", &auth), ("Content-Type", "application/json")], Some(body.to_string().as_bytes()))
}

/// The `data:` payloads of an SSE body, checking the framing on the way: every event is
/// exactly one `data: ` line followed by a blank line.
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "an SSE body ends with a blank line: {body:?}");
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|ev| {
            assert!(!ev.contains('\n'), "one line per event: {ev:?}");
            ev.strip_prefix("data: ").unwrap_or_else(|| panic!("event without 'data: ': {ev:?}")).to_string()
        })
        .collect()
}
