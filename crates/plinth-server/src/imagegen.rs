//! `POST /v1/images/generations` in OpenAI's shape: `prompt`, `n`, `size` (`WxH`),
//! `response_format` `b64_json` (images come back in the response; `url` is refused, as this
//! server keeps no files), plus plinth's own `negative_prompt`, `seed`, `steps`,
//! `guidance_scale` and `scheduler`. Jobs run on the model's image worker
//! ([`plinth_tasks::imagine::ImagineService`]), behind its own bounded queue, so they never
//! occupy the text engines.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use plinth_tasks::imagine::{ImagineRequest, MAX_GUIDANCE, MAX_STEPS};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::request::{kind, Fields};
use crate::routes::{body_error, json_response};
use crate::state::AppState;

/// Most images in one request (OpenAI's limit).
pub const MAX_N: i64 = 10;
/// Longest prompt accepted, in characters (OpenAI's for its largest model); CLIP reads only
/// the first 77 tokens of it anyway.
pub const MAX_PROMPT_CHARS: usize = 32_000;

/// Every field this route reads; anything else is refused by name.
const KNOWN: &[&str] = &[
    "model",
    "prompt",
    "n",
    "size",
    "response_format",
    "output_format",
    "quality",
    "user",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "scheduler",
];

type Res<T> = Result<T, ApiError>;

pub async fn generations(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(s, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// `"512x512"` -> (width, height); `"auto"` -> the model's own size.
fn size(f: &Fields<'_>) -> Res<(Option<usize>, Option<usize>)> {
    let Some(s) = f.string("size")? else { return Ok((None, None)) };
    if s == "auto" {
        return Ok((None, None));
    }
    let parsed = s.split_once('x').and_then(|(w, h)| Some((w.trim().parse::<usize>().ok()?, h.trim().parse::<usize>().ok()?)));
    match parsed {
        Some((w, h)) => Ok((Some(w), Some(h))),
        None => Err(ApiError::invalid("size", format!("'size' must be WIDTHxHEIGHT in pixels (e.g. \"512x512\") or \"auto\", got '{s}'"))),
    }
}

/// The generator a request names (the first one when it names none).
fn generator(s: &AppState, name: Option<&str>) -> Res<usize> {
    if s.generators.is_empty() {
        return Err(ApiError::invalid(
            "model",
            "this server has no text-to-image model; start it with --model pointing at a diffusers pipeline folder (e.g. SD-Turbo)",
        ));
    }
    let Some(name) = name else { return Ok(0) };
    if let Some(i) = s.generators.iter().position(|g| g.name == name).or_else(|| s.generators.iter().position(|g| g.name.eq_ignore_ascii_case(name))) {
        return Ok(i);
    }
    if s.find(name).is_ok() || s.encoders.iter().any(|e| e.name.eq_ignore_ascii_case(name)) {
        let served: Vec<&str> = s.generators.iter().map(|g| g.name.as_str()).collect();
        return Err(ApiError::invalid("model", format!("'{name}' is not a text-to-image model (served: {})", served.join(", "))));
    }
    Err(ApiError::ModelNotFound(name.to_string()))
}

fn parse(map: &Map<String, Value>) -> Res<(Option<String>, ImagineRequest, usize)> {
    if let Some(k) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::invalid(k, format!("unknown parameter '{k}'; this route reads {}", KNOWN.join(", "))));
    }
    let f = Fields(map);
    let model = f.string("model")?.map(str::to_string);
    let prompt = match f.get("prompt") {
        None => return Err(ApiError::invalid("prompt", "you must provide a prompt")),
        Some(Value::String(p)) if p.trim().is_empty() => return Err(ApiError::invalid("prompt", "'prompt' is empty; describe the image to generate")),
        Some(Value::String(p)) if p.chars().count() > MAX_PROMPT_CHARS => {
            return Err(ApiError::invalid("prompt", format!("'prompt' is longer than {MAX_PROMPT_CHARS} characters")))
        }
        Some(Value::String(p)) => p.clone(),
        Some(other) => return Err(ApiError::invalid("prompt", format!("'prompt' must be a string, got {}", kind(other)))),
    };
    let n = f.int("n", 1, MAX_N)?.unwrap_or(1) as usize;
    let (width, height) = size(&f)?;
    match f.string("response_format")? {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(ApiError::invalid(
                "response_format",
                "response_format 'url' is not supported: this server does not store images; use 'b64_json' to get them in the response",
            ))
        }
        Some(other) => return Err(ApiError::invalid("response_format", format!("'response_format' must be 'b64_json', got '{other}'"))),
    }
    match f.string("output_format")? {
        None | Some("png") => {}
        Some(other) => return Err(ApiError::invalid("output_format", format!("only 'png' output is supported, got '{other}'"))),
    }
    match f.string("quality")? {
        None | Some("auto" | "standard") => {}
        Some(other) => {
            return Err(ApiError::invalid("quality", format!("quality '{other}' is not supported; use 'steps' and 'guidance_scale' to trade time for detail")))
        }
    }
    f.string("user")?;
    let scheduler = match f.string("scheduler")? {
        Some(name) => Some(name.parse().map_err(|e| ApiError::core(e, "scheduler"))?),
        None => None,
    };
    let req = ImagineRequest {
        prompt,
        negative_prompt: f.string("negative_prompt")?.map(str::to_string),
        width,
        height,
        steps: f.int("steps", 1, MAX_STEPS as i64)?.map(|s| s as usize),
        guidance: f.number("guidance_scale", 0.0, MAX_GUIDANCE)?.map(f64::from),
        scheduler,
        seed: f.int("seed", 0, i64::MAX)?.map(|s| s as u64),
    };
    Ok((model, req, n))
}

async fn generate(s: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Res<Response> {
    let body = body.map_err(|r| body_error(r, s.max_body_bytes))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let Value::Object(map) = &v else {
        return Err(ApiError::Invalid { param: None, message: format!("the request body must be a JSON object, got {}", kind(&v)) });
    };
    let (model, req, n) = parse(map)?;
    let idx = generator(&s, model.as_deref())?;
    let g = &s.generators[idx];
    let first = g.service.pipeline().resolve(&req).map_err(|e| {
        let param = match &e {
            plinth_core::Error::Invalid { what, .. } if what == "width" || what == "height" => "size",
            plinth_core::Error::Invalid { what, .. } if what == "guidance" => "guidance_scale",
            plinth_core::Error::Invalid { what, .. } if what == "steps" => "steps",
            _ => "prompt",
        };
        ApiError::core(e, param)
    })?;
    let images = (0..n)
        .map(|i| {
            let mut one = first.clone();
            one.seed = first.seed.wrapping_add(i as u64);
            one
        })
        .collect();
    let rx = g.service.submit(images)?;
    let out = rx.await.map_err(|_| ApiError::Generation("the image worker stopped".into()))??;
    // PNG compression of a large image takes a moment: off the async threads.
    let data = tokio::task::spawn_blocking(move || {
        out.iter()
            .map(|img| {
                let png = img.png()?;
                Ok(json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(png), "seed": img.settings.seed}))
            })
            .collect::<plinth_core::Result<Vec<Value>>>()
    })
    .await
    .map_err(|e| ApiError::Generation(e.to_string()))??;
    let created = crate::response::unix_now();
    Ok(json_response(StatusCode::OK, &json!({"created": created, "data": data})))
}
