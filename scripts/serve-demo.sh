#!/usr/bin/env bash
# `make run`: start `portcullis serve` on the default bundle (loopback, a
# free port), show a few curl calls and their answers, stop it by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
PORTCULLIS=${PORTCULLIS_BIN:-target/release/portcullis}
BUNDLE=${PORTCULLIS_BUNDLE:-policies}
command -v curl >/dev/null || apt-get install -y curl || { apt-get update && apt-get install -y curl; }

log=$(mktemp)
"$PORTCULLIS" serve --bundle "$BUNDLE" --listen 127.0.0.1:0 --workers 2 >"$log" 2>"$log.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log" "$log.err"' EXIT
for _ in $(seq 600); do
  grep -q "^portcullis serve ready" "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log.err" >&2; exit 2; }
  sleep 0.1
done
url=$(sed -n 's/^portcullis serve listening on //p' "$log")
echo "== portcullis serve (pid $pid) on $url, bundle $BUNDLE =="
grep "^portcullis serve ready" "$log"

# The gist of a decision: outcome, policies, reasons, pathway, stage.
gist() {
  python3 -c '
import json, sys
v = json.load(sys.stdin)
items = v if isinstance(v, list) else [v]
for d in items:
    keep = {k: d.get(k) for k in ("outcome", "policies", "reasons", "pathway", "stage", "retry_after", "escalation") if d.get(k) not in (None, [])}
    if d.get("error"):
        keep["error"] = d["error"]
    print("   ", json.dumps(keep))
'
}

call() { # path body
  echo
  echo "\$ curl -s -X POST $url$1 -d '$2'"
  curl -s -X POST "$url$1" -H 'content-type: application/json' -d "$2" | gist
}

NOW='"now":"2026-11-22T10:00:00Z"'
READ='{"principal":{"type":"User","id":"alice@example.com"},"action":"read","resource":{"type":"Record","id":"0015g00000AbCdEAAV"},"context":{"ip":"203.0.113.7","region":"eu-central"},'$NOW'}'
FAIL='{"principal":{"type":"User","id":"bob@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"198.51.100.23"},"event":"auth_failure",'$NOW'}'
LOGIN='{"principal":{"type":"User","id":"bob@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"198.51.100.23"},'$NOW'}'
TOKEN='eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6ImZhY3RvcnktMjAyNiJ9.eyJpc3MiOiJzeW50aGV0aWMtZmFjdG9yeSIsImF1ZCI6InBvcnRjdWxsaXMiLCJleHAiOjE3OTg3NjE2MDAsImlhdCI6MTc2MzgwMDAwMCwiZGF0YXNldCI6ImNybS1sb2FkLTIwMjYiLCJnZW5lcmF0b3IiOiJsb2N1c3QtNCJ9.yMKCnCocZpUDwCebTc4FihUnx1H8_yL6qtKd7zYCdjG9a6eMcqnEf4R-yD1485OH-QJ9Kve-qRo2CUsL9Wo0BA'
SYNTH='{"principal":{"type":"User","id":"loadtest@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"10.1.2.3","synthetic":{"marker":true,"provenance":"'$TOKEN'"}},'$NOW'}'

echo
echo "-- an allowed read"
call /v1/decide "$READ"
echo
echo "-- a lockout sequence: 10 failed logins for bob from one address (one batch of events), then a login"
batch="[$(for _ in $(seq 10); do printf '%s,' "$FAIL"; done | sed 's/,$//')]"
echo "\$ curl -s -X POST $url/v1/events -d '[<10 x auth_failure for bob>]'   # answers, one per event:"
curl -s -X POST "$url/v1/events" -H 'content-type: application/json' -d "$batch" | gist
call /v1/decide "$LOGIN"
echo
echo "-- a synthetic login with verified provenance (its own pathway)"
call /v1/decide "$SYNTH"
echo
echo "-- a malformed request: 400, the field named"
echo "\$ curl -s -w ' HTTP %{http_code}' -X POST $url/v1/decide -d '{\"principal\":{\"type\":\"User\",\"id\":\"a\"},\"action\":\"logon\"}'"
curl -s -w ' HTTP %{http_code}\n' -X POST "$url/v1/decide" -d '{"principal":{"type":"User","id":"a"},"action":"logon","resource":{"type":"App","id":"sales-cloud"}}' | python3 -c 'import json,sys; t=sys.stdin.read(); b,_,code=t.rpartition(" HTTP "); print("   ", json.dumps(json.loads(b)["error"]), "HTTP", code.strip())'
echo
echo "\$ curl -s $url/v1/bundle"
curl -s "$url/v1/bundle" | python3 -c 'import json,sys; v=json.load(sys.stdin); print("   ", json.dumps({k: v.get(k) for k in ("name","version","hash","signer","loaded_at","previous_hash","last_error")}))'
echo "\$ curl -s $url/metrics | grep ^portcullis_decisions_total"
curl -s "$url/metrics" | grep '^portcullis_decisions_total' | sed 's/^/    /'
echo
echo "== stopping portcullis serve (pid $pid) =="
kill -TERM $pid
wait $pid
trap 'rm -f "$log" "$log.err"' EXIT
