//! The graduated outcome of a decision and its ordering.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a decision tells the caller to do, least to most severe.
///
/// `allow < redact < challenge < throttle < deny < lock`; when several
/// determining policies carry an `@outcome`, the most severe wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Let the request through.
    Allow,
    /// Let it through with the body redacted (DLP obligations).
    Redact,
    /// Ask for a stronger proof (MFA, captcha) before going on.
    Challenge,
    /// Slow down: retry after `retry_after` seconds.
    Throttle,
    /// Refuse this request.
    Deny,
    /// Refuse, and the subject stays locked until `retry_after` or an operator.
    Lock,
}

impl Outcome {
    /// Every outcome, least severe first.
    pub const ALL: [Outcome; 6] = [
        Outcome::Allow,
        Outcome::Redact,
        Outcome::Challenge,
        Outcome::Throttle,
        Outcome::Deny,
        Outcome::Lock,
    ];

    /// The lowercase name used in annotations, JSON and case files.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Redact => "redact",
            Outcome::Challenge => "challenge",
            Outcome::Throttle => "throttle",
            Outcome::Deny => "deny",
            Outcome::Lock => "lock",
        }
    }

    /// True when the request may go on (`allow`, or `redact` with its body rewritten).
    pub fn is_allowed(self) -> bool {
        matches!(self, Outcome::Allow | Outcome::Redact)
    }

    /// True for outcomes a `permit` may carry; the refusals belong to `forbid`.
    pub fn fits_permit(self) -> bool {
        matches!(self, Outcome::Allow | Outcome::Redact)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!("unknown outcome `{s}` (expected one of allow, redact, challenge, throttle, deny, lock)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_documented_ladder() {
        let mut v = Outcome::ALL.to_vec();
        v.reverse();
        v.sort();
        assert_eq!(v, Outcome::ALL.to_vec());
        assert!(Outcome::Lock > Outcome::Deny && Outcome::Deny > Outcome::Throttle);
        assert!(Outcome::Throttle > Outcome::Challenge && Outcome::Challenge > Outcome::Redact);
        assert!(Outcome::Redact > Outcome::Allow);
    }

    #[test]
    fn parses_names_and_names_the_bad_one() {
        assert_eq!("lock".parse::<Outcome>(), Ok(Outcome::Lock));
        let err = "locked".parse::<Outcome>().err().unwrap_or_default();
        assert!(err.contains("`locked`"), "{err}");
    }
}
