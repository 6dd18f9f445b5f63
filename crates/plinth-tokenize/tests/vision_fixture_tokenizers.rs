//! The tiny vision fixtures' `tokenizer.json` files (`scripts/make_vision_fixtures.py`) load in
//! plinth and give the ids the Python `tokenizers` library gives: CLIP's start/end-of-text
//! template, SigLIP's appended `</s>`, Idefics3's added tokens and its chat template.

use plinth_testutil::fixture;
use plinth_tokenize::Tokenizer;

fn load(dir: &str) -> Tokenizer {
    Tokenizer::from_file(&fixture(dir).join("tokenizer.json")).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

#[test]
fn vision_fixture_tokenizers_match_python() {
    assert_eq!(load("tiny-clip").encode("a photo of a cat", true).unwrap(), vec![25, 1, 2, 3, 1, 5, 26]);
    assert_eq!(load("tiny-siglip").encode("a photo of a cat", true).unwrap(), vec![3, 4, 5, 3, 7, 1]);
    let t = load("tiny-idefics3");
    let prompt = "<|im_start|>User:<image>Describe this image.<end_of_utterance>\nAssistant:";
    assert_eq!(t.encode(prompt, false).unwrap(), vec![1, 3, 26, 31, 5, 17, 21, 27, 69, 4, 26]);
    // The SmolVLM template is there; it reads content parts (`{"type": "image"}`), which plain
    // string messages do not have, so rendering is the task layer's job.
    assert!(t.chat_template().is_some_and(|c| c.contains("<image>")));
}

/// The vocabulary size is read once at load (tokenizers rebuilds its whole vocabulary map to
/// answer it, and the sampler asks for every token: decoding ran at half speed), and it counts
/// the added tokens as tokenizers does.
#[test]
fn vocab_size_is_cached_and_counts_added_tokens() {
    for dir in ["tiny-clip", "tiny-siglip", "tiny-idefics3"] {
        let t = load(dir);
        assert_eq!(t.vocab_size(), t.inner().get_vocab_size(true), "{dir}");
        assert!(t.special_tokens().iter().all(|(_, id)| (*id as usize) < t.vocab_size()), "{dir}");
    }
}
