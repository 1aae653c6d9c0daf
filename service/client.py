"""A small typed client for the service: numpy arrays in, numpy arrays out.

    from service.client import AutoencoderClient
    with AutoencoderClient("http://127.0.0.1:8000") as client:
        codes = client.encode(images)            # (N,28,28) uint8 or float in [0,1] -> (N,16,7,7)
        result = client.reconstruct(images)      # .images (N,1,28,28), .mse, .novelty, .percentile, .anomaly
        digits = client.decode(codes)            # (N,1,28,28) in [0,1]

Arrays travel as ``.npy`` both ways (exact float32, no JSON overhead). ``AsyncAutoencoderClient``
has the same methods as coroutines.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from service.wire import ANOMALY_HEADER, MSE_HEADER, NOVELTY_HEADER, NPY_MEDIA_TYPE, PERCENTILE_HEADER, QUANTILE_HEADER


class ServiceError(RuntimeError):
    """The service answered with an error: ``status``, a stable ``code`` and a readable ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Reconstruction:
    images: np.ndarray  # (N,1,28,28) float32 in [0,1]
    mse: np.ndarray  # (N,) float32: MSE per pixel of each image
    novelty: np.ndarray | None  # (N,) float32: log-odds that it is not a digit; None: the model has no head
    # None when the served checkpoint has no calibration:
    percentile: np.ndarray | None  # (N,) float32: share of normal images whose decision score was lower, 0..100
    anomaly: np.ndarray | None  # (N,) bool: percentile above 100 x anomaly_quantile, or MSE outside the normal range
    anomaly_quantile: float | None  # the threshold the decisions used


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _images_body(images: np.ndarray) -> bytes:
    array = np.asarray(images)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)  # float64 from numpy's defaults is sent as float32
    return _npy(array)


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:500]
    raise ServiceError(response.status_code, code, message)


def _array(response: httpx.Response) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(_check(response).content), allow_pickle=False)
    return array


def _header_floats(response: httpx.Response, name: str) -> np.ndarray | None:
    value = response.headers.get(name)
    return None if value is None else np.array([float(v) for v in value.split(",")], dtype=np.float32)


def _reconstruction(response: httpx.Response) -> Reconstruction:
    images = _array(response)
    mse = _header_floats(response, MSE_HEADER)
    if mse is None:
        raise ServiceError(response.status_code, "bad_response", f"the answer has no {MSE_HEADER} header")
    anomaly = response.headers.get(ANOMALY_HEADER)
    quantile = response.headers.get(QUANTILE_HEADER)
    return Reconstruction(
        images=images,
        mse=mse,
        novelty=_header_floats(response, NOVELTY_HEADER),
        percentile=_header_floats(response, PERCENTILE_HEADER),
        anomaly=None if anomaly is None else np.array([v == "true" for v in anomaly.split(",")]),
        anomaly_quantile=None if quantile is None else float(quantile),
    )


def _reconstruct_params(anomaly_quantile: float | None) -> dict[str, float]:
    return {} if anomaly_quantile is None else {"anomaly_quantile": anomaly_quantile}


class _Base:
    def __init__(self, api_key: str | None) -> None:
        self._headers = {"accept": NPY_MEDIA_TYPE, **({"authorization": f"Bearer {api_key}"} if api_key else {})}

    def _post_args(self, body: bytes) -> dict[str, Any]:
        return {"content": body, "headers": {**self._headers, "content-type": NPY_MEDIA_TYPE}}


class AutoencoderClient(_Base):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(28,28), (N,28,28) or (N,1,28,28), uint8 0..255 or float in [0,1] -> (N,16,7,7) float32."""
        return _array(self._http.post("/encode", **self._post_args(_images_body(images))))

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(16,7,7) or (N,16,7,7) -> (N,1,28,28) float32 in [0,1]."""
        body = _npy(np.asarray(latents, dtype=np.float32))
        return _array(self._http.post("/decode", **self._post_args(body)))

    def reconstruct(self, images: np.ndarray, *, anomaly_quantile: float | None = None) -> Reconstruction:
        """Reconstructions and scores; ``anomaly_quantile`` overrides the server's threshold (0.5..0.999)."""
        return _reconstruction(
            self._http.post(
                "/reconstruct", params=_reconstruct_params(anomaly_quantile), **self._post_args(_images_body(images))
            )
        )

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = _check(self._http.get("/model", headers=self._headers | {"accept": "*/*"})).json()
        return info

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AutoencoderClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncAutoencoderClient(_Base):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def encode(self, images: np.ndarray) -> np.ndarray:
        return _array(await self._http.post("/encode", **self._post_args(_images_body(images))))

    async def decode(self, latents: np.ndarray) -> np.ndarray:
        body = _npy(np.asarray(latents, dtype=np.float32))
        return _array(await self._http.post("/decode", **self._post_args(body)))

    async def reconstruct(self, images: np.ndarray, *, anomaly_quantile: float | None = None) -> Reconstruction:
        return _reconstruction(
            await self._http.post(
                "/reconstruct", params=_reconstruct_params(anomaly_quantile), **self._post_args(_images_body(images))
            )
        )

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = _check(await self._http.get("/model", headers=self._headers | {"accept": "*/*"})).json()
        return info

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAutoencoderClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()
