#!/usr/bin/env python3
"""Generate the mixed DLP benchmark corpus (deterministic for a seed).

    scripts/gen_dlp_corpus.py OUT [--size BYTES] [--seed N]

The corpus is a sequence of documents, each one request/response body:

    #doc <kind> <length>\\n<length bytes of body>\\n

kinds and their share of bytes (roughly):
    crm_json     ~50%  Salesforce-style query envelopes of Contact/Lead/
                       Account records; ~1 in 4 records carries extra PII
                       (cards with and without context, IBANs, NHS numbers,
                       DNIs, IPs) next to ids, timestamps, amounts and
                       Luhn-valid order numbers that must not flag
    log          ~22%  gateway access/app log lines: timestamps, IPs,
                       paths, e-mails, some bearer JWTs, AWS keys,
                       Salesforce session ids and passwords in query strings
    base64_json  ~25%  JSON attachments with base64 bodies (random bytes,
                       PDFs), a few of which are base64 weight files
    weights       ~3%  raw weight-file headers with random payloads:
                       safetensors, GGUF, NumPy, HDF5, PyTorch zip,
                       pickle, ONNX

Standard library only; the same seed always gives the same bytes.
"""

import argparse
import base64
import json
import random
import struct
import sys

FIRST = ["Ann", "Bob", "Chloé", "Dev", "Eve", "Farah", "Gus", "Hana", "Ivan", "Jo",
         "Kemal", "Lena", "Mo", "Nia", "Olu", "Pia", "Quinn", "Ravi", "Sara", "Tom"]
LAST = ["Lee", "Ng", "Okafor", "Smith", "García", "Müller", "Rossi", "Kowalski",
        "Dubois", "Tanaka", "Silva", "Brown", "Jensen", "Novak", "Costa"]
CITIES = ["Leeds", "Madrid", "Berlin", "Paris", "Lisbon", "Dublin", "Oslo", "Milan"]
WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
         "tempor incididunt ut labore et dolore magna aliqua renewal quote "
         "pipeline forecast onboarding escalation follow-up contract").split()
DOMAINS = ["example.com", "example.org", "mail.example.co.uk", "acme.test"]


def luhn_complete(stem):
    digits = [int(c) for c in stem] + [0]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return stem + str((10 - total % 10) % 10)


def card(rng):
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16),
                                 ("34", 15), ("37", 15), ("6011", 16), ("3530", 16)])
    stem = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    number = luhn_complete(stem)
    if length == 16 and rng.random() < 0.5:
        sep = rng.choice([" ", "-"])
        number = sep.join(number[i:i + 4] for i in range(0, 16, 4))
    return number


def iban(rng):
    country, bban_len = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("ES", 20), ("NL", 14)])
    if country in ("GB", "NL"):
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
        bban += "".join(rng.choice("0123456789") for _ in range(bban_len - 4))
    else:
        bban = "".join(rng.choice("0123456789") for _ in range(bban_len))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def nhs(rng):
    while True:
        d = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(x * (10 - i) for i, x in enumerate(d)) % 11
        if check == 10:
            continue
        check = 0 if check == 11 else check
        s = "".join(map(str, d)) + str(check)
        return f"{s[:3]} {s[3:6]} {s[6:]}"


def dni(rng):
    n = rng.randrange(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def phone(rng):
    return rng.choice([
        f"+44 20 {rng.randrange(7000, 7999)} {rng.randrange(1000, 9999)}",
        f"+1 ({rng.randrange(200, 999)}) {rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
        f"+34 {rng.randrange(600, 699)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}",
        f"0{rng.randrange(20, 99)} {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}",
    ])


def sf_id(rng, prefix):
    return prefix + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                            for _ in range(15))


def ts(rng):
    return (f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.000+0000")


def ip(rng):
    return f"{rng.choice([203, 198, 81, 10, 172])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def token(rng, n, alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"):
    return "".join(rng.choice(alphabet) for _ in range(n))


def record(rng, i):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    rec = {
        "attributes": {"type": "Contact", "url": f"/services/data/v60.0/sobjects/Contact/{sf_id(rng, '003')}"},
        "Id": sf_id(rng, "003"),
        "FirstName": first,
        "LastName": last,
        "Email": f"{first.lower()}.{last.lower()}{i}@{rng.choice(DOMAINS)}",
        "Phone": phone(rng),
        "MailingCity": rng.choice(CITIES),
        "MailingPostalCode": f"{rng.randrange(10000, 99999)}",
        "AccountId": sf_id(rng, "001"),
        "CreatedDate": ts(rng),
        "LastModifiedDate": ts(rng),
        "Amount__c": round(rng.uniform(10, 99999), 2),
        "OrderNumber__c": f"order #{luhn_complete(str(rng.randrange(10**14, 10**15)))}",
        "LastActivityEpoch__c": rng.randrange(1_600_000_000_000, 1_800_000_000_000),
        "Description": sentence(rng, rng.randrange(5, 25)),
    }
    roll = rng.random()
    if roll < 0.06:
        rec["Card__c"] = card(rng)
    elif roll < 0.10:
        rec["Description"] += f" paid by card {card(rng)}"
    elif roll < 0.14:
        rec["IBAN__c"] = iban(rng)
    elif roll < 0.17:
        rec["NHS_Number__c"] = nhs(rng)
    elif roll < 0.20:
        rec["DNI__c"] = dni(rng)
    elif roll < 0.25:
        rec["LastLoginIp__c"] = ip(rng)
    return rec


def crm_json(rng, target):
    records, size, i = [], 0, 0
    while size < target:
        rec = record(rng, i)
        records.append(rec)
        size += len(json.dumps(rec)) + 2
        i += 1
    body = {"totalSize": len(records), "done": True, "records": records}
    return json.dumps(body, ensure_ascii=False).encode()


def jwt(rng):
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return (f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': token(rng, 8)})}."
            f"{b64({'sub': token(rng, 12), 'exp': 1700000000 + rng.randrange(10**6)})}."
            f"{token(rng, 43, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')}")


def log(rng, target):
    out, size = [], 0
    while size < target:
        t = ts(rng).replace("+0000", "Z")
        roll = rng.random()
        line = (f"{t} INFO gw[{rng.randrange(1000, 9999)}] {rng.choice(['GET', 'POST', 'PATCH'])} "
                f"/services/data/v60.0/sobjects/Contact/{sf_id(rng, '003')} {rng.choice([200, 201, 204, 401, 429])} "
                f"{rng.randrange(1, 900)}ms client={ip(rng)} req={token(rng, 16)}")
        if roll < 0.10:
            line += f" user={rng.choice(FIRST).lower()}@{rng.choice(DOMAINS)}"
        elif roll < 0.13:
            line += f" authorization=Bearer {jwt(rng)}"
        elif roll < 0.14:
            line += f" aws_key=AKIA{token(rng, 16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}"
        elif roll < 0.15:
            line += f" sid=00D{token(rng, 12)}!{token(rng, 96, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._')}"
        elif roll < 0.16:
            line += f" password={token(rng, 24, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$%')}"
        elif roll < 0.30:
            line += f" msg=\"{sentence(rng, rng.randrange(4, 14))}\""
        out.append(line)
        size += len(line) + 1
    return ("\n".join(out) + "\n").encode()


def weights_file(rng, kind, payload):
    data = bytes(rng.getrandbits(8) for _ in range(payload))
    if kind == "safetensors":
        header = json.dumps({"w": {"dtype": "F16", "shape": [payload // 2], "data_offsets": [0, payload]},
                             "__metadata__": {"format": "pt"}}).encode()
        header += b" " * (-len(header) % 8)
        return struct.pack("<Q", len(header)) + header + data
    if kind == "gguf":
        key = b"general.architecture"
        return (b"GGUF" + struct.pack("<IQQ", 3, 4, 12) + struct.pack("<Q", len(key)) + key
                + struct.pack("<I", 8) + data)
    if kind == "npy":
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % (payload // 4)
        header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data
    if kind == "hdf5":
        return b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0, 4, 0, 16, 0]) + data
    if kind == "pytorch_zip":
        name = b"archive/data.pkl"
        return (b"PK\x03\x04" + bytes(14) + struct.pack("<IIHH", payload, payload, len(name), 0)
                + name + data)
    if kind == "pickle":
        return b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01ctorch._utils\n_rebuild_tensor_v2\n" + data
    if kind == "onnx":
        graph = b"\x0a\x04\x0a\x01x" + b"\x12\x0amain_graph"
        return (b"\x08\x08\x12\x07pytorch\x1a\x052.1.0" + b"\x3a" + bytes([len(graph)]) + graph
                + b"\x42\x0b\x0a\x07ai.onnx\x10\x11" + data)
    raise ValueError(kind)


WEIGHT_KINDS = ["safetensors", "gguf", "npy", "hdf5", "pytorch_zip", "pickle", "onnx"]


def base64_json(rng, target):
    if rng.random() < 0.1:
        blob = weights_file(rng, rng.choice(WEIGHT_KINDS), target * 3 // 4)
        name = "model.bin"
    else:
        blob = (b"%PDF-1.7\n" if rng.random() < 0.5 else b"") + bytes(
            rng.getrandbits(8) for _ in range(target * 3 // 4))
        name = rng.choice(["contract.pdf", "photo.jpg", "export.bin"])
    encode = base64.b64encode if rng.random() < 0.8 else base64.urlsafe_b64encode
    body = {"ParentId": sf_id(rng, "001"), "Name": name, "ContentType": "application/octet-stream",
            "Body": encode(blob).decode()}
    return json.dumps(body).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=10 * 1024 * 1024)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    total, counts = 0, {}
    with open(args.out, "wb") as f:
        while total < args.size:
            roll = rng.random()
            if roll < 0.55:
                kind, body = "crm_json", crm_json(rng, rng.randrange(4_000, 64_000))
            elif roll < 0.80:
                kind, body = "log", log(rng, rng.randrange(4_000, 64_000))
            elif roll < 0.98:
                kind, body = "base64_json", base64_json(rng, rng.randrange(8_000, 96_000))
            else:
                kind = "weights"
                body = weights_file(rng, rng.choice(WEIGHT_KINDS), rng.randrange(16_000, 64_000))
            f.write(b"#doc %s %d\n" % (kind.encode(), len(body)))
            f.write(body)
            f.write(b"\n")
            total += len(body)
            counts[kind] = counts.get(kind, 0) + len(body)
    summary = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items()))
    print(f"wrote {args.out}: {total} body bytes ({summary})", file=sys.stderr)


if __name__ == "__main__":
    main()
