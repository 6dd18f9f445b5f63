//! Dynamic batching for encoders: one thread owns the model and serves every embedding
//! request. Each step it takes all queued requests (up to `max_gather` inputs), runs their
//! inputs together sorted by length (so a batch pads little), pools, and applies each
//! request's own options before answering. A request's vectors are the same as if it had run
//! alone: padding is masked, and every row is pooled on its real tokens only
//! (`tests/service.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use plinth_core::{Error, Result};
use tokio::sync::oneshot;

use crate::embed::EmbedOptions;
use crate::model::EncoderModel;
use crate::text::Encoded;

/// Limits of an [`EmbedService`].
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Inputs gathered from the queue into one step.
    pub max_gather: usize,
    /// Requests waiting beyond this are refused with [`Error::QueueFull`].
    pub max_queue: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { batch_size: 32, max_gather: 512, max_queue: 256 }
    }
}

struct Job {
    inputs: Vec<Encoded>,
    opts: EmbedOptions,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub requests: AtomicUsize,
    pub inputs: AtomicUsize,
    pub steps: AtomicUsize,
    pub queued: AtomicUsize,
}

/// A running embedding batcher.
pub struct EmbedService {
    model: Arc<EncoderModel>,
    tx: mpsc::Sender<Job>,
    cfg: ServiceConfig,
    pub stats: Arc<ServiceStats>,
}

impl EmbedService {
    /// Starts the batching thread.
    pub fn start(model: Arc<EncoderModel>, cfg: ServiceConfig) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(ServiceStats::default());
        let (m, s) = (model.clone(), stats.clone());
        std::thread::Builder::new()
            .name("plinth-embed".into())
            .spawn(move || serve(&m, rx, cfg, &s))
            .map_err(|e| Error::EngineStopped(format!("cannot start the embedding thread: {e}")))?;
        Ok(EmbedService { model, tx, cfg, stats })
    }

    pub fn model(&self) -> &EncoderModel {
        &self.model
    }

    /// Queues already validated inputs; the receiver yields their vectors in order.
    pub fn submit(&self, inputs: Vec<Encoded>, opts: EmbedOptions) -> Result<oneshot::Receiver<Result<Vec<Vec<f32>>>>> {
        let queued = self.stats.queued.load(Ordering::Relaxed);
        if queued >= self.cfg.max_queue {
            return Err(Error::QueueFull { queued, limit: self.cfg.max_queue });
        }
        let (reply, rx) = oneshot::channel();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Job { inputs, opts, reply })
            .map_err(|_| Error::EngineStopped("the embedding thread has stopped".into()))?;
        Ok(rx)
    }
}

fn serve(model: &EncoderModel, rx: mpsc::Receiver<Job>, cfg: ServiceConfig, stats: &ServiceStats) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut gathered = jobs[0].inputs.len();
        while gathered < cfg.max_gather {
            match rx.try_recv() {
                Ok(j) => {
                    gathered += j.inputs.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        stats.queued.fetch_sub(jobs.len(), Ordering::Relaxed);
        // Requests whose caller has gone (client disconnected) are not computed.
        jobs.retain(|j| !j.reply.is_closed());
        let all: Vec<Encoded> = jobs.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
        if all.is_empty() {
            continue;
        }
        stats.steps.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(jobs.len(), Ordering::Relaxed);
        stats.inputs.fetch_add(all.len(), Ordering::Relaxed);
        match model.pool_encoded(&all, cfg.batch_size, &mut |_| {}) {
            Ok(mut vectors) => {
                let mut rest = vectors.drain(..);
                for j in jobs {
                    let mut mine: Vec<Vec<f32>> = rest.by_ref().take(j.inputs.len()).collect();
                    mine.iter_mut().for_each(|v| model.finish(v, &j.opts));
                    let _ = j.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for j in jobs {
                    let _ = j.reply.send(Err(Error::EngineStopped(format!("embedding failed: {why}"))));
                }
            }
        }
    }
}
