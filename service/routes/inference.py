"""POST /encode, /decode and /reconstruct: decode the body, run the batch, encode the response.

FastAPI declares and documents these routes; requests reach the functions straight from ASGI
through ``service.hot_path`` (or through FastAPI's router with ``MNIST_AE_HOT_PATH=false``),
with the same ``InferenceCall`` either way.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import InferenceCallDep
from service.inference import Op
from service.openapi import DECODE_RESPONSES, ENCODE_RESPONSES, IMAGES_BODY, LATENTS_BODY, RECONSTRUCT_RESPONSES
from service.request_body import read_images, read_latents
from service.responses import render_images, render_latents

router = APIRouter(tags=["inference"])


@router.post("/encode", summary="Images -> latent codes (N,16,7,7)", openapi_extra=IMAGES_BODY,
             responses=ENCODE_RESPONSES, response_class=Response)  # fmt: skip
async def encode(request: Request, call: InferenceCallDep) -> Response:
    with call.batcher.arrival():
        images = await read_images(request, call.settings, size=call.config.image_size, resize=call.resize)
    (latents,) = await call.batcher.submit(Op.ENCODE, images)
    return render_latents(latents, call.output)


@router.post("/decode", summary="Latent codes -> images (N,1,28,28) in [0,1]", openapi_extra=LATENTS_BODY,
             responses=DECODE_RESPONSES, response_class=Response)  # fmt: skip
async def decode(request: Request, call: InferenceCallDep) -> Response:
    with call.batcher.arrival():
        latents = await read_latents(request, call.settings, latent_shape=call.config.latent_shape)
    (images,) = await call.batcher.submit(Op.DECODE, latents)
    return render_images(images, call.output)


@router.post("/reconstruct", summary="Images -> reconstructions and their MSE (an anomaly score)",
             openapi_extra=IMAGES_BODY, responses=RECONSTRUCT_RESPONSES, response_class=Response)  # fmt: skip
async def reconstruct(request: Request, call: InferenceCallDep) -> Response:
    with call.batcher.arrival():
        images = await read_images(request, call.settings, size=call.config.image_size, resize=call.resize)
    reconstructions, mse = await call.batcher.submit(Op.RECONSTRUCT, images)
    return render_images(reconstructions, call.output, mse=mse)
