//! The one place where a failure becomes an HTTP status and OpenAI's error body
//! `{"error":{"message","type","param","code"}}`. Every handler, extractor rejection,
//! middleware refusal and fallback goes through [`ApiError::parts`], so that clients written
//! against OpenAI see the same status and `type`/`code` for the same mistake everywhere.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_core::Error;
use serde_json::json;

/// Seconds a client is told to wait when the queue is full; short, because a slot frees up
/// as soon as any running sequence finishes.
const RETRY_AFTER_SECS: u64 = 1;

/// Everything a request can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// A value that is missing, of the wrong JSON type or out of range; `param` names it.
    Invalid { param: Option<String>, message: String },
    /// The body is not valid JSON.
    BadJson(String),
    /// The request names a model this server does not serve.
    ModelNotFound(String),
    /// `--api-key` is set and the request's Bearer key is missing or wrong.
    Unauthorized,
    /// The body is larger than `--max-body-bytes`.
    BodyTooLarge(usize),
    /// The body could not be read (client hung up, bad framing).
    BodyUnreadable(String),
    NotFound { method: String, path: String },
    MethodNotAllowed { method: String, path: String },
    /// A library error; `param` is the request field it concerns, where one does.
    Core { err: Error, param: Option<&'static str> },
    /// The engine failed the request after accepting it.
    Generation(String),
    /// An admin route on a server without `--api-key`.
    Forbidden(String),
    /// A name that is already taken (loading an adapter twice).
    Conflict(String),
}

/// What [`ApiError::parts`] decides.
struct Parts {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<String>,
    retry_after: bool,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid { param: Some(param.to_string()), message: message.into() }
    }

    /// A library error about request field `param`.
    pub fn core(err: Error, param: &'static str) -> Self {
        ApiError::Core { err, param: Some(param) }
    }

    /// The one mapping from failure to status, OpenAI `type`, `code` and `param`.
    fn parts(&self) -> Parts {
        let p = |status, kind, code: Option<&'static str>, param: Option<String>| Parts { status, kind, code, param, retry_after: false };
        const INVALID: &str = "invalid_request_error";
        match self {
            ApiError::Invalid { param, .. } => p(StatusCode::BAD_REQUEST, INVALID, None, param.clone()),
            ApiError::BadJson(_) => p(StatusCode::BAD_REQUEST, INVALID, None, None),
            ApiError::ModelNotFound(_) => p(StatusCode::NOT_FOUND, INVALID, Some("model_not_found"), Some("model".into())),
            ApiError::Unauthorized => p(StatusCode::UNAUTHORIZED, INVALID, Some("invalid_api_key"), None),
            ApiError::BodyTooLarge(_) => p(StatusCode::PAYLOAD_TOO_LARGE, INVALID, Some("request_too_large"), None),
            ApiError::BodyUnreadable(_) => p(StatusCode::BAD_REQUEST, INVALID, None, None),
            ApiError::NotFound { .. } => p(StatusCode::NOT_FOUND, INVALID, Some("unknown_url"), None),
            ApiError::MethodNotAllowed { .. } => p(StatusCode::METHOD_NOT_ALLOWED, INVALID, Some("method_not_allowed"), None),
            ApiError::Generation(_) => p(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None),
            ApiError::Forbidden(_) => p(StatusCode::FORBIDDEN, INVALID, Some("admin_disabled"), None),
            ApiError::Conflict(_) => p(StatusCode::CONFLICT, INVALID, Some("already_exists"), Some("name".into())),
            ApiError::Core { err, param } => {
                let param = param.map(str::to_string);
                match err {
                    Error::Invalid { what, .. } => p(StatusCode::BAD_REQUEST, INVALID, None, Some(param.unwrap_or_else(|| what.clone()))),
                    Error::ContextOverflow { .. } => p(StatusCode::BAD_REQUEST, INVALID, Some("context_length_exceeded"), param),
                    // A template that rejects the conversation (e.g. roles must alternate)
                    // is the request's fault, not the server's.
                    Error::Template(_) => p(StatusCode::BAD_REQUEST, INVALID, None, param),
                    Error::QueueFull { .. } => {
                        Parts { retry_after: true, ..p(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"), None) }
                    }
                    Error::EngineStopped(_) => p(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("engine_stopped"), None),
                    _ => p(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None),
                }
            }
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Invalid { message, .. } => message.clone(),
            ApiError::BadJson(why) => format!("We could not parse the JSON body of your request: {why}"),
            ApiError::ModelNotFound(m) => format!("The model '{m}' does not exist; GET /v1/models lists the models this server has"),
            ApiError::Unauthorized => "Incorrect or missing API key: send 'Authorization: Bearer <key>'".into(),
            ApiError::BodyTooLarge(limit) => format!("The request body is larger than this server's limit of {limit} bytes"),
            ApiError::BodyUnreadable(why) => format!("Could not read the request body: {why}"),
            ApiError::NotFound { method, path } => format!("Invalid URL ({method} {path})"),
            ApiError::MethodNotAllowed { method, path } => format!("Method {method} is not allowed on {path}"),
            ApiError::Core { err, .. } => err.to_string(),
            ApiError::Generation(why) => format!("Generation failed: {why}"),
            ApiError::Forbidden(why) | ApiError::Conflict(why) => why.clone(),
        }
    }

    /// The OpenAI error object, also used inside an SSE stream that fails midway.
    pub fn body(&self) -> serde_json::Value {
        let parts = self.parts();
        json!({"error": {"message": self.message(), "type": parts.kind, "param": parts.param, "code": parts.code}})
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::Core { err, param: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parts = self.parts();
        let mut res = (parts.status, [(header::CONTENT_TYPE, "application/json")], self.body().to_string()).into_response();
        if parts.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if parts.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: ApiError) -> (u16, serde_json::Value, Option<String>) {
        let body = e.body();
        let res = e.into_response();
        let retry = res.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        (res.status().as_u16(), body["error"].clone(), retry)
    }

    #[test]
    fn library_errors_map_to_openai_statuses() {
        let (s, e, retry) = fields(Error::QueueFull { queued: 3, limit: 3 }.into());
        assert_eq!((s, e["type"].as_str(), e["code"].as_str(), retry.as_deref()), (429, Some("rate_limit_error"), Some("rate_limit_exceeded"), Some("1")));

        let (s, e, _) = fields(ApiError::core(Error::ContextOverflow { prompt_tokens: 9000, context: 8192 }, "messages"));
        assert_eq!((s, e["code"].as_str(), e["param"].as_str()), (400, Some("context_length_exceeded"), Some("messages")));
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("9000") && msg.contains("8192"), "{msg}");

        let (s, e, _) = fields(Error::EngineStopped("gone".into()).into());
        assert_eq!((s, e["type"].as_str()), (503, Some("server_error")));

        let (s, e, _) = fields(Error::invalid("temperature", "must be >= 0").into());
        assert_eq!((s, e["type"].as_str(), e["param"].as_str()), (400, Some("invalid_request_error"), Some("temperature")));

        let (s, e, _) = fields(Error::Tokenizer("boom".into()).into());
        assert_eq!((s, e["type"].as_str()), (500, Some("server_error")));
    }

    #[test]
    fn every_body_has_all_four_fields() {
        for e in [
            ApiError::Unauthorized,
            ApiError::BodyTooLarge(10),
            ApiError::ModelNotFound("x".into()),
            ApiError::BadJson("eof".into()),
            ApiError::NotFound { method: "GET".into(), path: "/x".into() },
        ] {
            let b = e.body();
            for k in ["message", "type", "param", "code"] {
                assert!(b["error"].get(k).is_some(), "{k} missing in {b}");
            }
        }
        assert_eq!(fields(ApiError::Unauthorized).0, 401);
        assert_eq!(fields(ApiError::BodyTooLarge(1)).0, 413);
    }
}
