"""Model outputs -> HTTP responses, in the format the client asked for.

``?format=json|png|npy`` wins (handy in browsers and curl); otherwise the ``Accept`` header
decides, by quality value; with neither, JSON. PNG renders one image as itself, a batch as one
grid, and latent codes as a mosaic of their channels. For /reconstruct the per-image scores (MSE,
novelty, percentile, anomaly) ride in the JSON body, or in ``X-Reconstruction-MSE``, ``X-Novelty``,
``X-Anomaly-Percentile`` and ``X-Anomaly`` headers for PNG and .npy; an error map renders as a
heatmap PNG.
"""

from __future__ import annotations

import enum

import numpy as np
from starlette.responses import Response

from service.codecs.images import heatmap_png_bytes, latent_picture, png_bytes, tile
from service.codecs.npy import npy_bytes
from service.errors import NotAcceptable
from service.http_json import json_response
from service.scoring import Scores
from service.wire import (
    ANOMALY_HEADER,
    MSE_HEADER,
    NOVELTY_HEADER,
    NPY_MEDIA_TYPE,
    PERCENTILE_HEADER,
    QUANTILE_HEADER,
)


class OutputFormat(enum.StrEnum):
    json = "json"
    png = "png"
    npy = "npy"


MEDIA_TYPES = {OutputFormat.json: "application/json", OutputFormat.png: "image/png", OutputFormat.npy: NPY_MEDIA_TYPE}
_BY_MEDIA_TYPE = {media: fmt for fmt, media in MEDIA_TYPES.items()}


def choose_format(requested: OutputFormat | None, accept: str | None) -> OutputFormat:
    """The explicit ``format`` parameter, else the best match in ``Accept``, else JSON."""
    if requested is not None:
        return requested
    if not accept:
        return OutputFormat.json
    best: tuple[float, int, OutputFormat] | None = None
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        media = media.lower()
        if media in _BY_MEDIA_TYPE:
            fmt = _BY_MEDIA_TYPE[media]
        elif media in ("*/*", "application/*"):
            fmt = OutputFormat.json
        elif media == "image/*":
            fmt = OutputFormat.png
        else:
            continue
        # highest quality wins; ties go to the earlier entry
        if best is None or quality > best[0]:
            best = (quality, position, fmt)
    if best is None:
        raise NotAcceptable(
            f"none of Accept: {accept[:200]!r} can be produced; use application/json, image/png or {NPY_MEDIA_TYPE} "
            "(or ?format=json|png|npy)"
        )
    return best[2]


def _score_fields(scores: Scores) -> dict[str, object]:
    return {
        "mse": scores.mse,
        "novelty": scores.novelty,
        "percentile": scores.percentile,
        "anomaly": scores.anomaly,
        "anomaly_quantile": scores.quantile,
    }


def _score_headers(scores: Scores) -> dict[str, str]:
    # Python floats format 2-4x faster than numpy scalars: 190 µs instead of 340 for 256 images
    headers = {MSE_HEADER: ",".join(f"{v:.6g}" for v in scores.mse.tolist())}
    if scores.novelty is not None:
        headers[NOVELTY_HEADER] = ",".join(f"{v:.4g}" for v in scores.novelty.tolist())
    if scores.percentile is not None and scores.anomaly is not None:
        headers[PERCENTILE_HEADER] = ",".join(f"{v:.4g}" for v in scores.percentile.tolist())
        headers[ANOMALY_HEADER] = ",".join("true" if v else "false" for v in scores.anomaly.tolist())
        headers[QUANTILE_HEADER] = f"{scores.quantile:g}"
    return headers


def render_images(
    images: np.ndarray, fmt: OutputFormat, *, scores: Scores | None = None, heatmap: bool = False
) -> Response:
    """(N,1,28,28) float32 -> response; ``scores`` for /reconstruct. ``heatmap``: the images are
    squared errors, drawn as a colour map of the absolute error (their square root) as PNG."""
    headers = _score_headers(scores) if scores is not None and fmt != OutputFormat.json else None
    if fmt is OutputFormat.png:
        pixels = np.sqrt(images[:, 0]) if heatmap else images[:, 0]
        picture = pixels[0] if len(pixels) == 1 else tile(pixels, fill=0.0 if heatmap else 0.5)
        body = heatmap_png_bytes(picture) if heatmap else png_bytes(picture)
        return Response(body, media_type="image/png", headers=headers)
    return _render_array(images, fmt, headers, scores=scores)


def render_latents(latents: np.ndarray, fmt: OutputFormat) -> Response:
    """(N,16,7,7) float32 -> response; as PNG, each code is a mosaic of its 16 channels."""
    if fmt is OutputFormat.png:
        mosaics = np.stack([latent_picture(z) for z in latents])
        picture = mosaics[0] if len(mosaics) == 1 else tile(mosaics)
        return Response(png_bytes(picture), media_type="image/png")
    return _render_array(latents, fmt, None)


def _render_array(
    array: np.ndarray, fmt: OutputFormat, headers: dict[str, str] | None, *, scores: Scores | None = None
) -> Response:
    if fmt is OutputFormat.npy:
        return Response(npy_bytes(array), media_type=NPY_MEDIA_TYPE, headers=headers)
    body: dict[str, object] = {"shape": list(array.shape), "dtype": "float32", "data": array}
    if scores is not None:
        body.update(_score_fields(scores))
    return json_response(body, headers=headers)
