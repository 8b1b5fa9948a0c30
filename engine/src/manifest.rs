//! `portcullis.toml`: the bundle manifest.
//!
//! Parsed strictly: an unknown key is an error naming it (a typo in a
//! security setting must never be silently ignored).

use crate::error::{BundleProblem, Location, ProblemKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Who the bundle is.
    pub bundle: BundleSection,
    /// Lockout ladders, per pathway. What the manifest sets is laid over
    /// the defaults of each pathway and key, key by key.
    #[serde(default, deserialize_with = "overlay")]
    pub lockout: LockoutSection,
    /// Synthetic-data provenance: trusted issuers and what a token must carry.
    #[serde(default)]
    pub synthetic: SyntheticSection,
    /// CRM modules: how each names the facts policies use.
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleMap>,
    /// Who is told about which (pathway, stage), and when to alert.
    #[serde(default)]
    pub escalation: Vec<EscalationRule>,
    /// OAuth access tokens: trusted issuers, audience, scope hierarchy.
    #[serde(default)]
    pub oauth: OauthSection,
    /// Where regions are: region name → country code (or `EPO`).
    #[serde(default)]
    pub residency: ResidencySection,
    /// Cross-border transfers: known recipients.
    #[serde(default)]
    pub transfer: TransferSection,
    /// Rate limits, scraping and model-extraction detection.
    #[serde(default)]
    pub rate: crate::rate::RateSection,
    /// Just-in-time admin access.
    #[serde(default)]
    pub jit: crate::jit::JitSection,
    /// DLP detectors, redaction and field minimisation.
    #[serde(default)]
    pub dlp: crate::dlp::DlpConfig,
    /// Proxies trusted to write `X-Forwarded-For` (`context.peer` and
    /// `context.forwarded_for`; see [`crate::network`]).
    #[serde(default)]
    pub network: crate::network::NetworkSection,
    /// Inbound webhook deliveries: sources, secrets, redelivery, lockout.
    #[serde(default)]
    pub webhooks: crate::webhook::WebhookSection,
    /// The control map: measure id (`nis2-21-2-a` …, `ai-act-50`) → the
    /// policies and cases that evidence it.
    #[serde(default)]
    pub controls: BTreeMap<String, crate::controls::Evidence>,
    /// Models, principals and keys revoked, each with its enforcing policy.
    #[serde(default)]
    pub revocations: Vec<crate::revocation::Revocation>,
}

/// `[oauth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthSection {
    /// The `aud` access tokens must carry.
    pub audience: String,
    /// Allowed clock skew ("60s"; at most 5m).
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// The claim holding scopes: a space-separated string or an array
    /// (`scope`, or `scp`).
    pub scope_claim: String,
    /// Trusted issuers and their keys (PEM, JWK or JWKS).
    pub issuers: Vec<crate::jwt::TrustedKey>,
    /// Scope hierarchy: a scope → the scopes it includes (expanded
    /// transitively before policies see them).
    pub scopes: BTreeMap<String, Vec<String>>,
}

impl Default for OauthSection {
    fn default() -> Self {
        OauthSection {
            audience: String::new(),
            leeway: Duration::from_secs(60),
            scope_claim: "scope".into(),
            issuers: Vec::new(),
            scopes: BTreeMap::new(),
        }
    }
}

/// `[residency]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResidencySection {
    /// Region or endpoint name → ISO 3166 alpha-2 country code, or the code
    /// of an international organisation in the adequacy data (`EPO`).
    pub regions: BTreeMap<String, String>,
}

/// `[transfer]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferSection {
    /// Recipients a request may name (`context.recipient`).
    pub recipients: BTreeMap<String, Recipient>,
    /// After this date (YYYY-MM-DD) the adequacy data is due for review:
    /// `flows check` run later warns that it is stale.
    pub adequacy_review_after: Option<String>,
    /// Adequacy data older than this ("180d") since its `as_of` is stale.
    pub adequacy_max_age: Option<String>,
}

/// A known recipient of transfers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Country code where it processes the data.
    pub country: String,
    /// Certified under the EU–US Data Privacy Framework.
    #[serde(default)]
    pub dpf_certified: bool,
}

/// Deserialise a section as the defaults with the given keys laid over them
/// (tables merge key by key; unknown keys still fail).
pub(crate) fn overlay<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Serialize + serde::de::DeserializeOwned,
{
    fn merge(base: &mut toml::Table, top: toml::Table) {
        for (k, v) in top {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }
    let top = toml::Table::deserialize(d)?;
    let mut base = toml::Table::try_from(T::default()).map_err(serde::de::Error::custom)?;
    merge(&mut base, top);
    T::deserialize(base).map_err(serde::de::Error::custom)
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
    /// Hosts that install bundles while serving (`portcullis serve`) refuse
    /// this bundle, and any bundle that would replace it, unless it carries
    /// a valid Ed25519 signature by a key the host trusts. The engine itself
    /// holds no keys; the check is the installing host's.
    #[serde(default)]
    pub require_signature: bool,
}

/// `[lockout]`: one ladder configuration per pathway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutSection {
    /// Real customers' traffic (and unproven synthetic claims).
    #[serde(default = "PathwayLockout::authentic")]
    pub authentic: PathwayLockout,
    /// Traffic with verified synthetic provenance.
    #[serde(default = "PathwayLockout::synthetic")]
    pub synthetic: PathwayLockout,
}

impl Default for LockoutSection {
    fn default() -> Self {
        LockoutSection {
            authentic: PathwayLockout::authentic(),
            synthetic: PathwayLockout::synthetic(),
        }
    }
}

/// How failures are counted and punished on one pathway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathwayLockout {
    /// Failures count inside this sliding window ("15m").
    #[serde(with = "duration")]
    pub window: Duration,
    /// A success clears failures and lock repeats (never a hard lock).
    pub reset_on_success: bool,
    /// A key with no failure for this long forgets its lock repeats ("24h").
    #[serde(with = "duration")]
    pub reset_after: Duration,
    /// Most failure times kept per key; counts saturate here.
    pub max_tracked: u32,
    /// Ladder per account (all addresses together).
    pub account: Ladder,
    /// Ladder per (account, client address).
    pub account_ip: Ladder,
    /// Ladder per client address (all accounts together: spraying).
    pub ip: Ladder,
    /// Retry advice given to clients on this pathway.
    pub retry: RetryPolicy,
}

impl PathwayLockout {
    /// Defaults for real customers: the (account, address) pair locks; the
    /// account alone only challenges and throttles, so an attacker elsewhere
    /// cannot lock a victim out; an address that sprays is throttled, then locked.
    pub fn authentic() -> Self {
        PathwayLockout {
            window: Duration::from_secs(15 * 60),
            reset_on_success: true,
            reset_after: Duration::from_secs(24 * 3600),
            max_tracked: 100,
            account: Ladder {
                challenge_after: 5,
                throttle_after: 10,
                lock_after: 0,
                ..Ladder::default()
            },
            account_ip: Ladder::default(),
            ip: Ladder {
                challenge_after: 0,
                throttle_after: 20,
                lock_after: 50,
                ..Ladder::default()
            },
            retry: RetryPolicy::default(),
        }
    }

    /// Defaults for verified synthetic traffic: load tests fail a lot by
    /// design; thresholds are higher and locks short.
    pub fn synthetic() -> Self {
        let ladder = Ladder {
            challenge_after: 0,
            throttle_after: 50,
            lock_after: 200,
            lock_duration: Duration::from_secs(60),
            max_lock: Duration::from_secs(600),
            hard_lock_after: 0,
            ..Ladder::default()
        };
        PathwayLockout {
            window: Duration::from_secs(5 * 60),
            reset_on_success: true,
            reset_after: Duration::from_secs(3600),
            max_tracked: 100,
            account: ladder.clone(),
            account_ip: ladder.clone(),
            ip: ladder,
            retry: RetryPolicy {
                max_attempts: 10,
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
                backoff: Growth::Exponential,
            },
        }
    }

    /// The ladder of one key kind.
    pub fn ladder(&self, key: crate::lockout::KeyKind) -> &Ladder {
        match key {
            crate::lockout::KeyKind::Account => &self.account,
            crate::lockout::KeyKind::AccountIp => &self.account_ip,
            crate::lockout::KeyKind::Ip => &self.ip,
        }
    }
}

/// How lock durations grow with each repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Growth {
    /// duration + increment × (repeat − 1)
    Linear,
    /// duration × 2^(repeat − 1)
    Exponential,
}

/// Thresholds of one key's ladder: failures inside the window drive
/// challenge → throttle → temporary lock; repeated temporary locks grow
/// and end in a hard lock (an operator must clear it). 0 disables a rung.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ladder {
    /// Failures from which the stage is `challenge`.
    pub challenge_after: u32,
    /// Failures from which the stage is `throttle`.
    pub throttle_after: u32,
    /// Failures that start a temporary lock.
    pub lock_after: u32,
    /// First temporary lock ("5m").
    #[serde(with = "duration")]
    pub lock_duration: Duration,
    /// Growth per repeat.
    pub lock_growth: Growth,
    /// Linear growth step ("5m").
    #[serde(with = "duration")]
    pub lock_increment: Duration,
    /// Cap on one temporary lock ("1h").
    #[serde(with = "duration")]
    pub max_lock: Duration,
    /// Temporary locks after which the next is a hard lock.
    pub hard_lock_after: u32,
}

impl Default for Ladder {
    fn default() -> Self {
        Ladder {
            challenge_after: 3,
            throttle_after: 5,
            lock_after: 10,
            lock_duration: Duration::from_secs(5 * 60),
            lock_growth: Growth::Exponential,
            lock_increment: Duration::from_secs(5 * 60),
            max_lock: Duration::from_secs(3600),
            hard_lock_after: 3,
        }
    }
}

impl Ladder {
    /// Length of the `repeat`-th temporary lock (1-based), capped.
    pub fn lock_for(&self, repeat: u32) -> Duration {
        let n = repeat.max(1) - 1;
        let d = match self.lock_growth {
            Growth::Linear => self
                .lock_duration
                .saturating_add(self.lock_increment.saturating_mul(n)),
            Growth::Exponential => self
                .lock_duration
                .saturating_mul(2u32.saturating_pow(n.min(30))),
        };
        d.min(self.max_lock)
    }
}

/// Retry advice: clients and webhooks back off instead of hammering.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First wait ("2s").
    #[serde(with = "duration")]
    pub base: Duration,
    /// Longest wait ("5m").
    #[serde(with = "duration")]
    pub max: Duration,
    /// Growth of the wait.
    pub backoff: Growth,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
            backoff: Growth::Exponential,
        }
    }
}

/// `[synthetic]`: who may vouch for synthetic data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticSection {
    /// The `aud` provenance tokens must carry.
    pub audience: String,
    /// Allowed clock skew for `exp`/`nbf` ("30s").
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Claims a provenance token must carry besides `iss` and `exp`.
    pub required_claims: Vec<String>,
    /// Trusted issuers and their keys.
    pub issuers: Vec<crate::jwt::TrustedKey>,
}

impl Default for SyntheticSection {
    fn default() -> Self {
        SyntheticSection {
            audience: "portcullis".into(),
            leeway: Duration::from_secs(30),
            required_claims: vec!["dataset".into(), "generator".into()],
            issuers: Vec::new(),
        }
    }
}

/// How one CRM module names the facts of the common vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleMap {
    /// Vocabulary name (`synthetic`, `owner`, `id`, `country`) → the
    /// module's record field (`Synthetic__c`, `OwnerId` …).
    pub fields: BTreeMap<String, String>,
    /// Record id prefix → object name (`001` → `Account`, `500` → `Case`).
    #[serde(default)]
    pub id_prefixes: BTreeMap<String, String>,
}

/// Vocabulary names a module map may use.
pub const VOCABULARY: [&str; 4] = ["synthetic", "owner", "id", "country"];

/// One row of the escalation matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationRule {
    /// `authentic`, `synthetic` or `*`.
    pub pathway: String,
    /// Lockout stage (`challenge`, `throttle`, `temporary_lock`, `hard_lock`) or `*`.
    pub stage: String,
    /// Who is told (a role: `security-operations`, `engineering` …).
    pub target: String,
    /// How many such decisions inside the monitoring window raise an alert.
    #[serde(default = "one")]
    pub alert_threshold: u32,
}

fn one() -> u32 {
    1
}

/// Durations written as "90s", "15m", "1h 30m".
pub(crate) mod duration {
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
            // Errors from an overlaid section have no span: find the key
            // the message quotes.
            let quoted = e
                .message()
                .split('`')
                .nth(1)
                .and_then(|name| text.find(name));
            let loc = match (e.span(), quoted) {
                (_, Some(off)) if e.message().contains("unknown field") => {
                    Location::at_offset(file, text, off)
                }
                (Some(span), _) => Location::at_offset(file, text, span.start),
                (None, Some(off)) => Location::at_offset(file, text, off),
                (None, None) => Location::file(file),
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
        manifest.check(file, text)?;
        Ok(manifest)
    }

    fn check(&self, file: &str, text: &str) -> Result<(), BundleProblem> {
        let at = |needle: &str| {
            let off = text.find(needle).unwrap_or(0);
            Location::at_offset(file, text, off)
        };
        for (i, key) in self.synthetic.issuers.iter().enumerate() {
            if let Err(e) = key.verifiers() {
                return Err(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(&key.issuer),
                    format!("synthetic.issuers[{i}] (`{}`): {e}", key.issuer),
                ));
            }
        }
        for (i, key) in self.oauth.issuers.iter().enumerate() {
            if let Err(e) = key.verifiers() {
                return Err(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(&key.issuer),
                    format!("oauth.issuers[{i}] (`{}`): {e}", key.issuer),
                ));
            }
        }
        if let Err(e) = self.network.validate() {
            return Err(BundleProblem::at(
                ProblemKind::Manifest,
                at("trusted_proxies"),
                format!("network.{e}"),
            ));
        }
        if let Err(e) = self.dlp.validate() {
            return Err(BundleProblem::at(
                ProblemKind::Manifest,
                at("[dlp"),
                format!("dlp: {e}"),
            ));
        }
        if self.oauth.leeway > Duration::from_secs(300) {
            return Err(BundleProblem::at(
                ProblemKind::Manifest,
                at("leeway"),
                "oauth.leeway is over the bound of 5m (clock skew, not a grace period)",
            ));
        }
        if let Some(d) = &self.transfer.adequacy_review_after
            && crate::transfer::parse_date(d).is_none()
        {
            return Err(BundleProblem::at(
                ProblemKind::Manifest,
                at("adequacy_review_after"),
                format!("transfer.adequacy_review_after: `{d}` is not a date like 2027-03-01"),
            ));
        }
        if let Some(d) = &self.transfer.adequacy_max_age
            && humantime::parse_duration(d).is_err()
        {
            return Err(BundleProblem::at(
                ProblemKind::Manifest,
                at("adequacy_max_age"),
                format!("transfer.adequacy_max_age: `{d}` is not a duration like \"180d\""),
            ));
        }
        for (name, r) in &self.transfer.recipients {
            if r.country.len() < 2 {
                return Err(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(name),
                    format!(
                        "transfer.recipients.{name}: country `{}` is not a code like `US`",
                        r.country
                    ),
                ));
            }
        }
        for (name, m) in &self.modules {
            for vocab in m.fields.keys() {
                if !VOCABULARY.contains(&vocab.as_str()) {
                    return Err(BundleProblem::at(
                        ProblemKind::Manifest,
                        at(vocab),
                        format!(
                            "modules.{name}.fields: unknown vocabulary name `{vocab}` (expected one of {})",
                            VOCABULARY.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Err(e) = self.webhooks.validate(&self.modules) {
            let needle = e
                .split(':')
                .next()
                .and_then(|path| path.rsplit('.').next())
                .filter(|n| text.contains(*n))
                .unwrap_or("[webhooks");
            return Err(BundleProblem::at(ProblemKind::Manifest, at(needle), e));
        }
        const STAGES: [&str; 5] = ["challenge", "throttle", "temporary_lock", "hard_lock", "*"];
        for (i, r) in self.escalation.iter().enumerate() {
            if !["authentic", "synthetic", "*"].contains(&r.pathway.as_str()) {
                return Err(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(&r.target),
                    format!(
                        "escalation[{i}]: pathway `{}` (expected authentic, synthetic or *)",
                        r.pathway
                    ),
                ));
            }
            if !STAGES.contains(&r.stage.as_str()) {
                return Err(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(&r.target),
                    format!(
                        "escalation[{i}]: stage `{}` (expected one of {})",
                        r.stage,
                        STAGES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The lockout settings of a pathway.
    pub fn pathway(&self, p: crate::context::Pathway) -> &PathwayLockout {
        match p {
            crate::context::Pathway::Authentic => &self.lockout.authentic,
            crate::context::Pathway::Synthetic => &self.lockout.synthetic,
        }
    }

    /// The escalation row for (pathway, stage), most specific first.
    pub fn escalation_for(&self, pathway: &str, stage: &str) -> Option<&EscalationRule> {
        let score =
            |r: &EscalationRule| (r.pathway == pathway) as u8 * 2 + (r.stage == stage) as u8;
        self.escalation
            .iter()
            .filter(|r| {
                (r.pathway == pathway || r.pathway == "*") && (r.stage == stage || r.stage == "*")
            })
            .max_by_key(|r| score(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n[lockout.authentic]\nwindwo = \"5m\"\n";
        let e = Manifest::parse("portcullis.toml", text).err();
        let e = e.map(|e| (e.message.contains("windwo"), e.location.map(|l| l.line)));
        assert_eq!(e, Some((true, Some(6))));
    }

    #[test]
    fn require_signature_defaults_off_and_is_strict() -> Result<(), BundleProblem> {
        let base = "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n";
        assert!(!Manifest::parse("m", base)?.bundle.require_signature);
        let on = format!("{base}require_signature = true\n");
        assert!(Manifest::parse("m", &on)?.bundle.require_signature);
        let typo = format!("{base}require_signatures = true\n");
        let e = Manifest::parse("m", &typo).err();
        assert!(e.is_some_and(|e| e.message.contains("require_signatures")));
        let ill = format!("{base}require_signature = \"yes\"\n");
        assert!(Manifest::parse("m", &ill).is_err());
        Ok(())
    }

    #[test]
    fn lock_durations_grow_and_cap() {
        let l = Ladder::default();
        let mins: Vec<u64> = (1..=6).map(|r| l.lock_for(r).as_secs() / 60).collect();
        assert_eq!(mins, [5, 10, 20, 40, 60, 60]);
        let lin = Ladder {
            lock_growth: Growth::Linear,
            lock_increment: Duration::from_secs(120),
            ..Ladder::default()
        };
        let mins: Vec<u64> = (1..=3).map(|r| lin.lock_for(r).as_secs()).collect();
        assert_eq!(mins, [300, 420, 540]);
    }

    #[test]
    fn durations_parse_and_unset_rungs_keep_defaults() -> Result<(), BundleProblem> {
        let text = "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n[lockout.authentic]\nwindow = \"90s\"\n[lockout.authentic.account_ip]\nlock_after = 4\n";
        let m = Manifest::parse("m", text)?;
        assert_eq!(m.lockout.authentic.window, Duration::from_secs(90));
        assert_eq!(m.lockout.authentic.account_ip.lock_after, 4);
        assert_eq!(m.lockout.authentic.account_ip.challenge_after, 3);
        assert_eq!(
            m.lockout.authentic.account.lock_after, 0,
            "the account key keeps its own default"
        );
        assert_eq!(
            m.lockout.synthetic.account_ip.throttle_after, 50,
            "the synthetic pathway keeps its defaults"
        );
        Ok(())
    }
}
