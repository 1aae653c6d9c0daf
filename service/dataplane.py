"""The Open Inference Protocol's dataplane, shared by its two front doors: REST under /v2
(service/routes/v2.py) and gRPC (service/oip_grpc/server.py). Each decodes its wire format into
an :class:`~service.codecs.oip.Inference`, calls these, and encodes what they return; they raise
the service's errors (service/errors.py), which each front door maps to its protocol once.

The model is ``mnist-ae``; its one version is the first 12 hex digits of the served checkpoint's
sha256, so a roll-out shows as a new version and the old one stops answering.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.checkpoint import Checkpoint
from service.codecs.oip import MODEL_NAME, Inference, ModelLimits
from service.errors import NotFound, NotReady
from service.inference import Op
from service.scoring import decide
from service.state import ServiceState

SERVER_NAME = "mnist-ae-service"
EXTENSIONS = ("binary_tensor_data",)


def version_of(checkpoint: Checkpoint) -> str:
    return checkpoint.sha256[:12]


def served_model(state: ServiceState, name: str, version: str | None) -> Checkpoint:
    """The checkpoint being served, if it is the one named (``version`` None or empty: any); NotFound otherwise."""
    checkpoint = state.checkpoint
    if name != MODEL_NAME or checkpoint is None:
        raise NotFound(f"unknown model '{name}'; this server serves '{MODEL_NAME}'")
    if version and version != version_of(checkpoint):
        raise NotFound(f"unknown version '{version}' of '{name}'; serving version {version_of(checkpoint)}")
    return checkpoint


def probe(state: ServiceState, what: str) -> None:
    """Readiness as probes see it: NotReady while loading, and while draining."""
    if not state.routable:
        raise NotReady(f"{what} is {state.status}")


def model_metadata(checkpoint: Checkpoint) -> dict[str, Any]:
    """The protocol's model metadata: name, versions, platform, inputs and outputs."""
    config = checkpoint.config
    latent = [-1, *config.latent_shape]
    outputs = [
        {"name": "latent", "datatype": "FP32", "shape": latent},
        {"name": "reconstruction", "datatype": "FP32", "shape": [-1, *config.image_shape]},
        {"name": "mse", "datatype": "FP32", "shape": [-1]},
    ]
    if config.novelty_channels:
        outputs.append({"name": "novelty", "datatype": "FP32", "shape": [-1]})
    if checkpoint.calibration is not None:
        outputs += [
            {"name": "percentile", "datatype": "FP32", "shape": [-1]},
            {"name": "anomaly", "datatype": "BOOL", "shape": [-1]},
        ]
    return {
        "name": MODEL_NAME,
        "versions": [version_of(checkpoint)],
        "platform": "pytorch",
        # images also as UINT8 (0..255), and as [-1,1,28,28]; latents instead of images give a reconstruction
        "inputs": [
            {"name": "images", "datatype": "FP32", "shape": [-1, config.image_size, config.image_size]},
            {"name": "latents", "datatype": "FP32", "shape": latent},
        ],
        "outputs": outputs,
    }


def model_limits(state: ServiceState) -> ModelLimits:
    """What the model being served takes and answers (call after :meth:`ServiceState.admit`)."""
    assert state.batcher is not None  # admitted: the model is loaded
    predictor = state.batcher.predictor
    config = predictor.config
    return ModelLimits(
        image_size=config.image_size,
        latent_shape=config.latent_shape,
        max_items=state.settings.max_images_per_request,
        novelty=bool(config.novelty_channels),
        calibrated=predictor.calibration is not None,
    )


async def infer(state: ServiceState, inference: Inference) -> dict[str, np.ndarray]:
    """Run a checked request on the micro-batcher; every output the model produced, by name (the
    front door answers those asked for). The decisions are counted in the metrics."""
    assert state.batcher is not None  # admitted: the model is loaded
    if inference.kind == "latents":
        (images,) = await state.batcher.submit(Op.DECODE, inference.array)
        return {"reconstruction": images}
    recon, mse, novelty, percentile, outlying, latents = await state.batcher.submit(Op.ANALYZE, inference.array)
    quantile = state.settings.anomaly_quantile if inference.quantile is None else inference.quantile
    scores = decide(mse, novelty, percentile, outlying, quantile, state.metrics)
    outputs = {"latent": latents, "reconstruction": recon, "mse": mse}
    if scores.novelty is not None:
        outputs["novelty"] = scores.novelty
    if scores.percentile is not None and scores.anomaly is not None:
        outputs |= {"percentile": scores.percentile, "anomaly": scores.anomaly}
    return outputs
