//! LoRA adapters: which linear layers get one (by Hugging Face module-name suffix, as PEFT's
//! `target_modules`), how they are initialised (PEFT's defaults: `A` Kaiming-uniform, `B`
//! zero, so a fresh adapter leaves the model unchanged), and attaching them to a model.

use candle_core::{DType, Device, Tensor, Var};
use plinth_core::{Error, Result};
use plinth_models::Decoder;
use rand::{Rng, SeedableRng};

/// PEFT's `LoraConfig` fields that plinth uses.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module-name suffixes (`q_proj`, `mlp.down_proj`, ...).
    pub target_modules: Vec<String>,
}

/// Every attention and MLP projection of a Llama-family model.
pub const DEFAULT_TARGETS: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, target_modules: DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect() }
    }
}

impl LoraConfig {
    /// PEFT's scaling `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    fn targets(&self, name: &str) -> bool {
        self.target_modules.iter().any(|t| name == t || name.ends_with(&format!(".{t}")))
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::invalid("--rank", "must be at least 1"));
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            return Err(Error::invalid("--alpha", format!("must be positive, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid("--dropout", format!("must be in [0, 1), got {}", self.dropout)));
        }
        if self.target_modules.is_empty() {
            return Err(Error::invalid("--target-modules", "names no module"));
        }
        Ok(())
    }
}

/// One adapted layer.
#[derive(Debug, Clone)]
pub struct LoraEntry {
    /// Hugging Face module name, e.g. `model.layers.0.self_attn.q_proj`.
    pub name: String,
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
}

/// The adapters of one model.
#[derive(Debug, Clone)]
pub struct LoraSet {
    pub config: LoraConfig,
    pub entries: Vec<LoraEntry>,
}

impl LoraSet {
    /// Fresh adapters for every targeted layer of `model`, initialised as PEFT does
    /// (`A ~ U(-1/sqrt(in), 1/sqrt(in))`, i.e. Kaiming-uniform with a = sqrt(5); `B = 0`),
    /// from `seed`.
    pub fn init(model: &dyn Decoder, config: LoraConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut entries = Vec::new();
        for (name, lin) in model.linear_layers() {
            if !config.targets(&name) {
                continue;
            }
            let (out, inp) = lin.dims();
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..config.r * inp).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (config.r, inp), &Device::Cpu)?)?;
            let b = Var::from_tensor(&Tensor::zeros((out, config.r), DType::F32, &Device::Cpu)?)?;
            entries.push(LoraEntry { name, a, b });
        }
        Self::checked(model, config, entries)
    }

    /// Wraps loaded matrices (PEFT files), checking that every one names a layer of `model`.
    pub fn from_entries(model: &dyn Decoder, config: LoraConfig, entries: Vec<LoraEntry>) -> Result<Self> {
        let names: Vec<String> = model.linear_layers().into_iter().map(|(n, _)| n).collect();
        if let Some(e) = entries.iter().find(|e| !names.contains(&e.name)) {
            return Err(Error::invalid("adapter", format!("it adapts '{}', which this model does not have", e.name)));
        }
        Self::checked(model, config, entries)
    }

    fn checked(model: &dyn Decoder, config: LoraConfig, entries: Vec<LoraEntry>) -> Result<Self> {
        if entries.is_empty() {
            let arch = &model.info().architecture;
            return Err(Error::invalid(
                "--target-modules",
                format!("no linear layer of this {arch} model matches {:?} (LoRA supports the Llama family so far)", config.target_modules),
            ));
        }
        Ok(LoraSet { config, entries })
    }

    /// Attaches every adapter to its layer of `model`.
    pub fn attach(&self, model: &dyn Decoder) -> Result<()> {
        let layers = model.linear_layers();
        for e in &self.entries {
            let (_, lin) = layers.iter().find(|(n, _)| *n == e.name).ok_or_else(|| Error::invalid("adapter", format!("no layer '{}'", e.name)))?;
            lin.set_lora(Some(plinth_models::layers::Lora { a: e.a.as_tensor().clone(), b: e.b.as_tensor().clone(), scale: self.config.scale(), dropout: self.config.dropout as f32 }))?;
        }
        Ok(())
    }

    /// Installs the adapters in serving slot `slot` of `model`: sequences whose KV cache names
    /// that slot run with them, others without (one batch may mix them).
    pub fn install(&self, model: &dyn Decoder, slot: usize) -> Result<()> {
        let layers = model.linear_layers();
        for e in &self.entries {
            let (_, lin) = layers.iter().find(|(n, _)| *n == e.name).ok_or_else(|| Error::invalid("adapter", format!("no layer '{}'", e.name)))?;
            // Serving never drops out (and copies are not variables).
            lin.set_slot(slot, Some(plinth_models::layers::Lora { a: e.a.as_tensor().detach(), b: e.b.as_tensor().detach(), scale: self.config.scale(), dropout: 0.0 }))?;
        }
        Ok(())
    }

    /// Empties serving slot `slot` of every layer of `model`.
    pub fn uninstall(model: &dyn Decoder, slot: usize) -> Result<()> {
        model.linear_layers().iter().try_for_each(|(_, l)| l.set_slot(slot, None))
    }

    /// Removes every adapter from `model`.
    pub fn detach(model: &dyn Decoder) -> Result<()> {
        model.linear_layers().iter().try_for_each(|(_, l)| l.set_lora(None))
    }

    /// The trainable variables, A then B for each layer.
    pub fn vars(&self) -> Vec<&Var> {
        self.entries.iter().flat_map(|e| [&e.a, &e.b]).collect()
    }

    /// Trainable parameter count.
    pub fn parameters(&self) -> usize {
        self.entries.iter().map(|e| e.a.elem_count() + e.b.elem_count()).sum()
    }
}
