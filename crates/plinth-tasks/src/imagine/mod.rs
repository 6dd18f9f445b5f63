//! Text to image with Stable Diffusion-family checkpoints in the diffusers folder layout
//! (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, and for
//! SDXL `text_encoder_2/`, `tokenizer_2/`). [`TextToImage`] follows diffusers'
//! `StableDiffusionPipeline` / `StableDiffusionXLPipeline` step for step — prompt encoding,
//! classifier-free guidance, the scheduler loop, VAE decode and the uint8 conversion — so that,
//! given the same starting latents, it produces the same image.
//!
//! Randomness comes only from [`NoiseRng`] seeded by the request, so a seed reproduces an image
//! (the same PNG bytes on the same machine and build). [`ImagineService`] runs generations on
//! their own thread behind a bounded queue, for the server.

mod service;

pub use service::ImagineService;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};
use plinth_models::diffusion::noise::{random_seed, NoiseRng};
use plinth_models::diffusion::scheduler::{Scheduler, SchedulerConfig, SchedulerKind, TimestepSpacing};
use plinth_models::diffusion::unet::{AddedCond, UNet2DCondition};
use plinth_models::diffusion::vae::AutoencoderKL;
use plinth_models::models::clip_text::ClipTextModel;
use plinth_tokenize::Tokenizer;
use serde::Serialize;

/// Largest width or height accepted, in pixels. Memory and time grow with the pixel count;
/// SDXL's native 1024 fits well inside.
pub const MAX_SIDE: usize = 2048;
/// Most denoising steps accepted in one request.
pub const MAX_STEPS: usize = 200;
/// Largest classifier-free guidance scale accepted.
pub const MAX_GUIDANCE: f64 = 50.0;

/// The pipelines plinth runs (`model_index.json` `_class_name`).
const PIPELINES: &[&str] = &["StableDiffusionPipeline", "StableDiffusionXLPipeline"];

/// True when `dir` holds a diffusers text-to-image pipeline (a `model_index.json`).
pub fn is_text_to_image_dir(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
}

/// What a generation may set; `None` takes the model's default.
#[derive(Clone, Debug, Default)]
pub struct ImagineRequest {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub scheduler: Option<SchedulerKind>,
    pub seed: Option<u64>,
}

/// Everything that determines an image: the resolved request. Written into the PNG.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ImagineSettings {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    pub seed: u64,
}

/// Where a generation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The prompt is encoded; `total` denoising steps follow.
    Encoded { total: usize },
    /// `done` of `total` denoising steps are finished.
    Step { done: usize, total: usize },
    /// The VAE has decoded the latents.
    Decoded,
}

/// Seconds spent in each stage.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StageTimes {
    pub encode_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
}

/// One generated image, 8-bit RGB, row-major.
#[derive(Clone, Debug)]
pub struct GeneratedImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub settings: ImagineSettings,
    pub times: StageTimes,
}

impl GeneratedImage {
    /// The PNG file: pixels plus the settings as text metadata — `parameters` in the
    /// widely read "prompt / Negative prompt: / Steps: ..." form, and `plinth` as JSON.
    pub fn png(&self) -> Result<Vec<u8>> {
        let s = &self.settings;
        let mut parameters = s.prompt.clone();
        if let Some(neg) = &s.negative_prompt {
            parameters.push_str(&format!("\nNegative prompt: {neg}"));
        }
        parameters.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}",
            s.steps, s.scheduler, s.guidance, s.seed, s.width, s.height, s.model
        ));
        let json = serde_json::to_string(s).map_err(|e| Error::invalid("settings", e.to_string()))?;
        let text = [
            ("parameters", parameters),
            ("plinth", json),
            ("Software", format!("plinth {}", env!("CARGO_PKG_VERSION"))),
        ];
        plinth_image::encode_png(self.width as u32, self.height as u32, &self.rgb, &text)
    }
}

/// Which diffusers pipeline a folder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// SD 1.x / 2.x / SD-Turbo: one CLIP text encoder, its last hidden state.
    Sd,
    /// SDXL / SDXL-Turbo: two encoders' penultimate states side by side, the second's pooled
    /// projection and the size "time ids" as extra conditioning.
    Sdxl,
}

/// The second text encoder of SDXL.
struct SecondEncoder {
    tokenizer: Tokenizer,
    encoder: ClipTextModel,
    pad: u32,
}

/// Facts `plinth inspect` and `--json` report about a loaded pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct TextToImageInfo {
    pub pipeline: String,
    pub default_width: usize,
    pub default_height: usize,
    pub default_steps: usize,
    pub default_guidance: f64,
    pub default_scheduler: String,
    pub unet_parameters: usize,
    pub vae_parameters: usize,
    pub text_encoder_parameters: usize,
    pub latent_channels: usize,
    pub text_max_tokens: usize,
}

/// A loaded Stable Diffusion-family pipeline.
pub struct TextToImage {
    name: String,
    dir: PathBuf,
    tokenizer: Tokenizer,
    pad: u32,
    text_encoder: ClipTextModel,
    second: Option<SecondEncoder>,
    unet: UNet2DCondition,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    default_scheduler: SchedulerKind,
    force_zeros_for_empty_prompt: bool,
    info: TextToImageInfo,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

fn component(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_dir() {
        Ok(path)
    } else {
        Err(Error::missing(dir, format!("the '{name}/' folder of a diffusers pipeline")))
    }
}

/// The padding id of a CLIP tokenizer (SD 1.x pads with the end-of-text token, SD 2.x and
/// SDXL's second tokenizer with "!").
fn pad_id(tok: &Tokenizer, dir: &Path) -> Result<u32> {
    tok.pad_id()
        .or_else(|| tok.eos_ids().first().copied())
        .ok_or_else(|| Error::missing(dir, "a pad_token or eos_token in tokenizer_config.json"))
}

impl TextToImage {
    /// Loads the pipeline in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model_index.json");
        let index = read_json(&index_path)?;
        let class = index["_class_name"].as_str().unwrap_or("");
        let family = match class {
            "StableDiffusionPipeline" => Family::Sd,
            "StableDiffusionXLPipeline" => Family::Sdxl,
            other => {
                return Err(Error::unsupported(
                    &index_path,
                    format!("pipeline '{other}'; plinth runs {}", PIPELINES.join(", ")),
                ))
            }
        };
        let tok_dir = component(dir, "tokenizer")?;
        let tokenizer = Tokenizer::from_dir(&tok_dir)?;
        let pad = pad_id(&tokenizer, &tok_dir)?;
        let text_encoder = ClipTextModel::load(&component(dir, "text_encoder")?)?;
        let second = match family {
            Family::Sd => None,
            Family::Sdxl => {
                let tok_dir = component(dir, "tokenizer_2")?;
                let tokenizer = Tokenizer::from_dir(&tok_dir)?;
                let pad = pad_id(&tokenizer, &tok_dir)?;
                Some(SecondEncoder { tokenizer, pad, encoder: ClipTextModel::load(&component(dir, "text_encoder_2")?)? })
            }
        };
        let unet = UNet2DCondition::load(&component(dir, "unet")?)?;
        let vae = AutoencoderKL::load(&component(dir, "vae")?)?;
        let scheduler_config = SchedulerConfig::load(&component(dir, "scheduler")?.join("scheduler_config.json"))?;
        // PNDM (SD 1.x's default) and the other multistep solvers are not implemented: DDIM
        // runs on the same noise schedule and converges to the same kind of image.
        let default_scheduler = scheduler_config.default_kind().unwrap_or(SchedulerKind::Ddim);
        let force_zeros_for_empty_prompt =
            family == Family::Sdxl && index["force_zeros_for_empty_prompt"].as_bool().unwrap_or(true);

        let uc = unet.config();
        if uc.in_channels != vae.latent_channels() {
            return Err(Error::format(
                dir,
                format!("the UNet takes {} channels but the VAE makes {}-channel latents", uc.in_channels, vae.latent_channels()),
            ));
        }
        let cross = text_encoder.hidden_size() + second.as_ref().map_or(0, |s| s.encoder.hidden_size());
        if uc.cross_attention_dim != cross {
            return Err(Error::format(
                dir,
                format!("the UNet cross-attends to {} features but the text encoders give {cross}", uc.cross_attention_dim),
            ));
        }
        if family == Family::Sdxl && uc.addition_time_embed_dim.is_none() {
            return Err(Error::format(dir, "an SDXL pipeline whose UNet has no addition_embed_type 'text_time'"));
        }
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        // Turbo checkpoints are distilled for 1–4 steps without guidance; their schedulers use
        // "trailing" spacing so that even one step starts from pure noise.
        let turbo = scheduler_config.timestep_spacing == Some(TimestepSpacing::Trailing) || name.to_lowercase().contains("turbo");
        let side = uc.sample_size * vae.scale();
        let info = TextToImageInfo {
            pipeline: class.to_string(),
            default_width: side,
            default_height: side,
            default_steps: if turbo { 1 } else { 30 },
            default_guidance: match (turbo, family) {
                (true, _) => 0.0,
                (false, Family::Sd) => 7.5,
                (false, Family::Sdxl) => 5.0,
            },
            default_scheduler: default_scheduler.name().to_string(),
            unet_parameters: unet.parameters(),
            vae_parameters: vae.parameters(),
            text_encoder_parameters: text_encoder.parameters() + second.as_ref().map_or(0, |s| s.encoder.parameters()),
            latent_channels: vae.latent_channels(),
            text_max_tokens: text_encoder.max_positions(),
        };
        Ok(TextToImage {
            name,
            dir: dir.to_path_buf(),
            tokenizer,
            pad,
            text_encoder,
            second,
            unet,
            vae,
            scheduler_config,
            default_scheduler,
            force_zeros_for_empty_prompt,
            info,
        })
    }

    pub fn info(&self) -> &TextToImageInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks a request and fills in the model's defaults.
    pub fn resolve(&self, req: &ImagineRequest) -> Result<ImagineSettings> {
        if req.prompt.trim().is_empty() {
            return Err(Error::invalid("prompt", "the prompt is empty; describe the image to generate"));
        }
        let width = req.width.unwrap_or(self.info.default_width);
        let height = req.height.unwrap_or(self.info.default_height);
        for (what, v) in [("width", width), ("height", height)] {
            let scale = self.vae.scale();
            if v == 0 || v % scale != 0 {
                return Err(Error::invalid(what, format!("{v} is not a positive multiple of {scale}")));
            }
            if v > MAX_SIDE {
                return Err(Error::invalid(what, format!("{v} is larger than the {MAX_SIDE}-pixel limit")));
            }
        }
        let steps = req.steps.unwrap_or(self.info.default_steps);
        if steps == 0 || steps > MAX_STEPS {
            return Err(Error::invalid("steps", format!("{steps} steps; use 1 to {MAX_STEPS}")));
        }
        let guidance = req.guidance.unwrap_or(self.info.default_guidance);
        if !guidance.is_finite() || !(0.0..=MAX_GUIDANCE).contains(&guidance) {
            return Err(Error::invalid("guidance", format!("{guidance}; use 0 to {MAX_GUIDANCE} (0 or 1 turns guidance off)")));
        }
        let scheduler = req.scheduler.unwrap_or(self.default_scheduler);
        // Build it once here so a schedule the config cannot give fails before any work.
        Scheduler::new(scheduler, &self.scheduler_config, steps, 0.0)?;
        Ok(ImagineSettings {
            model: self.name.clone(),
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone().filter(|n| !n.is_empty()),
            width,
            height,
            steps,
            guidance,
            scheduler: scheduler.name().to_string(),
            seed: req.seed.unwrap_or_else(random_seed),
        })
    }

    /// Generates the image `settings` describe (from [`TextToImage::resolve`]).
    /// `progress` hears of each stage; an error it returns stops the run and is returned.
    pub fn generate(&self, settings: &ImagineSettings, progress: &mut dyn FnMut(Progress) -> Result<()>) -> Result<GeneratedImage> {
        let kind: SchedulerKind = settings.scheduler.parse()?;
        let mut scheduler = Scheduler::new(kind, &self.scheduler_config, settings.steps, 0.0)?;
        let mut rng = NoiseRng::new(settings.seed);
        let scale = self.vae.scale();
        let shape = [1, self.vae.latent_channels(), settings.height / scale, settings.width / scale];
        let latents = (rng.randn(&shape)? * scheduler.init_noise_sigma())?;
        let t0 = Instant::now();
        let cond = self.encode_prompt(settings)?;
        let encode_s = t0.elapsed().as_secs_f64();
        progress(Progress::Encoded { total: settings.steps })?;
        let t1 = Instant::now();
        let latents = self.denoise(&cond, latents, &mut scheduler, &mut rng, settings.guidance, progress)?;
        let denoise_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let rgb = self.decode(&latents)?;
        let decode_s = t2.elapsed().as_secs_f64();
        progress(Progress::Decoded)?;
        Ok(GeneratedImage {
            width: settings.width,
            height: settings.height,
            rgb,
            settings: settings.clone(),
            times: StageTimes { encode_s, denoise_s, decode_s },
        })
    }

    /// Runs the denoising loop from the given starting latents (already scaled by the
    /// scheduler's initial sigma) and returns the final latents. Public so that tests can
    /// start from the latents a reference run used.
    pub fn denoise_from(&self, settings: &ImagineSettings, latents: Tensor) -> Result<Tensor> {
        let kind: SchedulerKind = settings.scheduler.parse()?;
        let mut scheduler = Scheduler::new(kind, &self.scheduler_config, settings.steps, 0.0)?;
        let mut rng = NoiseRng::new(settings.seed);
        let latents = (latents * scheduler.init_noise_sigma())?;
        let cond = self.encode_prompt(settings)?;
        self.denoise(&cond, latents, &mut scheduler, &mut rng, settings.guidance, &mut |_| Ok(()))
    }

    /// The VAE's image for final latents, as diffusers' `output_type="np"` floats in [0, 1]
    /// (`[1, 3, H, W]`).
    pub fn decode_float(&self, latents: &Tensor) -> Result<Tensor> {
        let image = self.vae.decode(&(latents / self.vae.scaling_factor())?)?;
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    fn decode(&self, latents: &Tensor) -> Result<Vec<u8>> {
        let image = self.decode_float(latents)?;
        // [1, 3, H, W] -> H, W, 3 bytes; numpy's round() is half-to-even.
        let hwc = image.squeeze(0)?.permute((1, 2, 0))?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(hwc.iter().map(|v| (v * 255.0).round_ties_even() as u8).collect())
    }

    fn denoise(
        &self,
        cond: &Conditioning,
        mut latents: Tensor,
        scheduler: &mut Scheduler,
        rng: &mut NoiseRng,
        guidance: f64,
        progress: &mut dyn FnMut(Progress) -> Result<()>,
    ) -> Result<Tensor> {
        let cfg = cond.guided;
        let total = scheduler.timesteps().len();
        for step in 0..total {
            let t = scheduler.timesteps()[step];
            let input = if cfg { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let input = scheduler.scale_model_input(&input, step)?;
            let pred = self.unet.forward(&input, t, &cond.hidden, cond.added.as_ref())?;
            let pred = if cfg {
                let uncond = pred.narrow(0, 0, 1)?;
                let text = pred.narrow(0, 1, 1)?;
                (&uncond + ((text - &uncond)? * guidance)?)?
            } else {
                pred
            };
            let noise = if scheduler.needs_noise() { Some(rng.randn(latents.dims())?) } else { None };
            latents = scheduler.step(&pred, step, &latents, noise.as_ref())?;
            progress(Progress::Step { done: step + 1, total })?;
        }
        Ok(latents)
    }

    /// `text` as the 77 padded ids diffusers feeds the encoder.
    fn ids(tok: &Tokenizer, encoder: &ClipTextModel, pad: u32, text: &str) -> Result<Vec<u32>> {
        let (ids, _) = tok.encode_fixed(text, encoder.max_positions(), pad)?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= encoder.vocab_size()) {
            return Err(Error::format(
                "tokenizer",
                format!("token id {bad} is outside the text encoder's vocabulary of {}", encoder.vocab_size()),
            ));
        }
        Ok(ids)
    }

    /// The UNet's text conditioning for the prompt (and, with guidance, the negative prompt
    /// first, as diffusers batches them).
    pub fn encode_prompt(&self, settings: &ImagineSettings) -> Result<Conditioning> {
        let guided = settings.guidance > 1.0;
        let negative = settings.negative_prompt.clone().unwrap_or_default();
        // The second encoder is there exactly for SDXL.
        match &self.second {
            None => {
                let texts: Vec<&str> = if guided { vec![&negative, &settings.prompt] } else { vec![&settings.prompt] };
                let ids = texts
                    .iter()
                    .map(|t| Self::ids(&self.tokenizer, &self.text_encoder, self.pad, t))
                    .collect::<Result<Vec<_>>>()?;
                let out = self.text_encoder.forward(&ids)?;
                Ok(Conditioning { hidden: out.last_hidden_state, added: None, guided })
            }
            Some(second) => {
                let encode = |text: &str| -> Result<(Tensor, Tensor)> {
                    let a = self.text_encoder.forward(&[Self::ids(&self.tokenizer, &self.text_encoder, self.pad, text)?])?;
                    let b = second.encoder.forward(&[Self::ids(&second.tokenizer, &second.encoder, second.pad, text)?])?;
                    let pooled = b
                        .text_embeds
                        .ok_or_else(|| Error::format(&self.dir, "text_encoder_2 has no text_projection (CLIPTextModelWithProjection)"))?;
                    Ok((Tensor::cat(&[&a.penultimate, &b.penultimate], 2)?, pooled))
                };
                let (hidden, pooled) = encode(&settings.prompt)?;
                let (h, w) = (settings.height as f32, settings.width as f32);
                let time_ids = Tensor::new(&[[h, w, 0.0, 0.0, h, w]], &Device::Cpu)?;
                let (hidden, text_embeds, time_ids) = if guided {
                    let (neg_hidden, neg_pooled) = if settings.negative_prompt.is_none() && self.force_zeros_for_empty_prompt {
                        (hidden.zeros_like()?, pooled.zeros_like()?)
                    } else {
                        encode(&negative)?
                    };
                    (
                        Tensor::cat(&[&neg_hidden, &hidden], 0)?,
                        Tensor::cat(&[&neg_pooled, &pooled], 0)?,
                        Tensor::cat(&[&time_ids, &time_ids], 0)?,
                    )
                } else {
                    (hidden, pooled, time_ids)
                };
                Ok(Conditioning { hidden, added: Some(AddedCond { text_embeds, time_ids }), guided })
            }
        }
    }
}

/// What the UNet is conditioned on: `[b, 77, cross_dim]` text states (b = 2 with guidance,
/// negative first) and SDXL's pooled text and size embeddings.
pub struct Conditioning {
    pub hidden: Tensor,
    pub added: Option<AddedCond>,
    pub guided: bool,
}
