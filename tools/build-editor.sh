#!/usr/bin/env bash
# Rebuild the policy editor's vendored CodeMirror bundle from the npm registry, reproducibly:
# exact versions in tools/editor/package.json, every transitive one in its package-lock.json
# (`npm ci` refuses to drift from it), and esbuild's output is deterministic. Writes
#   api/dashboard/static/vendor/codemirror.js            one minified IIFE, `window.CM`
#   api/dashboard/static/vendor/codemirror.LICENSES.txt  the licence of every bundled package
# Needs node ≥ 18 and npm. The dashboard never loads anything from a CDN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$(dirname "$here")/api/dashboard/static/vendor"
mkdir -p "$out"
cd "$here/editor"
# --ignore-scripts: esbuild's binary comes from its platform package; nothing needs to run.
npm ci --no-audit --no-fund --ignore-scripts
meta=$(mktemp)
trap 'rm -f "$meta"' EXIT
./node_modules/.bin/esbuild entry.js --bundle --minify --format=iife --global-name=CM \
  --target=es2020 --legal-comments=none --metafile="$meta" --log-level=warning \
  --banner:js="/* CodeMirror 6 for clipmod's policy editor; licences: codemirror.LICENSES.txt; rebuilt by tools/build-editor.sh */" \
  --outfile="$out/codemirror.js"
node licenses.mjs "$meta" > "$out/codemirror.LICENSES.txt"
sha256sum "$out/codemirror.js" "$out/codemirror.LICENSES.txt"
