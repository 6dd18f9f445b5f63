//! `plinth pull`: fetch a known model into the cache.

use std::io::IsTerminal;

use anyhow::Result;
use plinth_io::catalog::{self, CATALOG};
use plinth_io::fetch::{self, FetchOptions};
use serde_json::json;

use crate::cli::PullArgs;

pub fn run(a: PullArgs) -> Result<()> {
    if a.list {
        let rows: Vec<_> = CATALOG
            .iter()
            .map(|e| json!({"name": e.name, "description": e.description, "cached": fetch::cached_path(e).exists(), "path": fetch::cached_path(e)}))
            .collect();
        if a.json {
            println!("{}", serde_json::Value::Array(rows));
        } else {
            for e in CATALOG {
                let mark = if fetch::cached_path(e).exists() { "cached" } else { "      " };
                println!("{:<24} {mark}  {}", e.name, e.description);
            }
        }
        return Ok(());
    }
    let name = a.name.expect("clap requires a name without --list");
    if catalog::lookup(&name).is_none() && fetch::is_hub_id(&name) {
        let dir = fetch::pull_hub(&name, FetchOptions { progress: std::io::stderr().is_terminal(), download: true })?;
        if a.json {
            println!("{}", json!({"name": name, "path": dir}));
        } else {
            println!("{}", dir.display());
        }
        return Ok(());
    }
    let entry = catalog::lookup(&name)
        .ok_or_else(|| anyhow::anyhow!("unknown model name '{name}' (known names: {})", catalog::known_names()))?;
    let path = fetch::pull(entry, FetchOptions { progress: std::io::stderr().is_terminal(), download: true })?;
    if a.json {
        println!("{}", json!({
                "name": entry.name,
                "path": path,
                "bytes": entry.size(),
                "files": entry.files.iter().map(|f| json!({"path": f.path, "sha256": f.sha256, "bytes": f.size})).collect::<Vec<_>>(),
            }));
    } else {
        println!("{}", path.display());
    }
    Ok(())
}
