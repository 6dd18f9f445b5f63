//! One module per subcommand.

mod answer;
mod bench;
mod bench_images;
mod chat;
mod classify;
mod embed;
mod eval;
mod generate;
mod heads;
mod imagine;
mod inspect;
mod merge;
mod pull;
mod serve;
mod summarize;
mod translate;
mod tune;
mod vision;

use anyhow::Result;
use plinth_engine::SamplingParams;

use plinth_io::safetensors::GenerationDefaults;

use crate::cli::{Cli, Command, SamplingArgs};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Chat(a) => chat::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Describe(a) => vision::run_describe(a),
        Command::Imagine(a) => imagine::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Embed(a) => embed::run_embed(a),
        Command::Search(a) => embed::run_search(a),
        Command::Classify(a) => classify::run(a),
        Command::Ner(a) => heads::run_ner(a),
        Command::Answer(a) => answer::run(a),
        Command::Rerank(a) => heads::run_rerank(a),
        Command::Summarize(a) => summarize::run(a),
        Command::Translate(a) => translate::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Merge(a) => merge::run(a),
    }
}

impl SamplingArgs {
    /// Sampler parameters: the user's flags, else the model's `generation_config.json`
    /// defaults, else plinth's. CLI conventions (0 / 1 disable a filter) are mapped and every
    /// value is range-checked, naming the flag.
    pub fn params(&self, model: &GenerationDefaults) -> Result<SamplingParams> {
        let greedy_by_default = model.do_sample == Some(false);
        let temperature = self.temperature.or(if greedy_by_default { Some(0.0) } else { model.temperature }).unwrap_or(0.8);
        let top_k = self.top_k.or(model.top_k).unwrap_or(40);
        let top_p = self.top_p.or(model.top_p).unwrap_or(0.95);
        let min_p = self.min_p.or(model.min_p).unwrap_or(0.05);
        let repeat_penalty = self.repeat_penalty.or(model.repetition_penalty).unwrap_or(1.0);
        // Range-check before the 0/1 "disabled" mapping so that e.g. --top-p 1.5 is an error,
        // not silently "off".
        if !(top_p > 0.0 && top_p <= 1.0) {
            anyhow::bail!("invalid --top-p: must be in (0, 1], got {top_p}");
        }
        if !(0.0..=1.0).contains(&min_p) {
            anyhow::bail!("invalid --min-p: must be in [0, 1], got {min_p}");
        }
        let p = SamplingParams {
            temperature,
            top_k: (top_k > 0).then_some(top_k),
            top_p: (top_p < 1.0).then_some(top_p),
            min_p: (min_p > 0.0).then_some(min_p),
            repeat_penalty,
            repeat_last_n: 64,
            seed: self.seed,
        };
        p.validate()?;
        if self.max_tokens == 0 {
            anyhow::bail!("invalid --max-tokens: must be at least 1");
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sampling(args: &[&str]) -> SamplingArgs {
        let mut argv = vec!["plinth", "generate"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).command {
            Command::Generate(g) => g.sampling,
            _ => unreachable!("parsed a generate command"),
        }
    }

    #[test]
    fn model_defaults_apply_unless_flags_override() {
        let model = GenerationDefaults { do_sample: Some(true), temperature: Some(0.6), top_p: Some(0.9), top_k: Some(20), min_p: None, repetition_penalty: Some(1.1) };
        let p = sampling(&[]).params(&model).unwrap();
        assert_eq!((p.temperature, p.top_p, p.top_k, p.repeat_penalty), (0.6, Some(0.9), Some(20), 1.1));
        assert_eq!(p.min_p, Some(0.05), "plinth's default where the model has none");
        let p = sampling(&["-t", "0.2", "--top-p", "1", "--top-k", "0"]).params(&model).unwrap();
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.2, None, None));
    }

    #[test]
    fn do_sample_false_means_greedy_and_plinth_defaults_otherwise() {
        let greedy = GenerationDefaults { do_sample: Some(false), temperature: Some(0.7), ..Default::default() };
        assert_eq!(sampling(&[]).params(&greedy).unwrap().temperature, 0.0);
        assert_eq!(sampling(&["-t", "0.5"]).params(&greedy).unwrap().temperature, 0.5);
        let p = sampling(&[]).params(&GenerationDefaults::default()).unwrap();
        assert_eq!((p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty), (0.8, Some(40), Some(0.95), Some(0.05), 1.0));
    }

    #[test]
    fn out_of_range_values_name_the_flag() {
        let e = sampling(&["--top-p", "0"]).params(&GenerationDefaults::default()).unwrap_err().to_string();
        assert!(e.contains("--top-p"), "{e}");
        let e = sampling(&["--min-p", "2"]).params(&GenerationDefaults::default()).unwrap_err().to_string();
        assert!(e.contains("--min-p"), "{e}");
        let e = sampling(&["-t", "-1"]).params(&GenerationDefaults::default()).unwrap_err().to_string();
        assert!(e.contains("temperature"), "{e}");
    }
}
