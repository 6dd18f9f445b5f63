//! `plinth merge`: a LoRA adapter merged into its base, written as a Hugging Face model
//! directory (any plinth command, or transformers, loads it like any other model).

use std::io::IsTerminal;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::cli::MergeArgs;
use crate::load;

pub fn run(a: MergeArgs) -> Result<()> {
    if !a.adapter.join("adapter_config.json").is_file() {
        anyhow::bail!("--adapter {}: not a PEFT adapter directory (no adapter_config.json)", a.adapter.display());
    }
    if a.out.exists() && (!a.out.is_dir() || a.out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true)) {
        anyhow::bail!("--out {} already exists and is not an empty directory; choose a new one", a.out.display());
    }
    let base = load::resolve(&a.model)?;
    let bar = if !a.json && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0);
        b.set_style(ProgressStyle::with_template("merging [{bar:30}] {pos}/{len} tensors").expect("static template").progress_chars("=> "));
        b
    } else {
        ProgressBar::hidden()
    };
    let report = plinth_train::merge::merge(&base, &a.adapter, &a.out, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = report.with_context(|| format!("merging {} into {}", a.adapter.display(), base.path().display()))?;
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if a.json {
        let v = json!({
            "out": report.out.display().to_string(),
            "base": base.path().display().to_string(),
            "adapter": a.adapter.display().to_string(),
            "tensors": report.tensors,
            "merged": report.merged,
            "files": report.files,
            "bytes": report.bytes,
            "notes": report.notes,
        });
        println!("{v}");
    } else {
        println!(
            "merged {} adapted layers into {} tensors: {} ({:.1} MB; {})",
            report.merged.len(),
            report.tensors,
            report.out.display(),
            report.bytes as f64 / 1e6,
            report.files.join(", ")
        );
    }
    Ok(())
}
