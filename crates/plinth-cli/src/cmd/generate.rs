//! `plinth generate`: one prompt in, one completion out (streamed, or one JSON object).

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result};
use plinth_engine::{GenerateRequest, Session};
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
    let stdout = std::io::stdout();
    let out = if a.json {
        session.generate(&req, &mut |_| true)?
    } else {
        let mut lock = stdout.lock();
        let out = session.generate(&req, &mut |piece| {
            // A closed pipe (e.g. `| head`) cancels generation instead of failing.
            lock.write_all(piece.as_bytes()).and_then(|_| lock.flush()).is_ok()
        })?;
        let _ = writeln!(lock);
        out
    };
    if a.json {
        let v = json!({
            "text": out.text,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "token_ids": out.token_ids,
            "finish_reason": out.finish_reason,
            "prefill_tok_s": round2(out.prefill_tok_s()),
            "decode_tok_s": round2(out.decode_tok_s()),
        });
        println!("{v}");
    } else if std::io::stderr().is_terminal() {
        eprintln!(
            "[{} prompt tokens, {} generated, prefill {:.1} tok/s, decode {:.1} tok/s, finish: {:?}]",
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
