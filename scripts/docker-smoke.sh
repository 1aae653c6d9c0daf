#!/usr/bin/env bash
# make docker-smoke: the image and the compose stack for real, with Docker (and compose v2).
# Builds both targets, starts the API and waits for healthy, calls /reconstruct, /encode and /decode
# with the example files in JSON, PNG and .npy, checks the user and the read-only root, trains
# with the profile and rolls the checkpoint out, bursts its memory under the compose limits (no OOM
# kill, no restart, peak within 85%), stops it under kept-alive load with `docker compose stop`
# and `docker stop` and counts the requests sent and never answered (at most one per client), and
# tears it all down. Not part of `make test`.
#
# The environment picks the build: TORCH_INDEX_URL (empty: the normal index) and BUILD_NETWORK
# (host, where builds reach the package index only that way), as docker-compose.yml reads them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-mnist-ae-smoke}
export API_PORT=${API_PORT:-18000}
export GRPC_PORT=${GRPC_PORT:-18001}
export MNIST_AE_API_KEY=${MNIST_AE_API_KEY:-smoke-$RANDOM$RANDOM$RANDOM}
URL=http://127.0.0.1:$API_PORT
AUTH="Authorization: Bearer $MNIST_AE_API_KEY"
OUT=$(mktemp -d)
started=$(date +%s)
step() { echo "== $(( $(date +%s) - started )) s: $*"; }
compose() { docker compose --profile train "$@"; }
fail() { echo "FAIL: $*"; compose logs --tail 40 api || true; exit 1; }
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; rm -rf "$OUT"; }
trap cleanup EXIT

step "build both targets (serve, train)"
compose build api train
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^mnist-ae:'

wait_healthy() {  # up to 120 s for the API's health check to pass
    local health
    for _ in $(seq 120); do
        health=$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q api)")
        [ "$health" = healthy ] && return 0
        sleep 1
    done
    fail "the API is $health, not healthy"
}

step "start the API and wait for healthy"
compose up -d api
wait_healthy
step "healthy"

step "the endpoints with the example files"
post() {  # post PATH OUTPUT curl-args...: a 200 whose body is written to OUTPUT
    local path=$1 output=$2; shift 2
    code=$(curl -s -o "$OUT/$output" -w '%{http_code}' -H "$AUTH" "$@" "$URL$path")
    [ "$code" = 200 ] || fail "$path answered $code: $(head -c 300 "$OUT/$output")"
}
post /reconstruct recon.json -H 'Content-Type: application/json' -d @examples/images.json
post '/reconstruct?format=png' recon.png -F file=@examples/seven.png
post /reconstruct recon.npy -H 'Content-Type: application/x-npy' -H 'Accept: application/x-npy' --data-binary @examples/digits.npy
post '/encode?format=npy' latents.npy -H 'Content-Type: image/png' --data-binary @examples/seven.png
post /encode latent.json -F file=@examples/two.png
post '/decode?format=png' decoded.png -H 'Content-Type: application/json' -d @examples/latent.json
post /decode decoded.npy -H 'Content-Type: application/x-npy' -H 'Accept: application/x-npy' --data-binary @"$OUT/latents.npy"
post "/v2/models/mnist-ae/infer" v2.json -H 'Content-Type: application/json' \
    -d '{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28], "data": '"$("$PY" -c 'print([0] * 784)')"'}]}'
for page in / /docs /ui/app.js /docs-assets/swagger-ui-bundle.js; do  # the page and the docs, from the image
    code=$(curl -s -o /dev/null -w '%{http_code}' "$URL$page")
    [ "$code" = 200 ] || fail "GET $page answered $code"
done
"$PY" - "$OUT" <<'PYCHECK' || fail "an answer is not what it should be"
import io, json, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
assert json.loads((out / "recon.json").read_text())["shape"] == [3, 1, 28, 28]
assert json.loads((out / "latent.json").read_text())["shape"] == [1, 16, 7, 7]
for name in ("recon.png", "decoded.png"):
    assert (out / name).read_bytes().startswith(b"\x89PNG"), name
assert np.load(out / "recon.npy").shape == (3, 1, 28, 28)
assert np.load(out / "latents.npy").shape == (1, 16, 7, 7)
assert np.load(out / "decoded.npy").shape == (1, 1, 28, 28)
recon = json.loads((out / "recon.json").read_text())
assert len(recon["anomaly"]) == 3 and recon["anomaly_quantile"] == 0.99, "the shipped model is calibrated"
outputs = {o["name"] for o in json.loads((out / "v2.json").read_text())["outputs"]}
assert outputs == {"latent", "reconstruction", "mse", "novelty", "percentile", "anomaly"}, outputs
print("   answers: JSON, PNG and .npy as expected, with anomaly decisions; the v2 protocol; the page and /docs")
PYCHECK

step "gRPC: the Open Inference Protocol and the health service on the container's gRPC port"
"$PY" - "127.0.0.1:$GRPC_PORT" "$MNIST_AE_API_KEY" <<'PYCHECK' || fail "gRPC"
import sys

import grpc
import numpy as np
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc

target, key = sys.argv[1], sys.argv[2]
client = triton.InferenceServerClient(target)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mnist-ae")
digits = np.load("examples/digits.npy")
images = triton.InferInput("images", list(digits.shape), "UINT8")
images.set_data_from_numpy(digits)
result = client.infer("mnist-ae", [images], headers={"authorization": f"Bearer {key}"})
assert result.as_numpy("reconstruction").shape == (3, 1, 28, 28) and result.as_numpy("anomaly").shape == (3,)
try:
    client.infer("mnist-ae", [images])
    raise AssertionError("answered without the API key")
except triton.InferenceServerException as error:
    assert error.status() == "StatusCode.UNAUTHENTICATED", error.status()
with grpc.insecure_channel(target) as channel:
    check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
    assert check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
print("   ModelInfer with the key, UNAUTHENTICATED without it; health SERVING")
PYCHECK

step "the container's user and its read-only root"
uid=$(compose exec -T api id -u)
[ "$uid" = 10001 ] || fail "the API runs as uid $uid"
if compose exec -T api sh -c 'touch /app/written' 2>/dev/null; then fail "the root filesystem is writable"; fi
compose exec -T api sh -c 'touch /tmp/written' || fail "/tmp is not writable"
echo "   uid $uid, / read-only, /tmp writable"

step "train with the profile"
if [ -d data/MNIST/raw ]; then  # a copy already here (make data) spares the container the download
    compose run --rm -T --no-deps --entrypoint sh -v "$PWD/data/MNIST:/src:ro" train \
        -c 'mkdir -p /data/MNIST && cp -r /src/raw /data/MNIST/'
fi
compose run --rm -T train --epochs 1 --limit 2000
trained=$(compose run --rm -T --entrypoint python train -c \
    "import json; print(json.load(open('/checkpoints/run/autoencoder.json'))['weights_sha256'])")

step "roll the new checkpoint out"
code=$(curl -s -o "$OUT/reload.json" -w '%{http_code}' -X POST -H "$AUTH" -H 'Content-Type: application/json' \
    -d '{"checkpoint": "run"}' "$URL/admin/reload")
[ "$code" = 200 ] || fail "reload answered $code: $(cat "$OUT/reload.json")"
served=$(curl -s -H "$AUTH" "$URL/model" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["checkpoint_sha256"])')
[ "$served" = "$trained" ] || fail "serving $served after the roll-out, not $trained"
echo "   serving the trained checkpoint: $served"

step "a memory burst under the compose limits: no OOM kill, no restart, peak within 85%"
api_id=$(docker inspect -f '{{.Id}}' "$(compose ps -q api)")
cgroup=/sys/fs/cgroup/memory/docker/$api_id                       # cgroup v1
[ -d "$cgroup" ] || cgroup=/sys/fs/cgroup/system.slice/docker-$api_id.scope   # cgroup v2, systemd driver
[ -d "$cgroup" ] || fail "no memory cgroup found for the container"
"$PY" scripts/memory_burst.py "$URL" "$cgroup" > "$OUT/burst.json" || fail "the burst failed"
echo "   $(cat "$OUT/burst.json")"
[ "$(docker inspect -f '{{.State.OOMKilled}} {{.RestartCount}}' "$api_id")" = "false 0" ] || fail "OOM-killed or restarted"
"$PY" - "$OUT/burst.json" <<'PYCHECK' || fail "the burst went past 85% of the memory limit, or was not refused"
import json, sys
result = json.load(open(sys.argv[1]))
assert result["peak_share"] <= 0.85 and result["statuses"].get("200", 0) > 0, result
PYCHECK

# kept-alive clients through a stop: a request sent and never answered counts; a refused
# connection does not (nothing was sent). Docker's port proxy accepts connections on the server's
# behalf until Docker has taken it down, a few hundred ms after the server exited, and drops them:
# those are refused connections in all but name, counted apart by the time the server exited.
# Target: at most one unanswered request per client connection while the server lived.
stop_under_load() {  # $1: what stops the API (a command line)
    "$PY" scripts/drain_load.py "$URL" --clients 8 --seconds 60 > "$OUT/load.json" &
    local load=$! started
    sleep 3
    started=$(date +%s)
    $1
    wait "$load"
    # when the server exited: its last log line ("Finished server process", a few ms before the
    # exit); Docker records its own FinishedAt only once it has taken the port proxy down
    docker logs "$api_id" 2>&1 | grep 'Finished server process' | tail -1 > "$OUT/finished"
    "$PY" - "$OUT/load.json" "$OUT/finished" "$1" <<'PYCHECK' || fail "$1 left requests unanswered"
import json, sys
from datetime import datetime
counts = json.load(open(sys.argv[1]))
exited = datetime.fromisoformat(json.loads(open(sys.argv[2]).read())["ts"]).timestamp()
at = counts.pop("unanswered_at")
lived = sum(t <= exited + 0.015 for t in at)  # the exit's resets reach clients in 3-13 ms, the proxy's drops from 20
summary = {k: v for k, v in counts.items() if k != "unanswered"}
print(f"   {sys.argv[3]}: unanswered while the server lived {lived}, after it exited (the proxy's) {len(at) - lived}; {summary}")
assert counts["ok"] > 0 and counts["error_status"] == 0 and lived <= counts["clients"], counts
PYCHECK
    echo "   $1 took $(( $(date +%s) - started )) s"
    # grep reads all of it (-q would stop at the match, and the logs' SIGPIPE would fail the pipeline)
    compose logs api | grep 'all accepted requests answered' >/dev/null || fail "the API did not report a clean drain"
}

step "docker compose stop under kept-alive load"
stop_under_load "compose stop api"
step "docker stop under kept-alive load"
compose start api
wait_healthy
stop_under_load "docker stop --time 45 $api_id"

step "tear down"
cleanup
trap - EXIT
step "docker smoke passed"
