//! Shared by the tokenizer parity tests: streaming decode, and the per-case comparison with a
//! Hugging Face reference that collects every mismatch instead of stopping at the first.

use plinth_tokenize::{Detokenizer, Tokenizer};

/// Decodes `ids` one token at a time through the streaming detokenizer.
pub fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = Detokenizer::new(tok, false);
    let mut out = String::new();
    for &id in ids {
        out.push_str(&d.push(id).unwrap());
    }
    out.push_str(&d.finish().unwrap());
    out
}

/// Appends to `failures` every way `text` disagrees with the reference: encoding without
/// special tokens (`ids`), decoding (`decoded`), and streaming decode vs plain decode.
pub fn compare_case(tok: &Tokenizer, text: &str, ids: &[u32], decoded: &str, failures: &mut Vec<String>) {
    let got = tok.encode(text, false).unwrap();
    if got != ids {
        failures.push(format!("encode {text:?}\n   got  {got:?}\n   want {ids:?}"));
    }
    let got = tok.decode(ids, false).unwrap();
    if got != decoded {
        failures.push(format!("decode {text:?}: got {got:?}, want {decoded:?}"));
    }
    let streamed = stream(tok, ids);
    if streamed != got {
        failures.push(format!("stream {text:?}: got {streamed:?}, decode gives {got:?}"));
    }
}
