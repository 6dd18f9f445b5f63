//! `plinth chat`: an interactive conversation. The session's KV cache carries the
//! conversation from turn to turn; when the history no longer fits the context window the
//! oldest whole turns are dropped, with a notice, and the cache is rebuilt.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use plinth_engine::{GenerateRequest, Session};
use plinth_tokenize::Message;

use crate::cli::ChatArgs;
use crate::load;

/// One unit of user input.
enum Input {
    Text(String),
    Reset,
    Exit,
    Help,
}

/// Reads one message: a line, lines joined by a trailing `\`, or a `"""` block.
fn read_input(lines: &mut impl Iterator<Item = std::io::Result<String>>, interactive: bool) -> Result<Input> {
    let prompt = |p: &str| {
        if interactive {
            print!("{p}");
            let _ = std::io::stdout().flush();
        }
    };
    prompt("> ");
    let mut buf = String::new();
    let mut in_block = false;
    loop {
        let Some(line) = lines.next() else {
            return Ok(if buf.trim().is_empty() { Input::Exit } else { Input::Text(buf) });
        };
        let line = line?;
        if !in_block && buf.is_empty() {
            match line.trim() {
                "/exit" | "/quit" => return Ok(Input::Exit),
                "/reset" => return Ok(Input::Reset),
                "/help" => return Ok(Input::Help),
                "\"\"\"" => {
                    in_block = true;
                    prompt(". ");
                    continue;
                }
                "" => {
                    prompt("> ");
                    continue;
                }
                _ => {}
            }
        }
        if in_block {
            if line.trim() == "\"\"\"" {
                return Ok(Input::Text(buf.trim_end_matches('\n').to_string()));
            }
            buf.push_str(&line);
            buf.push('\n');
            prompt(". ");
        } else if let Some(stripped) = line.strip_suffix('\\') {
            buf.push_str(stripped);
            buf.push('\n');
            prompt(". ");
        } else {
            buf.push_str(&line);
            return Ok(Input::Text(buf));
        }
    }
}

pub fn run(a: ChatArgs) -> Result<()> {
    // Flags are checked before the (slow) model load, then merged with the model's defaults.
    a.sampling.params(&Default::default())?;
    let images = load::read_images(&a.image)?;
    let m = load::load(&a.model)?;
    let prompter = if images.is_empty() { None } else { Some(load::image_prompter(&m, "--image")?) };
    let sampling = a.sampling.params(&m.generation)?;
    let template = m.tokenizer.chat()?;
    let mut session = Session::new(m.model.as_ref(), &m.tokenizer).with_context_limit(a.sampling.context);
    let context = session.context_length();
    // Room kept free for the reply when deciding whether history fits.
    let reserve = a.sampling.max_tokens.min(context / 2);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "plinth chat: {} ({} context tokens). Enter sends; end a line with \\ to continue it; /reset, /exit.",
            m.location.path().display(),
            context
        );
    }
    let system: Vec<Message> = a.system.map(|s| Message::new("system", s)).into_iter().collect();
    let mut turns: Vec<Message> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut turn_no = 0u64;
    loop {
        let text = match read_input(&mut lines, interactive)? {
            Input::Exit => break,
            Input::Help => {
                eprintln!("/reset forgets the conversation, /exit quits; end a line with \\ or use a \"\"\" block for multi-line input");
                continue;
            }
            Input::Reset => {
                turns.clear();
                session.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            Input::Text(t) => t,
        };
        // The images go with the first message of the conversation (and again after /reset).
        let first = !turns.iter().any(|t: &Message| t.role == "user");
        turns.push(match &prompter {
            Some(_) if first => plinth_tasks::vlm::image_turn(images.len(), &text),
            _ => Message::new("user", text),
        });
        let ids = loop {
            let mut all: Vec<Message> = system.iter().chain(turns.iter()).cloned().collect();
            if m.model.vision().is_some() {
                all = plinth_tasks::vlm::as_parts(&all);
            }
            let rendered = template.render(&all, true)?;
            // Once the image turn has been dropped for space, the images go with it.
            let shown = if all.iter().any(|t| t.images() > 0) { &images[..] } else { &[] };
            let (rendered, pixels) = match &prompter {
                Some(p) => p.expand(&rendered, shown)?,
                None => (rendered, None),
            };
            let ids = m.tokenizer.encode(&rendered, false)?;
            if ids.len() + reserve <= context {
                break Some((ids, pixels));
            }
            if turns.len() > 1 {
                // Drop the oldest exchange (user + assistant) whole, never part of a message.
                let n = if turns.len() > 2 && turns[1].role == "assistant" { 2 } else { 1 };
                turns.drain(..n);
                eprintln!("(dropped the oldest {n} message(s) to stay within the {context}-token context window)");
                continue;
            }
            eprintln!(
                "(that message is {} tokens with the template; with {} tokens kept for the reply it does not fit the {}-token context window — shorten it or lower --max-tokens)",
                ids.len(),
                reserve,
                context
            );
            turns.pop();
            break None;
        };
        let Some((prompt_ids, pixels)) = ids else { continue };
        let mut sp = sampling.clone();
        // Vary the seed per turn so that repeating a question does not repeat the answer verbatim,
        // while a whole scripted conversation stays reproducible.
        sp.seed = sampling.seed.wrapping_add(turn_no);
        turn_no += 1;
        let req = GenerateRequest { prompt_ids, max_tokens: a.sampling.max_tokens, sampling: sp, stop: a.sampling.stop.clone() };
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let res = session
            .generate_with_images(&req, pixels.as_ref(), &mut |piece| out.write_all(piece.as_bytes()).and_then(|_| out.flush()).is_ok())?;
        writeln!(out)?;
        turns.push(Message::new("assistant", res.text));
    }
    Ok(())
}
