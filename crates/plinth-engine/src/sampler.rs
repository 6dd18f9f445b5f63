//! The logits processor: turns one step's raw next-token logits into one token id.
//!
//! Owns the sampling knobs ([`SamplingParams`]) and their validation, and the pipeline
//! repetition penalty → temperature → top-k → softmax → top-p → min-p → draw. The order and
//! each rule follow llama.cpp and Hugging Face so that the same knobs give the same
//! distribution a user already knows from those tools.

use std::cmp::Ordering;

use plinth_core::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The knobs of the sampler. Missing fields deserialize to the defaults so that a request
/// may name only the knobs it cares about.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Divides the logits; 0 means greedy (argmax), deterministic.
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least this.
    pub top_p: Option<f32>,
    /// Drop tokens whose probability is below `min_p` times the top token's probability.
    pub min_p: Option<f32>,
    /// CTRL-style repetition penalty; 1.0 turns it off.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the penalty looks at; 0 turns it off.
    pub repeat_last_n: usize,
    /// Seed of the sampler's RNG.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults, except that the repetition penalty is off (as llama.cpp now ships it).
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.95),
            min_p: Some(0.05),
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 299_792_458,
        }
    }
}

impl SamplingParams {
    /// Argmax decoding with every filter off.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None, min_p: None, ..Self::default() }
    }

    /// Checks every knob; the error names the knob and the value it got.
    pub fn validate(&self) -> Result<()> {
        // Written as `!(ok)` so that NaN, for which every comparison is false, is rejected.
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(Error::invalid("temperature", format!("must be finite and >= 0, got {t}")));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top_k", "must be >= 1 (or unset to disable it), got 0"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid("top_p", format!("must be in (0, 1], got {p}")));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid("min_p", format!("must be in [0, 1], got {p}")));
            }
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::invalid(
                "repeat_penalty",
                format!("must be finite and > 0, got {r}"),
            ));
        }
        Ok(())
    }
}

/// What the filter stage decided: a token outright, or a draw among `cand`, which then holds
/// (id, unnormalised probability) pairs whose sum is the `f64`.
enum Pick {
    Fixed(u32),
    Draw(f64),
}

/// Samples token ids from logits under one [`SamplingParams`], with its own seeded RNG so
/// that a generation is reproducible from its seed alone.
pub struct LogitsProcessor {
    params: SamplingParams,
    rng: StdRng,
    /// (token id, value) of the tokens still in the running; the value is a scaled logit,
    /// later a probability. Kept across calls so the vocab-sized allocation happens once.
    cand: Vec<(u32, f32)>,
    /// Distinct recent ids for the repetition penalty, kept for the same reason.
    recent: Vec<u32>,
}

impl LogitsProcessor {
    /// Validates `params` and seeds the RNG from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self { params, rng, cand: Vec::new(), recent: Vec::new() })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `history` is prompt + generated ids, for the repetition penalty.
    /// The penalty is applied to `logits` in place, which spares a vocab-sized copy per token.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        match self.filter(logits, history) {
            Pick::Fixed(id) => id,
            Pick::Draw(total) => self.draw(total),
        }
    }

    /// The candidates that survive every filter with their renormalised probabilities,
    /// most likely first. Greedy decoding reports its one token with probability 1.
    /// Consumes no randomness, so it does not disturb the sequence `sample` draws.
    pub fn probs_after_filters(&mut self, logits: &[f32], history: &[u32]) -> Vec<(u32, f32)> {
        let mut logits = logits.to_vec();
        match self.filter(&mut logits, history) {
            Pick::Fixed(id) => vec![(id, 1.0)],
            Pick::Draw(total) => {
                let mut out: Vec<(u32, f32)> = (self.cand.iter())
                    .filter(|c| c.1 > 0.0)
                    .map(|&(id, p)| (id, (f64::from(p) / total) as f32))
                    .collect();
                out.sort_unstable_by(by_value_desc);
                out
            }
        }
    }

    fn filter(&mut self, logits: &mut [f32], history: &[u32]) -> Pick {
        self.apply_repeat_penalty(logits, history);
        let t = self.params.temperature;
        if t == 0.0 {
            return Pick::Fixed(argmax(logits));
        }

        // NaN and -inf can never be drawn, so they never enter the candidate list; that
        // also keeps the comparisons below total.
        self.cand.clear();
        self.cand.extend(
            (logits.iter().enumerate())
                .filter(|(_, v)| !v.is_nan() && **v != f32::NEG_INFINITY)
                .map(|(i, &v)| (i as u32, v / t)),
        );
        if self.cand.is_empty() {
            return Pick::Fixed(argmax(logits));
        }

        // Partition around the k-th instead of sorting the whole vocabulary (~50k ids).
        let mut sorted = false;
        if let Some(k) = self.params.top_k {
            if k < self.cand.len() {
                self.cand.select_nth_unstable_by(k - 1, by_value_desc);
                self.cand.truncate(k);
                self.cand.sort_unstable_by(by_value_desc);
                sorted = true;
            }
        }

        // A +inf logit, or a tiny temperature that overflowed the scaled logits, leaves no
        // meaningful distribution; argmax is the limit of sampling as temperature → 0.
        let max = self.cand.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
        if !max.is_finite() {
            return Pick::Fixed(argmax(logits));
        }
        // Subtracting the max keeps exp() in range; the max itself maps to exactly 1.
        let mut total = 0.0f64;
        for c in &mut self.cand {
            c.1 = (c.1 - max).exp();
            total += f64::from(c.1);
        }

        if let Some(p) = self.params.top_p.filter(|&p| p < 1.0) {
            if !sorted {
                self.cand.sort_unstable_by(by_value_desc);
            }
            // The tolerance keeps softmax rounding (0.79999995 vs 0.8) from pulling in one
            // more token than the user's threshold meant.
            let target = f64::from(p) * total - 1e-6 * total;
            let mut cum = 0.0f64;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                cum += f64::from(c.1);
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep.max(1));
            total = cum_sum(&self.cand);
        }

        if let Some(m) = self.params.min_p.filter(|&m| m > 0.0) {
            // Relative to the top token, so no renormalisation is needed first; the top
            // token always passes, so at least one candidate survives.
            let top = self.cand.iter().fold(0.0f32, |a, c| a.max(c.1));
            let threshold = m * top;
            self.cand.retain(|c| c.1 >= threshold);
            total = cum_sum(&self.cand);
        }

        Pick::Draw(total)
    }

    /// Inverse-CDF draw over `cand`. A strict `>` means a zero-probability candidate can
    /// never be chosen, even when the uniform sample is exactly 0.
    fn draw(&mut self, total: f64) -> u32 {
        let r = self.rng.random::<f64>() * total;
        let mut cum = 0.0f64;
        for &(id, p) in &self.cand {
            cum += f64::from(p);
            if cum > r {
                return id;
            }
        }
        // Only reached through rounding at the top end of the CDF.
        (self.cand.iter().rev().find(|c| c.1 > 0.0)).or(self.cand.first()).map_or(0, |c| c.0)
    }

    /// The CTRL rule: dividing a positive logit and multiplying a negative one both make the
    /// token less likely. Each distinct token is penalised once, however often it repeats.
    fn apply_repeat_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.params.repeat_penalty;
        if penalty == 1.0 || self.params.repeat_last_n == 0 {
            return;
        }
        let start = history.len().saturating_sub(self.params.repeat_last_n);
        self.recent.clear();
        self.recent.extend_from_slice(&history[start..]);
        self.recent.sort_unstable();
        self.recent.dedup();
        for &id in &self.recent {
            // Ids past the vocabulary (a history from another tokenizer) are ignored, not a panic.
            if let Some(v) = logits.get_mut(id as usize) {
                *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
            }
        }
    }
}

fn cum_sum(cand: &[(u32, f32)]) -> f64 {
    cand.iter().map(|c| f64::from(c.1)).sum()
}

/// Descending by value, ties broken by the lower id so results do not depend on the
/// unstable sort's whims.
fn by_value_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The index of the largest logit, lowest id on ties, skipping NaN; 0 when nothing is
/// above -inf (so a broken step still yields a valid id instead of a panic).
fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() || v == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only temperature on: the plain softmax distribution.
    fn plain(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, top_k: None, top_p: None, min_p: None, ..Default::default() }
    }

    fn ln(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn draws(params: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut lp = LogitsProcessor::new(params).unwrap();
        (0..n).map(|_| lp.sample(&mut logits.to_vec(), &[])).collect()
    }

    fn ids(probs: &[(u32, f32)]) -> Vec<u32> {
        probs.iter().map(|p| p.0).collect()
    }

    fn wide_logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37 % 101) as f32) / 25.0).collect()
    }

    #[test]
    fn defaults_and_greedy_preset() {
        let d = SamplingParams::default();
        assert_eq!(
            (d.temperature, d.top_k, d.top_p, d.min_p),
            (0.8, Some(40), Some(0.95), Some(0.05))
        );
        assert_eq!((d.repeat_penalty, d.repeat_last_n, d.seed), (1.0, 64, 299_792_458));
        let g = SamplingParams::greedy();
        assert_eq!((g.temperature, g.top_k, g.top_p, g.min_p), (0.0, None, None, None));
        d.validate().unwrap();
        g.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_values_naming_param_and_value() {
        let d = SamplingParams::default;
        let cases: Vec<(SamplingParams, &str, &str)> = vec![
            (SamplingParams { temperature: -0.5, ..d() }, "temperature", "-0.5"),
            (SamplingParams { temperature: f32::NAN, ..d() }, "temperature", "NaN"),
            (SamplingParams { temperature: f32::INFINITY, ..d() }, "temperature", "inf"),
            (SamplingParams { top_k: Some(0), ..d() }, "top_k", "0"),
            (SamplingParams { top_p: Some(0.0), ..d() }, "top_p", "0"),
            (SamplingParams { top_p: Some(1.5), ..d() }, "top_p", "1.5"),
            (SamplingParams { top_p: Some(f32::NAN), ..d() }, "top_p", "NaN"),
            (SamplingParams { min_p: Some(-0.1), ..d() }, "min_p", "-0.1"),
            (SamplingParams { min_p: Some(1.25), ..d() }, "min_p", "1.25"),
            (SamplingParams { repeat_penalty: 0.0, ..d() }, "repeat_penalty", "0"),
            (SamplingParams { repeat_penalty: -1.0, ..d() }, "repeat_penalty", "-1"),
            (SamplingParams { repeat_penalty: f32::INFINITY, ..d() }, "repeat_penalty", "inf"),
        ];
        for (params, name, value) in cases {
            let msg = params.validate().unwrap_err().to_string();
            assert!(msg.contains(name) && msg.contains(value), "{msg:?} lacks {name} / {value}");
            assert!(matches!(LogitsProcessor::new(params), Err(Error::Invalid { .. })));
        }
        // The edges of the allowed ranges are allowed.
        let edges = SamplingParams { top_k: Some(1), top_p: Some(1.0), min_p: Some(0.0), ..d() };
        edges.validate().unwrap();
        SamplingParams { min_p: Some(1.0), temperature: 0.0, ..d() }.validate().unwrap();
    }

    #[test]
    fn same_seed_same_draws_different_seed_different_draws() {
        let logits = wide_logits();
        let a = draws(SamplingParams { seed: 7, ..plain(1.0) }, &logits, 50);
        let b = draws(SamplingParams { seed: 7, ..plain(1.0) }, &logits, 50);
        let c = draws(SamplingParams { seed: 8, ..plain(1.0) }, &logits, 50);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The default filters are deterministic too.
        let d1 = draws(SamplingParams::default(), &logits, 50);
        assert_eq!(d1, draws(SamplingParams::default(), &logits, 50));
    }

    #[test]
    fn greedy_takes_argmax_lowest_id_on_ties() {
        let logits = [0.1, 3.0, -2.0, 3.0, 2.9];
        assert_eq!(draws(SamplingParams::greedy(), &logits, 20), vec![1; 20]);
        // Temperature 0 wins over any filter and any seed.
        let p = SamplingParams { temperature: 0.0, seed: 1, ..Default::default() };
        assert_eq!(draws(p.clone(), &logits, 5), vec![1; 5]);
        let mut lp = LogitsProcessor::new(p).unwrap();
        assert_eq!(lp.probs_after_filters(&logits, &[]), vec![(1, 1.0)]);
    }

    #[test]
    fn top_k_only_draws_the_k_best() {
        let logits = [1.0, 5.0, 3.0, 4.0, 2.0, 0.0, 4.5];
        let p = SamplingParams { top_k: Some(3), ..plain(1.0) };
        let got = draws(p.clone(), &logits, 2000);
        for id in [1, 6, 3] {
            assert!(got.contains(&id), "id {id} never drawn");
        }
        assert!(got.iter().all(|id| [1, 6, 3].contains(id)));
        let probs = LogitsProcessor::new(p).unwrap().probs_after_filters(&logits, &[]);
        assert_eq!(ids(&probs), vec![1, 6, 3]);
        let z: f32 = [5.0f32, 4.5, 4.0].iter().map(|v| v.exp()).sum();
        assert!((probs[0].1 - 5.0f32.exp() / z).abs() < 1e-6);
        // k beyond the vocabulary keeps everything.
        let all = SamplingParams { top_k: Some(1000), ..plain(1.0) };
        assert_eq!(LogitsProcessor::new(all).unwrap().probs_after_filters(&logits, &[]).len(), 7);
    }

    #[test]
    fn top_p_keeps_smallest_prefix_reaching_p() {
        let logits = ln(&[0.5, 0.3, 0.15, 0.05]);
        let p = SamplingParams { top_p: Some(0.8), ..plain(1.0) };
        let probs = LogitsProcessor::new(p.clone()).unwrap().probs_after_filters(&logits, &[]);
        assert_eq!(ids(&probs), vec![0, 1]);
        assert!((probs[0].1 - 0.625).abs() < 1e-5 && (probs[1].1 - 0.375).abs() < 1e-5);
        assert!(draws(p, &logits, 2000).iter().all(|&id| id < 2));
        // Just above 0.8 needs the third token; a tiny p still keeps one.
        let p = SamplingParams { top_p: Some(0.81), ..plain(1.0) };
        assert_eq!(LogitsProcessor::new(p).unwrap().probs_after_filters(&logits, &[]).len(), 3);
        let p = SamplingParams { top_p: Some(1e-6), ..plain(1.0) };
        let probs = LogitsProcessor::new(p).unwrap().probs_after_filters(&logits, &[]);
        assert_eq!(probs, vec![(0, 1.0)]);
    }

    #[test]
    fn min_p_drops_tokens_below_fraction_of_top() {
        let logits = ln(&[0.5, 0.3, 0.15, 0.05]);
        let keep = |m: f32| {
            let p = SamplingParams { min_p: Some(m), ..plain(1.0) };
            ids(&LogitsProcessor::new(p).unwrap().probs_after_filters(&logits, &[]))
        };
        assert_eq!(keep(0.2), vec![0, 1, 2]); // threshold 0.1
        assert_eq!(keep(0.5), vec![0, 1]); // threshold 0.25
        assert_eq!(keep(1.0), vec![0]);
        assert_eq!(keep(0.0), vec![0, 1, 2, 3]);
        let p = SamplingParams { min_p: Some(0.5), ..plain(1.0) };
        assert!(draws(p, &logits, 2000).iter().all(|&id| id < 2));
    }

    #[test]
    fn filters_compose_in_order_and_renormalise() {
        let logits = wide_logits();
        let mut lp = LogitsProcessor::new(SamplingParams::default()).unwrap();
        let probs = lp.probs_after_filters(&logits, &[]);
        assert!(!probs.is_empty() && probs.len() <= 40);
        let sum: f32 = probs.iter().map(|p| p.1).sum();
        assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
        assert!(probs.windows(2).all(|w| w[0].1 >= w[1].1));
        let top = probs[0].1;
        assert!(probs.iter().all(|p| p.1 >= 0.05 * top));
    }

    #[test]
    fn repetition_penalty_follows_ctrl_rule() {
        let p = SamplingParams { repeat_penalty: 2.0, ..SamplingParams::greedy() };
        let mut lp = LogitsProcessor::new(p).unwrap();
        let mut logits = vec![2.0, -2.0, 1.0, 0.0, 3.0];
        // Token 0 repeats but is penalised once; 9 is past the vocab and ignored.
        lp.sample(&mut logits, &[0, 1, 0, 3, 9]);
        assert_eq!(logits, vec![1.0, -4.0, 1.0, 0.0, 3.0]);
        // Penalising the best token can change the greedy choice.
        assert_eq!(lp.sample(&mut [2.0, 1.5], &[0]), 1);
        // Only the last `repeat_last_n` tokens count.
        let p =
            SamplingParams { repeat_penalty: 2.0, repeat_last_n: 1, ..SamplingParams::greedy() };
        let mut logits = vec![2.0, 2.0];
        LogitsProcessor::new(p).unwrap().sample(&mut logits, &[0, 1]);
        assert_eq!(logits, vec![2.0, 1.0]);
        // Off by default, and with repeat_last_n 0.
        for p in [
            SamplingParams::greedy(),
            SamplingParams { repeat_penalty: 2.0, repeat_last_n: 0, ..SamplingParams::greedy() },
        ] {
            let mut logits = vec![2.0, -2.0];
            LogitsProcessor::new(p).unwrap().sample(&mut logits, &[0, 1]);
            assert_eq!(logits, vec![2.0, -2.0]);
        }
    }

    #[test]
    fn temperature_sharpens_or_flattens() {
        let logits = [2.0, 1.0, 0.0];
        let top =
            |t: f32| LogitsProcessor::new(plain(t)).unwrap().probs_after_filters(&logits, &[])[0].1;
        let (cold, warm, hot) = (top(0.5), top(1.0), top(2.0));
        assert!(cold > warm && warm > hot, "{cold} {warm} {hot}");
        // At T = 2 the distribution is softmax(logits / 2).
        let z: f32 = [1.0f32, 0.5, 0.0].iter().map(|v| v.exp()).sum();
        assert!((hot - 1.0f32.exp() / z).abs() < 1e-6);
        // A temperature so small the scaled logits overflow degrades to argmax.
        assert_eq!(draws(plain(1e-38), &[1.0, 30.0, 2.0], 10), vec![1; 10]);
    }

    #[test]
    fn nan_and_neg_inf_are_never_chosen() {
        let logits = [f32::NAN, 1.0, f32::NAN, f32::NEG_INFINITY, 0.5];
        for params in [plain(1.0), plain(5.0), SamplingParams::default()] {
            let got = draws(params, &logits, 1000);
            assert!(got.iter().all(|&id| id == 1 || id == 4), "{got:?}");
        }
        assert_eq!(draws(SamplingParams::greedy(), &logits, 1), vec![1]);
        let probs = LogitsProcessor::new(plain(1.0)).unwrap().probs_after_filters(&logits, &[]);
        assert_eq!(ids(&probs), vec![1, 4]);
    }

    #[test]
    fn degenerate_logits_fall_back_without_panicking() {
        let nan = f32::NAN;
        let ninf = f32::NEG_INFINITY;
        for params in [plain(1.0), SamplingParams::default(), SamplingParams::greedy()] {
            assert_eq!(draws(params.clone(), &[nan, nan, nan], 3), vec![0; 3]);
            assert_eq!(draws(params.clone(), &[ninf, nan, ninf], 3), vec![0; 3]);
            assert_eq!(draws(params.clone(), &[], 3), vec![0; 3]);
            // +inf is a certainty; the lowest such id wins.
            assert_eq!(
                draws(params.clone(), &[1.0, f32::INFINITY, nan, f32::INFINITY], 3),
                vec![1; 3]
            );
            // With one finite logit left, that one is chosen.
            assert_eq!(draws(params, &[nan, ninf, -3.0], 3), vec![2; 3]);
        }
    }

    #[test]
    fn probs_after_filters_does_not_consume_randomness() {
        let logits = wide_logits();
        let mut a = LogitsProcessor::new(plain(1.0)).unwrap();
        let mut b = LogitsProcessor::new(plain(1.0)).unwrap();
        let _ = a.probs_after_filters(&logits, &[]);
        for _ in 0..10 {
            assert_eq!(a.sample(&mut logits.clone(), &[]), b.sample(&mut logits.clone(), &[]));
        }
    }

    #[test]
    fn scratch_buffers_are_reused_across_calls() {
        let logits = wide_logits();
        let p = SamplingParams { repeat_penalty: 1.1, ..SamplingParams::default() };
        let mut lp = LogitsProcessor::new(p).unwrap();
        let history: Vec<u32> = (0..80).collect();
        lp.sample(&mut logits.clone(), &history);
        let before =
            (lp.cand.as_ptr(), lp.cand.capacity(), lp.recent.as_ptr(), lp.recent.capacity());
        for _ in 0..20 {
            lp.sample(&mut logits.clone(), &history);
        }
        let after =
            (lp.cand.as_ptr(), lp.cand.capacity(), lp.recent.as_ptr(), lp.recent.capacity());
        assert_eq!(before, after);
    }
}
