//! Write the ECDS resource for the portcullis Envoy filter.
//!
//! ```text
//! portcullis-envoy-config (--bundle DIR | --packed FILE) [--settings FILE]
//!                         --wasm FILTER.wasm -o OUT.json
//! ```
//!
//! `--bundle` packs a bundle directory (checked whole, every case run);
//! `--packed` takes what `portcullis pack` wrote. The output is renamed into
//! place, so an Envoy watching it swaps the bundle atomically.

use portcullis_envoy::resource;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(msg) => {
            eprintln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis-envoy-config: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<String, String> {
    let (mut bundle, mut packed, mut settings, mut wasm, mut out) = (None, None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--bundle" => bundle = Some(val()?),
            "--packed" => packed = Some(val()?),
            "--settings" => settings = Some(val()?),
            "--wasm" => wasm = Some(val()?),
            "-o" | "--output" => out = Some(val()?),
            "-h" | "--help" => {
                return Err("usage: portcullis-envoy-config (--bundle DIR | --packed FILE) [--settings FILE] --wasm FILTER.wasm -o OUT.json".into());
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    let packed_text = match (bundle, packed) {
        (Some(dir), None) => resource::pack(resource::read_bundle_dir(&dir)?)?,
        (None, Some(file)) => std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?,
        _ => return Err("give exactly one of --bundle DIR and --packed FILE".into()),
    };
    let settings = match settings {
        Some(f) => {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| format!("`{}` is not JSON: {e}", f.display()))?,
            )
        }
        None => None,
    };
    let wasm = wasm.ok_or("--wasm is required")?;
    let wasm = std::path::absolute(&wasm).map_err(|e| format!("`{}`: {e}", wasm.display()))?;
    let out = out.ok_or("-o is required")?;
    let configuration = resource::plugin_configuration(&packed_text, settings.as_ref())?;
    // Refuse here what the filter would refuse in Envoy.
    let loaded =
        portcullis_envoy::settings::load(configuration.as_bytes()).map_err(|e| e.to_string())?;
    let doc = resource::filter_resource("portcullis", &wasm, &configuration);
    resource::write_atomically(&out, &doc.to_string())?;
    let info = loaded.bundle.info();
    Ok(format!(
        "wrote {}: bundle {}@{} #{} ({} policies), filter {}",
        out.display(),
        info.name,
        info.version,
        info.hash.get(..16).unwrap_or(""),
        info.policy_ids.len(),
        wasm.display()
    ))
}
