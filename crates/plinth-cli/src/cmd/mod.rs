//! One module per subcommand.

mod bench;
mod chat;
mod generate;
mod inspect;
mod pull;

use anyhow::Result;
use plinth_engine::SamplingParams;

use plinth_io::safetensors::GenerationDefaults;

use crate::cli::{Cli, Command, SamplingArgs};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Chat(a) => chat::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Bench(a) => bench::run(a),
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
