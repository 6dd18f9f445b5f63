//! Stop strings matched across token boundaries.
//!
//! Owns the decision of which decoded text may be shown to the user now and when generation
//! must end because a stop string appeared. A stop string such as `<|im_end|>` usually
//! arrives split over several tokens, so text that could still turn into a stop string is
//! held back until the next chunk settles it, and nothing else is delayed.

use plinth_core::{Error, Result};

/// What to do after feeding a chunk of decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now (may be empty while a possible stop string is pending).
    Continue(String),
    /// Text to emit before the stop string; generation must end. The stop string itself, and
    /// anything after it, is never emitted.
    Stop(String),
}

/// Watches decoded text for any of a set of stop strings.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted: always a proper prefix of some stop string, and
    /// never containing a whole one, between calls.
    pending: String,
    /// Set once a stop string has matched; from then on nothing more is emitted.
    finished: bool,
}

impl StopMatcher {
    /// Rejects empty stop strings: one would match before any text and end every generation
    /// at once, which is never what a caller meant.
    pub fn new(stops: &[String]) -> Result<Self> {
        if let Some(i) = stops.iter().position(|s| s.is_empty()) {
            return Err(Error::invalid(
                "stop",
                format!("stop string #{i} is empty; it would end generation before any text"),
            ));
        }
        let mut stops = stops.to_vec();
        stops.sort();
        stops.dedup();
        Ok(Self { stops, pending: String::new(), finished: false })
    }

    /// The distinct stop strings being watched.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Whether a stop string has matched.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds newly decoded text. After a `Stop`, every further push is `Stop("")`.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.finished {
            return StopOutcome::Stop(String::new());
        }
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_owned());
        }
        self.pending.push_str(text);

        // The earliest match, not the first stop in the list, decides: text after it was
        // never meant to be seen, whichever stop string it contains.
        if let Some(pos) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.pending.truncate(pos);
            self.finished = true;
            return StopOutcome::Stop(std::mem::take(&mut self.pending));
        }

        let emit = self.pending.len() - self.held_back_len();
        // The held-back suffix starts with a stop string's first byte, which begins a
        // character, so the split never cuts one.
        debug_assert!(self.pending.is_char_boundary(emit));
        StopOutcome::Continue(self.pending.drain(..emit).collect())
    }

    /// Ends generation for another reason (EOS, length limit): whatever was held back is
    /// ordinary text after all.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length in bytes of the longest suffix of `pending` that is a proper prefix of some
    /// stop string. Compared as bytes: a suffix that begins mid-character can never equal a
    /// stop string's prefix, because a stop string begins with a character's first byte.
    fn held_back_len(&self) -> usize {
        let text = self.pending.as_bytes();
        (self.stops.iter())
            .map(|stop| {
                let stop = stop.as_bytes();
                let longest = (stop.len() - 1).min(text.len());
                (1..=longest).rev().find(|&k| text.ends_with(&stop[..k])).unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn go(s: &str) -> StopOutcome {
        StopOutcome::Continue(s.to_owned())
    }

    fn stop(s: &str) -> StopOutcome {
        StopOutcome::Stop(s.to_owned())
    }

    /// Feeds `chunks` and returns everything emitted and whether it stopped.
    fn run(m: &mut StopMatcher, chunks: &[&str]) -> (String, bool) {
        let mut out = String::new();
        for c in chunks {
            match m.push(c) {
                StopOutcome::Continue(s) => out.push_str(&s),
                StopOutcome::Stop(s) => {
                    out.push_str(&s);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn no_stops_passes_everything_straight_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("Hello <|im"), go("Hello <|im"));
        assert_eq!(m.push("😀 世界"), go("😀 世界"));
        assert_eq!(m.push(""), go(""));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn stop_split_across_three_pushes() {
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(m.push("Hello<|im"), go("Hello"));
        assert_eq!(m.push("_e"), go(""));
        assert_eq!(m.push("nd|>"), stop(""));
        assert!(m.is_finished());
        // Finished: nothing more comes out.
        assert_eq!(m.push("more"), stop(""));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn text_after_the_stop_in_the_same_chunk_is_dropped() {
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(m.push("ok<|im_end|>junk"), stop("ok"));
    }

    #[test]
    fn stop_at_the_very_start() {
        assert_eq!(matcher(&["<|im_end|>"]).push("<|im_end|>"), stop(""));
        let mut m = matcher(&["###"]);
        assert_eq!(m.push("#"), go(""));
        assert_eq!(m.push("##after"), stop(""));
    }

    #[test]
    fn earliest_match_wins_among_several_stops() {
        let mut m = matcher(&["END", "STOP"]);
        assert_eq!(m.push("a STOP b END"), stop("a "));
        let mut m = matcher(&["STOP", "END"]);
        assert_eq!(m.push("a END b STOP"), stop("a "));
        // A shorter stop completing inside a longer one's pending prefix ends it there.
        let mut m = matcher(&["abcd", "c"]);
        assert_eq!(m.push("xab"), go("x"));
        assert_eq!(m.push("c"), stop("ab"));
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(m.push("a<|i"), go("a"));
        assert_eq!(m.push("x"), go("<|ix"));
        // Only the part that can still start a stop is kept back.
        assert_eq!(m.push("<|im_<"), go("<|im_"));
        assert_eq!(m.push("|im_end|>"), stop(""));
    }

    #[test]
    fn overlapping_prefixes_hold_back_the_longest_possible_start() {
        let mut m = matcher(&["aab"]);
        assert_eq!(m.push("aaa"), go("a"));
        assert_eq!(m.push("b"), stop(""));
        let mut m = matcher(&["ab", "xyzw"]);
        assert_eq!(m.push("qxyz"), go("q"));
        assert_eq!(m.push("a"), go("xyz"));
        assert_eq!(m.push("c"), go("ac"));
    }

    #[test]
    fn flush_returns_the_held_back_tail() {
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(m.push("x<|im"), go("x"));
        assert_eq!(m.flush(), "<|im");
        assert_eq!(m.flush(), "");
        assert!(!m.is_finished());
    }

    #[test]
    fn multibyte_text_is_never_cut_inside_a_character() {
        let mut m = matcher(&["世界!"]);
        assert_eq!(m.push("你好世"), go("你好"));
        assert_eq!(m.push("界"), go(""));
        assert_eq!(m.push("!"), stop(""));

        let mut m = matcher(&["👋🏽"]);
        assert_eq!(m.push("hi 👋"), go("hi "));
        assert_eq!(m.push("🏽 there"), stop(""));

        // "ã" and "é" share their first UTF-8 byte; that alone must not hold "ã" back.
        let mut m = matcher(&["é"]);
        assert_eq!(m.push("ã"), go("ã"));
        let mut m = matcher(&["ab"]);
        assert_eq!(m.push("🙂a"), go("🙂"));
        assert_eq!(m.flush(), "a");
    }

    #[test]
    fn any_chunking_gives_the_same_text_up_to_the_stop() {
        let text = "Hé 世界 <|im_e 😀 <|im_end|> never seen";
        let expected = "Hé 世界 <|im_e 😀 ";
        let chars: Vec<&str> =
            text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect();
        for size in 1..=6 {
            let chunks: Vec<String> = chars.chunks(size).map(|c| c.concat()).collect();
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let mut m = matcher(&["<|im_end|>", "</s>"]);
            assert_eq!(run(&mut m, &refs), (expected.to_owned(), true), "chunk size {size}");
        }
        // Without a stop in the text, everything comes out, the tail through flush.
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(run(&mut m, &["a <|im", "_e"]), ("a <|im_e".to_owned(), false));
    }

    #[test]
    fn empty_stop_string_is_rejected_and_duplicates_collapse() {
        let err = StopMatcher::new(&["</s>".into(), String::new()]).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
        assert!(err.to_string().contains("#1"), "{err}");
        let m = matcher(&["</s>", "</s>", "END"]);
        assert_eq!(m.stops(), ["</s>".to_owned(), "END".to_owned()]);
    }
}
