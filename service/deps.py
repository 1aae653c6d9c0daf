"""FastAPI dependencies, as ``Annotated`` aliases for route signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.batcher import MicroBatcher
from service.checkpoint import Checkpoint
from service.errors import NotReady
from service.responses import OutputFormat
from service.settings import Settings
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_ready_batcher(request: Request) -> MicroBatcher:
    """The batcher, once the model is loaded and warm; 503 before that and while draining."""
    state = get_state(request)
    if not state.ready or state.batcher is None:
        raise NotReady(f"the model is not ready ({state.status}); retry shortly", headers={"retry-after": "1"})
    return state.batcher


def get_checkpoint(request: Request) -> Checkpoint:
    checkpoint = get_state(request).checkpoint
    if checkpoint is None:
        raise NotReady("the model is not loaded yet", headers={"retry-after": "1"})
    return checkpoint


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BatcherDep = Annotated[MicroBatcher, Depends(get_ready_batcher)]
CheckpointDep = Annotated[Checkpoint, Depends(get_checkpoint)]

ResizeQuery = Annotated[
    bool, Query(description="scale images that are not 28x28 to 28x28 instead of refusing them (422)")
]
FormatQuery = Annotated[
    OutputFormat | None,
    Query(alias="format", description="output format; overrides the Accept header (default: JSON)"),
]
