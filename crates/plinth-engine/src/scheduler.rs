//! The continuous-batching scheduler. One thread per model owns the model, every sequence's
//! KV cache and their generation state; callers talk to it only through a channel
//! ([`Engine::submit`]) and receive [`Event`]s on a per-request channel. Between steps new
//! requests join; each step runs at most one prefill chunk (so a long prompt never stalls
//! the running streams for long) and then one batched decode forward for every running
//! sequence. A request whose receiver is dropped (client gone) is removed, and its cache
//! freed, at the next step.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use plinth_core::{Error, Result};
use candle_core::Tensor;
use plinth_models::{Decoder, KvCache};
use plinth_tokenize::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::images::check_prompt_images;
use crate::sequence::{FinishReason, GenerationOptions, Sequence, TokenLogprob};

/// Limits of one engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Sequences decoded together in one step.
    pub max_running: usize,
    /// Requests waiting for a slot before `submit` answers `QueueFull`.
    pub max_queue: usize,
    /// Prompt tokens run per step for a sequence being prefilled.
    pub prefill_chunk: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_running: 16, max_queue: 256, prefill_chunk: 256 }
    }
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub options: GenerationOptions,
}

/// What a request's receiver gets.
#[derive(Debug, Clone)]
pub enum Event {
    /// One sampled token and the text it released (possibly empty).
    Token { id: u32, text: String, logprob: Option<TokenLogprob> },
    /// The end: why, and the token counts.
    Done { finish_reason: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    /// The request failed inside the engine.
    Error(String),
}

/// Counters shared with the server's `/metrics`.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    /// KV-cache growth chunks (of `KvCache::GROW_BY` positions) held by running sequences.
    pub kv_blocks: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub steps: AtomicU64,
}

enum Msg {
    Submit(Request, Option<Tensor>, UnboundedSender<Event>),
    Shutdown,
}

/// A handle to a running scheduler thread.
pub struct Engine {
    tx: mpsc::Sender<Msg>,
    stats: Arc<EngineStats>,
    context: usize,
    cfg: EngineConfig,
    stopped: Arc<AtomicBool>,
    /// Shared with the scheduler thread; read here only to validate image prompts.
    model: Arc<dyn Decoder>,
}

impl Engine {
    /// Starts the scheduler thread, which takes ownership of the model.
    pub fn start(model: Box<dyn Decoder>, tokenizer: Arc<Tokenizer>, cfg: EngineConfig) -> Engine {
        Self::start_shared(Arc::from(model), tokenizer, cfg)
    }

    /// Starts the scheduler thread on a shared model: the caller keeps a handle to install or
    /// remove adapters while it serves (layers guard their adapter slots themselves; the
    /// weights are never written).
    pub fn start_shared(model: Arc<dyn Decoder>, tokenizer: Arc<Tokenizer>, cfg: EngineConfig) -> Engine {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let context = model.info().context_length;
        let (s, st, m) = (stats.clone(), stopped.clone(), model.clone());
        std::thread::Builder::new()
            .name("plinth-scheduler".into())
            .spawn(move || {
                run(m.as_ref(), &tokenizer, cfg, rx, &s);
                st.store(true, Ordering::SeqCst);
            })
            .expect("spawning the scheduler thread");
        Engine { tx, stats, context, cfg, stopped, model }
    }

    pub fn context_length(&self) -> usize {
        self.context
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Validates and queues a request; events arrive on the returned receiver. Dropping the
    /// receiver cancels the request.
    pub fn submit(&self, req: Request) -> Result<UnboundedReceiver<Event>> {
        self.submit_with_images(req, None)
    }

    /// [`Engine::submit`] for a prompt that carries images: `pixels` holds the tiles
    /// (`[tiles, 3, S, S]`) of the prompt's image tokens, in order (vision-language models only).
    pub fn submit_with_images(&self, req: Request, pixels: Option<Tensor>) -> Result<UnboundedReceiver<Event>> {
        check_prompt_images(self.model.as_ref(), &req.prompt_ids, pixels.as_ref())?;
        let n = req.prompt_ids.len();
        if n == 0 {
            return Err(Error::invalid("prompt", "is empty (no tokens)"));
        }
        if n >= self.context {
            return Err(Error::ContextOverflow { prompt_tokens: n, context: self.context });
        }
        if req.options.max_tokens == 0 {
            return Err(Error::invalid("max_tokens", "must be at least 1"));
        }
        req.options.sampling.validate()?;
        let queued = self.stats.queued.load(Ordering::SeqCst);
        if queued >= self.cfg.max_queue {
            return Err(Error::QueueFull { queued, limit: self.cfg.max_queue });
        }
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::EngineStopped("the scheduler thread has exited".into()));
        }
        let (etx, erx) = unbounded_channel();
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        self.tx
            .send(Msg::Submit(req, pixels, etx))
            .map_err(|_| Error::EngineStopped("the scheduler thread has exited".into()))?;
        Ok(erx)
    }

    /// Asks the scheduler to cancel everything and exit.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A request inside the scheduler.
struct Running<'t> {
    prompt: Vec<u32>,
    /// The tiles of the prompt's image tokens; replaced by the prompt's input embeddings at
    /// the first prefill chunk.
    pixels: Option<Tensor>,
    embeds: Option<Tensor>,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// The last sampled token, to be fed by the next decode step.
    pending: Option<u32>,
    seq: Sequence<'t>,
    cache: KvCache,
    events: UnboundedSender<Event>,
}

impl Running<'_> {
    fn done(&self, finish: FinishReason) {
        let _ = self.events.send(Event::Done {
            finish_reason: finish,
            prompt_tokens: self.prompt.len(),
            completion_tokens: self.seq.generated().len(),
        });
    }
}

fn run(model: &dyn Decoder, tok: &Tokenizer, cfg: EngineConfig, rx: mpsc::Receiver<Msg>, stats: &EngineStats) {
    let context = model.info().context_length;
    let mut waiting: std::collections::VecDeque<(Request, Option<Tensor>, UnboundedSender<Event>)> = Default::default();
    let mut running: Vec<Running<'_>> = Vec::new();
    loop {
        // Block only when idle; otherwise take whatever arrived since the last step.
        let mut incoming = Vec::new();
        if running.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(m) => incoming.push(m),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(m) => incoming.push(m),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) if running.is_empty() && waiting.is_empty() && incoming.is_empty() => return,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        for m in incoming {
            match m {
                Msg::Submit(r, p, tx) => waiting.push_back((r, p, tx)),
                Msg::Shutdown => {
                    for r in &running {
                        r.done(FinishReason::Cancelled);
                    }
                    for (_, _, tx) in &waiting {
                        let _ = tx.send(Event::Error("the server is shutting down".into()));
                    }
                    stats.queued.store(0, Ordering::SeqCst);
                    stats.running.store(0, Ordering::SeqCst);
                    stats.kv_blocks.store(0, Ordering::SeqCst);
                    return;
                }
            }
        }
        while running.len() < cfg.max_running {
            let Some((req, pixels, tx)) = waiting.pop_front() else { break };
            stats.queued.fetch_sub(1, Ordering::SeqCst);
            if tx.is_closed() {
                continue;
            }
            let budget = context - req.prompt_ids.len();
            let adapter = req.options.adapter;
            match Sequence::new(tok, &req.prompt_ids, req.options, budget) {
                Ok(seq) => {
                    let mut cache = model.new_cache();
                    cache.adapter = adapter;
                    running.push(Running { prompt: req.prompt_ids, pixels, embeds: None, fed: 0, pending: None, seq, cache, events: tx })
                }
                Err(e) => {
                    let _ = tx.send(Event::Error(e.to_string()));
                }
            }
        }
        // Clients that went away free their slot and cache now.
        running.retain(|r| !r.events.is_closed());

        if let Err(e) = step(model, cfg, &mut running, stats) {
            // A model error fails every request of this step rather than killing the thread.
            for r in running.drain(..) {
                let _ = r.events.send(Event::Error(e.to_string()));
            }
        }
        stats.running.store(running.len(), Ordering::SeqCst);
        stats.kv_blocks.store(running.iter().map(|r| r.cache.blocks()).sum(), Ordering::SeqCst);
        stats.steps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Samples from `logits` for `r`, sends the events, and says whether `r` is finished.
fn sample(r: &mut Running<'_>, logits: &mut [f32], stats: &EngineStats) -> Result<bool> {
    let out = r.seq.step(logits)?;
    let sent = match out.id {
        Some(id) => {
            stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            r.pending = Some(id);
            r.events.send(Event::Token { id, text: out.text, logprob: out.logprob }).is_ok()
        }
        None => {
            if !out.text.is_empty() {
                // The final flush of held-back text comes without a new token id.
                let _ = r.events.send(Event::Token { id: u32::MAX, text: out.text, logprob: out.logprob });
            }
            true
        }
    };
    match out.finish {
        Some(f) => {
            r.done(f);
            Ok(true)
        }
        None => Ok(!sent),
    }
}

fn step(model: &dyn Decoder, cfg: EngineConfig, running: &mut Vec<Running<'_>>, stats: &EngineStats) -> Result<()> {
    // At most one prefill chunk per step, oldest request first.
    let mut finished = vec![false; running.len()];
    if let Some(i) = running.iter().position(|r| r.fed < r.prompt.len()) {
        let r = &mut running[i];
        let end = (r.fed + cfg.prefill_chunk).min(r.prompt.len());
        if let (Some(p), Some(vision)) = (r.pixels.take(), model.vision()) {
            r.embeds = Some(vision.prompt_embeddings(&r.prompt, &p)?);
        }
        let logits = match (&r.embeds, model.vision()) {
            (Some(e), Some(vision)) => vision.forward_embeds(&e.narrow(0, r.fed, end - r.fed)?, &mut r.cache, false)?,
            _ => model.forward(&r.prompt[r.fed..end], &mut r.cache, false)?,
        };
        stats.prompt_tokens.fetch_add((end - r.fed) as u64, Ordering::Relaxed);
        r.fed = end;
        if r.fed == r.prompt.len() {
            r.embeds = None;
            let mut row = logits.squeeze(0)?.to_vec1::<f32>()?;
            finished[i] = sample(r, &mut row, stats)?;
        }
    }
    // One batched decode step for every sequence with a token to feed.
    let idx: Vec<usize> = (0..running.len()).filter(|&i| !finished[i] && running[i].pending.is_some()).collect();
    if !idx.is_empty() {
        let ids: Vec<u32> = idx.iter().map(|&i| running[i].pending.expect("filtered on pending")).collect();
        let logits = {
            let mut caches: Vec<&mut KvCache> =
                running.iter_mut().enumerate().filter(|(i, _)| idx.contains(i)).map(|(_, r)| &mut r.cache).collect();
            model.forward_batch(&ids, &mut caches)?
        };
        let rows = logits.to_vec2::<f32>()?;
        for (k, &i) in idx.iter().enumerate() {
            let mut row = rows[k].clone();
            finished[i] = sample(&mut running[i], &mut row, stats)?;
        }
    }
    let mut i = 0;
    running.retain(|_| {
        let keep = !finished[i];
        i += 1;
        keep
    });
    Ok(())
}
