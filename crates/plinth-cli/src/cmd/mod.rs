//! One module per subcommand.

mod bench;
mod chat;
mod generate;
mod inspect;
mod pull;

use anyhow::Result;
use plinth_engine::SamplingParams;

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
    /// Maps CLI conventions (0 / 1 disable a filter) onto sampler parameters and validates them.
    pub fn params(&self) -> Result<SamplingParams> {
        // Range-check before the 0/1 "disabled" mapping so that e.g. --top-p 1.5 is an error,
        // not silently "off".
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("invalid --top-p: must be in (0, 1], got {}", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            anyhow::bail!("invalid --min-p: must be in [0, 1], got {}", self.min_p);
        }
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: (self.top_p < 1.0).then_some(self.top_p),
            min_p: (self.min_p > 0.0).then_some(self.min_p),
            repeat_penalty: self.repeat_penalty,
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
