#!/usr/bin/env bash
# tools/docker.sh — make a Docker engine answer on its socket and docker-registry available,
# as tools/ensure.sh does for Nomad and Consul: what is there already is used (in well under
# a second), what is missing is installed from Debian and started.
#   - dockerd or /usr/bin/docker-registry missing: apt-get install docker.io docker-registry
#     (apt-get update first only if the install fails). The package's own attempt to start
#     services (there is no systemd here) does not matter: the registry the tests use is
#     started by them on a free port (internal/harness/registry), never the system one.
#   - no engine answering on the socket: start dockerd in the background, its log and pid
#     under ${XDG_CACHE_HOME:-$HOME/.cache}/rouse/dockerd/, and wait (60 s at most) for /_ping.
# The engine is asked over its socket with curl, so whichever docker CLI is on PATH (there may
# be a newer one in /usr/local/bin) does not matter.
set -euo pipefail
sock=/var/run/docker.sock
if [ -n "${DOCKER_HOST:-}" ]; then
  case $DOCKER_HOST in
  unix://*) sock=${DOCKER_HOST#unix://} ;;
  *) echo "docker: DOCKER_HOST=$DOCKER_HOST is not a unix socket; rouse's tests talk to a local engine" >&2; exit 1 ;;
  esac
fi
state=${XDG_CACHE_HOME:-$HOME/.cache}/rouse/dockerd
log=$state/dockerd.log pidfile=$state/dockerd.pid

ping() { [ -S "$sock" ] && [ "$(curl -fsS --max-time 2 --unix-socket "$sock" http://docker/_ping 2>/dev/null)" = OK ]; }

# 1. the packages
pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
[ -x /usr/bin/docker-registry ] || pkgs+=(docker-registry)
command -v curl >/dev/null || pkgs+=(curl)
if [ ${#pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "docker: ${pkgs[*]} missing and not root: apt-get install -y ${pkgs[*]} as root" >&2; exit 1; }
  echo "docker: installing ${pkgs[*]} from Debian..."
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  command -v dockerd >/dev/null && [ -x /usr/bin/docker-registry ] || {
    echo "docker: installed ${pkgs[*]}, but dockerd or /usr/bin/docker-registry is still missing" >&2; exit 1; }
fi

# 2. the engine
if ping; then exit 0; fi
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
if running; then
  echo "docker: dockerd (pid $(cat "$pidfile")) is starting; waiting for $sock"
elif pgrep -x dockerd >/dev/null; then
  # Someone else's dockerd that does not answer (yet): a second one would fail on its pid
  # file and its socket, so wait for that one.
  echo "docker: a dockerd (pid $(pgrep -x dockerd | head -n1)) is running but $sock does not answer yet; waiting"
else
  [ "$(id -u)" = 0 ] || { echo "docker: no engine answers on $sock and dockerd needs root: start it as root (make docker)" >&2; exit 1; }
  mkdir -p "$state"
  echo "docker: starting dockerd (log $log)"
  # Its own session, so it outlives this shell and make; stdin closed.
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
fi
for _ in $(seq 1 240); do # 60 s
  if ping; then
    echo "docker: engine answers on $sock"
    exit 0
  fi
  if [ -f "$pidfile" ] && ! running && ! pgrep -x dockerd >/dev/null; then
    echo "docker: dockerd exited; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  sleep 0.25
done
echo "docker: no answer on $sock after 60 s; last lines of ${log}:" >&2
tail -n 30 "$log" >&2 2>/dev/null || true
exit 1
