//! Prompts for vision-language decoders (Idefics3 / SmolVLM): a rendered chat prompt holds one
//! `<image>` placeholder per image; [`ImagePrompter::expand`] preprocesses each image into
//! tiles and writes, in the placeholder's stead, the token layout `Idefics3Processor` writes
//! (`<fake_token_around_image>`, `<row_R_col_C>` markers, `image_seq_len` image tokens per
//! tile, the global image last). The pixels of every tile travel beside the prompt, in order.

use std::path::Path;

use candle_core::Tensor;
use plinth_core::{Error, Result};
use plinth_image::{idefics3_image_prompt, ImageProcessor, RgbImage};
use plinth_models::VisionLanguageInfo;
use plinth_tokenize::{Message, Part, Tokenizer};

const FAKE_TOKEN: &str = "<fake_token_around_image>";
const GLOBAL_TOKEN: &str = "<global-img>";

/// Turns a prompt with image placeholders into the model's text and pixel tiles.
pub struct ImagePrompter {
    processor: ImageProcessor,
    image_token: String,
    image_seq_len: usize,
}

impl ImagePrompter {
    /// Reads `preprocessor_config.json` in `dir` and checks it against the model and tokenizer.
    pub fn load(dir: &Path, info: &VisionLanguageInfo, tokenizer: &Tokenizer) -> Result<Self> {
        let processor = ImageProcessor::from_dir(dir)?;
        if processor.image_size() != info.image_size {
            return Err(Error::format(
                dir.join("preprocessor_config.json"),
                format!("makes {}-pixel tiles but the vision encoder reads {}", processor.image_size(), info.image_size),
            ));
        }
        let vocab: Vec<String> = tokenizer.special_tokens().into_iter().map(|(t, _)| t).collect();
        let has = |t: &str| vocab.iter().any(|v| v == t) || tokenizer.inner().token_to_id(t).is_some();
        for t in [info.image_token.as_str(), FAKE_TOKEN, GLOBAL_TOKEN] {
            if !has(t) {
                return Err(Error::format(dir.join("tokenizer.json"), format!("has no '{t}' token, which image prompts need")));
            }
        }
        Ok(ImagePrompter { processor, image_token: info.image_token.clone(), image_seq_len: info.image_seq_len })
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The placeholder a chat template writes for each image (`<image>`).
    pub fn placeholder(&self) -> &str {
        &self.image_token
    }

    /// Replaces the `i`-th placeholder of `text` with the token layout of `images[i]` and
    /// returns the text with the tiles of every image (`[tiles, 3, S, S]`; `None` without
    /// images). The text must hold exactly one placeholder per image.
    pub fn expand(&self, text: &str, images: &[RgbImage]) -> Result<(String, Option<Tensor>)> {
        let found = text.matches(self.image_token.as_str()).count();
        if found != images.len() {
            return Err(Error::invalid(
                "images",
                format!("the prompt has {found} '{}' placeholders for {} images", self.image_token, images.len()),
            ));
        }
        if images.is_empty() {
            return Ok((text.to_string(), None));
        }
        let mut out = String::with_capacity(text.len() + images.len() * self.image_seq_len * 8);
        let mut tiles = Vec::with_capacity(images.len());
        let mut rest = text;
        for img in images {
            let at = rest.find(self.image_token.as_str()).expect("placeholders counted above");
            out.push_str(&rest[..at]);
            let p = self.processor.preprocess(img)?;
            out.push_str(&idefics3_image_prompt(p.rows, p.cols, self.image_seq_len, FAKE_TOKEN, &self.image_token, GLOBAL_TOKEN));
            tiles.push(p.pixel_values);
            rest = &rest[at + self.image_token.len()..];
        }
        out.push_str(rest);
        Ok((out, Some(Tensor::cat(&tiles, 0)?)))
    }
}

/// A user turn of `images` followed by `text`, the layout SmolVLM's examples use.
pub fn image_turn(images: usize, text: &str) -> Message {
    let mut parts = vec![Part::Image; images];
    if !text.is_empty() {
        parts.push(Part::Text { text: text.to_string() });
    }
    Message::with_parts("user", parts)
}

/// Messages as vision-language templates read them: every turn as typed parts. SmolVLM's
/// template iterates `message['content']` as parts and silently drops a plain-string content
/// (transformers passes strings through unchanged, so the model would never see that text);
/// plinth turns each string into one text part instead.
pub fn as_parts(messages: &[Message]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| if m.parts.is_empty() { Message::with_parts(m.role.clone(), vec![Part::Text { text: m.content.clone() }]) } else { m.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_turns_become_text_parts() {
        let msgs = [Message::new("system", "Be brief."), image_turn(1, "What is it?"), Message::new("user", "And now?")];
        let out = as_parts(&msgs);
        assert_eq!(out[0].parts, vec![Part::Text { text: "Be brief.".into() }]);
        assert_eq!(out[1], msgs[1]);
        assert_eq!((out[2].content.as_str(), out[2].images()), ("And now?", 0));
    }
}
