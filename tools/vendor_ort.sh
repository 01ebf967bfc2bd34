#!/usr/bin/env bash
# Vendors the files of onnxruntime-web that the page needs into explainer/ui/static/ort/ (committed: the app
# downloads nothing at run time). Needs npm and network access once; the app and its tests need neither.
#
#   bash tools/vendor_ort.sh            # onnxruntime-web 1.30.0, checked against its published integrity
#
# The page loads ort.wasm.min.mjs (the plain WebAssembly backend, no WebGPU/WebGL), which loads the Emscripten
# glue ort-wasm-simd-threaded.mjs and the runtime ort-wasm-simd-threaded.wasm from the same folder.
set -euo pipefail
VERSION=1.30.0
INTEGRITY="sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="  # npm view onnxruntime-web@1.30.0 dist.integrity
FILES=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/explainer/ui/static/ort"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack "onnxruntime-web@$VERSION" --json > pack.json
TARBALL="onnxruntime-web-$VERSION.tgz"
GOT="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [ "$GOT" != "$INTEGRITY" ]; then echo "integrity mismatch: $GOT" >&2; exit 1; fi
tar xzf "$TARBALL"
mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  cp "package/dist/$f" "$DEST/$f"
done
echo "onnxruntime-web $VERSION -> $DEST"
(cd "$DEST" && ls -l "${FILES[@]}" && sha256sum "${FILES[@]}")
