#!/usr/bin/env bash
# tools/traefik/prepare.sh — run by tools/ensure.sh before it builds Traefik: makes ./lego,
# the module go.mod replaces github.com/go-acme/lego/v5 with (not in git).
#
# Why: lego's DNS-provider table (providers/dns/zz_gen_dns_providers.go), which Traefik's
# ACME provider imports, imports all ~220 DNS providers, and the SDKs of a dozen of them
# (huaweicloud, ucloud, oci, tencentcloud, ...) are not served by this machine's Go module
# proxy, so Traefik does not build as published. ./lego is lego at the version go.mod
# requires, from the module proxy and checked against the hash below (the one sum.golang.org
# has), without the provider packages and with legodns/zz_gen_dns_providers.go as the table:
# the Traefik built has no ACME DNS-01 challenge (a benchmark peer does not use it); every
# other package is Traefik's and lego's own.
set -euo pipefail
cd "$(dirname "$0")"
mod=github.com/go-acme/lego/v5
version=$(awk -v m="$mod" '$1 == "require" { $1 = ""; $0 = $0 } $1 == m && $2 ~ /^v/ { print $2; exit }' go.mod)
want_sum="h1:Jt6xAP9xQrJ3SLLGgxejfDDd3pzdrmuLCWe4oTqHHQc="
[ "$version" = v5.4.1 ] || { echo "tools/traefik: go.mod requires $mod $version; update prepare.sh's hash for it" >&2; exit 1; }
info=$(cd "${TMPDIR:-/tmp}" && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$mod@$version")
dir=$(printf '%s' "$info" | awk -F'"' '$2 == "Dir" { print $4 }')
sum=$(printf '%s' "$info" | awk -F'"' '$2 == "Sum" { print $4 }')
[ "$sum" = "$want_sum" ] || { echo "tools/traefik: $mod@$version has hash $sum, want $want_sum" >&2; exit 1; }
rm -rf lego lego.tmp
cp -r "$dir" lego.tmp
chmod -R u+w lego.tmp
find lego.tmp/providers/dns -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
rm -f lego.tmp/providers/dns/*.go
cp legodns/zz_gen_dns_providers.go lego.tmp/providers/dns/
mv lego.tmp lego
