#!/usr/bin/env bash
# gateway/bench/grpc.sh — the gateway benchmark for gRPC (`GRPC=1 make bench-gateway`, which
# runs run.sh, which runs this): one gRPC backend, three ways in, one run:
#
#   direct   grpcload → backend
#   rouse    grpcload → rouse gateway → backend   (a revision with protocol "h2c", from a Consul dev agent)
#   nginx    grpcload → nginx (1 worker, grpc_pass to a keepalive upstream) → backend
#
# The backend is examples/grpc (grpc-go, h2c). The load is gateway/internal/grpcload: a
# closed loop of unary PingService/Ping calls, grpc-go over h2c with prior knowledge (no
# TLS) on every hop, so both proxies take HTTP/2 in and speak HTTP/2 to the backend:
# rouse multiplexes its calls to an instance over one h2c connection; nginx's grpc_pass
# opens one upstream HTTP/2 connection per call in flight and keeps them (keepalive).
# Held equal with the HTTP mode (run.sh): one nginx worker, keepalive upstream, access logs
# off (ACCESS_LOG=file: both buffered), nginx's defaults otherwise (keepalive_requests
# 1000: nginx ends a client connection with GOAWAY after 1000 calls and grpc-go dials
# again; rouse has no such limit), Go's default GOMAXPROCS for the gateway.
#
# Shapes (GRPC_SHAPES, each CONNSxSTREAMS, STREAMS per connection):
#   2x50  2 HTTP/2 connections × 50 calls in flight on each (100 in all): throughput, many
#         calls multiplexed on few connections, the way gRPC clients load a server.
#   1x1   1 connection, 1 call at a time: latency, what a hop adds when nothing queues.
#
# Each configuration is measured ROUNDS times, interleaved (direct, rouse, nginx back to
# back in each round), with medians, ratios, the rouse/nginx ratio of each round and its
# median, each proxy's CPU time per call (from /proc: its ticks over the grpcload run,
# divided by every call that run completed, warmup included) and the peak RSS of the
# gateway and of nginx's worker. Any non-OK status counts as an error.
#
# Env: ROUNDS (5), DURATION (6s, measured per run), WARMUP (1s per run, not measured),
# GRPC_SHAPES ("2x50 1x1"), ACCESS_LOG (off|file), GATEWAY_GOMAXPROCS, GATEWAY_ARGS, KEEP
# (keep the work dir). Needs: go, nginx with http_v2 and grpc (Debian's nginx has both),
# consul (bin/ or PATH), python3, curl.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6s}
WARMUP=${WARMUP:-1s}
GRPC_SHAPES=${GRPC_SHAPES:-2x50 1x1}
ACCESS_LOG=${ACCESS_LOG:-off}
case ${TLS:-} in "" | 0) ;; *) echo "bench: GRPC=1 is h2c only (no TLS=1)" >&2; exit 1 ;; esac
read -r -a shapes <<<"$GRPC_SHAPES"
for s in "${shapes[@]}"; do
  [[ $s =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "bench: GRPC_SHAPES: $s is not CONNSxSTREAMS" >&2; exit 1; }
done

root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
for tool in go nginx consul python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (make tools bench-deps)" >&2; exit 1; }
done
nginx_build=$(nginx -V 2>&1)
if ! grep -q -- --with-http_v2_module <<<"$nginx_build" || grep -q -- --without-http_grpc_module <<<"$nginx_build"; then
  echo "bench: this nginx lacks http_v2 or grpc (nginx -V); Debian's nginx package has both" >&2
  exit 1
fi
work=$(mktemp -d /tmp/rouse-bench-grpc.XXXXXX)
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
AUTHORITY=bench.default.localhost
read -r p_http p_serf_lan p_serf_wan p_server p_backend p_public p_admin p_nginx <<<"$(free_ports 8)"

echo "bench: building the gRPC backend (examples/grpc), the load generator and the gateway..."
(cd "$root" && go build -o "$work/backend" ./examples/grpc && go build -o "$work/grpcload" ./gateway/internal/grpcload &&
  go build -o "$work/gatewayd" ./gateway/internal/gatewayd)

consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$p_http" -log-level warn -node bench \
  -hcl "ports { dns = -1 grpc = -1 grpc_tls = -1 serf_lan = $p_serf_lan serf_wan = $p_serf_wan server = $p_server }" \
  -data-dir "$work/consul" >"$work/consul.log" 2>&1 &
pids+=($!)
C="http://127.0.0.1:$p_http"
for _ in $(seq 100); do curl -sf "$C/v1/status/leader" | grep -q 127 && break; sleep 0.1; done

PORT=$p_backend ROUSE_REVISION=bench-00001 ROUSE_INSTANCE=bench-1 "$work/backend" >"$work/backend.log" 2>&1 &
pids+=($!)

# The revision's instance in Consul as Nomad registers a readiness type "grpc" service
# (a Consul gRPC check, rouse_readiness_grpc in its meta), and in KV the revision with
# protocol h2c and its route.
curl -sf -X PUT "$C/v1/agent/service/register" -d @- >/dev/null <<EOF
{"ID":"bench-1","Name":"bench-00001","Address":"127.0.0.1","Port":$p_backend,
 "Tags":["rouse","rouse.service=bench"],"Meta":{"rouse_readiness_grpc":"true"},
 "Check":{"GRPC":"127.0.0.1:$p_backend","GRPCUseTLS":false,"Interval":"1s"}}
EOF
curl -sf -X PUT "$C/v1/kv/rouse/revisions/default/bench-00001" -d \
  '{"service":"bench","namespace":"default","revision":"bench-00001","concurrency":0,"timeout":300000000000,"protocol":"h2c","target_burst_capacity":200}' >/dev/null
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
# listen … http2 without ssl: h2c with prior knowledge, what grpcload speaks.
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
    listen 127.0.0.1:$p_nginx http2;
    location / {
      grpc_pass grpc://backend;
    }
  }
}
EOF
nginx -t -q -c "$work/nginx/nginx.conf" -p "$work/nginx/" >"$work/nginx/test.log" 2>&1 ||
  { echo "bench: nginx rejects the gRPC config:" >&2; cat "$work/nginx/test.log" >&2; KEEP=1; exit 1; }
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx/" >"$work/nginx/out.log" 2>&1 &
nginx_master=$!
pids+=($nginx_master)

addr_direct=127.0.0.1:$p_backend addr_rouse=127.0.0.1:$p_public addr_nginx=127.0.0.1:$p_nginx
once() { "$work/grpcload" -once -timeout 2s -addr "$1" -authority "$AUTHORITY" 2>>"$work/setup.log"; }
ok=""
for _ in $(seq 100); do
  if once "$addr_rouse" | grep -q bench-00001 && once "$addr_nginx" >/dev/null && once "$addr_direct" >/dev/null; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "bench: setup failed; logs in $work" >&2; KEEP=1; exit 1; }
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

pid_rouse=$gw_pid pid_nginx=$nginx_worker
ticks() { if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
hz=$(getconf CLK_TCK)

# run NAME SHAPE → appends "rps p50_ms p99_ms errors cpu_us_per_call" to $work/NAME.SHAPE;
# SHAPE is CONNSxSTREAMS, STREAMS per connection.
run() {
  local name=$1 shape=$2 addr_var="addr_$1" pid_var="pid_$1" out t0 t1 conns=${2%x*} per=${2#*x}
  t0=$(ticks "${!pid_var:-}")
  out=$("$work/grpcload" -addr "${!addr_var}" -authority "$AUTHORITY" -conns "$conns" -streams $((conns * per)) \
    -duration "$DURATION" -warmup "$WARMUP" 2>>"$work/grpcload.err")
  t1=$(ticks "${!pid_var:-}")
  echo "$name $shape $out" >>"$work/grpcload.log"
  awk -v f="$work/$name.$shape" -v ticks=$((t1 - t0)) -v hz="$hz" '
    { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { printf "%s %s %s %d %.2f\n", v["rps"], v["p50_ms"], v["p99_ms"], v["errors"],
            v["total"] ? ticks * 1e6 / hz / v["total"] : 0 >> f }' <<<"$out"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: load average $load_start; warming up..."
for n in direct rouse nginx; do DURATION=2s WARMUP=0s run "$n" 1x1 >/dev/null; done
rm -f "$work"/*.1x1

echo "bench: $ROUNDS rounds × {direct, rouse, nginx} × {${shapes[*]}} (connections x streams each), gRPC unary Ping, $WARMUP warmup + $DURATION each..."
for r in $(seq "$ROUNDS"); do
  for s in "${shapes[@]}"; do
    for n in direct rouse nginx; do run "$n" "$s"; done
  done
done
rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$gw_pid/status")
nginx_rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$nginx_worker/status")

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$2" '{ print $c }' "$work/$1" | median; }

echo
printf "rouse gateway gRPC benchmark — %s, %s cores, grpcload (unary Ping, h2c), %s warmup + %s per run, medians of %s runs\n" \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$WARMUP" "$DURATION" "$ROUNDS"
printf "load average: %s at the start, %s at the end\n" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
for s in "${shapes[@]}"; do
  conns=${s%x*} per=${s#*x}
  what="throughput: calls multiplexed on few connections"
  [ "$((conns * per))" = 1 ] && what="latency: one call at a time, what a hop adds when nothing queues"
  printf "\n%s conns × %s streams (%s calls in flight) — %s\n" "$conns" "$per" "$((conns * per))" "$what"
  printf "%-20s %12s %10s %10s %8s %14s\n" "" "rps" "p50 ms" "p99 ms" "errors" "CPU us/call"
  for n in direct rouse nginx; do
    cpu="-"
    [ "$n" != direct ] && cpu=$(printf "%.1f" "$(col "$n.$s" 5)")
    printf "%-20s %12.0f %10.3f %10.3f %8s %14s\n" "$n" "$(col "$n.$s" 1)" "$(col "$n.$s" 2)" "$(col "$n.$s" 3)" \
      "$(awk '{ e += $4 } END { print e + 0 }' "$work/$n.$s")" "$cpu"
  done
  d=$(col "direct.$s" 1); g=$(col "rouse.$s" 1); x=$(col "nginx.$s" 1)
  dp=$(col "direct.$s" 2); gp=$(col "rouse.$s" 2); xp=$(col "nginx.$s" 2)
  awk -v d="$d" -v g="$g" -v x="$x" -v dp="$dp" -v gp="$gp" -v xp="$xp" 'BEGIN {
    printf "ratios: rouse/direct %.2f  nginx/direct %.2f  rouse/nginx %.2f   added p50: rouse %+.3f ms  nginx %+.3f ms\n",
      (d ? g / d : 0), (d ? x / d : 0), (x ? g / x : 0), gp - dp, xp - dp }'
  # Paired: rouse and nginx run back to back in each round (see run.sh).
  paste -d' ' "$work/rouse.$s" "$work/nginx.$s" | awk '{ print ($6 ? $1 / $6 : 0) }' >"$work/paired.$s"
  printf "rouse/nginx by round: %s (median %.2f)\n" "$(awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$work/paired.$s")" \
    "$(median <"$work/paired.$s")"
done
printf "\npeak RSS: rouse gateway %.1f MB, nginx worker %.1f MB; access logs: %s; gateway GOMAXPROCS: %s\n" \
  "$(awk -v k="$rss_kb" 'BEGIN { print k / 1024 }')" "$(awk -v k="$nginx_rss_kb" 'BEGIN { print k / 1024 }')" \
  "$ACCESS_LOG" "${GATEWAY_GOMAXPROCS:-default}"
if [ -s "$work/grpcload.err" ]; then
  echo "grpcload reported:"
  sort "$work/grpcload.err" | uniq -c | sort -rn | head -5
fi
