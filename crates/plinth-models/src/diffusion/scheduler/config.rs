//! `scheduler/scheduler_config.json` as diffusers writes it: the keys the three supported
//! schedulers read, parsed and range-checked. Keys whose default differs between diffusers'
//! scheduler classes stay `Option` here and are resolved per kind by [`super::Scheduler::new`].

use std::path::{Path, PathBuf};

use plinth_core::{Error, Result};
use serde_json::{Map, Value};

use super::SchedulerKind;

/// Largest `num_train_timesteps` accepted: the schedule arrays are that long, and no released
/// model trains with more than 1000.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    /// Glide's cosine schedule (`betas_for_alpha_bar`, capped at 0.999).
    SquaredcosCapV2,
}

/// What the UNet predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are spread over the training range (Lin et al. 2023, table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

/// The scheduler part of a diffusers checkpoint. Fields are public so that a caller can
/// override one (say, `timestep_spacing` for a Turbo model) before building a scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The file it came from (named in errors); `scheduler_config.json` when built from a value.
    pub source: PathBuf,
    /// `_class_name`, e.g. `EulerDiscreteScheduler`.
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    /// `None`: the class default (linspace for the Euler schedulers, leading for DDIM).
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    /// DDIM only; `None` means diffusers' default `true`.
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// DDIM only; `None` means diffusers' default `true`.
    pub set_alpha_to_one: Option<bool>,
    /// Settings plinth does not implement, kept so that building a scheduler of a kind that
    /// would read them fails with a clear message instead of silently differing from diffusers.
    pub thresholding: bool,
    pub interpolation_type: String,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub timestep_type: String,
    pub final_sigmas_type: String,
}

impl Default for SchedulerConfig {
    /// diffusers' constructor defaults (shared by the three classes).
    fn default() -> Self {
        SchedulerConfig {
            source: PathBuf::from("scheduler_config.json"),
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            clip_sample: None,
            clip_sample_range: 1.0,
            set_alpha_to_one: None,
            thresholding: false,
            interpolation_type: "linear".into(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            timestep_type: "discrete".into(),
            final_sigmas_type: "zero".into(),
        }
    }
}

impl SchedulerConfig {
    /// Reads `scheduler_config.json`; unreadable -> `Error::Io`, not JSON or wrong types ->
    /// `Error::Format`, values plinth does not implement -> `Error::Unsupported`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        Self::parse(&v, path)
    }

    /// Parses an already-read config (errors name `scheduler_config.json`).
    pub fn from_json(v: &Value) -> Result<Self> {
        Self::parse(v, Path::new("scheduler_config.json"))
    }

    /// The kind diffusers would run for `_class_name`, or `None` for classes plinth does not
    /// implement (PNDM, LMS, DPM-Solver, ...): the caller then picks a supported kind, which
    /// reads the same betas.
    pub fn default_kind(&self) -> Option<SchedulerKind> {
        match self.class_name.as_deref()? {
            "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            _ => None,
        }
    }

    fn parse(v: &Value, path: &Path) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| Error::format(path, "scheduler config is not a JSON object"))?;
        let r = Reader { obj, path };
        let d = SchedulerConfig::default();
        let cfg = SchedulerConfig {
            source: path.to_path_buf(),
            class_name: r.string("_class_name")?,
            num_train_timesteps: r.usize("num_train_timesteps")?.unwrap_or(d.num_train_timesteps),
            beta_start: r.f64("beta_start")?.unwrap_or(d.beta_start),
            beta_end: r.f64("beta_end")?.unwrap_or(d.beta_end),
            beta_schedule: match r.string("beta_schedule")?.as_deref() {
                None | Some("linear") => BetaSchedule::Linear,
                Some("scaled_linear") => BetaSchedule::ScaledLinear,
                Some("squaredcos_cap_v2") => BetaSchedule::SquaredcosCapV2,
                Some(o) => return Err(r.unsupported("beta_schedule", o, "linear, scaled_linear, squaredcos_cap_v2")),
            },
            prediction_type: match r.string("prediction_type")?.as_deref() {
                None | Some("epsilon") => PredictionType::Epsilon,
                Some("v_prediction") => PredictionType::VPrediction,
                Some("sample") => PredictionType::Sample,
                Some(o) => return Err(r.unsupported("prediction_type", o, "epsilon, v_prediction, sample")),
            },
            timestep_spacing: match r.string("timestep_spacing")?.as_deref() {
                None => None,
                Some("leading") => Some(TimestepSpacing::Leading),
                Some("linspace") => Some(TimestepSpacing::Linspace),
                Some("trailing") => Some(TimestepSpacing::Trailing),
                Some(o) => return Err(r.unsupported("timestep_spacing", o, "leading, linspace, trailing")),
            },
            steps_offset: r.usize("steps_offset")?.unwrap_or(d.steps_offset),
            rescale_betas_zero_snr: r.bool("rescale_betas_zero_snr")?.unwrap_or(false),
            clip_sample: r.bool("clip_sample")?,
            clip_sample_range: r.f64("clip_sample_range")?.unwrap_or(d.clip_sample_range),
            set_alpha_to_one: r.bool("set_alpha_to_one")?,
            thresholding: r.bool("thresholding")?.unwrap_or(false),
            interpolation_type: r.string("interpolation_type")?.unwrap_or(d.interpolation_type),
            use_karras_sigmas: r.bool("use_karras_sigmas")?.unwrap_or(false),
            use_exponential_sigmas: r.bool("use_exponential_sigmas")?.unwrap_or(false),
            use_beta_sigmas: r.bool("use_beta_sigmas")?.unwrap_or(false),
            timestep_type: r.string("timestep_type")?.unwrap_or(d.timestep_type),
            final_sigmas_type: r.string("final_sigmas_type")?.unwrap_or(d.final_sigmas_type),
        };
        if obj.get("trained_betas").is_some_and(|b| !b.is_null()) {
            return Err(Error::unsupported(path, "scheduler config: trained_betas (explicit beta arrays)"));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Range checks that hold whatever the kind; also run by `Scheduler::new`, since the
    /// fields are public and may have been edited.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::format(&self.source, what));
        if self.num_train_timesteps < 2 || self.num_train_timesteps > MAX_TRAIN_TIMESTEPS {
            return bad(format!("num_train_timesteps {} outside 2..={MAX_TRAIN_TIMESTEPS}", self.num_train_timesteps));
        }
        if self.beta_schedule != BetaSchedule::SquaredcosCapV2 {
            let ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
            if !ok(self.beta_start) || !ok(self.beta_end) {
                return bad(format!(
                    "beta_start {} and beta_end {} must lie in (0, 1)",
                    self.beta_start, self.beta_end
                ));
            }
        }
        if self.steps_offset >= self.num_train_timesteps {
            return bad(format!(
                "steps_offset {} not below num_train_timesteps {}",
                self.steps_offset, self.num_train_timesteps
            ));
        }
        if !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0) {
            return bad(format!("clip_sample_range {} must be positive", self.clip_sample_range));
        }
        Ok(())
    }
}

/// Typed access to optional keys; `null` counts as absent, as in diffusers.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn wrong(&self, key: &str, expected: &str, v: &Value) -> Error {
        Error::format(self.path, format!("scheduler config: {key} should be {expected}, found {v}"))
    }
    fn string(&self, key: &str) -> Result<Option<String>> {
        self.get(key).map(|v| v.as_str().map(str::to_owned).ok_or_else(|| self.wrong(key, "a string", v))).transpose()
    }
    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.wrong(key, "a number", v))).transpose()
    }
    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }
    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.wrong(key, "true or false", v))).transpose()
    }
    fn unsupported(&self, key: &str, found: &str, expected: &str) -> Error {
        Error::unsupported(self.path, format!("scheduler config: {key} \"{found}\" (plinth supports {expected})"))
    }
}
