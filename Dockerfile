# Two targets from one file:
#   serve (the default, last below): the service, its runtime dependencies and the shipped weights
#   train: the same dependencies plus training's extra (torchvision, tqdm, matplotlib), and training/
#
#   docker build -t mnist-ae .                                 # torch's CPU wheels
#   docker build --target train -t mnist-ae:train .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t mnist-ae:cuda .
#   docker build --build-arg TORCH_INDEX_URL= -t mnist-ae .    # torch from the normal index (PyPI)
#
# torch comes in a step of its own, from the one index TORCH_INDEX_URL names (--index-url: no
# other index is consulted for it, and nothing else comes from that index); constraints.txt pins
# every version. The dependency layers read only constraints.txt and pyproject.toml, so a change
# to code, docs or weights rebuilds only the last layers. Nothing is pip-installed from the
# sources: the packages are copied as they are, and run from /app.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY constraints.txt pyproject.toml /tmp/build/
# pyproject.toml's runtime dependencies, as a requirements file
RUN python -c "import tomllib; deps = tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['dependencies']; \
open('/tmp/build/serve.txt', 'w').write('\n'.join(deps))" \
    && pip install -c /tmp/build/constraints.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch \
    && pip install -c /tmp/build/constraints.txt -r /tmp/build/serve.txt \
    && rm -rf /tmp/build

FROM base AS train
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY constraints.txt pyproject.toml /tmp/build/
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']; \
open('/tmp/build/train.txt', 'w').write('\n'.join(p['optional-dependencies']['train']))" \
    && pip install -c /tmp/build/constraints.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torchvision \
    && pip install -c /tmp/build/constraints.txt -r /tmp/build/train.txt \
    && rm -rf /tmp/build
COPY service ./service
COPY training ./training
# MNIST and the run's outputs go to volumes at /data and /checkpoints, which start out as these
# folders, the training user's (--out given again after the image's wins)
RUN mkdir /data /checkpoints && chown 10001:10001 /data /checkpoints
ENV MPLCONFIGDIR=/tmp/matplotlib
USER 10001
ENTRYPOINT ["python", "-m", "training", "--data-dir", "/data", "--out", "/checkpoints/run", "--no-progress"]

FROM base AS serve
COPY service ./service
COPY weights ./weights
ENV MNIST_AE_CHECKPOINT=/app/weights/autoencoder.safetensors
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
