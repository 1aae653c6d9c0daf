"""FastAPI dependencies, as ``Annotated`` aliases for route signatures.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool,
which would cost every request a thread hop for what is an attribute lookup.

The inference routes take everything they need from one dependency, :func:`get_inference_call`:
the API-key check, readiness, and the two query parameters, parsed by hand. Each dependency
FastAPI resolves costs a few microseconds of its machinery, and per-parameter validation more;
together that was more than decoding the PNG (see BENCHMARKS.md). ``service.openapi``
documents the parameters and the security scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.access import check_api_key
from service.batcher import MicroBatcher
from service.checkpoint import Checkpoint
from service.errors import InvalidInput, NotReady
from service.model import ModelConfig
from service.responses import OutputFormat, choose_format
from service.settings import Settings
from service.state import ServiceState


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def get_state(request: Request) -> ServiceState:
    return _state(request)


async def get_checkpoint(request: Request) -> Checkpoint:
    checkpoint = _state(request).checkpoint
    if checkpoint is None:
        raise NotReady("the model is not loaded yet", headers={"retry-after": "1"})
    return checkpoint


StateDep = Annotated[ServiceState, Depends(get_state)]
CheckpointDep = Annotated[Checkpoint, Depends(get_checkpoint)]

_TRUE = {"true", "1", "yes", "on"}
_BOOLEAN_WORDS = _TRUE | {"false", "0", "no", "off"}


@dataclass(frozen=True)
class InferenceCall:
    """What an inference route needs for one request."""

    batcher: MicroBatcher
    settings: Settings
    config: ModelConfig
    output: OutputFormat  # from ?format=, else the Accept header, else JSON
    resize: bool  # ?resize=true: scale images that are not 28x28 instead of refusing them


def inference_call(request: Request, state: ServiceState) -> InferenceCall:
    """401 without the API key (when one is set), 503 until the model is warm, 422 for bad parameters."""
    check_api_key(request, state.settings.api_key)
    serving = state.serving
    if not state.ready or serving is None:
        raise NotReady(f"the model is not ready ({state.status}); retry shortly", headers={"retry-after": "1"})
    params = request.query_params
    requested = params.get("format")
    if requested is not None and requested not in OutputFormat.__members__:
        raise InvalidInput(f"query parameter format must be one of json, png, npy; got {requested[:40]!r}")
    resize = params.get("resize", "false").lower()
    if resize not in _BOOLEAN_WORDS:
        raise InvalidInput(f"query parameter resize must be true or false; got {resize[:40]!r}")
    output = choose_format(OutputFormat(requested) if requested else None, request.headers.get("accept"))
    return InferenceCall(serving.batcher, serving.settings, serving.config, output, resize in _TRUE)


async def get_inference_call(request: Request) -> InferenceCall:
    return inference_call(request, _state(request))


InferenceCallDep = Annotated[InferenceCall, Depends(get_inference_call)]
