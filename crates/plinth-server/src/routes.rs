//! The HTTP surface: which path runs which handler, and the handlers themselves. A
//! generation request is parsed ([`crate::request`]), tokenized, submitted to its model's
//! engine once per choice, and then either collected into one response here or streamed
//! ([`crate::stream`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use plinth_engine::{Event, Request};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::error::ApiError;
use crate::metrics::{self, ModelView, TokenTimer};
use crate::request::{Endpoint, GenRequest};
use crate::response::{self, Choice, Meta};
use crate::state::AppState;
use crate::{adapters, encode, gate, imagegen, stream};

/// The id the scheduler gives the final flush of held-back text, which is no sampled token
/// and so has no timing or log-probability of its own.
pub const FLUSH_ID: u32 = u32::MAX;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(encode::embeddings))
        .route("/v1/rerank", post(encode::rerank))
        .route("/rerank", post(encode::rerank))
        .route("/v1/images/generations", post(imagegen::generations))
        .route("/v1/adapters", get(adapters::list).post(adapters::load))
        .route("/v1/adapters/{name}", axum::routing::delete(adapters::unload))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(metrics_page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), gate::gate))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

pub fn json_response(status: StatusCode, v: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

fn model_object(name: &str, created: u64) -> Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": "plinth"})
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = s
        .models
        .iter()
        .map(|m| model_object(&m.name, m.created))
        .chain(s.encoders.iter().map(|e| model_object(&e.name, e.created)))
        .chain(s.generators.iter().map(|g| model_object(&g.name, g.created)))
        .chain(s.adapters.read().unwrap_or_else(|p| p.into_inner()).iter().map(|a| {
            let mut o = model_object(&a.name, a.created);
            o["parent"] = json!(s.models[a.model].name);
            o
        }))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn model(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if let Some(e) = s.encoders.iter().find(|e| e.name == id) {
        return Ok(json_response(StatusCode::OK, &model_object(&e.name, e.created)));
    }
    if let Some(g) = s.generators.iter().find(|g| g.name == id) {
        return Ok(json_response(StatusCode::OK, &model_object(&g.name, g.created)));
    }
    if let Some(a) = s.adapters.read().unwrap_or_else(|p| p.into_inner()).iter().find(|a| a.name == id) {
        let mut o = model_object(&a.name, a.created);
        o["parent"] = json!(s.models[a.model].name);
        return Ok(json_response(StatusCode::OK, &o));
    }
    let i = s.find(&id)?;
    Ok(json_response(StatusCode::OK, &model_object(&s.models[i].name, s.models[i].created)))
}

async fn metrics_page(State(s): State<Arc<AppState>>) -> Response {
    let views: Vec<ModelView<'_>> =
        s.models.iter().map(|m| ModelView { name: &m.name, stats: m.engine.stats(), metrics: &m.metrics }).collect();
    let encoders: Vec<metrics::EncoderView<'_>> = s.encoders.iter().map(|e| metrics::EncoderView { name: &e.name, stats: &e.service.stats }).collect();
    let page = metrics::render(&s.requests, &views, &encoders);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], page).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound { method: method.to_string(), path: uri.path().to_string() }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }
}

async fn chat(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(s, Endpoint::Chat, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(s, Endpoint::Completion, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) fn body_error(r: BytesRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge(limit)
    } else {
        ApiError::BodyUnreadable(r.body_text())
    }
}

async fn generate(s: Arc<AppState>, ep: Endpoint, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let start = Instant::now();
    let body = body.map_err(|r| body_error(r, s.max_body_bytes))?;
    let req = GenRequest::parse(ep, &body)?;
    let (idx, adapter) = s.route(&req.model)?;
    let m = &s.models[idx];
    req.check_vocab(m.tokenizer.vocab_size())?;

    // Templating and tokenizing a long prompt takes long enough to hold up other requests'
    // streams if it ran on an async worker.
    // Fetching and decoding images blocks too.
    let (st, prompt, images) = (s.clone(), req.prompt.clone(), req.images.clone());
    let (prompt_ids, pixels) = tokio::task::spawn_blocking(move || st.models[idx].prompt(&prompt, &images, &st.images))
        .await
        .map_err(|e| ApiError::Generation(format!("tokenizing the prompt: {e}")))??;

    let param = match ep {
        Endpoint::Chat => "messages",
        Endpoint::Completion => "prompt",
    };
    let context = m.engine.context_length();
    let mut receivers = Vec::with_capacity(req.n);
    for i in 0..req.n {
        let request = Request { prompt_ids: prompt_ids.clone(), options: req.options(i, context, adapter) };
        let submitted = m.engine.submit_with_images(request, pixels.clone());
        // On failure the choices already submitted are cancelled as `receivers` drops.
        receivers.push(submitted.map_err(|e| ApiError::core(e, param))?);
    }
    let events = merge(receivers);
    // Responses name what the client asked for (the adapter, when it named one).
    let meta = Meta::new(ep, if adapter.is_some() { &req.model } else { &m.name });
    if req.stream {
        Ok(stream::response(s.clone(), idx, meta, &req, events, start))
    } else {
        collect(&s, idx, meta, &req, events, start).await
    }
}

/// Funnels the choices' event channels into one, tagged with the choice index. When the
/// merged receiver is dropped (the client went away) each forwarder drops its engine
/// receiver at once, which cancels that choice in the scheduler.
fn merge(receivers: Vec<UnboundedReceiver<Event>>) -> UnboundedReceiver<(usize, Event)> {
    let (tx, rx) = unbounded_channel();
    for (i, mut events) in receivers.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = events.recv() => {
                        let Some(ev) = ev else { break };
                        if tx.send((i, ev)).is_err() {
                            break;
                        }
                    }
                    _ = tx.closed() => break,
                }
            }
        });
    }
    rx
}

/// Waits for every choice to finish and answers with one JSON object.
async fn collect(
    s: &AppState,
    idx: usize,
    meta: Meta,
    req: &GenRequest,
    mut events: UnboundedReceiver<(usize, Event)>,
    start: Instant,
) -> Result<Response, ApiError> {
    let metrics = &s.models[idx].metrics;
    let mut choices: Vec<Choice> = (0..req.n).map(|_| Choice::default()).collect();
    let mut timer = TokenTimer::new(start, req.n);
    let (mut prompt_tokens, mut open) = (0, req.n);
    while open > 0 {
        let Some((i, ev)) = events.recv().await else {
            return Err(ApiError::Generation("the engine dropped the request before it finished".into()));
        };
        let Some(c) = choices.get_mut(i) else { continue };
        match ev {
            Event::Token { id, text, logprob } => {
                c.text.push_str(&text);
                if id != FLUSH_ID {
                    timer.token(i, metrics);
                    c.logprobs.extend(logprob);
                }
            }
            Event::Done { finish_reason, prompt_tokens: p, completion_tokens } => {
                c.finish = Some(finish_reason);
                c.completion_tokens = completion_tokens;
                prompt_tokens = p;
                open -= 1;
            }
            Event::Error(msg) => return Err(ApiError::Generation(msg)),
        }
    }
    Ok(json_response(StatusCode::OK, &response::completion(&meta, &choices, req.logprobs.is_some(), prompt_tokens)))
}
