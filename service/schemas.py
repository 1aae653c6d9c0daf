"""Request and response schemas: the JSON wire format, its limits, and the examples in /docs.

JSON request bodies are validated by these models (pydantic's Rust JSON parser, with a
nesting limit and fail-fast lists, so a hostile body costs little). The limits declared
here are hard ceilings of the format; the server's configured limits (settings) are
checked after parsing and are usually lower.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from service.codecs.arrays import LATENT_ABS_LIMIT
from service.codecs.images import png_bytes

MAX_ITEMS = 65536  # images or latents in one JSON body (the configured limit is lower)
MAX_SIDE = 4096  # rows or columns of one nested-list image (28 unless ?resize=true)
MAX_BASE64_CHARS = 8 * 1024 * 1024
# what base64.b64decode(validate=True) accepts: the standard alphabet, padded to whole quads
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

# --- examples: a "1", as a nested list, as base64 PNG, and a latent code --------------------------


def _example_digit() -> np.ndarray:
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[5:23, 13:15] = 1.0  # a vertical stroke
    digit[6:9, 11:13] = 0.6  # and its flag
    return digit


EXAMPLE_DIGIT = _example_digit()
EXAMPLE_PIXELS: Any = EXAMPLE_DIGIT.round(3).tolist()
EXAMPLE_PNG_BASE64 = base64.b64encode(png_bytes(EXAMPLE_DIGIT)).decode()
EXAMPLE_LATENT: Any = np.full((16, 7, 7), 0.5, dtype=np.float32).tolist()

# --- requests --------------------------------------------------------------------------------------

# the schema states the ranges that the codecs check (service/codecs/arrays.py), once, over whole arrays
UnitFloat = Annotated[
    float,
    Field(
        strict=True,
        allow_inf_nan=False,
        description="intensity in [0,1]",
        json_schema_extra={"minimum": 0, "maximum": 1},
    ),
]
PixelRow = Annotated[list[UnitFloat], Field(min_length=1, max_length=MAX_SIDE, fail_fast=True)]
PixelImage = Annotated[
    list[PixelRow],
    Field(min_length=1, max_length=MAX_SIDE, fail_fast=True, description="28 rows of 28 intensities in [0,1]"),
]
Base64Image = Annotated[
    str,
    Field(
        min_length=4,
        max_length=MAX_BASE64_CHARS,
        description="base64 of an encoded image (PNG, JPEG, ...)",
        json_schema_extra={"pattern": BASE64_PATTERN},
    ),
]


def _image_kind(value: Any) -> str:
    return "base64" if isinstance(value, str) else "pixels"


ImageItem = Annotated[
    Annotated[Base64Image, Tag("base64")] | Annotated[PixelImage, Tag("pixels")],
    Discriminator(_image_kind),
]


class ImagesRequest(BaseModel):
    """``{"images": [...]}``: each item a 28x28 nested list in [0,1], or a base64-encoded image."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"images": [EXAMPLE_PIXELS]}, {"images": [EXAMPLE_PNG_BASE64]}]},
    )

    images: list[ImageItem] = Field(min_length=1, max_length=MAX_ITEMS, fail_fast=True)


LatentFloat = Annotated[
    float,
    Field(
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"minimum": -LATENT_ABS_LIMIT, "maximum": LATENT_ABS_LIMIT},
    ),
]
LatentRow = Annotated[list[LatentFloat], Field(min_length=1, max_length=1024, fail_fast=True)]
LatentChannel = Annotated[list[LatentRow], Field(min_length=1, max_length=1024, fail_fast=True)]
Latent = Annotated[list[LatentChannel], Field(min_length=1, max_length=1024, fail_fast=True)]
LatentBatch = Annotated[list[Latent], Field(min_length=1, max_length=MAX_ITEMS, fail_fast=True)]


def _latent_rank(value: Any) -> str:
    """(N,16,7,7) has one more level of lists than (16,7,7)."""
    probe, depth = value, 0
    while isinstance(probe, list) and probe:
        probe, depth = probe[0], depth + 1
    return "batch" if depth >= 4 else "single"


class LatentsRequest(BaseModel):
    """``{"latents": ...}``: one (16,7,7) code or a batch (N,16,7,7), as nested lists of numbers."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"latents": EXAMPLE_LATENT}]})

    latents: Annotated[
        Annotated[LatentBatch, Tag("batch")] | Annotated[Latent, Tag("single")],
        Discriminator(_latent_rank),
    ]


_UNION_TAGS = {"base64", "pixels", "batch", "single"}  # the unions' tags above: not part of a path


def describe_errors(errors: Sequence[Mapping[str, Any]], prefix: str = "", limit: int = 3) -> str:
    """pydantic's validation errors in one line: ``images[0][3]: Input should be ...; ...``."""
    parts = []
    for err in errors[:limit]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"] if p not in _UNION_TAGS)
        parts.append(f"{prefix}{where.lstrip('.') or 'body'}: {err['msg']}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


# --- responses -------------------------------------------------------------------------------------


class TensorResponse(BaseModel):
    """A float32 tensor as nested lists, with its shape."""

    shape: list[int] = Field(examples=[[1, 1, 28, 28]])
    dtype: Literal["float32"] = "float32"
    data: list[Any] = Field(description="nested lists of numbers, shaped as `shape`")


class ReconstructResponse(TensorResponse):
    mse: list[float] = Field(
        description="per image: mean squared error per pixel between input and reconstruction, on [0,1]; "
        "high for what the model cannot redraw (noise, inverted or white images), low for anything drawn "
        "with pen strokes, letters included",
        examples=[[0.0021]],
    )
    novelty: list[float] | None = Field(
        description="per image: the log-odds, by the model's novelty head, that the image is not a digit "
        "(docs/anomaly.md); the decision score; null when the model has no novelty head",
        examples=[[-9.3]],
    )
    percentile: list[float] | None = Field(
        description="per image: the share of normal images (held out from training) whose decision score (the "
        "novelty, or the MSE for a model without a head) was lower, 0..100; null when the checkpoint has no "
        "calibration",
        examples=[[41.7]],
    )
    anomaly: list[bool] | None = Field(
        description="per image: true when its percentile is above 100 x anomaly_quantile, or its MSE lies "
        "outside the range of every normal image's; null when uncalibrated",
        examples=[[False]],
    )
    anomaly_quantile: float | None = Field(
        description="the threshold behind `anomaly`: ?anomaly_quantile= or the server's default; "
        "null when uncalibrated",
        examples=[0.99],
    )


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["images[0]: image is 32x32, expected 28x28; add ?resize=true to scale it"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    status: Literal["ready", "loading", "draining"]


class ReloadResponse(BaseModel):
    """What a roll-out did: the checkpoint now served, and the one before it."""

    checkpoint: str
    sha256: str
    previous_sha256: str
    warmup_s: float


class ModelInfo(BaseModel):
    architecture: dict[str, Any]
    parameters: int
    checkpoint: str
    checkpoint_sha256: str
    metrics: dict[str, Any] = Field(description="recorded on the test set when the checkpoint was trained")
    training: dict[str, Any]
    created_at: str | None
    device: str
    input_shape: list[int] = Field(examples=[[1, 28, 28]])
    latent_shape: list[int] = Field(examples=[[16, 7, 7]])
    calibration: dict[str, Any] | None = Field(
        description="the anomaly calibration: quantiles of the normal images' scores (overall and per digit), the "
        "digits that count as normal, the decision score and its threshold in force; null when the checkpoint "
        "has none"
    )
    versions: dict[str, str]
    batching: dict[str, float]
