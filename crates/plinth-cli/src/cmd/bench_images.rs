//! `plinth bench --images N`: image-embedding throughput of a dual encoder (CLIP, SigLIP) in
//! three stages timed apart: preprocessing (resize, crop, normalise; no decoding: the images
//! are random RGB generated in memory, seeded), the model forward alone on preprocessed
//! pixels, and end to end through `ImageTextPipeline::embed_images` (preprocessing, forward,
//! L2 normalisation). Compared with PyTorch in `scripts/bench-vision`.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use plinth_image::RgbImage;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::cmd::bench::{median, peak_rss_mb};
use crate::cmd::generate::round2;
use crate::load;

/// Size of the generated input images (a typical camera-ish aspect ratio, larger than any
/// model input so that the processor really downsamples).
pub const IMAGE_WIDTH: u32 = 640;
pub const IMAGE_HEIGHT: u32 = 480;
const SEED: u64 = 1234;
/// Distinct images generated; the N benchmarked images cycle through them so memory does not
/// grow with N (content does not change the cost of resizing or of the model).
const POOL_MIN: usize = 16;
/// The largest batch accepted: the pool holds at least one batch of 640x480 images (~0.9 MB each).
const MAX_BATCH: usize = 256;

#[derive(Serialize)]
struct ImageBenchReport {
    model: String,
    threads: usize,
    runs: usize,
    images: usize,
    batch_size: usize,
    input_width: u32,
    input_height: u32,
    /// Side of the square the model reads.
    image_size: usize,
    preprocess_images_per_s: f64,
    forward_images_per_s: f64,
    end_to_end_images_per_s: f64,
    peak_rss_mb: f64,
}

/// splitmix64: a few lines, deterministic everywhere, good enough for pixel noise.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` random `w`x`h` RGB images, the same for the same seed.
pub fn random_images(n: usize, w: u32, h: u32, seed: u64) -> Vec<RgbImage> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            let mut bytes = Vec::with_capacity(w as usize * h as usize * 3 + 8);
            while bytes.len() < w as usize * h as usize * 3 {
                bytes.extend_from_slice(&splitmix(&mut state).to_le_bytes());
            }
            bytes.truncate(w as usize * h as usize * 3);
            RgbImage::from_raw(w, h, bytes).expect("buffer sized for the image")
        })
        .collect()
}

/// The `(start, len)` of each batch of `n` images drawn from a pool of `pool` images, `batch`
/// at a time; `pool` is a multiple of `batch`, so every batch is a contiguous slice.
fn batches(n: usize, batch: usize, pool: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.div_ceil(batch)).map(move |k| ((k * batch) % pool, batch.min(n - k * batch)))
}

pub fn run(n: usize, a: &BenchArgs) -> Result<()> {
    if n == 0 || a.batch_size == 0 || a.batch_size > MAX_BATCH {
        anyhow::bail!("--images must be at least 1 and --batch-size between 1 and {MAX_BATCH}");
    }
    let pipe = load::load_image_text(&a.model.model, "--images")?;
    let (proc, model) = (pipe.processor(), pipe.model());
    let batch = a.batch_size.min(n);
    let pool_len = batch * POOL_MIN.div_ceil(batch);
    let pool = random_images(pool_len, IMAGE_WIDTH, IMAGE_HEIGHT, SEED);

    let preprocess = |imgs: &[RgbImage]| -> Result<Tensor> {
        let px = imgs.iter().map(|i| Ok(proc.preprocess(i)?.pixel_values)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&px, 0)?)
    };
    // The forward stage reads the pool's batches preprocessed once, outside the timing.
    let pixels = pool.chunks(batch).map(preprocess).collect::<Result<Vec<_>>>()?;
    // Untimed warm-up: first-touch page faults of the weights, thread pool start.
    model.embed_images(&pixels[0])?;

    let (mut pre, mut fwd, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs {
        let t = Instant::now();
        for (start, len) in batches(n, batch, pool_len) {
            preprocess(&pool[start..start + len])?;
        }
        pre.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for (start, len) in batches(n, batch, pool_len) {
            let px = &pixels[start / batch];
            if len == batch { model.embed_images(px)? } else { model.embed_images(&px.narrow(0, 0, len)?)? };
        }
        fwd.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for (start, len) in batches(n, batch, pool_len) {
            pipe.embed_images(&pool[start..start + len], batch, &mut |_| {})?;
        }
        e2e.push(n as f64 / t.elapsed().as_secs_f64());
        if !a.json {
            eprintln!(
                "run {}/{}: preprocess {:.1} images/s, forward {:.1} images/s, end to end {:.1} images/s",
                run + 1,
                a.runs,
                pre[run],
                fwd[run],
                e2e[run]
            );
        }
    }
    let r = ImageBenchReport {
        model: pipe.dir.display().to_string(),
        threads: candle_core::utils::get_num_threads(),
        runs: a.runs,
        images: n,
        batch_size: batch,
        input_width: IMAGE_WIDTH,
        input_height: IMAGE_HEIGHT,
        image_size: pipe.info().image_size,
        preprocess_images_per_s: round2(median(pre)),
        forward_images_per_s: round2(median(fwd)),
        end_to_end_images_per_s: round2(median(e2e)),
        peak_rss_mb: round2(peak_rss_mb()),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("model        {}", r.model);
        println!("threads      {}", r.threads);
        println!(
            "images       {} random {}x{} RGB -> {}x{}, batch {}, median of {}",
            r.images, r.input_width, r.input_height, r.image_size, r.image_size, r.batch_size, r.runs
        );
        println!("preprocess   {:.1} images/s", r.preprocess_images_per_s);
        println!("forward      {:.1} images/s", r.forward_images_per_s);
        println!("end to end   {:.1} images/s", r.end_to_end_images_per_s);
        println!("peak RSS     {:.1} MB", r.peak_rss_mb);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_seeded_and_sized() {
        let a = random_images(2, 5, 3, 7);
        assert_eq!(a[0].dimensions(), (5, 3));
        assert_eq!(a, random_images(2, 5, 3, 7));
        assert_ne!(a[0], a[1]);
        assert_ne!(a, random_images(2, 5, 3, 8));
        // scripts/bench_vision.py regenerates these images in numpy for PyTorch; these bytes
        // are what its random_images(2, 4, 2, 1234)[1] starts with.
        let b = random_images(2, 4, 2, 1234);
        assert_eq!(&b[1].as_raw()[..12], &[51, 160, 208, 82, 242, 65, 98, 78, 165, 69, 177, 68]);
    }

    #[test]
    fn batches_cover_n_images_from_the_pool() {
        let b: Vec<_> = batches(21, 8, 16).collect();
        assert_eq!(b, vec![(0, 8), (8, 8), (0, 5)]);
        assert_eq!(b.iter().map(|x| x.1).sum::<usize>(), 21);
        assert_eq!(batches(3, 1, 16).collect::<Vec<_>>(), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(batches(40, 1, 16).last(), Some((7, 1)));
    }
}
