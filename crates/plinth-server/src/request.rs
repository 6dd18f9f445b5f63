//! Reading an OpenAI request body: every field the server understands is checked for JSON
//! type and range here, with the error naming the field (`param`), and turned into the
//! engine's [`GenerationOptions`]. Unknown fields are ignored, as OpenAI's own API does.
//!
//! The fields are read from a `serde_json::Value` by hand rather than through a derived
//! struct: several accept more than one JSON type (`stop`, `prompt`, message `content`) and
//! a derive's type errors do not say which field was wrong.
//!
//! Defaults where a field is absent: OpenAI's `temperature` 1 and `top_p` 1, no `top_k` or
//! `min_p`, `repetition_penalty` 1, generation up to the end of the context window, and the
//! fixed seed [`DEFAULT_SEED`], so that two identical requests without `seed` give the same
//! text. Choice `i` of a request with `n` > 1 uses seed + i.

use plinth_engine::{GenerationOptions, SamplingParams};
use plinth_tokenize::{Message, Part};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The seed used when a request gives none.
pub const DEFAULT_SEED: u64 = 299_792_458;

/// How many recent tokens `repetition_penalty` looks at, as in the CLI.
const REPEAT_LAST_N: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
    Tokens(Vec<u32>),
}

/// A validated generation request.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: Option<usize>,
    pub n: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Alternatives per token when log-probabilities were asked for.
    pub logprobs: Option<usize>,
    pub logit_bias: Vec<(u32, f32)>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub stream: bool,
    pub include_usage: bool,
    /// The `image_url` parts of the messages, in prompt order (resolved and decoded later,
    /// by [`crate::images`], under the server's image policy).
    pub images: Vec<ImageRef>,
}

/// An image a chat message refers to: the URL as sent (`data:`, `file://` or a path,
/// `http(s)://`) and the parameter it came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
    pub param: String,
    pub url: String,
}

type Res<T> = Result<T, ApiError>;

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An integer, also when written as `5.0`.
fn as_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

/// Typed, range-checked access to the body's top-level fields; `null` counts as absent.
pub(crate) struct Fields<'a>(pub(crate) &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub(crate) fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    pub(crate) fn number(&self, k: &str, lo: f64, hi: f64) -> Res<Option<f32>> {
        let Some(v) = self.get(k) else { return Ok(None) };
        let x = v.as_f64().ok_or_else(|| ApiError::invalid(k, format!("'{k}' must be a number, got {}", kind(v))))?;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(k, format!("'{k}' must be between {lo} and {hi}, got {x}")));
        }
        Ok(Some(x as f32))
    }

    pub(crate) fn int(&self, k: &str, lo: i64, hi: i64) -> Res<Option<i64>> {
        let Some(v) = self.get(k) else { return Ok(None) };
        let x = as_int(v).ok_or_else(|| ApiError::invalid(k, format!("'{k}' must be an integer, got {}", describe(v))))?;
        if !(lo..=hi).contains(&x) {
            let range = if hi == i64::MAX { format!("at least {lo}") } else { format!("between {lo} and {hi}") };
            return Err(ApiError::invalid(k, format!("'{k}' must be {range}, got {x}")));
        }
        Ok(Some(x))
    }

    pub(crate) fn bool(&self, k: &str) -> Res<Option<bool>> {
        let Some(v) = self.get(k) else { return Ok(None) };
        v.as_bool().map(Some).ok_or_else(|| ApiError::invalid(k, format!("'{k}' must be a boolean, got {}", kind(v))))
    }

    pub(crate) fn string(&self, k: &str) -> Res<Option<&'a str>> {
        let Some(v) = self.get(k) else { return Ok(None) };
        v.as_str().map(Some).ok_or_else(|| ApiError::invalid(k, format!("'{k}' must be a string, got {}", kind(v))))
    }
}

/// A number's value in messages (so `-5` reads as "-5", not "a number").
fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => kind(v).to_string(),
    }
}

impl GenRequest {
    /// Parses and validates a body for `ep`.
    pub fn parse(ep: Endpoint, body: &[u8]) -> Res<Self> {
        let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
        let Value::Object(map) = &v else {
            return Err(ApiError::Invalid { param: None, message: format!("the request body must be a JSON object, got {}", kind(&v)) });
        };
        let f = Fields(map);
        let model = f.string("model")?.ok_or_else(|| ApiError::invalid("model", "you must provide a model parameter"))?.to_string();
        let mut images = Vec::new();
        let prompt = match ep {
            Endpoint::Chat => Prompt::Chat(messages(f.get("messages"), &mut images)?),
            Endpoint::Completion => prompt(f.get("prompt"))?,
        };
        unsupported(&f, ep)?;

        let max_tokens = match ep {
            Endpoint::Chat => f.int("max_completion_tokens", 1, i64::MAX)?.map_or_else(|| f.int("max_tokens", 1, i64::MAX), |x| Ok(Some(x)))?,
            Endpoint::Completion => f.int("max_tokens", 1, i64::MAX)?,
        };
        let temperature = f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0);
        // OpenAI allows top_p = 0, which the sampler does not; the smallest positive p keeps
        // exactly the most likely token, which is what 0 means.
        let top_p = f.number("top_p", 0.0, 1.0)?.map(|p| p.max(f32::MIN_POSITIVE)).filter(|&p| p < 1.0);
        let n = f.int("n", 1, 16)?.unwrap_or(1) as usize;
        let seed = match f.get("seed") {
            None => DEFAULT_SEED,
            // Negative seeds are valid in OpenAI's API; any 64 bits will do as a seed.
            Some(v) => v.as_u64().or_else(|| v.as_i64().map(|i| i as u64)).ok_or_else(|| {
                ApiError::invalid("seed", format!("'seed' must be an integer, got {}", describe(v)))
            })?,
        };
        let presence_penalty = f.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
        let frequency_penalty = f.number("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
        let logprobs = match ep {
            Endpoint::Chat => {
                let on = f.bool("logprobs")?.unwrap_or(false);
                let top = f.int("top_logprobs", 0, 20)?;
                if top.is_some_and(|t| t > 0) && !on {
                    return Err(ApiError::invalid("top_logprobs", "'logprobs' must be true when 'top_logprobs' is set"));
                }
                on.then(|| top.unwrap_or(0) as usize)
            }
            Endpoint::Completion => f.int("logprobs", 0, 5)?.map(|k| k as usize),
        };
        f.string("user")?;
        // plinth extras; top_k <= 0 means off, as in vLLM (-1) and llama.cpp (0).
        let top_k = f.int("top_k", i64::MIN, i64::MAX)?.filter(|&k| k > 0).map(|k| k as usize);
        let min_p = f.number("min_p", 0.0, 1.0)?.filter(|&p| p > 0.0);
        let repeat_penalty = f.number("repetition_penalty", 0.0, f64::from(f32::MAX))?.unwrap_or(1.0);
        if repeat_penalty <= 0.0 {
            return Err(ApiError::invalid("repetition_penalty", format!("'repetition_penalty' must be > 0, got {repeat_penalty}")));
        }
        let stream = f.bool("stream")?.unwrap_or(false);
        let include_usage = match f.get("stream_options") {
            None => false,
            Some(Value::Object(o)) => Fields(o).bool("include_usage").map_err(|_| {
                ApiError::invalid("stream_options.include_usage", "'stream_options.include_usage' must be a boolean")
            })?.unwrap_or(false),
            Some(v) => return Err(ApiError::invalid("stream_options", format!("'stream_options' must be an object, got {}", kind(v)))),
        };

        Ok(GenRequest {
            model,
            prompt,
            max_tokens: max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            n,
            sampling: SamplingParams { temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n: REPEAT_LAST_N, seed },
            stop: stop(f.get("stop"))?,
            logprobs,
            logit_bias: logit_bias(f.get("logit_bias"))?,
            presence_penalty,
            frequency_penalty,
            stream,
            include_usage: stream && include_usage,
            images,
        })
    }

    /// The engine options of choice `i`; without `max_tokens` a choice may run to the end
    /// of the context (the engine clips to what fits after the prompt).
    pub fn options(&self, i: usize, context: usize, adapter: Option<usize>) -> GenerationOptions {
        GenerationOptions {
            max_tokens: self.max_tokens.unwrap_or(context),
            sampling: SamplingParams { seed: self.sampling.seed.wrapping_add(i as u64), ..self.sampling.clone() },
            stop: self.stop.clone(),
            logprobs: self.logprobs,
            logit_bias: self.logit_bias.clone(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            adapter,
        }
    }

    /// Rejects token ids (in `logit_bias` or a token-id prompt) past the model's vocabulary.
    pub fn check_vocab(&self, vocab: usize) -> Res<()> {
        if let Some(&(id, _)) = self.logit_bias.iter().find(|(id, _)| *id as usize >= vocab) {
            return Err(ApiError::invalid("logit_bias", format!("token id {id} is outside the model's vocabulary of {vocab} tokens")));
        }
        if let Prompt::Tokens(ids) = &self.prompt {
            if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(ApiError::invalid("prompt", format!("token id {id} is outside the model's vocabulary of {vocab} tokens")));
            }
        }
        Ok(())
    }
}

/// OpenAI features plinth does not have: refusing them is better than silently giving an
/// answer of another kind than the one asked for.
fn unsupported(f: &Fields<'_>, ep: Endpoint) -> Res<()> {
    if f.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) || f.get("functions").is_some() {
        return Err(ApiError::invalid("tools", "tool and function calling is not supported by this server"));
    }
    if let Some(rf) = f.get("response_format") {
        let ty = rf.get("type").and_then(Value::as_str);
        if ty != Some("text") {
            return Err(ApiError::invalid("response_format", "only response_format {\"type\": \"text\"} is supported"));
        }
    }
    if ep == Endpoint::Completion {
        if f.bool("echo")? == Some(true) {
            return Err(ApiError::invalid("echo", "'echo' is not supported"));
        }
        if f.int("best_of", 1, 16)?.is_some_and(|b| b > 1) {
            return Err(ApiError::invalid("best_of", "'best_of' greater than 1 is not supported; use 'n'"));
        }
    }
    Ok(())
}

fn messages(v: Option<&Value>, images: &mut Vec<ImageRef>) -> Res<Vec<Message>> {
    let v = v.ok_or_else(|| ApiError::invalid("messages", "you must provide 'messages'"))?;
    let list = v.as_array().ok_or_else(|| ApiError::invalid("messages", format!("'messages' must be an array, got {}", kind(v))))?;
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "'messages' must contain at least one message"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("messages[{i}]");
            let obj = m.as_object().ok_or_else(|| ApiError::invalid(&at, format!("'{at}' must be an object, got {}", kind(m))))?;
            let role_param = format!("{at}.role");
            let role = match obj.get("role").and_then(Value::as_str) {
                Some(r @ ("system" | "user" | "assistant")) => r,
                // OpenAI's newer name for the system role.
                Some("developer") => "system",
                Some(r) => {
                    return Err(ApiError::invalid(&role_param, format!("role '{r}' is not supported (use system, user or assistant)")));
                }
                None => return Err(ApiError::invalid(&role_param, format!("'{role_param}' must be a string"))),
            };
            content(obj.get("content").unwrap_or(&Value::Null), &format!("{at}.content"), role, images)
        })
        .collect()
}

fn content(v: &Value, param: &str, role: &str, images: &mut Vec<ImageRef>) -> Res<Message> {
    match v {
        Value::String(s) => Ok(Message::new(role, s.clone())),
        // An assistant turn that only called tools has no content.
        Value::Null if role == "assistant" => Ok(Message::new(role, "")),
        Value::Array(list) => {
            let mut parts = Vec::with_capacity(list.len());
            for (j, p) in list.iter().enumerate() {
                let at = format!("{param}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str);
                        let t = t.ok_or_else(|| ApiError::invalid(&at, format!("'{at}.text' must be a string")))?;
                        parts.push(Part::Text { text: t.to_string() });
                    }
                    Some("image_url") => {
                        let at = format!("{at}.image_url");
                        // OpenAI sends `{"url": ..., "detail": ...}`; a bare string is accepted too.
                        let url = match p.get("image_url") {
                            Some(Value::String(u)) => Some(u.as_str()),
                            Some(Value::Object(o)) => o.get("url").and_then(Value::as_str),
                            _ => None,
                        };
                        let url = url.ok_or_else(|| ApiError::invalid(&at, format!("'{at}.url' must be a string")))?;
                        if role != "user" {
                            return Err(ApiError::invalid(&at, format!("images are only accepted in user messages, not '{role}'")));
                        }
                        images.push(ImageRef { param: at, url: url.to_string() });
                        parts.push(Part::Image);
                    }
                    Some(t) => {
                        return Err(ApiError::invalid(&at, format!("content part type '{t}' is not supported (use 'text' or 'image_url')")))
                    }
                    None => return Err(ApiError::invalid(&at, format!("'{at}' must be an object with a 'type'"))),
                }
            }
            if parts.iter().any(|p| matches!(p, Part::Image)) {
                Ok(Message::with_parts(role, parts))
            } else {
                // Text-only parts read as one string, so text templates see what they expect.
                Ok(Message::new(role, Message::with_parts(role, parts).content))
            }
        }
        _ => Err(ApiError::invalid(param, format!("'{param}' must be a string or an array of content parts, got {}", kind(v)))),
    }
}

fn token_ids(list: &[Value]) -> Option<Vec<u32>> {
    list.iter().map(|x| x.as_u64().and_then(|i| u32::try_from(i).ok())).collect()
}

fn prompt(v: Option<&Value>) -> Res<Prompt> {
    let v = v.ok_or_else(|| ApiError::invalid("prompt", "you must provide a 'prompt'"))?;
    let one = || ApiError::invalid("prompt", "only one prompt per request is supported");
    match v {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(list) => match list.as_slice() {
            [] => Err(ApiError::invalid("prompt", "'prompt' must not be an empty array")),
            [Value::String(s)] => Ok(Prompt::Text(s.clone())),
            [Value::Array(ids)] => token_ids(ids).map(Prompt::Tokens).ok_or_else(|| ApiError::invalid("prompt", "token ids must be integers in 0..2^32")),
            [Value::String(_) | Value::Array(_), ..] => Err(one()),
            _ => token_ids(list).map(Prompt::Tokens).ok_or_else(|| {
                ApiError::invalid("prompt", "'prompt' must be a string, an array of one string, or an array of token ids")
            }),
        },
        _ => Err(ApiError::invalid("prompt", format!("'prompt' must be a string or an array, got {}", kind(v)))),
    }
}

fn stop(v: Option<&Value>) -> Res<Vec<String>> {
    let list: Vec<String> = match v {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid("stop", format!("every 'stop' entry must be a string, got {}", kind(s)))))
            .collect::<Res<_>>()?,
        Some(v) => return Err(ApiError::invalid("stop", format!("'stop' must be a string or an array of strings, got {}", kind(v)))),
    };
    if list.len() > 4 {
        return Err(ApiError::invalid("stop", format!("at most 4 stop sequences are allowed, got {}", list.len())));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop sequences must not be empty"));
    }
    Ok(list)
}

fn logit_bias(v: Option<&Value>) -> Res<Vec<(u32, f32)>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let map = v.as_object().ok_or_else(|| ApiError::invalid("logit_bias", format!("'logit_bias' must be an object, got {}", kind(v))))?;
    map.iter()
        .map(|(k, b)| {
            let id = k.parse::<u32>().map_err(|_| ApiError::invalid("logit_bias", format!("logit_bias key '{k}' is not a token id")))?;
            match b.as_f64() {
                Some(x) if (-100.0..=100.0).contains(&x) => Ok((id, x as f32)),
                _ => Err(ApiError::invalid("logit_bias", format!("logit_bias of token {id} must be a number between -100 and 100, got {}", describe(b)))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Res<GenRequest> {
        GenRequest::parse(Endpoint::Chat, body.as_bytes())
    }

    fn param(r: Res<GenRequest>) -> Option<String> {
        match r {
            Err(ApiError::Invalid { param, .. }) => param,
            other => panic!("expected an invalid-request error, got {other:?}"),
        }
    }

    const MSG: &str = r#""model":"m","messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn defaults_are_openai_defaults() {
        let r = chat(&format!("{{{MSG},\"whatever\":[1]}}")).unwrap();
        assert_eq!(r.prompt, Prompt::Chat(vec![Message::new("user", "hi")]));
        let s = &r.sampling;
        assert_eq!((s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty, s.seed), (1.0, None, None, None, 1.0, DEFAULT_SEED));
        assert_eq!((r.n, r.max_tokens, r.logprobs, r.stream, r.include_usage), (1, None, None, false, false));
        assert_eq!(r.options(0, 100, None).max_tokens, 100);
        s.validate().unwrap();
    }

    #[test]
    fn knobs_map_onto_engine_options() {
        let r = chat(&format!(
            r#"{{{MSG},"temperature":0,"top_p":0,"top_k":-1,"min_p":0.1,"repetition_penalty":1.2,"seed":-1,"n":3,
               "stop":"\n","max_completion_tokens":5,"max_tokens":99,"logprobs":true,"top_logprobs":2,
               "logit_bias":{{"42":-100}},"presence_penalty":0.5,"stream":true,"stream_options":{{"include_usage":true}}}}"#
        ))
        .unwrap();
        assert_eq!((r.n, r.max_tokens, r.logprobs, r.include_usage), (3, Some(5), Some(2), true));
        assert_eq!((r.sampling.top_k, r.sampling.min_p, r.sampling.seed), (None, Some(0.1), u64::MAX));
        assert!(r.sampling.top_p.is_some_and(|p| p > 0.0));
        r.sampling.validate().unwrap();
        let o = r.options(2, 100, None);
        assert_eq!((o.sampling.seed, o.stop, o.logit_bias, o.presence_penalty), (1, vec!["\n".to_string()], vec![(42, -100.0)], 0.5));
    }

    #[test]
    fn content_parts_and_roles() {
        let r = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        let want = vec![Message::new("system", "be brief"), Message::new("user", "a\nb"), Message::new("assistant", "")];
        assert_eq!(r.prompt, Prompt::Chat(want));
        assert!(r.images.is_empty());
    }

    #[test]
    fn image_parts_keep_their_order_and_urls() {
        let r = chat(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"compare"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
                {"type":"image_url","image_url":"https://example.invalid/b.jpg"}]}]}"#,
        )
        .unwrap();
        let parts = vec![Part::Text { text: "compare".into() }, Part::Image, Part::Image];
        assert_eq!(r.prompt, Prompt::Chat(vec![Message::with_parts("user", parts)]));
        let urls: Vec<_> = r.images.iter().map(|i| (i.param.as_str(), i.url.as_str())).collect();
        assert_eq!(
            urls,
            [
                ("messages[0].content[1].image_url", "data:image/png;base64,AAAA"),
                ("messages[0].content[2].image_url", "https://example.invalid/b.jpg")
            ]
        );
    }

    #[test]
    fn bad_values_name_their_param() {
        let cases = [
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#, "messages[0].role"),
            (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "messages[0].content"),
            (r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#, "messages[0].content[0].image_url"),
            (r#"{"model":"m","messages":[{"role":"user","content":[{"type":"audio"}]}]}"#, "messages[0].content[0]"),
            (r#"{"model":"m","messages":[{"role":"assistant","content":[{"type":"image_url","image_url":"data:,"}]}]}"#, "messages[0].content[0].image_url"),
        ];
        for (body, want) in cases {
            assert_eq!(param(chat(body)).as_deref(), Some(want), "{body}");
        }
        for (field, value) in [
            ("temperature", "-0.5"),
            ("temperature", "\"hot\""),
            ("temperature", "2.5"),
            ("top_p", "1.5"),
            ("n", "0"),
            ("n", "17"),
            ("max_tokens", "0"),
            ("max_tokens", "1.5"),
            ("max_completion_tokens", "-3"),
            ("stop", "[\"a\",\"b\",\"c\",\"d\",\"e\"]"),
            ("stop", "[\"\"]"),
            ("stop", "7"),
            ("seed", "\"x\""),
            ("presence_penalty", "3"),
            ("frequency_penalty", "-2.5"),
            ("logit_bias", "{\"x\":1}"),
            ("logit_bias", "{\"1\":101}"),
            ("logit_bias", "[1]"),
            ("logprobs", "1"),
            ("top_logprobs", "21"),
            ("user", "5"),
            ("min_p", "2"),
            ("repetition_penalty", "0"),
            ("stream", "\"yes\""),
            ("tools", "[{\"type\":\"function\"}]"),
            ("response_format", "{\"type\":\"json_object\"}"),
        ] {
            let body = format!("{{{MSG},\"{field}\":{value}}}");
            assert_eq!(param(chat(&body)).as_deref(), Some(field), "{body}");
        }
        // top_logprobs without logprobs is refused.
        assert_eq!(param(chat(&format!("{{{MSG},\"top_logprobs\":3}}"))).as_deref(), Some("top_logprobs"));
        assert!(matches!(chat("{\"model\":"), Err(ApiError::BadJson(_))));
        assert!(matches!(chat("[1]"), Err(ApiError::Invalid { param: None, .. })));
    }

    #[test]
    fn completion_prompts() {
        let p = |body: &str| GenRequest::parse(Endpoint::Completion, body.as_bytes()).map(|r| r.prompt);
        assert_eq!(p(r#"{"model":"m","prompt":"x"}"#).unwrap(), Prompt::Text("x".into()));
        assert_eq!(p(r#"{"model":"m","prompt":["x"]}"#).unwrap(), Prompt::Text("x".into()));
        assert_eq!(p(r#"{"model":"m","prompt":[1,2]}"#).unwrap(), Prompt::Tokens(vec![1, 2]));
        assert_eq!(p(r#"{"model":"m","prompt":[[3]]}"#).unwrap(), Prompt::Tokens(vec![3]));
        for body in [r#"{"model":"m"}"#, r#"{"model":"m","prompt":["a","b"]}"#, r#"{"model":"m","prompt":[-1]}"#, r#"{"model":"m","prompt":{}}"#] {
            assert_eq!(param(GenRequest::parse(Endpoint::Completion, body.as_bytes())).as_deref(), Some("prompt"), "{body}");
        }
        let r = GenRequest::parse(Endpoint::Completion, br#"{"model":"m","prompt":"x","logprobs":3}"#).unwrap();
        assert_eq!(r.logprobs, Some(3));
        let bad = GenRequest::parse(Endpoint::Completion, br#"{"model":"m","prompt":"x","logprobs":6}"#);
        assert_eq!(param(bad).as_deref(), Some("logprobs"));
        let vocab = |body: &str| {
            let r = GenRequest::parse(Endpoint::Completion, body.as_bytes()).unwrap();
            param(r.check_vocab(100).map(|_| r.clone()))
        };
        assert_eq!(vocab(r#"{"model":"m","prompt":[5],"logit_bias":{"100":1}}"#).as_deref(), Some("logit_bias"));
        assert_eq!(vocab(r#"{"model":"m","prompt":[5, 100],"logit_bias":{"99":1}}"#).as_deref(), Some("prompt"));
    }
}
