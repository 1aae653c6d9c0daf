"""Rolling out a new checkpoint while serving: load and verify it, warm it up off the serving
path, then swap it in between two batches. A checkpoint that fails any check is refused with the
reason, and the model being served goes on serving.

Triggered by ``POST /admin/reload`` (service/routes/admin.py) or by SIGHUP (service/signals.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from service.checkpoint import CheckpointError, load_checkpoint, resolve_weights_path
from service.errors import APIError, CheckpointNotFound, Forbidden, InvalidCheckpoint, NotReady
from service.inference import Predictor
from service.schemas import ReloadResponse
from service.state import ServiceState

log = logging.getLogger(__name__)


async def reload_on_signal(state: ServiceState) -> None:
    """SIGHUP: roll out the configured checkpoint; a refusal is logged (reload_model does), not raised."""
    log.info("SIGHUP: rolling out %s", state.settings.checkpoint)
    try:
        await reload_model(state)
    except APIError as exc:
        log.warning("SIGHUP roll-out did not happen: %s", exc.message)


def allowed_path(name: str, checkpoint_dir: Path | None) -> Path:
    """``name`` (a file or directory name, or a path) inside the allowed directory; 403 otherwise."""
    if checkpoint_dir is None:
        raise Forbidden("loading a checkpoint named in the request needs MNIST_AE_CHECKPOINT_DIR on the server")
    root = checkpoint_dir.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise Forbidden(f"checkpoint {name!r} is outside the allowed directory {root}")
    return path


async def reload_model(state: ServiceState, path: Path | None = None) -> ReloadResponse:
    """Serve the checkpoint at ``path`` (default: the configured one, read again) from the next batch on.

    Raises CheckpointNotFound or InvalidCheckpoint (the served model stays), or NotReady (nothing
    served yet, or draining).
    """
    async with state.reload_lock:  # two roll-outs at once would race for the swap
        batcher, current = state.batcher, state.checkpoint
        if batcher is None or current is None or state.draining:
            raise NotReady(f"the service is {state.status}; retry once it is ready", headers={"retry-after": "1"})
        settings = state.settings
        target = path or settings.checkpoint
        try:
            target = resolve_weights_path(target)
            exists = target.is_file()
        except OSError:  # a name no file system holds (a part over 255 bytes): no such checkpoint
            exists = False
        if not exists:
            state.metrics.reloads.labels("refused").inc()
            log.warning("roll-out refused, still serving %s: %s not found", current.sha256[:12], target)
            raise CheckpointNotFound(f"checkpoint {target}: file not found; still serving sha256 {current.sha256}")
        try:
            # the same architecture only: clients' shapes must not change under them
            checkpoint = await asyncio.to_thread(
                load_checkpoint,
                target,
                device=current.device,
                expected_config=current.config,
                allow_seed_format=False,
            )
        except CheckpointError as exc:
            state.metrics.reloads.labels("refused").inc()
            log.warning("roll-out refused, still serving %s: %s", current.sha256[:12], exc)
            raise InvalidCheckpoint(f"{exc}; still serving sha256 {current.sha256}") from None
        predictor = Predictor(checkpoint.model, checkpoint.device, checkpoint.calibration)
        started = time.perf_counter()
        await asyncio.to_thread(predictor.warmup, settings.warmup_batches, settings.max_batch_images)
        warmup_s = time.perf_counter() - started
        # on the event loop, between two batches: a batch in flight finishes on the old model
        batcher.predictor = predictor
        state.checkpoint = checkpoint
        state.metrics.reloads.labels("loaded").inc()
        log.info("rolled out %s (sha256 %s, was %s)", checkpoint.path, checkpoint.sha256[:12], current.sha256[:12])
        return ReloadResponse(
            checkpoint=str(checkpoint.path),
            sha256=checkpoint.sha256,
            previous_sha256=current.sha256,
            warmup_s=round(warmup_s, 3),
        )
