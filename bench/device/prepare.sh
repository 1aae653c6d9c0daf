#!/usr/bin/env bash
# Build .device/ (git-ignored), what bench/device/run.sh needs on a lent GPU machine that cannot
# reach any package index: wheels of the Python packages its image lacks (for its Python 3.12),
# wrk and its LuaJIT library, and MNIST's four IDX files. About 16 MB; carry it with the call:
#   make device-kit
#   run(command="bash bench/device/run.sh", carry=[".device"], timeout_s=570)
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.device
PY=${PY:-.venv/bin/python}
rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/bin" "$KIT/lib"

# the device image has torch, numpy, pillow, safetensors, httpx, uvloop, prometheus-client, pytest,
# tqdm and matplotlib (/work/.library/device/KINDS.md); the rest at the versions this venv runs,
# with whatever they need for Python 3.12 (pip keeps what the image has where it satisfies them)
want="fastapi uvicorn httptools pydantic pydantic-settings python-multipart orjson"
pins=$("$PY" -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-' | awk -F'==' -v want="$want" '
  BEGIN { n = split(want, w, / /); for (i = 1; i <= n; i++) keep[w[i]] = 1 }
  ($1 in keep) && NF == 2 { print $1 "==" $2 }')
# pyspng: installed here from a local wheel, so freeze gives no version to pin
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
    -d "$KIT/wheels" $pins pyspng 2>&1 | grep -v "^WARNING: Location" || true
[ "$(ls "$KIT/wheels" | wc -l)" -gt 10 ] || { echo "the wheel download failed" >&2; exit 1; }

WRK=$(command -v wrk) || { echo "wrk is not installed here: apt-get install -y wrk" >&2; exit 1; }
cp "$WRK" "$KIT/bin/wrk"
cp -L "$(ldd "$WRK" | awk '/libluajit/ { print $3 }')" "$KIT/lib/"

"$PY" -c "from training.data import ensure_mnist; ensure_mnist('data')"
tar -czf "$KIT/mnist-raw.tar.gz" -C data/MNIST/raw .
du -sh "$KIT"
ls "$KIT/wheels"
