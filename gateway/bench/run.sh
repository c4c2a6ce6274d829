#!/usr/bin/env bash
# gateway/bench/run.sh — one backend, five ways in, one run (`make bench-gateway`):
#
#   direct   wrk → backend
#   rouse    wrk → rouse gateway → backend   (routes and endpoints from a Consul dev agent)
#   nginx    wrk → nginx (1 worker, keepalive upstream) → backend
#   haproxy  wrk → HAProxy 2.6 (nbthread 1, http-reuse always, keep-alive both sides) → backend
#   traefik  wrk → Traefik v3 (Consul Catalog provider, the same Consul agent, the router from
#            the service's traefik.* tags, GOMAXPROCS as the gateway's) → backend
#
# Every proxy sets the same X-Forwarded-For/-Proto/-Host headers rouse sets (Traefik's
# X-Forwarded-Port/-Server and X-Real-Ip are removed by a headers middleware from the tags),
# so the backend parses the same request from each: before the rounds the backend's
# /headers, as each proxy delivers it, is compared with rouse's, and a difference stops the
# run.
#
# Each configuration is measured ROUNDS times, interleaved (the order rotates by one each
# round) so drift hits all alike, and the medians are printed with the ratios (rouse over
# each peer, also as the median of the ratios paired by round), each proxy's CPU time per
# request (from /proc) and each proxy's peak RSS (the gateway's, nginx's worker's, HAProxy's,
# Traefik's). Two shapes: "load" (CONNS connections, throughput) and "1-conn" (one
# connection: the latency a hop adds when nothing queues).
#
# TLS=1 and GRPC=1 compare rouse with nginx only (HAProxy and Traefik are left out there).
#
# TLS=1: rouse and nginx serve https (wrk → https://), with one self-signed ECDSA P-256
# certificate for *.default.localhost made in the run (openssl; without it, Go's
# crypto/tls/generate_cert.go from GOROOT); "direct" stays plain HTTP to the backend, the
# baseline. Held equal: TLSv1.2 + TLSv1.3 on both (wrk's OpenSSL negotiates 1.3), HTTP/1.1
# only (no http2 on nginx), AES-128-GCM preferred (Go's choice; nginx told to prefer it),
# X25519 (what the client offers), no server-side session cache (Go has none; nginx
# ssl_session_cache off), session tickets on (both defaults; TLS_TICKETS=off turns them off
# in both). wrk keeps its connections, so the handshake is paid once per connection and
# amortised; a third shape, "close" (CONNS connections, each request with Connection:
# close, so wrk reconnects and handshakes again for every request), measures the
# handshake. wrk resumes its session from the ticket it was given when it reconnects, so
# with tickets on "close" is a TLS 1.3 resumption (PSK + X25519, no certificate
# signature) per request; with TLS_TICKETS=off it is a full handshake per request. The
# negotiated protocol, cipher and key exchange of each are printed. Keep-alive is as in
# plain HTTP: nginx's default keepalive_requests (1000) closes a client connection after
# 1000 requests, so nginx pays one (resumed) handshake per 1000 requests; rouse has no such
# limit.
#
# Env: TLS (unset|1), TLS_TICKETS (on|off), ROUNDS (5), DURATION (6s), CONNS (50),
# WRK_THREADS (1), ACCESS_LOG (off|file:
# with file, every proxy logs each request in its usual format, so all pay for logging:
# rouse its buffered JSON lines, nginx `combined` buffered (256k, flushed each second),
# HAProxy `option httplog` to `log stdout` (one write per line; its stdout is a file in the
# work dir, no syslog daemon), Traefik its access log to a file (common format,
# bufferingSize 100)), GATEWAY_GOMAXPROCS (unset = Go's default, all cores; 1 = the single
# core nginx's one worker and HAProxy's one thread get; Traefik gets the same),
# GATEWAY_ARGS (extra gatewayd flags, e.g. -cpuprofile /tmp/gw.prof), KEEP (keep the work
# dir).
# Needs: go, wrk, nginx, consul (bin/ or PATH), python3 (free ports); haproxy and traefik
# (bin/, `make bench-gateway` builds it: tools/traefik) unless TLS=1; openssl for TLS=1
# (optional).
#
# GRPC=1: the same three ways in for gRPC (unary calls over h2c, rouse forwarding to a
# protocol "h2c" revision, nginx's grpc_pass): gateway/bench/grpc.sh, which says more.
set -euo pipefail
case ${GRPC:-} in "" | 0) ;; *) exec "$(dirname "$0")/grpc.sh" ;; esac

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
ACCESS_LOG=${ACCESS_LOG:-off}
TLS=${TLS:-}
[ "$TLS" = 0 ] && TLS=""
TLS_TICKETS=${TLS_TICKETS:-on}
case $TLS_TICKETS in on | off) ;; *) echo "bench: TLS_TICKETS is on or off" >&2; exit 1 ;; esac

root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
# The proxies measured; HAProxy and Traefik in plain HTTP only.
proxies=(rouse nginx)
[ -z "$TLS" ] && proxies+=(haproxy traefik)
names=(direct "${proxies[@]}")
peers=("${proxies[@]:1}")
need=(go wrk nginx consul)
[ -z "$TLS" ] && need+=(haproxy traefik)
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (make tools bench-deps; traefik: tools/ensure.sh traefik VERSION, as make bench-gateway does)" >&2; exit 1; }
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
HOSTHDR="Host: bench.default.localhost"
read -r p_http p_serf_lan p_serf_wan p_server p_backend p_public p_admin p_nginx p_haproxy p_traefik <<<"$(free_ports 10)"

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

# The revision's instance in Consul, as Nomad would register it, and its route in KV. The
# traefik.* tags are what a Nomad job's service block carries for Traefik's Consul Catalog
# provider: the router's rule and a headers middleware that removes the forwarding headers
# Traefik adds beyond rouse's three (an empty value deletes a request header).
curl -sf -X PUT "$C/v1/agent/service/register" -d @- >/dev/null <<EOF
{"ID":"bench-1","Name":"bench-00001","Address":"127.0.0.1","Port":$p_backend,
 "Tags":["rouse","rouse.service=bench",
   "traefik.enable=true",
   "traefik.http.routers.bench.rule=Host(\`bench.default.localhost\`)",
   "traefik.http.routers.bench.entrypoints=web",
   "traefik.http.routers.bench.middlewares=bench-xf",
   "traefik.http.middlewares.bench-xf.headers.customrequestheaders.X-Forwarded-Port=",
   "traefik.http.middlewares.bench-xf.headers.customrequestheaders.X-Forwarded-Server=",
   "traefik.http.middlewares.bench-xf.headers.customrequestheaders.X-Real-Ip="],
 "Meta":{"rouse_readiness_path":"/healthz"},
 "Check":{"HTTP":"http://127.0.0.1:$p_backend/healthz","Interval":"1s"}}
EOF
curl -sf -X PUT "$C/v1/kv/rouse/revisions/default/bench-00001" -d \
  '{"service":"bench","namespace":"default","revision":"bench-00001","concurrency":0,"timeout":300000000000,"target_burst_capacity":200}' >/dev/null
curl -sf -X PUT "$C/v1/kv/rouse/services/default/bench" -d \
  '{"namespace":"default","name":"bench","route":[{"revision":"bench-00001","percent":100}]}' >/dev/null

scheme=http gw_tls=() nginx_ssl="" nginx_tls=""
if [ -n "$TLS" ]; then
  # One certificate for both proxies: ECDSA P-256, self-signed (wrk does not verify).
  mkdir -p "$work/tls"
  if command -v openssl >/dev/null; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=*.default.localhost" -addext "subjectAltName=DNS:*.default.localhost" \
      -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>"$work/tls/openssl.log"
  else
    (cd "$work/tls" && go run "$(go env GOROOT)/src/crypto/tls/generate_cert.go" \
      -host '*.default.localhost' -ecdsa-curve P256 -duration 48h >"$work/tls/gen.log" 2>&1)
  fi
  scheme=https
  gw_tls=(-tls-cert "$work/tls/cert.pem" -tls-key "$work/tls/key.pem")
  [ "$TLS_TICKETS" = off ] && gw_tls+=(-tls-session-tickets=false)
  nginx_ssl=" ssl"
  # ssl_session_cache off: no server-side cache, as Go's server has none (both resume only
  # from tickets, on by default in both; TLS_TICKETS=off in both). TLS 1.3 suites: AES-128-GCM first and preferred,
  # the suite Go's server picks on a CPU with AES-NI (OpenSSL's own order puts AES-256 first).
  nginx_tls="ssl_certificate $work/tls/cert.pem;
    ssl_certificate_key $work/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets $TLS_TICKETS;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;"
fi

access=off
[ "$ACCESS_LOG" = file ] && access="$work/access.log"
GOMAXPROCS=${GATEWAY_GOMAXPROCS:-} "$work/gatewayd" -consul "127.0.0.1:$p_http" -public "127.0.0.1:$p_public" -admin "127.0.0.1:$p_admin" \
  -access-log "$access" "${gw_tls[@]}" ${GATEWAY_ARGS:-} >"$work/gateway.log" 2>&1 &
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
    listen 127.0.0.1:$p_nginx$nginx_ssl;
    $nginx_tls
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

if [ -z "$TLS" ]; then
  # HAProxy: one process, one thread (as nginx's one worker), keep-alive on both sides and
  # any idle backend connection reused (nginx's keepalive pool does the same), the same
  # three X-Forwarded-* headers. ACCESS_LOG=file: `option httplog` lines to stdout, which is
  # a file here (HAProxy writes each line with one write(); it has no log buffer).
  mkdir -p "$work/haproxy"
  haproxy_global="" haproxy_log="no log"
  if [ "$ACCESS_LOG" = file ]; then
    haproxy_global="log stdout format raw local0 info"
    haproxy_log="log global
  option httplog"
  fi
  cat >"$work/haproxy/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  $haproxy_global
defaults
  mode http
  $haproxy_log
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend bench
  bind 127.0.0.1:$p_haproxy
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend backend
backend backend
  server b1 127.0.0.1:$p_backend
EOF
  haproxy -db -f "$work/haproxy/haproxy.cfg" >"$work/haproxy/access.log" 2>"$work/haproxy/error.log" &
  haproxy_pid=$!
  pids+=($haproxy_pid)

  # Traefik: its Consul Catalog provider watching the Consul agent the gateway reads (blocking
  # queries, as the gateway's watcher), only services tagged traefik.enable=true; no API,
  # dashboard, metrics or tracing (none is on unless configured). ACCESS_LOG=file: its access
  # log (common format) to a file, bufferingSize 100.
  mkdir -p "$work/traefik"
  traefik_log=""
  [ "$ACCESS_LOG" = file ] && traefik_log="accessLog:
  filePath: $work/traefik/access.log
  bufferingSize: 100"
  cat >"$work/traefik/traefik.yml" <<EOF
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  web:
    address: 127.0.0.1:$p_traefik
providers:
  consulCatalog:
    endpoint:
      address: 127.0.0.1:$p_http
    exposedByDefault: false
    watch: true
$traefik_log
EOF
  GOMAXPROCS=${GATEWAY_GOMAXPROCS:-} traefik --configFile="$work/traefik/traefik.yml" >"$work/traefik/out.log" 2>&1 &
  traefik_pid=$!
  pids+=($traefik_pid)
fi

url_direct="http://127.0.0.1:$p_backend/"
url_rouse="$scheme://127.0.0.1:$p_public/"
url_nginx="$scheme://127.0.0.1:$p_nginx/"
url_haproxy="http://127.0.0.1:$p_haproxy/"
url_traefik="http://127.0.0.1:$p_traefik/"

# Each way in answers from the backend (Traefik once its provider has read the catalog and
# the instance's check passes).
ok=""
for _ in $(seq 300); do
  ok=1
  for n in "${names[@]}"; do
    u="url_$n"
    curl -skf -H "$HOSTHDR" "${!u}" | grep -q bench-00001 || { ok=""; break; }
  done
  [ -n "$ok" ] && break
  sleep 0.1
done
[ -n "$ok" ] || { echo "bench: setup failed ($n does not answer from the backend); logs in $work" >&2; KEEP=1; exit 1; }
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

# The request each proxy delivers, as the backend's /headers prints it, must be rouse's. One
# difference is let through: Traefik's transport (Go's http.Transport, compression not
# disabled, no option for it) adds "Accept-Encoding: gzip" to a request that has none; the
# backend does not compress, so the response is the same bytes.
for n in "${proxies[@]}"; do
  u="url_$n"
  curl -skf -H "$HOSTHDR" "${!u}headers" >"$work/headers.$n"
done
grep -vx 'Accept-Encoding: gzip' "$work/headers.traefik" >"$work/headers.traefik.cmp" 2>/dev/null || true
for n in "${peers[@]}"; do
  f="$work/headers.$n"; [ "$n" = traefik ] && f+=.cmp
  if ! cmp -s "$work/headers.rouse" "$f"; then
    echo "bench: the backend sees a different request from $n than from rouse:" >&2
    diff "$work/headers.rouse" "$work/headers.$n" >&2 || true
    KEEP=1; exit 1
  fi
done
echo "bench: the backend sees the same request from ${proxies[*]}${TLS:-" (traefik adds Accept-Encoding: gzip)"}:"
sed 's/^/  /' "$work/headers.rouse"

# What each proxy negotiates with the OpenSSL wrk is linked against (same library).
tls_params=""
if [ -n "$TLS" ] && command -v openssl >/dev/null; then
  for n in rouse nginx; do
    port_var="p_public"; [ "$n" = nginx ] && port_var="p_nginx"
    tls_params+=$(printf "%-6s %s\n" "$n" "$(openssl s_client -connect "127.0.0.1:${!port_var}" -servername bench.default.localhost </dev/null 2>/dev/null |
      awk '/^New, / { v = $2 " " $NF } /Server Temp Key/ { sub(/^.*Key: /, ""); k = $0 } /Peer signature type/ { s = $NF }
           END { printf "%s, key exchange %s, signature %s", v, k, s }')")$'\n'
  done
fi
shapes=("$CONNS" 1)
[ -n "$TLS" ] && shapes+=(close)

# The proxy's CPU time (user + system, clock ticks) from /proc: the cost per request is
# the proxy's own efficiency, apart from how the machine shared its cores in that run.
pid_rouse=$gw_pid pid_nginx=$nginx_worker pid_haproxy=${haproxy_pid:-} pid_traefik=${traefik_pid:-}
ticks() { if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi; }
hz=$(getconf CLK_TCK)

# run NAME SHAPE → appends "rps p50_ms p99_ms errors cpu_us_per_request" to $work/NAME.SHAPE;
# SHAPE is a number of connections, or "close": CONNS connections, a new one per request.
run() {
  local name=$1 shape=$2 url_var="url_$1" pid_var="pid_$1" out t0 t1 conns=$2 extra=()
  [ "$shape" = close ] && conns=$CONNS extra=(-H "Connection: close")
  t0=$(ticks "${!pid_var:-}")
  out=$(wrk -t"$WRK_THREADS" -c"$conns" -d"$DURATION" --latency -H "$HOSTHDR" "${extra[@]}" "${!url_var}")
  t1=$(ticks "${!pid_var:-}")
  echo "$out" >>"$work/wrk.log"
  awk -v f="$work/$name.$shape" -v ticks=$((t1 - t0)) -v hz="$hz" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /^Requests\/sec/ { rps = $2 } /Non-2xx/ { bad += $NF } /Socket errors/ { gsub(/,/, ""); bad += $4 + $6 + $8 + $10 }
    / requests in / { n = $1 }
    END { printf "%s %.3f %.3f %d %.2f\n", rps, p50, p99, bad + 0, n ? ticks * 1e6 / hz / n : 0 >> f }' <<<"$out"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: load average $load_start; warming up..."
for n in "${names[@]}"; do DURATION=2s run "$n" 1 >/dev/null; done
rm -f "$work"/*.1

echo "bench: $ROUNDS rounds × {${names[*]}} × {${shapes[*]}}, $DURATION each${TLS:+ (rouse and nginx over https)}..."
for r in $(seq "$ROUNDS"); do
  # This round's order: the names rotated by one more than the last round's.
  order=("${names[@]:$(((r - 1) % ${#names[@]}))}" "${names[@]:0:$(((r - 1) % ${#names[@]}))}")
  for s in "${shapes[@]}"; do
    for n in "${order[@]}"; do run "$n" "$s"; done
  done
done
hwm_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
rss="rouse gateway $(hwm_mb "$gw_pid") MB, nginx worker $(hwm_mb "$nginx_worker") MB"
[ -z "$TLS" ] && rss+=", haproxy $(hwm_mb "$haproxy_pid") MB, traefik $(hwm_mb "$traefik_pid") MB"

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$2" '{ print $c }' "$work/$1" | median; }

echo
printf "rouse gateway benchmark — %s, %s cores, wrk -t%s, %s per run, medians of %s runs\n" \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$WRK_THREADS" "$DURATION" "$ROUNDS"
tls_mode=off
if [ -n "$TLS" ]; then
  tls_mode="rouse and nginx over https, direct plain http, session tickets $TLS_TICKETS"
  printf "TLS: rouse and nginx over https (one self-signed ECDSA P-256 certificate), direct plain http\n%s" "$tls_params"
fi
printf "load average: %s at the start, %s at the end\n" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
for conns in "${shapes[@]}"; do
  if [ "$conns" = close ]; then
    printf "\n%s conns, each request with Connection: close: a new connection%s per request\n" "$CONNS" "${TLS:+ and TLS handshake}"
    printf "%-7s %6s %18s %10s %10s %8s %14s\n" "" "close" "rps" "p50 ms" "p99 ms" "errors" "CPU us/request"
  else
    printf "\n%-7s %6s conns %12s %10s %10s %8s %14s\n" "" "$conns" "rps" "p50 ms" "p99 ms" "errors" "CPU us/request"
  fi
  for n in "${names[@]}"; do
    cpu="-"
    [ "$n" != direct ] && cpu=$(printf "%.1f" "$(col "$n.$conns" 5)")
    label=$n; [ -n "$TLS" ] && [ "$n" != direct ] && label="$n https"
    printf "%-20s %12.0f %10.3f %10.3f %8s %14s\n" "$label" "$(col "$n.$conns" 1)" "$(col "$n.$conns" 2)" "$(col "$n.$conns" 3)" \
      "$(awk '{ s += $4 } END { print s + 0 }' "$work/$n.$conns")" "$cpu"
  done
  d=$(col "direct.$conns" 1) dp=$(col "direct.$conns" 2)
  line="rps over direct:" added="added p50 over direct:"
  for n in "${proxies[@]}"; do
    line+=$(awk -v n="$n" -v x="$(col "$n.$conns" 1)" -v d="$d" 'BEGIN { printf "  %s %.2f", n, x / d }')
    added+=$(awk -v n="$n" -v x="$(col "$n.$conns" 2)" -v d="$dp" 'BEGIN { printf "  %s %+.3f ms", n, x - d }')
  done
  echo "$line"
  echo "$added"
  # rouse over each peer: the ratio of the medians, and paired: rouse and the peer run in the
  # same round, so their ratio is less exposed to the machine's drift between rounds.
  for p in "${peers[@]}"; do
    paste -d' ' "$work/rouse.$conns" "$work/$p.$conns" | awk '{ print $1 / $6 }' >"$work/paired.$p.$conns"
    awk -v p="$p" -v g="$(col "rouse.$conns" 1)" -v x="$(col "$p.$conns" 1)" -v gc="$(col "rouse.$conns" 5)" -v xc="$(col "$p.$conns" 5)" \
      -v gp="$(col "rouse.$conns" 2)" -v xp="$(col "$p.$conns" 2)" -v dp="$dp" \
      -v rounds="$(awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$work/paired.$p.$conns")" -v pm="$(median <"$work/paired.$p.$conns")" 'BEGIN {
      printf "rouse/%-7s rps %.2f, paired by round %.2f (%s); CPU/request %.2f; added p50 %.2f\n",
        p, g / x, pm, rounds, xc ? gc / xc : 0, (xp - dp) != 0 ? (gp - dp) / (xp - dp) : 0 }'
  done
done
access=""
if [ "$ACCESS_LOG" = file ]; then
  sleep 1.5 # nginx flushes its buffer each second; Traefik's writer drains its channel
  access=" (lines: rouse $(wc -l <"$work/access.log"), nginx $(wc -l <"$work/nginx/access.log")"
  [ -z "$TLS" ] && access+=", haproxy $(wc -l <"$work/haproxy/access.log"), traefik $(wc -l <"$work/traefik/access.log")"
  access+=")"
fi
who="the gateway and traefik"; [ -n "$TLS" ] && who="the gateway"
printf "\npeak RSS: %s\naccess logs: %s%s; GOMAXPROCS of %s: %s; TLS: %s\n" \
  "$rss" "$ACCESS_LOG" "$access" "$who" "${GATEWAY_GOMAXPROCS:-default, $(nproc)}" "$tls_mode"
