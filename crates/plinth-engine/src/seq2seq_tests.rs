//! Search-logic tests on a toy encoder-decoder whose next-token logits are a hash of the
//! source and the whole decoder prefix. The toy keeps the prefix in its cache (as a tensor
//! that `Seq2SeqCache::reorder` moves like real keys/values), so a wrong cache reorder or row
//! drop changes the results; the references below recompute every prefix from scratch.

use super::*;
use candle_core::Tensor;
use plinth_models::{Seq2Seq, Seq2SeqCache, Seq2SeqInfo};

const START: u32 = 0;
const EOS: u32 = 1;

struct Toy {
    info: Seq2SeqInfo,
}

fn toy(vocab: usize) -> Toy {
    Toy {
        info: Seq2SeqInfo {
            architecture: "toy".into(),
            vocab_size: vocab,
            d_model: 1,
            encoder_layers: 1,
            decoder_layers: 1,
            max_source_positions: Some(32),
            max_target_positions: Some(64),
            parameters: 0,
            pad_token_id: START,
            eos_token_id: EOS,
            decoder_start_token_id: START,
        },
    }
}

fn hash(parts: impl IntoIterator<Item = u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        h ^= p;
        h = h.wrapping_mul(0x0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

/// The toy's logits for a source key and a decoder prefix: values in [-1, 1): flat enough that the winner is often not the leading beam's descendant.
fn toy_logits(src_key: u64, prefix: &[u32], vocab: usize) -> Vec<f32> {
    (0..vocab as u64).map(|v| (hash([src_key].into_iter().chain(prefix.iter().map(|&t| t as u64 + 7)).chain([v + 1000])) % 2000) as f32 / 1000.0 - 1.0).collect()
}

fn src_key(src: &[u32]) -> u64 {
    src.iter().map(|&t| t as u64).sum()
}

impl Seq2Seq for Toy {
    fn info(&self) -> &Seq2SeqInfo {
        &self.info
    }

    fn encode(&self, ids: &Tensor, mask: &Tensor) -> plinth_core::Result<Tensor> {
        Ok((ids.to_dtype(DType::F32)? * mask.to_dtype(DType::F32)?)?.unsqueeze(2)?)
    }

    fn decode(&self, ids: &Tensor, enc: &Tensor, mask: &Tensor, cache: &mut Seq2SeqCache) -> plinth_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if enc.dims()[0] != b || mask.dims()[0] != b {
            return Err(Error::invalid("toy", "encoder rows differ from decoder rows"));
        }
        let new = ids.to_dtype(DType::F32)?.reshape((b, 1, t, 1))?;
        let hist = match &cache.self_kv[0] {
            None => new,
            Some((k, _)) => {
                if k.dims()[0] != b {
                    return Err(Error::invalid("toy", "cache rows differ from decoder rows"));
                }
                Tensor::cat(&[k, &new], 2)?
            }
        };
        cache.self_kv[0] = Some((hist.clone(), hist.clone()));
        cache.advance(t);
        let keys: Vec<f32> = enc.squeeze(2)?.sum(1)?.to_vec1()?;
        let hist: Vec<Vec<f32>> = hist.reshape((b, cache.len()))?.to_vec2()?;
        let v = self.info.vocab_size;
        let mut out = Vec::with_capacity(b * t * v);
        for (key, h) in keys.iter().zip(&hist) {
            let prefix: Vec<u32> = h.iter().map(|&x| x as u32).collect();
            for end in prefix.len() - t + 1..=prefix.len() {
                out.extend(toy_logits(*key as u64, &prefix[..end], v));
            }
        }
        Ok(Tensor::from_vec(out, (b, t, v), &Device::Cpu)?)
    }
}

fn settings(num_beams: usize, max_new_tokens: usize) -> Seq2SeqGeneration {
    Seq2SeqGeneration { num_beams, max_new_tokens: Some(max_new_tokens), ..Default::default() }
}

fn processors(s: &Seq2SeqGeneration, m: &Toy) -> Processors {
    plan(m, &[vec![2]], s).unwrap().processors
}

/// Log-probs of the next token after `prefix`, processed, from scratch.
fn naive_logprobs(m: &Toy, p: &Processors, src: &[u32], prefix: &[u32]) -> Vec<f32> {
    let mut row = toy_logits(src_key(src), prefix, m.info.vocab_size);
    log_softmax(&mut row);
    p.apply(&mut row, prefix);
    row
}

fn naive_greedy(m: &Toy, s: &Seq2SeqGeneration, src: &[u32]) -> Vec<u32> {
    let p = processors(s, m);
    let max = s.resolved_max_length(&m.info);
    let mut seq = vec![START];
    while seq.len() < max && (seq.len() == 1 || *seq.last().unwrap() != EOS) {
        let row = naive_logprobs(m, &p, src, &seq);
        seq.push(argmax(&row) as u32);
    }
    seq
}

/// Best finished sequence over every possible output by sum(logprobs) / generated_len^lp.
fn exhaustive(m: &Toy, s: &Seq2SeqGeneration, src: &[u32]) -> (Vec<u32>, f32) {
    let p = processors(s, m);
    let max = s.resolved_max_length(&m.info);
    let mut best = (Vec::new(), f32::NEG_INFINITY);
    let mut stack = vec![(vec![START], 0f32)];
    while let Some((seq, score)) = stack.pop() {
        let row = naive_logprobs(m, &p, src, &seq);
        for (t, &lp) in row.iter().enumerate() {
            if lp == f32::NEG_INFINITY {
                continue;
            }
            let mut next = seq.clone();
            next.push(t as u32);
            let total = score + lp;
            if t as u32 == EOS || next.len() == max {
                let norm = total / length_divisor(next.len() - 1, s.length_penalty);
                if norm > best.1 {
                    best = (next, norm);
                }
            } else {
                stack.push((next, total));
            }
        }
    }
    best
}

fn sources() -> Vec<Vec<u32>> {
    vec![vec![5, 3, 2, 1], vec![4, 1], vec![2, 6, 6, 3, 5, 1], vec![3, 1]]
}

/// Sources for a vocabulary of 4 (ids must be in the vocabulary).
fn small_sources() -> Vec<Vec<u32>> {
    vec![vec![3, 3, 2, 1], vec![2, 1], vec![2, 3, 3, 3, 2, 1], vec![3, 1]]
}

#[test]
fn batched_greedy_matches_greedy_from_scratch() {
    let m = toy(9);
    let s = settings(1, 7);
    let got = generate(&m, &sources(), &s).unwrap();
    let mut ended = 0;
    for (src, h) in sources().iter().zip(&got) {
        let want = naive_greedy(&m, &s, src);
        assert_eq!(h.ids, want, "source {src:?}");
        ended += usize::from(h.ids.last() == Some(&EOS));
    }
    // The batch must exercise both a row stopping early and one running to max length.
    assert!(ended > 0 && ended < got.len(), "{got:?}");
}

#[test]
fn wide_beam_search_finds_the_exhaustive_best() {
    let m = toy(4);
    for lp in [0.0, 1.0, 2.0] {
        let mut s = settings(40, 3);
        s.early_stopping = EarlyStopping::Never;
        s.length_penalty = lp;
        let got = generate(&m, &small_sources(), &s).unwrap();
        for (src, h) in small_sources().iter().zip(&got) {
            let (ids, score) = exhaustive(&m, &s, src);
            assert_eq!(h.ids, ids, "lp {lp} source {src:?}");
            // Same additions in a different order: f32 rounding only.
            assert!((h.score - score).abs() < 1e-5, "lp {lp}: {} vs {score}", h.score);
        }
    }
}

#[test]
fn batched_beam_search_equals_one_source_at_a_time() {
    let m = toy(11);
    for early in [EarlyStopping::WhenFull, EarlyStopping::Heuristic, EarlyStopping::Never] {
        let mut s = settings(3, 9);
        s.early_stopping = early;
        s.no_repeat_ngram_size = 2;
        let batched = generate(&m, &sources(), &s).unwrap();
        for (src, h) in sources().iter().zip(&batched) {
            let alone = generate(&m, std::slice::from_ref(src), &s).unwrap();
            assert_eq!(h, &alone[0], "{early:?}");
        }
        // Lengths differ, so rows leave the batch at different steps.
        let lens: std::collections::BTreeSet<usize> = batched.iter().map(|h| h.ids.len()).collect();
        assert!(lens.len() > 1, "{early:?}: {batched:?}");
    }
}

#[test]
fn beam_finds_at_least_the_greedy_score_without_length_penalty() {
    let m = toy(13);
    let mut g = settings(1, 6);
    g.length_penalty = 0.0;
    let mut b = settings(4, 6);
    b.length_penalty = 0.0;
    b.early_stopping = EarlyStopping::Never;
    let greedy = generate(&m, &sources(), &g).unwrap();
    let beam = generate(&m, &sources(), &b).unwrap();
    for (gh, bh) in greedy.iter().zip(&beam) {
        assert!(bh.score >= gh.score - 1e-5, "beam {bh:?} < greedy {gh:?}");
    }
}

#[test]
fn processors_follow_transformers() {
    let p = Processors {
        no_repeat_ngram_size: 2,
        bad_words: vec![vec![4], vec![2, 3, 5]],
        eos: vec![EOS],
        min_length: 5,
        forced_bos: None,
        forced_eos: vec![],
        max_length: 10,
    };
    let mut scores = vec![0.0f32; 8];
    // Bigrams so far: (0,2) (2,3) (3,2): after "2", 3 is banned; "2 3" then 5 is a bad word
    // only when the sequence ends with "2 3".
    p.apply(&mut scores, &[0, 2, 3, 2]);
    let banned: Vec<usize> = (0..8).filter(|&i| scores[i] == f32::NEG_INFINITY).collect();
    assert_eq!(banned, vec![1, 3, 4], "EOS (min length), 3 (bigram), 4 (bad word)");
    let mut scores = vec![0.0f32; 8];
    p.apply(&mut scores, &[0, 6, 2, 3, 7]);
    let banned: Vec<usize> = (0..8).filter(|&i| scores[i] == f32::NEG_INFINITY).collect();
    assert_eq!(banned, vec![4], "length 5 allows EOS; '2 3' is not the suffix");
    let mut scores = vec![0.0f32; 8];
    p.apply(&mut scores, &[0, 6, 2, 3]);
    assert!(scores[5] == f32::NEG_INFINITY, "suffix '2 3' bans 5");

    let f = Processors { forced_bos: Some(6), forced_eos: vec![1, 2], ..p.clone() };
    let mut scores = vec![-1.0f32; 8];
    f.apply(&mut scores, &[0]);
    assert_eq!(scores.iter().filter(|x| x.is_finite()).count(), 1);
    assert_eq!(scores[6], 0.0);
    let mut scores = vec![-1.0f32; 8];
    f.apply(&mut scores, &[0, 7, 6, 7, 6, 5, 6, 2, 7]);
    assert_eq!((scores[1], scores[2], scores[3]), (0.0, 0.0, f32::NEG_INFINITY), "forced EOS at max_length - 1");
}

#[test]
fn forced_tokens_and_min_length_shape_the_output() {
    let m = toy(9);
    let mut s = settings(1, 6);
    s.forced_bos_token_id = Some(7);
    s.forced_eos_token_ids = vec![EOS];
    s.min_length = 7; // EOS only in the last slot (7 = start + 6 new)
    for beams in [1, 3] {
        s.num_beams = beams;
        for h in generate(&m, &sources(), &s).unwrap() {
            assert_eq!(h.ids.len(), 7, "{h:?}");
            assert_eq!((h.ids[0], h.ids[1], h.ids[6]), (START, 7, EOS), "{h:?}");
        }
    }
}

#[test]
fn settings_read_generation_config_over_config() {
    let config = serde_json::json!({"eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 2, "num_beams": 4,
        "max_position_embeddings": 64, "early_stopping": true});
    let generation = serde_json::json!({"eos_token_id": [2, 3], "forced_bos_token_id": 0, "bad_words_ids": [[5], [6, 7]],
        "early_stopping": "never", "max_length": 30, "length_penalty": 2.0, "no_repeat_ngram_size": 3});
    let s = Seq2SeqGeneration::from_json(&config, Path::new("config.json"), Some((&generation, Path::new("generation_config.json")))).unwrap();
    assert_eq!(s.eos_token_ids, vec![2, 3]);
    assert_eq!((s.num_beams, s.early_stopping, s.max_length, s.length_penalty), (4, EarlyStopping::Never, Some(30), 2.0));
    assert_eq!((s.forced_bos_token_id, s.pad_token_id, s.no_repeat_ngram_size), (Some(0), Some(1), 3));
    assert_eq!(s.bad_words_ids, vec![vec![5], vec![6, 7]]);
    let m = toy(9);
    assert_eq!(s.resolved_max_length(&m.info), 30);
    let o = s.clone().with_overrides(&Seq2SeqOverrides { max_new_tokens: Some(5), num_beams: Some(2), ..Default::default() });
    assert_eq!((o.resolved_max_length(&m.info), o.num_beams), (6, 2));
    let d = Seq2SeqGeneration::from_json(&config, Path::new("config.json"), None).unwrap();
    assert_eq!((d.resolved_max_length(&m.info), d.early_stopping), (21, EarlyStopping::WhenFull));
    // The decoder's positions bound every length.
    let long = s.with_overrides(&Seq2SeqOverrides { max_new_tokens: Some(500), ..Default::default() });
    assert_eq!(long.resolved_max_length(&m.info), 65);

    let bad = serde_json::json!({"early_stopping": "sometimes"});
    let e = Seq2SeqGeneration::from_json(&bad, Path::new("config.json"), None).unwrap_err().to_string();
    assert!(e.contains("early_stopping"), "{e}");
    let bad = serde_json::json!({"eos_token_id": -1});
    let e = Seq2SeqGeneration::from_json(&bad, Path::new("config.json"), None).unwrap_err().to_string();
    assert!(e.contains("eos_token_id"), "{e}");
}

#[test]
fn bad_settings_and_inputs_are_refused_by_name() {
    let m = toy(9);
    let cases: Vec<(Seq2SeqGeneration, Vec<Vec<u32>>, &str)> = vec![
        (settings(0, 5), sources(), "num_beams"),
        (settings(MAX_BEAMS + 1, 5), sources(), "num_beams"),
        (settings(1, 0), sources(), "max_new_tokens"),
        (settings(1, MAX_LENGTH_LIMIT), sources(), "max_new_tokens"),
        (Seq2SeqGeneration { length_penalty: f32::NAN, ..settings(2, 5) }, sources(), "length_penalty"),
        (Seq2SeqGeneration { forced_bos_token_id: Some(9), ..settings(1, 5) }, sources(), "forced_bos_token_id"),
        (settings(1, 5), vec![vec![2], vec![]], "source 1 has no tokens"),
        (settings(1, 5), vec![vec![2, 9]], "token id 9"),
        (settings(1, 5), vec![vec![2; 33]], "source 0 has 33 tokens; this toy model takes at most 32"),
        (settings(1, 5), vec![], "no source"),
    ];
    for (s, src, want) in cases {
        let e = generate(&m, &src, &s).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn top_k_is_sorted_with_ties_to_the_lower_index() {
    assert_eq!(top_k(&[1.0, 3.0, f32::NAN, 3.0, -1.0, 2.0], 4), vec![1, 3, 5, 0]);
    assert_eq!(top_k(&[0.5, 0.25], 5), vec![0, 1]);
}

