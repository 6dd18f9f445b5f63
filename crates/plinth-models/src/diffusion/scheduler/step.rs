//! The per-step updates of the three schedulers on candle tensors. The scalar coefficients
//! are computed in f32 and the tensor ops applied in the order diffusers applies them (it
//! works on float32 torch tensors, with 0-d float32 tensors for sigma and alpha), so results
//! agree with diffusers' to float32 rounding. Divisions stay divisions (not multiplications by
//! a reciprocal) for the same reason.

use candle_core::{DType, Tensor};
use plinth_core::{Error, Result};

use super::PredictionType;

/// `x / s` elementwise, rounded like torch's tensor-by-scalar division.
fn div(x: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, x.device())?;
    Ok(x.broadcast_div(&s)?)
}

/// `x * s`; candle's affine computes `x * s + 0` in f32, the same rounding as torch's mul.
fn mul(x: &Tensor, s: f32) -> Result<Tensor> {
    Ok(x.affine(s as f64, 0.0)?)
}

pub(super) fn check_shapes(model_output: &Tensor, sample: &Tensor, noise: Option<&Tensor>) -> Result<()> {
    let want = sample.dims();
    for (name, t) in [("model_output", Some(model_output)), ("noise", noise)] {
        if let Some(t) = t {
            if t.dims() != want {
                return Err(Error::Shape { name: name.into(), expected: want.to_vec(), found: t.dims().to_vec() });
            }
        }
    }
    Ok(())
}

fn f32s(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}

pub(super) fn euler_scale_input(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    div(sample, (sigma * sigma + 1.0).sqrt())
}

/// diffusers' x0 estimate for the Euler kinds at noise level `sigma`.
fn euler_x0(model_output: &Tensor, sample: &Tensor, sigma: f32, prediction: PredictionType) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Epsilon => (sample - mul(model_output, sigma)?)?,
        PredictionType::VPrediction => {
            let c = sigma * sigma + 1.0;
            let c_out = -sigma / c.sqrt();
            (mul(model_output, c_out)? + div(sample, c)?)?
        }
        PredictionType::Sample => model_output.clone(),
    })
}

/// `EulerDiscreteScheduler.step` with diffusers' defaults (`s_churn` 0, so no noise).
pub(super) fn euler(
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
    sigma_next: f32,
    prediction: PredictionType,
) -> Result<Tensor> {
    let out_dtype = model_output.dtype();
    let (mo, x) = (f32s(model_output)?, f32s(sample)?);
    let x0 = euler_x0(&mo, &x, sigma, prediction)?;
    let derivative = div(&(&x - x0)?, sigma)?;
    let prev = (&x + mul(&derivative, sigma_next - sigma)?)?;
    Ok(prev.to_dtype(out_dtype)?)
}

/// `EulerAncestralDiscreteScheduler.step`: an Euler step down to `sigma_down`, then noise
/// of standard deviation `sigma_up` added back, so the marginal lands on `sigma_to`.
pub(super) fn euler_ancestral(
    model_output: &Tensor,
    sample: &Tensor,
    sigma_from: f32,
    sigma_to: f32,
    prediction: PredictionType,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    let noise = noise.ok_or_else(|| Error::invalid("scheduler step", "euler-a needs noise"))?;
    let out_dtype = model_output.dtype();
    let (mo, x, n) = (f32s(model_output)?, f32s(sample)?, f32s(noise)?);
    let x0 = euler_x0(&mo, &x, sigma_from, prediction)?;
    let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
    let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
    let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
    let derivative = div(&(&x - x0)?, sigma_from)?;
    let prev = (&x + mul(&derivative, sigma_down - sigma_from)?)?;
    let prev = (prev + mul(&n, sigma_up)?)?;
    Ok(prev.to_dtype(out_dtype)?)
}

/// The scalars of one DDIM step (Song et al. 2020, eq. 12).
pub(super) struct DdimParams {
    pub a_t: f32,
    pub a_prev: f32,
    pub eta: f32,
    pub clip: Option<f32>,
    pub prediction: PredictionType,
}

/// `DDIMScheduler.step` (no thresholding, `use_clipped_model_output` false).
pub(super) fn ddim(model_output: &Tensor, sample: &Tensor, p: &DdimParams, noise: Option<&Tensor>) -> Result<Tensor> {
    let out_dtype = model_output.dtype();
    let (mo, x) = (f32s(model_output)?, f32s(sample)?);
    let beta_t = 1.0 - p.a_t;
    let (sa, sb) = (p.a_t.sqrt(), beta_t.sqrt());
    let (x0, eps) = match p.prediction {
        PredictionType::Epsilon => (div(&(&x - mul(&mo, sb)?)?, sa)?, mo.clone()),
        PredictionType::Sample => (mo.clone(), div(&(&x - mul(&mo, sa)?)?, sb)?),
        PredictionType::VPrediction => ((mul(&x, sa)? - mul(&mo, sb)?)?, (mul(&mo, sa)? + mul(&x, sb)?)?),
    };
    let x0 = match p.clip {
        Some(r) => x0.clamp(-r, r)?,
        None => x0,
    };
    let variance = ((1.0 - p.a_prev) / beta_t) * (1.0 - p.a_t / p.a_prev);
    let std_dev = p.eta * variance.sqrt();
    let direction = mul(&eps, (1.0 - p.a_prev - std_dev * std_dev).sqrt())?;
    let mut prev = (mul(&x0, p.a_prev.sqrt())? + direction)?;
    if p.eta > 0.0 {
        let noise = noise.ok_or_else(|| Error::invalid("scheduler step", "ddim with eta > 0 needs noise"))?;
        prev = (prev + mul(&f32s(noise)?, std_dev)?)?;
    }
    Ok(prev.to_dtype(out_dtype)?)
}
