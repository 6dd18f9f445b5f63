//! Streaming detokenization. Owns turning a stream of generated ids into text chunks that are
//! always whole UTF-8 characters and that, concatenated, equal decoding all ids at once.
//!
//! Decoding token by token is wrong twice over: a character can be split across byte tokens,
//! and decoders such as SentencePiece's strip or join differently at the start of a sequence.
//! So each step decodes a small window `ids[prefix..]` and emits only what it adds beyond
//! `ids[prefix..read]` (the text already emitted for that window), and only once the new text
//! no longer ends in U+FFFD, the mark of an incomplete character.

use plinth_core::Result;

use crate::Tokenizer;

const REPLACEMENT: char = '\u{FFFD}';

/// Incremental decoder over one generated sequence.
pub struct Detokenizer<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// The current window; ids before it are no longer needed and are dropped.
    ids: Vec<u32>,
    /// `ids[..read]` have been emitted already and stay only as decoding context.
    read: usize,
}

impl<'a> Detokenizer<'a> {
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        Detokenizer {
            tok,
            skip_special,
            ids: Vec::new(),
            read: 0,
        }
    }

    /// Adds one id and returns the text it completes; empty while a multi-byte character is
    /// still incomplete.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tok.check_ids(&[id])?;
        self.ids.push(id);
        let (prefix_text, text) = self.window()?;
        if text.len() > prefix_text.len() && !text.ends_with(REPLACEMENT) {
            let new = new_suffix(&prefix_text, &text);
            // The ids just emitted become the next window's context.
            self.ids.drain(..self.read);
            self.read = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Flushes whatever is pending (an incomplete character comes out as U+FFFD, as a full
    /// decode would show it). The detokenizer can keep going afterwards.
    pub fn finish(&mut self) -> Result<String> {
        let (prefix_text, text) = self.window()?;
        let new = if text.len() > prefix_text.len() {
            new_suffix(&prefix_text, &text)
        } else {
            String::new()
        };
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        Ok(new)
    }

    fn window(&self) -> Result<(String, String)> {
        let prefix_text = self.tok.decode(&self.ids[..self.read], self.skip_special)?;
        let text = self.tok.decode(&self.ids, self.skip_special)?;
        Ok((prefix_text, text))
    }
}

/// What `text` adds beyond `prefix`. Decoders are prefix-stable in practice; should one not be,
/// the longest common prefix (on a character boundary) keeps the output sane.
fn new_suffix(prefix: &str, text: &str) -> String {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest.to_string();
    }
    let common = prefix
        .char_indices()
        .zip(text.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix.len().min(text.len()), |((i, _), _)| i);
    text[common..].to_string()
}

#[cfg(test)]
mod tests {
    use super::new_suffix;

    #[test]
    fn suffix_of_diverging_prefix_is_char_safe() {
        assert_eq!(new_suffix("ab", "abcd"), "cd");
        assert_eq!(new_suffix("aé", "aüx"), "üx");
    }
}
