//! Hotwords: context words shortly before a candidate that move its
//! confidence (as Presidio and Google DLP do).

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// How far before a candidate hotwords are looked for.
pub(crate) const WINDOW: usize = 40;

/// Hotword classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Payment cards.
    Card = 0,
    /// Order numbers, invoices, references, ids, timestamps: numbers that
    /// are not cards.
    IdLike,
    /// Bank accounts.
    Iban,
    /// Telephones.
    Phone,
    /// UK NHS.
    Nhs,
    /// Spanish ids.
    Nif,
    /// IP addresses.
    Ip,
    /// Version numbers (not IPs).
    Version,
    /// AWS.
    Aws,
    /// Bearer tokens.
    Bearer,
}

const CLASSES: usize = 10;

const HOTWORDS: &[(&str, Class)] = &[
    ("card", Class::Card),
    ("visa", Class::Card),
    ("mastercard", Class::Card),
    ("amex", Class::Card),
    ("american express", Class::Card),
    ("discover", Class::Card),
    ("jcb", Class::Card),
    ("diners", Class::Card),
    ("unionpay", Class::Card),
    ("cc", Class::Card),
    ("ccn", Class::Card),
    ("pan", Class::Card),
    ("payment", Class::Card),
    ("credit", Class::Card),
    ("debit", Class::Card),
    ("cvv", Class::Card),
    ("expiry", Class::Card),
    ("order", Class::IdLike),
    ("invoice", Class::IdLike),
    ("inv", Class::IdLike),
    ("ref", Class::IdLike),
    ("reference", Class::IdLike),
    ("tracking", Class::IdLike),
    ("ticket", Class::IdLike),
    ("sku", Class::IdLike),
    ("serial", Class::IdLike),
    ("txn", Class::IdLike),
    ("transaction", Class::IdLike),
    ("id", Class::IdLike),
    ("uuid", Class::IdLike),
    ("#", Class::IdLike),
    ("receipt", Class::IdLike),
    ("booking", Class::IdLike),
    ("confirmation", Class::IdLike),
    ("timestamp", Class::IdLike),
    ("epoch", Class::IdLike),
    ("ts", Class::IdLike),
    ("created", Class::IdLike),
    ("updated", Class::IdLike),
    ("time", Class::IdLike),
    ("iban", Class::Iban),
    ("account", Class::Iban),
    ("acct", Class::Iban),
    ("bank", Class::Iban),
    ("sepa", Class::Iban),
    ("bic", Class::Iban),
    ("swift", Class::Iban),
    ("beneficiary", Class::Iban),
    ("payee", Class::Iban),
    ("transfer", Class::Iban),
    ("phone", Class::Phone),
    ("tel", Class::Phone),
    ("telephone", Class::Phone),
    ("mobile", Class::Phone),
    ("cell", Class::Phone),
    ("call", Class::Phone),
    ("fax", Class::Phone),
    ("sms", Class::Phone),
    ("whatsapp", Class::Phone),
    ("nhs", Class::Nhs),
    ("patient", Class::Nhs),
    ("health", Class::Nhs),
    ("dni", Class::Nif),
    ("nif", Class::Nif),
    ("nie", Class::Nif),
    ("documento", Class::Nif),
    ("identidad", Class::Nif),
    ("ip", Class::Ip),
    ("addr", Class::Ip),
    ("address", Class::Ip),
    ("client", Class::Ip),
    ("remote", Class::Ip),
    ("host", Class::Ip),
    ("forwarded", Class::Ip),
    ("src", Class::Ip),
    ("dst", Class::Ip),
    ("peer", Class::Ip),
    ("version", Class::Version),
    ("ver", Class::Version),
    ("build", Class::Version),
    ("release", Class::Version),
    ("aws", Class::Aws),
    ("access", Class::Aws),
    ("bearer", Class::Bearer),
    ("authorization", Class::Bearer),
    ("jwt", Class::Bearer),
    ("token", Class::Bearer),
];

/// The hotword automaton.
pub(crate) struct Hotwords {
    ac: AhoCorasick,
}

/// Hotwords found before one candidate: for each class, where the
/// nearest one ends (distance from the window start; larger is nearer).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ctx {
    last: [Option<u16>; CLASSES],
}

impl Ctx {
    /// Whether any hotword of `class` is present.
    pub(crate) fn has(&self, class: Class) -> bool {
        self.last[class as usize].is_some()
    }

    /// Whether `class` is present and at least as near as `other`.
    pub(crate) fn wins_over(&self, class: Class, other: Class) -> bool {
        match (self.last[class as usize], self.last[other as usize]) {
            (Some(a), Some(b)) => a >= b,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

impl Hotwords {
    pub(crate) fn new() -> Result<Self, String> {
        // Every overlapping hotword; a full DFA without prefilter: windows
        // are 40 bytes, so per-call setup matters more than skipping.
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .prefilter(false)
            .build(HOTWORDS.iter().map(|(w, _)| w.as_bytes()))
            .map_err(|e| format!("dlp hotwords: {e}"))?;
        Ok(Hotwords { ac })
    }

    /// Hotwords ending in the `WINDOW` bytes before `at`.
    pub(crate) fn before(&self, body: &[u8], at: usize) -> Ctx {
        let at = at.min(body.len());
        let from = at.saturating_sub(WINDOW);
        let mut ctx = Ctx::default();
        let Some(window) = body.get(from..at) else {
            return ctx;
        };
        for m in self.ac.find_overlapping_iter(window) {
            let Some((word, class)) = HOTWORDS.get(m.pattern().as_usize()) else {
                continue;
            };
            if !at_word_edges(body, from + m.start(), from + m.end(), word.len() <= 3) {
                continue;
            }
            let end = u16::try_from(m.end()).unwrap_or(u16::MAX);
            let slot = &mut ctx.last[*class as usize];
            if slot.is_none_or(|e| e < end) {
                *slot = Some(end);
            }
        }
        ctx
    }
}

/// A hotword must start a word (camelCase counts); a short one (≤ 3
/// letters: `cc`, `tel`, `ip`) must also end one, so `hotel` and
/// `recipient` do not count. Words that are not letters (`#`) always count.
fn at_word_edges(body: &[u8], start: usize, end: usize, short: bool) -> bool {
    let first = body.get(start).copied().unwrap_or(b' ');
    if !first.is_ascii_alphabetic() {
        return true;
    }
    let last = body.get(end.wrapping_sub(1)).copied().unwrap_or(b' ');
    let escape = start >= 2
        && matches!(body.get(start - 1), Some(b'n' | b'r' | b't'))
        && body.get(start - 2) == Some(&b'\\');
    let starts = match start.checked_sub(1).and_then(|i| body.get(i)) {
        None => true,
        Some(_) if escape => true,
        Some(p) => {
            !p.is_ascii_alphanumeric() || (p.is_ascii_lowercase() && first.is_ascii_uppercase())
        }
    };
    if !starts {
        return false;
    }
    if !short {
        return true;
    }
    match body.get(end) {
        None => true,
        Some(n) => {
            !n.is_ascii_alphabetic() || (last.is_ascii_lowercase() && n.is_ascii_uppercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nearest_class() {
        let hw = Hotwords::new().unwrap();
        let body = b"card for order #4111";
        let ctx = hw.before(body, 16);
        assert!(ctx.has(Class::Card));
        assert!(ctx.wins_over(Class::IdLike, Class::Card));
        let body = b"order: 1, cardNumber: 4111";
        let ctx = hw.before(body, 22);
        assert!(ctx.wins_over(Class::Card, Class::IdLike));
    }

    #[test]
    fn respects_word_edges() {
        let hw = Hotwords::new().unwrap();
        assert!(!hw.before(b"hotel 1", 6).has(Class::Phone));
        assert!(!hw.before(b"recipient 1", 10).has(Class::Ip));
        assert!(hw.before(b"clientIp 1", 9).has(Class::Ip));
        assert!(hw.before(b"ccNumber 1", 9).has(Class::Card));
        assert!(hw.before(b"\"tel\": 1", 7).has(Class::Phone));
        assert!(hw.before(b"telephone 1", 10).has(Class::Phone));
        // After a JSON escape a word starts.
        assert!(hw.before(br"note\ncard 1", 11).has(Class::Card));
        assert!(!hw.before(b"noncard 1", 8).has(Class::Card));
    }
}
