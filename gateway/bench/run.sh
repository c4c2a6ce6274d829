#!/usr/bin/env bash
# gateway/bench/run.sh — one backend, three ways in, one run (`make bench-gateway`):
#
#   direct   wrk → backend
#   rouse    wrk → rouse gateway → backend   (routes and endpoints from a Consul dev agent)
#   nginx    wrk → nginx (1 worker, keepalive upstream) → backend
#
# nginx sets the same X-Forwarded-For/-Proto/-Host headers rouse sets, so the backend parses
# the same request from both.
#
# Each configuration is measured ROUNDS times, interleaved so drift hits all three alike,
# and the medians are printed with the ratios, each proxy's CPU time per request (from
# /proc) and the gateway's peak RSS. Two shapes:
# "load" (CONNS connections, throughput) and "1-conn" (one connection: the latency a hop
# adds when nothing queues).
#
# Env: ROUNDS (5), DURATION (6s), CONNS (50), WRK_THREADS (1), ACCESS_LOG (off|file:
# with file, rouse writes its buffered JSON access log and nginx its buffered combined
# log, so both pay for logging), GATEWAY_GOMAXPROCS (unset = Go's default, all cores;
# 1 = the single core nginx's one worker gets), GATEWAY_ARGS (extra gatewayd flags, e.g.
# -cpuprofile /tmp/gw.prof), KEEP (keep the work dir).
# Needs: go, wrk, nginx, consul (bin/ or PATH), python3 (free ports).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
ACCESS_LOG=${ACCESS_LOG:-off}

root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
for tool in go wrk nginx consul; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (make tools bench-deps)" >&2; exit 1; }
done
work=$(mktemp -d /tmp/rouse-bench-gateway.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "bench: work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT

free_ports() { # N free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r p_http p_serf_lan p_serf_wan p_server p_backend p_public p_admin p_nginx <<<"$(free_ports 8)"

echo "bench: building the backend and the gateway..."
(cd "$root" && go build -o "$work/backend" ./gateway/internal/testbackend && go build -o "$work/gatewayd" ./gateway/internal/gatewayd)

consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$p_http" -log-level warn -node bench \
  -hcl "ports { dns = -1 grpc = -1 grpc_tls = -1 serf_lan = $p_serf_lan serf_wan = $p_serf_wan server = $p_server }" \
  -data-dir "$work/consul" >"$work/consul.log" 2>&1 &
pids+=($!)
C="http://127.0.0.1:$p_http"
for _ in $(seq 100); do curl -sf "$C/v1/status/leader" | grep -q 127 && break; sleep 0.1; done

PORT=$p_backend ROUSE_REVISION=bench-00001 "$work/backend" >"$work/backend.log" 2>&1 &
pids+=($!)

# The revision's instance in Consul, as Nomad would register it, and its route in KV.
curl -sf -X PUT "$C/v1/agent/service/register" -d @- >/dev/null <<EOF
{"ID":"bench-1","Name":"bench-00001","Address":"127.0.0.1","Port":$p_backend,
 "Tags":["rouse","rouse.service=bench"],"Meta":{"rouse_readiness_path":"/healthz"},
 "Check":{"HTTP":"http://127.0.0.1:$p_backend/healthz","Interval":"1s"}}
EOF
curl -sf -X PUT "$C/v1/kv/rouse/revisions/default/bench-00001" -d \
  '{"service":"bench","namespace":"default","revision":"bench-00001","concurrency":0,"timeout":300000000000,"target_burst_capacity":200}' >/dev/null
curl -sf -X PUT "$C/v1/kv/rouse/services/default/bench" -d \
  '{"namespace":"default","name":"bench","route":[{"revision":"bench-00001","percent":100}]}' >/dev/null

access=off
[ "$ACCESS_LOG" = file ] && access="$work/access.log"
GOMAXPROCS=${GATEWAY_GOMAXPROCS:-} "$work/gatewayd" -consul "127.0.0.1:$p_http" -public "127.0.0.1:$p_public" -admin "127.0.0.1:$p_admin" \
  -access-log "$access" ${GATEWAY_ARGS:-} >"$work/gateway.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)

mkdir -p "$work/nginx"
nginx_log="access_log off;"
[ "$ACCESS_LOG" = file ] && nginx_log="access_log $work/nginx/access.log combined buffer=256k flush=1s;"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  $nginx_log
  upstream backend { server 127.0.0.1:$p_backend; keepalive 256; }
  server {
    listen 127.0.0.1:$p_nginx;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx/" >"$work/nginx/out.log" 2>&1 &
nginx_master=$!
pids+=($nginx_master)

HOSTHDR="Host: bench.default.localhost"
ok=""
for _ in $(seq 100); do
  if curl -sf -H "$HOSTHDR" "http://127.0.0.1:$p_public/" | grep -q bench-00001 &&
     curl -sf "http://127.0.0.1:$p_nginx/" >/dev/null && curl -sf "http://127.0.0.1:$p_backend/" >/dev/null; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "bench: setup failed; logs in $work" >&2; KEEP=1; exit 1; }
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

url_direct="http://127.0.0.1:$p_backend/"
url_rouse="http://127.0.0.1:$p_public/"
url_nginx="http://127.0.0.1:$p_nginx/"

# The proxy's CPU time (user + system, clock ticks) from /proc: the cost per request is
# the proxy's own efficiency, apart from how the machine shared its cores in that run.
pid_rouse=$gw_pid pid_nginx=$nginx_worker
ticks() { if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
hz=$(getconf CLK_TCK)

# run NAME CONNS → appends "rps p50_ms p99_ms non2xx cpu_us_per_request" to $work/NAME.CONNS
run() {
  local name=$1 conns=$2 url_var="url_$1" pid_var="pid_$1" out t0 t1
  t0=$(ticks "${!pid_var:-}")
  out=$(wrk -t"$WRK_THREADS" -c"$conns" -d"$DURATION" --latency -H "$HOSTHDR" "${!url_var}")
  t1=$(ticks "${!pid_var:-}")
  echo "$out" >>"$work/wrk.log"
  awk -v f="$work/$name.$conns" -v ticks=$((t1 - t0)) -v hz="$hz" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /^Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $NF } /Socket errors/ { bad += 0 }
    / requests in / { n = $1 }
    END { printf "%s %.3f %.3f %d %.2f\n", rps, p50, p99, bad + 0, n ? ticks * 1e6 / hz / n : 0 >> f }' <<<"$out"
}

echo "bench: warming up..."
for n in direct rouse nginx; do DURATION=2s run "$n" 1 >/dev/null; done
rm -f "$work"/*.1

echo "bench: $ROUNDS rounds × {direct, rouse, nginx} × {$CONNS conns, 1 conn}, $DURATION each..."
for r in $(seq "$ROUNDS"); do
  for n in direct rouse nginx; do run "$n" "$CONNS"; done
  for n in direct rouse nginx; do run "$n" 1; done
done
rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$gw_pid/status")

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$2" '{ print $c }' "$work/$1" | median; }

echo
printf "rouse gateway benchmark — %s, %s cores, wrk -t%s, %s per run, medians of %s runs\n" \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$WRK_THREADS" "$DURATION" "$ROUNDS"
for conns in "$CONNS" 1; do
  printf "\n%-7s %6s conns %12s %10s %10s %8s %14s\n" "" "$conns" "rps" "p50 ms" "p99 ms" "non-2xx" "CPU us/request"
  for n in direct rouse nginx; do
    cpu="-"
    [ "$n" != direct ] && cpu=$(printf "%.1f" "$(col "$n.$conns" 5)")
    printf "%-20s %12.0f %10.3f %10.3f %8s %14s\n" "$n" "$(col "$n.$conns" 1)" "$(col "$n.$conns" 2)" "$(col "$n.$conns" 3)" \
      "$(awk '{ s += $4 } END { print s + 0 }' "$work/$n.$conns")" "$cpu"
  done
  d=$(col "direct.$conns" 1); g=$(col "rouse.$conns" 1); x=$(col "nginx.$conns" 1)
  dp=$(col "direct.$conns" 2); gp=$(col "rouse.$conns" 2); xp=$(col "nginx.$conns" 2)
  awk -v d="$d" -v g="$g" -v x="$x" -v dp="$dp" -v gp="$gp" -v xp="$xp" 'BEGIN {
    printf "ratios: rouse/direct %.2f  nginx/direct %.2f  rouse/nginx %.2f   added p50: rouse %+.3f ms  nginx %+.3f ms\n",
      g / d, x / d, g / x, gp - dp, xp - dp }'
  # Paired: rouse and nginx run back to back in each round, so their ratio is less exposed
  # to the machine's drift between rounds than the ratio of medians.
  paste -d' ' "$work/rouse.$conns" "$work/nginx.$conns" | awk '{ print $1 / $6 }' >"$work/paired.$conns"
  printf "rouse/nginx by round: %s (median %.2f)\n" "$(awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$work/paired.$conns")" \
    "$(median <"$work/paired.$conns")"
done
printf "\nrouse gateway peak RSS: %.1f MB; access logs: %s; gateway GOMAXPROCS: %s\n" \
  "$(awk -v k="$rss_kb" 'BEGIN { print k / 1024 }')" "$ACCESS_LOG" "${GATEWAY_GOMAXPROCS:-default}"
