//! Mint test tokens (provenance and access JWTs) for case files.
//!
//! `mint ALG KEY CLAIMS_JSON [KID]`: ALG is HS256 (KEY: base64 secret, or
//! `@file` whose bytes are the secret), EdDSA/ES256/RS256 (KEY: PEM private
//! key file), or `none` (KEY ignored: an unsigned token, for negative cases).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [alg, key, claims, rest @ ..] = args.as_slice() else {
        return Err("usage: mint ALG KEY CLAIMS_JSON [KID]".into());
    };
    let claims: serde_json::Value =
        serde_json::from_str(claims).map_err(|e| format!("claims: {e}"))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if alg == "none" {
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(claims.to_string());
        println!("{header}.{body}.");
        return Ok(());
    }
    let (algorithm, key) = match alg.as_str() {
        "HS256" => {
            let secret = match key.strip_prefix('@') {
                Some(path) => std::fs::read(path).map_err(|e| format!("{path}: {e}"))?,
                None => base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .map_err(|e| format!("secret: {e}"))?,
            };
            (Algorithm::HS256, EncodingKey::from_secret(&secret))
        }
        other => {
            let pem = std::fs::read(key).map_err(|e| format!("{key}: {e}"))?;
            match other {
                "EdDSA" => (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_pem(&pem).map_err(|e| e.to_string())?,
                ),
                "ES256" => (
                    Algorithm::ES256,
                    EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?,
                ),
                "RS256" => (
                    Algorithm::RS256,
                    EncodingKey::from_rsa_pem(&pem).map_err(|e| e.to_string())?,
                ),
                _ => return Err(format!("unknown algorithm {other}")),
            }
        }
    };
    let mut header = Header::new(algorithm);
    header.kid = rest.first().cloned();
    println!(
        "{}",
        encode(&header, &claims, &key).map_err(|e| e.to_string())?
    );
    Ok(())
}
