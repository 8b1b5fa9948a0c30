#!/usr/bin/env python3
"""Write policies/tests/adversarial/jwt.yaml: hostile JWTs, each next to a
positive control signed the same way, so that every refusal is for the
stated reason and not a broken fixture.

Signs with the test keys of engine/tests/keys (openssl for RS256 and EdDSA,
hmac for HS256); no third-party Python package. Run from the repository
root: python3 scripts/gen_adversarial_tokens.py
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile

KEYS = "engine/tests/keys"
OUT = "policies/tests/adversarial/jwt.yaml"

NOW = 1795341600  # 2026-11-22T10:00:00Z, the cases' `now`
EXP = 1798761600  # 2027-01-01
OAUTH_ISS = "https://login.crm.example.com"
OAUTH_AUD = "https://crm.example.com"
RSA_PUB = open(f"{KEYS}/oauth-test-rsa.pub.pem", "rb").read()
ES_PUB = open(f"{KEYS}/oauth-test-es256.pub.pem", "rb").read()
ED_SYN_PUB = open(f"{KEYS}/synthetic-test-ed25519.pub.pem", "rb").read()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(obj) -> str:
    """A header or claim set: a dict (compact JSON) or raw JSON text."""
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return b64(text.encode())


def openssl_sign(key: str, data: bytes, ed: bool) -> bytes:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
        path = f.name
    try:
        if ed:
            cmd = ["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", path]
        else:
            cmd = ["openssl", "dgst", "-sha256", "-sign", key, path]
        return subprocess.run(cmd, check=True, capture_output=True).stdout
    finally:
        os.unlink(path)


def token(header, claims, *, rs=None, ed=None, hs=None, sig=None) -> str:
    signing = f"{part(header)}.{part(claims)}"
    if sig is not None:
        s = sig
    elif rs:
        s = b64(openssl_sign(rs, signing.encode(), ed=False))
    elif ed:
        s = b64(openssl_sign(ed, signing.encode(), ed=True))
    elif hs is not None:
        s = b64(hmac.new(hs, signing.encode(), hashlib.sha256).digest())
    else:
        s = ""
    return f"{signing}.{s}"


def access(**extra):
    c = {"iss": OAUTH_ISS, "aud": OAUTH_AUD, "sub": "alice@example.com",
         "client_id": "crm-web", "exp": EXP, "iat": NOW - 1600, "scope": "api"}
    c.update(extra)
    return c


RSA = f"{KEYS}/oauth-test-rsa.pem"
ATTACKER_RSA = f"{KEYS}/attacker-rsa.pem"
RS_HDR = {"typ": "JWT", "alg": "RS256", "kid": "rsa-2026"}


def rs(claims, header=None):
    return token(header or RS_HDR, claims, rs=RSA)


def raw_claims(exp_text: str, extra: str = "") -> str:
    """Claim text with a literal `exp` (numbers JSON libraries disagree on)."""
    return ('{"iss":"%s","aud":"%s","sub":"alice@example.com","client_id":"crm-web",'
            '"scope":"api","exp":%s%s}' % (OAUTH_ISS, OAUTH_AUD, exp_text, extra))


def attacker_jwk() -> dict:
    """The attacker's RSA public key as a JWK, to embed in a header."""
    der = subprocess.run(["openssl", "rsa", "-in", ATTACKER_RSA, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    text = subprocess.run(["openssl", "rsa", "-pubin", "-inform", "DER", "-noout", "-modulus"],
                          input=der, check=True, capture_output=True).stdout.decode()
    n = bytes.fromhex(text.strip().split("=", 1)[1])
    return {"kty": "RSA", "e": "AQAB", "n": b64(n), "kid": "rsa-2026"}


def case(name, tok, expect, field="token", comment=None):
    lines = []
    if comment:
        lines.append(f"  # {comment}")
    if field == "token":
        req = '{context: {token: "%s"}}' % tok
    else:
        req = '{action: login, resource: {type: App, id: sales-cloud}, context: {synthetic: {marker: true, provenance: "%s"}}}' % tok
    lines.append(f"  - name: {json.dumps(name)}")
    lines.append(f"    request: {req}")
    lines.append(f"    expect: {expect}")
    return "\n".join(lines)


def deny(failure):
    return ('{outcome: deny, policies: [], reason: "invalid-token: %s", '
            'facts: {token: {present: true, valid: false, failure: %s}}}' % (failure, failure))


ALLOW = "{outcome: allow, policies: [access.records], facts: {token: {valid: true}}}"


def unverified(failure):
    return ('{outcome: challenge, policies: [lockout.synthetic.unproven], pathway: authentic, '
            'facts: {synthetic: {status: unverified, failure: %s}}}' % failure)


def main():
    cases = []
    # --- controls: the fixtures are right --------------------------------
    cases.append(case("control: a valid RS256 token with its kid is allowed", rs(access()), ALLOW))
    # --- alg: none in every spelling -------------------------------------
    for alg in ["none", "None", "NONE", "nOnE"]:
        cases.append(case(f"alg `{alg}` with no signature", token({"alg": alg, "typ": "JWT"}, access()),
                          deny("alg-none")))
    cases.append(case("alg none with a signature part copied from a valid token",
                      token({"alg": "none", "typ": "JWT"}, access(), sig=rs(access()).split(".")[2]),
                      deny("alg-none")))
    # --- algorithm confusion ---------------------------------------------
    cases.append(case("HS256 signed with the RS256 public key PEM as the HMAC secret",
                      token({"typ": "JWT", "alg": "HS256", "kid": "rsa-2026"}, access(), hs=RSA_PUB),
                      deny("algorithm-mismatch")))
    cases.append(case("HS256 signed with the ES256 public key PEM as the HMAC secret",
                      token({"typ": "JWT", "alg": "HS256"},
                            access(iss="https://partners.example.net"), hs=ES_PUB),
                      deny("algorithm-mismatch")))
    cases.append(case("RS512, PS256 or ES256 in the header of an RS256 issuer: refused before any signature check",
                      token({"typ": "JWT", "alg": "PS256", "kid": "rsa-2026"}, access(), rs=RSA),
                      deny("algorithm-mismatch")))
    cases.append(case("EdDSA-key confusion on provenance: HS256 signed with the Ed25519 public key",
                      token({"typ": "JWT", "alg": "HS256", "kid": "factory-2026"},
                            {"iss": "synthetic-factory", "aud": "portcullis", "exp": EXP,
                             "dataset": "d", "generator": "g"}, hs=ED_SYN_PUB),
                      unverified("algorithm-mismatch"), field="provenance"))
    # --- header-embedded keys are never used -----------------------------
    cases.append(case("a header embedding the attacker's key (jwk) signs nothing",
                      token({"typ": "JWT", "alg": "RS256", "kid": "rsa-2026", "jwk": attacker_jwk()},
                            access(), rs=ATTACKER_RSA),
                      deny("bad-signature")))
    cases.append(case("jku and x5u pointing at an attacker's key set are ignored",
                      token({"typ": "JWT", "alg": "RS256", "kid": "rsa-2026",
                             "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/c.pem"},
                            access(), rs=ATTACKER_RSA),
                      deny("bad-signature")))
    # --- kid injection: a real signature, a hostile kid ------------------
    for label, kid in [("path traversal", "../../../../../../dev/null"),
                       ("SQL", "rsa-2026' OR '1'='1' --"),
                       ("unknown", "rsa-2027"),
                       ("NUL and CRLF", "rsa-2026\u0000\r\nx"),
                       ("a JSON number, not a string", 2026)]:
        cases.append(case(f"kid injection ({label}) with a valid signature: no key is chosen by it",
                          rs(access(), {"typ": "JWT", "alg": "RS256", "kid": kid}),
                          deny("unknown-issuer")))
    cases.append(case("no kid where the issuer's key names one",
                      rs(access(), {"typ": "JWT", "alg": "RS256"}), deny("unknown-issuer")))
    # --- oversized -------------------------------------------------------
    pad = "x" * 17000
    cases.append(case("a 17 KiB token is refused unread (limit 16 KiB), though its signature holds",
                      rs(access(pad=pad)), deny("oversized")))
    cases.append(case("control: a 15 KiB token with a valid signature is read",
                      rs(access(pad="x" * 11000)), ALLOW))
    # --- numbers at their limits -----------------------------------------
    cases.append(case("exp at i64::MAX verifies (far future, no overflow)",
                      rs(raw_claims("9223372036854775807")), ALLOW))
    cases.append(case("exp past u64 (2^64) is not an integer: treated as missing, expired",
                      rs(raw_claims("18446744073709551616")), deny("expired")))
    cases.append(case("exp of 1e400 does not parse: malformed",
                      rs(raw_claims("1e400")), deny("malformed")))
    cases.append(case("exp of -0 is zero: expired",
                      rs(raw_claims("-0")), deny("expired")))
    cases.append(case("exp as a float is not an integer: expired",
                      rs(raw_claims("1798761600.5")), deny("expired")))
    cases.append(case("nbf at i64::MAX: not yet valid (no overflow with the leeway)",
                      rs(raw_claims(str(EXP), ',"nbf":9223372036854775807')), deny("not-yet-valid")))
    cases.append(case("nbf at i64::MIN: valid (no underflow with the leeway)",
                      rs(raw_claims(str(EXP), ',"nbf":-9223372036854775808')), ALLOW))
    cases.append(case("duplicate exp in the claims: refused, not last-wins",
                      rs(raw_claims("1795000000", ',"exp":9223372036854775807')), deny("malformed")))

    header = """# Hostile JWTs (issue 12): alg none, algorithm confusion, header-embedded
# keys, kid injection, oversized tokens, numbers at their limits. Each runs
# next to a control signed the same way, so every refusal is for its stated
# reason. Generated by scripts/gen_adversarial_tokens.py (test keys of
# engine/tests/keys); regenerate rather than edit.
defaults:
  principal: {type: User, id: alice@example.com}
  action: read
  resource: {type: Record, id: 001000000000001AAA}
  context: {ip: 203.0.113.7, module: sales_cloud}
  now: "2026-11-22T10:00:00Z"

cases:
"""
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(header + "\n\n".join(cases) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
