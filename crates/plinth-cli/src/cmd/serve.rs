//! `plinth serve`: name and load each `--model`, then hand them to `plinth_server`, which
//! owns everything HTTP. Prints the listening address and the models on stdout once ready.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use plinth_engine::EngineConfig;
use plinth_server::{EncoderSpec, ImageLimits, ImageModelSpec, ImagePolicy, ModelSpec, ServerConfig, Served};

use crate::cli::{ModelArg, ServeArgs};
use crate::load;

/// The name clients use when no `--alias` is given: the catalog's name for a known model,
/// the file stem or directory name for a path, else the spec as typed (`org/name`).
fn default_name(spec: &str) -> String {
    let p = Path::new(spec);
    if p.exists() {
        let name = if p.is_file() { p.file_stem() } else { p.file_name() };
        if let Some(n) = name {
            return n.to_string_lossy().into_owned();
        }
    }
    plinth_io::catalog::lookup(spec).map_or_else(|| spec.to_string(), |e| e.name.to_string())
}

/// `NAME=DIR` pairs of `--adapter`.
fn parse_adapters(specs: &[String]) -> Result<Vec<(String, std::path::PathBuf)>> {
    specs
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.split_once('=') {
            Some((name, dir)) if !name.trim().is_empty() && !dir.trim().is_empty() => Ok((name.trim().to_string(), std::path::PathBuf::from(dir.trim()))),
            _ => anyhow::bail!("invalid --adapter '{s}': expected NAME=DIR (the name requests use, and a PEFT adapter directory)"),
        })
        .collect()
}

/// The image policy from the flags; the allowed folder must exist (it is canonicalised so that
/// `..` and symlinks cannot lead out of it).
fn image_policy(local: Option<&Path>, remote: bool, max_images: usize, max_bytes: usize) -> Result<ImagePolicy> {
    if max_images == 0 || max_bytes == 0 {
        anyhow::bail!("invalid --max-images / --max-image-bytes: must be at least 1");
    }
    let local_dir = match local {
        Some(d) => Some(d.canonicalize().with_context(|| format!("invalid --allow-local-images {}", d.display()))?),
        None => None,
    };
    if local_dir.as_ref().is_some_and(|d| !d.is_dir()) {
        anyhow::bail!("invalid --allow-local-images: {} is not a directory", local.unwrap_or(Path::new("")).display());
    }
    let limits = ImageLimits { max_bytes, ..ImageLimits::default() };
    Ok(ImagePolicy { local_dir, remote, max_images, limits })
}

pub fn run(a: ServeArgs) -> Result<()> {
    // A trailing comma in PLINTH_MODEL should not read as a model called "".
    let specs: Vec<&String> = a.models.iter().filter(|m| !m.trim().is_empty()).collect();
    if specs.is_empty() {
        anyhow::bail!("invalid --model: no model given");
    }
    if a.aliases.len() > specs.len() {
        anyhow::bail!("invalid --alias: {} aliases for {} models (aliases pair with --model in order)", a.aliases.len(), specs.len());
    }
    let names: Vec<String> = specs.iter().enumerate().map(|(i, s)| a.aliases.get(i).cloned().unwrap_or_else(|| default_name(s))).collect();
    // Checked before the slow loads; the server checks the same again.
    if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
        anyhow::bail!("invalid --alias: two models are named '{dup}'; give each its own --alias");
    }
    let config = ServerConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        cors: a.cors,
        max_body_bytes: a.max_body_bytes,
        engine: EngineConfig { max_running: a.max_running, max_queue: a.max_queue, ..EngineConfig::default() },
        adapters: parse_adapters(&a.adapters)?,
        images: image_policy(a.allow_local_images.as_deref(), a.allow_remote_images, a.max_images, a.max_image_bytes)?,
        max_image_queue: a.max_image_queue,
    };
    let mut served = Served::default();
    for (spec, name) in specs.into_iter().zip(names) {
        // Encoders (embedding models, cross-encoders) are served beside decoders.
        let loc = load::resolve(spec).with_context(|| format!("loading model '{spec}'"))?;
        if load::is_encoder(&loc) {
            let model = plinth_tasks::EncoderModel::load(loc.path()).with_context(|| format!("loading model '{spec}'"))?;
            served.encoders.push(EncoderSpec { name, path: loc.path().to_path_buf(), model });
            continue;
        }
        if plinth_tasks::imagine::is_text_to_image_dir(loc.path()) {
            let pipeline = plinth_tasks::imagine::TextToImage::load(loc.path()).with_context(|| format!("loading model '{spec}'"))?;
            served.generators.push(ImageModelSpec { name, path: loc.path().to_path_buf(), pipeline });
            continue;
        }
        let m = load::load(&ModelArg { model: spec.clone(), quantize: a.quantize.clone(), repack_q8: a.repack_q8 }).with_context(|| format!("loading model '{spec}'"))?;
        served.models.push(ModelSpec { name, path: m.location.path().to_path_buf(), model: m.model, tokenizer: m.tokenizer });
    }
    plinth_server::serve(config, served, |server| {
        // Scripts and tests wait for, and parse, these lines, so they go out at once.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "plinth serve listening on http://{}", server.local_addr());
        for m in server.models() {
            let _ = writeln!(out, "model {}: {} ({}, context {})", m.name, m.path.display(), m.family, m.context);
        }
        let _ = out.flush();
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(default_name("SmolLM2-135M-Instruct"), "smollm2-135m-instruct");
        assert_eq!(default_name("org/some-model"), "org/some-model");
        let dir = std::env::temp_dir().join(format!("plinth-serve-name-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tiny.Q8_0.gguf");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(default_name(file.to_str().unwrap()), "tiny.Q8_0");
        assert_eq!(default_name(dir.to_str().unwrap()), dir.file_name().unwrap().to_str().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
