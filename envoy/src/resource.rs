//! Host-side tooling: pack a bundle directory and write the ECDS resource
//! Envoy watches (the wasm plugin with the bundle as its configuration).
//! Used by `portcullis-envoy-config` and the end-to-end tests; not part of
//! the wasm filter.

use portcullis_engine::Bundle;
use portcullis_engine::bundle::Packed;
use serde_json::{Value, json};
use std::path::Path;

/// Extensions of the files a bundle holds (as the CLI reads a directory).
const BUNDLE_EXTENSIONS: [&str; 6] = ["toml", "cedarschema", "cedar", "json", "yaml", "yml"];

/// Every bundle file under `dir`, by `/`-separated relative name, sorted
/// (hidden files and other extensions left out, as `portcullis` does).
pub fn read_bundle_dir(dir: &Path) -> Result<Vec<(String, String)>, String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<(), String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out)?;
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !BUNDLE_EXTENSIONS.contains(&ext) {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            out.push((rel.join("/"), text));
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// Load `files` as a bundle, run its cases, and pack it (what
/// `portcullis pack` writes).
pub fn pack(files: Vec<(String, String)>) -> Result<String, String> {
    let bundle = Bundle::load(&files).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!("bundle refused:\n  {}", lines.join("\n  "))
    })?;
    let report = bundle.run_cases();
    if report.failed > 0 {
        let lines: Vec<String> = report
            .cases
            .iter()
            .filter(|c| !c.passed)
            .flat_map(|c| {
                c.failures.iter().map(move |f| {
                    format!("{} :: {} step {}: {}", c.file, c.name, f.step, f.message)
                })
            })
            .collect();
        return Err(format!(
            "not packed: {} case(s) fail:\n  {}",
            report.failed,
            lines.join("\n  ")
        ));
    }
    serde_json::to_string(&Packed::new(bundle.info(), files)).map_err(|e| e.to_string())
}

/// The plugin configuration: the packed bundle, with settings if given.
pub fn plugin_configuration(packed: &str, settings: Option<&Value>) -> Result<String, String> {
    let packed: Value =
        serde_json::from_str(packed).map_err(|e| format!("packed bundle is not JSON: {e}"))?;
    Ok(match settings {
        Some(s) => json!({"bundle": packed, "settings": s}).to_string(),
        None => packed.to_string(),
    })
}

/// The ECDS resource (a `DiscoveryResponse` Envoy reads from a watched
/// file) for the portcullis wasm filter named `name`.
pub fn filter_resource(name: &str, wasm: &Path, configuration: &str) -> Value {
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": name,
                    "root_id": "portcullis",
                    "vm_config": {
                        "vm_id": "portcullis",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm.to_string_lossy()}}
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": configuration
                    },
                    // Never serve unfiltered, and never 503 forever: a VM
                    // that crashed is rebuilt on the next request.
                    "fail_open": false,
                    "failure_policy": "FAIL_RELOAD"
                }
            }
        }]
    })
}

/// Write `text` to `path` by renaming a sibling temporary file over it, so a
/// watcher sees one complete update.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename onto `{}`: {e}", path.display()))
}
