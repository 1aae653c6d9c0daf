#!/usr/bin/env bash
# Points 1 and 5 of the "Performance" issue on a lent GPU, in one call of the `run` tool:
#   make device-kit                                     # here first: builds .device/
#   run(command="bash bench/device/run.sh", carry=[".device"], timeout_s=570)
# About 7 minutes on an H200: the GPU tests, training time-to-quality against the seed loop on
# the GPU, and the service on the GPU against the raw forward there. Everything it writes
# (BENCHMARKS.md with the new sections, plots, logs) lands in $OUT; copy the sections over here
# with `python -m bench.device.collect <files_at>`.
set -uo pipefail
cd "$(dirname "$0")/../.."
KIT=.device
OUT=${OUT:-/tmp/device-out}
STEPS=${STEPS:-"tests train serving"}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu VENV=<a venv with torch> runs the same steps here, as a check of this script
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
started=$(date +%s)
stamp() { echo "== $(( $(date +%s) - started )) s: $*"; }

stamp "setup"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
# the image's python3 is itself a venv holding torch (/opt/torch/.venv): a venv made from it would
# not see torch, so the packages it lacks go into it directly, from the kit (no index is reachable
# there; the machine is thrown away afterwards). VENV=<path> uses another environment instead.
PYBIN=$(dirname "$(command -v python3)")
[ -n "${VENV:-}" ] && PYBIN="$VENV/bin"
"$PYBIN/python3" -m pip install --quiet --no-index --find-links "$KIT/wheels" \
    fastapi uvicorn httptools pydantic pydantic-settings python-multipart orjson pyspng "typing-extensions>=4.14" \
    || { echo "package install failed"; exit 1; }
export PATH="$PYBIN:$PWD/$KIT/bin:$PATH" LD_LIBRARY_PATH="$PWD/$KIT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$PWD" MPLBACKEND=Agg
mkdir -p data/MNIST/raw && tar -xzf "$KIT/mnist-raw.tar.gz" -C data/MNIST/raw
python -c "import torch, fastapi, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'fastapi', fastapi.__version__)"
wrk --version | head -1 || true

status=0
for step in $STEPS; do
    case $step in
    tests)
        stamp "GPU tests"
        MNIST_AE_TEST_GPU_DEVICE=$DEVICE python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -25
        [ "${PIPESTATUS[0]}" = 0 ] || status=1 ;;
    train)
        stamp "training, time to quality, seed loop and project on cuda"
        python -m bench.train_speed --device "$DEVICE" --seeds 0 1 2 || status=1 ;;
    serving)
        stamp "serving on the GPU against the raw forward there"
        python -m bench.serving_gpu --device "$DEVICE" || status=1 ;;
    esac
done
stamp "done (status $status)"
cp BENCHMARKS.md "$OUT/"
mkdir -p "$OUT/plots" && cp bench/plots/*.png "$OUT/plots/" 2>/dev/null
exit $status
