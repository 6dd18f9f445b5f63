//! Encoder routes: `POST /v1/embeddings` (OpenAI's shape) and `POST /v1/rerank` / `/rerank`
//! (the Jina / llama.cpp shape with `documents`, or text-embeddings-inference's with
//! `texts`). Requests are validated and tokenized here, on a blocking thread; embeddings then
//! go through the model's batching service ([`plinth_tasks::EmbedService`]), which groups
//! concurrent requests into length-sorted batches.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_models::EncoderHead;
use plinth_tasks::{EmbedInput, EmbedOptions, Overflow, RerankOptions};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::request::{kind, Fields};
use crate::routes::{body_error, json_response};
use crate::state::AppState;

/// Most inputs in one embeddings request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;
/// Most documents in one rerank request.
pub const MAX_DOCUMENTS: usize = 1024;

type Res<T> = Result<T, ApiError>;

fn object(body: &[u8]) -> Res<Map<String, Value>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::Invalid { param: None, message: format!("the request body must be a JSON object, got {}", kind(&other)) }),
    }
}

/// `input`: a string, an array of strings, an array of token ids, or an array of such arrays.
enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

fn token_array(v: &[Value], at: &str) -> Res<Vec<u32>> {
    if v.is_empty() {
        return Err(ApiError::invalid("input", format!("'{at}' is an empty token array")));
    }
    v.iter()
        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| ApiError::invalid("input", format!("'{at}' must hold token ids (non-negative integers), found {t}"))))
        .collect()
}

fn inputs(v: Option<&Value>) -> Res<Inputs> {
    let v = v.ok_or_else(|| ApiError::invalid("input", "you must provide 'input'"))?;
    let empty_text = |i: Option<usize>| {
        let at = i.map_or("input".to_string(), |i| format!("input[{i}]"));
        ApiError::invalid("input", format!("'{at}' is an empty string; every input must contain text"))
    };
    match v {
        Value::String(s) if s.is_empty() => Err(empty_text(None)),
        Value::String(s) => Ok(Inputs::Texts(vec![s.clone()])),
        Value::Array(list) => {
            if list.is_empty() {
                return Err(ApiError::invalid("input", "'input' is an empty array; give at least one input"));
            }
            if list.len() > MAX_INPUTS {
                return Err(ApiError::invalid("input", format!("'input' has {} items; at most {MAX_INPUTS} are allowed per request", list.len())));
            }
            match &list[0] {
                Value::String(_) => list
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Value::String(s) if s.is_empty() => Err(empty_text(Some(i))),
                        Value::String(s) => Ok(s.clone()),
                        other => Err(ApiError::invalid("input", format!("'input[{i}]' must be a string like the other items, got {}", kind(other)))),
                    })
                    .collect::<Res<_>>()
                    .map(Inputs::Texts),
                Value::Number(_) => Ok(Inputs::Tokens(vec![token_array(list, "input")?])),
                Value::Array(_) => list
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Value::Array(a) => token_array(a, &format!("input[{i}]")),
                        other => Err(ApiError::invalid("input", format!("'input[{i}]' must be an array of token ids like the other items, got {}", kind(other)))),
                    })
                    .collect::<Res<_>>()
                    .map(Inputs::Tokens),
                other => Err(ApiError::invalid("input", format!("'input' items must be strings or token ids, got {}", kind(other)))),
            }
        }
        other => Err(ApiError::invalid("input", format!("'input' must be a string or an array, got {}", kind(other)))),
    }
}

/// The index of the encoder a request names; a generation model's name gets a pointed
/// message.
fn encoder(s: &AppState, name: Option<&str>, route: &str) -> Res<usize> {
    let Some(name) = name else {
        // text-embeddings-inference clients send no model: use the first encoder.
        return if s.encoders.is_empty() { Err(ApiError::invalid("model", format!("this server has no encoder model for {route}"))) } else { Ok(0) };
    };
    if let Some(i) = s.encoders.iter().position(|e| e.name == name).or_else(|| s.encoders.iter().position(|e| e.name.eq_ignore_ascii_case(name))) {
        return Ok(i);
    }
    if s.find(name).is_ok() {
        let served: Vec<&str> = s.encoders.iter().map(|e| e.name.as_str()).collect();
        return Err(ApiError::invalid(
            "model",
            format!(
                "'{name}' is a text-generation model; {route} needs an encoder model{}",
                if served.is_empty() { " and this server has none".to_string() } else { format!(" (served: {})", served.join(", ")) }
            ),
        ));
    }
    Err(ApiError::ModelNotFound(name.to_string()))
}

fn overflow(f: &Fields<'_>, default: Overflow) -> Res<Overflow> {
    Ok(match f.bool("truncate")? {
        Some(true) => Overflow::Truncate,
        Some(false) => Overflow::Error,
        None => default,
    })
}

pub async fn embeddings(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    embed(s, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn embed(s: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Res<Response> {
    let body = body.map_err(|r| body_error(r, s.max_body_bytes))?;
    let map = object(&body)?;
    let f = Fields(&map);
    let model = f.string("model")?.ok_or_else(|| ApiError::invalid("model", "you must provide a model parameter"))?.to_string();
    let inputs = inputs(f.get("input"))?;
    let base64 = match f.string("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::invalid("encoding_format", format!("'encoding_format' must be 'float' or 'base64', got '{other}'"))),
    };
    let dimensions = f.int("dimensions", 1, i64::MAX)?.map(|d| d as usize);
    f.string("user")?;
    // OpenAI refuses over-long inputs; `truncate: true` (text-embeddings-inference's flag)
    // cuts them instead.
    let overflow = overflow(&f, Overflow::Error)?;
    let idx = encoder(&s, Some(&model), "/v1/embeddings")?;
    let e = &s.encoders[idx];
    e.service.model().check_dimensions(dimensions).map_err(|err| ApiError::core(err, "dimensions"))?;
    let opts = EmbedOptions { dimensions, overflow, ..EmbedOptions::default() };

    let st = s.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let m = st.encoders[idx].service.model();
        match &inputs {
            Inputs::Texts(t) => m.tokenize_inputs(&t.iter().map(|t| EmbedInput::Text(t)).collect::<Vec<_>>(), overflow),
            Inputs::Tokens(t) => m.tokenize_inputs(&t.iter().map(|t| EmbedInput::Ids(t)).collect::<Vec<_>>(), overflow),
        }
    })
    .await
    .map_err(|e| ApiError::Generation(format!("tokenizing: {e}")))?
    .map_err(|err| ApiError::core(err, "input"))?;
    let tokens: usize = encoded.iter().map(|e| e.len()).sum();
    let rx = e.service.submit(encoded, opts)?;
    let vectors = rx.await.map_err(|_| ApiError::Generation("the embedding thread dropped the request".into()))??;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { Value::String(base64_f32(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": e.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    ))
}

/// Little-endian f32 bytes, base64 (standard alphabet, padded): what OpenAI's clients decode
/// with `np.frombuffer(base64.b64decode(s), dtype="float32")`.
pub fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(ABC[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn rerank(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    rerank_inner(s, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn rerank_inner(s: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Res<Response> {
    let body = body.map_err(|r| body_error(r, s.max_body_bytes))?;
    let map = object(&body)?;
    let f = Fields(&map);
    let query = f.string("query")?.ok_or_else(|| ApiError::invalid("query", "you must provide 'query'"))?.to_string();
    if query.trim().is_empty() {
        return Err(ApiError::invalid("query", "'query' is empty"));
    }
    // `texts` is text-embeddings-inference's name and answer shape; `documents` Jina's and
    // llama.cpp's.
    let tei = f.get("texts").is_some();
    let key = if tei { "texts" } else { "documents" };
    let list = f.get(key).ok_or_else(|| ApiError::invalid("documents", "you must provide 'documents' (or 'texts')"))?;
    let list = list.as_array().ok_or_else(|| ApiError::invalid(key, format!("'{key}' must be an array, got {}", kind(list))))?;
    if list.is_empty() || list.len() > MAX_DOCUMENTS {
        return Err(ApiError::invalid(key, format!("'{key}' must hold between 1 and {MAX_DOCUMENTS} documents, got {}", list.len())));
    }
    let docs: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(t) => Ok(t.clone()),
            Value::Object(o) if o.get("text").is_some_and(Value::is_string) => Ok(o["text"].as_str().unwrap_or_default().to_string()),
            other => Err(ApiError::invalid(key, format!("'{key}[{i}]' must be a string (or an object with 'text'), got {}", kind(other)))),
        })
        .collect::<Res<_>>()?;
    let top_n = f.int("top_n", 1, i64::MAX)?.map(|n| n as usize);
    let raw_scores = f.bool("raw_scores")?.unwrap_or(false);
    let return_text = f.bool("return_text")?.or(f.bool("return_documents")?).unwrap_or(false);
    let overflow = overflow(&f, Overflow::Truncate)?;
    let model = f.string("model")?.map(str::to_string);
    let is_reranker = |i: usize| s.encoders[i].service.model().info().head == EncoderHead::SequenceClassification;
    let idx = match model.as_deref() {
        // text-embeddings-inference clients name no model: use the first cross-encoder.
        None => (0..s.encoders.len()).find(|&i| is_reranker(i)).ok_or_else(|| ApiError::invalid("model", "this server has no reranking model"))?,
        Some(m) => encoder(&s, Some(m), "reranking")?,
    };
    let name = s.encoders[idx].name.clone();
    if !is_reranker(idx) {
        return Err(ApiError::invalid("model", format!("'{name}' has no sequence-classification head, so it cannot rerank (use a cross-encoder)")));
    }
    let st = s.clone();
    let docs2 = docs.clone();
    let ranked = tokio::task::spawn_blocking(move || {
        let m = st.encoders[idx].service.model();
        let refs: Vec<&str> = docs2.iter().map(String::as_str).collect();
        m.rerank(&query, &refs, RerankOptions { top_n, raw_scores, overflow, ..RerankOptions::default() })
    })
    .await
    .map_err(|e| ApiError::Generation(format!("reranking: {e}")))?
    .map_err(|err| ApiError::core(err, "documents"))?;
    if tei {
        let out: Vec<Value> = ranked
            .iter()
            .map(|r| {
                let mut o = json!({"index": r.index, "score": r.score});
                if return_text {
                    o["text"] = json!(docs[r.index]);
                }
                o
            })
            .collect();
        return Ok(json_response(StatusCode::OK, &Value::Array(out)));
    }
    let results: Vec<Value> = ranked
        .iter()
        .map(|r| {
            let mut o = json!({"index": r.index, "relevance_score": r.score});
            if return_text {
                o["document"] = json!({"text": docs[r.index]});
            }
            o
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"object": "list", "model": name, "results": results})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_encoding() {
        // 1.0f32 = 00 00 80 3f; 2.0 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn input_shapes() {
        assert!(matches!(inputs(Some(&json!("hi"))).unwrap(), Inputs::Texts(t) if t == ["hi"]));
        assert!(matches!(inputs(Some(&json!([1, 2, 3]))).unwrap(), Inputs::Tokens(t) if t == [vec![1, 2, 3]]));
        assert!(matches!(inputs(Some(&json!([[1], [2, 3]]))).unwrap(), Inputs::Tokens(t) if t.len() == 2));
        for bad in [json!([]), json!(""), json!(["a", 1]), json!([[1], "a"]), json!([-1]), json!({}), json!(3), json!([[]])] {
            let e = inputs(Some(&bad)).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(matches!(e, ApiError::Invalid { ref param, .. } if param.as_deref() == Some("input")), "{bad}: {e:?}");
        }
        let many = Value::Array(vec![json!("x"); MAX_INPUTS + 1]);
        assert!(inputs(Some(&many)).is_err());
    }
}
