//! What every request passes through before and after its handler: CORS (preflight answers
//! and response headers, only when `--cors` is given), the API-key check on `/v1/*`, and the
//! `plinth_requests_total` count by route and status.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Which browser origins may call the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    Any,
    Origins(Vec<String>),
}

impl Cors {
    /// `*`, or a comma-separated list of origins such as `https://app.example`.
    pub fn parse(spec: &str) -> Option<Cors> {
        let list: Vec<String> = spec.split(',').map(|o| o.trim().trim_end_matches('/').to_string()).filter(|o| !o.is_empty()).collect();
        if list.iter().any(|o| o == "*") {
            Some(Cors::Any)
        } else if list.is_empty() {
            None
        } else {
            Some(Cors::Origins(list))
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::Origins(list) => {
                let o = origin?;
                let s = o.to_str().ok()?;
                list.iter().any(|a| a == s).then(|| o.clone())
            }
        }
    }

    fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if let Some(v) = self.allow(request.get(header::ORIGIN)) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if matches!(self, Cors::Origins(_)) {
            // The answer depends on the Origin header, so caches must key on it.
            response.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a guessed
/// key was right.
fn same_key(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let mut parts = v.splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("").trim();
    scheme.eq_ignore_ascii_case("bearer") && same_key(token.as_bytes(), key.as_bytes())
}

fn preflight(cors: &Cors, request: &HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    cors.decorate(request, h);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    let allow_headers = (request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned())
        .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    res
}

/// The API: `/v1/*` and text-embeddings-inference's `/rerank`. `/health`, `/metrics` and
/// unknown paths (404) stay open.
fn needs_key(path: &str) -> bool {
    path.starts_with("/v1") || path == "/rerank"
}

/// The middleware; see the module docs.
pub async fn gate(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // Unmatched paths share one label, so that scanners cannot grow the metric without bound.
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let headers = req.headers().clone();
    let is_preflight = req.method() == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = match (&s.cors, &s.api_key) {
        // Browsers send preflights without credentials, so they are answered before the key check.
        (Some(cors), _) if is_preflight => preflight(cors, &headers),
        (_, Some(key)) if needs_key(req.uri().path()) && !authorized(&headers, key) => ApiError::Unauthorized.into_response(),
        _ => next.run(req).await,
    };
    if let Some(cors) = &s.cors {
        if !is_preflight {
            cors.decorate(&headers, res.headers_mut());
        }
    }
    s.requests.count(&route, res.status().as_u16());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_spec_parsing_and_matching() {
        assert_eq!(Cors::parse("*"), Some(Cors::Any));
        assert_eq!(Cors::parse(" , "), None);
        let c = Cors::parse("https://a.test, https://b.test/").unwrap();
        assert_eq!(c, Cors::Origins(vec!["https://a.test".into(), "https://b.test".into()]));
        let b = HeaderValue::from_static("https://b.test");
        assert_eq!(c.allow(Some(&b)), Some(b.clone()));
        assert_eq!(c.allow(Some(&HeaderValue::from_static("https://evil.test"))), None);
        assert_eq!(c.allow(None), None);
    }

    #[test]
    fn bearer_key_check() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert!(authorized(&h, "k1"));
        assert!(!authorized(&h, "k2"));
        assert!(!authorized(&h, "k10"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert!(!authorized(&h, "k1"));
    }
}
