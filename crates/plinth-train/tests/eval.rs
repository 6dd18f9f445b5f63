use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::smollm2_gguf;
use plinth_tokenize::{Message, Tokenizer};
use plinth_train::eval::*;

#[test]
fn probe() {
    let loaded = load_decoder(&ModelLocation::Gguf(smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    let m = loaded.model.as_ref();
    let c = |q: &str| Example::Chat(vec![Message::new("user", q), Message::new("assistant", "Paris")]);
    let cs = |s: &str, q: &str| Example::Chat(vec![Message::new("system", s), Message::new("user", q), Message::new("assistant", "Paris")]);
    let ex = vec![
        c("What is the capital of France? Answer with one word."),
        c("What is the capital of France? Reply with just the city name."),
        cs("Answer with a single word.", "What is the capital of France?"),
        cs("You are a helpful assistant.", "What is the capital of France?"),
        c("Capital of France?"),
        c("Which city is the capital of France?"),
        c("Say hello."),
        c("Translate 'thank you' into French."),
        c("What is the opposite of hot?"),
        Example::Prompt { prompt: "Q: What is the capital of France?\nA:".into(), completion: " Paris".into() },
    ];
    let a = evaluate_examples(m, &tok, &ex, EvalOptions { max_tokens: Some(24), ..Default::default() }).unwrap();
    for r in &a.per_example { println!("{:?} {:?} nll {:.3} with end {:.3} ({} / {})", r.generated, r.finish_reason, r.nll_mean, r.nll_mean_with_end, r.reference_tokens, r.tokens_with_end); }
}
