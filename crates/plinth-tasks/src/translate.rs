//! Translation of any length of text, keeping its paragraph structure: the text is cut into
//! paragraphs, each paragraph into batches of whole sentences that fit a token budget
//! ([`crate::chunk`]), each batch is translated, and the paragraphs are put back together
//! with their original separators, so the output has exactly as many paragraphs as the input.
//!
//! Two kinds of model translate: an instruct LLM, prompted through its chat template
//! ([`translate_llm`]), and anything that maps a batch of sentences to their translations
//! ([`translate_with`]) — the encoder-decoder models (Marian, T5, BART) plug in there
//! ([`translate_seq2seq`]).
//!
//! ```no_run
//! # fn main() -> plinth_core::Result<()> {
//! use plinth_io::fetch::ModelLocation;
//! use plinth_tasks::seq2seq::Seq2SeqModel;
//! use plinth_tasks::translate::{translate_llm, translate_seq2seq, TranslateOptions};
//!
//! let mut opts = TranslateOptions::new("fr");
//! opts.from = Some("en".into());
//! // An instruct LLM, prompted batch by batch.
//! let llm = plinth_models::load_decoder(&ModelLocation::Gguf("smollm2.gguf".into()))?;
//! let tok = plinth_tokenize::Tokenizer::from_gguf(llm.gguf.as_ref().unwrap())?;
//! let r = translate_llm(llm.model.as_ref(), &tok, "Good morning.\n\nSee you soon.", &opts, &mut |_, _| {}, &mut |t| print!("{t}"))?;
//! assert_eq!(r.paragraphs, 2);
//! // An opus-mt directory, one sentence per row, 4 beams.
//! let marian = Seq2SeqModel::load("opus-mt-en-fr".as_ref())?;
//! let beams = plinth_engine::Seq2SeqOverrides { num_beams: Some(4), ..Default::default() };
//! let r = translate_seq2seq(&marian, "Good morning. See you soon.", &opts, &beams, &mut |_, _| {}, &mut |_| {})?;
//! println!("{}", r.translation);
//! # Ok(())
//! # }
//! ```

use plinth_core::{Error, Result};
use plinth_engine::{GenerateRequest, SamplingParams, Session};
use plinth_models::Decoder;
use plinth_tokenize::{Message, Tokenizer};

use plinth_engine::Seq2SeqOverrides;

use crate::chunk::{paragraphs, sentences, split};
use crate::seq2seq::Seq2SeqModel;

/// How to translate with an LLM.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// Target language: a name (`French`) or an ISO 639-1 code (`fr`).
    pub to: String,
    /// Source language; `None` lets the model tell.
    pub from: Option<String>,
    /// Use at most this many tokens of context (default: the model's).
    pub context: Option<usize>,
    /// Most source tokens per batch: small models translate short inputs better.
    pub batch_tokens: usize,
    pub sampling: SamplingParams,
}

impl TranslateOptions {
    pub fn new(to: impl Into<String>) -> Self {
        // Greedy, with a penalty milder than summarizing's: a translation legitimately repeats
        // words of its source, but small models otherwise loop on a phrase.
        TranslateOptions { to: to.into(), from: None, context: None, batch_tokens: 160, sampling: SamplingParams { repeat_penalty: 1.1, ..SamplingParams::greedy() } }
    }
}

/// What happened, for `--json` and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TranslationReport {
    pub translation: String,
    /// Paragraphs in the input (and so in the output).
    pub paragraphs: usize,
    /// Batches translated (model calls).
    pub batches: usize,
}

/// The English name of a language given by ISO 639-1 code or name (names pass through, with
/// the first letter capitalized).
pub fn language_name(lang: &str) -> String {
    const CODES: &[(&str, &str)] = &[
        ("ar", "Arabic"), ("bg", "Bulgarian"), ("ca", "Catalan"), ("cs", "Czech"), ("da", "Danish"), ("de", "German"),
        ("el", "Greek"), ("en", "English"), ("es", "Spanish"), ("et", "Estonian"), ("fa", "Persian"), ("fi", "Finnish"),
        ("fr", "French"), ("he", "Hebrew"), ("hi", "Hindi"), ("hu", "Hungarian"), ("id", "Indonesian"), ("it", "Italian"),
        ("ja", "Japanese"), ("ko", "Korean"), ("lt", "Lithuanian"), ("lv", "Latvian"), ("nl", "Dutch"), ("no", "Norwegian"),
        ("pl", "Polish"), ("pt", "Portuguese"), ("ro", "Romanian"), ("ru", "Russian"), ("sk", "Slovak"), ("sl", "Slovenian"),
        ("sv", "Swedish"), ("th", "Thai"), ("tr", "Turkish"), ("uk", "Ukrainian"), ("vi", "Vietnamese"), ("zh", "Chinese"),
    ];
    let l = lang.trim();
    if let Some((_, name)) = CODES.iter().find(|(c, _)| c.eq_ignore_ascii_case(l)) {
        return name.to_string();
    }
    let mut cs = l.chars();
    match cs.next() {
        Some(f) => f.to_uppercase().chain(cs).collect(),
        None => String::new(),
    }
}

/// One paragraph of the input: leading whitespace, the batches of its body, and the
/// separator after it, all verbatim slices of the input.
struct Paragraph<'a> {
    lead: &'a str,
    batches: Vec<&'a str>,
    trail: &'a str,
}

fn plan<'a>(text: &'a str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Paragraph<'a>> {
    paragraphs(text)
        .into_iter()
        .map(|p| {
            let body = p.trim();
            if body.is_empty() {
                return Paragraph { lead: p, batches: Vec::new(), trail: "" };
            }
            let start = p.find(body).unwrap_or(0);
            let (lead, trail) = (&p[..start], &p[start + body.len()..]);
            let mut batches = Vec::new();
            let mut offset = 0;
            for c in split(body, budget, count) {
                // Chunks are contiguous; keep the text trimmed so the model never sees a
                // dangling space, and rejoin with one space.
                debug_assert_eq!(c.start, offset);
                offset = c.end;
                let t = &body[c.start..c.end];
                let t = t.trim();
                if !t.is_empty() {
                    batches.push(t);
                }
            }
            Paragraph { lead, batches, trail }
        })
        .collect()
}

/// Translates `text` batch by batch with `translate`, which maps source batches to their
/// translations (one output per input). Paragraph separators are kept verbatim; each
/// paragraph's batches are joined with a space. `on_text` receives the output as it is
/// assembled, `on_batch(i, n)` after each batch.
pub fn translate_with(
    text: &str,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
    translate: &mut dyn FnMut(&[&str]) -> Result<Vec<String>>,
    on_batch: &mut dyn FnMut(usize, usize),
    on_text: &mut dyn FnMut(&str),
) -> Result<TranslationReport> {
    if text.trim().is_empty() {
        return Err(Error::invalid("input", "the text to translate is empty"));
    }
    let plan = plan(text, budget, count);
    let total: usize = plan.iter().map(|p| p.batches.len()).sum();
    let mut out = String::with_capacity(text.len() * 2);
    let mut done = 0;
    let mut emit = |s: &str, out: &mut String| {
        out.push_str(s);
        on_text(s);
    };
    for p in &plan {
        emit(p.lead, &mut out);
        for (i, b) in p.batches.iter().enumerate() {
            let mut t = translate(std::slice::from_ref(b))?;
            let t = t.pop().ok_or_else(|| Error::invalid("model", "the translator returned no output"))?;
            // A blank line inside a paragraph's translation would add a paragraph.
            let t = collapse_blank_lines(t.trim());
            if i > 0 {
                emit(" ", &mut out);
            }
            emit(&t, &mut out);
            done += 1;
            on_batch(done, total);
        }
        emit(p.trail, &mut out);
    }
    Ok(TranslationReport { translation: out, paragraphs: plan.iter().filter(|p| !p.batches.is_empty()).count(), batches: total })
}

fn collapse_blank_lines(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn instruction(opts: &TranslateOptions) -> String {
    let to = language_name(&opts.to);
    match &opts.from {
        Some(from) => format!("Translate the following {} text into {to}. Reply with the {to} translation only.", language_name(from)),
        None => format!("Translate the following text into {to}. Reply with the {to} translation only."),
    }
}

/// Strips what chat models wrap around an answer: a "Translation:" label, quotes the source
/// did not have.
fn clean(out: &str, source: &str, to: &str) -> String {
    let mut s = out.trim();
    for label in ["Translation:", "translation:", &format!("{to}:"), &format!("{to} translation:"), "Here is the translation:"] {
        if let Some(rest) = s.strip_prefix(label) {
            s = rest.trim_start();
        }
    }
    let quoted = |x: &str| x.len() >= 2 && x.starts_with('"') && x.ends_with('"');
    if quoted(s) && !quoted(source.trim()) {
        s = &s[1..s.len() - 1];
    }
    s.trim().to_string()
}

/// Translates `text` with an instruct LLM. Each batch is one chat turn (instruction, then the
/// text); the model answers greedily.
pub fn translate_llm(
    model: &dyn Decoder,
    tok: &Tokenizer,
    text: &str,
    opts: &TranslateOptions,
    on_batch: &mut dyn FnMut(usize, usize),
    on_text: &mut dyn FnMut(&str),
) -> Result<TranslationReport> {
    let template = tok.chat().map_err(|e| Error::invalid("model", format!("translating needs an instruct model with a chat template ({e})")))?;
    if language_name(&opts.to).is_empty() {
        return Err(Error::invalid("--to", "the target language is empty"));
    }
    let context = opts.context.unwrap_or(model.info().context_length).min(model.info().context_length);
    let instruction = instruction(opts);
    let messages = |body: &str| [Message::new("user", format!("{instruction}\n\n{body}"))];
    let overhead = tok.encode(&template.render(&messages(""), true)?, false)?.len();
    // The answer may be up to twice the source's tokens (other scripts tokenize longer), plus
    // a margin for tokens that merge differently at batch boundaries.
    let room = context.saturating_sub(overhead + 32);
    let budget = (room / 3).min(opts.batch_tokens.max(8));
    if budget < 8 {
        return Err(Error::invalid("--context", format!("{context} tokens leave no room for the text once the instructions are counted")));
    }
    let count = |s: &str| tok.encode(s, false).map(|t| t.len()).unwrap_or(usize::MAX / 4);
    let to = language_name(&opts.to);
    let mut session = Session::new(model, tok).with_context_limit(Some(context));
    let mut translate = |batch: &[&str]| -> Result<Vec<String>> {
        batch
            .iter()
            .map(|src| {
                let prompt_ids = tok.encode(&template.render(&messages(src), true)?, false)?;
                let max_tokens = (count(src) * 2 + 16).min(context.saturating_sub(prompt_ids.len())).max(1);
                // A blank line ends the answer: what follows is commentary, not translation.
                let stop = vec!["\n\n".to_string()];
                let out = session.generate(&GenerateRequest { prompt_ids, max_tokens, sampling: opts.sampling.clone(), stop }, &mut |_| true)?;
                Ok(clean(&out.text, src, &to))
            })
            .collect()
    };
    translate_with(text, budget, &count, &mut translate, on_batch, on_text)
}

/// Code of a language name or code (`French` → `fr`), for T5's `task_specific_params` keys.
fn language_code(lang: &str) -> String {
    let name = language_name(lang);
    ["ar", "bg", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "he", "hi", "hu", "id", "it", "ja", "ko", "lt", "lv", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "sv", "th", "tr", "uk", "vi", "zh"]
        .into_iter()
        .find(|c| language_name(c) == name)
        .map_or_else(|| lang.trim().to_lowercase(), str::to_string)
}

/// Translates `text` with an encoder-decoder model. Marian (opus-mt) models translate one
/// fixed language pair, given by the checkpoint; T5 is told the pair with its task prefix
/// (from config.json's `task_specific_params` when it has one for the pair, else T5's
/// `translate English to German: ` form; the source defaults to English). Each batch of
/// sentences is one `generate` call, one sentence per row.
pub fn translate_seq2seq(
    model: &Seq2SeqModel,
    text: &str,
    opts: &TranslateOptions,
    overrides: &Seq2SeqOverrides,
    on_batch: &mut dyn FnMut(usize, usize),
    on_text: &mut dyn FnMut(&str),
) -> Result<TranslationReport> {
    let to = language_name(&opts.to);
    if to.is_empty() {
        return Err(Error::invalid("--to", "the target language is empty"));
    }
    let prefix = if model.info().architecture == "t5" {
        let from = opts.from.as_deref().unwrap_or("en");
        let task = format!("translation_{}_to_{}", language_code(from), language_code(&opts.to));
        model.task_prefix(&task).map_or_else(|| format!("translate {} to {to}: ", language_name(from)), str::to_string)
    } else {
        String::new()
    };
    let count = |s: &str| model.count_tokens(&format!("{prefix}{s}")).unwrap_or(usize::MAX / 4);
    // Sentences longer than the encoder takes are cut between words by the splitter; a batch
    // holds a few hundred tokens of sentences, each translated on its own row.
    let budget = model.max_source_tokens().min(256).saturating_sub(4).max(8);
    let mut translate = |batch: &[&str]| -> Result<Vec<String>> {
        batch
            .iter()
            .map(|chunk| {
                let rows: Vec<String> = sentences(chunk).iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| format!("{prefix}{s}")).collect();
                let longest = rows.iter().map(|r| count(r)).max().unwrap_or(1);
                let mut o = overrides.clone();
                // Room for a translation twice the source's length, unless the user chose.
                if o.max_new_tokens.is_none() && o.max_length.is_none() {
                    o.max_new_tokens = Some(longest * 2 + 16);
                }
                let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
                Ok(model.generate_texts(&refs, &o)?.join(" "))
            })
            .collect()
    };
    translate_with(text, budget, &count, &mut translate, on_batch, on_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn paragraph_structure_is_kept_and_every_sentence_is_translated_once() {
        let text = "  First one. Second one. Third one.\n\nAnother paragraph here.\n\n\n\nLast. Very last.\n";
        let mut seen = Vec::new();
        let mut upper = |b: &[&str]| -> Result<Vec<String>> {
            seen.extend(b.iter().map(|s| s.to_string()));
            Ok(b.iter().map(|s| s.to_uppercase()).collect())
        };
        let mut streamed = String::new();
        let r = translate_with(text, 4, &words, &mut upper, &mut |_, _| {}, &mut |s| streamed.push_str(s)).unwrap();
        assert_eq!(r.translation, "  FIRST ONE. SECOND ONE. THIRD ONE.\n\nANOTHER PARAGRAPH HERE.\n\n\n\nLAST. VERY LAST.\n");
        assert_eq!(streamed, r.translation);
        assert_eq!(r.paragraphs, 3);
        assert_eq!(paragraphs(&r.translation).len(), paragraphs(text).len());
        assert_eq!(seen.join(" "), text.split_whitespace().collect::<Vec<_>>().join(" "), "each sentence once, in order");
        assert!(seen.iter().all(|b| words(b) <= 4), "{seen:?}");
    }

    #[test]
    fn blank_lines_in_a_batch_translation_do_not_add_paragraphs() {
        let mut chatty = |b: &[&str]| -> Result<Vec<String>> { Ok(b.iter().map(|s| format!("{s}\n\n(extra)")).collect()) };
        let r = translate_with("One.\n\nTwo.", 100, &words, &mut chatty, &mut |_, _| {}, &mut |_| {}).unwrap();
        assert_eq!(r.translation, "One. (extra)\n\nTwo. (extra)");
    }

    #[test]
    fn empty_input_and_a_failing_translator_are_errors() {
        let mut ok = |b: &[&str]| -> Result<Vec<String>> { Ok(b.iter().map(|s| s.to_string()).collect()) };
        assert!(translate_with(" \n\n ", 10, &words, &mut ok, &mut |_, _| {}, &mut |_| {}).is_err());
        let mut none = |_: &[&str]| -> Result<Vec<String>> { Ok(Vec::new()) };
        assert!(translate_with("Hi.", 10, &words, &mut none, &mut |_, _| {}, &mut |_| {}).is_err());
    }

    #[test]
    fn languages_and_cleanup() {
        assert_eq!(language_name("fr"), "French");
        assert_eq!(language_name("DE"), "German");
        assert_eq!(language_name("klingon"), "Klingon");
        assert_eq!(language_code("German"), "de");
        assert_eq!(language_code("fr"), "fr");
        assert_eq!(clean("Translation: \"Bonjour.\"", "Hello.", "French"), "Bonjour.");
        assert_eq!(clean("French: Bonjour.", "Hello.", "French"), "Bonjour.");
        assert_eq!(clean("\"Oui\"", "\"Yes\"", "French"), "\"Oui\"");
    }
}
