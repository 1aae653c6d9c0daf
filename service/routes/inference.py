"""POST /encode, /decode and /reconstruct: decode the body, run the batch, encode the response."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.access import require_api_key
from service.deps import CallOptionsDep, ServingDep
from service.inference import Op
from service.openapi import DECODE_RESPONSES, ENCODE_RESPONSES, IMAGES_BODY, LATENTS_BODY, RECONSTRUCT_RESPONSES
from service.request_body import read_images, read_latents
from service.responses import render_images, render_latents

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])


@router.post("/encode", summary="Images -> latent codes (N,16,7,7)", openapi_extra=IMAGES_BODY,
             responses=ENCODE_RESPONSES, response_class=Response)  # fmt: skip
async def encode(request: Request, serving: ServingDep, options: CallOptionsDep) -> Response:
    async with serving.batcher.arrival():
        images = await read_images(request, serving.settings, size=serving.config.image_size, resize=options.resize)
    (latents,) = await serving.batcher.submit(Op.ENCODE, images)
    return render_latents(latents, options.output)


@router.post("/decode", summary="Latent codes -> images (N,1,28,28) in [0,1]", openapi_extra=LATENTS_BODY,
             responses=DECODE_RESPONSES, response_class=Response)  # fmt: skip
async def decode(request: Request, serving: ServingDep, options: CallOptionsDep) -> Response:
    async with serving.batcher.arrival():
        latents = await read_latents(request, serving.settings, latent_shape=serving.config.latent_shape)
    (images,) = await serving.batcher.submit(Op.DECODE, latents)
    return render_images(images, options.output)


@router.post("/reconstruct", summary="Images -> reconstructions and their MSE (an anomaly score)",
             openapi_extra=IMAGES_BODY, responses=RECONSTRUCT_RESPONSES, response_class=Response)  # fmt: skip
async def reconstruct(request: Request, serving: ServingDep, options: CallOptionsDep) -> Response:
    async with serving.batcher.arrival():
        images = await read_images(request, serving.settings, size=serving.config.image_size, resize=options.resize)
    reconstructions, mse = await serving.batcher.submit(Op.RECONSTRUCT, images)
    return render_images(reconstructions, options.output, mse=mse)
