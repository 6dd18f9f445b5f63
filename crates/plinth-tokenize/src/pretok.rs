//! Byte-level BPE pre-tokenizers, chosen by GGUF's `tokenizer.ggml.pre`. Owns the table from
//! llama.cpp's pre-tokenizer names to the `tokenizers` pre-tokenizer that splits text the same
//! way the model's original Hugging Face `tokenizer.json` does.
//!
//! Decision: an unknown name falls back to the GPT-2 regex. That is what llama.cpp's converter
//! writes as "default" for vocabularies it cannot identify, and it is right for the many models
//! that reuse GPT-2's scheme; a model that needs something else tokenizes slightly differently
//! around digits and whitespace rather than failing to load.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// Llama 3's split: case-insensitive contractions, letters with one leading non-letter, digits
/// in groups of at most three, punctuation runs, newlines kept apart from other spaces.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's with every digit on its own.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer for one `tokenizer.ggml.pre` value.
pub(crate) struct PreTokenizer {
    pub pre_tokenizer: PreTokenizerWrapper,
    /// Look a whole pre-token up in the vocabulary before merging (Llama 3's BPE does).
    pub ignore_merges: bool,
}

/// ByteLevel with its built-in GPT-2 regex.
fn gpt2() -> ByteLevel {
    ByteLevel::new(false, false, true)
}

fn regex_then_bytes(pattern: &str) -> Result<PreTokenizerWrapper, String> {
    let split = Split::new(
        SplitPattern::Regex(pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("pre-tokenizer regex: {e}"))?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])
    .into())
}

pub(crate) fn for_name(pre: &str) -> Result<PreTokenizer, String> {
    let (pre_tokenizer, ignore_merges) = match pre {
        // Each digit alone first (HF's Digits(individual_digits) splits on char::is_numeric,
        // i.e. \p{N}, as llama.cpp's "\p{N}" regex does), then GPT-2's regex on the rest.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (
                Sequence::new(vec![Digits::new(true).into(), gpt2().into()]).into(),
                false,
            )
        }
        "llama3" | "llama-v3" | "llama-bpe" => (regex_then_bytes(LLAMA3)?, true),
        "falcon3" | "falcon-h1" | "pixtral" | "dbrx" | "smaug-bpe" | "midm-2.0" | "lfm2" => {
            (regex_then_bytes(LLAMA3)?, false)
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" => {
            (regex_then_bytes(QWEN2)?, false)
        }
        // "default", "gpt2", "gpt-2", "mpt", "olmo", "jais", ... and anything unknown.
        _ => (gpt2().into(), false),
    };
    Ok(PreTokenizer {
        pre_tokenizer,
        ignore_merges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _};

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let p = for_name(pre).unwrap().pre_tokenizer;
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(pieces("smollm", "x  12"), ["x", "ĠĠ", "1", "2"]);
        assert_eq!(pieces("gpt2", "x  12"), ["x", "Ġ", "Ġ12"]);
    }

    #[test]
    fn llama3_groups_three_digits() {
        assert_eq!(pieces("llama3", "12345 I'M"), ["123", "45", "ĠI", "'M"]);
        assert_eq!(pieces("qwen2", "123"), ["1", "2", "3"]);
    }

    #[test]
    fn unknown_falls_back_to_gpt2() {
        assert_eq!(
            pieces("no-such-pre", "hi there"),
            pieces("gpt2", "hi there")
        );
    }
}
