//! The server's image worker: one thread owns a [`TextToImage`] pipeline and runs generation
//! jobs first come, first served, from a bounded queue. Image jobs take seconds to minutes;
//! keeping them on their own thread and queue means they never hold a text engine's slots or
//! sit in front of text requests, and a burst of them is refused ([`Error::QueueFull`])
//! instead of piling up without bound. A job whose client has gone away stops at its next
//! denoising step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use plinth_core::{Error, Result};
use tokio::sync::oneshot;

use super::{GeneratedImage, ImagineSettings, TextToImage};

struct Job {
    /// One entry per image (`n` of them, seeds consecutive).
    images: Vec<ImagineSettings>,
    reply: oneshot::Sender<Result<Vec<GeneratedImage>>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ImagineStats {
    pub requests: AtomicUsize,
    pub images: AtomicUsize,
    /// Jobs accepted and not yet finished (the running one included).
    pub queued: AtomicUsize,
}

/// A running image worker.
pub struct ImagineService {
    pipe: Arc<TextToImage>,
    tx: mpsc::Sender<Job>,
    max_queue: usize,
    pub stats: Arc<ImagineStats>,
}

impl ImagineService {
    /// Starts the worker thread. At most `max_queue` jobs wait or run at once.
    pub fn start(pipe: Arc<TextToImage>, max_queue: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(ImagineStats::default());
        let (p, st) = (pipe.clone(), stats.clone());
        std::thread::Builder::new()
            .name("plinth-imagine".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let out = run(&p, &job);
                    st.queued.fetch_sub(1, Ordering::Relaxed);
                    if let Ok(images) = &out {
                        st.images.fetch_add(images.len(), Ordering::Relaxed);
                    }
                    let _ = job.reply.send(out);
                }
            })
            .map_err(|e| Error::io("image worker thread", e))?;
        Ok(ImagineService { pipe, tx, max_queue: max_queue.max(1), stats })
    }

    pub fn pipeline(&self) -> &TextToImage {
        &self.pipe
    }

    /// Queues the images `images` describe (already resolved and checked).
    pub fn submit(&self, images: Vec<ImagineSettings>) -> Result<oneshot::Receiver<Result<Vec<GeneratedImage>>>> {
        let queued = self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= self.max_queue {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::QueueFull { queued, limit: self.max_queue });
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { images, reply }).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            Error::EngineStopped("the image worker has stopped".into())
        })?;
        Ok(rx)
    }
}

fn run(pipe: &TextToImage, job: &Job) -> Result<Vec<GeneratedImage>> {
    let mut out = Vec::with_capacity(job.images.len());
    for settings in &job.images {
        let mut check = |_| if job.reply.is_closed() { Err(Error::EngineStopped("the client went away".into())) } else { Ok(()) };
        out.push(pipe.generate(settings, &mut check)?);
    }
    Ok(out)
}
