#!/usr/bin/env python3
"""Generate a mixed lockout trace (JSONL) for `portcullis replay`.

Deterministic (seeded). Mixes: ordinary logins with occasional typos,
brute force against single accounts, lockout-DoS attempts from one address,
password spraying across accounts, verified synthetic load (HS256 and
EdDSA provenance) that fails a lot by design, forged and expired synthetic
claims, and record writes from Sales Cloud and Service Cloud.

usage: gen_trace.py [EVENTS=100000] [SEED=7] > trace.jsonl
"""
import json
import random
import sys
from datetime import datetime, timedelta, timezone

# Tokens of the default bundle's test issuers (engine/tests/keys), valid to 2027-01-01.
HS256_OK = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJzeW50aGV0aWMtY2kiLCJhdWQiOiJwb3J0Y3VsbGlzIiwiZXhwIjoxNzk4NzYxNjAwLCJkYXRhc2V0IjoiY2ktZml4dHVyZXMiLCJnZW5lcmF0b3IiOiJmYWtlciJ9.YCyMqbypY7_9nc9sXpr6t_9hR9g7jExi-r-6woDgt20"
EDDSA_OK = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3OTg3NjE2MDAsImlhdCI6MTc2MzgwMDAwMCwiZGF0YXNldCI6ImNybS1sb2FkLTIwMjYiLCJnZW5lcmF0b3IiOiJsb2N1c3QtNCJ9.yMKCnCocZpUDwCebTc4FihUnx1H8_yL6qtKd7zYCdjG9a6eMcqnEf4R-yD1485OH-QJ9Kve-qRo2CUsL9Wo0BA"
FORGED = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3OTg3NjE2MDAsImlhdCI6MTc2MzgwMDAwMCwiZGF0YXNldCI6ImNybS1sb2FkLTIwMjYiLCJnZW5lcmF0b3IiOiJsb2N1c3QtNCJ9.glhAPtvjnrX0BreuWJ7vto-J3wNVpwyUMIN6TdznTLaTIsvb86k-5P3V4mTSoCU7u5eNBiuaUfR_PFAMRH2XAQ"
EXPIRED = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3NjcyMjU2MDAsImRhdGFzZXQiOiJjcm0tbG9hZC0yMDI2IiwiZ2VuZXJhdG9yIjoibG9jdXN0LTQifQ.bRPgIIA_2nJS7aGQCn-FWK2ORwsQ1EqYwEsgEjdukY2fqe9b-6Ph4Jv5yKIugsreQO18iKmhCMeKsSn1q6Q8Bw"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    t = datetime(2026, 11, 22, 8, 0, 0, tzinfo=timezone.utc)
    users = [f"user{i}@example.com" for i in range(2000)]
    ips = [f"203.0.{i // 250}.{i % 250 + 1}" for i in range(600)]
    attackers = [f"198.51.100.{i}" for i in range(1, 30)]
    out = sys.stdout
    for _ in range(n):
        t += timedelta(milliseconds=rng.randint(5, 60))
        now = t.strftime("%Y-%m-%dT%H:%M:%S") + "Z"
        r = rng.random()
        user = rng.choice(users)
        ctx = {"ip": rng.choice(ips), "module": "sales_cloud"}
        req = {"principal": {"type": "User", "id": user}, "action": "login",
               "resource": {"type": "App", "id": "sales-cloud"}, "context": ctx, "now": now}
        if r < 0.35:                      # ordinary login
            pass
        elif r < 0.45:                    # ordinary typo, then success
            req["event"] = rng.choice(["auth_failure", "auth_failure", "auth_success"])
        elif r < 0.55:                    # brute force on a few hot accounts from attackers
            req["principal"]["id"] = users[rng.randint(0, 9)]
            ctx["ip"] = rng.choice(attackers)
            req["event"] = "auth_failure"
        elif r < 0.62:                    # spraying: one address, many accounts
            ctx["ip"] = attackers[0]
            req["event"] = "auth_failure"
        elif r < 0.80:                    # verified synthetic load, failing by design
            req["principal"]["id"] = f"loadtest{rng.randint(0, 49)}@example.com"
            ctx["synthetic"] = {"marker": True, "provenance": rng.choice([HS256_OK, EDDSA_OK])}
            req["event"] = rng.choice(["auth_failure", "auth_failure", "auth_success"])
        elif r < 0.84:                    # forged or expired synthetic claims
            ctx["synthetic"] = {"marker": True, "provenance": rng.choice([FORGED, EXPIRED])}
            if rng.random() < 0.5:
                req["event"] = "auth_failure"
        else:                             # record writes from both clouds
            module = rng.choice(["sales_cloud", "service_cloud"])
            flag = "Synthetic__c" if module == "sales_cloud" else "Is_Test_Data__c"
            rid = ("001" if module == "sales_cloud" else "500") + f"{rng.randint(0, 10**12):012d}AAA"
            req["action"] = "write"
            req["resource"] = {"type": "Record", "id": rid}
            ctx["module"] = module
            ctx["record"] = {flag: rng.random() < 0.2, "Id": rid}
            if rng.random() < 0.3:
                ctx["synthetic"] = {"provenance": HS256_OK}
        out.write(json.dumps(req, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
