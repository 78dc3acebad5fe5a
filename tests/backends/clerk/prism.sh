#!/bin/sh
# Install Stoplight Prism (a mock server driven by an OpenAPI spec) into
# tests/backends/clerk/.prism unless it is there already, then print its executable's path.
# The Clerk tests start it on 127.0.0.1 against Clerk's spec; CI runs this first.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix="$here/.prism"
version="${PRISM_VERSION:-5.16.0}"
binary="$prefix/node_modules/.bin/prism"
if [ ! -x "$binary" ]; then
    command -v npm >/dev/null 2>&1 || { echo "prism.sh: npm is not installed" >&2; exit 127; }
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error \
        "@stoplight/prism-cli@$version" >&2
fi
echo "$binary"
