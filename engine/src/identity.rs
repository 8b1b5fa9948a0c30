//! Account identifiers as the counters see them, and the identifiers a
//! request may carry at all.
//!
//! One account must not escape its lockout counter (nor its rate bucket or
//! its JIT grants) by writing its id another way. The canonical form used
//! for every state key is:
//!
//! 1. NFKC: compatibility forms fold to their plain letters (fullwidth
//!    `ａｌｉｃｅ`, ligatures `ﬁ`, the Kelvin sign `K`, superscripts …);
//! 2. default-ignorable code points removed (zero-width space and joiners,
//!    soft hyphen, bidi controls, variation selectors, tag characters …),
//!    which render as nothing;
//! 3. Unicode lowercase, then NFKC again (lowercasing can leave a
//!    non-normalised sequence, e.g. `İ`);
//! 4. surrounding white space trimmed.
//!
//! Look-alike letters from another script (Cyrillic `а` for Latin `a`)
//! are not mapped: an id is refused when one of its labels (the parts
//! between `@` and `.`) mixes scripts, as browsers refuse such domain
//! labels. Digits, punctuation and marks belong to every script. An id
//! written wholly in one script (`алиса`) is its own account, as it is
//! at the identity provider. Control characters (CR, LF, NUL …) are
//! refused in every entity id, type and action: they have no place in an
//! identifier and could forge lines in text logs.
//!
//! Cedar sees the id as given: entity ids in `entities.json` and in
//! policies are compared exactly (a case variant is simply another,
//! unprivileged principal).

use crate::error::RequestError;
use unicode_normalization::UnicodeNormalization;
use unicode_script::UnicodeScript;
use unicode_security::MixedScript;

/// Default_Ignorable_Code_Point (Unicode DerivedCoreProperties).
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// The canonical form of an account id (see the module docs).
pub fn canonical(id: &str) -> String {
    if id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        // The common case, and the same result: ASCII is NFKC already.
        return id.trim().to_ascii_lowercase();
    }
    let folded: String = id
        .nfkc()
        .filter(|c| !is_default_ignorable(*c))
        .collect::<String>()
        .to_lowercase();
    folded
        .nfkc()
        .filter(|c| !is_default_ignorable(*c))
        .collect::<String>()
        .trim()
        .to_string()
}

/// Why `id` cannot name an account, if it cannot.
pub fn check_account(id: &str) -> Result<(), String> {
    check_text(id)?;
    let canon = canonical(id);
    if canon.is_empty() {
        return Err("is empty once normalised (NFKC, invisible characters removed)".into());
    }
    for label in canon.split(['@', '.']) {
        // ASCII is Latin and Common only: one script.
        if !label.is_ascii() && !label.is_single_script() {
            let mut scripts: Vec<&str> = label
                .chars()
                .map(|c| c.script())
                .filter(|s| {
                    !matches!(
                        s,
                        unicode_script::Script::Common | unicode_script::Script::Inherited
                    )
                })
                .map(|s| s.full_name())
                .collect();
            scripts.sort_unstable();
            scripts.dedup();
            return Err(format!(
                "`{}` mixes scripts ({}): look-alike letters from another script are refused",
                crate::request::truncate(label),
                scripts.join(", ")
            ));
        }
    }
    Ok(())
}

/// Why `text` cannot be an identifier, if it cannot: a control character.
pub fn check_text(text: &str) -> Result<(), String> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "contains the control character U+{:04X}",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// The identifier checks of a request: every entity field free of control
/// characters, the principal's id a canonicalisable single-script account.
pub fn check_request(req: &crate::request::Request) -> Result<(), RequestError> {
    for (field, text) in [
        ("principal.type", req.principal.kind.as_str()),
        ("action", req.action.as_str()),
        ("resource.type", req.resource.kind.as_str()),
        ("resource.id", req.resource.id.as_str()),
    ] {
        check_text(text).map_err(|m| RequestError::field(field, m))?;
    }
    check_account(&req.principal.id).map_err(|m| RequestError::field("principal.id", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_of_one_account_share_one_form() {
        let plain = canonical("alice@example.com");
        for v in [
            "Alice@Example.COM",
            "  alice@example.com ",
            "ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ",
            "al\u{200B}ice@exam\u{00AD}ple.com",
            "\u{FEFF}alice@example.com\u{2060}",
            "ali\u{200D}ce@example.com",
            "ALICE@EXAMPLE.COM",
        ] {
            assert_eq!(canonical(v), plain, "{v:?}");
        }
        // The Kelvin sign and the long s are compatibility forms of k and s.
        assert_eq!(canonical("\u{212A}ate"), "kate");
        assert_eq!(canonical("\u{017F}am"), "sam");
        // Lowercasing İ leaves i + combining dot; it stays one form.
        assert_eq!(canonical("İ"), canonical(&canonical("İ")));
    }

    #[test]
    fn look_alikes_from_another_script_are_refused() {
        // Cyrillic а (U+0430) among Latin letters.
        let e = check_account("\u{0430}lice@example.com")
            .err()
            .unwrap_or_default();
        assert!(e.contains("Cyrillic") && e.contains("Latin"), "{e}");
        // Greek ο in the domain label.
        assert!(check_account("alice@ex\u{03BF}mple.com").is_err());
        // Wholly one script, or scripts in different labels: accounts.
        assert_eq!(check_account("алиса@пример.рф"), Ok(()));
        assert_eq!(check_account("user@例え.jp"), Ok(()));
        assert_eq!(check_account("café-42@example.com"), Ok(()));
    }

    #[test]
    fn controls_and_invisible_ids_are_refused() {
        assert!(check_account("alice\r\n@example.com").is_err());
        assert!(check_account("\u{200B}\u{200C}").is_err());
        assert!(check_text("a\u{0000}b").is_err());
        assert_eq!(check_text("Crm::Action"), Ok(()));
    }
}
