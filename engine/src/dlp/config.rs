//! The `[dlp]` section of `portcullis.toml`, and the detector kinds.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every detector kind, as findings name them.
pub const KINDS: &[&str] = &[
    "card",
    "iban",
    "email",
    "phone",
    "nhs_number",
    "es_nif",
    "ipv4",
    "ipv6",
    "aws_access_key_id",
    "private_key",
    "jwt",
    "generic_secret",
    "salesforce_session_id",
    "salesforce_consumer_key",
    "salesforce_refresh_token",
    "model_weights.safetensors",
    "model_weights.gguf",
    "model_weights.npy",
    "model_weights.hdf5",
    "model_weights.pytorch_zip",
    "model_weights.pickle",
    "model_weights.onnx",
    "model_weights.float_array",
];

/// The name that stands for every `model_weights.*` kind.
const WEIGHTS: &str = "model_weights";

/// How one kind of finding is redacted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactionMode {
    /// Every byte becomes `*`.
    #[default]
    Mask,
    /// Replaced by `[kind:digest]` (a correlation handle, not anonymous).
    Hash,
    /// Removed (in JSON: the string holding it becomes empty).
    Drop,
}

/// Which record fields one data flow may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowRule {
    /// Fields allowed for the flow (`*`, `Prefix*`, `Related.Field`).
    pub allowed_fields: Vec<String>,
    /// Per module (e.g. `sales_cloud`): replaces `allowed_fields`.
    pub modules: BTreeMap<String, Vec<String>>,
}

/// `[dlp]` in `portcullis.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlpConfig {
    /// Scan at all (default true).
    pub enabled: bool,
    /// Enabled detector kinds (see [`KINDS`]; `model_weights` enables all
    /// weight formats). Default: all.
    pub detectors: Vec<String>,
    /// Larger bodies are not scanned; the result says `oversize`.
    /// Default 8 MiB.
    pub max_body_bytes: usize,
    /// Findings below this confidence (0..=100) are dropped. Default 50.
    pub min_confidence: u8,
    /// Redaction per kind (or `model_weights`); default `mask`.
    pub redaction: BTreeMap<String, RedactionMode>,
    /// Field minimisation: flow id → allowed fields.
    pub flows: BTreeMap<String, FlowRule>,
}

impl Default for DlpConfig {
    fn default() -> Self {
        DlpConfig {
            enabled: true,
            detectors: default_detectors(),
            max_body_bytes: 8 << 20,
            min_confidence: 50,
            redaction: BTreeMap::new(),
            flows: BTreeMap::new(),
        }
    }
}

fn default_detectors() -> Vec<String> {
    let mut names: Vec<String> = KINDS
        .iter()
        .filter(|k| !k.starts_with(WEIGHTS))
        .map(|k| k.to_string())
        .collect();
    names.push(WEIGHTS.to_string());
    names
}

fn known_name(name: &str) -> bool {
    name == WEIGHTS || KINDS.contains(&name)
}

impl DlpConfig {
    /// Check the section: known detector and redaction kinds, a confidence
    /// within 0..=100, flows with no empty field names. Meant for bundle
    /// loading, so a typo is refused rather than silently ignored.
    pub fn validate(&self) -> Result<(), String> {
        let known = || format!("{}, {WEIGHTS}", KINDS.join(", "));
        for name in &self.detectors {
            if !known_name(name) {
                return Err(format!(
                    "dlp.detectors: unknown detector `{name}`; known: {}",
                    known()
                ));
            }
        }
        for name in self.redaction.keys() {
            if !known_name(name) {
                return Err(format!(
                    "dlp.redaction: unknown kind `{name}`; known: {}",
                    known()
                ));
            }
        }
        if self.min_confidence > 100 {
            return Err(format!(
                "dlp.min_confidence: {} is above 100",
                self.min_confidence
            ));
        }
        for (flow, rule) in &self.flows {
            let lists = std::iter::once(("allowed_fields".to_string(), &rule.allowed_fields))
                .chain(
                    rule.modules
                        .iter()
                        .map(|(m, l)| (format!("modules.{m}"), l)),
                );
            for (list, fields) in lists {
                if fields.iter().any(|f| f.trim().is_empty()) {
                    return Err(format!("dlp.flows.{flow}.{list}: empty field name"));
                }
            }
        }
        scan_engine_ready()
    }

    /// The redaction mode for `kind`.
    pub fn mode_for(&self, kind: &str) -> RedactionMode {
        if let Some(mode) = self.redaction.get(kind) {
            return *mode;
        }
        if kind.starts_with(WEIGHTS)
            && let Some(mode) = self.redaction.get(WEIGHTS)
        {
            return *mode;
        }
        RedactionMode::Mask
    }
}

fn scan_engine_ready() -> Result<(), String> {
    super::scanner::engine().map(|_| ())
}

/// A detector kind, internally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Card,
    Iban,
    Email,
    Phone,
    Nhs,
    EsNif,
    Ipv4,
    Ipv6,
    Aws,
    PrivateKey,
    Jwt,
    GenericSecret,
    SfSession,
    SfConsumerKey,
    SfRefreshToken,
    WSafetensors,
    WGguf,
    WNpy,
    WHdf5,
    WPytorchZip,
    WPickle,
    WOnnx,
    WFloatArray,
}

impl Kind {
    pub(crate) const ALL: [Kind; 23] = [
        Kind::Card,
        Kind::Iban,
        Kind::Email,
        Kind::Phone,
        Kind::Nhs,
        Kind::EsNif,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Aws,
        Kind::PrivateKey,
        Kind::Jwt,
        Kind::GenericSecret,
        Kind::SfSession,
        Kind::SfConsumerKey,
        Kind::SfRefreshToken,
        Kind::WSafetensors,
        Kind::WGguf,
        Kind::WNpy,
        Kind::WHdf5,
        Kind::WPytorchZip,
        Kind::WPickle,
        Kind::WOnnx,
        Kind::WFloatArray,
    ];

    /// The contract name (an entry of [`KINDS`], same order).
    pub(crate) fn name(self) -> &'static str {
        KINDS.get(self as usize).copied().unwrap_or("unknown")
    }

    pub(crate) fn is_weights(self) -> bool {
        self >= Kind::WSafetensors
    }
}

/// A set of enabled kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KindSet(u32);

impl KindSet {
    #[cfg(test)]
    pub(crate) fn all() -> Self {
        KindSet((1u32 << Kind::ALL.len()) - 1)
    }

    pub(crate) fn from_config(cfg: &DlpConfig) -> Self {
        let mut bits = 0u32;
        for name in &cfg.detectors {
            for kind in Kind::ALL {
                if kind.name() == name || (name == WEIGHTS && kind.is_weights()) {
                    bits |= 1 << kind as u32;
                }
            }
        }
        KindSet(bits)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn has(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }

    pub(crate) fn any_weights(self) -> bool {
        Kind::ALL.iter().any(|k| k.is_weights() && self.has(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names_agree() {
        assert_eq!(Kind::ALL.len(), KINDS.len());
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
            assert_eq!(kind.name(), KINDS[i]);
        }
    }

    #[test]
    fn defaults_enable_everything() {
        let cfg = DlpConfig::default();
        assert_eq!(KindSet::from_config(&cfg), KindSet::all());
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.max_body_bytes, 8 << 20);
        assert_eq!(cfg.min_confidence, 50);
    }

    #[test]
    fn parses_toml_strictly() {
        let cfg: DlpConfig = toml::from_str(
            r#"
            detectors = ["card", "model_weights"]
            min_confidence = 70
            [redaction]
            card = "hash"
            model_weights = "drop"
            [flows.marketing_sync]
            allowed_fields = ["Id", "Email"]
            modules.service_cloud = ["Id"]
            "#,
        )
        .unwrap();
        assert!(cfg.enabled);
        let set = KindSet::from_config(&cfg);
        assert!(set.has(Kind::Card) && set.has(Kind::WGguf) && !set.has(Kind::Email));
        assert_eq!(cfg.mode_for("card"), RedactionMode::Hash);
        assert_eq!(cfg.mode_for("model_weights.npy"), RedactionMode::Drop);
        assert_eq!(cfg.mode_for("email"), RedactionMode::Mask);
        assert!(cfg.validate().is_ok());

        let err = toml::from_str::<DlpConfig>("detector = []").unwrap_err();
        assert!(err.to_string().contains("detector"));
        let bad: DlpConfig = toml::from_str(r#"detectors = ["credit_card"]"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("credit_card"));
        let bad: DlpConfig = toml::from_str("min_confidence = 101").unwrap();
        assert!(bad.validate().is_err());
        let bad = toml::from_str::<DlpConfig>(
            r#"[redaction]
card = "shred""#,
        );
        assert!(bad.is_err());
    }
}
