"""Self-describing checkpoints: safetensors weights plus a JSON metadata file beside them.

``autoencoder.safetensors`` holds the tensors; ``autoencoder.json`` beside it holds the
format version, the architecture config, how the weights were trained and what they
scored, the anomaly calibration (service/calibration.py), and the sha256 of the weights
file. :func:`load_checkpoint` is the one loader
everything uses (training's resume and evaluation, the service, the tests). There is
no pickle on that path: safetensors is a flat header plus raw tensor bytes.

A seed-style ``torch.save(model.state_dict())`` file (``.pt``/``.pth``) also loads,
through ``torch.load(weights_only=True)``, PyTorch's restricted unpickler that admits
only tensors and plain containers. Such a file carries no metadata, so it gets the
default architecture and no recorded metrics.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from service.calibration import Calibration
from service.fileio import atomic_write_bytes, sha256_hex
from service.model import AutoEncoder, ModelConfig

log = logging.getLogger(__name__)

FORMAT = "mnist-autoencoder-checkpoint"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS_NAME = "autoencoder.safetensors"
SEED_SUFFIXES = (".pt", ".pth")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not match what it claims to be."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified model together with where it came from."""

    model: AutoEncoder
    path: Path
    sha256: str  # of the weights file's bytes
    metadata: dict[str, Any] = field(default_factory=dict)  # empty for a seed-style file
    calibration: Calibration | None = None  # None: trained before calibration existed, or a seed-style file

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.metadata.get("metrics", {})
        return metrics


def metadata_path_for(weights_path: Path) -> Path:
    """``weights/autoencoder.safetensors`` -> ``weights/autoencoder.json``."""
    return Path(weights_path).with_suffix(".json")


def resolve_weights_path(path: Path | str) -> Path:
    """Accept the weights file, its metadata JSON, or a directory holding ``autoencoder.safetensors``."""
    path = Path(path)
    if path.is_dir():
        return path / DEFAULT_WEIGHTS_NAME
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    return path


def git_commit(repo_dir: Path | None = None) -> str | None:
    """The current commit (with ``-dirty`` if the tree has changes), or None outside a git checkout."""
    cwd = repo_dir or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def save_checkpoint(
    model: AutoEncoder,
    path: Path | str,
    *,
    training: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
    source_commit: str | None = None,
) -> dict[str, Any]:
    """Write ``path`` (safetensors) and its metadata JSON atomically; return the metadata.

    ``source_commit`` is the git commit of the code that produced the weights (training reads
    it when it starts); by default, the commit checked out now.

    Each file is written to a temporary name and renamed into place, so an interrupted
    save never leaves a half-written checkpoint where a good one was.
    """
    weights_path = Path(path)
    if weights_path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {weights_path}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # no header metadata: safetensors writes a metadata map in hash order, which would make the
    # bytes (and the sha256) of identical weights differ from one save to the next
    blob = safetensors.torch.save(state)
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_file": weights_path.name,
        "weights_sha256": sha256_hex(blob),
        "architecture": model.config.to_dict(),
        "parameters": sum(v.numel() for v in state.values()),
        "training": training or {},
        "dataset": dataset or {},
        "metrics": metrics or {},
        **({"calibration": calibration.to_dict()} if calibration is not None else {}),
        "torch_version": torch.__version__,
        "git_commit": source_commit or git_commit(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(weights_path, blob)
    _write_metadata(weights_path, metadata)
    return metadata


def write_calibration(checkpoint: Checkpoint, calibration: Calibration) -> None:
    """Store ``calibration`` in the metadata of a loaded (so verified) checkpoint; the weights stay as they are."""
    _write_metadata(checkpoint.path, {**checkpoint.metadata, "calibration": calibration.to_dict()})


def _write_metadata(weights_path: Path, metadata: dict[str, Any]) -> None:
    atomic_write_bytes(metadata_path_for(weights_path), (json.dumps(metadata, indent=2) + "\n").encode())


def load_checkpoint(
    path: Path | str,
    *,
    device: torch.device | str = "cpu",
    expected_config: ModelConfig | None = None,
    allow_seed_format: bool = True,
    read_calibration: bool = True,
) -> Checkpoint:
    """Load and verify a checkpoint; the model comes back in eval mode on ``device``.

    Refuses, with a :class:`CheckpointError` naming the file, anything that is missing,
    truncated, tampered with (sha256), of another format version or architecture,
    holding non-finite weights, or carrying malformed calibration. ``expected_config``, when given, must equal the
    checkpoint's architecture (a service built for 28x28 inputs refuses anything else).
    ``allow_seed_format=False`` refuses seed-style ``.pt``/``.pth`` files, which go through
    (restricted) unpickling: the service loads safetensors only. ``read_calibration=False`` skips the
    calibration, whatever it holds: for training.calibrate, which replaces it.
    """
    weights_path = resolve_weights_path(path)
    if weights_path.suffix in SEED_SUFFIXES and not allow_seed_format:
        raise CheckpointError(
            f"checkpoint {weights_path}: only .safetensors checkpoints are served (no pickle on the load path); "
            "a seed-style state_dict loads in training.evaluate and can be re-saved with service.checkpoint"
        )
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {weights_path}: file not found")
    blob = weights_path.read_bytes()
    digest = sha256_hex(blob)
    calibration = None
    if weights_path.suffix in SEED_SUFFIXES:
        metadata: dict[str, Any] = {}
        config = expected_config or ModelConfig()
        state = _read_seed_state_dict(weights_path, blob)
    else:
        metadata = _read_metadata(weights_path, digest)
        # absent is fine (served without decisions); malformed is not
        if read_calibration and "calibration" in metadata:
            try:
                calibration = Calibration.from_dict(metadata["calibration"])
            except ValueError as exc:
                raise CheckpointError(
                    f"checkpoint {weights_path}: bad calibration in metadata: {exc} "
                    "(recompute it with: python -m training.calibrate)"
                ) from exc
        try:
            config = ModelConfig.from_dict(metadata["architecture"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {weights_path}: bad architecture in metadata: {exc}") from exc
        try:
            state = safetensors.torch.load(blob)
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"checkpoint {weights_path}: not a readable safetensors file: {exc}") from exc
    if expected_config is not None and config != expected_config:
        raise CheckpointError(
            f"checkpoint {weights_path}: architecture {config.to_dict()} does not match "
            f"the expected {expected_config.to_dict()}"
        )
    if calibration is not None:
        _check_calibration_fits(weights_path, config, calibration)
    model = AutoEncoder(config)
    _check_state_dict(weights_path, model, state)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return Checkpoint(model=model, path=weights_path, sha256=digest, metadata=metadata, calibration=calibration)


def _check_calibration_fits(weights_path: Path, config: ModelConfig, calibration: Calibration) -> None:
    """A calibration must hold the scores the model computes; an old (version 1) one is served on the
    MSE alone, and the log says so."""
    recalibrate = f"python -m training.calibrate {weights_path}"
    if calibration.version == 1:
        if config.novelty_channels:
            log.warning(
                "checkpoint %s: its calibration is version 1, from before the novelty head: the anomaly "
                "decision uses the reconstruction MSE alone, which does not tell letters from digits; "
                "recalibrate it: %s",
                weights_path,
                recalibrate,
            )
        else:
            log.warning(
                "checkpoint %s: its calibration is version 1; it is read as the MSE's quantiles, as it was "
                "meant (%s writes the current version)",
                weights_path,
                recalibrate,
            )
    elif bool(config.novelty_channels) != (calibration.novelty is not None):
        has = "has" if config.novelty_channels else "has no"
        holds = "holds" if calibration.novelty is not None else "lacks"
        raise CheckpointError(
            f"checkpoint {weights_path}: the model {has} a novelty head but its calibration {holds} novelty "
            f"quantiles; recompute it: {recalibrate}"
        )


def _read_metadata(weights_path: Path, digest: str) -> dict[str, Any]:
    meta_path = metadata_path_for(weights_path)
    if not meta_path.is_file():
        raise CheckpointError(
            f"checkpoint {weights_path}: metadata file {meta_path} not found "
            "(it is written beside the weights by training and must travel with them)"
        )
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {weights_path}: metadata {meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {weights_path}: {meta_path} is not a {FORMAT} metadata file")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {weights_path}: format version {version!r} is not supported "
            f"(this code reads version {FORMAT_VERSION})"
        )
    expected = metadata.get("weights_sha256")
    if expected != digest:
        raise CheckpointError(
            f"checkpoint {weights_path}: sha256 {digest} does not match {expected} recorded in {meta_path}; "
            "the file is truncated, corrupted or was replaced"
        )
    return metadata


def _read_seed_state_dict(weights_path: Path, blob: bytes) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(f"checkpoint {weights_path}: not a loadable state_dict: {exc}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"checkpoint {weights_path}: expected a state_dict of tensors")
    return dict(state)


def _check_state_dict(weights_path: Path, model: AutoEncoder, state: dict[str, torch.Tensor]) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"missing {missing}")
    if unexpected := sorted(set(found) - set(expected)):
        problems.append(f"unexpected {unexpected}")
    problems += [
        f"{k} has shape {found[k]}, expected {shape}"
        for k, shape in expected.items()
        if k in found and found[k] != shape
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {weights_path}: weights do not fit architecture {model.config.to_dict()}: "
            + "; ".join(problems)
        )
    bad = [k for k, v in state.items() if not v.is_floating_point() or not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {weights_path}: non-finite or non-float weights in {bad}")
