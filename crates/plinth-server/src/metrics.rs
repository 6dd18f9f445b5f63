//! Prometheus metrics: the request counter by route and status, per-model latency histograms
//! (time to first token, inter-token latency), and the text exposition of `/metrics`, which
//! also reads each engine's live counters and gauges. Hand-rolled because the format is a
//! few lines of text and a metrics framework would be the largest dependency of the server.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plinth_engine::EngineStats;

/// Bucket bounds in seconds. Time to first token spans a queue wait plus a prefill, so it
/// reaches into minutes on a busy CPU; inter-token latency is one decode step.
const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const ITL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A cumulative histogram with fixed bounds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramData>,
}

#[derive(Default)]
struct HistogramData {
    /// Per bucket (non-cumulative), plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, inner: Mutex::new(HistogramData { counts: vec![0; bounds.len() + 1], ..Default::default() }) }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.iter().position(|&b| s <= b).unwrap_or(self.bounds.len());
        // A poisoned lock only means another thread panicked mid-update; the counts are
        // still plain numbers, so keep using them.
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        h.counts[i] += 1;
        h.sum += s;
        h.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += h.counts[i];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

/// The latency histograms of one model.
pub struct ModelMetrics {
    pub ttft: Histogram,
    pub itl: Histogram,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        ModelMetrics { ttft: Histogram::new(TTFT_BUCKETS), itl: Histogram::new(ITL_BUCKETS) }
    }
}

/// Times the tokens of one request's choices: the first token of each choice counts towards
/// time to first token (from when the request arrived), every later one towards inter-token
/// latency.
pub struct TokenTimer {
    start: Instant,
    last: Vec<Option<Instant>>,
}

impl TokenTimer {
    pub fn new(start: Instant, choices: usize) -> Self {
        TokenTimer { start, last: vec![None; choices] }
    }

    pub fn token(&mut self, choice: usize, m: &ModelMetrics) {
        let now = Instant::now();
        let Some(slot) = self.last.get_mut(choice) else { return };
        match slot.replace(now) {
            None => m.ttft.observe(now - self.start),
            Some(prev) => m.itl.observe(now - prev),
        }
    }
}

/// Requests served, by (route, status).
#[derive(Default)]
pub struct RequestCounter(Mutex<BTreeMap<(String, u16), u64>>);

impl RequestCounter {
    pub fn count(&self, route: &str, status: u16) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route.to_string(), status)).or_default() += 1;
    }
}

/// What `/metrics` shows of one model.
pub struct ModelView<'a> {
    pub name: &'a str,
    pub stats: &'a EngineStats,
    pub metrics: &'a ModelMetrics,
}

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole `/metrics` page.
/// What `/metrics` shows of one served encoder.
pub struct EncoderView<'a> {
    pub name: &'a str,
    pub stats: &'a plinth_tasks::service::ServiceStats,
}

pub fn render(requests: &RequestCounter, models: &[ModelView<'_>], encoders: &[EncoderView<'_>]) -> String {
    let mut out = String::new();
    header(&mut out, "plinth_requests_total", "counter", "HTTP requests answered, by route and status code.");
    {
        let m = requests.0.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, status), n) in m.iter() {
            let _ = writeln!(out, "plinth_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", label(route));
        }
    }
    type Read = fn(&EngineStats) -> u64;
    let series: [(&str, &str, &str, Read); 5] = [
        ("plinth_prompt_tokens_total", "counter", "Prompt tokens prefilled.", |s| s.prompt_tokens.load(Ordering::Relaxed)),
        ("plinth_generated_tokens_total", "counter", "Tokens generated.", |s| s.generated_tokens.load(Ordering::Relaxed)),
        ("plinth_queue_length", "gauge", "Requests waiting for a free sequence slot.", |s| s.queued.load(Ordering::Relaxed) as u64),
        ("plinth_running_sequences", "gauge", "Sequences being prefilled or decoded.", |s| s.running.load(Ordering::Relaxed) as u64),
        ("plinth_kv_cache_blocks", "gauge", "KV-cache growth blocks held by running sequences.", |s| s.kv_blocks.load(Ordering::Relaxed) as u64),
    ];
    for (name, kind, help, read) in series {
        header(&mut out, name, kind, help);
        for m in models {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(m.name), read(m.stats));
        }
    }
    header(
        &mut out,
        "plinth_time_to_first_token_seconds",
        "histogram",
        "Seconds from a request's arrival to the first generated token of each choice.",
    );
    for m in models {
        m.metrics.ttft.render(&mut out, "plinth_time_to_first_token_seconds", &format!("model=\"{}\"", label(m.name)));
    }
    header(&mut out, "plinth_inter_token_latency_seconds", "histogram", "Seconds between consecutive tokens of one choice.");
    for m in models {
        m.metrics.itl.render(&mut out, "plinth_inter_token_latency_seconds", &format!("model=\"{}\"", label(m.name)));
    }
    type ReadEnc = fn(&plinth_tasks::service::ServiceStats) -> u64;
    let series: [(&str, &str, &str, ReadEnc); 4] = [
        ("plinth_embedding_requests_total", "counter", "Embedding requests computed.", |s| s.requests.load(Ordering::Relaxed) as u64),
        ("plinth_embedding_inputs_total", "counter", "Texts (or token arrays) embedded.", |s| s.inputs.load(Ordering::Relaxed) as u64),
        ("plinth_embedding_steps_total", "counter", "Batching steps; inputs / steps is the mean batch.", |s| s.steps.load(Ordering::Relaxed) as u64),
        ("plinth_embedding_queue_length", "gauge", "Embedding requests waiting.", |s| s.queued.load(Ordering::Relaxed) as u64),
    ];
    if !encoders.is_empty() {
        for (name, kind, help, read) in series {
            header(&mut out, name, kind, help);
            for e in encoders {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(e.name), read(e.stats));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        for ms in [50, 500, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "x", "model=\"m\"");
        assert!(out.contains("x_bucket{model=\"m\",le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{model=\"m\",le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{model=\"m\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{model=\"m\"} 3\n") && out.contains("x_sum{model=\"m\"} 5.55"), "{out}");
    }

    #[test]
    fn page_has_every_family_once_with_escaped_labels() {
        let counter = RequestCounter::default();
        counter.count("/v1/models", 200);
        counter.count("/v1/models", 200);
        counter.count("/v1/models", 401);
        let stats = EngineStats::default();
        stats.generated_tokens.store(7, Ordering::Relaxed);
        let metrics = ModelMetrics::default();
        let page = render(&counter, &[ModelView { name: "we\"ird", stats: &stats, metrics: &metrics }], &[]);
        assert!(page.contains("plinth_requests_total{route=\"/v1/models\",status=\"200\"} 2\n"), "{page}");
        assert!(page.contains("plinth_generated_tokens_total{model=\"we\\\"ird\"} 7\n"), "{page}");
        for family in ["plinth_queue_length", "plinth_running_sequences", "plinth_kv_cache_blocks", "plinth_time_to_first_token_seconds"] {
            assert_eq!(page.matches(&format!("# TYPE {family} ")).count(), 1, "{family}");
        }
    }

    #[test]
    fn timer_splits_first_and_later_tokens() {
        let m = ModelMetrics::default();
        let mut t = TokenTimer::new(Instant::now(), 2);
        t.token(0, &m);
        t.token(0, &m);
        t.token(1, &m);
        t.token(5, &m); // out of range: ignored
        assert_eq!(m.ttft.inner.lock().unwrap().count, 2);
        assert_eq!(m.itl.inner.lock().unwrap().count, 1);
    }
}
