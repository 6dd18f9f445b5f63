//! Summarizing a document five times the context with the real SmolLM2: the map round covers
//! every part of the document exactly once, the reduce rounds bring it to one summary, and
//! the summary streams.

use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_tasks::summarize::{summarize, Style, SummarizeOptions};
use plinth_tokenize::Tokenizer;

#[test]
fn a_document_five_times_the_context_is_covered_once_and_summarized() {
    let loaded = load_decoder(&ModelLocation::Gguf(plinth_testutil::smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    let passage = std::fs::read_to_string(plinth_testutil::fixture("smollm2/passage.txt")).unwrap();
    let context = 512;
    // Paragraphs of the passage, numbered so that every part differs, until 5x the context.
    let mut doc = String::new();
    let mut i = 0;
    while tok.encode(&doc, false).unwrap().len() < 5 * context {
        let para = passage.split("\n\n").nth(i % 3).unwrap_or(&passage).trim();
        doc += &format!("Section {i}. {para}\n\n");
        i += 1;
    }
    let opts = SummarizeOptions { words: 12, style: Style::Paragraph, context: Some(context), ..Default::default() };
    let mut streamed = String::new();
    let mut parts_done = 0;
    let report = summarize(loaded.model.as_ref(), &tok, &doc, &opts, &mut |_, _| parts_done += 1, &mut |t| streamed.push_str(t)).unwrap();
    println!("{} tokens, {} parts, {} rounds: {}", report.tokens, report.parts.len(), report.rounds, report.summary);
    assert!(report.tokens >= 5 * context);
    assert!(report.parts.len() >= 5, "{} parts", report.parts.len());
    // Contiguous, in order, from the first byte to the last: each part seen once.
    let mut pos = 0;
    for &(a, b) in &report.parts {
        assert_eq!(a, pos);
        assert!(b > a);
        pos = b;
    }
    assert_eq!(pos, doc.len());
    assert!(report.rounds >= 2 && parts_done >= report.parts.len());
    assert!(!report.summary.is_empty());
    assert_eq!(streamed.trim(), report.summary);
}

#[test]
fn models_without_a_chat_template_and_empty_text_are_refused() {
    let loaded = load_decoder(&ModelLocation::Gguf(plinth_testutil::smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    let e = summarize(loaded.model.as_ref(), &tok, "  \n", &SummarizeOptions::default(), &mut |_, _| {}, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = summarize(loaded.model.as_ref(), &tok, "x", &SummarizeOptions { context: Some(40), ..Default::default() }, &mut |_, _| {}, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("--context"), "{e}");
}
