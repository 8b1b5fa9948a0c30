//! Bundle signing: Ed25519 keys, signatures over a bundle's content hash,
//! and their verification against the keys a service trusts.
//!
//! Responsible for: `portcullis keygen` (PKCS#8 PEM private key, mode 0600,
//! and an SPKI PEM public key, the formats `openssl pkey` reads), `portcullis
//! sign` (a `bundle.sig` file beside a bundle directory's files, or the
//! `signature` member of a packed bundle), and [`TrustedKeys::verify`].
//!
//! What is signed: the 64 ASCII hex digits of the bundle's content hash, the
//! SHA-256 that `describe` and `pack` print (over every bundle file's name
//! and text). `bundle.sig` is not a bundle file (hosts read files by
//! extension), so signing never changes the hash. A key's id is the first 16
//! hex digits of the SHA-256 of its raw 32-byte public key.
//!
//! Not responsible for: deciding whether a bundle must be signed (the
//! service does that, from its flags and the manifest's
//! `[bundle] require_signature`), nor which keys are trusted (the service's
//! `--trusted-key` files; never the candidate bundle).

use crate::bundle_dir;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use portcullis_engine::bundle::{BundleSignature, Packed, SIGNATURE_FILE};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The only signature algorithm.
pub const ALG: &str = "ed25519";

/// The id of a public key: first 16 hex digits of SHA-256 of its raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
        .chars()
        .take(16)
        .collect()
}

/// Make a new key pair: `PREFIX.key` (private, PKCS#8 PEM, mode 0600) and
/// `PREFIX.pub` (public, SPKI PEM). Refuses to overwrite either file.
/// Answers the two paths and the key id.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let private_path = with_suffix(prefix, "key");
    let public_path = with_suffix(prefix, "pub");
    for p in [&private_path, &public_path] {
        if p.exists() {
            bail!("`{}` exists; not overwriting a key", p.display());
        }
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the private key: {e}"))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the public key: {e}"))?;
    write_private(&private_path, pem.as_bytes())?;
    std::fs::write(&public_path, public.as_bytes())
        .with_context(|| format!("cannot write `{}`", public_path.display()))?;
    Ok((private_path, public_path, key_id(&key.verifying_key())))
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

/// Read a private key (PKCS#8 PEM, as `keygen` or `openssl genpkey
/// -algorithm ed25519` write).
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the private key `{}`", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        anyhow::anyhow!(
            "`{}` is not an Ed25519 private key in PKCS#8 PEM: {e}",
            path.display()
        )
    })
}

/// Read a public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`, as `keygen`
/// and `openssl pkey -pubout` write), or the raw 32 bytes in base64.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key `{}`", path.display()))?;
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(trimmed).map_err(|e| {
            anyhow::anyhow!(
                "`{}` is not an Ed25519 public key in SPKI PEM: {e}",
                path.display()
            )
        });
    }
    let raw = B64
        .decode(trimmed)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{}` is neither SPKI PEM nor 32 bytes of base64 (an Ed25519 public key)",
                path.display()
            )
        })?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|e| anyhow::anyhow!("`{}` is not a valid Ed25519 key: {e}", path.display()))
}

/// The signature of a content hash.
pub fn sign_hash(key: &SigningKey, hash: &str) -> BundleSignature {
    let sig: Signature = key.sign(hash.as_bytes());
    BundleSignature {
        alg: ALG.to_string(),
        key_id: key_id(&key.verifying_key()),
        signature: B64.encode(sig.to_bytes()),
    }
}

/// Why a signature was not accepted. The messages are what the service
/// reports as a refused swap's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature, and one is required.
    #[error("signature missing (the bundle must be signed by a trusted key)")]
    Missing,
    /// Signed with another algorithm.
    #[error("signature algorithm `{0}` is not supported (expected `ed25519`)")]
    Algorithm(String),
    /// The key id is not among the trusted keys.
    #[error("signature by untrusted key `{0}`")]
    UntrustedKey(String),
    /// The signature text is not 64 bytes of base64.
    #[error("signature malformed: {0}")]
    Malformed(String),
    /// A trusted key, but the signature does not match the content.
    #[error(
        "signature invalid: it does not match the bundle content (hash {hash}) for key `{key_id}`; the bundle was altered after signing"
    )]
    Invalid {
        /// The signer's key id.
        key_id: String,
        /// The content hash checked (first 16 hex digits).
        hash: String,
    },
}

/// The public keys a service trusts, with their ids.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl TrustedKeys {
    /// Read every key file.
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys> {
        let mut keys = Vec::new();
        for p in paths {
            let k = read_verifying_key(p)?;
            keys.push((key_id(&k), k));
        }
        Ok(TrustedKeys { keys })
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted key ids.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Check a signature over `hash`; answers the signer's key id.
    pub fn verify(&self, hash: &str, sig: &BundleSignature) -> Result<String, SignatureError> {
        if sig.alg != ALG {
            return Err(SignatureError::Algorithm(sig.alg.clone()));
        }
        let Some((id, key)) = self.keys.iter().find(|(id, _)| *id == sig.key_id) else {
            return Err(SignatureError::UntrustedKey(sig.key_id.clone()));
        };
        let bytes = B64
            .decode(sig.signature.trim())
            .map_err(|e| SignatureError::Malformed(format!("not base64: {e}")))?;
        let bytes = <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| {
            SignatureError::Malformed(format!("{} bytes (expected 64)", bytes.len()))
        })?;
        key.verify(hash.as_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| SignatureError::Invalid {
                key_id: id.clone(),
                hash: hash.chars().take(16).collect(),
            })?;
        Ok(id.clone())
    }
}

/// Read a bundle directory's `bundle.sig`, if there is one.
pub fn read_dir_signature(dir: &Path) -> Result<Option<BundleSignature>> {
    let path = dir.join(SIGNATURE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("`{}` is not a bundle signature", path.display()))
}

/// `portcullis sign --key KEY TARGET`: sign a bundle directory (writes
/// `TARGET/bundle.sig`) or a packed bundle file (rewrites it with its
/// `signature` member). The bundle must load (parse and validate); its
/// cases are the installer's to run. Answers a line saying what was done.
pub fn sign_target(key_path: &Path, target: &Path) -> Result<String> {
    let key = read_signing_key(key_path)?;
    if target.is_dir() {
        let files = bundle_dir::read(target)?;
        let bundle = portcullis_engine::Bundle::load(&files).map_err(|p| refused(target, &p))?;
        let hash = bundle.info().hash.clone();
        let sig = sign_hash(&key, &hash);
        let path = target.join(SIGNATURE_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&sig)? + "\n")
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(format!(
            "signed bundle {} {} (hash {hash}) with key {}: {}",
            bundle.info().name,
            bundle.info().version,
            sig.key_id,
            path.display()
        ))
    } else {
        let text = std::fs::read_to_string(target)
            .with_context(|| format!("cannot read `{}`", target.display()))?;
        let mut packed: Packed = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not a packed bundle", target.display()))?;
        let bundle = Packed::load(&text).map_err(|p| refused(target, &p))?;
        let hash = bundle.info().hash.clone();
        let sig = sign_hash(&key, &hash);
        let key_id = sig.key_id.clone();
        packed.signature = Some(sig);
        std::fs::write(target, serde_json::to_string(&packed)? + "\n")
            .with_context(|| format!("cannot write `{}`", target.display()))?;
        Ok(format!(
            "signed packed bundle {} {} (hash {hash}) with key {key_id}: {}",
            packed.name,
            packed.version,
            target.display()
        ))
    }
}

fn refused(target: &Path, problems: &[portcullis_engine::BundleProblem]) -> anyhow::Error {
    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    anyhow::anyhow!(
        "not signed: bundle `{}` is refused: {}",
        target.display(),
        list.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SigningKey, TrustedKeys) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let vk = key.verifying_key();
        (
            key,
            TrustedKeys {
                keys: vec![(key_id(&vk), vk)],
            },
        )
    }

    #[test]
    fn a_signature_verifies_only_for_its_hash_and_key() {
        let (key, trusted) = pair();
        let hash = "ab".repeat(32);
        let sig = sign_hash(&key, &hash);
        assert_eq!(sig.key_id.len(), 16);
        assert_eq!(trusted.verify(&hash, &sig), Ok(sig.key_id.clone()));
        let other = "cd".repeat(32);
        assert!(matches!(
            trusted.verify(&other, &sig),
            Err(SignatureError::Invalid { .. })
        ));
        let stranger = sign_hash(&SigningKey::from_bytes(&[9u8; 32]), &hash);
        assert!(matches!(
            trusted.verify(&hash, &stranger),
            Err(SignatureError::UntrustedKey(_))
        ));
        let mut bad = sig.clone();
        bad.signature = "AAAA".into();
        assert!(matches!(
            trusted.verify(&hash, &bad),
            Err(SignatureError::Malformed(_))
        ));
        let mut alg = sig;
        alg.alg = "rsa".into();
        assert!(matches!(
            trusted.verify(&hash, &alg),
            Err(SignatureError::Algorithm(_))
        ));
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("portcullis-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (private, public, id) = keygen(&dir.join("k"))?;
        let sk = read_signing_key(&private)?;
        let vk = read_verifying_key(&public)?;
        assert_eq!(sk.verifying_key(), vk);
        assert_eq!(key_id(&vk), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(keygen(&dir.join("k")).is_err(), "never overwrites a key");
        // Raw base64 public keys are read too.
        std::fs::write(dir.join("raw.pub"), B64.encode(vk.as_bytes()))?;
        assert_eq!(read_verifying_key(&dir.join("raw.pub"))?, vk);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
