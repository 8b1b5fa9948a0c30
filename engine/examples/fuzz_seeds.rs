//! Seed corpora for the fuzz targets (fuzz/), generated from a bundle and
//! its cases: `fuzz_seeds BUNDLE_DIR OUT_DIR` writes OUT_DIR/<target>/<name>
//! for the targets request, bundle, dlp, jwt, packed, signature and audit (`make fuzz-seeds`).
//! Names are content digests, so regenerating is idempotent.

use base64::Engine as _;
use portcullis_engine::Bundle;
use portcullis_engine::bundle::Packed;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The manifest without its `[controls.*]` tables, which name cases (the
/// bundle and packed targets leave the cases out); as fuzz/src/lib.rs.
fn strip_controls(manifest: &str) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut skipping = false;
    for line in manifest.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            skipping = t.starts_with("[controls");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Seeds larger than this are left out (libFuzzer sizes its inputs after
/// the largest seed; huge seeds slow every mutation).
const MAX_SEED: usize = 16 * 1024;

fn read(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let p = e.path();
        if p.is_dir() {
            read(&p, &r, out)?;
        } else if ["toml", "cedarschema", "cedar", "json", "yaml", "yml"]
            .contains(&name.rsplit('.').next().unwrap_or(""))
        {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            out.push((r, text));
        }
    }
    Ok(())
}

struct Out {
    root: PathBuf,
    written: usize,
}

impl Out {
    fn seed(&mut self, target: &str, bytes: &[u8]) -> Result<(), String> {
        self.seed_upto(target, bytes, MAX_SEED)
    }

    fn seed_upto(&mut self, target: &str, bytes: &[u8], max: usize) -> Result<(), String> {
        if bytes.is_empty() || bytes.len() > max {
            return Ok(());
        }
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = hex::encode(&Sha256::digest(bytes)[..12]);
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            self.written += 1;
        }
        Ok(())
    }

    fn with_mode(&mut self, target: &str, mode: u8, bytes: &[u8]) -> Result<(), String> {
        let mut v = Vec::with_capacity(bytes.len() + 1);
        v.push(mode);
        v.extend_from_slice(bytes);
        self.seed(target, &v)
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bundle_dir, out_dir] = args.as_slice() else {
        return Err("usage: fuzz_seeds BUNDLE_DIR OUT_DIR".into());
    };
    let mut files = Vec::new();
    read(Path::new(bundle_dir), "", &mut files)?;
    files.sort();
    let bundle = Bundle::load(&files).map_err(|p| format!("bundle refused: {p:?}"))?;
    let mut out = Out {
        root: PathBuf::from(out_dir),
        written: 0,
    };

    // request: every planned request, and each case's steps joined by NUL
    // (the target decides them in order against one store).
    let mut tokens = BTreeSet::new();
    let mut bodies = BTreeSet::new();
    for case in bundle.plan() {
        let mut joined = Vec::new();
        for step in case.steps.iter().take(16) {
            out.seed("request", step.request.as_bytes())?;
            if !joined.is_empty() {
                joined.push(0);
            }
            joined.extend_from_slice(step.request.as_bytes());
            if let Ok(v) = serde_json::from_str::<Value>(&step.request) {
                let ctx = &v["context"];
                for t in [&ctx["token"], &ctx["synthetic"]["provenance"]] {
                    if let Some(t) = t.as_str() {
                        tokens.insert(t.to_string());
                    }
                }
                if let Some(b) = v["body"].as_str() {
                    bodies.insert(b.as_bytes().to_vec());
                }
                if let Some(b) = v["body_base64"].as_str()
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b.trim())
                {
                    bodies.insert(bytes);
                }
            }
        }
        if case.steps.len() > 1 {
            out.seed("request", &joined)?;
        }
    }

    // bundle: the selector byte picks the slot (fuzz/fuzz_targets/bundle.rs).
    const SLOTS: [&str; 7] = [
        "portcullis.toml",
        "schema.cedarschema",
        "access.cedar",
        "entities.json",
        "adequacy.json",
        "tests/fuzz.yaml",
        "extra.cedar",
    ];
    for (name, text) in &files {
        let stripped;
        let text = if name == "portcullis.toml" {
            stripped = strip_controls(text);
            &stripped
        } else {
            text
        };
        let slot = if name.starts_with("tests/") {
            Some(5)
        } else if name.ends_with(".cedar") && name != "access.cedar" {
            // The target's base holds access.cedar only; the others are
            // fuzzed one at a time as its extra policy file.
            Some(6)
        } else {
            SLOTS.iter().position(|s| s == name)
        };
        if let Some(slot) = slot {
            // Whole load, and the file through its own parser alone.
            out.with_mode("bundle", slot as u8, text.as_bytes())?;
            out.with_mode("bundle", slot as u8 | 0x80, text.as_bytes())?;
        }
    }
    for extra in [
        "@id(\"x.1\")\npermit (principal in Crm::Role::\"admin\", action == Crm::Action::\"admin\", resource) when { context.token.scopes.contains(\"full\") && context.lockout.failures < 3 };\n",
        "@id(\"x.2\")\n@outcome(\"lock\")\n@reason(\"r\")\n@retry_after(\"lockout\")\nforbid (principal, action, resource) when { context has ip && context.ip.isInRange(ip(\"10.0.0.0/8\")) && context.dlp.kinds.contains(\"card\") };\n",
        "@id(\"x.3\")\n@outcome(\"redact\")\npermit (principal is Crm::User, action in [Crm::Action::\"read\", Crm::Action::\"export\"], resource is Crm::Record) unless { context.record has owner && context.record.owner like \"005*\" };\n",
    ] {
        out.with_mode("bundle", 6, extra.as_bytes())?;
        out.with_mode("bundle", 6 | 0x80, extra.as_bytes())?;
    }

    // dlp: modes 0 scan+redact, 1 decide text, 2 decide bytes or chunks,
    // 3 streamed vs whole, 4 minimise (fuzz/fuzz_targets/dlp.rs).
    bodies.insert(br#"{"Email":"ann@example.com","Card":"4111 1111 1111 1111","Iban":"DE89370400440532013000"}"#.to_vec());
    // Every body in the scan mode; every fourth also through the decision
    // path (text and bytes) and minimisation.
    for (i, b) in bodies.iter().enumerate() {
        out.with_mode("dlp", 0, b)?;
        if i % 4 == 0 {
            for mode in 1..5u8 {
                out.with_mode("dlp", mode, b)?;
            }
        }
    }

    // jwt: mode 0 the token; mode 1 its claim set (signed by the target).
    for t in &tokens {
        out.with_mode("jwt", 0, t.as_bytes())?;
        if let Some(claims) = t.split('.').nth(1).and_then(|c| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        }) {
            out.with_mode("jwt", 1, &claims)?;
        }
    }
    out.with_mode(
        "jwt",
        1,
        br#"{"iss":"synthetic-ci","aud":"portcullis","exp":1798761600,"dataset":"d","generator":"g"}"#,
    )?;

    // packed: the bundle without its cases, packed.
    let small: Vec<(String, String)> = files
        .iter()
        .filter(|(n, _)| !n.starts_with("tests/"))
        .map(|(n, t)| {
            if n == "portcullis.toml" {
                (n.clone(), strip_controls(t))
            } else {
                (n.clone(), t.clone())
            }
        })
        .collect();
    let b = Bundle::load(&small).map_err(|p| format!("bundle refused: {p:?}"))?;
    let packed = serde_json::to_string(&Packed::new(b.info(), small)).map_err(|e| e.to_string())?;
    out.seed_upto("packed", packed.as_bytes(), 256 * 1024)?;

    // signature: mode 0 a `bundle.sig` document (well formed, not genuine),
    // mode 1 a content hash to sign, mode 2 bytes XORed into the genuine one.
    let hash = b.info().hash.clone();
    out.with_mode(
        "signature",
        0,
        serde_json::json!({"alg": "ed25519", "key_id": "0123456789abcdef", "signature": base64::engine::general_purpose::STANDARD.encode([7u8; 64])})
            .to_string()
            .as_bytes(),
    )?;
    out.with_mode("signature", 1, hash.as_bytes())?;
    out.with_mode("signature", 2, &[0u8; 64])?;
    out.with_mode("signature", 2, &[1u8])?;

    // audit: mode 0 a whole log in the chain's line format (head, body,
    // prev, then the SHA-256 of the line before its hash member); mode 1
    // (position, byte) edits of the target's genuine log.
    let mut log = String::new();
    let mut prev = "0".repeat(64);
    for (seq, body) in [
        (
            1,
            r#""kind":"decision","request":"ab12","principal":"User::\"h:1f2e\"","action":"login","outcome":"deny","policies":["lockout.deny"],"reasons":["no-permit"],"pathway":"authentic""#,
        ),
        (
            2,
            r#""kind":"swap","result":"accepted","from":"aa","to":"bb""#,
        ),
    ] {
        let unhashed = format!(
            r#"{{"seq":{seq},"time":"2026-11-22T10:00:0{seq}.000Z",{body},"prev":"{prev}"}}"#
        );
        let h = hex::encode(Sha256::digest(unhashed.as_bytes()));
        log.push_str(&unhashed[..unhashed.len() - 1]);
        log.push_str(&format!(r#","hash":"{h}"}}"#));
        log.push('\n');
        prev = h;
    }
    out.with_mode("audit", 0, log.as_bytes())?;
    out.with_mode("audit", 1, &[10, 0, b'X', 200, 0, b'"'])?;

    eprintln!("wrote {} new seeds under {out_dir}", out.written);
    Ok(())
}
