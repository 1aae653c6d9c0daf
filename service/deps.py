"""FastAPI dependencies, as ``Annotated`` aliases for route signatures.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool,
which would cost every request a thread hop for what is an attribute lookup. The inference
routes' two query parameters are parsed here by hand, in one dependency, rather than declared
as ``Query`` parameters: FastAPI's per-parameter validation cost more than decoding the PNG.
``service.openapi`` documents them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.checkpoint import Checkpoint
from service.errors import InvalidInput, NotReady
from service.responses import OutputFormat, choose_format
from service.settings import Settings
from service.state import ServiceState, Serving


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def get_state(request: Request) -> ServiceState:
    return _state(request)


async def get_settings(request: Request) -> Settings:
    return _state(request).settings


async def get_serving(request: Request) -> Serving:
    """Batcher, settings and model config, once the model is loaded and warm; 503 before that and while draining."""
    state = _state(request)
    if not state.ready or state.serving is None:
        raise NotReady(f"the model is not ready ({state.status}); retry shortly", headers={"retry-after": "1"})
    return state.serving


async def get_checkpoint(request: Request) -> Checkpoint:
    checkpoint = _state(request).checkpoint
    if checkpoint is None:
        raise NotReady("the model is not loaded yet", headers={"retry-after": "1"})
    return checkpoint


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServingDep = Annotated[Serving, Depends(get_serving)]
CheckpointDep = Annotated[Checkpoint, Depends(get_checkpoint)]

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


@dataclass(frozen=True)
class CallOptions:
    output: OutputFormat  # from ?format=, else the Accept header, else JSON
    resize: bool  # ?resize=true: scale images that are not 28x28 instead of refusing them


async def get_call_options(request: Request) -> CallOptions:
    params = request.query_params
    requested = params.get("format")
    if requested is not None and requested not in OutputFormat.__members__:
        raise InvalidInput(f"query parameter format must be one of json, png, npy; got {requested[:40]!r}")
    resize = params.get("resize", "false").lower()
    if resize not in _TRUE | _FALSE:
        raise InvalidInput(f"query parameter resize must be true or false; got {resize[:40]!r}")
    output = choose_format(OutputFormat(requested) if requested else None, request.headers.get("accept"))
    return CallOptions(output=output, resize=resize in _TRUE)


CallOptionsDep = Annotated[CallOptions, Depends(get_call_options)]
