//! `plinth translate`: a text of any length into another language, with an instruct LLM or an
//! encoder-decoder model.

use anyhow::Result;

use crate::cli::TranslateArgs;

pub fn run(_a: TranslateArgs) -> Result<()> {
    anyhow::bail!("translate is not wired up yet")
}
