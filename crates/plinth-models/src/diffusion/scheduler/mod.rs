//! Noise schedulers: the walk from pure noise to a clean latent, one UNet call per step.
//! Owns the three diffusers schedulers plinth runs — `EulerAncestralDiscreteScheduler`,
//! `EulerDiscreteScheduler` and `DDIMScheduler` — reproducing diffusers 0.42's numbers
//! (schedule in [`schedule`], config keys in [`config`], the per-step update in [`step`]).
//! Randomness is not drawn here: steps that need N(0,1) noise take it from the caller
//! (see `diffusion::noise`), which keeps a seed's image independent of scheduler internals.

pub mod config;
mod schedule;
mod step;

use std::str::FromStr;

use candle_core::Tensor;
use plinth_core::{Error, Result};

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};

/// A scheduler algorithm plinth implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `EulerAncestralDiscreteScheduler`: Euler steps plus fresh noise each step (SDXL-Turbo).
    EulerAncestral,
    /// `EulerDiscreteScheduler`: deterministic Euler steps (SD-Turbo).
    Euler,
    /// `DDIMScheduler`: deterministic for eta 0, stochastic for eta > 0 (SD 2.1).
    Ddim,
}

impl FromStr for SchedulerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "euler-a" | "euler_a" | "euler_ancestral" | "euler-ancestral" => Ok(SchedulerKind::EulerAncestral),
            "euler" => Ok(SchedulerKind::Euler),
            "ddim" => Ok(SchedulerKind::Ddim),
            _ => Err(Error::invalid("scheduler", format!("'{s}': expected one of euler-a, euler, ddim"))),
        }
    }
}

impl SchedulerKind {
    /// The name the CLI accepts and prints.
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerKind::EulerAncestral => "euler-a",
            SchedulerKind::Euler => "euler",
            SchedulerKind::Ddim => "ddim",
        }
    }

    pub fn all() -> &'static [SchedulerKind] {
        &[SchedulerKind::EulerAncestral, SchedulerKind::Euler, SchedulerKind::Ddim]
    }

    /// Whether this kind may need noise per step: always for Euler ancestral; for DDIM only
    /// when eta > 0 (ask [`Scheduler::needs_noise`] for the built scheduler).
    pub fn needs_noise(&self) -> bool {
        matches!(self, SchedulerKind::EulerAncestral | SchedulerKind::Ddim)
    }

    /// diffusers' `_class_name` for this kind.
    pub fn class_name(&self) -> &'static str {
        match self {
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The per-kind state `step` reads.
#[derive(Clone, Debug)]
enum State {
    /// Euler and Euler ancestral: sigmas (float32, as diffusers keeps them) with the final 0.
    Euler { sigmas: Vec<f32>, ancestral: bool },
    /// DDIM: `alphas_cumprod`, the cumulative alpha used after the last step, and the training
    /// stride `num_train_timesteps / steps` diffusers subtracts to find the previous timestep.
    Ddim { alphas_cumprod: Vec<f32>, final_alpha_cumprod: f32, stride: i64, eta: f32, clip: Option<f32> },
}

/// A scheduler set up for a number of inference steps: `timesteps()` gives what the UNet
/// receives at each step, `step` applies one update.
#[derive(Clone, Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    prediction: PredictionType,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    state: State,
}

/// The largest step count accepted regardless of the training range.
const MAX_STEPS: usize = 1000;

impl Scheduler {
    /// Builds `kind` from `cfg` for `steps` inference steps (1..=1000 and at most
    /// `num_train_timesteps`); `eta` is DDIM's noise weight in [0, 1] and must be 0 for the
    /// Euler kinds. Config values the kind would read but plinth does not implement are
    /// refused (`Error::Unsupported`) rather than ignored.
    pub fn new(kind: SchedulerKind, cfg: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        cfg.validate()?;
        if steps == 0 || steps > MAX_STEPS.min(cfg.num_train_timesteps) {
            return Err(Error::invalid(
                "steps",
                format!(
                    "{steps}: expected 1..={} (the scheduler was trained on {} timesteps)",
                    MAX_STEPS.min(cfg.num_train_timesteps),
                    cfg.num_train_timesteps
                ),
            ));
        }
        if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
            return Err(Error::invalid("eta", format!("{eta}: expected a number in [0, 1]")));
        }
        if eta != 0.0 && kind != SchedulerKind::Ddim {
            return Err(Error::invalid("eta", format!("{eta}: only the ddim scheduler takes eta")));
        }
        match kind {
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => Self::new_euler(kind, cfg, steps),
            SchedulerKind::Ddim => Self::new_ddim(cfg, steps, eta),
        }
    }

    fn new_euler(kind: SchedulerKind, cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported =
            |what: String| Err(Error::unsupported(&cfg.source, format!("{what} for the {kind} scheduler")));
        if kind == SchedulerKind::Euler {
            for (key, on) in [
                ("use_karras_sigmas", cfg.use_karras_sigmas),
                ("use_exponential_sigmas", cfg.use_exponential_sigmas),
                ("use_beta_sigmas", cfg.use_beta_sigmas),
            ] {
                if on {
                    return unsupported(format!("{key} true"));
                }
            }
            if cfg.interpolation_type != "linear" {
                return unsupported(format!("interpolation_type \"{}\" (only linear)", cfg.interpolation_type));
            }
            if cfg.timestep_type != "discrete" {
                return unsupported(format!("timestep_type \"{}\" (only discrete)", cfg.timestep_type));
            }
            if cfg.final_sigmas_type != "zero" {
                return unsupported(format!("final_sigmas_type \"{}\" (only zero)", cfg.final_sigmas_type));
            }
        } else if cfg.prediction_type == PredictionType::Sample {
            // diffusers raises NotImplementedError for this combination.
            return unsupported("prediction_type \"sample\"".into());
        }
        let train = cfg.num_train_timesteps;
        let mut alphas_cumprod = schedule::alphas_cumprod(cfg);
        if cfg.rescale_betas_zero_snr {
            // diffusers' Euler classes keep the last sigma finite this way.
            alphas_cumprod[train - 1] = 2f32.powi(-24);
        }
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        // diffusers keeps Euler timesteps as float32.
        let timesteps: Vec<f32> = match spacing {
            TimestepSpacing::Linspace => {
                schedule::numpy_linspace((train - 1) as f64, steps).into_iter().rev().map(|t| t as f32).collect()
            }
            TimestepSpacing::Leading => {
                schedule::leading(train, steps, cfg.steps_offset).into_iter().map(|t| t as f32).collect()
            }
            TimestepSpacing::Trailing => schedule::trailing(train, steps).into_iter().map(|t| t as f32).collect(),
        };
        let train_sigmas: Vec<f64> = schedule::train_sigmas(&alphas_cumprod).into_iter().map(f64::from).collect();
        let mut sigmas: Vec<f32> =
            timesteps.iter().map(|&t| schedule::interp_grid(t as f64, &train_sigmas) as f32).collect();
        sigmas.push(0.0);
        if sigmas.iter().any(|s| !s.is_finite()) {
            return Err(Error::format(&cfg.source, "scheduler config gives a non-finite noise level"));
        }
        let max = sigmas.iter().copied().fold(0.0f32, f32::max);
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        };
        Ok(Scheduler {
            kind,
            prediction: cfg.prediction_type,
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas: sigmas.iter().map(|&s| s as f64).collect(),
            init_noise_sigma: init_noise_sigma as f64,
            state: State::Euler { sigmas, ancestral: kind == SchedulerKind::EulerAncestral },
        })
    }

    fn new_ddim(cfg: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        if cfg.thresholding {
            return Err(Error::unsupported(&cfg.source, "thresholding true for the ddim scheduler"));
        }
        let train = cfg.num_train_timesteps;
        let alphas_cumprod = schedule::alphas_cumprod(cfg);
        let timesteps: Vec<f64> = match cfg.timestep_spacing.unwrap_or(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => schedule::numpy_linspace((train - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(f64::round_ties_even)
                .collect(),
            TimestepSpacing::Leading => schedule::leading(train, steps, cfg.steps_offset),
            TimestepSpacing::Trailing => schedule::trailing(train, steps),
        };
        if let Some(&t) = timesteps.iter().find(|&&t| t >= train as f64) {
            return Err(Error::invalid(
                "steps",
                format!(
                    "{steps} with steps_offset {} reaches timestep {t}, past the {train} trained",
                    cfg.steps_offset
                ),
            ));
        }
        if cfg.prediction_type == PredictionType::Epsilon
            && timesteps.iter().any(|&t| alphas_cumprod[t as usize] <= 0.0)
        {
            // Zero terminal SNR leaves no signal at the last timestep: an epsilon model's
            // x0 estimate divides by zero there (diffusers returns NaN).
            return Err(Error::unsupported(
                &cfg.source,
                "rescale_betas_zero_snr with prediction_type epsilon at the final timestep for the ddim scheduler",
            ));
        }
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) { 1.0 } else { alphas_cumprod[0] };
        let clip = cfg.clip_sample.unwrap_or(true).then_some(cfg.clip_sample_range as f32);
        Ok(Scheduler {
            kind: SchedulerKind::Ddim,
            prediction: cfg.prediction_type,
            timesteps,
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            state: State::Ddim {
                alphas_cumprod,
                final_alpha_cumprod,
                stride: (train / steps) as i64,
                eta: eta as f32,
                clip,
            },
        })
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// The timestep the UNet receives at each step (diffusers' `scheduler.timesteps`:
    /// float32 values for the Euler kinds, integers for DDIM).
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The Euler noise levels, one per step plus the final 0; empty for DDIM.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The standard deviation of the initial latent noise (multiply N(0,1) noise by it).
    pub fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    /// Number of steps, `timesteps().len()`.
    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// Whether `step` needs `noise`: Euler ancestral always, DDIM when eta > 0.
    pub fn needs_noise(&self) -> bool {
        match &self.state {
            State::Euler { ancestral, .. } => *ancestral,
            State::Ddim { eta, .. } => *eta > 0.0,
        }
    }

    fn check_step(&self, step: usize) -> Result<()> {
        if step >= self.timesteps.len() {
            return Err(Error::invalid(
                "scheduler step",
                format!("{step}: this scheduler has {} steps", self.timesteps.len()),
            ));
        }
        Ok(())
    }

    /// The UNet input at `step`: the latent divided by `sqrt(sigma^2 + 1)` for the Euler
    /// kinds, unchanged for DDIM.
    pub fn scale_model_input(&self, sample: &Tensor, step: usize) -> Result<Tensor> {
        self.check_step(step)?;
        match &self.state {
            State::Euler { sigmas, .. } => step::euler_scale_input(sample, sigmas[step]),
            State::Ddim { .. } => Ok(sample.clone()),
        }
    }

    /// One denoising step from step index `step` (0-based, in order). `noise` is N(0,1)
    /// shaped like `sample`, required when `needs_noise()`, else ignored. Returns the
    /// previous (less noisy) sample in `model_output`'s dtype, as diffusers does.
    pub fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.check_step(step)?;
        step::check_shapes(model_output, sample, if self.needs_noise() { noise } else { None })?;
        let noise = if self.needs_noise() {
            Some(noise.ok_or_else(|| {
                Error::invalid("scheduler step", format!("the {} scheduler needs noise at every step", self.kind))
            })?)
        } else {
            None
        };
        match &self.state {
            State::Euler { sigmas, ancestral } => {
                let (from, to) = (sigmas[step], sigmas[step + 1]);
                if *ancestral {
                    step::euler_ancestral(model_output, sample, from, to, self.prediction, noise)
                } else {
                    step::euler(model_output, sample, from, to, self.prediction)
                }
            }
            State::Ddim { alphas_cumprod, final_alpha_cumprod, stride, eta, clip } => {
                let t = self.timesteps[step] as i64;
                let prev_t = t - stride;
                let a_t = alphas_cumprod[t as usize];
                let a_prev = if prev_t >= 0 { alphas_cumprod[prev_t as usize] } else { *final_alpha_cumprod };
                let p = step::DdimParams { a_t, a_prev, eta: *eta, clip: *clip, prediction: self.prediction };
                step::ddim(model_output, sample, &p, noise)
            }
        }
    }
}
