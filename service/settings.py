"""All service settings in one place, read from the environment with the ``MNIST_AE_`` prefix.

MNIST_AE_CHECKPOINT=weights/autoencoder.safetensors MNIST_AE_MAX_BATCH_IMAGES=512 python -m service
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.calibration import DEFAULT_QUANTILE, MAX_QUANTILE, MIN_QUANTILE

ENV_PREFIX = "MNIST_AE_"
# what Kubernetes injects for a Service named "mnist-ae": MNIST_AE_SERVICE_HOST, MNIST_AE_PORT,
# MNIST_AE_PORT_8000_TCP_ADDR...; none of them is a setting, and none deserves a warning
_KUBERNETES_SERVICE_LINKS = re.compile(
    rf"{ENV_PREFIX}(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)"
)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "weights" / "autoencoder.safetensors"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=None, extra="ignore", frozen=True)

    # model
    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="safetensors checkpoint (its .json beside it)")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1")
    checkpoint_dir: Path | None = Field(
        None, description="where POST /admin/reload may load a checkpoint named in its body; unset: none"
    )
    warmup_batches: int = Field(3, ge=0, le=100, description="forward passes run before readiness turns true")
    torch_threads: int = Field(0, ge=0, le=256, description="intra-op threads for the forward pass; 0: torch's default")
    anomaly_quantile: float = Field(
        DEFAULT_QUANTILE,
        ge=MIN_QUANTILE,
        le=MAX_QUANTILE,
        description="/reconstruct flags an image as an anomaly when it scores higher than this share of the "
        "normal images the checkpoint was calibrated on (0.99: about 1% of normal digits are flagged)",
    )

    # micro-batching
    max_batch_images: int = Field(256, ge=1, le=65536, description="images gathered into one forward pass")
    # 0: no waiting; under load, batches are what queued during the previous forward pass. On CPU
    # 0 and 2 ms measured the same within noise (docs/decisions.md, micro-batching), and 0 adds
    # nothing to latency when the server is quiet; on a GPU, whose passes are short, try 1-2 ms
    max_wait_ms: float = Field(0.0, ge=0, le=1000, description="how long a batch may wait to fill up")
    max_queue_images: int = Field(16384, ge=1, description="images waiting at most; beyond it requests get 503")

    # request limits
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body, enforced while read")
    max_images_per_request: int = Field(1024, ge=1, description="images or latents in one request")
    max_image_pixels: int = Field(1_000_000, ge=784, description="decoded pixels per image (decompression bombs)")
    body_timeout_s: float = Field(30.0, gt=0, description="longest wait for the next chunk of a request body")
    memory_limit_mb: int | None = Field(
        None,
        ge=64,
        description="the memory the server may use, shared by its worker processes; each keeps within 85% of its "
        "share and answers requests beyond that with 503. Unset: the cgroup's limit (a container's), else the "
        "machine's",
    )

    # access
    api_key: SecretStr | None = Field(
        None,
        description="when set, /encode, /decode, /reconstruct, /model and /admin/reload need "
        "'Authorization: Bearer <key>'",
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: CORS off")

    @field_validator("api_key")
    @classmethod
    def _api_key_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # an empty key (an unfilled secret, say) would let every request in while looking configured
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("the API key is empty; unset MNIST_AE_API_KEY to serve without one")
        return value

    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve /metrics on this port (on metrics_host) instead of the main one"
    )
    metrics_host: str = Field("127.0.0.1", description="interface of the separate metrics port")

    # the Open Inference Protocol over gRPC (service/oip_grpc/): off unless a port is set (Triton's is 8001)
    grpc_port: int | None = Field(None, ge=1, le=65535, description="serve the v2 protocol over gRPC on this port")
    grpc_host: str = Field("127.0.0.1", description="interface of the gRPC port (0.0.0.0 in a container)")

    # shutdown
    drain_grace_s: float = Field(
        0.0, ge=0, le=300, description="after SIGTERM, keep serving this long with /readyz at 503, then stop"
    )

    # the page at / (service/static/ui); /docs is served either way
    ui: bool = Field(True, description="serve the web page at /; false leaves it out")

    # logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    access_log: Literal["all", "errors", "off"] = Field(
        "errors", description="one log line per request: all of them, errors only (status >= 400), or none"
    )


def unknown_settings(environ: Mapping[str, str]) -> list[str]:
    """One line for each ``MNIST_AE_*`` variable that is not a setting (a typo would otherwise be
    ignored in silence), with the closest real name when there is one."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    lines = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in known:
            continue
        if _KUBERNETES_SERVICE_LINKS.fullmatch(name.upper()):
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
        lines.append(f"{name} is not a setting, so it is ignored" + (f"; did you mean {close[0]}?" if close else ""))
    return lines


def describe_settings_error(exc: ValidationError) -> str:
    """A settings ValidationError in one line, by environment variable; secret values are not repeated."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        variable = ENV_PREFIX + field.upper()
        shown = "" if field == "api_key" or "input" not in error else f"={str(error['input'])[:80]!r}"
        problems.append(f"{variable}{shown}: {error['msg']}")
    return "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
