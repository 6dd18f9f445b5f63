//! `plinth imagine`: text to image with a Stable Diffusion-family pipeline, one PNG per image
//! with its settings in the PNG's text metadata.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_tasks::imagine::{ImagineRequest, Progress, TextToImage};
use serde_json::json;

use crate::cli::ImagineArgs;
use crate::load;

/// Largest --count: each image costs a full denoising run.
const MAX_COUNT: usize = 64;

/// `out.png`, then `out-1.png`, `out-2.png`, ...
fn output_path(base: &Path, i: usize) -> PathBuf {
    if i == 0 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let ext = base.extension().map_or_else(|| "png".into(), |e| e.to_string_lossy().into_owned());
    base.with_file_name(format!("{stem}-{i}.{ext}"))
}

/// Resolves `spec` and loads it as a text-to-image pipeline.
pub fn load_pipeline(spec: &str) -> Result<TextToImage> {
    let loc = load::resolve(spec)?;
    let dir = loc.path();
    if !plinth_tasks::imagine::is_text_to_image_dir(dir) {
        anyhow::bail!(
            "'{spec}' is not a text-to-image model: expected a diffusers pipeline folder with model_index.json \
             (Stable Diffusion 1.5 / 2.1, SD-Turbo, SDXL-Turbo)"
        );
    }
    TextToImage::load(dir).with_context(|| format!("loading {}", dir.display()))
}

fn bar(total: usize, image: usize, count: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {elapsed} eta {eta}").expect("static template").progress_chars("=> "));
    bar.set_message(if count > 1 { format!("image {}/{count} denoising", image + 1) } else { "denoising".to_string() });
    bar
}

pub fn run(a: ImagineArgs) -> Result<()> {
    if a.count == 0 || a.count > MAX_COUNT {
        anyhow::bail!("invalid --count {}: use 1 to {MAX_COUNT}", a.count);
    }
    let scheduler = a.scheduler.as_deref().map(str::parse).transpose()?;
    if a.prompt.trim().is_empty() {
        anyhow::bail!("the prompt is empty; describe the image to generate");
    }
    let pipe = load_pipeline(&a.model)?;
    let req = ImagineRequest {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative.clone(),
        width: a.width,
        height: a.height,
        steps: a.steps,
        guidance: a.guidance,
        scheduler,
        seed: a.seed,
    };
    let first = pipe.resolve(&req)?;
    for i in 0..a.count {
        let mut settings = first.clone();
        settings.seed = first.seed.wrapping_add(i as u64);
        let bar = bar(settings.steps, i, a.count);
        let image = pipe.generate(&settings, &mut |p| {
            match p {
                Progress::Encoded { .. } => bar.set_position(0),
                Progress::Step { done, .. } => {
                    bar.set_position(done as u64);
                    if done == settings.steps {
                        bar.set_message("decoding (VAE)");
                    }
                }
                Progress::Decoded => bar.finish_and_clear(),
            }
            Ok(())
        })?;
        let path = output_path(&a.output, i);
        let png = image.png()?;
        // Written beside the target and renamed, so an interrupted run never leaves half a PNG.
        let tmp = path.with_extension("png.part");
        std::fs::write(&tmp, &png).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        let t = image.times;
        let total = t.encode_s + t.denoise_s + t.decode_s;
        if a.json {
            println!(
                "{}",
                json!({"path": path, "bytes": png.len(), "settings": image.settings, "seconds": {
                    "text_encoder": t.encode_s, "denoise": t.denoise_s, "vae_decode": t.decode_s, "total": total}})
            );
        } else {
            let s = &image.settings;
            println!(
                "wrote {} ({}x{}, {} steps {}, guidance {}, seed {}) in {:.1} s (text {:.2} s, denoise {:.1} s, VAE {:.1} s)",
                path.display(),
                s.width,
                s.height,
                s.steps,
                s.scheduler,
                s.guidance,
                s.seed,
                total,
                t.encode_s,
                t.denoise_s,
                t.decode_s
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::output_path;
    use std::path::Path;

    #[test]
    fn later_images_get_numbered_names() {
        assert_eq!(output_path(Path::new("a/out.png"), 0), Path::new("a/out.png"));
        assert_eq!(output_path(Path::new("a/out.png"), 2), Path::new("a/out-2.png"));
        assert_eq!(output_path(Path::new("pic"), 1), Path::new("pic-1.png"));
    }
}
