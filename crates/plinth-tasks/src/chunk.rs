//! Splitting a long document into pieces that fit a model's token budget, at the most natural
//! boundary available: paragraphs (blank lines), then sentences, then words, and only for a
//! single over-long word, characters. Used by the map-reduce tasks (summarize, translate) so
//! that any length of input can be processed.
//!
//! The pieces are contiguous byte ranges of the input that concatenate back to it exactly:
//! every character is in exactly one chunk, none is dropped or repeated. Token counts come
//! from the caller (the model's tokenizer); a chunk's count is the sum of its pieces' counts,
//! which can differ from the count of the joined text by a token at a boundary, so callers
//! leave that margin in `budget`.

/// One piece of the input: `text == &input[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Splits `text` into chunks of at most `budget` tokens as counted by `count`. Chunks end at
/// paragraph boundaries when a paragraph fits, else at sentence ends, else between words.
pub fn split(text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let budget = budget.max(1);
    let mut pieces = Vec::new();
    for para in split_keep(text, paragraph_ends(text)) {
        refine(text, para, budget, count, 0, &mut pieces);
    }
    pack(text, &pieces, budget, count)
}

/// `(start, end)` byte ranges of `text` cut after each position in `cuts`.
fn split_keep(text: &str, cuts: Vec<usize>) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain(std::iter::once(text.len())) {
        if c > start {
            out.push((start, c));
            start = c;
        }
    }
    out
}

/// Ends of paragraphs: after a run of blank lines (the blank lines stay with the paragraph
/// before them, so the next one starts with its first character).
fn paragraph_ends(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut cuts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            let mut j = i + 1;
            let mut newlines = 1;
            while j < b.len() && (b[j] == b'\n' || b[j] == b'\r' || b[j] == b' ' || b[j] == b'\t') {
                newlines += usize::from(b[j] == b'\n');
                j += 1;
            }
            if newlines >= 2 && j < b.len() {
                // Back up to the start of the line that holds text (keep its indentation).
                let mut k = j;
                while k > i && b[k - 1] != b'\n' {
                    k -= 1;
                }
                cuts.push(k);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    cuts
}

/// Ends of sentences within `s`: after `.`, `!`, `?` (and their full-width forms) plus any
/// closing quotes or brackets, followed by whitespace; the whitespace stays with the sentence.
fn sentence_ends(s: &str) -> Vec<usize> {
    let mut cuts = Vec::new();
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        if matches!(c, '.' | '!' | '?' | '。' | '！' | '？') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’' | '»') {
                j += 1;
            }
            let ws_start = j;
            while j < chars.len() && chars[j].1.is_whitespace() {
                j += 1;
            }
            if (j > ws_start || matches!(c, '。' | '！' | '？')) && j < chars.len() {
                cuts.push(chars[j].0);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    cuts
}

/// Ends of words: after each run of whitespace.
fn word_ends(s: &str) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut prev_ws = false;
    for (i, c) in s.char_indices() {
        if prev_ws && !c.is_whitespace() {
            cuts.push(i);
        }
        prev_ws = c.is_whitespace();
    }
    cuts
}

/// Breaks the range `r` of `text` into pieces that fit `budget` on their own, going down one
/// boundary level at a time (sentences, words, characters).
fn refine(text: &str, r: (usize, usize), budget: usize, count: &dyn Fn(&str) -> usize, level: u8, out: &mut Vec<(usize, usize)>) {
    let s = &text[r.0..r.1];
    if count(s) <= budget || s.chars().nth(1).is_none() {
        out.push(r);
        return;
    }
    if level >= 2 {
        hard_split(text, r, budget, count, out);
        return;
    }
    let cuts = if level == 0 { sentence_ends(s) } else { word_ends(s) };
    let parts = split_keep(s, cuts);
    if parts.len() <= 1 {
        refine(text, r, budget, count, level + 1, out);
        return;
    }
    for (a, b) in parts {
        refine(text, (r.0 + a, r.0 + b), budget, count, level + 1, out);
    }
}

/// Characters, greedily: as many as fit (at least one).
fn hard_split(text: &str, r: (usize, usize), budget: usize, count: &dyn Fn(&str) -> usize, out: &mut Vec<(usize, usize)>) {
    let s = &text[r.0..r.1];
    let idx: Vec<usize> = s.char_indices().map(|(i, _)| i).chain(std::iter::once(s.len())).collect();
    let (mut start, mut k) = (0, 1);
    while start < s.len() {
        while k + 1 < idx.len() && count(&s[start..idx[k + 1]]) <= budget {
            k += 1;
        }
        out.push((r.0 + start, r.0 + idx[k]));
        start = idx[k];
        k += 1;
    }
}

/// Greedily joins consecutive pieces while their summed count fits.
fn pack(text: &str, pieces: &[(usize, usize)], budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut cur: Option<(usize, usize, usize)> = None; // start, end, tokens
    for &(a, b) in pieces {
        let n = count(&text[a..b]);
        cur = match cur {
            Some((s, e, t)) if t + n <= budget => Some((s, b.max(e), t + n)),
            Some((s, e, _)) => {
                chunks.push(Chunk { start: s, end: e, text: text[s..e].to_string() });
                Some((a, b, n))
            }
            None => Some((a, b, n)),
        };
    }
    if let Some((s, e, _)) = cur {
        chunks.push(Chunk { start: s, end: e, text: text[s..e].to_string() });
    }
    chunks
}

/// The paragraphs of `text` (blank-line separated), trailing blank lines attached; their
/// concatenation is `text`.
pub fn paragraphs(text: &str) -> Vec<&str> {
    split_keep(text, paragraph_ends(text)).into_iter().map(|(a, b)| &text[a..b]).collect()
}

/// The sentences of `text` (each with the whitespace after it), concatenating back to `text`.
pub fn sentences(text: &str) -> Vec<&str> {
    split_keep(text, sentence_ends(text)).into_iter().map(|(a, b)| &text[a..b]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn split_words(text: &str, budget: usize) -> Vec<Chunk> {
        split(text, budget, &words)
    }

    fn doc(paragraphs: usize, sentences: usize, words_per: usize) -> String {
        (0..paragraphs)
            .map(|p| (0..sentences).map(|s| format!("{}.", (0..words_per).map(|w| format!("w{p}s{s}x{w}")).collect::<Vec<_>>().join(" "))).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    #[test]
    fn a_document_five_times_the_budget_is_covered_exactly_once() {
        let text = doc(10, 5, 10); // 500 words
        let budget = 100;
        let chunks = split_words(&text, budget);
        assert!(chunks.len() >= 5, "{} chunks", chunks.len());
        let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(joined, text, "chunks concatenate to the document: nothing lost, nothing repeated");
        let mut pos = 0;
        for c in &chunks {
            assert_eq!(c.start, pos);
            assert_eq!(&text[c.start..c.end], c.text);
            assert!(words(&c.text) <= budget, "{} words", words(&c.text));
            pos = c.end;
        }
        assert_eq!(pos, text.len());
        // Whole paragraphs fit (50 words), so every chunk ends at a paragraph boundary.
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.text.ends_with("\n\n"), "{:?}", &c.text[c.text.len().saturating_sub(20)..]);
        }
    }

    #[test]
    fn long_paragraphs_split_at_sentences_then_words() {
        let text = doc(1, 6, 10); // one 60-word paragraph
        let chunks = split_words(&text, 25);
        assert_eq!(chunks.iter().map(|c| c.text.as_str()).collect::<String>(), text);
        for c in &chunks {
            assert!(words(&c.text) <= 25);
            assert!(c.text.trim_end().ends_with('.'), "sentence boundary: {:?}", c.text);
        }
        let one_sentence = "a b c d e f g h i j k l m n o p";
        let chunks = split_words(one_sentence, 5);
        assert_eq!(chunks.iter().map(|c| c.text.as_str()).collect::<String>(), one_sentence);
        assert!(chunks.iter().all(|c| words(&c.text) <= 5));
    }

    #[test]
    fn odd_inputs() {
        assert!(split_words("", 10).is_empty());
        let t = "word";
        assert_eq!(split_words(t, 1)[0].text, "word");
        let unicode = "Grüße aus Köln. 東京は大きい。 Ça va? Oui!\n\n\nNeuer Absatz.";
        let chunks = split_words(unicode, 2);
        assert_eq!(chunks.iter().map(|c| c.text.as_str()).collect::<String>(), unicode);
        assert_eq!(paragraphs(unicode).len(), 2);
        assert_eq!(paragraphs("a\n\nb\n\nc").concat(), "a\n\nb\n\nc");
    }
}
