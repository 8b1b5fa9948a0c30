//! Positive and negative samples per detector, through the public API.

use super::weights::build;
use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Findings of every confidence.
fn all(body: &[u8]) -> Vec<Finding> {
    let cfg = DlpConfig {
        min_confidence: 0,
        ..DlpConfig::default()
    };
    scan(&cfg, body).findings
}

/// (kind, confidence, matched text) of every finding.
fn found(body: &str) -> Vec<(String, u8, String)> {
    all(body.as_bytes())
        .into_iter()
        .map(|f| {
            let text = body[f.offset..f.offset + f.length].to_string();
            (f.kind, f.confidence, text)
        })
        .collect()
}

fn one(body: &str) -> (String, u8, String) {
    let f = found(body);
    assert_eq!(f.len(), 1, "{body:?} -> {f:?}");
    f[0].clone()
}

fn none_of(kind: &str, body: &str) {
    let f = found(body);
    assert!(f.iter().all(|(k, _, _)| k != kind), "{body:?} -> {f:?}");
}

fn kc(kind: &str, confidence: u8, text: &str) -> (String, u8, String) {
    (kind.to_string(), confidence, text.to_string())
}

#[test]
fn cards_validated_with_context_rules() {
    assert_eq!(
        one("card: 4111 1111 1111 1111."),
        kc("card", 95, "4111 1111 1111 1111")
    );
    assert_eq!(
        one("x 4111111111111111 y"),
        kc("card", 60, "4111111111111111")
    );
    assert_eq!(
        one("x 4111-1111-1111-1111 y"),
        kc("card", 70, "4111-1111-1111-1111")
    );
    assert_eq!(
        one("Amex 3782 822463 10005"),
        kc("card", 95, "3782 822463 10005")
    );
    assert_eq!(
        one("mc 2223003122003222"),
        kc("card", 60, "2223003122003222")
    );
    assert_eq!(
        one("visa 5555555555554444"),
        kc("card", 95, "5555555555554444")
    );
    assert_eq!(
        one("order #4111111111111111"),
        kc("card", 30, "4111111111111111")
    );
    assert_eq!(
        one("invoice ref: 4111 1111 1111 1111"),
        kc("card", 30, "4111 1111 1111 1111")
    );
    // The nearest hotword wins.
    assert_eq!(
        one(r#"{"order": 7, "card_number": "4111111111111111"}"#).1,
        95
    );
    // Luhn-valid epoch seconds / millis / micros are never cards (no brand
    // starts like a 2000..2038 timestamp), with or without card context.
    for stem in ["170000000", "170000000012", "170000000012345"] {
        let ts = (0..10)
            .map(|d| format!("{stem}{d}"))
            .find(|t| validators::luhn(t.as_bytes()))
            .unwrap();
        assert!(validators::epoch_like(ts.as_bytes()));
        none_of("card", &format!("card ts {ts} ok"));
    }
    // Not flagged by default: 30 and 20 are below 50.
    let cfg = DlpConfig::default();
    assert_eq!(scan(&cfg, b"order #4111111111111111").count(), 0);
    assert_eq!(scan(&cfg, b"pan 4111111111111111").count(), 1);

    none_of("card", "card 4111 1111 1111 1112");
    // Luhn-valid, but no brand: not a card at all.
    none_of("card", "card 1234567812345670");
    // Luhn-valid epoch millis / seconds are no brand either.
    none_of("card", "ts 1700000000006 and 1700000008");
    // Glued to letters or a decimal point.
    none_of("card", "id abc4111111111111111");
    none_of("card", "x 4111111111111111abc");
    none_of("card", "3.4111111111111111");
    // Odd grouping is not how cards are printed.
    none_of("card", "card 41 1111 1111 111 111");
    // A card after an unrelated number in the same digit run.
    assert_eq!(
        one("qty 2 4111 1111 1111 1111"),
        kc("card", 70, "4111 1111 1111 1111")
    );
}

#[test]
fn ibans() {
    assert_eq!(
        one("IBAN: GB82 WEST 1234 5698 7654 32."),
        kc("iban", 98, "GB82 WEST 1234 5698 7654 32")
    );
    assert_eq!(
        one("to DE89 3704 0044 0532 0130 00"),
        kc("iban", 85, "DE89 3704 0044 0532 0130 00")
    );
    assert_eq!(
        one("x DE89370400440532013000 y"),
        kc("iban", 85, "DE89370400440532013000")
    );
    assert_eq!(one("NO9386011117947").0, "iban");
    none_of("iban", "IBAN GB82 WEST 1234 5698 7654 33");
    none_of("iban", "IBAN DE89 3704 0044 0532 0130 01");
    none_of("iban", "IBAN DE89370400440532013000123");
    none_of("iban", "IBAN QQ89370400440532013000");
}

#[test]
fn emails() {
    assert_eq!(
        one("mail ann.lee+crm@mail.example.co.uk, thanks"),
        kc("email", 90, "ann.lee+crm@mail.example.co.uk")
    );
    assert_eq!(one(r#"{"e":"bob@example.com"}"#).2, "bob@example.com");
    none_of("email", "ann..lee@example.com");
    none_of("email", "user@localhost");
    none_of("email", "a@-bad.example.com");
    none_of("email", "no at sign here.com");
}

#[test]
fn phones() {
    assert_eq!(one("+44 20 7946 0958"), kc("phone", 70, "+44 20 7946 0958"));
    assert_eq!(
        one("tel: +44 20 7946 0958"),
        kc("phone", 90, "+44 20 7946 0958")
    );
    assert_eq!(
        one("Phone: +1 (555) 123-4567"),
        kc("phone", 90, "+1 (555) 123-4567")
    );
    assert_eq!(
        one("call me on 020 7946 0958"),
        kc("phone", 75, "020 7946 0958")
    );
    assert_eq!(one(r#""MobilePhone": "(020) 7946 0958""#).0, "phone");
    // National formats need context.
    none_of("phone", "ref 020 7946 0958");
    none_of("phone", "phone 2024-01-15");
    none_of("phone", "+0 20 7946 0958");
    none_of("phone", "+12 34");
}

#[test]
fn nhs_numbers() {
    assert_eq!(
        one("NHS number: 943 476 5919"),
        kc("nhs_number", 95, "943 476 5919")
    );
    assert_eq!(one("patient 9434765919").1, 95);
    assert_eq!(one("x 943 476 5919").1, 40);
    assert_eq!(scan(&DlpConfig::default(), b"x 943 476 5919").count(), 0);
    none_of("nhs_number", "NHS 943 476 5918");
    // With a phone word it is a phone, not an NHS number.
    assert_eq!(one("tel 943 476 5919").0, "phone");
}

#[test]
fn spanish_ids() {
    assert_eq!(one("DNI 12345678Z"), kc("es_nif", 98, "12345678Z"));
    assert_eq!(one("x 12345678-Z y"), kc("es_nif", 75, "12345678-Z"));
    assert_eq!(one("NIE X1234567L").0, "es_nif");
    assert_eq!(one("nie z1234567r").0, "es_nif");
    none_of("es_nif", "DNI 12345678A");
    none_of("es_nif", "NIE X1234567A");
    none_of("es_nif", "DNI 12345678ZZ");
}

#[test]
fn ip_addresses() {
    assert_eq!(one("client ip 203.0.113.7"), kc("ipv4", 90, "203.0.113.7"));
    assert_eq!(one("from 203.0.113.7:443"), kc("ipv4", 70, "203.0.113.7"));
    assert_eq!(one("bind 127.0.0.1").1, 40);
    assert_eq!(one("version 1.2.3.4").1, 20);
    none_of("ipv4", "oid 1.3.6.1.4.1");
    none_of("ipv4", "x 999.1.1.1");
    none_of("ipv4", "x 10.01.1.1");
    assert_eq!(
        one("remote addr 2001:db8::8a2e:370:7334 ok"),
        kc("ipv6", 90, "2001:db8::8a2e:370:7334")
    );
    assert_eq!(
        one("x 2001:0db8:85a3:0000:0000:8a2e:0370:7334 y").2,
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    );
    assert_eq!(one("x fe80::1%eth0").2, "fe80::1");
    assert_eq!(one("x ::ffff:192.0.2.128 y").2, "::ffff:192.0.2.128");
    assert_eq!(one("x ::1 y").1, 40);
    none_of(
        "ipv6",
        "at 10:00:00 the Self::add and std::vec of aa:bb:cc:dd:ee:ff",
    );
    none_of("ipv6", "x 2001:db8:::1");
}

fn jwt(header: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"1234567890","name":"Ann"}"#),
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    )
}

#[test]
fn secrets() {
    assert_eq!(
        one("key AKIAIOSFODNN7EXAMPLE."),
        kc("aws_access_key_id", 90, "AKIAIOSFODNN7EXAMPLE")
    );
    assert_eq!(one("aws_access_key_id=ASIAY34FZKBOKMUTVV7A").1, 99);
    none_of("aws_access_key_id", "AKIAIOSFODNN7EXAMPL.");
    none_of("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE1");
    none_of("aws_access_key_id", "AKIAiosfodnn7example");

    let token = jwt(r#"{"alg":"HS256","typ":"JWT"}"#);
    assert_eq!(one(&format!("x {token} y")), kc("jwt", 95, &token));
    assert_eq!(one(&format!("Authorization: Bearer {token}")).1, 99);
    none_of("jwt", &format!("x {} y", jwt(r#"{"typ":"JWT","x":1}"#)));
    none_of("jwt", "eyJhbGciOiJIUzI1NiJ9broken.eyJ4IjoxfQ.sig");

    assert_eq!(
        one(r#"{"api_key": "q8Zr3LmT9vXw2NcY7pKd5HsB"}"#),
        kc("generic_secret", 85, "q8Zr3LmT9vXw2NcY7pKd5HsB")
    );
    assert_eq!(
        one("client_secret=q8zr3lmt9vxw2ncy7pkd5hsb").0,
        "generic_secret"
    );
    assert_eq!(one("password: 'q8Zr3LmT9vXw2NcY7pKd5HsB'").1, 85);
    assert_eq!(
        one(r#"{"idempotency_key": "f47ac10b-58cc-4372-a567-0e02b2c3d479"}"#).1,
        40
    );
    none_of("generic_secret", "password=aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    none_of("generic_secret", "value q8Zr3LmT9vXw2NcY7pKd5HsB");
    none_of("generic_secret", "password=short1A");
    none_of(
        "generic_secret",
        r#"{"token_url": "https://login.salesforce.com/services/oauth2/token"}"#,
    );
    // A JWT after a keyword is a JWT, not also a generic secret.
    let f = found(&format!(r#"{{"access_token": "{token}"}}"#));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "jwt");
}

#[test]
fn private_keys() {
    let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4\nq8Zr3Lm==\n-----END RSA PRIVATE KEY-----";
    assert_eq!(
        one(&format!("key:\n{block}\n")),
        kc("private_key", 99, block)
    );
    let json = format!(r#"{{"pem": "{}"}}"#, block.replace('\n', "\\n"));
    assert_eq!(one(&json).1, 99);
    let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA";
    assert_eq!(one(cut), kc("private_key", 90, cut));
    none_of(
        "private_key",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    );
}

fn tail(n: usize) -> String {
    "Ab3.xY9_qZ7".chars().cycle().take(n).collect()
}

#[test]
fn salesforce_tokens() {
    let session = format!("00D5g000004XyZ1!AQ{}", tail(94));
    assert_eq!(
        one(&format!("sid={session};")),
        kc("salesforce_session_id", 95, &session)
    );
    let session18 = format!("00D5g000004XyZ1EAA!{}", tail(96));
    assert_eq!(one(&format!("x {session18}")).0, "salesforce_session_id");
    none_of(
        "salesforce_session_id",
        &format!("00D5g000004XyZ1{}", tail(96)),
    );
    none_of(
        "salesforce_session_id",
        &format!("00D5g000004XyZ1!{}", tail(40)),
    );

    let key = format!("3MVG9{}", tail(80));
    assert_eq!(
        one(&format!("ck {key} ")),
        kc("salesforce_consumer_key", 95, &key)
    );
    none_of("salesforce_consumer_key", &format!("3MVG9{}", tail(30)));

    for prefix in ["5Aep861", "5AEP861"] {
        let token = format!("{prefix}{}", tail(84));
        assert_eq!(one(&token), kc("salesforce_refresh_token", 95, &token));
    }
    none_of("salesforce_refresh_token", &format!("5Aep861{}", tail(50)));
}

#[test]
fn weight_files_whole_body() {
    let cases: [(Vec<u8>, &str); 7] = [
        (build::safetensors(), "model_weights.safetensors"),
        (build::gguf(), "model_weights.gguf"),
        (build::npy(), "model_weights.npy"),
        (build::hdf5(0), "model_weights.hdf5"),
        (build::pytorch_zip(), "model_weights.pytorch_zip"),
        (build::pickle(), "model_weights.pickle"),
        (build::onnx(), "model_weights.onnx"),
    ];
    for (body, kind) in cases {
        let r = scan(&DlpConfig::default(), &body);
        assert_eq!(r.count(), 1, "{kind}: {:?}", r.findings);
        let f = &r.findings[0];
        assert_eq!((f.kind.as_str(), f.offset, f.length), (kind, 0, body.len()));
        assert!(r.model_weights());
    }
}

#[test]
fn weight_files_inside_bodies() {
    // HDF5 after a 512-byte user block; not at other offsets.
    let r = scan(&DlpConfig::default(), &build::hdf5(512));
    assert_eq!(
        r.kinds().into_iter().collect::<Vec<_>>(),
        ["model_weights.hdf5"]
    );
    let r = scan(&DlpConfig::default(), &build::hdf5(700));
    assert!(!r.model_weights());
    // GGUF and NumPy after a multipart preamble.
    for (file, kind) in [
        (build::gguf(), "model_weights.gguf"),
        (build::npy(), "model_weights.npy"),
    ] {
        let mut body = b"--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        let at = body.len();
        body.extend(&file);
        let r = scan(&DlpConfig::default(), &body);
        assert_eq!(r.count(), 1, "{kind}");
        assert_eq!(
            (r.findings[0].kind.as_str(), r.findings[0].offset),
            (kind, at)
        );
    }
    // A PyTorch zip known only from its central directory.
    let r = scan(&DlpConfig::default(), &build::zip_central_only());
    assert!(r.model_weights());
    assert!(!scan(&DlpConfig::default(), b"GGUF is a file format, PK too").model_weights());
}

#[test]
fn weights_in_json_base64_and_float_arrays() {
    for (file, kind) in [
        (build::safetensors(), "model_weights.safetensors"),
        (build::gguf(), "model_weights.gguf"),
        (build::onnx(), "model_weights.onnx"),
        (build::pytorch_zip(), "model_weights.pytorch_zip"),
    ] {
        let mut file = file;
        file.resize(2048, 0);
        for encoded in [STANDARD.encode(&file), URL_SAFE_NO_PAD.encode(&file)] {
            let body = format!(r#"{{"name": "m", "blob": "{encoded}"}}"#);
            let f = all(body.as_bytes());
            assert_eq!(f.len(), 1, "{kind}: {f:?}");
            assert_eq!(f[0].kind, kind);
            assert_eq!(&body[f[0].offset..f[0].offset + f[0].length], encoded);
        }
    }
    // A data: URL and escaped slashes.
    let mut file = build::npy();
    file.resize(3000, 7);
    let encoded = STANDARD.encode(&file).replace('/', "\\/");
    let body = format!(r#"{{"blob": "data:application/octet-stream;base64,{encoded}"}}"#);
    assert_eq!(one(&body).0, "model_weights.npy");
    // Large base64 of something else: nothing.
    let noise = STANDARD.encode(vec![b'a'; 3000]);
    assert!(found(&format!(r#"{{"blob": "{noise}"}}"#)).is_empty());

    let floats: Vec<String> = (0..300).map(|i| format!("{:.4}", i as f64 / 7.0)).collect();
    let body = format!(r#"{{"weights": [{}], "n": 1}}"#, floats.join(", "));
    let (kind, confidence, text) = one(&body);
    assert_eq!(
        (kind.as_str(), confidence),
        ("model_weights.float_array", 60)
    );
    assert!(text.starts_with('[') && text.ends_with(']'));
    let ints: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert!(found(&format!("[{}]", ints.join(","))).is_empty());
    let few: Vec<String> = (0..100).map(|i| format!("{i}.5")).collect();
    assert!(found(&format!("[{}]", few.join(","))).is_empty());
    // A card inside a short numeric array is still found.
    assert_eq!(one("[4111111111111111, 1]").0, "card");
}

/// Feed `body` in chunks cut at `cuts` (offsets), return the result.
fn streamed(cfg: &DlpConfig, body: &[u8], cuts: &[usize]) -> ScanResult {
    let mut stream = StreamScan::new(cfg);
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        let cut = cut.clamp(at, body.len());
        stream.feed(&body[at..cut]);
        at = cut;
    }
    stream.finish()
}

#[test]
fn chunk_boundaries_find_a_match_exactly_once() {
    let cfg = DlpConfig::default();
    let card = b"4111 1111 1111 1111";
    let mut body = b"lorem ipsum ".repeat(2000);
    let start = 10_000;
    body[start - 7..start].copy_from_slice(b" card: ");
    body[start..start + card.len()].copy_from_slice(card);
    body[start + card.len()] = b' ';
    let one_shot = scan(&cfg, &body);
    assert_eq!(one_shot.count(), 1);
    assert_eq!(
        (one_shot.findings[0].offset, one_shot.findings[0].confidence),
        (start, 95)
    );
    // Every cut through the card, its context word and just around them.
    for cut in start - 10..start + card.len() + 3 {
        assert_eq!(streamed(&cfg, &body, &[cut]), one_shot, "cut at {cut}");
    }
    // One byte at a time.
    let bytes: Vec<usize> = (1..body.len()).collect();
    assert_eq!(streamed(&cfg, &body, &bytes), one_shot);

    // A long token across the edge is one finding.
    let key = format!("3MVG9{}", tail(100));
    let mut body = b"lorem ipsum ".repeat(200);
    let start = 1000;
    body[start - 1] = b' ';
    body[start..start + key.len()].copy_from_slice(key.as_bytes());
    body[start + key.len()] = b' ';
    let one_shot = scan(&cfg, &body);
    assert_eq!(one_shot.count(), 1);
    assert_eq!(
        (one_shot.findings[0].offset, one_shot.findings[0].length),
        (start, key.len())
    );
    for cut in [start + 1, start + 5, start + 50, start + key.len() - 1] {
        assert_eq!(streamed(&cfg, &body, &[cut]), one_shot, "cut at {cut}");
    }
}

#[test]
fn long_findings_stream_with_bounded_memory() {
    let cfg = DlpConfig {
        max_body_bytes: usize::MAX,
        ..DlpConfig::default()
    };
    // A 3 MB base64 safetensors blob inside JSON, then an e-mail.
    let mut file = build::safetensors();
    file.resize(3 << 20, 7);
    let body = format!(
        r#"{{"blob": "{}", "owner": "ann@example.com"}}"#,
        STANDARD.encode(&file)
    );
    let one_shot = scan(&cfg, body.as_bytes());
    let kinds: Vec<&str> = one_shot.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["model_weights.safetensors", "email"]);
    let mut stream = StreamScan::new(&cfg);
    let mut most = 0;
    for chunk in body.as_bytes().chunks(4096) {
        stream.feed(chunk);
        most = most.max(stream.retained());
    }
    assert_eq!(stream.finish(), one_shot);
    assert!(most <= LOOKBACK + LOOKAHEAD + 4096, "kept {most} bytes");

    // A weights file streamed: one finding over the whole body.
    let mut gguf = build::gguf();
    gguf.resize(1 << 20, 3);
    let one_shot = scan(&cfg, &gguf);
    assert_eq!(one_shot.count(), 1);
    assert_eq!(one_shot.findings[0].length, gguf.len());
    let cuts: Vec<usize> = (1..gguf.len()).step_by(1000).collect();
    assert_eq!(streamed(&cfg, &gguf, &cuts), one_shot);

    // Oversize is known as soon as the cap is passed.
    let small = DlpConfig {
        max_body_bytes: 100,
        ..DlpConfig::default()
    };
    let r = streamed(&small, &[b'a'; 150], &[60, 120]);
    assert!(r.oversize && r.findings.is_empty());
    assert_eq!(r, scan(&small, &[b'a'; 150]));
}

#[test]
fn config_switches() {
    let body = b"card 4111111111111111 mail ann@example.com";
    let off = DlpConfig {
        enabled: false,
        ..DlpConfig::default()
    };
    assert_eq!(scan(&off, body), ScanResult::default());
    let small = DlpConfig {
        max_body_bytes: 10,
        ..DlpConfig::default()
    };
    let r = scan(&small, body);
    assert!(r.oversize && r.findings.is_empty() && r.scanned_bytes == 0);
    let only_email = DlpConfig {
        detectors: vec!["email".into()],
        ..DlpConfig::default()
    };
    let r = scan(&only_email, body);
    assert_eq!(r.kinds().into_iter().collect::<Vec<_>>(), ["email"]);
    let none = DlpConfig {
        detectors: vec![],
        ..DlpConfig::default()
    };
    let r = scan(&none, body);
    assert!(r.findings.is_empty() && r.scanned_bytes == body.len());
    let strict = DlpConfig {
        min_confidence: 91,
        ..DlpConfig::default()
    };
    assert_eq!(
        scan(&strict, body).kinds().into_iter().collect::<Vec<_>>(),
        ["card"]
    );
    let r = scan(&DlpConfig::default(), body);
    assert_eq!(
        (r.count(), r.max_confidence(), r.scanned_bytes),
        (2, 95, body.len())
    );
    assert!(!r.model_weights());
}

#[test]
fn findings_never_carry_the_text() {
    let body = "card 4111111111111111 mail ann@example.com key AKIAIOSFODNN7EXAMPLE";
    let r = scan(&DlpConfig::default(), body.as_bytes());
    let json = serde_json::to_string(&r).unwrap();
    for secret in [
        "4111111111111111",
        "ann@example.com",
        "AKIAIOSFODNN7EXAMPLE",
    ] {
        assert!(!json.contains(secret));
    }
    assert!(json.contains("\"scanned_bytes\"") && !json.contains("\"error\""));
    let f = &r.findings[0];
    assert_eq!(f.digest, digest16(b"4111111111111111"));
    assert_eq!(f.digest.len(), 16);
    let back: ScanResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn redaction_end_to_end() {
    let body = br#"{"Name": "Ann", "Email": "ann@example.com", "Card": "4111 1111 1111 1111", "Note": "call +44 20 7946 0958"}"#;
    let cfg = DlpConfig::default();
    let r = scan(&cfg, body);
    assert_eq!(r.count(), 3);
    let out = redact(&cfg, body, &r.findings);
    assert_eq!(
        out,
        br#"{"Name": "Ann", "Email": "***************", "Card": "*******************", "Note": "call ****************"}"#.to_vec()
    );
    let text = b"mail ann@example.com, card 4111111111111111.";
    let r = scan(&cfg, text);
    assert_eq!(
        redact(&cfg, text, &r.findings),
        b"mail ***************, card ****************.".to_vec()
    );
}

#[test]
fn arbitrary_binary_does_not_flag_much() {
    // A deterministic pseudo-random megabyte: no weights, no cards.
    let mut x = 0x2545F4914F6CDD1Du64;
    let body: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let r = scan(&DlpConfig::default(), &body);
    assert!(!r.model_weights(), "{:?}", r.findings);
    assert!(r.count() < 5, "{:?}", r.findings);
}

#[test]
fn adversarial_bodies_stay_linear() {
    // Each of these would cost quadratic time with a naive rescan; they
    // must finish quickly (no timing assertion: a hang fails the suite).
    let headers = "-----BEGIN RSA PRIVATE KEY-----".repeat(40_000);
    assert_eq!(all(headers.as_bytes()).len(), 40_000);
    let quotes = format!("\"{}", "A".repeat(2 << 20));
    assert!(all(quotes.as_bytes()).is_empty());
    let keys = format!("key={}", "keyK".repeat(250_000));
    let _ = all(keys.as_bytes());
    let digits = "1 ".repeat(500_000);
    assert!(all(digits.as_bytes()).is_empty());
    let at = "@".repeat(1 << 20) + "a@b.co";
    assert_eq!(all(at.as_bytes()).len(), 1);
    let colons = "1::".repeat(300_000);
    let _ = all(colons.as_bytes());
    let arrays = "[1,".repeat(300_000);
    assert!(all(arrays.as_bytes()).is_empty());
}
