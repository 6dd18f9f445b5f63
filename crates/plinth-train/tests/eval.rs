use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{fixture, smollm2_gguf};
use plinth_tokenize::{Message, Tokenizer};
use plinth_train::eval::*;

#[test]
fn probe() {
    let loaded = load_decoder(&ModelLocation::Gguf(smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    let m = loaded.model.as_ref();
    println!("{:?} ctx {}", tok, m.info().context_length);
    let text = std::fs::read_to_string(fixture("smollm2/passage.txt")).unwrap();
    let ids = perplexity_tokens(&tok, &text).unwrap();
    println!("n tokens {}", ids.len());
    let r = perplexity(m, &ids, PerplexityOptions { ctx: 128, ..PerplexityOptions::for_tokenizer(&tok) }).unwrap();
    println!("{r:?}");
    let r1 = perplexity(m, &ids, PerplexityOptions { ctx: 128, max_chunks: Some(1), ..PerplexityOptions::for_tokenizer(&tok) }).unwrap();
    println!("{r1:?}");
    let ex = vec![
        Example::Chat(vec![Message::new("user", "What is the capital of France?"), Message::new("assistant", "Paris")]),
        Example::Chat(vec![Message::new("user", "What is 2 + 2? Answer with a number only."), Message::new("assistant", "4")]),
        Example::Chat(vec![Message::new("user", "Name the largest planet in the solar system. Answer with one word."), Message::new("assistant", "Jupiter")]),
        Example::Prompt { prompt: "The capital of France is".into(), completion: " Paris".into() },
        Example::Prompt { prompt: "Q: What color is the sky on a clear day?\nA:".into(), completion: " Blue".into() },
    ];
    let t = std::time::Instant::now();
    let a = evaluate_examples(m, &tok, &ex, EvalOptions::default()).unwrap();
    println!("{:#?} {:?}", a, t.elapsed());
}
