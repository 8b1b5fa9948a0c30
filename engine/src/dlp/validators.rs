//! Checksums and shape checks that turn candidates into findings.

/// Luhn (mod 10) over ASCII digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The numeric value of the first `n` ASCII digits.
fn prefix(digits: &[u8], n: usize) -> u32 {
    digits.iter().take(n).fold(0u32, |acc, d| {
        acc * 10 + u32::from(d.wrapping_sub(b'0') % 10)
    })
}

/// Whether the digits have a card brand's prefix and length.
pub(crate) fn card_brand(digits: &[u8]) -> Option<&'static str> {
    let len = digits.len();
    let p1 = prefix(digits, 1);
    let p2 = prefix(digits, 2);
    let p3 = prefix(digits, 3);
    let p4 = prefix(digits, 4);
    if p1 == 4 && matches!(len, 13 | 16 | 19) {
        return Some("visa");
    }
    if len == 16 && ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) {
        return Some("mastercard");
    }
    if len == 15 && (p2 == 34 || p2 == 37) {
        return Some("amex");
    }
    if (16..=19).contains(&len) && (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3)) {
        return Some("discover");
    }
    if (16..=19).contains(&len) && (3528..=3589).contains(&p4) {
        return Some("jcb");
    }
    if (14..=19).contains(&len)
        && (p2 == 36 || p2 == 38 || p2 == 39 || (300..=305).contains(&p3) || p4 == 3095)
    {
        return Some("diners");
    }
    if (16..=19).contains(&len) && (p2 == 62 || (8100..=8171).contains(&p4)) {
        return Some("unionpay");
    }
    None
}

/// A digit string that reads as a Unix timestamp in seconds, millis,
/// micros or nanos between 2000-01-01 and 2038-01-19 (i32 time).
pub(crate) fn epoch_like(digits: &[u8]) -> bool {
    let scale = match digits.len() {
        10 => 0,
        13 => 3,
        16 => 6,
        19 => 9,
        _ => return false,
    };
    let secs = digits
        .iter()
        .take(digits.len() - scale)
        .fold(0u64, |acc, d| {
            acc * 10 + u64::from(d.wrapping_sub(b'0') % 10)
        });
    (946_684_800..=2_147_483_647).contains(&secs)
}

/// UK NHS number: 10 digits, weights 10..2, check = 11 - sum % 11 (11 → 0,
/// 10 → invalid).
pub(crate) fn nhs(digits: &[u8]) -> bool {
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .take(9)
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (10 - i as u32))
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == u32::from(digits[9] - b'0')
}

const NIF_LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";

/// Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter),
/// without separators, letters upper case.
pub(crate) fn es_nif(id: &[u8]) -> bool {
    let (first, rest) = match id.split_first() {
        Some(split) => split,
        None => return false,
    };
    let (lead, digits) = match first {
        b'X' => (0u32, rest),
        b'Y' => (1, rest),
        b'Z' => (2, rest),
        _ => (0, id),
    };
    let Some((letter, digits)) = digits.split_last() else {
        return false;
    };
    let expected_len = if first.is_ascii_digit() { 8 } else { 7 };
    if digits.len() != expected_len || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let number = digits
        .iter()
        .fold(lead, |acc, d| acc * 10 + u32::from(d - b'0'));
    NIF_LETTERS.get((number % 23) as usize) == Some(letter)
}

/// IBAN length per country: every country of the ISO 13616 IBAN registry
/// (SWIFT, release of 2025, including Åland under FI and the French
/// overseas territories under FR), then the national IBAN formats
/// published outside the registry (West and Central African states,
/// Algeria, Angola, Iran, Morocco, Mozambique …).
pub(crate) fn iban_length(country: &[u8]) -> Option<usize> {
    let len = match country {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AX" => 18,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BI" => 27,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DJ" => 27,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FK" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HN" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"LY" => 25,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MN" => 20,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NI" => 28,
        b"NL" => 18,
        b"NO" => 15,
        b"OM" => 23,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"RU" => 33,
        b"SA" => 24,
        b"SC" => 31,
        b"SD" => 18,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"SO" => 23,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        b"YE" => 30,
        // Crown dependencies print GB's format under their own code.
        b"GG" | b"IM" | b"JE" => 22,
        // Outside the registry: national formats in use.
        b"AO" | b"CV" | b"GW" | b"MZ" => 25,
        b"DZ" | b"IR" => 26,
        b"CF" | b"CG" | b"CM" | b"GA" | b"GQ" | b"KM" | b"MG" | b"TD" => 27,
        b"BF" | b"BJ" | b"CI" | b"MA" | b"ML" | b"NE" | b"SN" | b"TG" => 28,
        // French overseas territories use FR's format.
        b"GF" | b"GP" | b"MQ" | b"RE" | b"PF" | b"TF" | b"YT" | b"NC" | b"PM" | b"WF" | b"BL"
        | b"MF" => 27,
        _ => return None,
    };
    Some(len)
}

/// IBAN mod-97 check over the compact form (upper case, no spaces).
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        match c {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// Read an IBAN starting at `start` (country, check digits, then groups of
/// four optionally separated by single spaces). Returns its end when the
/// country is known, the length right and mod-97 holds.
pub(crate) fn iban_at(body: &[u8], start: usize) -> Option<usize> {
    let country = body.get(start..start + 2)?;
    let want = iban_length(country)?;
    let mut compact = [0u8; 34];
    let mut n = 0;
    let mut i = start;
    let mut spaced: Option<bool> = None;
    while n < want {
        if n > 0 && n % 4 == 0 {
            let space = body.get(i) == Some(&b' ');
            match spaced {
                None => spaced = Some(space),
                Some(s) if s != space => return None,
                Some(_) => {}
            }
            if space {
                i += 1;
            }
        }
        let c = *body.get(i)?;
        if !(c.is_ascii_digit() || c.is_ascii_uppercase()) {
            return None;
        }
        *compact.get_mut(n)? = c;
        n += 1;
        i += 1;
    }
    if body.get(i).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let compact = compact.get(..n)?;
    if !compact.get(2..4)?.iter().all(u8::is_ascii_digit) {
        return None;
    }
    iban_mod97(compact).then_some(i)
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// How many of lower, upper, digit, other a token uses.
pub(crate) fn char_classes(bytes: &[u8]) -> usize {
    let lower = bytes.iter().any(u8::is_ascii_lowercase);
    let upper = bytes.iter().any(u8::is_ascii_uppercase);
    let digit = bytes.iter().any(u8::is_ascii_digit);
    let other = bytes.iter().any(|b| !b.is_ascii_alphanumeric());
    [lower, upper, digit, other].iter().filter(|x| **x).count()
}

/// 8-4-4-4-12 hex.
pub(crate) fn uuid_shaped(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// E-mail shape beyond the regex: local part 1..=64 without `..` and not
/// ending in `.`, domain labels 1..=63 not starting or ending with `-`,
/// whole address ≤ 254.
pub(crate) fn email_ok(addr: &[u8]) -> bool {
    let Some(at) = addr.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    if local.is_empty()
        || local.len() > 64
        || addr.len() > 254
        || local.ends_with(b".")
        || local.windows(2).any(|w| w == b"..")
    {
        return false;
    }
    let mut labels = 0;
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 || label.starts_with(b"-") || label.ends_with(b"-")
        {
            return false;
        }
        labels += 1;
    }
    labels >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_brands() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(luhn(b"378282246310005"));
        assert!(luhn(b"5555555555554444"));
        assert_eq!(card_brand(b"4111111111111111"), Some("visa"));
        assert_eq!(card_brand(b"378282246310005"), Some("amex"));
        assert_eq!(card_brand(b"5555555555554444"), Some("mastercard"));
        assert_eq!(card_brand(b"2223003122003222"), Some("mastercard"));
        assert_eq!(card_brand(b"6011111111111117"), Some("discover"));
        assert_eq!(card_brand(b"3530111333300000"), Some("jcb"));
        assert_eq!(card_brand(b"30569309025904"), Some("diners"));
        assert_eq!(card_brand(b"6200000000000005"), Some("unionpay"));
        // Luhn-valid but no brand: not a card.
        assert!(luhn(b"1234567812345670"));
        assert_eq!(card_brand(b"1234567812345670"), None);
        // Visa of a length Visa does not issue.
        assert_eq!(card_brand(b"411111111111111"), None);
    }

    #[test]
    fn epochs() {
        assert!(epoch_like(b"1700000000"));
        assert!(epoch_like(b"1700000000123"));
        assert!(!epoch_like(b"4111111111111111"));
        assert!(!epoch_like(b"12345"));
    }

    #[test]
    fn nhs_numbers() {
        assert!(nhs(b"9434765919"));
        assert!(!nhs(b"9434765918"));
        assert!(!nhs(b"943476591"));
    }

    #[test]
    fn nif_and_nie() {
        assert!(es_nif(b"12345678Z"));
        assert!(!es_nif(b"12345678A"));
        assert!(es_nif(b"X1234567L"));
        assert!(!es_nif(b"X1234567A"));
        assert!(es_nif(b"Y1234567X"));
        assert!(es_nif(b"Z1234567R"));
        assert!(!es_nif(b"1234567Z"));
    }

    #[test]
    fn ibans() {
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(!iban_mod97(b"GB82WEST12345698765433"));
        assert!(!iban_mod97(b"DE89370400440532013001"));
        assert_eq!(iban_at(b"GB82 WEST 1234 5698 7654 32", 0), Some(27));
        assert_eq!(iban_at(b"GB82WEST12345698765432.", 0), Some(22));
        assert_eq!(iban_at(b"DE89 3704 0044 0532 0130 00", 0), Some(27));
        assert_eq!(iban_at(b"DE89 3704 0044 0532 0130 01", 0), None);
        // Mixed grouping is not an IBAN print format.
        assert_eq!(iban_at(b"DE89 37040044 0532 0130 00", 0), None);
        assert_eq!(iban_at(b"GB82WEST123456987654321", 0), None);
        assert_eq!(iban_at(b"QQ82WEST12345698765432", 0), None);
    }

    #[test]
    fn entropy_and_shapes() {
        assert!(entropy(b"aaaaaaaaaaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy(b"q8Zr3LmT9vXw2NcY7pKd5HsB") > 4.0);
        assert!(uuid_shaped(b"550e8400-e29b-41d4-a716-446655440000"));
        assert!(email_ok(b"john.doe@example.com"));
        assert!(!email_ok(b"john..doe@example.com"));
        assert!(!email_ok(b"john@-example.com"));
        assert_eq!(char_classes(b"abcD1"), 3);
    }
}
