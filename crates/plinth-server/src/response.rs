//! The JSON shapes plinth answers with, as OpenAI's clients expect them: whole
//! `chat.completion` / `text_completion` objects, streamed `chat.completion.chunk` /
//! `text_completion` chunks, and both endpoints' differing log-probability shapes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use plinth_engine::{FinishReason, TokenLogprob};
use serde_json::{json, Map, Value};

use crate::request::Endpoint;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Which build answered; OpenAI's clients use it to notice a backend change.
pub fn fingerprint() -> String {
    format!("plinth-{}", env!("CARGO_PKG_VERSION"))
}

/// OpenAI's finish reasons are "stop" and "length"; a request cut short by a server
/// shutdown says "cancelled" rather than pretending to be either.
pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

/// What every object of one response shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    /// A fresh id; unique within the process (a counter) and across restarts (the clock).
    pub fn new(endpoint: Endpoint, model: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let id = format!("{prefix}-{nanos:016x}{:06x}", NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff);
        Meta { endpoint, id, created: unix_now(), model: model.to_string() }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Vec<Value>) -> Map<String, Value> {
        let v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": fingerprint(),
            "choices": choices,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Log-probabilities of consecutive tokens of one choice. `offset` is where the first
/// token's text starts in the choice's text (in characters), for the completions shape.
pub fn logprobs(endpoint: Endpoint, lps: &[TokenLogprob], offset: usize) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let entry = |token: &str, logprob: f32| json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
            let content: Vec<Value> = lps
                .iter()
                .map(|lp| {
                    let mut e = entry(&lp.token, lp.logprob);
                    e["top_logprobs"] = lp.top.iter().map(|(t, l)| entry(t, *l)).collect();
                    e
                })
                .collect();
            json!({"content": content, "refusal": null})
        }
        Endpoint::Completion => {
            let mut at = offset;
            let mut text_offset = Vec::with_capacity(lps.len());
            for lp in lps {
                text_offset.push(at);
                at += lp.token.chars().count();
            }
            let top: Vec<Value> = lps.iter().map(|lp| Value::Object(lp.top.iter().map(|(t, l)| (t.clone(), json!(l))).collect())).collect();
            json!({
                "tokens": lps.iter().map(|lp| lp.token.as_str()).collect::<Vec<_>>(),
                "token_logprobs": lps.iter().map(|lp| lp.logprob).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": text_offset,
            })
        }
    }
}

/// One finished choice of a non-streaming response.
#[derive(Debug, Default)]
pub struct Choice {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<FinishReason>,
    pub completion_tokens: usize,
}

/// The whole non-streaming response.
pub fn completion(meta: &Meta, choices: &[Choice], want_logprobs: bool, prompt_tokens: usize) -> Value {
    let list = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let lp = if want_logprobs { logprobs(meta.endpoint, &c.logprobs, 0) } else { Value::Null };
            let finish = c.finish.map(finish_str);
            match meta.endpoint {
                Endpoint::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": c.text, "refusal": null},
                    "logprobs": lp,
                    "finish_reason": finish,
                }),
                Endpoint::Completion => json!({"index": i, "text": c.text, "logprobs": lp, "finish_reason": finish}),
            }
        })
        .collect();
    let mut m = meta.wrap(false, list);
    let completion: usize = choices.iter().map(|c| c.completion_tokens).sum();
    m.insert("usage".into(), usage(prompt_tokens, completion));
    Value::Object(m)
}

/// What one streamed chunk carries for its choice.
#[derive(Clone, Copy)]
pub enum Delta<'a> {
    /// The chat stream's opening chunk: the role, and empty content.
    Role,
    Text(&'a str),
    /// The closing chunk of a choice.
    Finish(FinishReason),
}

/// One streamed chunk for choice `index`; `lp` is the log-probabilities of the tokens whose
/// text it carries.
pub fn chunk(meta: &Meta, index: usize, delta: Delta<'_>, lp: Option<Value>) -> Value {
    let finish = match delta {
        Delta::Finish(f) => Some(finish_str(f)),
        _ => None,
    };
    let text = match delta {
        Delta::Text(t) => t,
        _ => "",
    };
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let delta = match delta {
                Delta::Role => json!({"role": "assistant", "content": ""}),
                Delta::Text(t) => json!({"content": t}),
                Delta::Finish(_) => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish})
        }
        Endpoint::Completion => json!({"index": index, "text": text, "logprobs": lp, "finish_reason": finish}),
    };
    Value::Object(meta.wrap(true, vec![choice]))
}

/// The usage chunk of `stream_options.include_usage`: empty `choices`, then `usage`.
pub fn usage_chunk(meta: &Meta, prompt: usize, completion: usize) -> Value {
    let mut m = meta.wrap(true, Vec::new());
    m.insert("usage".into(), usage(prompt, completion));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(token: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob { token: token.into(), logprob, top: vec![(token.into(), logprob), ("x".into(), -3.0)] }
    }

    #[test]
    fn chat_and_completion_logprob_shapes() {
        let lps = [lp("Hé", -0.5), lp("llo", -1.0)];
        let c = logprobs(Endpoint::Chat, &lps, 0);
        assert_eq!(c["content"][0]["token"], "Hé");
        assert_eq!(c["content"][0]["bytes"], json!([72, 195, 169]));
        assert_eq!(c["content"][1]["top_logprobs"][1]["token"], "x");
        let t = logprobs(Endpoint::Completion, &lps, 5);
        assert_eq!(t["tokens"], json!(["Hé", "llo"]));
        assert_eq!(t["text_offset"], json!([5, 7]));
        assert_eq!(t["top_logprobs"][0]["x"], json!(-3.0));
    }

    #[test]
    fn objects_carry_id_model_and_usage() {
        let meta = Meta::new(Endpoint::Chat, "m");
        assert!(meta.id.starts_with("chatcmpl-"));
        assert_ne!(meta.id, Meta::new(Endpoint::Chat, "m").id);
        let choice = Choice { text: "hi".into(), finish: Some(FinishReason::Length), completion_tokens: 2, ..Default::default() };
        let v = completion(&meta, &[choice], false, 3);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert!(v["system_fingerprint"].as_str().unwrap().starts_with("plinth-"));

        let first = chunk(&meta, 0, Delta::Role, None);
        assert_eq!((first["object"].as_str(), first["choices"][0]["delta"]["role"].as_str()), (Some("chat.completion.chunk"), Some("assistant")));
        let last = chunk(&meta, 1, Delta::Finish(FinishReason::Stop), None);
        assert_eq!((last["choices"][0]["index"].as_u64(), last["choices"][0]["finish_reason"].as_str()), (Some(1), Some("stop")));
        let u = usage_chunk(&Meta::new(Endpoint::Completion, "m"), 1, 2);
        assert_eq!((u["choices"].as_array().map(Vec::len), u["object"].as_str()), (Some(0), Some("text_completion")));
    }
}
