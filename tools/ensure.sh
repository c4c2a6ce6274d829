#!/usr/bin/env bash
# tools/ensure.sh NAME VERSION — make bin/NAME a NAME of VERSION.
# tools/NAME/go.mod is a module of its own that pins the tool: its `tool` directive whose path
# ends in /NAME is the package built, and the module providing it must be required at
# vVERSION (so the Makefile's version and go.mod cannot drift apart).
# Order: a binary already built for VERSION in the cache; for nomad and consul, one of the
# same minor version on PATH (a linter is used only at its exact version: its findings change
# between releases); else build it from the Go module proxy with tools/NAME/go.mod (about
# 4 minutes on 2 cores for nomad or consul; traefik, built only by `make bench-gateway`, took
# 12 minutes on a busy machine). Built binaries are cached by version outside the work tree,
# so a second run — or a fresh clone on the same machine — does nothing.
set -euo pipefail
name=$1 version=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ROUSE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rouse/tools}
out="$cache/$name-$version"
mkdir -p "$root/bin" "$cache"
link() { ln -sfn "$1" "$root/bin/$name"; }

if [ -x "$out" ]; then link "$out"; exit 0; fi

case $name in
nomad | consul)
  minor=${version%.*}
  path_without_bin=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$root/bin" | paste -sd: -)
  if found=$(PATH=$path_without_bin command -v "$name" 2>/dev/null); then
    if "$found" version 2>/dev/null | head -n1 | grep -q "v$minor\."; then
      echo "using $found ($("$found" version | head -n1))"
      link "$found"; exit 0
    fi
  fi
  ;;
esac

gomod="$root/tools/$name/go.mod"
[ -f "$gomod" ] || { echo "tools: $gomod is missing" >&2; exit 1; }
# The package: the `tool` line ending in /NAME (or equal to NAME's module path).
pkg=$(awk -v n="$name" '$1 == "tool" && ($2 ~ ("/" n "$")) { print $2; exit }' "$gomod")
[ -n "$pkg" ] || { echo "tools: $gomod has no \`tool …/$name\` directive" >&2; exit 1; }
# The module that provides it (the longest required path that is pkg or a prefix of it), and
# its version in go.mod.
have=$(awk -v p="$pkg" '
  $1 == "require" && $2 != "(" { $1 = "" ; $0 = $0 }
  NF >= 2 && $2 ~ /^v[0-9]/ && (p == $1 || index(p, $1 "/") == 1) && length($1) > best { best = length($1); v = $2 }
  END { print v }' "$gomod")
if [ "$have" != "v$version" ]; then
  echo "tools: $gomod requires ${pkg}'s module at ${have:-no version}, not v$version (update go.mod or the Makefile)" >&2
  exit 1
fi

command -v go >/dev/null || { echo "tools: go is not installed; rouse needs go 1.26 to build $name" >&2; exit 1; }
echo "tools: building $name v$version ($pkg) from the Go module proxy..."
start=$(date +%s)
# tools/NAME/prepare.sh, when present, readies what tools/NAME/go.mod's directory replaces
# point to (traefik: a copy of lego without the DNS providers the proxy cannot serve).
if [ -x "$root/tools/$name/prepare.sh" ]; then "$root/tools/$name/prepare.sh"; fi
(cd "$root/tools/$name" && go build -trimpath -o "$out.tmp" "$pkg")
mv "$out.tmp" "$out"
link "$out"
echo "tools: $name v$version built in $(( $(date +%s) - start ))s -> $out"
