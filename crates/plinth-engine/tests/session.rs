//! The generation loop on the real SmolLM2 model: cache reuse across turns gives the same
//! tokens as recomputing from scratch, streamed pieces add up to the returned text, and
//! `max_tokens` / stop strings end generation with the right finish reason.

use plinth_engine::{FinishReason, GenerateRequest, SamplingParams, Session};
use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::smollm2_gguf;
use plinth_tokenize::{Message, Tokenizer};

fn setup() -> (Box<dyn plinth_models::Decoder>, Tokenizer) {
    let loaded = load_decoder(&ModelLocation::Gguf(smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    (loaded.model, tok)
}

fn chat_ids(tok: &Tokenizer, msgs: &[(&str, &str)]) -> Vec<u32> {
    let msgs: Vec<Message> = msgs.iter().map(|(r, c)| Message::new(*r, *c)).collect();
    tok.encode(&tok.chat().unwrap().render(&msgs, true).unwrap(), false).unwrap()
}

fn req(ids: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest { prompt_ids: ids, max_tokens, sampling: SamplingParams::greedy(), stop: vec![] }
}

#[test]
fn second_turn_reuses_the_cache_and_matches_a_fresh_session() {
    let (model, tok) = setup();
    let mut warm = Session::new(model.as_ref(), &tok);
    let first = warm.generate(&req(chat_ids(&tok, &[("user", "Name a colour.")]), 12), &mut |_| true).unwrap();
    assert_eq!(first.prefilled_tokens, first.prompt_tokens);

    let turn2 = chat_ids(&tok, &[("user", "Name a colour."), ("assistant", &first.text), ("user", "And another one?")]);
    let reused = warm.generate(&req(turn2.clone(), 16), &mut |_| true).unwrap();
    assert!(
        reused.prefilled_tokens < reused.prompt_tokens / 2,
        "cache not reused: prefilled {} of {}",
        reused.prefilled_tokens,
        reused.prompt_tokens
    );
    let mut fresh = Session::new(model.as_ref(), &tok);
    let recomputed = fresh.generate(&req(turn2, 16), &mut |_| true).unwrap();
    assert_eq!(recomputed.prefilled_tokens, recomputed.prompt_tokens);
    assert_eq!(reused.token_ids, recomputed.token_ids, "cache reuse changed the output");
}

#[test]
fn streamed_pieces_add_up_and_limits_set_the_finish_reason() {
    let (model, tok) = setup();
    let mut s = Session::new(model.as_ref(), &tok);
    let ids = tok.encode("Count: one, two, three,", false).unwrap();
    let mut streamed = String::new();
    let out = s.generate(&req(ids.clone(), 10), &mut |p| {
        streamed.push_str(p);
        true
    }).unwrap();
    assert_eq!(streamed, out.text);
    assert_eq!(out.completion_tokens, 10);
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(tok.decode(&out.token_ids, true).unwrap(), out.text);

    // Stop on text that the greedy continuation contains: the output ends right before it.
    let word = out.text.split(',').nth(1).unwrap().trim().to_string();
    assert!(!word.is_empty(), "{:?}", out.text);
    let mut r = req(ids, 10);
    r.stop = vec![word.clone()];
    let stopped = s.generate(&r, &mut |_| true).unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, out.text[..out.text.find(&word).unwrap()]);

    // Cancelling from the callback ends generation at once.
    let mut n = 0;
    let cancelled = s.generate(&req(tok.encode("Hello", false).unwrap(), 50), &mut |_| {
        n += 1;
        n < 3
    }).unwrap();
    assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
    assert!(cancelled.completion_tokens < 50);
}

#[test]
fn oversized_prompt_and_zero_budget_are_errors() {
    let (model, tok) = setup();
    let mut s = Session::new(model.as_ref(), &tok).with_context_limit(Some(16));
    let e = s.generate(&req(vec![100; 16], 4), &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("16 tokens") && e.contains("context window is 16"), "{e}");
    let e = s.generate(&req(vec![100; 4], 0), &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("max_tokens"), "{e}");
}
