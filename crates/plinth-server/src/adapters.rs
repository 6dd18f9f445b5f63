//! LoRA adapters served on top of the decoders: loaded at start (`--adapter NAME=DIR`) or at
//! run time through the admin routes `GET/POST /v1/adapters` and `DELETE /v1/adapters/{name}`,
//! which exist only on a server started with `--api-key` (the key check itself is the gate's).
//! A request names an adapter as its `model`; the engine then runs that sequence with the
//! adapter's slot, and one batch may mix sequences of different adapters and of the base.
//!
//! An adapter is installed into free slot `n` of every adapted layer before its name becomes
//! routable, and its name is removed before its slot is emptied, so a request never sees half
//! an adapter. Sequences already running with an adapter that is unloaded continue on the base
//! model from the next step.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_io::fetch::ModelLocation;
use plinth_train::{peft, LoraSet};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::request::Fields;
use crate::routes::{body_error, json_response};
use crate::state::{AdapterState, AppState};

/// Installs the PEFT adapter at `path` on decoder `model` under `name`.
pub fn install(s: &AppState, name: &str, path: &Path, model: usize) -> plinth_core::Result<AdapterState> {
    let m = &s.models[model];
    let loc = if m.path.extension().is_some_and(|e| e == "gguf") { ModelLocation::Gguf(m.path.clone()) } else { ModelLocation::Dir(m.path.clone()) };
    let set = peft::load(path, m.model.as_ref(), peft::QkLayout::of(&loc, m.model.as_ref()))?;
    let mut adapters = s.adapters.write().unwrap_or_else(|p| p.into_inner());
    if adapters.iter().any(|a| a.name == name) || s.models.iter().any(|m| m.name == name) || s.encoders.iter().any(|e| e.name == name) {
        return Err(plinth_core::Error::invalid("name", format!("'{name}' is already the name of a served model or adapter")));
    }
    let slot = (1..).find(|n| !adapters.iter().any(|a| a.model == model && a.slot == *n)).unwrap_or(1);
    set.install(m.model.as_ref(), slot)?;
    let a = AdapterState { name: name.to_string(), model, slot, path: path.to_path_buf(), created: crate::response::unix_now() };
    adapters.push(a.clone());
    Ok(a)
}

fn object(s: &AppState, a: &AdapterState) -> Value {
    json!({"id": a.name, "object": "adapter", "model": s.models[a.model].name, "path": a.path, "created": a.created})
}

fn admin(s: &AppState) -> Result<(), ApiError> {
    if s.api_key.is_none() {
        return Err(ApiError::Forbidden("adapter administration needs a server started with --api-key".into()));
    }
    Ok(())
}

pub async fn list(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    admin(&s)?;
    let data: Vec<Value> = s.adapters.read().unwrap_or_else(|p| p.into_inner()).iter().map(|a| object(&s, a)).collect();
    Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
}

/// `POST /v1/adapters {"name", "path", "model"?}`: `model` defaults to the first decoder.
pub async fn load(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    admin(&s)?;
    let body = body.map_err(|r| body_error(r, s.max_body_bytes))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let map = v.as_object().ok_or_else(|| ApiError::Invalid { param: None, message: "the request body must be a JSON object".into() })?;
    let f = Fields(map);
    let name = f.string("name")?.filter(|n| !n.trim().is_empty()).ok_or_else(|| ApiError::invalid("name", "you must provide the adapter's 'name'"))?.to_string();
    let path = PathBuf::from(f.string("path")?.ok_or_else(|| ApiError::invalid("path", "you must provide the adapter directory's 'path'"))?);
    let model = match f.string("model")? {
        Some(m) => s.find(m)?,
        None if s.models.is_empty() => return Err(ApiError::invalid("model", "this server has no generation model to adapt")),
        None => 0,
    };
    if s.adapters.read().unwrap_or_else(|p| p.into_inner()).iter().any(|a| a.name == name) {
        return Err(ApiError::Conflict(format!("an adapter named '{name}' is already loaded; DELETE /v1/adapters/{name} first")));
    }
    let st = s.clone();
    let a = tokio::task::spawn_blocking(move || install(&st, &name, &path, model))
        .await
        .map_err(|e| ApiError::Generation(format!("loading the adapter: {e}")))?
        .map_err(|e| ApiError::core(e, "path"))?;
    Ok(json_response(StatusCode::OK, &object(&s, &a)))
}

pub async fn unload(State(s): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Result<Response, ApiError> {
    admin(&s)?;
    let a = {
        let mut adapters = s.adapters.write().unwrap_or_else(|p| p.into_inner());
        let i = adapters.iter().position(|a| a.name == name).ok_or_else(|| ApiError::ModelNotFound(name.clone()))?;
        adapters.remove(i)
    };
    LoraSet::uninstall(s.models[a.model].model.as_ref(), a.slot)?;
    Ok(json_response(StatusCode::OK, &json!({"id": a.name, "object": "adapter", "deleted": true})))
}
