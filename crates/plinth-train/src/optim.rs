//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay applied before the moment
//! update, bias-corrected moments, `eps` added to the square root), and gradient clipping by
//! global norm as `torch.nn.utils.clip_grad_norm_`. The state (moments and step count) is
//! plain tensors so that checkpoints can save and restore it.

use candle_core::{Tensor, Var};
use plinth_core::{Error, Result};

/// Hyper-parameters (torch's defaults except the learning rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Optimizer state for a fixed list of variables.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// First and second moments, one per variable, in the variables' order.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: &[&Var], config: AdamWConfig) -> Result<Self> {
        let zeros = |v: &&Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            config,
            step: 0,
            m: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update of every variable with its gradient, at learning rate `lr` (the schedule's
    /// value for this step).
    pub fn step(&mut self, vars: &[&Var], grads: &[Tensor], lr: f64) -> Result<()> {
        if vars.len() != grads.len() || vars.len() != self.m.len() {
            return Err(Error::invalid("optimizer", format!("{} variables, {} gradients, {} moments", vars.len(), grads.len(), self.m.len())));
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let p = var.as_tensor();
            let decayed = (p * (1.0 - lr * c.weight_decay))?;
            self.m[i] = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((&self.v[i] / bc2)?.sqrt()? + c.eps)?;
            let update = ((&self.m[i] / bc1)? / denom)?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Scales `grads` in place so that their global L2 norm is at most `max_norm`; returns the
/// norm before clipping (as torch's `clip_grad_norm_`, including its 1e-6).
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}
