//! The embedding batcher: concurrent requests, gathered into shared length-sorted batches,
//! get the vectors they would get alone; per-request options are kept apart; the queue limit
//! refuses rather than grows.

use std::sync::Arc;

use plinth_tasks::{cosine, EmbedInput, EmbedOptions, EmbedService, EncoderModel, Overflow, ServiceConfig};
use plinth_testutil::minilm_dir;

/// Batched vs alone (the bar for dynamic batching).
const MIN_BATCH_COSINE: f32 = 0.99999;

fn texts() -> Vec<String> {
    (0..48).map(|i| format!("Sentence number {i} says {}.", "something rather long and wordy ".repeat(i % 7))).collect()
}

#[test]
fn concurrent_requests_equal_single_requests() {
    let model = Arc::new(EncoderModel::load(&minilm_dir()).unwrap());
    let texts = texts();
    let alone: Vec<Vec<f32>> = texts.iter().map(|t| model.embed(&[t.as_str()], EmbedOptions::default()).unwrap().vectors.remove(0)).collect();

    let service = EmbedService::start(model.clone(), ServiceConfig::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // 12 requests of 4 inputs each, submitted before any is awaited, so that the thread can
    // gather them into shared batches; every other request asks for 64 dimensions.
    let receivers: Vec<_> = texts
        .chunks(4)
        .enumerate()
        .map(|(r, chunk)| {
            let inputs: Vec<EmbedInput> = chunk.iter().map(|t| EmbedInput::Text(t)).collect();
            let encoded = model.tokenize_inputs(&inputs, Overflow::Truncate).unwrap();
            let opts = EmbedOptions { dimensions: (r % 2 == 1).then_some(64), ..Default::default() };
            service.submit(encoded, opts).unwrap()
        })
        .collect();
    for (r, rx) in receivers.into_iter().enumerate() {
        let got = rt.block_on(rx).unwrap().unwrap();
        for (k, v) in got.iter().enumerate() {
            let want = &alone[r * 4 + k];
            if r % 2 == 1 {
                assert_eq!(v.len(), 64);
                let mut short = want[..64].to_vec();
                plinth_tasks::normalize(&mut short);
                assert!(cosine(v, &short) >= MIN_BATCH_COSINE, "request {r} input {k}");
            } else {
                assert!(cosine(v, want) >= MIN_BATCH_COSINE, "request {r} input {k}: {}", cosine(v, want));
            }
        }
    }
    let stats = &service.stats;
    let steps = stats.steps.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stats.inputs.load(std::sync::atomic::Ordering::Relaxed), 48);
    assert!(steps < 12, "requests were not gathered into shared steps ({steps} steps for 12 requests)");
}

#[test]
fn a_full_queue_refuses() {
    let model = Arc::new(EncoderModel::load(&minilm_dir()).unwrap());
    let service = EmbedService::start(model.clone(), ServiceConfig { max_queue: 1, ..Default::default() }).unwrap();
    let one = model.tokenize_inputs(&[EmbedInput::Text("x")], Overflow::Truncate).unwrap();
    let mut refused = 0;
    let mut pending = Vec::new();
    for _ in 0..50 {
        match service.submit(one.clone(), EmbedOptions::default()) {
            Ok(rx) => pending.push(rx),
            Err(e) => {
                assert!(e.to_string().contains("busy"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "50 instant submissions to a queue of 1 were all accepted");
}
