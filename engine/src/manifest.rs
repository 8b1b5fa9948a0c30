//! `portcullis.toml`: the bundle manifest.
//!
//! Parsed strictly: an unknown key is an error naming it (a typo in a
//! security setting must never be silently ignored).

use crate::error::{BundleProblem, Location, ProblemKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Who the bundle is.
    pub bundle: BundleSection,
    /// Lockout counting.
    #[serde(default)]
    pub lockout: LockoutSection,
}

/// `[bundle]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSection {
    /// Bundle name.
    pub name: String,
    /// Bundle version (free text, e.g. semver).
    pub version: String,
    /// Cedar namespace that request types and actions are qualified into.
    pub namespace: String,
    /// What the bundle is for.
    #[serde(default)]
    pub description: String,
}

/// `[lockout]`: how failures are counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutSection {
    /// Failures count inside this window from the first one (e.g. "15m").
    #[serde(default = "default_window", with = "humantime_serde_compat")]
    pub window: Duration,
    /// A success clears the counter.
    #[serde(default = "default_true")]
    pub reset_on_success: bool,
}

impl Default for LockoutSection {
    fn default() -> Self {
        LockoutSection {
            window: default_window(),
            reset_on_success: true,
        }
    }
}

fn default_window() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_true() -> bool {
    true
}

/// Durations written as "90s", "15m", "1h 30m".
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"15m\": {e}"))
        })
    }
}

impl Manifest {
    /// Parse `portcullis.toml`.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, BundleProblem> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let loc = match e.span() {
                Some(span) => Location::at_offset(file, text, span.start),
                None => Location::file(file),
            };
            BundleProblem::at(ProblemKind::Manifest, loc, e.message().to_string())
        })?;
        let ns = &manifest.bundle.namespace;
        let valid = !ns.is_empty()
            && ns.split("::").all(|p| {
                let mut c = p.chars();
                c.next()
                    .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                    && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            });
        if !valid || ns == "Portcullis" {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("namespace"))
                .unwrap_or(0);
            return Err(BundleProblem::at(
                ProblemKind::Manifest,
                Location::at_line(file, text, line as u32 + 1, 1),
                format!(
                    "namespace `{ns}` is not a Cedar identifier path (like `Crm`), or is the engine's own `Portcullis`"
                ),
            ));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n[lockout]\nwindwo = \"5m\"\n";
        let e = Manifest::parse("portcullis.toml", text).err();
        let e = e.map(|e| (e.message.contains("windwo"), e.location.map(|l| l.line)));
        assert_eq!(e, Some((true, Some(6))));
    }

    #[test]
    fn durations_parse() -> Result<(), BundleProblem> {
        let text = "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n[lockout]\nwindow = \"90s\"\n";
        assert_eq!(
            Manifest::parse("m", text)?.lockout.window,
            Duration::from_secs(90)
        );
        Ok(())
    }
}
