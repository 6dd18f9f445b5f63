//! Server-sent events for `"stream": true`: each engine event becomes a `data: {json}\n\n`
//! chunk as soon as it arrives. A chat stream opens with a `role` chunk per choice; every
//! choice closes with a chunk carrying its `finish_reason`; `include_usage` adds a usage
//! chunk with empty `choices`; `data: [DONE]` ends the stream. A failure after the stream
//! has started (the status line is already sent) is reported as an error chunk.
//!
//! The body owns the engine receivers, so a client that disconnects drops them and thereby
//! cancels its request in the scheduler.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use plinth_engine::{Event, TokenLogprob};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::ApiError;
use crate::metrics::TokenTimer;
use crate::request::{Endpoint, GenRequest};
use crate::response::{self, Delta, Meta};
use crate::routes::FLUSH_ID;
use crate::state::AppState;

struct Sse {
    state: Arc<AppState>,
    model: usize,
    meta: Meta,
    events: UnboundedReceiver<(usize, Event)>,
    want_logprobs: bool,
    include_usage: bool,
    /// Frames ready to send.
    out: VecDeque<Bytes>,
    /// Log-probabilities of tokens whose text has not been sent yet (text held back by the
    /// detokenizer or the stop matcher), per choice.
    pending: Vec<Vec<TokenLogprob>>,
    /// Where the next token's text starts in each choice's output, for `text_offset`.
    offset: Vec<usize>,
    timer: TokenTimer,
    open: usize,
    prompt_tokens: usize,
    completion_tokens: usize,
    ended: bool,
}

fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl Sse {
    fn push(&mut self, v: Value) {
        self.out.push_back(frame(&v));
    }

    fn take_logprobs(&mut self, i: usize) -> Option<Value> {
        if !self.want_logprobs || self.pending[i].is_empty() {
            return None;
        }
        let lps = std::mem::take(&mut self.pending[i]);
        let v = response::logprobs(self.meta.endpoint, &lps, self.offset[i]);
        self.offset[i] += lps.iter().map(|lp| lp.token.chars().count()).sum::<usize>();
        Some(v)
    }

    fn end(&mut self) {
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.ended = true;
    }

    fn fail(&mut self, e: ApiError) {
        self.push(e.body());
        self.end();
    }

    fn on_event(&mut self, i: usize, ev: Event) {
        if i >= self.pending.len() {
            return;
        }
        match ev {
            Event::Token { id, text, logprob } => {
                if id != FLUSH_ID {
                    self.timer.token(i, &self.state.models[self.model].metrics);
                    self.pending[i].extend(logprob);
                }
                if !text.is_empty() {
                    let lp = self.take_logprobs(i);
                    self.push(response::chunk(&self.meta, i, Delta::Text(&text), lp));
                }
            }
            Event::Done { finish_reason, prompt_tokens, completion_tokens } => {
                let lp = self.take_logprobs(i);
                self.push(response::chunk(&self.meta, i, Delta::Finish(finish_reason), lp));
                self.prompt_tokens = prompt_tokens;
                self.completion_tokens += completion_tokens;
                self.open -= 1;
                if self.open == 0 {
                    if self.include_usage {
                        self.push(response::usage_chunk(&self.meta, self.prompt_tokens, self.completion_tokens));
                    }
                    self.end();
                }
            }
            Event::Error(msg) => self.fail(ApiError::Generation(msg)),
        }
    }

    /// The next frame, or `None` once the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Some(b);
            }
            if self.ended {
                return None;
            }
            match self.events.recv().await {
                Some((i, ev)) => self.on_event(i, ev),
                None => self.fail(ApiError::Generation("the engine dropped the request before it finished".into())),
            }
        }
    }
}

pub fn response(
    state: Arc<AppState>,
    model: usize,
    meta: Meta,
    req: &GenRequest,
    events: UnboundedReceiver<(usize, Event)>,
    start: Instant,
) -> Response {
    let n = req.n;
    let mut sse = Sse {
        state,
        model,
        meta,
        events,
        want_logprobs: req.logprobs.is_some(),
        include_usage: req.include_usage,
        out: VecDeque::new(),
        pending: vec![Vec::new(); n],
        offset: vec![0; n],
        timer: TokenTimer::new(start, n),
        open: n,
        prompt_tokens: 0,
        completion_tokens: 0,
        ended: false,
    };
    if sse.meta.endpoint == Endpoint::Chat {
        for i in 0..n {
            let first = response::chunk(&sse.meta, i, Delta::Role, None);
            sse.push(first);
        }
    }
    let frames = futures_util::stream::unfold(sse, |mut sse| async move { sse.next().await.map(|b| (Ok::<_, Infallible>(b), sse)) });
    let mut res = Response::new(Body::from_stream(frames));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells reverse proxies such as nginx not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
