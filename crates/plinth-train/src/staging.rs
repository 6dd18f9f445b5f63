//! Writing an output directory atomically: everything goes into a hidden sibling
//! (`.<name>.partial-<pid>-<n>`), is flushed, and is renamed into place only when complete;
//! on any failure (or a panic) the partial directory is removed. Shared by `merge` and
//! `classify`, which both write model directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use plinth_core::{Error, Result};

/// A hidden directory beside `out` that becomes `out` on [`commit`](Staging::commit) and is
/// removed if dropped before.
pub(crate) struct Staging {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    pub(crate) fn new(out: &Path) -> Result<Self> {
        if out.exists() {
            let empty = out.is_dir() && std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_none();
            if !empty {
                return Err(Error::invalid("output directory", format!("{} already exists (choose a new path, or remove it first)", out.display())));
            }
        }
        let name = out
            .file_name()
            .ok_or_else(|| Error::invalid("output directory", format!("'{}' does not name a directory", out.display())))?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let tmp = parent.join(format!(
            ".{}.partial-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Staging { tmp, out: out.to_path_buf(), committed: false })
    }

    /// Where the directory lands on commit.
    pub(crate) fn out(&self) -> &Path {
        &self.out
    }

    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes every file to disk and lists them, sorted.
    pub(crate) fn finish(&self) -> Result<Vec<String>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.tmp).map_err(|e| Error::io(&self.tmp, e))? {
            let path = entry.map_err(|e| Error::io(&self.tmp, e))?.path();
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))?;
            files.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
        files.sort();
        Ok(files)
    }

    pub(crate) fn commit(mut self) -> Result<()> {
        if self.out.exists() {
            // An empty directory (checked in `new`); rename cannot replace it on every platform.
            std::fs::remove_dir(&self.out).map_err(|e| Error::io(&self.out, e))?;
        }
        std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::io(&self.out, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
