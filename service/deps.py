"""FastAPI dependencies of the operations routes, as ``Annotated`` aliases for route signatures.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool,
which would cost a thread hop for what is an attribute lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.checkpoint import Checkpoint
from service.errors import NotReady
from service.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def get_checkpoint(request: Request) -> Checkpoint:
    checkpoint = (await get_state(request)).checkpoint
    if checkpoint is None:
        raise NotReady("the model is not loaded yet", headers={"retry-after": "1"})
    return checkpoint


StateDep = Annotated[ServiceState, Depends(get_state)]
CheckpointDep = Annotated[Checkpoint, Depends(get_checkpoint)]
