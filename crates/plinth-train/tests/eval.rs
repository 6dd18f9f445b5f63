//! Evaluation: llama.cpp-style perplexity against a brute-force computation written here
//! (tiny Llama), on the real SmolLM2 against the committed transformers / llama.cpp per-token
//! references and with a no-op adapter attached, and answer accuracy on the real SmolLM2.

use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder, Decoder, KvCache};
use plinth_testutil::{fixture, smollm2_gguf};
use plinth_tokenize::{Message, Tokenizer};
use plinth_train::eval::{
    evaluate_examples, perplexity, perplexity_tokens, EvalOptions, Example, PerplexityOptions, PerplexityProgress,
};
use plinth_train::LoraSet;
use rand::{Rng, SeedableRng};

/// Chunked incremental forward vs one full forward per chunk, f32 logits, f64 reductions.
const TINY_TOL: f64 = 1e-5;

fn tiny() -> Box<dyn Decoder> {
    load_decoder(&ModelLocation::Dir(fixture("tiny-llama"))).unwrap().model
}

fn smollm2() -> (Box<dyn Decoder>, Tokenizer) {
    let loaded = load_decoder(&ModelLocation::Gguf(smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
    (loaded.model, tok)
}

/// f64 `-log softmax(row)[t]`.
fn nll(row: &[f32], t: u32) -> f64 {
    let max = row.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    lse - row[t as usize] as f64
}

/// llama-perplexity's default algorithm, written out plainly: `len / ctx` chunks, each run in
/// one forward pass from an empty cache with its first token replaced by BOS (if any); the
/// logits at positions `ctx/2 ..= ctx-2` score the chunk's next tokens. Returns (scored, mean NLL).
fn brute_force(m: &dyn Decoder, ids: &[u32], ctx: usize, bos: Option<u32>, max_chunks: usize) -> (usize, f64) {
    let (mut sum, mut count) = (0f64, 0usize);
    for chunk in ids.chunks_exact(ctx).take(max_chunks) {
        let mut input = chunk.to_vec();
        if let Some(b) = bos {
            input[0] = b;
        }
        let logits = m.forward(&input, &mut KvCache::new(m.info().num_layers), true).unwrap().to_vec2::<f32>().unwrap();
        for j in ctx / 2..ctx - 1 {
            sum += nll(&logits[j], chunk[j + 1]);
            count += 1;
        }
    }
    (count, sum / count as f64)
}

#[test]
fn tiny_llama_perplexity_matches_brute_force_chunking() {
    let m = tiny();
    assert_eq!(m.info().context_length, 128);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    // Ids 3.. so that no chunk starts with BOS (1) by chance and the replacement shows.
    let ids: Vec<u32> = (0..300).map(|_| rng.random_range(3..256)).collect();
    for (ctx, bos, max_chunks) in [(32, None, None), (32, Some(1), None), (33, Some(1), None), (128, None, None), (40, Some(1), Some(3))] {
        let mut seen: Vec<PerplexityProgress> = Vec::new();
        let r = perplexity(
            m.as_ref(),
            &ids,
            PerplexityOptions { ctx, bos, max_chunks, progress: Some(Box::new(|p: &PerplexityProgress| seen.push(*p))) },
        )
        .unwrap();
        let chunks = (300 / ctx).min(max_chunks.unwrap_or(usize::MAX));
        let (count, mean) = brute_force(m.as_ref(), &ids, ctx, bos, chunks);
        println!("ctx {ctx} bos {bos:?}: {} chunks, {} scored, nll {:.6} (brute force {mean:.6}), ppl {:.4}", r.chunks, r.tokens_scored, r.nll_mean, r.ppl);
        assert_eq!((r.ctx, r.tokens, r.chunks, r.tokens_scored), (ctx, 300, chunks, count));
        assert_eq!(count, chunks * (ctx - 1 - ctx / 2));
        assert!((r.nll_mean - mean).abs() <= TINY_TOL, "ctx {ctx}: nll {} vs brute force {mean}", r.nll_mean);
        assert!((r.ppl - r.nll_mean.exp()).abs() <= 1e-12 * r.ppl);
        assert!(r.ppl_stderr.unwrap() > 0.0);
        assert_eq!(seen.len(), chunks);
        assert_eq!((seen[chunks - 1].chunk, seen[chunks - 1].tokens_scored), (chunks, count));
        assert!((seen[chunks - 1].ppl - r.ppl).abs() <= 1e-12 * r.ppl);
    }
    // The BOS replacement is applied: it changes the result on a stream without BOS.
    let a = perplexity(m.as_ref(), &ids, PerplexityOptions { ctx: 32, ..Default::default() }).unwrap();
    let b = perplexity(m.as_ref(), &ids, PerplexityOptions { ctx: 32, bos: Some(1), ..Default::default() }).unwrap();
    assert!((a.nll_mean - b.nll_mean).abs() > 1e-4, "BOS replacement made no difference");
    // llama.cpp's preconditions.
    let err = |ctx, n: usize| perplexity(m.as_ref(), &ids[..n], PerplexityOptions { ctx, ..Default::default() }).unwrap_err().to_string();
    assert!(err(32, 63).contains("at least 64"), "{}", err(32, 63));
    assert!(err(129, 300).contains("context window"), "{}", err(129, 300));
    assert!(err(2, 300).contains("at least 3"), "{}", err(2, 300));
    assert!(perplexity(m.as_ref(), &ids[..64], PerplexityOptions { ctx: 32, ..Default::default() }).is_ok());
}

/// SmolLM2-135M-Instruct Q4_1 on the committed passage (501 tokens) at ctx 128: 3 chunks of
/// 63 scored tokens. Measured: ppl 25.00 (nll 3.2189); chunk 0 alone 14.877.
///
/// Chunk 0 starts at the passage's first token and SmolLM2 adds no BOS, so its scored tokens
/// see exactly the context they see in the committed full-passage references: its NLL must
/// equal the mean of their per-token NLLs at positions 64..=126 — transformers' (the f32
/// prefill path plinth matches, measured |Δ| 6e-7) to 1e-4, llama.cpp's (8-bit activations,
/// measured ppl 14.743, -0.9 %) within 2 %. Plausible range for the 3-chunk ppl: 15..40 (the
/// full-context ppl of the scored positions is 22.0; half-context chunks see less).
#[test]
fn smollm2_perplexity_at_ctx_128_and_a_noop_adapter_changes_nothing() {
    let (m, tok) = smollm2();
    let text = std::fs::read_to_string(fixture("smollm2/passage.txt")).unwrap();
    let ids = perplexity_tokens(&tok, &text).unwrap();
    let reference = |name: &str| -> (Vec<u32>, Vec<f64>) {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(&format!("smollm2/{name}"))).unwrap()).unwrap();
        let ids = v["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        (ids, v["nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
    };
    let (hf_ids, hf_nll) = reference("reference.json");
    let (lc_ids, lc_nll) = reference("reference_llamacpp.json");
    assert_eq!(ids, hf_ids, "passage tokenization differs from the references'");
    assert_eq!(ids, lc_ids);
    let opts = || PerplexityOptions { ctx: 128, ..PerplexityOptions::for_tokenizer(&tok) };
    assert_eq!(opts().bos, None, "SmolLM2 adds no BOS");

    let r = perplexity(m.as_ref(), &ids, opts()).unwrap();
    println!("SmolLM2 ctx 128: {r:?}");
    assert_eq!((r.tokens, r.chunks, r.tokens_scored), (501, 3, 189));
    assert!(r.ppl.is_finite() && (15.0..40.0).contains(&r.ppl), "perplexity {} outside 15..40", r.ppl);

    let first = perplexity(m.as_ref(), &ids, PerplexityOptions { max_chunks: Some(1), ..opts() }).unwrap();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (hf, lc) = (mean(&hf_nll[64..127]), mean(&lc_nll[64..127]));
    println!("chunk 0: nll {:.6}, ppl {:.4}; transformers {hf:.6}; llama.cpp ppl {:.4}", first.nll_mean, first.ppl, lc.exp());
    assert_eq!(first.tokens_scored, 63);
    assert!((first.nll_mean - hf).abs() <= 1e-4, "chunk 0 nll {} vs transformers {hf}", first.nll_mean);
    assert!((first.ppl / lc.exp() - 1.0).abs() <= 0.02, "chunk 0 ppl {} vs llama.cpp {}", first.ppl, lc.exp());

    // A fresh adapter (B = 0) adds exactly zero to every adapted projection. Its matrices are
    // candle Vars, so activations then track gradients and the model takes its differentiable
    // (unfused) softmax / RMSNorm / RoPE ops: equal up to float rounding (measured 4e-7 rel.).
    let set = LoraSet::init(m.as_ref(), Default::default(), 7).unwrap();
    assert!(set.entries.iter().all(|e| e.b.as_tensor().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() == 0.0));
    set.attach(m.as_ref()).unwrap();
    let adapted = perplexity(m.as_ref(), &ids, opts()).unwrap();
    LoraSet::detach(m.as_ref()).unwrap();
    println!("with a no-op adapter: ppl {:.6} (Δ {:e})", adapted.ppl, adapted.ppl - r.ppl);
    assert_eq!(adapted.tokens_scored, r.tokens_scored);
    assert!((adapted.ppl - r.ppl).abs() <= 1e-5 * r.ppl, "no-op adapter changed ppl: {} vs {}", adapted.ppl, r.ppl);
    let again = perplexity(m.as_ref(), &ids, opts()).unwrap();
    assert_eq!(again.ppl, r.ppl, "detaching did not restore the base model");
}

/// Greedy answers of SmolLM2-135M-Instruct observed first (the model answers in a sentence,
/// so a bare "Paris" never matches): "What is the capital of France? Reply with just the city
/// name." → "The capital of France is Paris."; with the system prompt "Answer with a single
/// word." it says the same; the raw prompt "Q: What is the capital of France?\nA:" continues
/// " The capital of France is Paris.\nB: ...". The references below are chosen to exercise
/// exact match (verbatim, padded with whitespace), normalized-only match (case and
/// punctuation differ) and no match.
#[test]
fn smollm2_accuracy_exact_and_normalized_match_and_reference_nll() {
    let (m, tok) = smollm2();
    let chat = |sys: Option<&str>, q: &str, a: &str| {
        let mut v: Vec<Message> = sys.map(|s| Message::new("system", s)).into_iter().collect();
        v.extend([Message::new("user", q), Message::new("assistant", a)]);
        Example::Chat(v)
    };
    let q = "What is the capital of France? Reply with just the city name.";
    let examples = vec![
        chat(None, q, "  The capital of France is Paris.\n"),
        chat(Some("Answer with a single word."), "What is the capital of France?", "the capital of france is PARIS"),
        Example::Prompt { prompt: "Q: What is the capital of France?\nA:".into(), completion: " Paris".into() },
    ];
    let mut calls = 0;
    let r = evaluate_examples(
        m.as_ref(),
        &tok,
        &examples,
        EvalOptions { progress: Some(Box::new(|done, total, _: &_| { calls += 1; assert_eq!((done, total), (calls, 3)); })), ..Default::default() },
    )
    .unwrap();
    assert_eq!(calls, 3);
    for e in &r.per_example {
        println!(
            "{}: {:?} vs {:?}: exact {} normalized {}; nll {:.3} over {} tokens, {:.3} over {} with the end marker",
            e.index, e.generated, e.reference, e.exact_match, e.normalized_match, e.nll_mean, e.reference_tokens, e.nll_mean_with_end, e.tokens_with_end
        );
    }
    let flags: Vec<(bool, bool)> = r.per_example.iter().map(|e| (e.exact_match, e.normalized_match)).collect();
    assert_eq!(flags, [(true, true), (false, true), (false, false)]);
    assert_eq!(r.per_example[0].generated, "The capital of France is Paris.");
    assert_eq!((r.examples, r.exact_match, r.normalized_match), (3, 1, 2));
    assert!((r.accuracy - 1.0 / 3.0).abs() < 1e-12 && (r.normalized_accuracy - 2.0 / 3.0).abs() < 1e-12);

    // NLLs are finite and the aggregate is the token-weighted mean of the examples'.
    assert!(r.per_example.iter().all(|e| e.nll_mean.is_finite() && e.nll_mean > 0.0 && e.nll_mean_with_end.is_finite()));
    let w: f64 = r.per_example.iter().map(|e| e.nll_mean * e.reference_tokens as f64).sum();
    assert_eq!(r.reference_tokens, r.per_example.iter().map(|e| e.reference_tokens).sum::<usize>());
    assert!((r.mean_nll_of_reference - w / r.reference_tokens as f64).abs() < 1e-12);
    // A chat answer is scored with the template's "<|im_end|>\n" after it, a pair's with EOS.
    let e = &r.per_example[2];
    assert_eq!((e.reference_tokens, e.tokens_with_end), (1, 2));

    // Teacher forcing, recomputed from one forward pass over prompt + answer + end marker.
    let msgs = [Message::new("user", q)];
    let prompt = tok.encode(&tok.chat().unwrap().render(&msgs, true).unwrap(), false).unwrap();
    let target = tok.encode("  The capital of France is Paris.\n<|im_end|>\n", false).unwrap();
    let answer = tok.encode("  The capital of France is Paris.\n", false).unwrap();
    assert!(target.starts_with(&answer));
    let all: Vec<u32> = prompt.iter().chain(&target).copied().collect();
    let logits = m.forward(&all, &mut KvCache::new(m.info().num_layers), true).unwrap().to_vec2::<f32>().unwrap();
    let nlls: Vec<f64> = (0..target.len()).map(|i| nll(&logits[prompt.len() - 1 + i], target[i])).collect();
    let e = &r.per_example[0];
    assert_eq!((e.prompt_tokens, e.reference_tokens, e.tokens_with_end), (prompt.len(), answer.len(), target.len()));
    let direct = nlls[..answer.len()].iter().sum::<f64>() / answer.len() as f64;
    let direct_end = nlls.iter().sum::<f64>() / nlls.len() as f64;
    println!("teacher forcing vs one forward pass: Δ {:e} (answer), {:e} (with end)", e.nll_mean - direct, e.nll_mean_with_end - direct_end);
    // The two passes differ by one row, which changes the GEMMs' tiling and so the last bits
    // of the logits (measured up to 1.6e-6 in mean NLL); a scoring mistake (an off-by-one
    // position or a wrong token) moves it by 1e-1 or more.
    assert!((e.nll_mean - direct).abs() < 1e-5, "{} vs {direct}", e.nll_mean);
    assert!((e.nll_mean_with_end - direct_end).abs() < 1e-5, "{} vs {direct_end}", e.nll_mean_with_end);

    // Malformed examples are refused before any generation.
    let bad = |ex: Vec<Example>| evaluate_examples(m.as_ref(), &tok, &ex, EvalOptions::default()).unwrap_err().to_string();
    assert!(bad(vec![]).contains("none"));
    assert!(bad(vec![Example::Chat(vec![Message::new("user", "Hi")])]).contains("reference answer"));
    assert!(bad(vec![Example::Chat(vec![Message::new("assistant", "Hi")])]).contains("no prompt"));
    assert!(bad(vec![Example::Prompt { prompt: "Hi".into(), completion: String::new() }]).contains("empty"));
}
