//! The causal language-model loss as transformers computes it: position `t` predicts token
//! `t + 1`; positions whose label is [`IGNORE`] (prompt tokens, padding) do not count; the
//! loss is the mean over the counted positions of the whole batch.

use candle_core::{DType, Tensor, D};
use plinth_core::{Error, Result};
use plinth_models::Decoder;

/// The label of a position that does not count (transformers' -100).
pub const IGNORE: i64 = -100;

/// Summed cross-entropy of one sequence and the number of positions it counts. `labels[t]`
/// is the target for `ids[t]`'s position *before* shifting, as transformers' `labels`.
pub fn sequence_loss_sum(model: &dyn Decoder, ids: &[u32], labels: &[i64]) -> Result<(Tensor, usize)> {
    if ids.len() != labels.len() || ids.len() < 2 {
        return Err(Error::invalid("training example", format!("{} tokens and {} labels (need equal, at least 2)", ids.len(), labels.len())));
    }
    let mut cache = crate::eval::scoring_cache(model);
    let logits = model.forward(ids, &mut cache, true)?; // [T, V]
    let t = ids.len();
    let logits = logits.narrow(0, 0, t - 1)?;
    let targets: Vec<(usize, u32)> = labels[1..].iter().enumerate().filter(|(_, &l)| l != IGNORE).map(|(i, &l)| (i, l as u32)).collect();
    if targets.is_empty() {
        return Ok((Tensor::zeros((), DType::F32, logits.device())?, 0));
    }
    let rows = Tensor::new(targets.iter().map(|(i, _)| *i as u32).collect::<Vec<_>>(), logits.device())?;
    let picked = logits.index_select(&rows, 0)?; // [n, V]
    let log_probs = candle_nn::ops::log_softmax(&picked, D::Minus1)?;
    let tgt = Tensor::new(targets.iter().map(|(_, l)| *l).collect::<Vec<_>>(), logits.device())?.unsqueeze(1)?;
    let nll = log_probs.gather(&tgt, 1)?.neg()?.sum_all()?;
    Ok((nll, targets.len()))
}

/// Mean loss over the counted positions of a batch of `(ids, labels)`.
pub fn causal_lm_loss(model: &dyn Decoder, batch: &[(Vec<u32>, Vec<i64>)]) -> Result<(Tensor, usize)> {
    let mut total: Option<Tensor> = None;
    let mut count = 0;
    for (ids, labels) in batch {
        let (s, n) = sequence_loss_sum(model, ids, labels)?;
        count += n;
        total = Some(match total {
            Some(t) => (t + s)?,
            None => s,
        });
    }
    let total = total.ok_or_else(|| Error::invalid("batch", "no examples"))?;
    if count == 0 {
        return Err(Error::invalid("batch", "no position has a label (every label is -100)"));
    }
    Ok(((total / count as f64)?, count))
}
