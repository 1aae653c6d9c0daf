"""The Open Inference Protocol (KServe v2, REST): its inference request and response, as arrays.

An inference request is a JSON object, optionally followed by raw tensor bytes (the binary tensor
data extension: the ``Inference-Header-Content-Length`` header says where the JSON ends, and each
input with ``parameters.binary_data_size`` takes its bytes from what follows, in order).
:func:`read_request` turns one into a checked array and what the client asked for (through
:func:`check_inference`, which the gRPC front door, service/oip_grpc/, shares);
:func:`render_response` turns the model's outputs back into the protocol's JSON, each output as
JSON data or as binary, as asked. Errors are the service's own (service/errors.py); under /v2
they are answered in the protocol's shape, ``{"error": "..."}``, a 422 as the protocol's 400.

The model takes one input:
- ``images``: UINT8 (0..255) or FP32 ([0,1]), shape [N,28,28] or [N,1,28,28];
- ``latents``: FP32, shape [N,16,7,7] (the checkpoint's latent shape).
Images give ``latent``, ``reconstruction``, ``mse``, with a novelty head ``novelty``, and with a
calibrated checkpoint ``percentile`` and ``anomaly``; latents give ``reconstruction``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from service.calibration import MAX_QUANTILE, MIN_QUANTILE
from service.codecs.arrays import images_from_array, latents_from_array
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge
from service.schemas import describe_errors

MODEL_NAME = "mnist-ae"
HEADER_LENGTH = "inference-header-content-length"
DTYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4"), "BOOL": np.dtype(np.bool_)}
IMAGE_OUTPUTS = ("latent", "reconstruction", "mse", "novelty", "percentile", "anomaly")
LATENT_OUTPUTS = ("reconstruction",)
HEAD_ONLY = ("novelty",)  # a model without a novelty head does not compute it
CALIBRATED_ONLY = ("percentile", "anomaly")
MAX_JSON_ELEMENTS = 1024 * 28 * 28  # JSON tensor data beyond what the largest request can hold is refused


# --- the request's JSON --------------------------------------------------------------------------

Scalar = StrictBool | StrictInt | float | str


class TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_size: Annotated[int, Field(ge=0)] | None = None
    binary_data: bool | None = None


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    shape: list[Annotated[int, Field(ge=0, le=1 << 24)]] = Field(min_length=1, max_length=8)
    datatype: str = Field(max_length=16)
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(None, description="row-major, flat or nested; absent with binary_data_size")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    parameters: TensorParameters | None = None


class InferenceRequest(BaseModel):
    """The protocol's ``$inference_request``; ``parameters.anomaly_quantile`` sets the threshold."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Scalar] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=8)
    outputs: list[RequestOutput] | None = Field(None, max_length=8)


# --- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inference:
    """What a checked request asks for."""

    id: str | None
    kind: str  # "images" or "latents"
    array: np.ndarray  # (N,28,28) float32 in [0,1], or (N,16,7,7) float32
    outputs: dict[str, bool]  # name -> as binary, in the order to answer them
    quantile: float | None


@dataclass(frozen=True)
class ModelLimits:
    """What the served model takes and answers: the checks every front door applies."""

    image_size: int
    latent_shape: tuple[int, int, int]
    max_items: int  # images or latents in one request
    novelty: bool  # it has a novelty head
    calibrated: bool  # it can answer percentiles and decisions


def read_request(body: bytes, header_length: str | None, model: ModelLimits) -> Inference:
    """Parse and check a REST request body (JSON, then any binary tensor data) for ``model``."""
    json_part, binary = _split(body, header_length)
    try:
        request = InferenceRequest.model_validate_json(json_part)
    except ValidationError as exc:
        problems = describe_errors(exc.errors(include_url=False, include_input=False))
        raise MalformedBody(f"invalid inference request: {problems}") from None
    check_input_names([i.name for i in request.inputs])
    tensor = request.inputs[0]
    parameters = request.parameters or {}
    all_binary = parameters.get("binary_data_output") is True
    requested = None
    if request.outputs is not None:
        requested = {}
        for output in request.outputs:
            asked = output.parameters.binary_data if output.parameters else None
            requested[output.name] = all_binary if asked is None else asked
    return check_inference(
        request.id,
        tensor.name,
        tensor.datatype,
        _tensor(tensor, binary),
        requested,
        parameters,
        default_binary=all_binary,
        model=model,
    )


def check_input_names(names: list[str]) -> None:
    """The model takes one input, ``images`` or ``latents``."""
    if len(names) != 1 or names[0] not in ("images", "latents"):
        raise InvalidInput(f"expected one input, named 'images' or 'latents'; got {names}")


def check_inference(
    request_id: str | None,
    name: str,
    datatype: str,
    array: np.ndarray,
    requested: dict[str, bool] | None,
    parameters: dict[str, Scalar],
    *,
    default_binary: bool,
    model: ModelLimits,
) -> Inference:
    """One decoded input tensor (``array`` of the shape the request declared), the outputs asked for
    (name -> as binary; None: every output the model produces, each ``default_binary``) and the
    request's parameters -> a checked :class:`Inference`. Shared by the REST and gRPC front doors."""
    if name == "images":
        if datatype not in ("UINT8", "FP32"):
            raise InvalidInput(f"input 'images' has datatype {datatype}; expected UINT8 or FP32")
        side = model.image_size
        if array.shape[1:] not in ((side, side), (1, side, side)):
            raise InvalidInput(
                f"input 'images' has shape {list(array.shape)}; expected [N,{side},{side}] or [N,1,{side},{side}]"
            )
        checked = images_from_array(array, size=side, resize=False, max_images=model.max_items)
        missing = (() if model.novelty else HEAD_ONLY) + (() if model.calibrated else CALIBRATED_ONLY)
        available = tuple(o for o in IMAGE_OUTPUTS if o not in missing)
    else:
        if datatype != "FP32":
            raise InvalidInput(f"input 'latents' has datatype {datatype}; expected FP32")
        if array.ndim != 4:
            dims = ",".join(map(str, model.latent_shape))
            raise InvalidInput(f"input 'latents' has shape {list(array.shape)}; expected [N,{dims}]")
        checked = latents_from_array(array, latent_shape=model.latent_shape, max_latents=model.max_items)
        available = LATENT_OUTPUTS
    if requested is None:  # the protocol's default: every output the model produces
        outputs = dict.fromkeys(available, default_binary)
    else:
        for output in requested:
            if output not in available:
                why = ""
                if output in HEAD_ONLY:
                    why = " (the model has no novelty head)"
                elif output in CALIBRATED_ONLY:
                    why = " (the checkpoint has no anomaly calibration)"
                raise InvalidInput(
                    f"unknown output '{output}' for input '{name}'{why}; available: {', '.join(available)}"
                )
        outputs = requested
    return Inference(request_id, name, checked, outputs, _quantile(parameters, model.calibrated))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length[:20]!r} does not fit a body of {len(body)} bytes"
        )
    cut = int(header_length)
    return body[:cut], body[cut:]


def _tensor(tensor: RequestInput, binary: bytes) -> np.ndarray:
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"input '{tensor.name}' has datatype {tensor.datatype}; expected UINT8 or FP32")
    count = math.prod(tensor.shape)
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if tensor.data is not None:
            raise InvalidInput(f"input '{tensor.name}' has both data and binary_data_size")
        needed = count * dtype.itemsize
        if size != len(binary) or size != needed:
            raise InvalidInput(
                f"input '{tensor.name}': binary_data_size {size}, {len(binary)} bytes after the "
                f"JSON; shape {tensor.shape} of {tensor.datatype} needs {needed}"
            )
        return np.frombuffer(binary, dtype=dtype).reshape(tensor.shape)
    if binary:
        raise InvalidInput("binary data follows the JSON but no input declares binary_data_size")
    if tensor.data is None:
        raise InvalidInput(f"input '{tensor.name}' has no data")
    if count > MAX_JSON_ELEMENTS:
        raise PayloadTooLarge(f"input '{tensor.name}' of shape {tensor.shape} is over the limit of a request")
    try:
        flat = np.asarray(tensor.data, dtype=np.float64 if dtype.kind == "f" else np.int64).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input '{tensor.name}': data must be numbers, flat or nested row-major") from None
    if flat.size != count:
        raise InvalidInput(f"input '{tensor.name}': {flat.size} values for shape {tensor.shape} ({count})")
    if dtype == np.uint8 and flat.size and (flat.min() < 0 or flat.max() > 255):
        raise InvalidInput(f"input '{tensor.name}': UINT8 values must be 0..255")
    return flat.astype(dtype).reshape(tensor.shape)


def _quantile(parameters: dict[str, Scalar], calibrated: bool) -> float | None:
    value = parameters.get("anomaly_quantile")
    if value is None:
        return None
    if not calibrated:
        raise InvalidInput("parameter anomaly_quantile: the model being served has no anomaly calibration")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_QUANTILE <= value <= MAX_QUANTILE:
        raise InvalidInput(f"parameter anomaly_quantile must be a number in [{MIN_QUANTILE}, {MAX_QUANTILE}]")
    return float(value)


# --- writing ----------------------------------------------------------------------------------------

_DATATYPE_OF = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL"}


def render_response(inference: Inference, outputs: dict[str, np.ndarray], version: str) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary outputs follow it."""
    described, blobs = [], []
    for name, as_binary in inference.outputs.items():
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": _DATATYPE_OF[array.dtype], "shape": list(array.shape)}
        if as_binary:
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1)
        described.append(entry)
    header = {"model_name": MODEL_NAME, "model_version": version, "outputs": described}
    if inference.id is not None:
        header["id"] = inference.id
    json_part = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return json_part, None
    return json_part + b"".join(blobs), len(json_part)
