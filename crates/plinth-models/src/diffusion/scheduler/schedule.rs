//! The noise schedule as numbers: betas, cumulative alphas, inference timesteps and Euler
//! sigmas, computed with the precision diffusers uses at each stage so that the values match
//! its to a few float32 ulps. diffusers builds betas and `alphas_cumprod` as float32 torch
//! tensors (torch accumulates `cumprod` in double) and the timesteps and sigma interpolation
//! in float64 numpy, so the functions here switch between `f32` and `f64` at the same places.

use super::config::{BetaSchedule, SchedulerConfig};

/// torch's `linspace` on float32: the step in f32, the first half counted up from `start`,
/// the second half down from `end`, each value one fused multiply-add (what torch's
/// vectorized CPU kernel computes on FMA hardware; checked bit for bit against torch 2.15).
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((n - i - 1) as f32, end) })
        .collect()
}

/// torch.cumprod over float32: the running product in f64, each output rounded to f32.
fn cumprod_f32(xs: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    xs.iter()
        .map(|&x| {
            acc *= x as f64;
            acc as f32
        })
        .collect()
}

/// Glide's cosine schedule (`betas_for_alpha_bar`, alpha_transform_type "cosine").
fn squaredcos_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr` (Lin et al. 2023, algorithm 1), in float32 like diffusers.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let sqrt: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let (s0, st) = (sqrt[0], sqrt[sqrt.len() - 1]);
    let scale = s0 / (s0 - st);
    let bar: Vec<f32> = sqrt
        .iter()
        .map(|s| {
            let s = (s - st) * scale;
            s * s
        })
        .collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// `alphas_cumprod` over the training timesteps (float32, as diffusers stores it), before
/// any per-class adjustment.
pub(crate) fn alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f32> {
    let n = cfg.num_train_timesteps;
    let mut betas = match cfg.beta_schedule {
        BetaSchedule::Linear => torch_linspace_f32(cfg.beta_start as f32, cfg.beta_end as f32, n),
        BetaSchedule::ScaledLinear => torch_linspace_f32(cfg.beta_start.sqrt() as f32, cfg.beta_end.sqrt() as f32, n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        BetaSchedule::SquaredcosCapV2 => squaredcos_betas(n),
    };
    if cfg.rescale_betas_zero_snr {
        betas = rescale_zero_terminal_snr(&betas);
    }
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    cumprod_f32(&alphas)
}

/// numpy.linspace(0, stop, n) in f64: `i * step`, the last element exactly `stop`.
pub(crate) fn numpy_linspace(stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = stop / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    v[n - 1] = stop;
    v
}

/// `np.arange(train, 0, -train / n).round() - 1`, the "trailing" timesteps (descending).
/// numpy fills `start + i * delta` with `delta` recovered as `(start + step) - start`, and
/// rounds half to even. numpy's length `ceil(train / ratio)` is n + 1 for some n (61, 103,
/// ...), which makes diffusers run an extra step at timestep -1; plinth keeps the n steps.
pub(crate) fn trailing(train: usize, n: usize) -> Vec<f64> {
    let start = train as f64;
    let ratio = train as f64 / n as f64;
    let delta = (start - ratio) - start;
    (0..n).map(|i| (start + i as f64 * delta).round_ties_even() - 1.0).collect()
}

/// `(np.arange(n) * (train // n)).round()[::-1] + steps_offset`, the "leading" timesteps.
pub(crate) fn leading(train: usize, n: usize, offset: usize) -> Vec<f64> {
    let ratio = train / n;
    (0..n).rev().map(|i| (i * ratio + offset) as f64).collect()
}

/// numpy.interp of `x` on the grid 0, 1, .., len-1 (clamped at both ends), in f64.
pub(crate) fn interp_grid(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    let slope = fp[j + 1] - fp[j];
    slope * (x - j as f64) + fp[j]
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` as float32 torch computes it.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_keeps_n_steps_where_numpy_overshoots() {
        // numpy's arange(1000, 0, -1000/61) has 62 elements; the 62nd would be timestep -1.
        let t = trailing(1000, 61);
        assert_eq!(t.len(), 61);
        assert_eq!(t[0], 999.0);
        assert!(t.iter().all(|&x| x >= 0.0));
        assert_eq!(trailing(1000, 1), vec![999.0]);
        assert_eq!(trailing(1000, 4), vec![999.0, 749.0, 499.0, 249.0]);
    }

    #[test]
    fn leading_and_linspace() {
        assert_eq!(leading(1000, 4, 1), vec![751.0, 501.0, 251.0, 1.0]);
        assert_eq!(numpy_linspace(999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(numpy_linspace(999.0, 1), vec![0.0]);
    }

    #[test]
    fn interp_clamps_and_interpolates() {
        let fp = [1.0, 3.0, 7.0];
        assert_eq!(interp_grid(-1.0, &fp), 1.0);
        assert_eq!(interp_grid(0.5, &fp), 2.0);
        assert_eq!(interp_grid(1.0, &fp), 3.0);
        assert_eq!(interp_grid(5.0, &fp), 7.0);
    }
}
