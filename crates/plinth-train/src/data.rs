//! Training data: JSON lines of chat conversations (`{"messages": [...]}`), prompt /
//! completion pairs (`{"prompt", "completion"}`) or texts (`{"text"}`), or a plain text file
//! for continued pre-training; tokenized into `(ids, labels)` examples where only what the
//! model should learn to write is labelled: assistant turns of a chat (rendered through the
//! model's own chat template), the completion of a pair, every token of a text.
//!
//! Over-long examples are cut at `max_len` and counted in the [`DataReport`], never silently;
//! an example left with nothing to learn is dropped and counted. `pack` concatenates
//! examples into `max_len` windows (attention then crosses example boundaries, as in TRL's
//! default packing; labels stay as they were).

use std::path::Path;

use plinth_core::{Error, Result};
use plinth_tokenize::{Message, Tokenizer};
use serde_json::Value;

use crate::loss::IGNORE;

/// One record of a data file, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A conversation; loss on the assistant turns.
    Chat(Vec<Message>),
    /// Loss on the completion only.
    Prompt { prompt: String, completion: String },
    /// Loss on every token.
    Text(String),
}

/// One tokenized example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Per position: the token to learn at that position (`ids[t]`) or [`IGNORE`]; the loss
    /// shifts by one as transformers does.
    pub labels: Vec<i64>,
}

impl Example {
    /// Positions that count in the loss (after the shift).
    pub fn counted(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE).count()
    }
}

/// What loading did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DataReport {
    pub records: usize,
    pub examples: usize,
    /// Examples cut at `max_len`.
    pub truncated: usize,
    /// Examples dropped because nothing was left to learn after cutting.
    pub dropped: usize,
    pub tokens: usize,
    /// Tokens that count in the loss.
    pub label_tokens: usize,
    pub format: &'static str,
}

fn field<'a>(v: &'a Value, k: &str, line: usize, path: &Path) -> Result<&'a str> {
    v.get(k).and_then(Value::as_str).ok_or_else(|| Error::format(path, format!("line {line}: '{k}' must be a string")))
}

/// Reads a data file: `.jsonl` / `.json` (one JSON object per line) or anything else as plain
/// text (one record per file, for continued pre-training).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let is_json = path.extension().is_some_and(|e| e == "jsonl" || e == "json");
    if !is_json {
        if text.trim().is_empty() {
            return Err(Error::format(path, "the file is empty"));
        }
        return Ok(vec![Record::Text(text)]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let v: Value = serde_json::from_str(line).map_err(|e| Error::format(path, format!("line {n}: not valid JSON: {e}")))?;
        let rec = if let Some(msgs) = v.get("messages") {
            let list = msgs.as_array().ok_or_else(|| Error::format(path, format!("line {n}: 'messages' must be an array")))?;
            let messages = list
                .iter()
                .map(|m| Ok(Message::new(field(m, "role", n, path)?, field(m, "content", n, path)?)))
                .collect::<Result<Vec<_>>>()?;
            if !messages.iter().any(|m| m.role == "assistant") {
                return Err(Error::format(path, format!("line {n}: the conversation has no assistant message to learn")));
            }
            Record::Chat(messages)
        } else if v.get("prompt").is_some() || v.get("completion").is_some() {
            Record::Prompt { prompt: field(&v, "prompt", n, path)?.to_string(), completion: field(&v, "completion", n, path)?.to_string() }
        } else if v.get("text").is_some() {
            Record::Text(field(&v, "text", n, path)?.to_string())
        } else {
            return Err(Error::format(path, format!("line {n}: expected \"messages\", \"prompt\"/\"completion\" or \"text\"")));
        };
        out.push(rec);
    }
    if out.is_empty() {
        return Err(Error::format(path, "no records"));
    }
    Ok(out)
}

/// `(text, learn)` segments of a conversation: the chat template is rendered up to each
/// assistant turn with and without it, and the difference is that turn (its content and
/// end-of-turn marker). Needs a template whose renderings extend each other, which every
/// common one does; otherwise the error says so.
fn chat_segments(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<(String, bool)>> {
    let tpl = tok.chat()?;
    let all = tpl.render(messages, false)?;
    let mut segments = Vec::new();
    let mut pos = 0;
    for (k, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = tpl.render(&messages[..k], true)?;
        let through = tpl.render(&messages[..=k], false)?;
        if !through.starts_with(&before) || !all.starts_with(&through) || before.len() < pos {
            return Err(Error::Template(
                "the chat template does not render conversations incrementally, so assistant turns cannot be located for the loss mask".into(),
            ));
        }
        segments.push((all[pos..before.len()].to_string(), false));
        segments.push((through[before.len()..].to_string(), true));
        pos = through.len();
    }
    if pos < all.len() {
        segments.push((all[pos..].to_string(), false));
    }
    Ok(segments)
}

fn encode_segments(tok: &Tokenizer, segments: &[(String, bool)], bos: bool) -> Result<Example> {
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    if bos {
        if let Some(b) = tok.bos_id() {
            ids.push(b);
            labels.push(IGNORE);
        }
    }
    for (text, learn) in segments.iter().filter(|(t, _)| !t.is_empty()) {
        let t = tok.encode(text, false)?;
        labels.extend(t.iter().map(|&id| if *learn { id as i64 } else { IGNORE }));
        ids.extend(t);
    }
    Ok(Example { ids, labels })
}

/// Tokenizes records into examples of at most `max_len` tokens.
pub fn tokenize(tok: &Tokenizer, records: &[Record], max_len: usize, pack: bool) -> Result<(Vec<Example>, DataReport)> {
    if max_len < 2 {
        return Err(Error::invalid("--max-len", "must be at least 2"));
    }
    let mut report = DataReport { records: records.len(), ..Default::default() };
    let eos = tok.eos_ids().first().copied();
    let mut examples = Vec::new();
    for r in records {
        let ex = match r {
            Record::Chat(m) => {
                report.format = "chat";
                encode_segments(tok, &chat_segments(tok, m)?, false)?
            }
            Record::Prompt { prompt, completion } => {
                report.format = "prompt-completion";
                let mut e = encode_segments(tok, &[(prompt.clone(), false), (completion.clone(), true)], tok.add_bos())?;
                if let Some(eos) = eos {
                    e.ids.push(eos);
                    e.labels.push(eos as i64);
                }
                e
            }
            Record::Text(t) => {
                report.format = "text";
                // (A BOS at position 0 is never a target: the loss starts at position 1.)
                let e = encode_segments(tok, &[(t.clone(), true)], tok.add_bos())?;
                // A long text is training material, not one example: cut it into windows.
                if e.ids.len() > max_len && !pack {
                    for (ids, labels) in e.ids.chunks(max_len).zip(e.labels.chunks(max_len)) {
                        let w = Example { ids: ids.to_vec(), labels: labels.to_vec() };
                        if w.counted() > 0 {
                            examples.push(w);
                        }
                    }
                    continue;
                }
                e
            }
        };
        examples.push(ex);
    }
    let mut out = Vec::new();
    if pack {
        let (mut ids, mut labels) = (Vec::new(), Vec::new());
        for e in examples {
            ids.extend(e.ids);
            labels.extend(e.labels);
        }
        for (i, l) in ids.chunks(max_len).zip(labels.chunks(max_len)) {
            out.push(Example { ids: i.to_vec(), labels: l.to_vec() });
        }
    } else {
        for mut e in examples {
            if e.ids.len() > max_len {
                e.ids.truncate(max_len);
                e.labels.truncate(max_len);
                report.truncated += 1;
            }
            out.push(e);
        }
    }
    let before = out.len();
    out.retain(|e| e.ids.len() >= 2 && e.counted() > 0);
    report.dropped = before - out.len();
    report.examples = out.len();
    report.tokens = out.iter().map(|e| e.ids.len()).sum();
    report.label_tokens = out.iter().map(Example::counted).sum();
    if out.is_empty() {
        return Err(Error::invalid("training data", format!("no example has anything to learn after cutting at {max_len} tokens")));
    }
    Ok((out, report))
}
