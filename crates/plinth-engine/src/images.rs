//! Prompts that carry images, for vision-language decoders. The prompt's token ids hold one
//! block of `image_seq_len` image tokens per preprocessed tile; the tiles' pixels travel beside
//! the ids. Prefill then runs from input embeddings (token embeddings with the image features
//! written over the image tokens) instead of ids; decoding is unchanged.

use std::hash::{Hash, Hasher};

use candle_core::Tensor;
use plinth_core::{Error, Result};
use plinth_models::{Decoder, KvCache, VisionLanguage};

/// Checks that `pixels` (`[tiles, 3, S, S]`) fits the model and the image tokens of `ids`, and
/// returns one fingerprint per tile (to tell whether a cached prefix saw the same images).
pub fn check_prompt_images(model: &dyn Decoder, ids: &[u32], pixels: Option<&Tensor>) -> Result<Vec<u64>> {
    let Some(vision) = model.vision() else {
        return match pixels {
            Some(_) => Err(Error::invalid(
                "images",
                format!("model '{}' reads text only; use a vision-language model to send images", model.info().architecture),
            )),
            None => Ok(Vec::new()),
        };
    };
    let info = vision.vision_info();
    let found = ids.iter().filter(|&&t| t == info.image_token_id).count();
    let tiles = match pixels {
        None => 0,
        Some(p) => {
            let dims = p.dims();
            if dims.len() != 4 || dims[1] != 3 || dims[2] != info.image_size || dims[3] != info.image_size {
                return Err(Error::invalid(
                    "images",
                    format!("pixel tensor {dims:?} is not [tiles, 3, {s}, {s}]", s = info.image_size),
                ));
            }
            dims[0]
        }
    };
    if found != tiles * info.image_seq_len {
        return Err(Error::invalid(
            "images",
            format!(
                "the prompt has {found} '{}' tokens but {tiles} image tiles need {} ({} per tile)",
                info.image_token,
                tiles * info.image_seq_len,
                info.image_seq_len
            ),
        ));
    }
    let Some(p) = pixels else { return Ok(Vec::new()) };
    (0..tiles)
        .map(|i| {
            let v = p.get(i)?.flatten_all()?.to_vec1::<f32>()?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.iter().for_each(|x| x.to_bits().hash(&mut h));
            Ok(h.finish())
        })
        .collect()
}

/// Image tiles whose tokens lie in `ids`.
pub(crate) fn tiles_in(vision: &dyn VisionLanguage, ids: &[u32]) -> usize {
    let info = vision.vision_info();
    ids.iter().filter(|&&t| t == info.image_token_id).count() / info.image_seq_len.max(1)
}

/// Runs `ids` (a prompt or its uncached tail) through the model in chunks of `chunk` tokens;
/// when they hold image tokens, from input embeddings built with `pixels` (the tiles of those
/// image tokens, in order). Returns the last call's logits.
pub(crate) fn prefill(
    model: &dyn Decoder,
    ids: &[u32],
    pixels: Option<&Tensor>,
    cache: &mut KvCache,
    chunk: usize,
) -> Result<Tensor> {
    let mut last = None;
    match (model.vision(), pixels) {
        (Some(vision), Some(p)) if tiles_in(vision, ids) > 0 => {
            let embeds = vision.prompt_embeddings(ids, p)?;
            let mut at = 0;
            while at < ids.len() {
                let n = chunk.min(ids.len() - at);
                last = Some(vision.forward_embeds(&embeds.narrow(0, at, n)?, cache, false)?);
                at += n;
            }
        }
        _ => {
            for c in ids.chunks(chunk) {
                last = Some(model.forward(c, cache, false)?);
            }
        }
    }
    last.ok_or_else(|| Error::invalid("prompt", "is empty"))
}
