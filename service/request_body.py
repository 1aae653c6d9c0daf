"""HTTP request bodies (bytes, already read within the limits) -> model-ready arrays, by Content-Type.

Images (for /encode and /reconstruct) come as multipart files, one raw image body, JSON
``{"images": [...]}`` or a ``.npy`` array; latents (for /decode) as JSON ``{"latents": ...}``
or ``.npy``. Every check happens here, before anything is queued for the model.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, Callable, Iterable
from functools import partial

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.codecs.arrays import check_count, images_from_array, latents_from_array
from service.codecs.images import decode_image, decode_images
from service.codecs.multipart import parse_form_data
from service.codecs.npy import read_npy
from service.errors import APIError, InvalidInput, MalformedBody, PayloadTooLarge, UnsupportedMediaType
from service.schemas import ImagesRequest, LatentsRequest, describe_errors
from service.settings import Settings
from service.wire import NPY_MEDIA_TYPE

IMAGE_CONTENT_TYPES = ("multipart/form-data", "image/png (or any image/*)", "application/json", NPY_MEDIA_TYPE)
LATENT_CONTENT_TYPES = ("application/json", NPY_MEDIA_TYPE)
_NPY_TYPES = {NPY_MEDIA_TYPE, "application/npy", "application/octet-stream"}
_NPY_MAGIC = b"\x93NUMPY"
_MAX_FORM_FIELDS = 100  # text fields beside the files: a form with more is refused

ImageDecoder = Callable[..., np.ndarray]  # decode_image with the limits bound: (data, *, what)
BatchDecoder = Callable[[Iterable[tuple[bytes, str]]], np.ndarray]  # decode_images, the same limits bound


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


async def read_images(body: bytes, content_type: str, settings: Settings, *, size: int, resize: bool) -> np.ndarray:
    """The request's images as (N,size,size) float32 in [0,1]."""
    kind = media_type(content_type)
    max_pixels = settings.max_image_pixels
    decode: ImageDecoder = partial(decode_image, size=size, max_pixels=max_pixels, resize=resize)
    decode_batch: BatchDecoder = partial(decode_images, size=size, max_pixels=max_pixels, resize=resize)
    if kind == "multipart/form-data":
        return await _multipart_images(body, content_type, settings, decode, decode_batch)
    if kind.startswith("image/"):
        return decode(_nonempty(body), what="body")[None]
    if kind == "application/json":
        return _json_images(_nonempty(body), settings, decode, decode_batch, size=size, resize=resize)
    if kind in _NPY_TYPES:
        _nonempty(body)
        if kind == "application/octet-stream" and not body.startswith(_NPY_MAGIC):
            return decode(body, what="body")[None]  # sniffed: an image sent as octet-stream
        array = read_npy(body, max_elements=settings.max_images_per_request * settings.max_image_pixels)
        return images_from_array(array, size=size, resize=resize, max_images=settings.max_images_per_request)
    raise _unsupported(kind, IMAGE_CONTENT_TYPES)


def read_latents(
    body: bytes, content_type: str, settings: Settings, *, latent_shape: tuple[int, int, int]
) -> np.ndarray:
    """The request's latent codes as (N,C,h,w) float32."""
    kind = media_type(content_type)
    if kind == "application/json":
        try:
            parsed = LatentsRequest.model_validate_json(_nonempty(body))
        except ValidationError as exc:
            raise _from_validation(exc) from None
        try:
            array = np.asarray(parsed.latents, dtype=np.float64)
        except ValueError:
            raise InvalidInput("latents: nested lists have uneven lengths; expected (16,7,7) or (N,16,7,7)") from None
    elif kind in _NPY_TYPES:
        array = read_npy(_nonempty(body), max_elements=settings.max_images_per_request * int(np.prod(latent_shape)))
    else:
        raise _unsupported(kind, LATENT_CONTENT_TYPES)
    return latents_from_array(array, latent_shape=latent_shape, max_latents=settings.max_images_per_request)


def _nonempty(body: bytes) -> bytes:
    if not body:
        raise MalformedBody("the request body is empty")
    return body


async def _multipart_images(
    body: bytes, content_type: str, settings: Settings, decode: ImageDecoder, decode_batch: BatchDecoder
) -> np.ndarray:
    limit = settings.max_images_per_request
    # the body is in memory anyway (MAX_BODY_BYTES): plain forms are cut at their boundaries
    # directly, anything else goes to Starlette's streaming parser, which reads the same bytes
    parts = parse_form_data(body, content_type, max_parts=limit + _MAX_FORM_FIELDS)
    if parts is None:
        return await _starlette_multipart_images(body, content_type, limit, decode)
    files = [part for part in parts if part.filename is not None]
    if len(files) > limit:
        raise _too_many_files(limit)
    if len(parts) - len(files) > _MAX_FORM_FIELDS:
        return await _starlette_multipart_images(body, content_type, limit, decode)  # its own words for it
    if not files:
        raise _no_files([part.name for part in parts])
    return decode_batch(
        (part.data, f"file {index} ({part.filename or part.disposition})") for index, part in enumerate(files)
    )


async def _starlette_multipart_images(body: bytes, content_type: str, limit: int, decode: ImageDecoder) -> np.ndarray:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(
        Headers({"content-type": content_type}), stream(), max_files=limit, max_fields=_MAX_FORM_FIELDS
    )
    try:  # it stops at its limits (the body itself is in memory already, bounded by MAX_BODY_BYTES)
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise _too_many_files(limit) from None
        raise MalformedBody(f"malformed multipart body: {exc.message}") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise _no_files([key for key, _ in form.multi_items()])
        images = []
        for index, upload in enumerate(files):
            what = f"file {index} ({upload.filename or upload.headers.get('content-disposition', 'unnamed')!s})"
            images.append(decode(await upload.read(), what=what))
        return np.stack(images)
    finally:
        await form.close()


def _too_many_files(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"more than {limit} files in one request, over the limit of {limit}")


def _no_files(fields: list[str]) -> InvalidInput:
    hint = f" (got only text fields {fields[:5]}; with curl, use -F 'file=@digit.png')" if fields else ""
    return InvalidInput(f"no image files in the multipart form{hint}")


def _json_images(
    body: bytes, settings: Settings, decode: ImageDecoder, decode_batch: BatchDecoder, *, size: int, resize: bool
) -> np.ndarray:
    try:
        items = ImagesRequest.model_validate_json(body).images
    except ValidationError as exc:
        raise _from_validation(exc) from None
    check_count(len(items), max_items=settings.max_images_per_request, noun="images")
    if all(isinstance(item, list) for item in items):
        try:  # the common case: one C-level conversion for the whole batch
            with np.errstate(over="ignore"):  # past float32: inf, refused by the range check
                whole = np.asarray(items, dtype=np.float32)
        except ValueError:
            pass  # ragged: the per-item path below says which item
        else:
            return images_from_array(whole, size=size, resize=resize, max_images=settings.max_images_per_request)
    texts = [item for item in items if isinstance(item, str)]
    if len(texts) == len(items):  # all base64-encoded files: decoded as one batch
        return decode_batch([(_b64decode(text, f"images[{i}]"), f"images[{i}]") for i, text in enumerate(texts)])
    images = []
    for index, item in enumerate(items):
        what = f"images[{index}]"
        try:
            if isinstance(item, str):
                images.append(decode(_b64decode(item, what), what=what))
            else:
                try:
                    array = np.asarray(item, dtype=np.float32)
                except ValueError:
                    raise InvalidInput("rows have different lengths") from None
                images.append(images_from_array(array, size=size, resize=resize, max_images=1)[0])
        except APIError as exc:
            if not exc.message.startswith(what):
                exc.message = f"{what}: {exc.message}"
            raise
    return np.stack(images)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what}: not valid base64 ({exc})") from None


def _from_validation(exc: ValidationError) -> APIError:
    """pydantic's errors -> one readable message; syntax errors are 400, the rest 422."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e["msg"] for e in errors if e["type"] == "json_invalid")
        return MalformedBody(f"the body is not valid JSON: {detail}")
    return InvalidInput(describe_errors(errors))


def _unsupported(kind: str, accepted: tuple[str, ...]) -> UnsupportedMediaType:
    got = f"Content-Type {kind!r}" if kind else "no Content-Type"
    return UnsupportedMediaType(f"{got} is not supported here; send one of: {', '.join(accepted)}")
