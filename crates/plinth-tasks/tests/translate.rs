//! Translating a multi-paragraph text with the real SmolLM2 under a small context: every
//! paragraph is cut into sentence batches that fit, the output has exactly the input's
//! paragraphs (same separators), and what streams is what is returned. Translation quality
//! of a 135M model is poor and is reported in docs/TASKS.md, not asserted here.

use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_tasks::chunk::paragraphs;
use plinth_tasks::translate::{translate_llm, TranslateOptions};
use plinth_tokenize::Tokenizer;

#[test]
fn paragraphs_are_kept_and_long_ones_go_in_several_batches() {
    let loaded = load_decoder(&ModelLocation::Gguf(plinth_testutil::smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    let text = "The train leaves at nine. It arrives in Paris at noon. We will eat lunch near the river. \
                Then we will visit the museum. The tickets are cheap on Sundays.\n\n\
                My sister likes cats.\n\n\n\
                The library opens early. It closes late on Fridays.\n";
    let mut opts = TranslateOptions::new("fr");
    opts.from = Some("en".into());
    opts.batch_tokens = 24;
    let mut streamed = String::new();
    let mut batches = 0;
    let r = translate_llm(loaded.model.as_ref(), &tok, text, &opts, &mut |_, _| batches += 1, &mut |t| streamed.push_str(t)).unwrap();
    println!("{} batches:\n{}", r.batches, r.translation);
    assert_eq!(r.paragraphs, 3);
    let (src, dst) = (paragraphs(text), paragraphs(&r.translation));
    assert_eq!(dst.len(), src.len(), "paragraph count kept");
    for (s, d) in src.iter().zip(&dst) {
        // Same separator after each paragraph, and something translated in each.
        let sep = |p: &str| p[p.trim_end().len()..].to_string();
        assert_eq!(sep(s), sep(d));
        assert!(!d.trim().is_empty());
    }
    assert!(r.batches >= 4, "the first paragraph needs several batches at 24 tokens: {}", r.batches);
    assert_eq!(batches, r.batches);
    assert_eq!(streamed, r.translation);
}

#[test]
fn a_context_too_small_for_the_instructions_is_refused() {
    let loaded = load_decoder(&ModelLocation::Gguf(plinth_testutil::smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    let mut opts = TranslateOptions::new("de");
    opts.context = Some(40);
    let e = translate_llm(loaded.model.as_ref(), &tok, "Hello.", &opts, &mut |_, _| {}, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("--context"), "{e}");
}
