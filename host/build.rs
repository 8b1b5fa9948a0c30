//! Embeds the guest component in the host binary, so `portcullis` is one
//! file. The guest is built first (`make guest`, or
//! `cargo build --profile guest -p portcullis-guest --target wasm32-wasip2`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=PORTCULLIS_GUEST_WASM");
    let path = match std::env::var_os("PORTCULLIS_GUEST_WASM") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("../target"));
            target.join("wasm32-wasip2/guest/portcullis_guest.wasm")
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.is_file() {
        eprintln!(
            "error: the guest component `{}` is missing.\n\
             Build it first: `make guest` (cargo build --profile guest -p portcullis-guest --target wasm32-wasip2),\n\
             or point PORTCULLIS_GUEST_WASM at a built portcullis_guest.wasm.",
            path.display()
        );
        std::process::exit(1);
    }
    println!(
        "cargo:rustc-env=PORTCULLIS_GUEST_WASM_PATH={}",
        path.display()
    );
    // Hashing the 5 MB component at every start cost milliseconds of the
    // cold start; it is fixed per build.
    let digest = match std::fs::read(&path) {
        Ok(bytes) => {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&bytes))
        }
        Err(e) => {
            eprintln!(
                "error: cannot read the guest component `{}`: {e}",
                path.display()
            );
            std::process::exit(1);
        }
    };
    println!("cargo:rustc-env=PORTCULLIS_GUEST_WASM_SHA256={digest}");
}
