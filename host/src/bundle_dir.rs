//! Reading a bundle directory into the (name, text) pairs every host passes
//! to `load`.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// Extensions of files a bundle holds; anything else (README, notes) is
/// left out.
const BUNDLE_EXTENSIONS: [&str; 6] = ["toml", "cedarschema", "cedar", "json", "yaml", "yml"];

/// Largest single file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Every bundle file under `dir`, named by its path relative to `dir` with
/// `/` separators, sorted by name.
pub fn read(dir: &Path) -> Result<Vec<(String, String)>> {
    if !dir.is_dir() {
        bail!("bundle `{}` is not a directory", dir.display());
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read directory `{}`", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot stat `{}`", path.display()))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !BUNDLE_EXTENSIONS.contains(&ext) {
            continue;
        }
        if meta.len() > MAX_FILE_BYTES {
            bail!(
                "`{}` is {} bytes, over the limit of {MAX_FILE_BYTES}",
                path.display(),
                meta.len()
            );
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("`{}` is not UTF-8 text", path.display()))?;
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push((rel, text));
    }
    Ok(())
}
