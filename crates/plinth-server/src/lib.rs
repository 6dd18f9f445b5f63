//! `plinth serve`: an OpenAI-compatible HTTP server over plinth's engines.
//!
//! Owns binding the socket, one continuous-batching [`Engine`] per served decoder and one
//! embedding batcher per served encoder, the routes (`POST /v1/chat/completions`,
//! `POST /v1/completions`, `POST /v1/embeddings`, `POST /v1/rerank`,
//! `POST /v1/images/generations` (on one worker thread per text-to-image model), `GET /v1/models`,
//! `GET /health`, `GET /metrics`) and graceful shutdown. Request parsing lives in `request`
//! (encoder requests in `encode`), response shapes in `response`, streaming in `stream`, the
//! single error-to-status mapping in `error`, CORS / API key / request counting in `gate`,
//! Prometheus metrics in `metrics`.
//!
//! Use [`serve`] from a binary, or [`Server::bind`] then [`Server::run`] to control the
//! runtime and the shutdown signal (as the tests do).

mod adapters;
mod encode;
mod error;
mod gate;
mod imagegen;
mod images;
mod metrics;
mod request;
mod response;
mod routes;
mod state;
mod stream;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plinth_core::{Error, Result};
use plinth_engine::{Engine, EngineConfig};
use plinth_models::Decoder;
use plinth_tokenize::Tokenizer;
use tokio::sync::Notify;

pub use images::ImagePolicy;
pub use plinth_image::ImageLimits;
pub use request::DEFAULT_SEED;

/// After a shutdown signal, in-flight requests get this long to finish on their own...
const GRACE: Duration = Duration::from_secs(2);
/// ...and then, cancelled by their engines, this long to close their connections.
const FORCE: Duration = Duration::from_secs(2);

/// How the server listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port; [`Server::local_addr`] tells which.
    pub port: u16,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Allowed browser origins: `*` or a comma-separated list; `None` sends no CORS headers.
    pub cors: Option<String>,
    pub max_body_bytes: usize,
    /// Limits of each model's engine.
    pub engine: EngineConfig,
    /// LoRA adapters to serve from the start: `(name, PEFT directory)`, on the first decoder.
    pub adapters: Vec<(String, PathBuf)>,
    /// Where chat images may come from, and their limits.
    pub images: ImagePolicy,
    /// Image-generation jobs each text-to-image model holds (running and waiting) before
    /// refusing more with 429.
    pub max_image_queue: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            cors: None,
            max_body_bytes: 32 * 1024 * 1024,
            engine: EngineConfig::default(),
            adapters: Vec::new(),
            images: ImagePolicy::default(),
            max_image_queue: 16,
        }
    }
}

/// A loaded model to serve under `name`.
pub struct ModelSpec {
    pub name: String,
    /// Where it was loaded from, for the start-up banner.
    pub path: PathBuf,
    pub model: Box<dyn Decoder>,
    pub tokenizer: Tokenizer,
}

/// A loaded encoder to serve under `name` (embeddings; reranking when it is a cross-encoder).
pub struct EncoderSpec {
    pub name: String,
    pub path: PathBuf,
    pub model: plinth_tasks::EncoderModel,
}

/// A loaded text-to-image pipeline to serve under `name` (`/v1/images/generations`).
pub struct ImageModelSpec {
    pub name: String,
    pub path: PathBuf,
    pub pipeline: plinth_tasks::imagine::TextToImage,
}

/// Everything a server serves: decoders, encoders and text-to-image pipelines.
#[derive(Default)]
pub struct Served {
    pub models: Vec<ModelSpec>,
    pub encoders: Vec<EncoderSpec>,
    pub generators: Vec<ImageModelSpec>,
}

/// What the server says about a model it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    /// Context window (decoders) or longest input (encoders), in tokens.
    pub context: usize,
    /// `"decoder"`, `"encoder"` or `"text-to-image"`.
    pub family: &'static str,
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<state::AppState>,
}

fn check_config(config: &ServerConfig, served: &Served) -> Result<()> {
    let all: Vec<(&str, &PathBuf)> = (served.models.iter().map(|m| (m.name.as_str(), &m.path)))
        .chain(served.encoders.iter().map(|e| (e.name.as_str(), &e.path)))
        .chain(served.generators.iter().map(|g| (g.name.as_str(), &g.path)))
        .collect();
    if all.is_empty() {
        return Err(Error::invalid("--model", "at least one model is needed"));
    }
    for (i, (name, path)) in all.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(Error::invalid("--alias", format!("the name of model {} ({}) is empty", i + 1, path.display())));
        }
        if all[..i].iter().any(|o| o.0 == *name) {
            return Err(Error::invalid("--alias", format!("two models are named '{name}'; give each its own --alias")));
        }
    }
    let e = &config.engine;
    for (flag, v) in [
        ("--max-running", e.max_running),
        ("--max-queue", e.max_queue),
        ("prefill chunk", e.prefill_chunk),
        ("--max-body-bytes", config.max_body_bytes),
        ("--max-image-queue", config.max_image_queue),
    ] {
        if v == 0 {
            return Err(Error::invalid(flag, "must be at least 1"));
        }
    }
    if config.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(Error::invalid("--api-key", "is empty"));
    }
    Ok(())
}

impl Server {
    /// Checks the settings, binds the socket and starts one engine per decoder, one
    /// batching service per encoder and one image worker per text-to-image pipeline.
    pub async fn bind(config: ServerConfig, served: Served) -> Result<Server> {
        check_config(&config, &served)?;
        let Served { models, encoders, generators } = served;
        let cors = match config.cors.as_deref() {
            Some(spec) => Some(gate::Cors::parse(spec).ok_or_else(|| Error::invalid("--cors", "names no origin (give * or a list of origins)"))?),
            None => None,
        };
        let where_ = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await.map_err(|e| Error::io(&where_, e))?;
        let addr = listener.local_addr().map_err(|e| Error::io(&where_, e))?;
        let created = response::unix_now();
        let models = models
            .into_iter()
            .map(|m| {
                let template = m.tokenizer.chat().map_err(|e| format!("model '{}' cannot serve chat requests ({e}); use /v1/completions", m.name));
                let prompter = match m.model.vision() {
                    Some(v) => Some(
                        plinth_tasks::ImagePrompter::load(&m.path, v.vision_info(), &m.tokenizer)
                            .map_err(|e| Error::invalid("--model", format!("{}: {e}", m.name)))?,
                    ),
                    None => None,
                };
                let tokenizer = Arc::new(m.tokenizer);
                let model: Arc<dyn Decoder> = Arc::from(m.model);
                Ok(state::ModelState {
                    engine: Engine::start_shared(model.clone(), tokenizer.clone(), config.engine),
                    model,
                    name: m.name,
                    path: m.path,
                    created,
                    tokenizer,
                    template,
                    prompter,
                    metrics: Default::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let service = plinth_tasks::ServiceConfig { max_queue: config.engine.max_queue, ..Default::default() };
        let encoders = encoders
            .into_iter()
            .map(|e| {
                Ok(state::EncoderState {
                    service: plinth_tasks::EmbedService::start(Arc::new(e.model), service)?,
                    name: e.name,
                    path: e.path,
                    created,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let generators = generators
            .into_iter()
            .map(|g| {
                Ok(state::GeneratorState {
                    service: plinth_tasks::imagine::ImagineService::start(Arc::new(g.pipeline), config.max_image_queue)?,
                    name: g.name,
                    path: g.path,
                    created,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let state = state::AppState {
            models,
            encoders,
            generators,
            adapters: Default::default(),
            requests: Default::default(),
            api_key: config.api_key,
            cors,
            max_body_bytes: config.max_body_bytes,
            images: config.images,
        };
        if !config.adapters.is_empty() && state.models.is_empty() {
            return Err(Error::invalid("--adapter", "adapters need a generation model to run on"));
        }
        for (name, path) in &config.adapters {
            adapters::install(&state, name, path, 0).map_err(|e| Error::invalid("--adapter", format!("{name}={}: {e}", path.display())))?;
        }
        Ok(Server { listener, addr, state: Arc::new(state) })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn models(&self) -> Vec<ModelInfo> {
        let s = &self.state;
        let decoders = s.models.iter().map(|m| ModelInfo { name: m.name.clone(), path: m.path.clone(), context: m.engine.context_length(), family: "decoder" });
        let encoders = s.encoders.iter().map(|e| ModelInfo {
            name: e.name.clone(),
            path: e.path.clone(),
            context: e.service.model().tokenizer.max_len(),
            family: "encoder",
        });
        let generators = s.generators.iter().map(|g| ModelInfo {
            name: g.name.clone(),
            path: g.path.clone(),
            context: g.service.pipeline().info().text_max_tokens,
            family: "text-to-image",
        });
        decoders.chain(encoders).chain(generators).collect()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish for a moment, cancels the rest and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server { listener, addr, state } = self;
        let app = routes::router(state.clone());
        let signalled = Arc::new(Notify::new());
        let notify = signalled.clone();
        let graceful = async move {
            shutdown.await;
            notify.notify_one();
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(graceful).into_future();
        tokio::pin!(server);
        let res = tokio::select! {
            r = &mut server => r,
            _ = signalled.notified() => match tokio::time::timeout(GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    // Cancelling ends every open stream, which lets its connection close.
                    state.shutdown_engines();
                    tokio::time::timeout(FORCE, &mut server).await.unwrap_or(Ok(()))
                }
            },
        };
        state.shutdown_engines();
        res.map_err(|e| Error::io(addr.to_string(), e))
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives in between is not lost (or
/// fatal). Must be called inside a tokio runtime.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await
            }
        })
    }
}

/// Runs the server on its own tokio runtime until SIGTERM or Ctrl-C. `on_ready` is called
/// once the socket is bound and the signal handlers are installed (a binary prints its
/// banner there).
pub fn serve(config: ServerConfig, served: Served, on_ready: impl FnOnce(&Server)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::io("tokio runtime", e))?;
    rt.block_on(async move {
        let server = Server::bind(config, served).await?;
        let signal = shutdown_signal()?;
        on_ready(&server);
        server.run(signal).await
    })
}
