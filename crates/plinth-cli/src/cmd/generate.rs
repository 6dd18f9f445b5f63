//! `plinth generate`: one prompt in, one completion out (streamed, or one JSON object).

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result};
use candle_core::Tensor;
use plinth_engine::{GenerateOutput, GenerateRequest, Session};
use plinth_tokenize::Message;
use serde_json::json;

use crate::cli::GenerateArgs;
use crate::load;

pub fn run(a: GenerateArgs) -> Result<()> {
    // Flags are checked before the (slow) model load, then merged with the model's defaults.
    a.sampling.params(&Default::default())?;
    let prompt = match a.prompt {
        Some(p) => p,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the prompt from stdin")?;
            s
        }
    };
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty (give --prompt TEXT or pipe text on stdin)");
    }
    let m = load::load(&a.model)?;
    let sampling = a.sampling.params(&m.generation)?;
    let prompt_ids = if a.chat {
        let template = m.tokenizer.chat()?;
        let mut messages = Vec::new();
        if let Some(s) = a.system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", prompt));
        // The rendered template already contains any BOS text it wants.
        m.tokenizer.encode(&template.render(&messages, true)?, false)?
    } else {
        m.tokenizer.encode(&prompt, true)?
    };
    let req = GenerateRequest { prompt_ids, max_tokens: a.sampling.max_tokens, sampling, stop: a.sampling.stop.clone() };
    let mut session = Session::new(m.model.as_ref(), &m.tokenizer).with_context_limit(a.sampling.context);
    let out = run_and_print(&mut session, &req, None, a.json)?;
    report(&out, a.json, json!({"text": out.text, "token_ids": out.token_ids}), "")
}

/// Runs `req` (with image tiles, for vision-language models), streaming the text to stdout
/// unless `json` (then it is returned for one JSON object).
pub fn run_and_print(session: &mut Session, req: &GenerateRequest, pixels: Option<&Tensor>, json: bool) -> Result<GenerateOutput> {
    if json {
        return Ok(session.generate_with_images(req, pixels, &mut |_| true)?);
    }
    let mut lock = std::io::stdout().lock();
    let out = session.generate_with_images(req, pixels, &mut |piece| {
        // A closed pipe (e.g. `| head`) cancels generation instead of failing.
        lock.write_all(piece.as_bytes()).and_then(|_| lock.flush()).is_ok()
    })?;
    let _ = writeln!(lock);
    Ok(out)
}

/// Prints the counts and rates of a generation: merged into `fields` as one JSON object with
/// `json`, else a one-line summary on a terminal's stderr (after `prefix`).
pub fn report(out: &GenerateOutput, json: bool, mut fields: serde_json::Value, prefix: &str) -> Result<()> {
    if json {
        let counts = json!({
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "finish_reason": out.finish_reason,
            "prefill_tok_s": round2(out.prefill_tok_s()),
            "decode_tok_s": round2(out.decode_tok_s()),
        });
        if let (Some(f), Some(c)) = (fields.as_object_mut(), counts.as_object()) {
            f.extend(c.clone());
        }
        println!("{fields}");
    } else if std::io::stderr().is_terminal() {
        eprintln!(
            "[{prefix}{} prompt tokens, {} generated, prefill {:.1} tok/s, decode {:.1} tok/s, finish: {:?}]",
            out.prompt_tokens,
            out.completion_tokens,
            out.prefill_tok_s(),
            out.decode_tok_s(),
            out.finish_reason
        );
    }
    Ok(())
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
