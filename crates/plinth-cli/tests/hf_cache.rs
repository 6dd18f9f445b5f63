//! `--model org/name` resolves through the standard Hugging Face cache layout
//! (`models--org--name/refs/main` -> `snapshots/<commit>/`), honouring HF_HUB_CACHE / HF_HOME
//! and HF_HUB_OFFLINE.

use std::path::Path;
use std::process::Command;

use plinth_testutil::fixture;

fn plinth(args: &[&str], envs: &[(&str, &Path)], offline: bool) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plinth"));
    c.args(args).env_remove("HF_HUB_CACHE").env_remove("HF_HOME");
    for (k, v) in envs {
        c.env(k, v);
    }
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A fake hub cache holding fixtures/tiny-qwen2 as `plinth-test/tiny-qwen2`.
fn fake_cache(tag: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("plinth-hfcache-{}-{tag}", std::process::id()));
    let repo = root.join("models--plinth-test--tiny-qwen2");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-qwen2").join(f), snap.join(f)).unwrap();
    }
    root
}

#[test]
fn cached_repo_resolves_via_hf_hub_cache_and_hf_home() {
    let root = fake_cache("cache");
    let (code, out, err) = plinth(&["inspect", "plinth-test/tiny-qwen2", "--json"], &[("HF_HUB_CACHE", &root)], true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["architecture"], "qwen2");
    assert!(v["path"].as_str().unwrap().ends_with("snapshots/0123abcd"));

    // HF_HOME/hub is the same cache one level down.
    let home = std::env::temp_dir().join(format!("plinth-hfhome-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::rename(&root, home.join("hub")).unwrap();
    let (code, _, err) = plinth(&["inspect", "plinth-test/tiny-qwen2"], &[("HF_HOME", &home)], true);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn uncached_repo_offline_says_how_to_get_it() {
    let root = fake_cache("miss");
    let (code, _, err) = plinth(&["generate", "--model", "plinth-test/not-here", "--prompt", "x"], &[("HF_HUB_CACHE", &root)], true);
    assert_ne!(code, 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("not in the Hugging Face cache") && err.contains("plinth pull plinth-test/not-here"), "{err}");
}
