# One command to set up and test, one to train; the venv lives in .venv/ in the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs
ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000
SOURCES := service training tests bench scripts examples

.PHONY: setup serve test test-fast docker-smoke lint typecheck protos train evaluate data bench-deps bench device-kit clean

setup: $(STAMP)

# re-install when the dependencies change; torch comes from the ranges in pyproject.toml; the
# service's own dependencies, training's extra and the development tools, so every target works
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train,dev]'
	touch $(STAMP)

serve: setup
	$(PY) -m service --host $(HOST) --port $(PORT)

# everything: lint, format, types (service/ and training/ strict, tests/ checked), unit and in-process tests, and the integration tests (real uvicorn
# processes, the real MNIST set, training, schemathesis, the bench smoke tests); what CI runs
test: setup
	$(PY) -m ruff check $(SOURCES)
	$(PY) -m ruff format --check $(SOURCES)
	$(PY) -m mypy
	$(PY) -m pytest

# unit and in-process API tests only: offline, about half a minute
test-fast: setup
	$(PY) -m pytest -m "not integration"

# the image and the compose stack for real (needs Docker with compose v2; not part of `make test`);
# MNIST is fetched here first and copied into the training container's volume
docker-smoke: setup data
	PY=$(PY) bash scripts/docker-smoke.sh

# the gRPC messages (service/oip_grpc/), generated from their .proto and checked in: the image needs no
# protoc, and tests/test_grpc.py checks that they are what this generates
protos: setup
	$(PY) -m grpc_tools.protoc -I service/oip_grpc --python_out=service/oip_grpc --pyi_out=service/oip_grpc service/oip_grpc/predict_v2.proto

lint: setup
	$(PY) -m ruff check $(SOURCES)
	$(PY) -m ruff format --check $(SOURCES)

typecheck: setup
	$(PY) -m mypy

data: setup
	$(PY) -c "from training.data import ensure_mnist; print(ensure_mnist('data'))"

train: setup
	$(PY) -m training --out $(OUT) $(ARGS)

evaluate: setup
	$(PY) -m training.evaluate weights/autoencoder.safetensors

# wrk and h2load, the load generators of the serving benchmarks (Debian/Ubuntu, as root)
bench-deps: setup
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nghttp2-client; }

# the issue's figures on this machine, written into BENCHMARKS.md and bench/plots/ (~20 minutes on 2 cores)
bench: bench-deps data
	$(PY) -m bench.serving
	$(PY) -m bench.memory --rounds 8 --trials 3
	$(PY) -m bench.batching
	$(PY) -m bench.train_speed --device cpu --seeds 0 1 2 3 4 --tries 3

# what bench/device/run.sh needs on a lent GPU machine, which reaches no package index (see that script)
device-kit: setup
	PY=$(PY) bash bench/device/prepare.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
