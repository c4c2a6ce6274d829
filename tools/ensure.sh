#!/usr/bin/env bash
# tools/ensure.sh NAME VERSION — make bin/NAME a NAME of VERSION.
# Order: a binary already built for VERSION in the cache; a NAME of the same minor version on
# PATH; else build it from the Go module proxy with tools/NAME/go.mod (about 4 minutes on
# 2 cores). Built binaries are cached by version outside the work tree, so a second run —
# or a fresh clone on the same machine — does nothing.
set -euo pipefail
name=$1 version=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ROUSE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rouse/tools}
out="$cache/$name-$version"
mkdir -p "$root/bin" "$cache"
link() { ln -sfn "$1" "$root/bin/$name"; }

if [ -x "$out" ]; then link "$out"; exit 0; fi

minor=${version%.*}
path_without_bin=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$root/bin" | paste -sd: -)
if found=$(PATH=$path_without_bin command -v "$name" 2>/dev/null); then
  if "$found" version 2>/dev/null | head -n1 | grep -q "v$minor\."; then
    echo "using $found ($("$found" version | head -n1))"
    link "$found"; exit 0
  fi
fi

command -v go >/dev/null || { echo "tools: go is not installed; rouse needs go 1.26 to build $name" >&2; exit 1; }
echo "tools: building $name v$version from the Go module proxy (about 4 minutes on 2 cores)..."
start=$(date +%s)
(cd "$root/tools/$name" && go build -trimpath -o "$out.tmp" "github.com/hashicorp/$name")
mv "$out.tmp" "$out"
link "$out"
echo "tools: $name v$version built in $(( $(date +%s) - start ))s -> $out"
