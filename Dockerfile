# The inference service on the shipped weights.
#   docker build -t mnist-autoencoder .
#   docker run --rm -p 8000:8000 mnist-autoencoder
# CPU wheels of torch by default (a few hundred MB instead of several GB); for a CUDA image use
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t mnist-autoencoder:cuda .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MNIST_AE_CHECKPOINT=/app/weights/autoencoder.safetensors

WORKDIR /app

# dependencies first, so code changes do not reinstall torch
COPY pyproject.toml README.md ./
RUN mkdir -p service training \
    && touch service/__init__.py training/__init__.py \
    && pip install --extra-index-url "$TORCH_INDEX" . \
    && pip uninstall -y mnist-autoencoder-service

COPY service ./service
COPY training ./training
COPY weights ./weights
RUN pip install --no-deps . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
