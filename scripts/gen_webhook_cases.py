#!/usr/bin/env python3
"""Write the webhook-delivery cases of the default bundle (policies/tests/webhooks/).

The cases carry raw deliveries (Outbound Message XML, Platform Event and CDC
JSON) signed with HMAC-SHA256 under the test secrets of policies/portcullis.toml
([webhooks.secrets]), so they are generated rather than typed. Deterministic:
run it again after changing a secret or a case and commit the output.

usage: gen_webhook_cases.py [OUT_DIR=policies/tests/webhooks]
"""
import base64
import hashlib
import hmac
import json
import os
import sys

SECRETS = {
    "crm-events-2026": "NPvpAa0mC/COQlMXw2+qEvNKCHmCBsvs6ABXBHSqEGo=",
    "crm-events-2027": "PXzlktE15o7Cw/lg3Wu+Gb4YYF0Lii8YuDzzvWmNri4=",
    "sales-relay": "UeeFtBaXYlpthogujsRxv4jj24kADl9c3YA9TJOtUCk=",
}

# Provenance tokens of the default bundle's test issuers (engine/tests/keys), valid to 2027-01-01.
HS256_OK = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJzeW50aGV0aWMtY2kiLCJhdWQiOiJwb3J0Y3VsbGlzIiwiZXhwIjoxNzk4NzYxNjAwLCJkYXRhc2V0IjoiY2ktZml4dHVyZXMiLCJnZW5lcmF0b3IiOiJmYWtlciJ9.YCyMqbypY7_9nc9sXpr6t_9hR9g7jExi-r-6woDgt20"
EDDSA_OK = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3OTg3NjE2MDAsImlhdCI6MTc2MzgwMDAwMCwiZGF0YXNldCI6ImNybS1sb2FkLTIwMjYiLCJnZW5lcmF0b3IiOiJsb2N1c3QtNCJ9.yMKCnCocZpUDwCebTc4FihUnx1H8_yL6qtKd7zYCdjG9a6eMcqnEf4R-yD1485OH-QJ9Kve-qRo2CUsL9Wo0BA"
FORGED = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3OTg3NjE2MDAsImlhdCI6MTc2MzgwMDAwMCwiZGF0YXNldCI6ImNybS1sb2FkLTIwMjYiLCJnZW5lcmF0b3IiOiJsb2N1c3QtNCJ9.glhAPtvjnrX0BreuWJ7vto-J3wNVpwyUMIN6TdznTLaTIsvb86k-5P3V4mTSoCU7u5eNBiuaUfR_PFAMRH2XAQ"
EXPIRED = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3NjcyMjU2MDAsImRhdGFzZXQiOiJjcm0tbG9hZC0yMDI2IiwiZ2VuZXJhdG9yIjoibG9jdXN0LTQifQ.bRPgIIA_2nJS7aGQCn-FWK2ORwsQ1EqYwEsgEjdukY2fqe9b-6Ph4Jv5yKIugsreQO18iKmhCMeKsSn1q6Q8Bw"

SALES_ORG = "00D000000000042AAA"
SERVICE_ORG = "00D000000000062EAA"
OM_SAN = "spiffe://salesforce/outbound-messages"


def sign(body, secret="crm-events-2026", form="hex"):
    mac = hmac.new(base64.b64decode(SECRETS[secret]), body.encode(), hashlib.sha256).digest()
    return "sha256=" + mac.hex() if form == "hex" else base64.b64encode(mac).decode()


def forged(n):
    """A signature no secret made (distinct per n)."""
    return "sha256=" + hashlib.sha256(f"forgery {n}".encode()).hexdigest()


def event(replay, payload, channel="/event/Order_Event__e"):
    return json.dumps({"channel": channel, "data": {"schema": "dffQ2QLzDNHqwB8_sHMxdA",
                       "payload": payload, "event": {"replayId": replay}}}, separators=(",", ":"))


def cdc(replay, entity, change, record_ids, fields, changed=None):
    header = {"entityName": entity, "recordIds": record_ids, "changeType": change,
              "changeOrigin": "com/salesforce/api/soap/62.0;client=crm", "transactionKey": f"0002b3c4-{replay:04d}",
              "sequenceNumber": 1, "commitTimestamp": 1795340400000, "commitNumber": 10714449473000 + replay,
              "commitUser": "005000000000001AAA", "changedFields": changed or sorted(fields)}
    payload = {"ChangeEventHeader": header, **fields}
    return event(replay, payload, channel=f"/data/{entity}ChangeEvent")


def om(org, notes, action="04k000000000001AAA", doctype=""):
    """An Outbound Message: notes is [(notification id, sObject type, {field: value})]."""
    parts = []
    for nid, otype, fields in notes:
        body = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
        parts.append(f'<Notification><Id>{nid}</Id><sObject xsi:type="sf:{otype}" '
                     f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{body}</sObject></Notification>')
    return ('<?xml version="1.0" encoding="UTF-8"?>' + doctype +
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
            f'<OrganizationId>{org}</OrganizationId><ActionId>{action}</ActionId>'
            '<SessionId xsi:nil="true"/><EnterpriseUrl>https://crm.example.com/services/Soap/c/62.0</EnterpriseUrl>'
            + "".join(parts) + '</notifications></soapenv:Body></soapenv:Envelope>')


def order(n, **extra):
    return {"Order_Number__c": f"ORD-{n:05d}", "Amount__c": 100 + n, "CreatedById": "005000000000001AAA", **extra}


def req(body, kind="platform_event", signature=None, source=None, ip=None, **ctx):
    r = {"context": {"webhook": {"kind": kind}}, "body": body}
    if signature is not None:
        r["context"]["webhook"]["signature"] = signature
    if source:
        r["principal"] = {"type": "EventSource", "id": source}
    if ip:
        r["context"]["ip"] = ip
    r["context"].update(ctx)
    return r


def signed(body, secret="crm-events-2026", **kw):
    return req(body, signature=sign(body, secret), **kw)


def flow(v):
    return json.dumps(v, ensure_ascii=False)


class File:
    def __init__(self, header, defaults):
        self.lines = [f"# {l}" if l else "#" for l in header.strip().splitlines()]
        self.lines.append("# Generated by scripts/gen_webhook_cases.py: edit the script, not this file.")
        self.lines.append(f"defaults: {flow(defaults)}")
        self.lines.append("")
        self.lines.append("cases:")

    def case(self, name, request=None, expect=None, steps=None, comment=None):
        if comment:
            self.lines.append(f"  # {comment}")
        self.lines.append(f"  - name: {flow(name)}")
        if steps is None:
            self.lines.append(f"    request: {flow(request)}")
            self.lines.append(f"    expect: {flow(expect)}")
        else:
            self.lines.append("    steps:")
            for s in steps:
                self.lines.append(f"      - request: {flow(s['request'])}")
                if s.get("repeat"):
                    self.lines.append(f"        repeat: {s['repeat']}")
                if s.get("expect"):
                    self.lines.append(f"        expect: {flow(s['expect'])}")
        self.lines.append("")

    def write(self, path):
        with open(path, "w") as f:
            f.write("\n".join(self.lines).rstrip() + "\n")


DEFAULTS = {"principal": {"type": "EventSource", "id": "sales-events"}, "action": "deliver",
            "resource": {"type": "Endpoint", "id": "crm-events"}, "context": {"ip": "192.0.2.10"},
            "now": "2026-11-22T10:00:00Z"}
MTLS = {"verified": True, "san": OM_SAN}


def credentials():
    f = File("""
Webhook credentials: HMAC-SHA256 over the raw delivery with one of the
source's named secrets, the organization id of an Outbound Message, and the
client certificate. A bad credential is refused and counted against the
source; a malformed request is an error naming the field.""", DEFAULTS)
    e1 = event(101, order(1))
    f.case("a signed platform event is accepted", signed(e1),
           {"outcome": "allow", "policies": ["webhook.accept"], "pathway": "authentic",
            "facts": {"webhook": {"source": "sales-events", "kind": "platform_event", "id": "101",
                                  "channel": "/event/Order_Event__e", "entity": "Order_Event__e",
                                  "credential": "valid", "method": "hmac", "failure": "",
                                  "redelivery": False, "deliveries": 1}}})
    f.case("the next secret of a rotation verifies too", signed(e1, "crm-events-2027"),
           {"outcome": "allow", "policies": ["webhook.accept"]})
    f.case("a base64 signature verifies", req(e1, signature=sign(e1, form="b64")),
           {"outcome": "allow", "policies": ["webhook.accept"]})
    f.case("a signature by another source's secret is refused and counted", signed(e1, "sales-relay"),
           {"outcome": "deny", "policies": ["webhook.credential"], "escalation": None,
            "facts": {"webhook": {"credential": "invalid", "failure": "bad-signature"},
                      "lockout": {"account": {"failures": 1}, "account_ip": {"failures": 1}, "ip": {"failures": 1}}}})
    tampered = event(101, order(1, Amount__c=1))
    f.case("a body changed after signing is refused", req(tampered, signature=sign(e1)),
           {"outcome": "deny", "policies": ["webhook.credential"],
            "facts": {"webhook": {"credential": "invalid", "failure": "bad-signature"}}})
    f.case("an unsigned delivery is refused", req(e1),
           {"outcome": "deny", "facts": {"webhook": {"failure": "missing-signature"}}})
    f.case("a signature that is not 32 bytes is malformed", req(e1, signature="sha256=abcdef"),
           {"outcome": "deny", "facts": {"webhook": {"failure": "malformed-signature"}}})
    e2 = cdc(7001, "Account", "UPDATE", ["001000000000001AAA"], {"Name": "Acme", "BillingCountry": "DE"})
    f.case("a signed CDC event carries its change header", signed(e2, kind="cdc"),
           {"outcome": "allow", "policies": ["webhook.accept"],
            "facts": {"webhook": {"kind": "cdc", "id": "7001", "entity": "Account", "change_type": "UPDATE",
                                  "transaction_key": "0002b3c4-7001", "commit_number": 10714449480001}}})
    om1 = om(SERVICE_ORG, [("04l000000000001AAA", "Case", {"Id": "500000000000001AAA", "Subject": "Printer jam"})])
    f.case("a Service Cloud Outbound Message over verified mTLS is accepted",
           req(om1, kind="outbound_message", source="service-outbound", mtls=MTLS),
           {"outcome": "allow", "policies": ["webhook.accept"],
            "facts": {"webhook": {"kind": "outbound_message", "id": "04l000000000001AAA", "entity": "Case",
                                  "channel": "04k000000000001AAA", "method": "organization-id+mtls",
                                  "notifications": 1, "credential": "valid"}}})
    om15 = om(SERVICE_ORG[:15], [("04l000000000001AAA", "Case", {"Id": "500000000000001AAA"})])
    f.case("an organization id compares in its 15-character form",
           req(om15, kind="outbound_message", source="service-outbound", mtls=MTLS),
           {"outcome": "allow", "policies": ["webhook.accept"]})
    f.case("an Outbound Message without a client certificate is refused",
           req(om1, kind="outbound_message", source="service-outbound"),
           {"outcome": "deny", "policies": ["webhook.credential"], "facts": {"webhook": {"failure": "mtls-required"}}})
    f.case("an Outbound Message with another client certificate is refused",
           req(om1, kind="outbound_message", source="service-outbound",
               mtls={"verified": True, "san": "spiffe://elsewhere/relay"}),
           {"outcome": "deny", "facts": {"webhook": {"failure": "wrong-san"}}})
    other = om("00D000000000099ZZZ", [("04l000000000001AAA", "Case", {"Id": "500000000000001AAA"})])
    f.case("an Outbound Message from another org is refused",
           req(other, kind="outbound_message", source="service-outbound", mtls=MTLS),
           {"outcome": "deny", "facts": {"webhook": {"failure": "wrong-organization"}}})
    om2 = om(SALES_ORG, [("04l000000000009AAA", "Opportunity", {"Id": "006000000000001AAA", "StageName": "Closed Won"})])
    f.case("a Sales Cloud Outbound Message through the signing relay is accepted",
           signed(om2, "sales-relay", kind="outbound_message", source="sales-outbound"),
           {"outcome": "allow", "facts": {"webhook": {"method": "hmac+organization-id", "entity": "Opportunity"}}})
    f.case("an unknown source is an error naming the principal",
           signed(e1, source="marketing-events"),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "principal.id"})
    f.case("a kind the source does not send is an error",
           signed(e1, kind="outbound_message"),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "context.webhook.kind"})
    f.case("a delivery's record comes from its body, never the context",
           signed(e1, record={"Synthetic__c": True}),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "context.record"})
    f.case("a module other than the source's is an error", signed(e1, module="service_cloud"),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "context.module"})
    f.case("a deliver action without context.webhook is an error", {"body": e1},
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "context.webhook"})
    f.case("context.webhook on another action is an error",
           {"principal": {"type": "User", "id": "alice@example.com"}, "action": "login",
            "resource": {"type": "App", "id": "sales-cloud"},
            "context": {"webhook": {"kind": "platform_event", "signature": sign(e1)}}, "body": e1},
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "context.webhook"})
    f.case("a delivery needs its body", {"context": {"webhook": {"kind": "platform_event", "signature": sign("")}}},
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "body"})
    bad_json = '{"data": {"payload": '
    f.case("a malformed body under a valid signature is the sender's error", signed(bad_json),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "body"})
    f.case("a malformed body under a bad signature is only counted", req(bad_json, signature=forged(1)),
           {"outcome": "deny", "policies": ["webhook.credential"],
            "facts": {"webhook": {"failure": "bad-signature"}, "lockout": {"account_ip": {"failures": 1}}}})
    no_header = event(7002, {"Name": "Acme"}, channel="/data/AccountChangeEvent")
    f.case("a CDC event without its header is an error", signed(no_header, kind="cdc"),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "body"})
    dtd = om(SALES_ORG, [("04l000000000001AAA", "Account", {"Id": "001000000000001AAA"})],
             doctype='<!DOCTYPE x [<!ENTITY a "aaaaaaaa">]>')
    f.case("an Outbound Message with a DTD is refused unread",
           signed(dtd, "sales-relay", kind="outbound_message", source="sales-outbound"),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "body"})
    leak = event(103, order(3, Note__c="key AKIAIOSFODNN7EXAMPLE"))
    f.case("a delivery's body is scanned like any other", signed(leak),
           {"outcome": "deny", "policies": ["dlp.body.secrets"], "findings": ["aws_access_key_id"]})
    return f


def synthetic():
    f = File("""
Synthetic events: the flag is read from the event's own fields, named per
module (Synthetic__c in Sales Cloud, Is_Test_Data__c in Service Cloud), and
takes the synthetic pathway only with a valid provenance token, passed by the
host beside the delivery (context.synthetic.provenance, from a header). A
bare or forged flag is refused and escalated; nothing from a delivery whose
credential failed is believed.""", DEFAULTS)
    e = event(201, order(1, Synthetic__c=True))
    f.case("a Sales Cloud event flagged and proven takes the synthetic pathway",
           signed(e, synthetic={"provenance": EDDSA_OK}),
           {"outcome": "allow", "policies": ["webhook.accept"], "pathway": "synthetic",
            "facts": {"synthetic": {"status": "verified", "issuer": "synthetic-factory", "dataset": "crm-load-2026"}}})
    c = cdc(8001, "Case", "CREATE", ["500000000000001AAA"],
            {"Subject": "Load test", "Is_Test_Data__c": True})
    f.case("a Service Cloud CDC event flagged in its own field and proven is synthetic",
           signed(c, kind="cdc", source="service-events", synthetic={"provenance": HS256_OK}),
           {"outcome": "allow", "pathway": "synthetic",
            "facts": {"synthetic": {"status": "verified", "issuer": "synthetic-ci"}}})
    bare = event(202, order(2, Synthetic__c=True))
    f.case("a bare Sales Cloud flag is refused, on the authentic pathway", signed(bare),
           {"outcome": "deny", "policies": ["webhook.synthetic.unproven"], "pathway": "authentic",
            "escalation": "engineering", "facts": {"synthetic": {"status": "unverified", "failure": "missing-token"}}})
    bare_s = cdc(8002, "Case", "UPDATE", ["500000000000002AAA"], {"Is_Test_Data__c": True})
    f.case("a bare Service Cloud flag is refused the same way",
           signed(bare_s, kind="cdc", source="service-events"),
           {"outcome": "deny", "policies": ["webhook.synthetic.unproven"], "pathway": "authentic"})
    forged_e = event(203, order(3, Synthetic__c=True))
    f.case("a forged provenance token is refused and escalated to security",
           signed(forged_e, synthetic={"provenance": FORGED}),
           {"outcome": "deny", "policies": ["webhook.synthetic.forged"], "pathway": "authentic",
            "escalation": "security-operations",
            "facts": {"synthetic": {"status": "unverified", "failure": "bad-signature"}}})
    exp_e = event(204, order(4, Synthetic__c=True))
    f.case("an expired provenance token is refused as forged", signed(exp_e, synthetic={"provenance": EXPIRED}),
           {"outcome": "deny", "policies": ["webhook.synthetic.forged"],
            "facts": {"synthetic": {"failure": "expired"}}})
    wrong = event(205, order(5, Is_Test_Data__c=True))
    f.case("the other module's flag name means nothing here", signed(wrong),
           {"outcome": "allow", "policies": ["webhook.accept"], "pathway": "authentic",
            "facts": {"synthetic": {"status": "none"}}})
    hdr = event(206, order(6, Synthetic__c=True, Provenance__c=HS256_OK))
    f.case("a token inside the event body is a credential in the body",
           signed(hdr), {"outcome": "deny", "policies": ["dlp.body.secrets", "webhook.synthetic.unproven"],
                         "findings": ["jwt"]})
    f.case("a bad signature cannot claim the synthetic pathway, whatever the event says",
           req(e, signature=forged(2)),
           {"outcome": "deny", "policies": ["webhook.credential"], "pathway": "authentic",
            "facts": {"synthetic": {"status": "none"}}})
    f.case("nor with a valid token from the host",
           req(e, signature=forged(3), synthetic={"provenance": EDDSA_OK}),
           {"outcome": "deny", "policies": ["webhook.credential"], "pathway": "authentic",
            "facts": {"synthetic": {"status": "unverified", "failure": "unauthenticated-delivery"}}})
    mixed = om(SALES_ORG, [
        ("04l000000000011AAA", "Account", {"Id": "001000000000011AAA", "Synthetic__c": "true"}),
        ("04l000000000012AAA", "Account", {"Id": "001000000000012AAA", "Synthetic__c": "false"})])
    f.case("one message mixing synthetic and authentic records is refused, even proven",
           signed(mixed, "sales-relay", kind="outbound_message", source="sales-outbound",
                  synthetic={"provenance": EDDSA_OK}),
           {"outcome": "deny", "policies": ["webhook.synthetic.mixed"],
            "facts": {"webhook": {"mixed_synthetic": True, "notifications": 2}}})
    om_flag = om(SALES_ORG, [("04l000000000013AAA", "Account", {"Id": "001000000000013AAA", "Synthetic__c": "true"})])
    f.case("an Outbound Message's XML flag is read as a boolean",
           signed(om_flag, "sales-relay", kind="outbound_message", source="sales-outbound"),
           {"outcome": "deny", "policies": ["webhook.synthetic.unproven"]})
    bad_type = event(207, order(7, Synthetic__c="yes"))
    f.case("a flag of the wrong type is an error naming the event's field", signed(bad_type),
           {"outcome": "deny", "error_kind": "invalid-request", "error_field": "body.Synthetic__c"})
    return f


def redelivery():
    f = File("""
Redelivery: the same notification ids (Outbound Messages) or the same
replay id on the same channel (events) within the window is recognised: it
is acknowledged (allow) with `redelivery` in the context and the decision,
takes no rate token and is not counted in lockout. Only an accepted delivery
is remembered: one that was refused (throttled, say) is new when retried. A
bad delivery retried byte for byte is counted once; each new forgery counts.""", DEFAULTS)
    e = event(301, order(1))
    f.case("the same platform event twice is a redelivery", steps=[
        {"request": signed(e), "expect": {"outcome": "allow", "policies": ["webhook.accept"],
                                          "facts": {"webhook": {"redelivery": False, "deliveries": 1}}}},
        {"request": signed(e), "expect": {"outcome": "allow", "policies": ["webhook.redelivery"],
                                          "reason": "redelivery of an event already accepted: acknowledge it, do not process it again",
                                          "facts": {"webhook": {"redelivery": True, "deliveries": 2}}}},
    ])
    f.case("a redelivery takes no rate token", steps=[
        {"request": signed(e), "expect": {"facts": {"rate": {"class": "webhooks", "remaining": 9}}}},
        {"request": signed(e), "repeat": 15,
         "expect": {"outcome": "allow", "policies": ["webhook.redelivery"],
                    "facts": {"rate": {"remaining": 9}, "webhook": {"deliveries": 16}}}},
        {"request": signed(event(302, order(2))),
         "expect": {"outcome": "allow", "policies": ["webhook.accept"], "facts": {"rate": {"remaining": 8}}}},
    ])
    f.case("replay ids are per channel", steps=[
        {"request": signed(event(7, order(1))), "expect": {"policies": ["webhook.accept"]}},
        {"request": signed(event(7, {"Invoice__c": "INV-1"}, channel="/event/Invoice_Event__e")),
         "expect": {"policies": ["webhook.accept"], "facts": {"webhook": {"redelivery": False}}}},
    ])
    c = cdc(9001, "Contact", "UPDATE", ["003000000000001AAA"], {"Email": None, "Phone": None}, changed=["Email", "Phone"])
    f.case("a CDC event is recognised by its replay id", steps=[
        {"request": signed(c, kind="cdc"), "expect": {"policies": ["webhook.accept"]}},
        {"request": signed(c, kind="cdc"), "expect": {"policies": ["webhook.redelivery"]}},
    ])
    a = ("04l000000000021AAA", "Case", {"Id": "500000000000021AAA"})
    b = ("04l000000000022AAA", "Case", {"Id": "500000000000022AAA"})
    f.case("an Outbound Message resent with its notifications in another order is a redelivery", steps=[
        {"request": req(om(SERVICE_ORG, [a, b]), kind="outbound_message", source="service-outbound", mtls=MTLS),
         "expect": {"policies": ["webhook.accept"], "facts": {"webhook": {"notifications": 2}}}},
        {"request": req(om(SERVICE_ORG, [b, a]), kind="outbound_message", source="service-outbound", mtls=MTLS),
         "expect": {"policies": ["webhook.redelivery"], "facts": {"webhook": {"deliveries": 2}}}},
    ])
    f.case("after the window the same id is new", steps=[
        {"request": signed(e), "expect": {"policies": ["webhook.accept"]}},
        {"request": {**signed(e), "now": "2026-11-23T10:00:01Z"},
         "expect": {"policies": ["webhook.accept"], "facts": {"webhook": {"redelivery": False, "deliveries": 1}}}},
    ])
    bad = req(event(303, order(3)), signature=forged(10))
    f.case("a bad delivery retried byte for byte is counted once", steps=[
        {"request": bad, "repeat": 8,
         "expect": {"outcome": "deny", "policies": ["webhook.credential"], "stage": "none",
                    "facts": {"webhook": {"redelivery": True, "deliveries": 8},
                              "lockout": {"account_ip": {"failures": 1}, "account": {"failures": 1}}}}},
    ])
    steps = [{"request": req(event(304, order(4)), signature=forged(20 + i))} for i in range(5)]
    steps[2]["expect"] = {"outcome": "deny", "policies": ["webhook.credential", "webhook.lockout.pair-throttle"],
                          "facts": {"lockout": {"account_ip": {"failures": 3}}}}
    steps[4]["expect"] = {"outcome": "lock", "policies": ["webhook.credential", "webhook.lockout.pair"],
                          "escalation": "security-operations", "retry_after": 900,
                          "facts": {"webhook": {"redelivery": False}}}
    f.case("distinct forgeries of one event are each counted", steps=steps)
    x = event(305, order(5))
    f.case("a forgery does not make the real delivery a redelivery", steps=[
        {"request": req(x, signature=forged(30)), "expect": {"outcome": "deny"}},
        {"request": signed(x), "expect": {"outcome": "allow", "policies": ["webhook.accept"],
                                          "facts": {"webhook": {"redelivery": False, "deliveries": 1}}}},
    ])
    return f


def limits():
    f = File("""
Per-source lockout and rate limits. Bad credentials from one address lock
the source there (not elsewhere: a forger cannot cut the real source off);
many addresses failing for one source are escalated; each source has its
own token bucket per pathway, and bad deliveries take none of its tokens.""", DEFAULTS)
    steps = [{"request": req(event(400 + i, order(i)), signature=forged(40 + i), ip="198.51.100.66")} for i in range(5)]
    steps[4]["expect"] = {"outcome": "lock", "policies": ["webhook.credential", "webhook.lockout.pair"],
                          "stage": "temporary_lock", "escalation": "security-operations"}
    good = event(410, order(10))
    steps.append({"request": signed(good, ip="198.51.100.66"),
                  "expect": {"outcome": "lock", "policies": ["webhook.lockout.pair"], "retry_after": 900}})
    steps.append({"request": signed(event(411, order(11))),
                  "expect": {"outcome": "allow", "policies": ["webhook.accept"], "stage": "none"}})
    f.case("five forgeries from one address lock the source there, not elsewhere", steps=steps)
    steps = [{"request": req(event(500 + i, order(i)), signature=forged(50 + i), ip=f"198.51.100.{100 + i}")}
             for i in range(10)]
    steps[8]["expect"] = {"outcome": "deny", "policies": ["webhook.credential"], "escalation": None}
    steps[9]["expect"] = {"outcome": "deny", "policies": ["webhook.credential", "webhook.lockout.source"],
                          "escalation": "security-operations",
                          "facts": {"lockout": {"account": {"failures": 10}, "account_ip": {"failures": 1}}}}
    steps.append({"request": signed(event(510, order(10))),
                  "expect": {"outcome": "allow", "policies": ["webhook.accept"]}})
    f.case("bad credentials for one source from many addresses are escalated; real deliveries pass", steps=steps)
    steps = [{"request": signed(event(600 + i, order(i)))} for i in range(10)]
    steps[9]["expect"] = {"outcome": "allow", "facts": {"rate": {"remaining": 0}}}
    steps.append({"request": signed(event(610, order(10))),
                  "expect": {"outcome": "throttle", "policies": ["access.rate.exhausted"], "retry_after": 1,
                             "facts": {"rate": {"exhausted": True}}}})
    steps.append({"request": signed(event(611, order(11)), source="service-events"),
                  "expect": {"outcome": "allow", "policies": ["webhook.accept"], "facts": {"rate": {"remaining": 9}}}})
    steps.append({"request": signed(event(612, order(12, Synthetic__c=True)), synthetic={"provenance": EDDSA_OK}),
                  "expect": {"outcome": "allow", "pathway": "synthetic", "facts": {"rate": {"remaining": 9}}}})
    # The throttled event, retried a second later, is new: it was never accepted.
    steps.append({"request": {**signed(event(610, order(10))), "now": "2026-11-22T10:00:01Z"},
                  "expect": {"outcome": "allow", "policies": ["webhook.accept"],
                             "facts": {"rate": {"remaining": 0}, "webhook": {"redelivery": False, "deliveries": 1}}}})
    steps.append({"request": {**signed(event(610, order(10))), "now": "2026-11-22T10:00:01Z"},
                  "expect": {"outcome": "allow", "policies": ["webhook.redelivery"], "facts": {"rate": {"remaining": 0}}}})
    f.case("each source has its own bucket per pathway; a throttled event is new when retried", steps=steps)
    steps = [{"request": req(event(700 + i, order(i)), signature=forged(70 + i), ip="198.51.100.77")} for i in range(2)]
    steps += [{"request": signed(event(710 + i, order(i)))} for i in range(10)]
    steps[-1]["expect"] = {"outcome": "allow", "policies": ["webhook.accept"], "facts": {"rate": {"remaining": 0}}}
    f.case("bad deliveries take no token from the real source", steps=steps)
    return f


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "policies/tests/webhooks"
    os.makedirs(out, exist_ok=True)
    for name, build in [("credentials", credentials), ("synthetic", synthetic),
                        ("redelivery", redelivery), ("limits", limits)]:
        build().write(os.path.join(out, f"{name}.yaml"))


if __name__ == "__main__":
    main()
