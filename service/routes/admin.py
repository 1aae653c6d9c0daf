"""POST /admin/reload: roll out a checkpoint without downtime (service/reload.py).

It needs the API key, so it exists only when one is configured (403 otherwise): an operator
without one sends the process SIGHUP instead.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from service.access import require_api_key
from service.deps import StateDep
from service.errors import Conflict, Forbidden
from service.reload import allowed_path, reload_model
from service.schemas import ErrorResponse, ReloadResponse

router = APIRouter(tags=["operations"])


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # a file name: no NUL or other control characters
        examples=["run-2026-12-01/autoencoder.safetensors"],
        description="a checkpoint in MNIST_AE_CHECKPOINT_DIR (its file, its .json or its directory); "
        "omitted: the configured MNIST_AE_CHECKPOINT, read again",
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON body",
        401: "missing or wrong API key",
        403: "no API key configured, or a checkpoint outside MNIST_AE_CHECKPOINT_DIR",
        404: "no checkpoint by that name: the old one serves on",
        409: "one of several worker processes (--workers): send SIGHUP to their supervisor instead",
        422: "a body that is not as described, or a checkpoint that is tampered with, of another architecture or "
        "not finite: the old one serves on",
        503: "the model is not loaded yet, or the server is draining",
    }.items()
}


@router.post(
    "/admin/reload",
    summary="Roll out a checkpoint: verified, warmed up, swapped in between batches",
    response_model=ReloadResponse,
    dependencies=[Depends(require_api_key)],
    responses=_ERRORS,
)
async def reload(state: StateDep, request: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
    if state.settings.api_key is None:
        raise Forbidden("/admin/reload needs MNIST_AE_API_KEY to be set; without one, send the process SIGHUP")
    if multiprocessing.parent_process() is not None:  # one of --workers N: a reload here would change only it
        raise Conflict(
            "this server runs several worker processes and a reload here would change only one of them: send "
            f"SIGHUP to their supervisor (pid {os.getppid()}), which restarts each on MNIST_AE_CHECKPOINT"
        )
    name = request.checkpoint if request is not None else None
    path = allowed_path(name, state.settings.checkpoint_dir) if name is not None else None
    return await reload_model(state, path)
