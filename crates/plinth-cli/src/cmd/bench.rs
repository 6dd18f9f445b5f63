//! `plinth bench`: prefill and decode throughput, time to first token and peak RSS, as the
//! median of several runs on one model. Peers are compared in `scripts/bench-peers`.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::cmd::generate::round2;
use crate::load;

const FILLER: &str = "The quick brown fox jumps over the lazy dog while the committee debates \
    the budget for next year's lighthouse restoration, citing 1,234 letters from residents. ";

#[derive(Serialize)]
struct BenchReport {
    model: String,
    threads: usize,
    runs: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: f64,
    peak_rss_mb: f64,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Peak resident set size of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

#[derive(Serialize)]
struct ConcurrencyRow {
    concurrency: usize,
    generated_tokens: usize,
    seconds: f64,
    total_tok_s: f64,
}

/// Total generated tok/s with `c` concurrent requests of `a.gen_tokens` tokens each through the
/// continuous-batching engine (EOS is masked so every request generates exactly that many).
fn concurrency_bench(m: load::Loaded, a: &BenchArgs) -> Result<()> {
    use plinth_engine::{Engine, EngineConfig, Event, GenerationOptions, Request, SamplingParams};
    let tok = std::sync::Arc::new(m.tokenizer);
    let max = a.concurrency.iter().copied().max().unwrap_or(1);
    let engine = Engine::start(m.model, tok.clone(), EngineConfig { max_running: max, ..EngineConfig::default() });
    let prompt = tok.encode("Write a long story about a lighthouse keeper and the ships she guided.", false)?;
    let mut rows = Vec::new();
    for &c in &a.concurrency {
        let t = Instant::now();
        let mut rxs = Vec::new();
        for i in 0..c {
            let mut opts = GenerationOptions::new(a.gen_tokens, SamplingParams { seed: i as u64, ..SamplingParams::default() }, vec![]);
            opts.logit_bias = tok.eos_ids().iter().map(|&e| (e, f32::NEG_INFINITY)).collect();
            rxs.push(engine.submit(Request { prompt_ids: prompt.clone(), options: opts })?);
        }
        let mut generated = 0;
        for rx in &mut rxs {
            while let Some(ev) = rx.blocking_recv() {
                match ev {
                    Event::Done { completion_tokens, .. } => {
                        generated += completion_tokens;
                        break;
                    }
                    Event::Error(e) => anyhow::bail!("engine error: {e}"),
                    Event::Token { .. } => {}
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let row = ConcurrencyRow { concurrency: c, generated_tokens: generated, seconds: round2(secs), total_tok_s: round2(generated as f64 / secs) };
        if !a.json {
            println!("concurrency {:>3}: {:>6} tokens in {:>6.2} s = {:>7.1} tok/s", c, generated, secs, row.total_tok_s);
        }
        rows.push(row);
    }
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.runs == 0 || a.prompt_tokens == 0 || a.gen_tokens == 0 || a.concurrency.contains(&0) {
        anyhow::bail!("--runs, --prompt-tokens, --gen-tokens and --concurrency must be at least 1");
    }
    if let Some(n) = a.images {
        return crate::cmd::bench_images::run(n, &a);
    }
    if let Some(file) = &a.embed {
        return embed_bench(file, &a);
    }
    let m = load::load(&a.model)?;
    if !a.concurrency.is_empty() {
        return concurrency_bench(m, &a);
    }
    let ctx = m.model.info().context_length;
    if a.prompt_tokens + a.gen_tokens > ctx {
        anyhow::bail!("--prompt-tokens + --gen-tokens = {} exceeds the model's {ctx}-token context", a.prompt_tokens + a.gen_tokens);
    }
    let mut prompt = Vec::new();
    while prompt.len() < a.prompt_tokens {
        prompt.extend(m.tokenizer.encode(FILLER, false)?);
    }
    prompt.truncate(a.prompt_tokens);
    let (mut pre, mut dec, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    // One untimed warm-up so that first-touch page faults of the weights are not measured.
    let mut cache = m.model.new_cache();
    m.model.forward(&prompt[..prompt.len().min(16)], &mut cache, false)?;
    for run in 0..a.runs {
        let mut cache = m.model.new_cache();
        let t0 = Instant::now();
        let logits = m.model.forward(&prompt, &mut cache, false)?.squeeze(0)?.to_vec1::<f32>()?;
        let mut next = argmax(&logits);
        let t_first = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..a.gen_tokens {
            let l = m.model.forward(&[next], &mut cache, false)?.squeeze(0)?.to_vec1::<f32>()?;
            next = argmax(&l);
        }
        let t_dec = t1.elapsed().as_secs_f64();
        pre.push(a.prompt_tokens as f64 / t_first);
        dec.push(a.gen_tokens as f64 / t_dec);
        ttft.push(t_first * 1000.0);
        if !a.json {
            eprintln!("run {}/{}: prefill {:.1} tok/s, decode {:.1} tok/s", run + 1, a.runs, pre[run], dec[run]);
        }
    }
    let r = BenchReport {
        model: m.location.path().display().to_string(),
        threads: candle_core::utils::get_num_threads(),
        runs: a.runs,
        prompt_tokens: a.prompt_tokens,
        gen_tokens: a.gen_tokens,
        prefill_tok_s: round2(median(pre)),
        decode_tok_s: round2(median(dec)),
        ttft_ms: round2(median(ttft)),
        peak_rss_mb: round2(peak_rss_mb()),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("model        {}", r.model);
        println!("threads      {}", r.threads);
        println!("prefill      {:.1} tok/s  ({} tokens, median of {})", r.prefill_tok_s, r.prompt_tokens, r.runs);
        println!("decode       {:.1} tok/s  ({} tokens)", r.decode_tok_s, r.gen_tokens);
        println!("first token  {:.1} ms", r.ttft_ms);
        println!("peak RSS     {:.1} MB", r.peak_rss_mb);
    }
    Ok(())
}

#[derive(Serialize)]
struct EmbedReport {
    model: String,
    threads: usize,
    runs: usize,
    sentences: usize,
    tokens: usize,
    batch_size: usize,
    sentences_per_s: f64,
    tokens_per_s: f64,
    peak_rss_mb: f64,
}

/// Sentences per second embedding every line of `file` (tokenization included, model load
/// not), median of `a.runs` after one untimed warm-up batch.
fn embed_bench(file: &str, a: &BenchArgs) -> Result<()> {
    use plinth_tasks::{EmbedInput, EmbedOptions};
    let texts: Vec<String> = std::fs::read_to_string(file)?.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    if texts.is_empty() || a.batch_size == 0 {
        anyhow::bail!("--embed needs a file with at least one non-empty line, and --batch-size at least 1");
    }
    let model = load::load_encoder(&a.encoder)?;
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t)).collect();
    let opts = EmbedOptions { batch_size: a.batch_size, ..Default::default() };
    model.embed_inputs(&inputs[..inputs.len().min(a.batch_size)], opts, &mut |_| {})?;
    let (mut rates, mut tokens) = (Vec::new(), 0);
    for run in 0..a.runs {
        let t0 = Instant::now();
        let e = model.embed_inputs(&inputs, opts, &mut |_| {})?;
        let secs = t0.elapsed().as_secs_f64();
        tokens = e.tokens;
        rates.push(texts.len() as f64 / secs);
        if !a.json {
            eprintln!("run {}/{}: {:.1} sentences/s", run + 1, a.runs, rates[run]);
        }
    }
    let sps = median(rates);
    let r = EmbedReport {
        model: model.dir.display().to_string(),
        threads: candle_core::utils::get_num_threads(),
        runs: a.runs,
        sentences: texts.len(),
        tokens,
        batch_size: a.batch_size,
        sentences_per_s: round2(sps),
        tokens_per_s: round2(sps * tokens as f64 / texts.len() as f64),
        peak_rss_mb: round2(peak_rss_mb()),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("model        {}", r.model);
        println!("threads      {}", r.threads);
        println!("embedding    {:.1} sentences/s, {:.0} tokens/s  ({} sentences, {} tokens, batch {}, median of {})", r.sentences_per_s, r.tokens_per_s, r.sentences, r.tokens, r.batch_size, r.runs);
        println!("peak RSS     {:.1} MB", r.peak_rss_mb);
    }
    Ok(())
}
