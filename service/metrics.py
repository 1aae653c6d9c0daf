"""Prometheus metrics, in a registry of the app's own (several apps can live in one process).

With several server processes (``python -m service --workers N``) each process writes its values
to files in ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics``, whichever process answers it, adds up
all of them (prometheus_client's multiprocess mode): counters and histograms are sums over the
workers, the gauges too (requests in flight, queued images, ready workers). Per-process
collectors (memory, CPU, garbage collections) only make sense for one process, so they are left
out then.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output and nobody graphs them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# per-image reconstruction MSE: the shipped model's normal digits lie around 0.001-0.006 (p99 about
# 0.008), foreign inputs from 0.02 (inverted digits, noise) to 0.9 (an all-white image)
MSE_BUCKETS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015, 0.02, 0.05, 0.1, 0.2, 0.5)
# per-image novelty (log-odds of "not a digit"): the shipped model's test digits have a median of -4.8
# and a p99 of about 2.6; letters spread from about -10 to +10, strokes and noise lie higher
NOVELTY_BUCKETS = (-12.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, 12.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # what /metrics renders
        r: CollectorRegistry | None = self.registry
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]  # every worker's files; this process's values are among them
            r = None  # so the metrics below are not rendered a second time from this process alone
        else:
            # what operators expect beside the service's own: resident memory, CPU seconds, open files and
            # start time of the process, the interpreter's version and its garbage collections
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.requests = Counter(
            "mnist_ae_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mnist_ae_http_request_duration_seconds",
            "Time to answer a request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mnist_ae_http_requests_in_flight", "Requests being handled now", registry=r, multiprocess_mode="livesum"
        )
        self.batch_images = Histogram(
            "mnist_ae_batch_size_images",
            "Images (or latents) per forward pass",
            ["op"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "mnist_ae_queue_wait_seconds",
            "Per batch: how long its oldest request waited in the queue",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "mnist_ae_inference_duration_seconds",
            "Time of one forward pass",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "mnist_ae_images_processed", "Images or latents run through the model", ["op"], registry=r
        )
        self.batch_failures = Counter("mnist_ae_batch_failures", "Forward passes that raised", ["op"], registry=r)
        self.queue_images = Gauge(
            "mnist_ae_queue_images", "Images waiting for a forward pass", registry=r, multiprocess_mode="livesum"
        )
        self.ready = Gauge(
            "mnist_ae_ready",
            "Server processes whose model is loaded and warm (1 with one process)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.reconstruction_mse = Histogram(
            "mnist_ae_reconstruction_mse",
            "Per image reconstructed by a model without a novelty head: its MSE, the decision score",
            buckets=MSE_BUCKETS,
            registry=r,
        )
        self.novelty = Histogram(
            "mnist_ae_novelty",
            "Per image reconstructed by a model with a novelty head: its novelty, the decision score",
            buckets=NOVELTY_BUCKETS,
            registry=r,
        )
        self.anomalies = Counter(
            "mnist_ae_anomalies_flagged",
            "Images /reconstruct flagged as anomalies (at each request's quantile)",
            registry=r,
        )
        self.reloads = Counter(
            "mnist_ae_model_reloads", "Model roll-outs by outcome (loaded, refused)", ["outcome"], registry=r
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; the labelled children are cached (``labels()`` is slow)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_scores(self, mse: np.ndarray, novelty: np.ndarray | None, anomaly: np.ndarray | None) -> None:
        """Each reconstructed image's decision score: its novelty, or its MSE for a model without a
        novelty head (novelty None); and how many images were flagged (anomaly None: uncalibrated).
        One histogram per image, not both: each observation is a Python call under the GIL, and a
        second one cost 5% of the 256-image throughput (docs/decisions.md)."""
        histogram, values = (self.reconstruction_mse, mse) if novelty is None else (self.novelty, novelty)
        for value in values.tolist():
            histogram.observe(value)
        if anomaly is not None and (flagged := int(anomaly.sum())):
            self.anomalies.inc(flagged)

    def render(self) -> bytes:
        return generate_latest(self.registry)
