#!/usr/bin/env bash
# tools/debian.sh TOOL... — make each TOOL's commands answer, installing its Debian package
# when one is missing (as tools/docker.sh does for the engine): what is on PATH already is
# used, in well under a second. The tools the observability tests need:
#   chromium    the headless browser that loads `rouse console` (package chromium)
#   prometheus  prometheus and promtool, scraping a real gateway and scaler and checking
#               deploy/prometheus/rouse-rules.yml (package prometheus)
# apt-get update runs only if the install fails (a fresh machine's empty lists). The
# packages' own attempts to start services (no systemd here) do not matter: the tests start
# their own processes on free ports.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: tools/debian.sh chromium|prometheus..." >&2; exit 2; }
pkgs=()
for tool in "$@"; do
  case $tool in
  chromium) command -v chromium >/dev/null || pkgs+=(chromium) ;;
  prometheus) { command -v prometheus >/dev/null && command -v promtool >/dev/null; } || pkgs+=(prometheus) ;;
  *) echo "tools/debian.sh: unknown tool $tool (chromium, prometheus)" >&2; exit 2 ;;
  esac
done
[ ${#pkgs[@]} -gt 0 ] || exit 0
[ "$(id -u)" = 0 ] || { echo "tools/debian.sh: ${pkgs[*]} missing and not root: apt-get install -y ${pkgs[*]} as root" >&2; exit 1; }
echo "tools/debian.sh: installing ${pkgs[*]} from Debian..." >&2
export DEBIAN_FRONTEND=noninteractive
# Concurrent test packages may call this at once: one apt at a time.
exec 9>/tmp/rouse-debian-tools.lock
flock 9
if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
for tool in "$@"; do
  case $tool in
  chromium) command -v chromium >/dev/null || { echo "tools/debian.sh: installed chromium, but it is not on PATH" >&2; exit 1; } ;;
  prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null ||
    { echo "tools/debian.sh: installed prometheus, but prometheus or promtool is not on PATH" >&2; exit 1; } ;;
  esac
done
